"""The command-line reference (docs/cli.md), generated from ``--help`` as llm does.

    python -m showo2_cli.cli.reference > docs/cli.md      # tests/test_api_cli.py checks it is current
"""

from __future__ import annotations

import contextlib
import io
import os

WIDTH = "80"  # what a terminal, or a pipe, shows (click lays help out in at most 80 columns)


def render() -> str:
    from . import GROUPS, app, main

    names = [n for _, _, group in GROUPS for n in group] + ["train"]
    names += [c.name for c in app.registered_commands if c.name not in names and not c.hidden]
    out = ["# showo2 command-line reference", "",
           "Generated from `--help` by `python -m showo2_cli.cli.reference > docs/cli.md`; do not edit.", ""]
    old = {k: os.environ.get(k) for k in ("COLUMNS", "NO_COLOR", "TERM")}
    os.environ.update(COLUMNS=WIDTH, NO_COLOR="1", TERM="dumb")
    try:
        for args, title in [([], "showo2")] + [([n], f"showo2 {n}") for n in names]:
            buf = io.StringIO()
            with contextlib.redirect_stdout(buf):
                main([*args, "--help"])
            text = "\n".join(line.rstrip() for line in buf.getvalue().splitlines())
            out += [f"## {title}", "", "```", text.strip("\n"), "```", ""]
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return "\n".join(out)


if __name__ == "__main__":
    import sys

    sys.stdout.write(render())
