"""Training run folders as the rest of the toolkit reads them: a run folder (``showo2 train``'s
output) stands for its newest complete checkpoint, which its ``latest`` file names (or, the pointer
gone, its newest checkpoint folder holding a training state: what ``showo2 train`` resumes); a LoRA
adapter folder holds peft's two files. Written by :mod:`showo2_cli.training.checkpoint`."""

from __future__ import annotations

import os
import re
from pathlib import Path

from .errors import ModelError

#: A training run folder's pointer to its newest complete checkpoint, and a checkpoint's state file
LATEST = "latest"
STATE_FILE = "trainer_state.pt"
ADAPTER_WEIGHTS = "adapter_model.safetensors"  # a LoRA adapter folder (peft's layout: showo2_cli.lora)
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_PICKLE = "adapter_model.bin"  # peft's older weights file (a torch pickle), read where no safetensors is
CHECKPOINT_NAME = re.compile(r"^checkpoint-(\d+)$")


def latest_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    """The folder ``latest`` names, or None when there is none (a dangling pointer is an error)."""
    output_dir = Path(output_dir)
    pointer = output_dir / LATEST
    if not pointer.exists() and not pointer.is_symlink():
        return None
    if not pointer.is_file():  # a folder, a FIFO (reading it would wait forever), a dangling link
        raise ModelError(f"'{pointer}' is not a regular file: it should name the latest checkpoint")
    try:
        with open(pointer, "rb") as fh:
            name = fh.read(4097).decode("utf-8").strip()
    except (OSError, UnicodeDecodeError) as e:
        raise ModelError(f"'{pointer}' cannot be read as a checkpoint name ({type(e).__name__})") from None
    if not CHECKPOINT_NAME.match(name):
        raise ModelError(f"'{pointer}' does not name a checkpoint (it holds {name!r})")
    folder = output_dir / name
    if not (folder / STATE_FILE).exists():
        raise ModelError(f"'{pointer}' points at '{folder}', which is missing or incomplete")
    return folder


def list_checkpoints(output_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """The ``checkpoint-<step>`` folders of ``output_dir`` as (step, folder), oldest first."""
    output_dir = Path(output_dir)
    found = []
    for p in output_dir.iterdir() if output_dir.is_dir() else []:
        m = CHECKPOINT_NAME.match(p.name)
        if m and p.is_dir():
            found.append((int(m.group(1)), p))
    return sorted(found)


def newest_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    """The newest checkpoint folder of ``output_dir`` that holds a training state, for a run folder
    whose ``latest`` pointer is gone (deleted; checkpoints copied without it, as Hugging Face's
    Trainer needs none): a run there started again from step 0, and overwrote and pruned them.
    Staging folders are renamed in whole and pruned ones moved aside first, so such a folder is
    complete; None when there is none."""
    found = [p for _, p in list_checkpoints(output_dir) if (p / STATE_FILE).is_file()]
    return found[-1] if found else None


def run_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    """The checkpoint a training run folder stands for: the one its ``latest`` names, else (the
    pointer gone) its newest checkpoint folder holding a training state, the one ``showo2 train``
    resumes; None when it has neither (a dangling or damaged pointer is a :class:`ModelError`)."""
    pointer = Path(output_dir) / LATEST
    if pointer.exists() or pointer.is_symlink():
        return latest_checkpoint(output_dir)
    return newest_checkpoint(output_dir)


def resolve_run_path(path: str | os.PathLike) -> Path:
    """A training run folder stands for its checkpoint (:func:`run_checkpoint`); anything else is
    returned as is."""
    p = Path(path)
    found = run_checkpoint(p) if p.is_dir() else None
    return p if found is None else found
