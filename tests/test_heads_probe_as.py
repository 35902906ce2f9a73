"""Probe AS: a head left out on load (``load(heads=)``) loads on its first use, from the same files,
bit-identical to an eager load's under every option (dtype, a later move, int8wo / nf4
quantization, model and sequential offload, compile); a weights file changed or removed since
the load is one clear error; ``chat`` and ``serve`` load only the heads they run."""

from __future__ import annotations

import json
import os
import shutil
import urllib.request

import pytest
import torch

from conftest import run_in_thread
from showo2_cli import api
from showo2_cli.errors import ModelError
from showo2_cli.loading import ALL_HEADS, load
from showo2_cli.modeling.parts import NotLoaded
from showo2_cli.modeling.showo2 import HEADS
from showo2_cli.options import RuntimeOptions
from showo2_cli.runtime import enable_offload
from showo2_cli.specs import get_spec

FLOW = ("diff_proj.", "diffusion_head_a.", "diffusion_head_b.")


@pytest.fixture(scope="module")
def untied(tmp_path_factory):
    """A tiny model whose ``lm_head`` is its own tensor: both heads can be left out."""
    from showo2_cli.loading import init_model

    spec = get_spec("tiny").replace(name="untied", tie_word_embeddings=False)
    return init_model(spec, tmp_path_factory.mktemp("as") / "untied", seed=2, vae_base_dim=4)


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    from PIL import Image

    path = tmp_path_factory.mktemp("in") / "in.png"
    Image.new("RGB", (40, 24), (30, 160, 200)).save(path)
    return path


def _use(model, image):
    """A sampled caption (the lm_head's first use), then an image (the flow head's): the answers
    and the sampled latents."""
    answers = api.caption(model, image, api.CaptionOptions(max_new_tokens=6, temperature=1.0, seed=3)).answers
    after_caption = model.network.loaded_heads()
    latents = api.text_to_image(model, ["a red circle"], api.GenerateOptions(steps=2, seed=1))[0].latents
    return answers, after_caption, latents


def _plain(state: dict) -> dict:
    return {k: v for k, v in state.items() if type(v) is torch.Tensor and not v.is_meta}  # (offloaded: on meta)


OPTIONS = {
    "fp32": ({}, None),
    "bf16": ({"dtype": torch.bfloat16}, None),
    "fp16": ({"dtype": torch.float16}, None),
    "moved-to-bf16": ({}, lambda m: m.to(dtype=torch.bfloat16)),  # a dtype change after the load
    "int8wo": ({"runtime": RuntimeOptions(quantize="int8wo")}, None),
    "nf4": ({"runtime": RuntimeOptions(quantize="nf4")}, None),
    "offload-model": ({}, lambda m: enable_offload(m, "model", "cpu")),
    "offload-sequential": ({}, lambda m: enable_offload(m, "sequential", "cpu")),
    "eager-attention": ({"runtime": RuntimeOptions(attn="eager")}, None),
}


@pytest.mark.parametrize("option", list(OPTIONS))
def test_a_head_loaded_on_first_use_is_the_eager_loads_bit_for_bit(untied, image, option):
    kwargs, after = OPTIONS[option]
    if option == "int8wo":
        pytest.importorskip("torchao")
    if option == "nf4":
        pytest.importorskip("bitsandbytes")
    eager, lazy = load(untied, heads=ALL_HEADS, **kwargs), load(untied, heads=(), **kwargs)
    assert lazy.network.loaded_heads() == ()
    assert not any(k.startswith((*FLOW, "showo.lm_head.")) for k in lazy.network.state_dict())
    if after is not None:
        after(eager)
        after(lazy)
    sequential = option == "offload-sequential"  # its hooks hold what is there: every head loads first
    assert lazy.network.loaded_heads() == (ALL_HEADS if sequential else ())
    got, want = _use(lazy, image), _use(eager, image)
    assert got[1] == (ALL_HEADS if sequential else ("lm_head",))  # the caption loaded the lm_head alone
    assert got[0] == want[0] and len(got[0][0]) > 0
    assert torch.equal(got[2], want[2]), option
    assert lazy.network.loaded_heads() == ALL_HEADS
    se, sl = _plain(eager.network.state_dict()), _plain(lazy.network.state_dict())
    assert set(sl) == set(se)
    for k, v in se.items():
        assert sl[k].dtype == v.dtype and sl[k].device == v.device and torch.equal(sl[k], v), k
    for name, module in eager.network.named_modules():  # the same layers (quantized ones included), modes
        other = lazy.network.get_submodule(name)
        assert type(other) is type(module) and other.training == module.training, name
        if option in ("int8wo", "nf4") and hasattr(module, "weight"):
            assert type(other.weight) is type(module.weight), name
    assert lazy.parameter_counts() == eager.parameter_counts()


def test_compile_reaches_a_head_loaded_later(untied):
    runtime = RuntimeOptions(compile=True)
    eager, lazy = load(untied, runtime=runtime), load(untied, runtime=runtime, heads=())
    lazy.network.load_heads("flow_head")
    for model in (eager, lazy):
        assert all(b._compiled_call_impl is not None for b in model.network.diffusion_head_a)
        assert model.network.diffusion_head_b._compiled_call_impl is not None
    se, sl = eager.network.state_dict(), lazy.network.state_dict()
    assert all(torch.equal(sl[k], se[k]) for k in se if k.startswith(FLOW))
    assert lazy.network.loaded_heads() == ("flow_head",)  # (the untied lm_head still waits)


@pytest.mark.parametrize("change", ["rewritten", "removed"])
def test_a_weights_file_changed_before_first_use_is_one_clear_error(tiny_model_dir, tmp_path, image, change):
    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    model = load(folder, heads=("lm_head",))
    weights = folder / "model.safetensors"
    if change == "removed":
        weights.unlink()
    else:  # the same size, written again later
        st = weights.stat()
        os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    with pytest.raises(ModelError, match="the weights file changed or went away since the model was loaded"):
        api.text_to_image(model, ["a red circle"], api.GenerateOptions(steps=2, seed=1))
    assert isinstance(model.network.diffusion_head_a, NotLoaded)  # nothing half-placed
    assert api.caption(model, image, api.CaptionOptions(max_new_tokens=2)).answers  # the rest still runs


def test_with_lora_every_head_loads_at_once_and_a_head_left_out_stays_out(tiny_model_dir, tmp_path):
    from conftest import random_lora

    adapter = random_lora(tiny_model_dir, tmp_path / "adapter")
    assert load(tiny_model_dir, lora=[adapter], heads=None).network.loaded_heads() == ALL_HEADS
    part = load(tiny_model_dir, lora=[adapter], heads=("lm_head",))  # a caption's: the merge is not replayed
    assert part.network.head_loader is None
    with pytest.raises(ModelError, match="the network's flow_head is not loaded"):
        api.text_to_image(part, ["a red circle"], api.GenerateOptions(steps=2, seed=1))


def _spy_loads(monkeypatch) -> list:
    import showo2_cli.loading as loading

    bundles = []

    def spy(*args, **kwargs):
        bundles.append(load(*args, **kwargs))
        return bundles[-1]

    monkeypatch.setattr(loading, "load", spy)
    return bundles


def test_chat_holds_no_flow_head_until_a_t2i(monkeypatch, untied, tmp_path):
    from typer.testing import CliRunner

    from showo2_cli.cli import app

    bundles = _spy_loads(monkeypatch)
    args = ["chat", "--model", str(untied), "--max-new-tokens", "3", "--temperature", "0"]
    result = CliRunner().invoke(app, args, input="hi\nand then?\n")
    assert result.exit_code == 0, result.output
    assert bundles[-1].network.loaded_heads() == ("lm_head",)
    assert all(isinstance(bundles[-1].network.get_submodule(n), NotLoaded) for n in HEADS["flow_head"])
    out = tmp_path / "c.png"
    result = CliRunner().invoke(app, args, input=f"hi\n/t2i a red circle -o {out}\n")
    assert result.exit_code == 0, result.output
    assert out.is_file() and bundles[-1].network.loaded_heads() == ALL_HEADS


def _post(address, path: str, body: dict) -> dict:
    request = urllib.request.Request(f"http://{address[0]}:{address[1]}{path}", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())


def test_serve_loads_each_head_on_the_first_request_that_runs_it(monkeypatch, untied):
    pytest.importorskip("fastapi")
    from showo2_cli import serve as S
    from showo2_cli.cli import main
    from showo2_cli.serve import ServerConfig, bind_socket
    from showo2_cli.serve.app import server_for

    started = []
    monkeypatch.setattr(S, "serve", lambda bundle, *a, **k: started.append(bundle))
    assert main(["serve", "--model", str(untied), "--port", "0", "--quiet"]) == 0
    model = started[0]
    assert model.network.loaded_heads() == ()  # nothing asked yet: no head held
    sock = bind_socket("127.0.0.1", 0)
    srv = server_for(model, ServerConfig(model_id="untied"), sock, log_level="error")
    thread = run_in_thread(srv, sock)
    try:
        address = sock.getsockname()[:2]
        answer = _post(address, "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}],
                                                         "max_tokens": 2, "temperature": 0})
        assert answer["choices"][0]["message"]["content"] is not None
        assert model.network.loaded_heads() == ("lm_head",)
        images = _post(address, "/v1/images/generations", {"prompt": "a red circle", "steps": 2, "seed": 1})
        assert len(images["data"]) == 1
        assert model.network.loaded_heads() == ALL_HEADS
    finally:
        srv.should_exit = True
        thread.join(30)
        sock.close()


def test_parameter_counts_of_an_int8_quantized_model(tiny_model_dir):
    """``Showo2.parameter_counts()`` of a ``quantize="int8wo"`` load raised a RuntimeError (torchao's
    int8 weights have no storage of their own to tell shared tensors by)."""
    pytest.importorskip("torchao")
    quantized = load(tiny_model_dir, runtime=RuntimeOptions(quantize="int8wo"))
    assert quantized.parameter_counts() == load(tiny_model_dir).parameter_counts()
