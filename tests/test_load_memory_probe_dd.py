"""Probe DD: a weights file stored in another dtype than the load's (an official bf16 release loaded
in float32, the CPU's default) is converted tensor by tensor in chunks of rows
(``weights.CONVERT_CHUNK``), read with memory of its own (``TensorReader``), straight into the
converted tensor: neither the file's pages (memory-mapped, kept until the load ends) nor a whole
stored tensor sit beside the converted weights. The weights are the same bits as converting
whole."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from showo2_cli import weights as W
from showo2_cli.loading import load, save_folder
from showo2_cli.options import RuntimeOptions
from showo2_cli.specs import get_spec
from showo2_cli.weights import read_state_dict

PROC = Path("/proc/self/clear_refs").exists()


def _status(key: str) -> int:
    return next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith(key + ":"))


def _folder(path: Path, dtype: torch.dtype, vocab: int, hidden: int = 64, seed: int = 0) -> Path:
    """A tiny model whose (tied) embedding is ``vocab`` x ``hidden``: nearly all of its weights."""
    from showo2_cli.modeling.showo2 import Showo2Model

    spec = get_spec("tiny").replace(name="tall", vocab_size=vocab, hidden_size=hidden, head_dim=hidden // 4)
    with torch.device("meta"):
        shapes = Showo2Model(spec).state_dict()
    g = torch.Generator().manual_seed(seed)
    state = {k: torch.empty(v.shape).uniform_(-0.05, 0.05, generator=g).to(dtype) for k, v in shapes.items()
             if k != "showo.lm_head.weight"}
    return save_folder(path, spec, state)


@pytest.mark.skipif(not PROC, reason="needs /proc/self/clear_refs (Linux)")
@pytest.mark.parametrize("quantize", ["none", "int8wo"])
def test_a_bf16_file_loaded_in_float32_peaks_at_the_float32_weights(tmp_path, monkeypatch, quantize):
    """Peak RSS over the RSS before the load (``VmHWM`` after ``clear_refs``) of a bf16 file of 67 MB
    (a 262144 x 128 embedding) loaded in float32 (134 MB). Before: the file's mapped pages and the
    float32 copies together (unquantized, +201 MB: every tensor converted from the mapping), or
    the whole embedding in bf16 beside its float32 copy (quantized, placed group by group); now the
    float32 weights and a chunk."""
    if quantize != "none":
        pytest.importorskip("torchao")
    import ctypes
    import gc

    folder = _folder(tmp_path / "m", torch.bfloat16, vocab=262144, hidden=128)
    file_bytes = (folder / "model.safetensors").stat().st_size
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


@pytest.mark.parametrize(("stored", "loaded"), [(torch.bfloat16, torch.float32), (torch.float32, torch.bfloat16),
                                                (torch.float32, torch.float16)])
@pytest.mark.parametrize("how", ["eager", "lazy heads", "int8wo"])
def test_converted_in_chunks_are_the_same_bits(tmp_path, monkeypatch, stored, loaded, how):
    """Chunks of 1000 elements (the embedding 900 x 64: 15 rows a chunk, its last short; the flow
    head's and the semantic layers' larger tensors too) against each tensor converted whole."""
    if how == "int8wo":
        pytest.importorskip("torchao")
    folder = _folder(tmp_path / "m", stored, vocab=900)
    reference = {k: v.to(loaded) for k, v in read_state_dict(folder / "model.safetensors").items()}
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
