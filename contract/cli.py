"""What every command line of the project shares: a bad argument is one line, not argparse's usage block."""
import argparse


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors raise ValueError("<what is wrong> (see --help)"): each CLI's main prints
    a ValueError as one line on stderr and exits non-zero, so bad arguments read like any other bad input."""

    def error(self, message):
        raise ValueError(f"{message} (see --help)")
