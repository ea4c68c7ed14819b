"""Start the nodes of a parameter file in one process, where pip-only ROS 2 has no `ros2 launch`.

    python -m regionblip_ros.bringup --params config/describe.yaml

Every top-level key of the YAML names a node to start (`region_describer`, or `/namespace/region_describer`)
and holds its `ros__parameters`, as ros2 launch reads them; rcl itself applies the file, so the parameters
mean exactly what they mean there. A parameter the file leaves out keeps the node's default (`ros__parameters:
{}` keeps them all). Runs until SIGINT or SIGTERM, then cancels the work in progress, shuts the nodes down
and exits 0; if the executor dies on an error it exits 1, so that a supervisor restarts it.
A bad file or argument is one line on stderr and exit status 2; a node that cannot start (e.g. its bundle
is missing) is one line and status 1.
"""

import sys
from pathlib import Path

import rclpy
import yaml
from rclpy.context import Context

from contract.cli import OneLineParser
from regionblip_ros.describer_node import EXECUTOR_THREADS, RegionDescriber
from regionblip_ros.spinning import spin_until_signal

PROG = "python -m regionblip_ros.bringup"
NODES = {"region_describer": RegionDescriber}  # node name in the YAML: the class that runs it


def nodes_in(params: Path) -> list[tuple[str, str]]:
    """(namespace, name) of each node the parameter file configures; ValueError saying what is wrong."""
    try:
        document = yaml.safe_load(params.read_text())
    except OSError as error:
        raise ValueError(f"cannot read parameters file '{params}': {error.strerror}") from error
    except yaml.YAMLError as error:
        raise ValueError(f"parameters file '{params}' is not valid YAML: {' '.join(str(error).split())}") from error
    if not isinstance(document, dict) or not document:
        raise ValueError(f"parameters file '{params}' holds no nodes: write "
                         "'region_describer: {ros__parameters: {...}}'")
    nodes = []
    for key, section in document.items():
        if isinstance(section, dict) and "ros__parameters" in section and section["ros__parameters"] is None:
            raise ValueError(f"parameters file '{params}': '{key}' has an empty ros__parameters, which rcl "
                             "cannot read: write 'ros__parameters: {}' to keep every default")
        if not isinstance(section, dict) or not isinstance(section.get("ros__parameters"), dict):
            raise ValueError(f"parameters file '{params}': '{key}' has no ros__parameters mapping: write "
                             f"'{key}: {{ros__parameters: {{...}}}}'")
        if "*" in str(key):
            continue  # wildcards set parameters of the nodes below; they start nothing
        namespace, _, name = ("/" + str(key).strip("/")).rpartition("/")
        if name not in NODES:
            raise ValueError(f"parameters file '{params}' configures node '{name}', but bringup starts only "
                             f"{', '.join(NODES)}: rename the key or remove it")
        nodes.append((namespace or "/", name))
    if not nodes:
        raise ValueError(f"parameters file '{params}' names no node, only wildcards: add a region_describer key")
    return nodes


def main(argv: list[str] | None = None, *, describer=None) -> int:
    """Run the nodes of --params until SIGINT/SIGTERM. `describer` replaces the one each node would build
    from its bundle parameter (tests pass a double; every node shares it)."""
    parser = OneLineParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", required=True, type=Path, help="parameter YAML, e.g. config/describe.yaml")
    try:
        args = parser.parse_args(argv)
        specs = nodes_in(args.params)
    except ValueError as error:
        print(f"{PROG}: {error}", file=sys.stderr)
        return 2

    context = Context()
    rclpy.init(args=[PROG, "--ros-args", "--params-file", str(args.params)], context=context)
    nodes = []
    try:
        for namespace, name in specs:
            nodes.append(NODES[name](describer=describer, context=context, namespace=namespace))
    except Exception as error:  # bad parameters or an unloadable bundle: say which, start nothing
        print(f"{PROG}: {error}", file=sys.stderr)
        for node in nodes:
            node.destroy_node()
        context.try_shutdown()
        return 1

    def stop_work() -> None:
        for node in nodes:
            node.stop_work()

    return spin_until_signal(nodes, context, num_threads=EXECUTOR_THREADS * len(nodes), before_shutdown=stop_work)


if __name__ == "__main__":
    sys.exit(main())
