"""Probe DD: a weights file stored in another dtype than the load's (an official bf16 release loaded
in float32, the CPU's default) is converted tensor by tensor in chunks of rows
(``weights.CONVERT_CHUNK``), read with memory of its own (``TensorReader``), straight into the
converted tensor: neither the file's pages (memory-mapped, kept until the load ends) nor a whole
stored tensor sit beside the converted weights. The weights are the same bits as converting
whole."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from showo2_cli import tensor_reader as W
from showo2_cli.loading import load, save_folder
from showo2_cli.options import RuntimeOptions
from showo2_cli.specs import get_spec
from showo2_cli.weights import read_state_dict

PROC = Path("/proc/self/clear_refs").exists()


def _status(key: str) -> int:
    return next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith(key + ":"))


def _folder(path: Path, dtype: torch.dtype, vocab: int, hidden: int = 64, seed: int = 0, pickled: bool = False) -> Path:
    """A tiny model whose (tied) embedding is ``vocab`` x ``hidden``: nearly all of its weights
    (``pickled``: as ``pytorch_model.bin``, the official releases' format)."""
    from showo2_cli.modeling.showo2 import Showo2Model

    spec = get_spec("tiny").replace(name="tall", vocab_size=vocab, hidden_size=hidden, head_dim=hidden // 4)
    with torch.device("meta"):
        shapes = Showo2Model(spec).state_dict()
    g = torch.Generator().manual_seed(seed)
    state = {k: torch.empty(v.shape).uniform_(-0.05, 0.05, generator=g).to(dtype) for k, v in shapes.items()
             if k != "showo.lm_head.weight"}
    folder = save_folder(path, spec, state)
    if pickled:  # (written to disk, as a downloaded file is: the system reclaims only clean pages)
        with open(folder / "pytorch_model.bin", "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        (folder / "model.safetensors").unlink()
    return folder


@pytest.mark.skipif(not PROC, reason="needs /proc/self/clear_refs (Linux)")
@pytest.mark.parametrize(("pickled", "quantize"), [
    pytest.param(False, "none", id="safetensors"),
    pytest.param(False, "int8wo", id="safetensors-int8wo", marks=pytest.mark.slow),
    pytest.param(True, "none", id="bin", marks=pytest.mark.slow)])
def test_a_bf16_file_loaded_in_float32_peaks_at_the_float32_weights(tmp_path, monkeypatch, pickled, quantize):
    """Peak RSS over the RSS before the load (``VmHWM`` after ``clear_refs``) of a bf16 file of 67 MB
    (a 262144 x 128 embedding) loaded in float32 (134 MB). Before: the file's mapped pages and the
    float32 copies together (unquantized, +203 MB, safetensors and pickle alike: every tensor
    converted from the mapping), or the whole embedding in bf16 beside its float32 copy (quantized,
    placed group by group: +204 MB); now the float32 weights and a chunk (+137 MB)."""
    if quantize != "none":
        pytest.importorskip("torchao")
    import ctypes
    import gc

    folder = _folder(tmp_path / "m", torch.bfloat16, vocab=262144, hidden=128, pickled=pickled)
    file_bytes = sum(p.stat().st_size for p in folder.iterdir() if p.suffix in (".safetensors", ".bin"))
    load(_folder(tmp_path / "warm", torch.bfloat16, vocab=300), need=(), dtype=torch.float32,
         runtime=RuntimeOptions(quantize=quantize))  # (first-call set-ups not counted)
    monkeypatch.setattr(W, "CONVERT_CHUNK", 1 << 20, raising=False)
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    before = _status("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    model = load(folder, need=(), dtype=torch.float32, runtime=RuntimeOptions(quantize=quantize))
    grown = _status("VmHWM") - before
    weights = sum(p.numel() * p.element_size() for p in model.network.parameters())
    assert 1.9 * file_bytes < weights < 2.1 * file_bytes
    assert grown < weights + 0.25 * file_bytes, (grown / 1e6, weights / 1e6, file_bytes / 1e6)


CASES = [(torch.bfloat16, torch.float32, "eager", False), (torch.float32, torch.bfloat16, "eager", False),
         (torch.float32, torch.float16, "lazy heads", False), (torch.bfloat16, torch.float32, "int8wo", False),
         (torch.bfloat16, torch.float32, "eager", True), (torch.float32, torch.bfloat16, "lazy heads", True)]


@pytest.mark.parametrize(("stored", "loaded", "how", "pickled"), CASES)
def test_converted_in_chunks_are_the_same_bits(tmp_path, monkeypatch, stored, loaded, how, pickled):
    """Chunks of 1000 elements (the embedding 900 x 64: 15 rows a chunk, its last short; the flow
    head's and the semantic layers' larger tensors too) against each tensor converted whole, read
    from a safetensors file and from a pickle (``pickled``)."""
    if how == "int8wo":
        pytest.importorskip("torchao")
    folder = _folder(tmp_path / "m", stored, vocab=900, pickled=pickled)
    reference = {k: v.to(loaded) for k, v in read_state_dict(folder / ("pytorch_model.bin" if pickled else "model.safetensors")).items()}
    monkeypatch.setattr(W, "CONVERT_CHUNK", 1000, raising=False)
    calls = []
    real = W.TensorReader.__call__
    monkeypatch.setattr(W.TensorReader, "__call__", lambda self, key, dtype=None: calls.append(key) or real(self, key, dtype))
    runtime = RuntimeOptions(quantize="int8wo" if how == "int8wo" else "none")
    model = load(folder, need=(), dtype=loaded, runtime=runtime, heads=() if how == "lazy heads" else ("lm_head", "flow_head"))
    if how == "lazy heads":
        model.network.load_heads("flow_head")
    got = model.network.state_dict()
    assert "showo.model.embed_tokens.weight" in calls  # (converted by the reader, not whole)
    names = [k for k in reference if k in got and type(got[k]) is torch.Tensor]
    assert len(names) > 20
    different = [k for k in names if got[k].dtype != loaded or not torch.equal(got[k], reference[k])]
    assert not different


def test_a_tensor_in_the_loads_dtype_stays_in_the_mapping(tmp_path):
    """Unquantized, a tensor stored in the load's dtype is the file's, memory-mapped (read lazily), as
    before: the reader reads only what it converts."""
    folder = _folder(tmp_path / "m", torch.float32, vocab=300)
    state = read_state_dict(folder / "model.safetensors")
    key = "showo.model.embed_tokens.weight"
    with W.TensorReader([folder / "model.safetensors"], state, mapped=True) as read:
        assert read(key, torch.float32) is state[key]
        converted = read(key, torch.bfloat16)
    assert converted.dtype == torch.bfloat16 and torch.equal(converted, state[key].to(torch.bfloat16))


@pytest.mark.skipif(not PROC, reason="needs /proc (Linux)")
def test_a_pickles_pages_read_are_handed_back(tmp_path):
    """A pickle (``.bin``) has no reader of its own: its tensors are the file's memory map, and a
    quantized load reads every page of them. ``TensorReader.let_go`` (called after each group is
    quantized) hands those pages back: the process's file-backed RSS grows by the 32 MB tensor read
    and falls back after it; before, they stayed until the load let the file go."""
    path = tmp_path / "pytorch_model.bin"
    with open(path, "wb") as f:  # (on disk, as a downloaded file: only clean pages are reclaimed)
        torch.save({"w": torch.ones(2048, 4096)}, f)
        f.flush()
        os.fsync(f.fileno())
    state = read_state_dict(path)
    with W.TensorReader([path], state) as read:
        before = _status("RssFile")
        assert float(read("w", torch.float32).sum()) == 2048 * 4096  # (every page read)
        grown = _status("RssFile") - before
        read.let_go()
        left = _status("RssFile") - before
    assert grown > 30e6 and left < 4e6, (grown / 1e6, left / 1e6)
