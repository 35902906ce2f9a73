"""Option combinations through the Python API (probe AP): every field of ``RuntimeOptions`` given
to ``load`` / ``Showo2Pipeline.from_pretrained`` takes effect (offload, device and dtype were
silently ignored), and a quantized model is not cast to another dtype behind its quantized layers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from showo2_cli import Showo2Pipeline, api
from showo2_cli.errors import UsageError
from showo2_cli.options import RuntimeOptions


def _image(pipe) -> np.ndarray:
    pipe.set_progress_bar_config(disable=True)
    return np.asarray(pipe("a red circle", num_inference_steps=3, generator=torch.Generator().manual_seed(5),
                           output_type="np").images)


@pytest.fixture(scope="module")
def plain() -> np.ndarray:
    return _image(Showo2Pipeline.from_pretrained("demo"))


@pytest.mark.parametrize(("how", "mode"), [("pipeline", "model"), ("api.load", "sequential")])
def test_runtime_offload_is_applied_on_load(plain, how, mode):
    runtime = RuntimeOptions(offload=mode)
    if how == "pipeline":
        pipe = Showo2Pipeline.from_pretrained("demo", runtime=runtime)
    else:
        pipe = Showo2Pipeline(api.load("demo", runtime=runtime))
    assert pipe.offload == pipe.model.offload == mode  # was "none": the option was dropped
    assert pipe.network.execution_device == pipe.vae.execution_device == torch.device("cpu")
    if mode == "sequential":  # accelerate's hooks hold the weights between calls
        assert next(pipe.network.showo.model.layers[0].parameters()).device.type == "meta"
    with pytest.raises(UsageError, match="offload"):
        pipe.to("cpu")  # the hooks place the weights
    assert np.array_equal(_image(pipe), plain)  # the same numbers as without offload


def test_runtime_dtype_and_device_place_the_model():
    assert Showo2Pipeline.from_pretrained("demo", runtime=RuntimeOptions(dtype="bf16")).dtype == torch.bfloat16
    model = api.load("demo", runtime=RuntimeOptions(device="cpu", dtype="bfloat16"))
    assert model.dtype == model.vae.dtype == torch.bfloat16 and model.device.type == "cpu"
    assert api.load("demo", runtime=RuntimeOptions()).dtype == torch.float32  # auto: load's own default
    with pytest.raises(UsageError, match="disagree"):  # one of them would be ignored
        Showo2Pipeline.from_pretrained("demo", torch_dtype=torch.float32, runtime=RuntimeOptions(dtype="bf16"))
    with pytest.raises(UsageError, match="disagree"):
        api.load("demo", dtype="fp16", runtime=RuntimeOptions(dtype="bf16"))


@pytest.mark.parametrize("method", ["int8wo", "nf4"])
def test_quantized_model_keeps_its_dtype(method):
    pytest.importorskip("torchao" if method == "int8wo" else "bitsandbytes")
    pipe = Showo2Pipeline.from_pretrained("demo", runtime=RuntimeOptions(quantize=method))
    before = {k: (v.dtype, type(v)) for k, v in pipe.network.state_dict().items()}
    with pytest.raises(UsageError, match="load it again in bf16"):
        pipe.to(torch.bfloat16)  # was a silent mix: plain layers bf16, quantized ones fp32
    with pytest.raises(UsageError, match="quantized"):
        pipe.model.to(dtype="fp16")
    assert {k: (v.dtype, type(v)) for k, v in pipe.network.state_dict().items()} == before
    assert pipe.to("cpu", torch.float32).dtype == torch.float32  # its own dtype: nothing to change


@pytest.mark.parametrize("command", [["t2i", "x", "-o", "{tmp}/x.png"], ["caption", "{tmp}/none.png"]])
def test_nf4_with_sequential_offload_fails_before_loading(tmp_path, monkeypatch, capsys, command):
    import showo2_cli.loading
    from showo2_cli.cli import main

    with pytest.raises(UsageError, match="cannot hold bitsandbytes 4-bit"):
        RuntimeOptions(quantize="nf4", offload="sequential").validate()

    def never(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(showo2_cli.loading, "load", never)  # was: loaded and quantized, then refused
    (tmp_path / "none.png").write_bytes(b"")
    argv = [a.format(tmp=tmp_path) for a in command] + ["--quantize", "nf4", "--offload", "sequential"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "cannot hold bitsandbytes 4-bit weights" in err and "Traceback" not in err
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize("options", [["--dtype", "bf16"], ["--vae-tiling", "on", "--size", "272x64"]],
                         ids=["bf16", "vae-tiles"])
def test_decode_of_saved_latents_repeats_the_output(tmp_path, options):
    """``t2i --save-latents`` then ``decode`` (default options) gives the output's pixels: the
    decode follows the tiles and dtype the latents file records (it decoded whole in fp32: a tiled
    288-pixel output came back 120/255 off, a bf16 one 3/255)."""
    from PIL import Image

    from showo2_cli.cli import main

    out, again = tmp_path / "x.png", tmp_path / "again.png"
    assert main(["t2i", "a red circle", "-o", str(out), "--seed", "1", "--steps", "2", "--save-latents",
                 "--quiet", *options]) == 0
    assert main(["decode", str(tmp_path / "x.latents.safetensors"), "-o", str(again), "--quiet"]) == 0
    pixels = [np.asarray(Image.open(p).convert("RGB"), dtype=np.int16) for p in (out, again)]
    assert np.array_equal(*pixels)
    if options[0] == "--vae-tiling":  # --vae-tiling off still decodes whole, as asked
        assert main(["decode", str(tmp_path / "x.latents.safetensors"), "-o", str(tmp_path / "whole.png"),
                     "--quiet", "--vae-tiling", "off"]) == 0
        whole = np.asarray(Image.open(tmp_path / "whole.png").convert("RGB"), dtype=np.int16)
        assert np.abs(whole - pixels[0]).max() > 8


@pytest.mark.parametrize("attn", ["flex", "sdpa"])
def test_compile_with_flex_on_the_cpu_is_static(monkeypatch, attn):
    """``t2i --attn flex --compile`` ended on the CPU in inductor's CppCompileError after minutes of
    compiling (the outer compile traced flex attention with dynamic shapes, which torch's CPU flex
    template cannot build); with static compiles it writes its image (68 s on the parity weights,
    measured by hand: too slow for this suite). Here: the compile calls' arguments."""
    from showo2_cli.acceleration import compile_network

    calls = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, *a, **kw: calls.append(kw))
    model = api.load("demo", runtime=RuntimeOptions(attn=attn))
    compile_network(model.network)
    assert len(calls) == 2 + len(model.network.diffusion_head_a)  # the LLM, each flow-head block, the last layer
    assert all(kw == ({"dynamic": False} if attn == "flex" else {}) for kw in calls)
