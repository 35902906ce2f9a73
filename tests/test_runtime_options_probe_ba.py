"""Probe BA: every runtime option in every place a model runs. Each command that runs the model
takes every field of ``RuntimeOptions`` (``chat`` had no ``--offload``, ``serve`` neither
``--offload`` nor ``--max-memory``), and the Python entry points read ``device`` / ``dtype``
values alike (``api.load(device="auto")`` was torch's RuntimeError; ``torch_dtype="auto"`` with
``RuntimeOptions(dtype="bf16")`` was refused as a disagreement); a model's memory limit from
``RuntimeOptions.max_memory_gb`` is its jobs' (it was validated, then ignored)."""

from __future__ import annotations

import base64
import io
import json
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from conftest import run_in_thread
from showo2_cli import Showo2Pipeline, api
from showo2_cli.errors import ResourceError, UsageError
from showo2_cli.options import RuntimeOptions

CUDA = torch.cuda.is_available()


# ---- the command line: one set of runtime options for every model command ----------------------

def test_every_model_command_takes_every_runtime_option():
    from typer.main import get_command

    from showo2_cli.cli import app
    from showo2_cli.cli.common import RUNTIME_PARAMS

    group = get_command(app)
    expected = {"device": "auto", "dtype": "auto", "max_memory": None, "offload": "none", "attn": "sdpa",
                "compile_": False, "vae_tiling": "auto", "quantize": "none"}
    assert [name for name, _type, _default in RUNTIME_PARAMS] == list(expected)
    for name in ("caption", "t2i", "t2v", "i2v", "chat", "serve"):
        params = {p.name: p for p in group.get_command(None, name).params}
        for option, default in expected.items():
            assert option in params, f"showo2 {name} has no --{option.rstrip('_').replace('_', '-')}"
            assert getattr(params[option].default, "value", params[option].default) == default, (name, option)
        assert "runtime" not in params


# ---- the Python entry points read placement values alike ------------------------------------------

def _load(how: str, device=None, dtype=None, runtime=None):
    if how == "api.load":
        return api.load("demo", device=device, dtype=dtype, runtime=runtime)
    return Showo2Pipeline.from_pretrained("demo", device=device, torch_dtype=dtype, runtime=runtime).model


ENTRY_POINTS = {
    "api.load": lambda device=None, dtype=None: _load("api.load", device, dtype),
    "from_pretrained": lambda device=None, dtype=None: _load("from_pretrained", device, dtype),
    "load(runtime=)": lambda device=None, dtype=None: _load("api.load", runtime=RuntimeOptions(
        device if device is not None else "auto", dtype if dtype is not None else "auto")),
    "from_pretrained(runtime=)": lambda device=None, dtype=None: _load("from_pretrained", runtime=RuntimeOptions(
        device if device is not None else "auto", dtype if dtype is not None else "auto")),
}
#: (device, dtype) -> the placement, or the error's pattern
PLACEMENTS = [
    (("auto", None), ("cuda" if CUDA else "cpu", None)),  # None: auto's dtype (bf16 on CUDA)
    (("CPU", "BF16"), ("cpu", torch.bfloat16)),
    ((torch.device("cpu"), torch.float16), ("cpu", torch.float16)),
    (("cpu:0", "torch.bfloat16"), ("cpu", torch.bfloat16)),
    ((None, "auto"), ("cpu", torch.float32)),
    (("gpu", None), "must be auto, cuda, cuda:N, mps or cpu, got 'gpu'"),
    ((3, None), "must be auto, cuda, cuda:N, mps or cpu, got '3'"),
    ((None, "int8"), r"dtype.*auto.*fp32, bf16, fp16"),
    ((None, torch.int8), r"dtype.*auto.*fp32, bf16, fp16"),
]
if not CUDA:
    PLACEMENTS.append((("cuda:0", None), "cuda:0: no CUDA device is available"))


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_the_python_entry_points_take_the_same_placement_values(entry):
    load = ENTRY_POINTS[entry]
    for (device, dtype), expected in PLACEMENTS:
        if isinstance(expected, str):
            with pytest.raises(UsageError, match=expected) as e:  # one line naming what is taken
                load(device, dtype)
            assert "\n" not in str(e.value)
            continue
        model = load(device, dtype)
        want_device, want_dtype = expected
        assert model.device.type == want_device, (entry, device, dtype)
        if want_dtype is not None:
            assert model.dtype == model.vae.dtype == want_dtype, (entry, device, dtype)


@pytest.mark.parametrize("how", ["api.load", "from_pretrained"])
def test_auto_arguments_defer_to_the_runtime_options(how):
    """``auto`` asks for the best choice, as ``--dtype auto``: an explicit ``RuntimeOptions`` value
    is that choice, not a disagreement (both were refused or a RuntimeError)."""
    model = _load(how, device="auto", dtype="auto", runtime=RuntimeOptions(device="cpu", dtype="bf16"))
    assert model.device.type == "cpu" and model.dtype == torch.bfloat16
    name = "dtype" if how == "api.load" else "torch_dtype"  # the caller's own argument
    with pytest.raises(UsageError, match=f"^{name} fp16 and RuntimeOptions.dtype='bf16'. disagree"):
        _load(how, dtype="fp16", runtime=RuntimeOptions(dtype="bf16"))
    with pytest.raises(UsageError, match=f"^{name} must be auto, fp32, bf16, fp16 or float64"):
        _load(how, dtype="int8")


# ---- the memory limit a model is loaded with is its jobs' ----------------------------------------

def test_the_runtime_memory_limit_guards_every_job_of_the_model(tmp_path):
    """``RuntimeOptions(max_memory_gb=)`` given to ``load`` was validated, then no job consulted it."""
    from PIL import Image

    Image.fromarray(np.full((32, 32, 3), 90, np.uint8)).save(tmp_path / "grey.png")
    model = api.load("demo", runtime=RuntimeOptions(max_memory_gb=0.001))
    assert model.max_memory_gb == 0.001
    with pytest.raises(ResourceError, match="allowed by --max-memory"):
        api.text_to_image(model, ["a red circle"], api.GenerateOptions(steps=2, seed=1))
    with pytest.raises(ResourceError, match="allowed by --max-memory"):
        api.caption(model, tmp_path / "grey.png")
    # a job's own limit still wins over the model's
    assert len(api.text_to_image(model, ["a red circle"], api.GenerateOptions(steps=2, seed=1, max_memory_gb=0))) == 1
    pipe = Showo2Pipeline.from_pretrained("demo", runtime=RuntimeOptions(max_memory_gb=0.001))
    with pytest.raises(ResourceError, match=r"RuntimeOptions\(max_memory_gb=...\)") as e:
        pipe("a red circle", num_inference_steps=2)
    assert "--" not in str(e.value)


# ---- chat and serve under offload: the one-shot commands' numbers ---------------------------------

def _cli(args: list[str], capsys) -> str:
    from showo2_cli.cli import main

    capsys.readouterr()
    assert main(args) == 0
    return capsys.readouterr().out


def _pixels(data: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


@pytest.fixture(scope="module")
def one_shot(tmp_path_factory):
    """The one-shot commands' outputs on the demo: two t2i images (seeds 1, 2) and a caption."""
    import contextlib

    from showo2_cli.cli import main

    folder = tmp_path_factory.mktemp("ba")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["t2i", "a red circle", "-o", str(folder / "t.png"), "--seed", "1", "-n", "2", "--batch-size", "1", "--steps", "3",
                     "--size", "64", "--quiet"]) == 0
        assert main(["caption", str(folder / "t-000.png"), "-q", "What colour is it?", "--max-new-tokens", "12",
                     "--json", "--quiet"]) == 0
    answer = json.loads(out.getvalue().splitlines()[-1])["answers"][0]["answer"]
    return folder, [_pixels((folder / f"t-00{k}.png").read_bytes()) for k in (0, 1)], answer


@pytest.mark.slow  # (several commands' worth of work)
@pytest.mark.parametrize("mode", ["model", "sequential"])
def test_chat_with_offload_answers_and_draws_as_the_one_shot_commands(one_shot, mode, tmp_path, capsys):
    folder, images, answer = one_shot
    from typer.testing import CliRunner

    from showo2_cli.cli import app

    out = tmp_path / "c.png"
    script = f"What colour is it?\n/t2i a red circle --seed 2 --steps 3 --size 64 -o {out}\n"
    result = CliRunner().invoke(app, ["chat", str(folder / "t-000.png"), "--offload", mode, "--max-new-tokens", "12",
                                      "--max-memory", "8", "--quiet"], input=script)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [answer]  # the caption's tokens
    assert np.array_equal(_pixels(out.read_bytes()), images[1])


@pytest.mark.slow
def test_chat_max_memory_bounds_its_t2i(tmp_path):
    """A chat's ``/t2i`` was checked against ``$SHOWO2_MAX_MEMORY_GB`` or the memory available,
    never the chat's own ``--max-memory``: the image was made and written."""
    from typer.testing import CliRunner

    from showo2_cli.cli import app

    out = tmp_path / "c.png"
    result = CliRunner().invoke(app, ["chat", "--max-memory", "0.001"], input=f"/t2i a red circle --steps 2 -o {out}\n")
    assert "allowed by --max-memory; lower --size or -n" in result.stderr, result.output
    assert not out.exists()


def _post(address, path: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(f"http://{address[0]}:{address[1]}{path}", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=300) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _served(monkeypatch, *options: str):
    """``showo2 serve --model demo OPTIONS`` as the command loads it, then a real uvicorn on
    127.0.0.1 over that model: (model, address, stop)."""
    pytest.importorskip("fastapi")
    from showo2_cli import serve as S
    from showo2_cli.cli import main
    from showo2_cli.serve import ServerConfig, bind_socket
    from showo2_cli.serve.app import server_for

    started = []
    monkeypatch.setattr(S, "serve", lambda bundle, config, *a, **k: started.append((bundle, config)))
    assert main(["serve", "--model", "demo", "--port", "0", "--quiet", *options]) == 0
    model, config = started[0]
    sock = bind_socket("127.0.0.1", 0)
    server = server_for(model, ServerConfig(model_id=config.model_id, max_queue=8), sock, log_level="error")
    thread = run_in_thread(server, sock)

    def stop():
        server.should_exit = True
        thread.join(30)
        sock.close()

    return model, sock.getsockname()[:2], stop


@pytest.mark.slow  # (two servers' worth of work)
@pytest.mark.parametrize("mode", ["model", "sequential"])
def test_serve_with_offload_answers_concurrent_requests_as_the_one_shot_commands(one_shot, mode, monkeypatch):
    folder, images, answer = one_shot
    model, address, stop = _served(monkeypatch, "--offload", mode, "--max-memory", "8")
    try:
        assert (model.offload, model.max_memory_gb) == (mode, 8.0)
        data = base64.b64encode((folder / "t-000.png").read_bytes()).decode()
        chat = {"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{data}"}},
            {"type": "text", "text": "What colour is it?"}]}], "max_tokens": 12, "temperature": 0}
        requests = [("/v1/images/generations", {"prompt": "a red circle", "seed": s, "steps": 3, "size": "64x64"})
                    for s in (1, 2)] + [("/v1/chat/completions", chat)] * 2
        with ThreadPoolExecutor(len(requests)) as pool:  # all at once: the worker takes them in turn
            answers = list(pool.map(lambda r: _post(address, *r), requests))
        assert [status for status, _ in answers] == [200] * len(requests), answers
        for (_, body), expected in zip(answers[:2], images, strict=True):
            assert np.array_equal(_pixels(base64.b64decode(body["data"][0]["b64_json"])), expected)
        assert [body["choices"][0]["message"]["content"] for _, body in answers[2:]] == [answer] * 2
    finally:
        stop()


@pytest.mark.slow
def test_serve_max_memory_is_the_limit_of_every_request(monkeypatch):
    """``serve`` had no ``--max-memory``: only ``$SHOWO2_MAX_MEMORY_GB`` or the memory available
    bounded a request. Over the limit, a request is refused (422) naming the server's setting."""
    monkeypatch.delenv("SHOWO2_MAX_MEMORY_GB", raising=False)
    model, address, stop = _served(monkeypatch, "--max-memory", "0.00001")
    try:
        status, body = _post(address, "/v1/images/generations", {"prompt": "a red circle", "steps": 2})
        assert status == 422 and body["error"]["code"] == "too_large", body
        message = body["error"]["message"]
        assert "allowed by the server's max-memory setting" in message and "--" not in message, message
        status, body = _post(address, "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}],
                                                               "max_tokens": 4})
        assert status == 422, body
    finally:
        stop()
