"""README's section for a user with the official weights (probe HD): its LoRA example config and
every command line the README and the examples show."""

from __future__ import annotations

import re
import shlex

import pytest
import torch

from conftest import REPO

COMMAND = re.compile(r"^(?:#)?\s{4,}(?:.*\| )?(?:[A-Z0-9_]+=\S+ )*(showo2 .*)$")


def _command_lines():
    """(where, line) of every `showo2 ...` line of README's code blocks and the examples' comments."""
    files = [REPO / "README.md", *sorted((REPO / "examples").rglob("*.toml")),
             *sorted((REPO / "examples").glob("*.py"))]
    for path in files:
        for no, line in enumerate(path.read_text().splitlines(), 1):
            match = COMMAND.match(line)
            if match:
                yield f"{path.relative_to(REPO)}:{no}", match.group(1)


def test_every_command_line_shown_parses_with_the_commands_options(tmp_path, monkeypatch):
    """Each command a user copies names a command and options that exist, and their values parse."""
    import typer

    from showo2_cli.cli import app

    group = typer.main.get_command(app)
    (tmp_path / "examples").symlink_to(REPO / "examples")
    for placeholder in ("A", "B"):  # `--lora A --lora B`
        (tmp_path / placeholder).mkdir()
    monkeypatch.chdir(tmp_path)
    lines = list(_command_lines())
    assert len(lines) > 40
    seen = set()
    for where, line in lines:
        argv = shlex.split(re.split(r" && | & |; ", line)[0], comments=True)[1:]
        command = group.commands.get(argv[0])
        assert command is not None, (where, line)
        seen.add(argv[0])
        try:
            command.make_context(argv[0], argv[1:])
        except Exception as e:  # click's usage errors (typer vendors click)
            assert type(e).__name__ == "Exit", (where, line, e)
    assert {"t2i", "caption", "serve", "train", "chat", "pull", "convert"} <= seen


def test_the_lora_example_for_the_official_model_is_what_its_comments_say(tmp_path):
    """examples/lora_1.5b.toml: a valid config whose adapter covers the 1.5B's LLM and flow head,
    25.5M parameters as its comment says."""
    from showo2_cli.modeling.showo2 import Showo2Model
    from showo2_cli.specs import get_spec
    from showo2_cli.training.config import load_config

    source = REPO / "examples" / "lora_1.5b.toml"
    (tmp_path / "data" / "my-images").mkdir(parents=True)
    (tmp_path / source.name).write_text(source.read_text())
    config = load_config(tmp_path / source.name)
    assert config.model.init == "1.5B" and config.lora.rank == 16
    assert str(config.output_dir).replace("\\", "/").endswith("/runs/lora-1.5b")  # what README's --lora names
    with torch.device("meta"):
        network = Showo2Model(get_spec("1.5B"))
    adapted = [m for name, m in network.named_modules()
               if isinstance(m, torch.nn.Linear) and name.split(".")[-1] in config.lora.target_modules
               and name.startswith(tuple(config.lora.within))]
    prefixes = {p for p in config.lora.within
                if any(n.startswith(p) for n, m in network.named_modules() if isinstance(m, torch.nn.Linear))}
    assert prefixes == set(config.lora.within)  # each prefix names layers of the network
    spec = get_spec("1.5B")
    assert len(adapted) == 7 * (spec.num_layers + spec.head_layers)
    parameters = sum(config.lora.rank * (m.in_features + m.out_features) for m in adapted)
    assert parameters / 1e6 == pytest.approx(25.5, abs=0.05)
    assert "25.5M parameters" in source.read_text()
