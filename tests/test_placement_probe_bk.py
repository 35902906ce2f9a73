"""Probe BK: a quantized load places the network layer by layer (``placement.place``): each group
read, converted, merged with its LoRA adapters, moved and quantized before the next is read, with
the same bits as quantizing the whole network after placing it (the order before)."""

from __future__ import annotations

import pytest
import torch

from showo2_cli import api
from showo2_cli.acceleration import QUANTIZED_PREFIXES, quantize_network
from showo2_cli.loading import ALL_HEADS, load
from showo2_cli.options import RuntimeOptions
from showo2_cli.specs import get_spec

METHODS = [pytest.param("int8wo", id="int8wo"), pytest.param("nf4", id="nf4", marks=pytest.mark.slow)]


def _needs(method: str) -> None:
    pytest.importorskip("torchao" if method == "int8wo" else "bitsandbytes")


@pytest.fixture(scope="module")
def untied(tmp_path_factory):
    """A tiny model with its own ``lm_head`` (quantized), and two adapters over the LLM, the flow
    head and the ``lm_head`` (alpha_pattern, rsLoRA), then over a flow-head block and ``o_proj``."""
    from conftest import write_adapter
    from showo2_cli.loading import init_model

    tmp = tmp_path_factory.mktemp("bk")
    folder = init_model(get_spec("tiny").replace(name="untied", tie_word_embeddings=False), tmp / "untied",
                        seed=5, vae_base_dim=4)
    adapters = [write_adapter(folder, tmp / "a", ["q_proj", "fc1", "linear", "lm_head"], 1, use_rslora=True,
                              alpha_pattern={"diffusion_head_b.linear": 9.0, "lm_head": 3.0}),
                write_adapter(folder, tmp / "b", ["diffusion_head_a.0.self_attn.q_proj", "o_proj"], 2)]
    return folder, adapters


def _tensors(net) -> dict[str, torch.Tensor]:
    """Every tensor of a (quantized) network: torchao's int8 data and scales, bitsandbytes' codes
    and block scales."""
    out = {}
    for key, value in net.state_dict().items():
        names = getattr(value, "tensor_data_names", None)
        for name in names or ("",):
            out[f"{key}#{name}"] = (getattr(value, name) if name else value).detach()
    for key, module in net.named_modules():
        state = getattr(getattr(module, "weight", None), "quant_state", None)
        if state is not None:
            for name, t in state.as_dict(packed=False).items():
                if isinstance(t, torch.Tensor):
                    out[f"{key}#{name}"] = t
    return out


def _same(a: dict, b: dict) -> list[str]:
    """The names whose tensors differ (in name, dtype, shape or any bit)."""
    return sorted(set(a) ^ set(b)) + [k for k in a if k in b and (
        a[k].dtype != b[k].dtype or a[k].shape != b[k].shape or not torch.equal(a[k], b[k]))]


def _quantized_after(folder, method, dtype, lora=()):
    """The order before probe BK: the whole network loaded (adapters merged), then quantized."""
    model = load(folder, dtype=dtype, lora=lora)
    quantize_network(model.network, method)
    model.quantize = method
    return model


@pytest.mark.parametrize(("method", "dtype"), [("int8wo", torch.float32),
                                               pytest.param("nf4", torch.bfloat16, marks=pytest.mark.slow)],
                         ids=["int8wo-fp32", "nf4-bf16"])
def test_placed_layer_by_layer_is_bit_for_bit_the_whole_network_quantized(untied, method, dtype):
    """Eager and lazy heads, with two LoRA adapters, and with ``--offload model``: every tensor
    (int8 data and scales, NF4 codes and block scales, the layers left unquantized) equal."""
    _needs(method)
    folder, adapters = untied
    reference = _tensors(_quantized_after(folder, method, dtype, adapters).network)
    assert sum(not k.endswith("#") for k in reference) >= 35  # (each quantized layer's parts)
    for heads, offload in ((ALL_HEADS, "none"), ((), "none"), (ALL_HEADS, "model")):
        model = load(folder, dtype=dtype, lora=adapters, heads=heads,
                     runtime=RuntimeOptions(quantize=method, offload=offload))
        model.network.load_heads()
        assert model.quantize == method and model.network.dtype == dtype
        assert not _same(reference, _tensors(model.network)), (heads, offload)


@pytest.mark.parametrize("method", METHODS)
def test_the_demos_caption_and_image_are_those_of_the_whole_network_quantized(method):
    _needs(method)
    reference, placed = _quantized_after("demo", method, torch.float32), load("demo", runtime=RuntimeOptions(quantize=method))
    assert not _same(_tensors(reference.network), _tensors(placed.network))
    same_caption_and_image(placed, reference)


def same_caption_and_image(model, reference) -> None:
    """Assert two loads of the demo answer a caption alike (a non-empty answer) and sample the same
    latents of one image, bit for bit."""
    opts, image = api.CaptionOptions(max_new_tokens=6), torch.full((1, 3, 64, 64), 0.5)
    gen = api.GenerateOptions(seed=3, steps=3)
    with torch.no_grad():
        answers = api.caption(model, image, opts).answers
        assert answers == api.caption(reference, image, opts).answers and answers[0]
        a, b = (api.text_to_image(m, ["a red circle"], gen)[0].latents for m in (model, reference))
    assert torch.equal(a, b)


def test_a_pickled_model_is_placed_alike_and_its_file_let_go(tmp_path):
    """A ``.bin`` has no reader giving memory of its own (``TensorReader.own_memory`` False): its
    tensors come through the pickle's memory map, and what stays unquantized is copied out of it
    after, so the file is no longer mapped; the weights equal those of the whole network
    quantized after loading."""
    _needs("int8wo")
    import gc
    import shutil
    from pathlib import Path

    from conftest import PARITY_DIR, parity_weight_file

    source = PARITY_DIR / "model"
    if not (source / "config.json").exists() or not Path("/proc/self/maps").exists():
        pytest.skip("needs the parity fixtures' official-format model and /proc/self/maps")
    folder = shutil.copytree(source, tmp_path / "m", ignore=shutil.ignore_patterns("*.bin", "*.safetensors", "*.index.json"))
    parity_weight_file("bin", folder)  # one pickle, also from a set stored in shards
    weights = str((folder / "pytorch_model.bin").resolve())
    reference = load(folder, need=())
    quantize_network(reference.network, "int8wo")
    reference = _tensors(reference.network)
    model = load(folder, need=(), runtime=RuntimeOptions(quantize="int8wo"))
    assert model.files.weights[0].suffix == ".bin"
    gc.collect()
    assert weights not in Path("/proc/self/maps").read_text()
    assert not _same(reference, _tensors(model.network)) and sum(not k.endswith("#") for k in reference) > 0


def _unquantized_linears(roots) -> int:
    """Linear layers of the quantized parts whose weight is a plain tensor that exists (not on
    'meta', not yet quantized), over the networks ``roots`` (a head loaded later has a holder)."""
    count, seen = 0, set()
    for root in roots:
        tied = bool(getattr(getattr(root, "spec", None), "tie_word_embeddings", False))
        for name, m in root.named_modules():
            if (isinstance(m, torch.nn.Linear) and name.startswith(QUANTIZED_PREFIXES) and id(m) not in seen
                    and ".lora_" not in name  # (an adapter's own low-rank matrices, while it merges)
                    and not (tied and name == "showo.lm_head") and not hasattr(m.weight, "tensor_data_names")
                    and not m.weight.is_meta and getattr(m.weight, "quant_state", None) is None):
                seen.add(id(m))
                count += 1
    return count


@pytest.mark.parametrize(("method", "heads"), [("int8wo", ALL_HEADS), pytest.param("nf4", (), marks=pytest.mark.slow)],
                         ids=["int8wo-eager", "nf4-lazy"])
def test_no_more_than_one_layer_is_unquantized_when_placed_or_quantized(untied, monkeypatch, method, heads):
    """The order, spied on: each time weights are moved to their device (``nn.Module.to``) or
    quantized (``quantize_network``), how many linear layers of the LLM and the flow head exist
    unquantized. Before, the whole network was placed (``Showo2.to(device)``), then quantized:
    all of them at once (here 2 LLM layers x 7, the lm_head and the flow head: 35), which on CUDA is the
    whole unquantized network on the GPU (the 7B in bf16: about 17 GB). Now: at most one group's
    (an LLM layer: 7, a flow-head block: 8). On the CPU moving changes nothing and memory-mapped weights cost nothing
    until read, so only the order of these steps shows here what a GPU would hold; the same code
    runs on any device."""
    _needs(method)
    import showo2_cli.acceleration as acceleration
    import showo2_cli.loading as loading

    folder, adapters = untied
    roots, seen = [], []
    build, quantize, to = loading.build_network, acceleration.quantize_network, torch.nn.Module.to

    def spy_build(*a, **kw):
        roots.append(build(*a, **kw))
        return roots[-1]

    def spy_quantize(net, *a, **kw):
        roots.append(net)
        seen.append(("quantize", _unquantized_linears(roots)))
        return quantize(net, *a, **kw)

    def spy_to(self, *a, **kw):
        out = to(self, *a, **kw)
        seen.append(("to", _unquantized_linears(roots)))
        return out

    monkeypatch.setattr(loading, "build_network", spy_build)
    monkeypatch.setattr(acceleration, "quantize_network", spy_quantize)
    monkeypatch.setattr(torch.nn.Module, "to", spy_to)
    model = loading.load(folder, lora=adapters, heads=heads, runtime=RuntimeOptions(quantize=method))
    model.network.load_heads()
    monkeypatch.undo()
    total = sum(1 for n, m in model.network.named_modules() if acceleration.quantized_filter(model.network)(m, n))
    assert total == 35 and model.network.loaded_heads() == ("lm_head", "flow_head")
    assert {kind for kind, _ in seen} == {"quantize", "to"}
    assert max(n for _, n in seen) == 8, seen  # one group's at most, never the whole network's
    from showo2_cli.placement import groups

    wanted = acceleration.quantized_filter(model.network)
    per_group = [sum(1 for n, m in model.network.get_submodule(g).named_modules(prefix=g) if wanted(m, n))
                 for top, _ in model.network.named_children()
                 for g, _ in groups(model.network.get_submodule(top), top)]
    assert sorted(per_group)[-3:] == [7, 8, 8]  # an LLM layer (q, k, v, o, gate, up, down); a flow-head block
    assert _unquantized_linears([model.network]) == 0


@pytest.mark.slow
def test_a_quantized_load_peaks_at_about_the_quantized_model_plus_a_layer(tmp_path):
    """Peak RSS (``VmHWM``, reset before the load, in a fresh process) of ``--quantize int8wo`` on a
    bf16 model at the 1.5B's widths with 2 LLM layers, 1 flow-head block, 1 semantic layer and a
    4096-row vocabulary (0.48 GB file, 0.28 GB quantized), built as the benchmarks build theirs
    (random weights, ``save_folder``): before, the whole file was read while quantizing and its
    pages stayed to the end: +0.77 / +0.82 GB over the RSS before the load (two runs); now about
    the quantized model and one layer: +0.38 / +0.39 GB (2-core shared machine, one thread)."""
    _needs("int8wo")
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    from showo2_cli.loading import save_folder
    from showo2_cli.modeling.showo2 import Showo2Model

    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("needs /proc/self/clear_refs (Linux)")
    spec = get_spec("1.5B").replace(name="wide", num_layers=2, head_layers=1, semantic_layers=1, vocab_size=4096,
                                    tie_word_embeddings=False)
    with torch.device("meta"):
        shapes = Showo2Model(spec).state_dict()
    g = torch.Generator().manual_seed(0)
    state = {k: torch.empty(v.shape, dtype=torch.bfloat16).uniform_(-0.05, 0.05, generator=g) for k, v in shapes.items()}
    folder = save_folder(tmp_path / "wide", spec, state)
    del state
    file_bytes = (folder / "model.safetensors").stat().st_size
    code = f"""
import json, torch
torch.set_num_threads(1)
from showo2_cli.acceleration import weight_bytes
from showo2_cli.loading import load
from showo2_cli.options import RuntimeOptions
def status(key):
    return next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith(key + ":"))
load("demo", need=(), runtime=RuntimeOptions(quantize="int8wo"))  # (the libraries imported)
before = status("VmRSS")
open("/proc/self/clear_refs", "w").write("5")
model = load({str(folder)!r}, need=(), dtype=torch.bfloat16, runtime=RuntimeOptions(quantize="int8wo"))
print(json.dumps({{"before": before, "peak": status("VmHWM"), "weights": weight_bytes(model.network)}}))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    row = json.loads(done.stdout.strip().splitlines()[-1])
    grown, weights = row["peak"] - row["before"], row["weights"]
    assert 0.4 * file_bytes < weights < 0.7 * file_bytes
    # the quantized model, one layer and its quantization's scratch; before: the whole file on top
    assert grown < weights + 0.5 * file_bytes, (grown / 1e9, weights / 1e9, file_bytes / 1e9)
