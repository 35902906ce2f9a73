"""Probe DP: the last five merges (DD, DJ, DK, DM, DN) used together.

DD's :class:`~showo2_cli.tensor_reader.TensorReader` converts a tensor stored in another dtype in
chunks read with ``os.preadv``; it opened the file for those reads by its path at the first
conversion, so a file replaced during the load (a save's ``os.replace`` over it) gave the
converted tensors of the new file beside the others of the file checked."""

from __future__ import annotations

import os

import pytest
import torch
from safetensors.torch import save_file

from showo2_cli import tensor_reader as W
from showo2_cli.errors import ModelError
from showo2_cli.weights import read_state_dict

pytestmark = pytest.mark.skipif(not hasattr(os, "preadv"), reason="chunked conversion reads with os.preadv")


def _files(tmp_path, other_rows: int = 256):
    old = {"a": (torch.arange(4096, dtype=torch.float32).reshape(256, 16) / 64).to(torch.bfloat16),
           "b": torch.ones(3, dtype=torch.bfloat16)}
    new = {"a": -(torch.arange(other_rows * 16, dtype=torch.float32).reshape(other_rows, 16) / 64).to(torch.bfloat16),
           "b": torch.zeros(3, dtype=torch.bfloat16), "c": torch.full((4096,), 7.0, dtype=torch.bfloat16)}
    path, other = tmp_path / "model.safetensors", tmp_path / "other.safetensors"
    save_file(old, path)
    save_file(new, other)
    return old, new, path, other


def test_a_file_replaced_during_the_load_is_read_as_it_was_checked(tmp_path, monkeypatch):
    monkeypatch.setattr(W, "CONVERT_CHUNK", 64)  # (256 rows of 16: read in 64 chunks of 4 rows)
    old, new, path, other = _files(tmp_path)
    state = read_state_dict(path)
    with W.TensorReader([path], state) as read:
        os.replace(other, path)  # (as a save writes a file: a new one renamed over it)
        a, b = read("a", torch.float32), read("b", torch.float32)
    # before: 'a' (chunked) was the new file's -0.0..-64.0 beside the checked file's 'b'
    assert torch.equal(a, old["a"].float()) and float(a[1, 0]) == 0.25 and float(a[255, 15]) == 64.0
    assert torch.equal(b, torch.ones(3))


def test_a_file_of_another_layout_since_the_check_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(W, "CONVERT_CHUNK", 64)
    old, new, path, other = _files(tmp_path, other_rows=128)
    state = read_state_dict(path)  # (checked: 'a' is 256 x 16)
    os.replace(other, path)  # replaced before the reader opens it: 'a' is 128 x 16 there
    with W.TensorReader([path], state) as read, pytest.raises(ModelError, match="the file changed since"):
        read("a", torch.float32)  # before: its 128 rows, then 'b''s and 'c''s bytes read as its other 128


def test_a_refusal_advises_tiling_only_where_it_lowers_the_estimate():
    """``decode``/``encode`` with ``--vae-tiling off`` over the limit: a video whose frames are no
    larger than one tile (128 px: tiled or not, the same 826.5 MB) was told "tile the VAE with
    --vae-tiling auto", which then refused it with the same figure; 320 px, where tiles lower it,
    still is (as a generation's refusal advises)."""
    from showo2_cli import api
    from showo2_cli.errors import ResourceError
    from showo2_cli.options import EncodeOptions
    from showo2_cli.pipelines.latents import decode, encode

    vae, _ = api.resolve_vae("demo")
    vae.tiling = "off"
    small = vae.decode_memory_gb(9, 16, 16)
    assert vae.decode_memory_gb(9, 16, 16, True) == small  # (one tile: nothing to lower)
    with pytest.raises(ResourceError, match="needs about") as refused:
        decode(torch.zeros(16, 9, 16, 16), vae, max_memory_gb=small / 2)
    assert "--vae-tiling" not in str(refused.value)
    with pytest.raises(ResourceError, match="lower --size or --frames \\(") as refused:  # (no ", or tile")
        encode(torch.zeros(33, 128, 128, 3, dtype=torch.uint8), vae, EncodeOptions(size=128), max_memory_gb=0.1)
    big = vae.decode_memory_gb(1, 40, 40)
    assert vae.decode_memory_gb(1, 40, 40, True) < big
    with pytest.raises(ResourceError, match="tile the VAE with --vae-tiling auto"):
        decode(torch.zeros(16, 1, 40, 40), vae, max_memory_gb=big / 4)
