"""The command-line help of the analysis commands (`report`, `compare`) in the style of every other
`peftbench` command: the usage line, what the command does, then its arguments under `options:`
with their metavars, and no `-h` entry (every command takes -h and --help)."""
from __future__ import annotations

import argparse
import sys
from typing import NoReturn


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """Bad arguments: one `peftbench: error:` line naming the problem and where the help is."""
        print(f"peftbench: error: {message}; see {self.prog} --help", file=sys.stderr)
        sys.exit(2)


def parser(prog: str, usage: str, description: str) -> tuple[argparse.ArgumentParser, argparse._ArgumentGroup]:
    """A parser whose help reads like the other commands', and the group to add arguments to."""
    p = Parser(prog=prog, usage=usage, description=description, add_help=False,
               formatter_class=lambda prog: argparse.RawDescriptionHelpFormatter(prog, max_help_position=28, width=100))
    options = p.add_argument_group("options")
    options.add_argument("-h", "--help", action="help", help=argparse.SUPPRESS)
    return p, options
