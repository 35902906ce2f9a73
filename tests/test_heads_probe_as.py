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

from conftest import run_in_thread, write_adapter
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
}


SLOW = pytest.mark.slow  # (the same path as a neighbour's: in the slow suite, for the fast one's time)


@pytest.mark.parametrize("option", [pytest.param(o, marks=SLOW) if o in ("fp16", "moved-to-bf16") else o
                                    for o in OPTIONS])
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



@pytest.fixture(scope="module")
def adapters(untied, tmp_path_factory):
    """Two adapters merged in order: one over the LLM, the flow head and the untied lm_head with a
    per-layer alpha and rsLoRA scaling, one over the flow head's attention alone."""
    tmp = tmp_path_factory.mktemp("adapters")
    first = write_adapter(untied, tmp / "a", ["q_proj", "fc1", "linear", "lm_head"], 1, use_rslora=True,
                     alpha_pattern={"diffusion_head_b.linear": 9.0, "lm_head": 3.0})
    second = write_adapter(untied, tmp / "b", ["diffusion_head_a.0.self_attn.q_proj", "o_proj"], 2)
    return [first, second]


@pytest.mark.parametrize("option", ["fp32", pytest.param("int8wo", marks=SLOW)])
def test_lora_adapters_are_merged_into_a_head_loaded_later_as_on_load(untied, adapters, image, option):
    kwargs, _ = OPTIONS[option]
    if option == "int8wo":
        pytest.importorskip("torchao")
    eager = load(untied, lora=adapters, heads=ALL_HEADS, **kwargs)
    lazy = load(untied, lora=adapters, heads=(), **kwargs)
    assert lazy.network.loaded_heads() == () and lazy.adapters == eager.adapters
    base = load(untied, heads=ALL_HEADS, **kwargs).network.state_dict()
    got, want = _use(lazy, image), _use(eager, image)
    assert got[0] == want[0] and torch.equal(got[2], want[2])
    se, sl = _plain(eager.network.state_dict()), _plain(lazy.network.state_dict())
    assert set(sl) == set(se)
    for k, v in se.items():
        assert sl[k].dtype == v.dtype and torch.equal(sl[k], v), k
    if option != "int8wo":
        for k in ("diffusion_head_b.linear.weight", "diffusion_head_a.0.self_attn.q_proj.weight",
                  "showo.lm_head.weight"):
            assert not torch.equal(sl[k], base[k]), k  # merged into the heads loaded later


def test_lora_merges_only_into_what_is_loaded(tiny_model_dir, adapters, untied, tmp_path):
    """A caption's load (no flow head) builds no flow-head weights to merge into and drop: the
    adapters' flow-head layers are matched and checked on 'meta' alone."""
    part = load(untied, lora=adapters, heads=("lm_head",))
    assert isinstance(part.network.diffusion_head_a, NotLoaded)
    assert all(p.is_meta for p in part.network.diffusion_head_a.meta_module.parameters())
    recorded = part.network.head_loader.adapters  # the flow-head layers each adapter adapts, for later
    assert [folder for folder, *_ in recorded] == [str(a) for a in adapters]
    assert all(names and all(n.startswith(FLOW) for n in names) for _, names, *_ in recorded)
    assert "diffusion_head_a.0.self_attn.q_proj" in recorded[1][1] and "diffusion_head_a.1.self_attn.o_proj" in recorded[1][1]
    # an adapter whose flow-head tensor does not fit still fails the load, before any use
    from safetensors.torch import load_file, save_file

    from showo2_cli.lora import ADAPTER_WEIGHTS, PEFT_PREFIX

    bad = tmp_path / "bad"
    shutil.copytree(adapters[1], bad)
    state = load_file(str(bad / ADAPTER_WEIGHTS))
    key = next(k for k in state if k.removeprefix(PEFT_PREFIX).startswith("diffusion_head_a.0.self_attn.q_proj.lora_B"))
    state[key] = state[key][:-1].contiguous()
    save_file(state, str(bad / ADAPTER_WEIGHTS))
    with pytest.raises(ModelError, match="does not fit this model"):
        load(untied, lora=[bad], heads=("lm_head",))


def test_a_lora_adapter_changed_before_first_use_is_one_clear_error(untied, adapters, tmp_path, image):
    folder = tmp_path / "adapter"
    shutil.copytree(adapters[1], folder)
    model = load(untied, lora=[folder], heads=("lm_head",))
    from showo2_cli.lora import ADAPTER_WEIGHTS

    (folder / ADAPTER_WEIGHTS).unlink()
    with pytest.raises(ModelError, match="the LoRA adapter file changed or went away"):
        api.text_to_image(model, ["a red circle"], api.GenerateOptions(steps=2, seed=1))
    assert isinstance(model.network.diffusion_head_a, NotLoaded)


def _spy_loads(monkeypatch) -> list:
    import showo2_cli.loading as loading

    bundles = []

    def spy(*args, **kwargs):
        bundles.append(load(*args, **kwargs))
        return bundles[-1]

    monkeypatch.setattr(loading, "load", spy)
    return bundles


@pytest.mark.slow  # (several commands' worth of work)
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


@pytest.mark.slow  # (several commands' worth of work)
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


def test_a_head_that_would_not_fit_the_memory_limit_is_refused_before_it_is_read(tiny_model_dir, monkeypatch):
    from showo2_cli.errors import ResourceError
    from showo2_cli.options import MAX_MEMORY_ENV

    model = load(tiny_model_dir, heads=("lm_head",))
    monkeypatch.setenv(MAX_MEMORY_ENV, "0.0001")  # 100 kB: less than the tiny flow head
    with pytest.raises(ResourceError, match=r"loading the network's flow_head needs about"):
        model.network.load_heads("flow_head")
    assert isinstance(model.network.diffusion_head_a, NotLoaded)
    monkeypatch.delenv(MAX_MEMORY_ENV)
    model.network.load_heads("flow_head")
    assert model.network.loaded_heads() == ALL_HEADS


@pytest.mark.slow  # (several commands' worth of work)
def test_the_pipeline_loads_each_head_on_first_use_and_saves_them_all(untied, image, tmp_path):
    from safetensors.torch import load_file

    from showo2_cli import Showo2Pipeline

    pipe = Showo2Pipeline.from_pretrained(untied)
    pipe.set_progress_bar_config(disable=True)
    assert pipe.network.loaded_heads() == ()
    answer = pipe.caption(image, max_new_tokens=3)
    assert pipe.network.loaded_heads() == ("lm_head",)
    eager = load(untied, heads=ALL_HEADS)
    assert answer == api.caption(eager, image, api.CaptionOptions(max_new_tokens=3)).answers[0]
    pipe("a red circle", num_inference_steps=2, seed=1)
    assert pipe.network.loaded_heads() == ALL_HEADS
    fresh = Showo2Pipeline.from_pretrained(untied)  # nothing run: save_pretrained loads the heads first
    fresh.save_pretrained(tmp_path / "saved")
    saved, source = load_file(str(tmp_path / "saved" / "model.safetensors")), load_file(str(untied / "model.safetensors"))
    assert set(saved) == set(source) and all(torch.equal(saved[k], source[k]) for k in source)


def test_two_first_uses_at_once_load_the_head_once(tiny_model_dir, monkeypatch):
    import threading

    import showo2_cli.placement as placement  # (the head loader's module)

    model = load(tiny_model_dir, heads=("lm_head",))
    reads, real = [], placement.read_state_dict

    def counted(paths):
        reads.append(paths)
        return real(paths)

    monkeypatch.setattr(placement, "read_state_dict", counted)
    threads = [threading.Thread(target=model.network.load_heads, args=("flow_head",)) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(reads) == 1 and model.network.loaded_heads() == ALL_HEADS


def test_a_head_loaded_under_a_callers_default_device_merges_its_lora_as_on_load(untied, adapters):
    """``load`` runs with torch's CPU default (``cpu_by_default``) but a head's first use need not
    (``network.load_heads()``, ``save_pretrained``, ``enable_sequential_cpu_offload``): under a
    notebook's ``torch.set_default_device``, peft made the adapters' layers there and merged
    nothing sound (on 'meta': 7 flow-head weights left on 'meta')."""
    eager = load(untied, lora=adapters, heads=ALL_HEADS).network.state_dict()
    lazy = load(untied, lora=adapters, heads=())
    with torch.device("meta"):
        lazy.network.load_heads()
    got = lazy.network.state_dict()
    assert set(got) == set(eager)
    for k, v in eager.items():
        assert not got[k].is_meta and torch.equal(got[k], v), k


def test_a_head_of_a_model_offloaded_on_load_loads_in_cpu_memory(untied, monkeypatch):
    """``load(device="cuda", runtime=RuntimeOptions(offload="model"))`` keeps the weights in CPU
    memory (quantized there, ``apply``); a head left out went through the GPU on its first use
    (checked against GPU memory, quantized there: on a machine without CUDA, an AssertionError)."""
    import showo2_cli.runtime as runtime

    runtime_options = RuntimeOptions(offload="model")
    if not torch.cuda.is_available():  # (load checks the device now, probe BA): the weights stay in CPU
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # memory, the GPU is only named
    eager = load(untied, device="cuda", runtime=runtime_options, heads=ALL_HEADS).network.state_dict()
    lazy = load(untied, device="cuda", runtime=runtime_options, heads=())
    asked = []
    real = runtime.check_memory
    monkeypatch.setattr(runtime, "check_memory", lambda gb, what, limit, device, *a: (asked.append(str(device)),
                                                                                       real(gb, what, limit, device, *a)))
    lazy.network.load_heads()
    assert asked == ["cpu"]
    got = lazy.network.state_dict()
    for k, v in eager.items():
        assert got[k].device.type == "cpu" and torch.equal(got[k], v), k
