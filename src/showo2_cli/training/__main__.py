"""``python -m showo2_cli.training CONFIG [OPTIONS]`` is ``showo2 train CONFIG [OPTIONS]``.

This form is what multi-process launchers start, e.g.::

    accelerate launch --multi_gpu --num_processes 8 -m showo2_cli.training examples/showo2_1.5b_stage1.toml
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from .. import cli
    from .command import train

    names = {c.name or getattr(c.callback, "__name__", None) for c in cli.app.registered_commands}
    if "train" not in names:
        cli.app.command("train")(train)
    args = list(sys.argv[1:] if argv is None else argv)
    front = [a for a in args if a == "--debug"]  # a global option: it goes before the command
    return cli.main([*front, "train", *[a for a in args if a != "--debug"]])


if __name__ == "__main__":
    sys.exit(main())
