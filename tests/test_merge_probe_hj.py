"""Today's merged probes read and used together (probe HJ): where HC, HF, HB, HA, HE and HD meet."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import torch

from showo2_cli.errors import ModelError
from showo2_cli.run_folders import LATEST, STATE_FILE, resolve_run_path

REPO = Path(__file__).resolve().parents[1]


def _checkpoint(run: Path, step: int, source: Path, state: bool = True) -> Path:
    """``run/checkpoint-<step>`` holding ``source``'s files and, unless not ``state``, a training state."""
    folder = run / f"checkpoint-{step:06d}"
    shutil.copytree(source, folder)
    if state:
        (folder / STATE_FILE).write_bytes(b"")  # (its presence marks a complete checkpoint)
    return folder


def test_a_run_folder_without_latest_loads_the_checkpoint_train_resumes(tiny_model_dir, tmp_path):
    """Probe HE made ``showo2 train`` resume a run folder whose ``latest`` pointer is gone from its
    newest checkpoint folder holding a training state; ``--lora RUN``, ``--model RUN`` and ``[model]
    init = RUN`` (HD's README and LoRA example load a run folder so) still read only the pointer:
    ``--lora RUN`` was "'RUN' is not a LoRA adapter (... or a training run of a config with a [lora]
    section)", which it is, and ``--model RUN`` found no model. They now stand for the same checkpoint."""
    from conftest import random_lora
    from showo2_cli.hub import resolve_root
    from showo2_cli.loading import load
    from showo2_cli.lora import find_adapter

    adapter = random_lora(tiny_model_dir, tmp_path / "adapter")
    lora_run = tmp_path / "lora-run"
    _checkpoint(lora_run, 1, adapter)
    newest = _checkpoint(lora_run, 3, adapter)
    _checkpoint(lora_run, 4, adapter, state=False)  # a copy of the adapter alone: not a checkpoint train resumes
    assert find_adapter(lora_run) == newest == resolve_run_path(lora_run)
    with_run = load(tiny_model_dir, lora=[lora_run], need=())
    with_checkpoint = load(tiny_model_dir, lora=[newest], need=())
    assert with_run.record()["lora"] == with_checkpoint.record()["lora"]
    for (name, a), (_, b) in zip(with_run.network.state_dict().items(), with_checkpoint.network.state_dict().items(),
                                 strict=True):
        assert torch.equal(a, b), name

    model_run = tmp_path / "model-run"
    kept = _checkpoint(model_run, 2, tiny_model_dir)
    assert resolve_root(str(model_run))[1] == kept
    assert load(model_run, need=()).spec == load(tiny_model_dir, need=()).spec

    (lora_run / LATEST).write_text("checkpoint-000001\n")  # the pointer, where there is one, is what counts
    assert find_adapter(lora_run) == lora_run / "checkpoint-000001" == resolve_run_path(lora_run)
    (lora_run / LATEST).unlink()
    (lora_run / LATEST).symlink_to(tmp_path / "nowhere")  # a dangling pointer is still said to be one
    with pytest.raises(ModelError, match="not a regular file"):
        find_adapter(lora_run)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert resolve_run_path(empty) == empty
    with pytest.raises(ModelError, match="is not a LoRA adapter"):
        find_adapter(empty)


def _module_table() -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    start = text.index("Layout of `src/showo2_cli/`")
    return text[start:text.index("\n\n", text.index("| module | owns |", start))]


def test_the_readme_module_table_names_every_module():
    """README's layout table (the module and what it owns) named neither of probe HC's new
    ``serve/responses.py`` and ``serve/middleware.py``, nor older ones. Every module of
    ``src/showo2_cli`` is named there: a top-level one as `name.py`, a package's in its row."""
    table = _module_table()
    rows = {}
    for line in table.splitlines():
        cells = line.split("|")
        if len(cells) > 2 and cells[1].strip().startswith("`"):
            rows[cells[1].strip()] = cells[2]
    src = REPO / "src" / "showo2_cli"
    missing = []
    for path in sorted(src.rglob("*.py")):
        rel = path.relative_to(src)
        if path.name in ("__init__.py", "__main__.py") or "assets" in rel.parts:
            continue
        if len(rel.parts) == 1:
            if not any(f"`{path.name}`" in key for key in rows):
                missing.append(str(rel))
        else:
            row = next((cells for key, cells in rows.items() if key == f"`{rel.parts[0]}/`"), "")
            if not re.search(rf"(`|\b){re.escape(path.stem)}(\.py)?\b", row):
                missing.append(str(rel))
    assert missing == [], missing


def test_the_chat_help_names_every_option_of_t2i_in_the_chat():
    """Probe HF let the chat's ``/t2i`` take ``--sigmas`` and ``--timesteps`` (``T2I_IN_CHAT``), but
    the chat's ``/help`` line for ``/t2i`` still listed the options without them. Each option
    ``/t2i`` takes is named in it, by one of ``t2i``'s own spellings."""
    from typer.main import get_command

    from showo2_cli.cli import app
    from showo2_cli.cli.chat import COMMANDS, T2I_IN_CHAT

    usage = next(key for key in COMMANDS if key.startswith("/t2i "))
    words = set(re.findall(r"-{1,2}[a-z][a-z-]*", usage))
    command = get_command(app).get_command(None, "t2i")
    options = {q.name: (*q.opts, *q.secondary_opts) for q in command.params if q.name in T2I_IN_CHAT}
    assert set(options) == set(T2I_IN_CHAT)
    assert [name for name, spellings in options.items() if not words & set(spellings)] == []


@pytest.mark.parametrize("key, option", [("sigmas", "--sigmas"), ("timesteps", "--timesteps"), ("shift", "--shift"),
                                         ("sampler", "--sampler")])
def test_the_image_endpoint_refuses_a_grid_without_calling_it_python_only(key, option):
    """The image endpoint's 400 for ``sigmas`` / ``timesteps`` (probe HF), as for ``shift`` and
    ``sampler``, called them "a setting of the Python pipeline only"; ``showo2 t2i`` takes each too
    (``--sigmas``, ...). The refusal stands and says where the setting is taken."""
    from typer.main import get_command

    from showo2_cli.cli import app
    from showo2_cli.serve import ApiError
    from showo2_cli.serve.requests import refuse_pipeline_arguments

    t2i = get_command(app).get_command(None, "t2i")
    assert any(option in q.opts for q in t2i.params)
    with pytest.raises(ApiError) as e:
        refuse_pipeline_arguments({"prompt": "a cat", key: [1.0, 0.5] if key in ("sigmas", "timesteps") else 3})
    assert (e.value.status, e.value.code, e.value.param) == (400, "unsupported_parameter", key)
    assert "only" not in e.value.message and "showo2 t2i" in e.value.message
