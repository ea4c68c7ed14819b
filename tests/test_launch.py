"""launch/describe.launch.py starts the region_describer with parameters and topics the node really has.

Read two ways: with `ast`, which runs everywhere (pip-only ROS has no launch), and with launch_ros itself,
which runs where it imports. The `ast` reading checks the launch file against the node's own source: every
parameter it sets is declared by the node, every topic it remaps is one the node uses, every
LaunchConfiguration it reads is declared, and the executable and parameter file it names exist.
"""

import ast
import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAUNCH_FILE = ROOT / "launch" / "describe.launch.py"
NODE_SOURCES = (ROOT / "regionblip_ros" / "describer_node.py",
                ROOT / "regionblip_ros" / "node_parameters.py",  # the node's PARAMETERS table
                ROOT / "regionblip_ros" / "detections.py")  # the node's detections_2d / _3d subscriptions
SETUP_PY = ROOT / "setup.py"

NODE_TOPICS = ("image", "camera_info", "regions_2d", "points", "regions_3d", "detections_2d", "detections_3d",
               "descriptions", "markers", "annotated_image")
ARGUMENTS = {"bundle", "params_file", "namespace", "use_camera", "use_lidar", *NODE_TOPICS}


def call_name(call: ast.Call) -> str:
    return call.func.id if isinstance(call.func, ast.Name) else getattr(call.func, "attr", "")


def calls(tree: ast.AST, name: str) -> list[ast.Call]:
    return [node for node in ast.walk(tree) if isinstance(node, ast.Call) and call_name(node) == name]


def keyword(call: ast.Call, name: str) -> ast.expr:
    return next(k.value for k in call.keywords if k.arg == name)


class LaunchSource:
    """What describe.launch.py says, read from its syntax tree without running it."""

    def __init__(self, path: Path):
        self.tree = ast.parse(path.read_text(), filename=str(path))
        self.constants = {target.id: ast.literal_eval(node.value) for node in self.tree.body
                          if isinstance(node, ast.Assign) for target in node.targets if isinstance(target, ast.Name)}
        self.loops = {}  # comprehension variable -> the module constant it runs over
        for comprehension in (n for n in ast.walk(self.tree) if isinstance(n, ast.comprehension)):
            if isinstance(comprehension.target, ast.Name) and isinstance(comprehension.iter, ast.Name):
                self.loops[comprehension.target.id] = self.constants[comprehension.iter.id]

    def strings(self, expr: ast.expr) -> list[str]:
        """The strings an expression stands for: a literal, or a loop variable over a module constant."""
        if isinstance(expr, ast.Constant) and isinstance(expr.value, str):
            return [expr.value]
        if isinstance(expr, ast.Name) and expr.id in self.loops:
            return list(self.loops[expr.id])
        raise AssertionError(f"cannot read a name from {ast.dump(expr)}: keep launch names literal or loops "
                             "over a module-level tuple, so this test can check them")

    def declared_arguments(self) -> dict[str, ast.expr | None]:
        """Declared launch argument -> its default_value expression."""
        declared = {}
        for call in calls(self.tree, "DeclareLaunchArgument"):
            default = next((k.value for k in call.keywords if k.arg == "default_value"), None)
            for name in self.strings(call.args[0]):
                declared[name] = default
        return declared

    def configurations_read(self) -> set[str]:
        return {name for call in calls(self.tree, "LaunchConfiguration") for name in self.strings(call.args[0])}

    def node(self) -> ast.Call:
        (node,) = calls(self.tree, "Node")
        return node

    def node_parameters(self) -> dict[str, ast.expr]:
        """Parameters the launch file sets on the node itself (the dicts in parameters=[...])."""
        parameters = {}
        for item in keyword(self.node(), "parameters").elts:
            if isinstance(item, ast.Dict):
                parameters.update({ast.literal_eval(k): v for k, v in zip(item.keys, item.values)})
        return parameters

    def remapped_topics(self) -> list[str]:
        remappings = keyword(self.node(), "remappings")
        assert isinstance(remappings, ast.ListComp), "remappings: expected [(topic, ...) for topic in TOPICS]"
        return self.strings(remappings.elt.elts[0])


class NodeSource:
    """Parameters and topics of the region_describer, read from describer_node.py and the modules that hold its
    parameter table or subscribe for it."""

    def __init__(self, node_path: Path, *other_paths: Path):
        self.tree = ast.parse(node_path.read_text(), filename=str(node_path))
        self.trees = [self.tree] + [ast.parse(path.read_text(), filename=str(path)) for path in other_paths]

    def parameters(self) -> dict[str, object]:
        """Declared parameter -> default, from the module's PARAMETERS table (name: (default, description))."""
        table = next(node.value for tree in self.trees for node in tree.body if isinstance(node, ast.Assign)
                     and any(isinstance(t, ast.Name) and t.id == "PARAMETERS" for t in node.targets))
        return {name: default for name, (default, _) in ast.literal_eval(table).items()}

    def topics(self) -> set[str]:
        """Topics of the node's own publishers and subscriptions (the second argument, a literal)."""
        return {call.args[1].value for tree in self.trees for name in ("create_publisher", "create_subscription")
                for call in calls(tree, name) if isinstance(call.args[1], ast.Constant)}


@pytest.fixture(scope="module")
def launch() -> LaunchSource:
    return LaunchSource(LAUNCH_FILE)


@pytest.fixture(scope="module")
def node() -> NodeSource:
    return NodeSource(*NODE_SOURCES)


def test_the_launch_file_declares_the_documented_arguments(launch):
    assert set(launch.declared_arguments()) == ARGUMENTS


def test_every_launch_configuration_read_is_declared(launch):
    assert launch.configurations_read() <= set(launch.declared_arguments())


def test_every_parameter_the_launch_file_sets_is_declared_by_the_node(launch, node):
    declared = node.parameters()
    assert set(launch.node_parameters()) <= set(declared), set(launch.node_parameters()) - set(declared)
    assert {"bundle", "enable_camera", "enable_lidar"} <= set(launch.node_parameters())


def test_launch_argument_defaults_match_the_node_defaults_of_the_parameters_they_set(launch, node):
    defaults, arguments = node.parameters(), launch.declared_arguments()
    for parameter, value in launch.node_parameters().items():
        (argument,) = launch.strings(value.args[0])  # "enable_camera": LaunchConfiguration("use_camera")
        text = ast.literal_eval(arguments[argument])
        expected = defaults[parameter]
        assert text.lower() == str(expected).lower(), f"{argument} defaults to {text!r}, {parameter} to {expected!r}"


def test_every_remapped_topic_is_one_the_node_uses_and_each_input_and_output_can_be_remapped(launch, node):
    assert node.topics() - {"/diagnostics"} == set(NODE_TOPICS)  # absolute: not remappable by a relative rule
    assert sorted(launch.remapped_topics()) == sorted(NODE_TOPICS)


def test_the_node_action_runs_the_installed_region_describer_executable(launch):
    action = launch.node()
    assert ast.literal_eval(keyword(action, "package")) == "regionblip_ros"
    executable = ast.literal_eval(keyword(action, "executable"))
    scripts = re.findall(r'"(\w+) = ([\w.]+):(\w+)"', SETUP_PY.read_text())
    assert (executable, "regionblip_ros.describer_node", "main") in scripts


def test_the_default_params_file_is_the_shipped_describe_yaml(launch):
    default = launch.declared_arguments()["params_file"]
    (join,) = [c for c in ast.walk(default) if isinstance(c, ast.Call) and call_name(c) == "PathJoinSubstitution"]
    share, *parts = join.args[0].elts
    assert call_name(share) == "FindPackageShare" and ast.literal_eval(share.args[0]) == "regionblip_ros"
    assert (ROOT.joinpath(*[ast.literal_eval(p) for p in parts])).is_file()


# ---- with launch_ros --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def description():
    pytest.importorskip("launch_ros", reason="launch_ros is not installed: pip-only ROS 2 has no launch "
                                            "(the ast tests above check the launch file without it)")
    spec = importlib.util.spec_from_file_location("describe_launch", LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.generate_launch_description()


def as_text(substitutions) -> str:
    from launch import LaunchContext
    from launch.utilities import normalize_to_list_of_substitutions, perform_substitutions

    return perform_substitutions(LaunchContext(), normalize_to_list_of_substitutions(substitutions))


@pytest.mark.ros
def test_generate_launch_description_declares_the_arguments(description):
    from launch import LaunchDescription

    assert isinstance(description, LaunchDescription)
    defaults = {argument.name: argument.default_value for argument in description.get_launch_arguments()}
    assert set(defaults) == ARGUMENTS
    assert (as_text(defaults["bundle"]), as_text(defaults["use_camera"])) == ("bundles/default", "true")


@pytest.mark.ros
def test_generate_launch_description_starts_one_region_describer(description):
    from launch_ros.actions import Node

    (node,) = [entity for entity in description.entities if isinstance(entity, Node)]
    assert as_text(node.node_package) == "regionblip_ros"
    assert as_text(node.node_executable) == "region_describer"
