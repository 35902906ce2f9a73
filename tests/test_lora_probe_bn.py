"""Probe BN: LoRA adapters as users bring them. peft's older ``adapter_model.bin`` loads (a folder, the
file itself, a Hub repo without safetensors) as its safetensors twin does, with the same checks, and a
hostile ``.bin`` is one line; an adapter's strength is ``--lora-weight`` on every model command (and
``lora=[(path, weight)]`` in Python), the same merge as ``load_lora_weights(weight=)``, recorded in outputs."""

from __future__ import annotations

import zipfile

import pytest
import torch

from showo2_cli.errors import ModelError


def test_model_weights_in_a_rezipped_torch_archive_are_refused_not_read_as_garbage(tmp_path):
    """torch.load(mmap=True) took a compressed entry's bytes as the tensor's values, silently."""
    from showo2_cli.weights import read_state_dict

    tensors = {"w": torch.arange(64, dtype=torch.float32)}
    torch.save(tensors, tmp_path / "plain.bin")
    with zipfile.ZipFile(tmp_path / "plain.bin") as src, \
            zipfile.ZipFile(tmp_path / "packed.bin", "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info.filename))
    assert torch.equal(read_state_dict(tmp_path / "plain.bin")["w"], tensors["w"])
    assert torch.equal(torch.load(tmp_path / "packed.bin", weights_only=True)["w"], tensors["w"])  # (torch, unmapped)
    with pytest.raises(ModelError, match=r"packed.bin': its zip entries are compressed \(e.g. .*\), which torch.save"):
        read_state_dict(tmp_path / "packed.bin")
    (tmp_path / "cut.bin").write_bytes((tmp_path / "plain.bin").read_bytes()[:-30])
    with pytest.raises(ModelError, match=r"cut.bin': truncated or corrupt"):  # (was "(Invalid argument)")
        read_state_dict(tmp_path / "cut.bin")
