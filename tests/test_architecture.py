"""The layers import one way: contract <- training <- export, contract <- runtime <- regionblip_ros; tools above all.

Every module's imports are read from its source (function-level ones too), so a lazy import cannot hide a
dependency that runs back up the layers or closes a cycle between packages.
"""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("contract", "training", "export", "runtime", "regionblip_ros", "tools")
# Which of our packages each package may import (itself always).
ALLOWED = {
    "contract": set(),
    "training": {"contract"},
    "runtime": {"contract"},
    "export": {"contract", "training", "runtime"},  # runtime: export.trt checks its engines with the runtime's runner
    "regionblip_ros": {"contract", "runtime"},
    "tools": {"contract", "training", "export", "runtime", "regionblip_ros"},
}
# The imports that cross a layer on purpose: the torch backend runs the training model (torch_engine), and its
# static decoder runs OPT's layers through the one statement of their order (training/opt_layer.py).
EXCEPTIONS = {("runtime/torch_engine.py", "training"), ("runtime/torch_decoder.py", "training")}
# Heavy or ROS libraries the floor must never need: contract is importable with numpy and PIL alone.
FLOOR_FORBIDDEN = {"torch", "transformers", "peft", "onnx", "onnxruntime", "tensorrt", "rclpy", "sensor_msgs",
                   "std_msgs", "geometry_msgs", "regionblip_msgs"}


def imported_roots(source: str, module: str) -> set[str]:
    """Top-level names of everything `source` imports; relative imports resolve against `module` (a.b.c)."""
    roots = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            roots.add(module.split(".")[0] if node.level else node.module.split(".")[0])
    return roots


def modules():
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            relative = path.relative_to(ROOT)
            yield relative.as_posix(), ".".join(relative.with_suffix("").parts), package, path.read_text()


def violations() -> list[str]:
    found = []
    for relative, module, package, source in modules():
        for root in imported_roots(source, module):
            if root in PACKAGES and root != package and root not in ALLOWED[package] \
                    and (relative, root) not in EXCEPTIONS:
                found.append(f"{relative} imports {root}")
            if package == "contract" and root in FLOOR_FORBIDDEN:
                found.append(f"{relative} imports {root}, which the floor must not need")
    return found


def package_graph() -> dict[str, set[str]]:
    graph = {package: set() for package in PACKAGES}
    for _, module, package, source in modules():
        graph[package] |= {root for root in imported_roots(source, module) if root in PACKAGES and root != package}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found, path = [], []

    def visit(node):
        if node in path:
            found.append(path[path.index(node):] + [node])
            return
        path.append(node)
        for target in sorted(graph.get(node, ())):
            visit(target)
        path.pop()

    for start in sorted(graph):
        visit(start)
    return found


def test_no_module_imports_a_layer_above_its_own():
    assert violations() == []


def test_packages_import_each_other_without_a_cycle():
    assert cycles(package_graph()) == []


def test_the_product_packages_never_import_the_tools():
    graph = package_graph()
    assert all("tools" not in graph[package] for package in PACKAGES if package != "tools")


@pytest.mark.parametrize("source, module, expected", [
    ("import runtime.bundle\nfrom export import onnx", "runtime.x", {"runtime", "export"}),
    ("def f():\n    from training.config import C", "runtime.bench", {"training"}),
    ("from . import checkpoint\nfrom .config import C", "training.modeling", {"training"}),
])
def test_imports_are_found_wherever_they_are_written(source, module, expected):
    assert imported_roots(source, module) == expected


def test_a_cycle_between_packages_is_reported():
    assert cycles({"runtime": {"export"}, "export": {"runtime"}}) == [["export", "runtime", "export"],
                                                                      ["runtime", "export", "runtime"]]
