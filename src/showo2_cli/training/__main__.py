"""``python -m showo2_cli.training CONFIG [OPTIONS]`` is ``showo2 train CONFIG [OPTIONS]``.

This form is what multi-process launchers start, e.g.::

    accelerate launch --multi_gpu --num_processes 8 -m showo2_cli.training examples/showo2_1.5b_stage1.toml
"""

from __future__ import annotations

import sys


def train_args(argv: list[str]) -> list[str]:
    """``showo2``'s arguments for ``showo2_cli.training``'s: ``train`` in front (after ``--debug``,
    a global option that goes before the command)."""
    front = [a for a in argv if a == "--debug"]
    return [*front, "train", *[a for a in argv if a != "--debug"]]


def main(argv: list[str] | None = None) -> int:
    """Run ``showo2 train`` in this process and return its exit code."""
    from .. import cli

    return cli.main(train_args(list(sys.argv[1:] if argv is None else argv)))


if __name__ == "__main__":
    from ..launch import main as program

    program(train_args(sys.argv[1:]))  # the program's one entry: signals and exit codes as `showo2 train`'s
