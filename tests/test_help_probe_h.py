"""Probe H: every command's --help is readable at 80 and 60 columns and when piped.

Rich's option tables (six columns) cut option names and words with "…" at 80 columns
(`--repetition-pena…`, `adapter_model.safeten…`, `<media>.latents.safetenso…`), and click's
wrapping broke long words in two on narrow terminals."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import typer.main

from showo2_cli.cli import GROUPS, app, main

COMMANDS = [n for _, _, names in GROUPS for n in names] + ["train", "chat", "serve"]


def _wide_words(name: str | None) -> set[str]:
    """The words of a command's help laid out with no width limit (nothing wrapped or cut)."""
    root = typer.main.get_command(app)
    with root.make_context("showo2", [], resilient_parsing=True) as parent:
        command = root if name is None else root.commands[name]
        ctx = type(parent)(command, info_name=name or "showo2", parent=None if name is None else parent,
                           terminal_width=100_000, max_content_width=100_000, resilient_parsing=True)
        return set(command.get_help(ctx).split())


@pytest.mark.parametrize("columns", ["80", "60"])
@pytest.mark.parametrize("name", [None, *COMMANDS])
def test_help_cuts_no_word_or_option_name(name, columns, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", columns)
    monkeypatch.setenv("NO_COLOR", "1")
    assert main([*([name] if name else []), "--help"]) == 0
    text = capsys.readouterr().out
    assert "…" not in text and "\x1b[" not in text and "╭" not in text
    assert max(map(len, text.splitlines())) <= int(columns), text
    # each word is one of the words of the unwrapped help: none broken in two or shortened (a
    # break after a word's own hyphen, "per-" / "row", is joined back first)
    broken = set(re.sub(r"(\w-)\n *", r"\1", text).split()) - _wide_words(name)
    assert not broken, broken
    root = typer.main.get_command(app)
    words = {w.strip(",") for w in text.split()}
    for param in (root if name is None else root.commands[name]).params:
        if isinstance(param, typer.core.TyperOption):
            assert set(param.opts) | set(param.secondary_opts) <= words, param.opts
    if name is None:  # the root help keeps the command groups, each command described in full
        for panel in ("Generate:", "Understand:", "Latents:", "Models:", "Train:", "Serve:"):
            assert panel in text
        assert "e.g. the bundled demo)." in " ".join(text.split())


def test_help_markup_escapes_are_gone(capsys):
    # help strings were Rich markup: `\[lora]` must now read `[lora]`
    assert main(["t2i", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "run with [lora])" in text and "\\[" not in text
    assert main(["train", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "every [[data]] source" in text and "\\[" not in text


def test_piped_help_is_plain_and_whole():
    # `showo2 caption --help | less`: no terminal, no COLUMNS
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "NO_COLOR", "TERM")}
    out = subprocess.run([sys.executable, "-m", "showo2_cli.cli", "caption", "--help"], env=env,
                         capture_output=True, text=True, check=True, stdin=subprocess.DEVNULL).stdout
    assert "…" not in out and "\x1b[" not in out
    assert "--repetition-penalty <float>" in out and "$SHOWO2_MAX_MEMORY_GB," in out
    assert max(map(len, out.splitlines())) <= 80


def test_size_help_states_the_rule_the_check_applies(capsys):
    """`--size` said "multiples of 16" for every model, but sizes are judged by the model's own
    patch size (probe DC): 8 x patch, so a patch-4 model refuses 48 and a patch-1 one takes 40
    (probe DO). The help names the rule; the check follows it for each patch size."""
    import dataclasses

    from showo2_cli.errors import UsageError
    from showo2_cli.media.geometry import parse_size
    from showo2_cli.specs import get_spec

    assert main(["t2i", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "multiples of 8 x the model's patch size (16 for the released models)" in text
    assert "multiples of 16," not in text
    base = get_spec("1.5B")
    assert base.latent_multiple == 16
    for patch, taken, refused in ((1, "40", "36"), (2, "48", "40"), (4, "96", "48")):
        multiple = dataclasses.replace(base, patch_size=patch).latent_multiple
        assert multiple == 8 * patch and parse_size(taken, multiple) == (int(taken),) * 2
        with pytest.raises(UsageError, match=f"multiples of {multiple}"):
            parse_size(refused, multiple)
