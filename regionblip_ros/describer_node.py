"""Entry point of the `region_describer` node (console script declared in setup.py).

The node itself (subscriptions, sync, worker, publishers) is built in issue #7. Until then
this entry point refuses to start rather than run a node that describes nothing.
"""
import sys


def main(argv: list[str] | None = None) -> int:
    print(
        "region_describer: this version ships the message interfaces and package layout only; "
        "the node arrives with issue #7 (see README, 'Status').",
        file=sys.stderr,
    )
    return 2


if __name__ == "__main__":
    sys.exit(main())
