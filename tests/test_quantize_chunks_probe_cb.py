"""Probe CB: a linear layer larger than ``acceleration.QUANTIZE_CHUNK`` weights (the untied
``lm_head``) is quantized in chunks of output rows, so the quantizers' float32 scratch is bounded by
the chunk, not the layer; the quantized tensors (int8 data, scales and zero points; NF4 codes, block
absmax, their compressed form) are those of the layer quantized whole, bit for bit."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from showo2_cli import acceleration
from showo2_cli.acceleration import quantize_network
from showo2_cli.loading import ALL_HEADS, load
from showo2_cli.options import RuntimeOptions
from test_placement_probe_bk import _needs, _same, same_caption_and_image, untied  # noqa: F401  (untied: a fixture)
from test_placement_probe_bk import _tensors as _data_tensors

WHOLE = 1 << 40  # (a QUANTIZE_CHUNK no layer exceeds: every layer quantized whole, as before probe CB)
DTYPES = [pytest.param(torch.float32, id="fp32"), pytest.param(torch.bfloat16, id="bf16")]


def _head(rows: int, width: int, dtype: torch.dtype, seed: int = 0) -> nn.Module:
    """A network holding only an untied ``showo.lm_head`` (random, one row all zeros)."""
    g = torch.Generator().manual_seed(seed)
    net = nn.Module()
    net.spec, net.showo = None, nn.Module()  # (no spec: an untied head)
    net.showo.lm_head = nn.Linear(width, rows, bias=False)
    with torch.no_grad():
        net.showo.lm_head.weight.copy_(torch.randn(rows, width, generator=g) * 0.02)
        net.showo.lm_head.weight[1] = 0
    return net.to(dtype)


def _tensors(net: nn.Module) -> dict[str, torch.Tensor]:
    """Every tensor of a quantized network (``test_placement_probe_bk``'s, and torchao's optional
    ones: the int8 zero points); the state dict of an NF4 layer holds its codes, absmax, their
    8-bit compression and the packed state (offset, shape, dtype)."""
    out = _data_tensors(net)
    for key, value in net.state_dict().items():
        for name in getattr(value, "optional_tensor_data_names", ()):
            if getattr(value, name) is not None:
                out[f"{key}#{name}"] = getattr(value, name)
    return out


def _plain(t) -> bool:
    return isinstance(t, torch.Tensor) and t.device.type != "meta" and not hasattr(t, "__tensor_flatten__")


class LargestScratch(TorchDispatchMode):
    """The largest floating-point tensor (elements) an aten op allocates (not a view of its inputs),
    or that a library's own op (bitsandbytes' ``quantize_4bit``, whose kernel's float32 copies are
    its input's size) is given."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = [t for t in tree_flatten((args, kwargs))[0] if _plain(t)]
        storages = {t.untyped_storage().data_ptr() for t in inputs}
        sizes = [t.numel() for t in tree_flatten(out)[0]
                 if _plain(t) and t.is_floating_point() and t.untyped_storage().data_ptr() not in storages]
        if func.namespace != "aten":
            sizes += [t.numel() for t in inputs]
        self.largest = max([self.largest, *sizes])
        return out


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("method", ["int8wo", "nf4"])
def test_an_lm_heads_quantization_scratch_is_bounded_by_the_chunk(monkeypatch, method, dtype):
    """Fails on the code before: torchao's ``input * (1 / scale)`` and bitsandbytes' kernel took
    the whole 288 K-weight layer at once (a 0.47 GB bf16 ``lm_head``: +1.7 / +3.4 GB of CPU)."""
    _needs(method)
    chunk = 1 << 15
    monkeypatch.setattr(acceleration, "QUANTIZE_CHUNK", chunk, raising=False)
    net = _head(3001, 96, dtype)
    assert net.showo.lm_head.weight.numel() > 8 * chunk
    with LargestScratch() as spy:
        assert quantize_network(net, method) == 1
    assert 0 < spy.largest <= chunk


@pytest.mark.parametrize("dtype", [*DTYPES, pytest.param(torch.float16, id="fp16", marks=pytest.mark.slow)])
@pytest.mark.parametrize("method", ["int8wo", "nf4"])
@pytest.mark.parametrize(("rows", "width"), [(1001, 96), (517, 40), (333, 7), (260, 100)])
def test_quantized_by_rows_is_the_layer_quantized_whole(monkeypatch, method, dtype, rows, width):
    """Every quantized tensor (int8 data, scales, zero points; NF4 codes, absmax, their 8-bit
    compression, its offset and scales) and a forward's output, for widths that are and are not a
    multiple of NF4's 64-weight block, a last block short, an odd weight count and a zero row."""
    _needs(method)
    monkeypatch.setattr(acceleration, "QUANTIZE_CHUNK", WHOLE)
    whole = _head(rows, width, dtype)
    quantize_network(whole, method)
    monkeypatch.setattr(acceleration, "QUANTIZE_CHUNK", 2000)
    chunks, by_rows = [], acceleration._by_rows

    def counted(weight, quantize, lengths, multiple=1):
        return by_rows(weight, lambda chunk: chunks.append(chunk.shape[0]) or quantize(chunk), lengths, multiple)

    monkeypatch.setattr(acceleration, "_by_rows", counted)
    parts = _head(rows, width, dtype)
    quantize_network(parts, method)
    assert len(chunks) > 1 and sum(chunks) == rows  # (chunked, every row once)
    reference, chunked = _tensors(whole), _tensors(parts)
    assert len(reference) >= (3 if method == "int8wo" else 9), sorted(reference)
    assert not _same(reference, chunked)
    a, b = whole.showo.lm_head.weight, parts.showo.lm_head.weight
    assert type(a) is type(b) and a.shape == b.shape and a.dtype == b.dtype and not b.requires_grad
    names = [*getattr(a, "tensor_attribute_names", ()), *getattr(a, "optional_tensor_attribute_names", ())] or [
        "blocksize", "compress_statistics", "quant_type", "quant_storage", "bnb_quantized"]
    assert [getattr(b, n) for n in names] == [getattr(a, n) for n in names], names
    if method == "nf4":  # (the layer holds the weight's state, as Params4bit.to leaves it)
        assert parts.showo.lm_head.quant_state is b.quant_state and b.module is parts.showo.lm_head
    if method == "nf4" and rows * width % 2:  # (bitsandbytes compiles its dequantization for an odd
        return                                  # weight count: 17 s; the tensors are equal, checked above)
    x = torch.randn(3, width, generator=torch.Generator().manual_seed(1)).to(dtype)
    with torch.no_grad():
        assert torch.equal(whole.showo.lm_head(x), parts.showo.lm_head(x))


@pytest.mark.parametrize(("method", "dtype"), [("int8wo", torch.float32),
                                               pytest.param("nf4", torch.bfloat16, marks=pytest.mark.slow)],
                         ids=["int8wo-fp32", "nf4-bf16"])
def test_a_load_quantized_in_chunks_is_the_load_quantized_whole(monkeypatch, untied, method, dtype):  # noqa: F811
    """The untied tiny model with two LoRA adapters merged, eager and lazy heads and ``--offload
    model``, every layer in chunks (at most 1000 weights): every tensor equal to the load quantizing
    each layer whole."""
    _needs(method)
    folder, adapters = untied

    def loaded(chunk, heads, offload):
        monkeypatch.setattr(acceleration, "QUANTIZE_CHUNK", chunk)
        model = load(folder, dtype=dtype, lora=adapters, heads=heads,
                     runtime=RuntimeOptions(quantize=method, offload=offload))
        model.network.load_heads()
        return _tensors(model.network)

    reference = loaded(WHOLE, ALL_HEADS, "none")
    assert sum(not k.endswith("#") for k in reference) >= 35
    for heads, offload in ((ALL_HEADS, "none"), ((), "none"), (ALL_HEADS, "model")):
        assert not _same(reference, loaded(1000, heads, offload)), (heads, offload)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["int8wo", "nf4"])
def test_the_demos_caption_and_image_are_those_of_each_layer_quantized_whole(monkeypatch, method):
    """The demo (a tied ``lm_head``: the embedding's tensor, left unquantized) with its layers in
    chunks: the same tensors, caption and t2i latents."""
    _needs(method)
    monkeypatch.setattr(acceleration, "QUANTIZE_CHUNK", WHOLE)
    whole = load("demo", runtime=RuntimeOptions(quantize=method))
    monkeypatch.setattr(acceleration, "QUANTIZE_CHUNK", 500)
    parts = load("demo", runtime=RuntimeOptions(quantize=method))
    assert not _same(_tensors(whole.network), _tensors(parts.network))
    same_caption_and_image(parts, whole)
