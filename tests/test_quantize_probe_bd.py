"""Probe BD: quantized models (``--quantize int8wo`` / ``nf4``) on every path."""

from __future__ import annotations

import pytest
import torch

from showo2_cli import api
from showo2_cli.loading import load
from showo2_cli.options import RuntimeOptions
from showo2_cli.specs import get_spec


@pytest.fixture(scope="module")
def untied(tmp_path_factory):
    """A tiny model with its own ``lm_head`` of an odd number of rows (its byte-level vocabulary)."""
    from showo2_cli.loading import init_model

    spec = get_spec("tiny").replace(name="untied", tie_word_embeddings=False)
    return init_model(spec, tmp_path_factory.mktemp("bd") / "untied", seed=2, vae_base_dim=4)


def _four_bit(net):
    import bitsandbytes as bnb

    return {name: m for name, m in net.named_modules() if isinstance(m, bnb.nn.Linear4bit)}


@pytest.mark.parametrize("heads", ["eager", "lazy"])
def test_nf4_layers_follow_the_models_mode_and_eval_changes_no_number(untied, heads):
    """bitsandbytes' CPU path repacks a ``Linear4bit`` weight on its first forward in eval mode (on
    a CPU with AVX512-BF16): it asserted on the untied lm_head's 282 rows ("N must be divisible by
    block_n") once a user called ``network.eval()`` after an nf4 load, whose new layers were left
    in training mode, and it computes in bf16 whatever the model's dtype. Now the layers take the
    model's mode and stay on the dequantize-and-matmul path in both modes."""
    pytest.importorskip("bitsandbytes", reason="--quantize nf4 needs bitsandbytes")
    from bitsandbytes.functional import dequantize_4bit

    model = load(untied, runtime=RuntimeOptions(quantize="nf4"), heads=() if heads == "lazy" else None)
    net = model.network
    net.load_heads()
    layers = _four_bit(net)
    head = net.showo.lm_head
    assert "showo.lm_head" in layers and head.out_features % 32 != 0  # (the case that asserted)
    assert not net.training and not any(m.training for m in layers.values())  # eval, as the model
    image = torch.full((1, 3, 32, 32), 0.5)
    opts = api.CaptionOptions(max_new_tokens=6)
    x = torch.randn(3, head.in_features, generator=torch.Generator().manual_seed(0))
    exact = torch.nn.functional.linear(x, dequantize_4bit(head.weight.data, head.weight.quant_state))
    with torch.no_grad():
        first = api.caption(model, image, opts).answers
        assert torch.equal(head(x), exact)  # float32 compute on the dequantized weight
        for mode in (True, False):  # a user's train() / eval() afterwards changes no number
            net.train(mode)
            assert all(m.training is mode for m in layers.values())
            assert torch.equal(head(x), exact)
            assert api.caption(model, image, opts).answers == first and len(first[0]) > 0
    assert head.weight.quant_state.dtype == torch.float32  # the block scales were not repacked to bf16


@pytest.mark.parametrize("method", ["int8wo", "nf4"])
def test_a_quantized_load_lets_go_of_the_weights_file(untied, tmp_path, method):
    """The weights file is memory-mapped on load; quantizing reads all of it, and its pages stayed
    in the process while any unquantized tensor kept the mapping open (the 1.5B-wide test model:
    1.84 GB RSS after an int8wo load instead of 0.88 GB, fp32's 0.45 GB). The tensors left
    unquantized now have memory of their own, so the file is no longer mapped, eagerly loaded
    heads or heads loaded on first use alike; the numbers are the same."""
    import gc
    import shutil
    from pathlib import Path

    pytest.importorskip("torchao" if method == "int8wo" else "bitsandbytes")
    maps = Path("/proc/self/maps")
    if not maps.exists():
        pytest.skip("needs /proc/self/maps (Linux)")
    folder = shutil.copytree(untied, tmp_path / "m")  # a file no other test maps
    weights = str(next(folder.glob("*.safetensors")).resolve())
    reference = load(untied, runtime=RuntimeOptions(quantize=method))
    for heads in (None, ()):
        model = load(folder, runtime=RuntimeOptions(quantize=method), heads=heads)
        model.network.load_heads()
        gc.collect()
        assert weights not in maps.read_text(), heads
        want = reference.network.state_dict()
        for key, value in model.network.state_dict().items():  # (quantized tensors compare by their data)
            if type(value) is torch.Tensor:
                assert torch.equal(value, want[key]), key
        del model


def test_parameter_counts_of_an_nf4_model_are_the_models(untied):
    """``parameter_counts()`` of an nf4 load counted each 4-bit weight's bytes (two codes a byte)
    and its saved quantization state (block scales, code table) as parameters: the LLM 72 559
    instead of 110 400 on the tiny model; now the counts are the unquantized model's."""
    pytest.importorskip("bitsandbytes", reason="--quantize nf4 needs bitsandbytes")
    want = load(untied).parameter_counts()
    got = load(untied, runtime=RuntimeOptions(quantize="nf4")).parameter_counts()
    assert got == want and want["llm"] == 110400
