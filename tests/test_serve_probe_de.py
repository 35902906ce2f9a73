"""``showo2 serve`` as the ``openai`` SDK uses it (probe DE): one real server on 127.0.0.1 in this
process, over the demo model, driven by the SDK with its defaults (retries on)."""

from __future__ import annotations

import base64
import contextlib
import time

import pytest

pytest.importorskip("fastapi")
openai = pytest.importorskip("openai")

HI = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def server():
    from conftest import run_in_thread
    from showo2_cli.loading import load
    from showo2_cli.serve import ServerConfig, bind_socket
    from showo2_cli.serve.app import server_for

    model = load("demo")
    sock = bind_socket("127.0.0.1", 0)
    srv = server_for(model, ServerConfig(model_id="demo", allow_origins=("http://localhost:3000",)), sock,
                     log_level="error")
    thread = run_in_thread(srv, sock)
    host, port = sock.getsockname()[:2]
    try:
        yield model, f"http://{host}:{port}", srv.config.app.state.worker
    finally:
        srv.should_exit = True
        thread.join(30)
        sock.close()


@contextlib.contextmanager
def nan_weights(model):
    """The served model's first MLP holding a NaN (as a checkpoint gone bad, or fp16 overflowing)."""
    import torch

    weight = dict(model.network.named_parameters())["showo.model.layers.0.mlp.down_proj.weight"]
    kept = weight.detach().clone()
    with torch.no_grad():
        weight.view(-1)[0] = float("nan")
    try:
        yield
    finally:
        with torch.no_grad():
            weight.copy_(kept)


def _failed(url: str) -> int:
    import httpx

    return httpx.get(url + "/health").json()["failed"]


def test_a_nan_answer_is_not_run_again_by_the_sdks_retries(server):
    """A model whose outputs are NaN is answered 500 (the served model's fault), which the OpenAI SDKs
    retry twice by default: each request ran three times (three whole generations, and the client
    waited for all three and their back-off) to fail the same way. The 500 now carries
    ``x-should-retry: false``, the SDKs' header for it, exposed to pages on allowed origins."""
    import httpx

    model, url, _ = server
    client = openai.OpenAI(base_url=url + "/v1", api_key="x")  # max_retries=2, the SDK's default
    calls = {
        "chat": lambda: client.chat.completions.create(model="demo", messages=HI, max_tokens=4),
        "stream": lambda: list(client.chat.completions.create(model="demo", messages=HI, max_tokens=4,
                                                              stream=True)),
        "images": lambda: client.images.generate(model="demo", prompt="a red circle", size="64x64",
                                                 extra_body={"steps": 2}),
    }
    with nan_weights(model):
        for name, call in calls.items():
            before = _failed(url)
            with pytest.raises(openai.InternalServerError, match="NaN or infinite") as e:
                call()
            assert _failed(url) - before == 1, name  # (old: 3, the first and two retries)
            assert e.value.response.headers["x-should-retry"] == "false"
            assert e.value.body["code"] == "server_error"
        r = httpx.post(url + "/v1/chat/completions", json={"messages": HI, "max_tokens": 2},
                       headers={"Origin": "http://localhost:3000"})
        assert r.status_code == 500 and "x-should-retry" in r.headers["access-control-expose-headers"].lower()
    answer = client.chat.completions.create(model="demo", messages=HI, max_tokens=4)  # weights back: answered
    assert answer.choices[0].message.content.startswith("a ")


def test_served_model_names_as_vllm_takes_them(server, monkeypatch, capsys):
    """A server answered to the --model name alone (a path, `name@revision`, or `demo`), shown to every
    client in /v1/models: a client that sends its own model name (an app configured for `gpt-4o`, an
    image tool sending `dall-e-3`) got 404 and could not be pointed at it. `--served-model-name`, as
    vLLM's (llama-server's --alias): the first name is the id, the others are names it answers to."""
    from conftest import run_in_thread
    from showo2_cli import serve as S
    from showo2_cli.cli import main
    from showo2_cli.serve import bind_socket
    from showo2_cli.serve.app import server_for

    started = []
    monkeypatch.setattr(S, "serve", lambda bundle, config, *a, **k: started.append(config))
    assert main(["serve", "--model", "demo", "--port", "0", "--quiet", "--served-model-name", "showo2-demo",
                 "--served-model-name", "dall-e-3", "--served-model-name", "showo2-demo"]) == 0  # (old: 2)
    config = started[0]
    assert (config.model_id, config.model_aliases) == ("showo2-demo", ("dall-e-3",))
    capsys.readouterr()
    assert main(["serve", "--port", "0", "--served-model-name", " "]) == 2 and len(started) == 1
    assert "--served-model-name must be a non-empty printable name" in capsys.readouterr().err
    from showo2_cli.errors import UsageError
    from showo2_cli.serve import ServerConfig

    for aliases in ("dall-e-3", ("ok", ""), ("a\nb",)):  # (a string is not a tuple of names)
        with pytest.raises(UsageError, match="model_aliases must be a tuple of non-empty printable names"):
            ServerConfig(model_aliases=aliases).validate()

    sock = bind_socket("127.0.0.1", 0)
    srv = server_for(server[0], config, sock, log_level="error")
    thread = run_in_thread(srv, sock)
    host, port = sock.getsockname()[:2]
    try:
        client = openai.OpenAI(base_url=f"http://{host}:{port}/v1", api_key="x", max_retries=0)
        assert [m.id for m in client.models.list()] == ["showo2-demo", "dall-e-3"]
        assert client.models.retrieve("dall-e-3").id == "dall-e-3"
        images = client.images.generate(model="dall-e-3", prompt="a red circle", size="64x64",
                                        extra_body={"steps": 2, "seed": 1})
        assert len(images.data) == 1 and images.data[0].b64_json
        answer = client.chat.completions.create(model="showo2-demo", messages=HI, max_tokens=3)
        assert answer.model == "showo2-demo" and answer.choices[0].message.content
        with pytest.raises(openai.NotFoundError, match="serves 'showo2-demo', 'dall-e-3'"):
            client.chat.completions.create(model="demo", messages=HI, max_tokens=3)  # named: that name alone
    finally:
        srv.should_exit = True
        thread.join(30)
        sock.close()


def test_a_client_gone_stops_the_rest_of_its_images(server, monkeypatch):
    """A chat request's images and videos are read and encoded one by one on the worker before the
    answer; a client that went away meanwhile was noticed only after all of its message's (eight videos
    in one message: 6 s more of the worker, with the next requests waiting). Each is now checked for.
    The first encoding here waits until the server has cancelled the job (its client gone)."""
    import io

    import httpx
    from PIL import Image

    import showo2_cli.chat as chat

    _, url, worker = server
    encoded = []
    real = chat.encode_media

    def encode_media(*args, **kwargs):
        if not encoded:  # the first picture: wait until the server has seen the client go
            assert worker.running is not None and worker.running.cancel.wait(30)
        encoded.append(kwargs.get("name"))
        return real(*args, **kwargs)

    monkeypatch.setattr(chat, "encode_media", encode_media)
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (255, 0, 0)).save(buf, format="PNG")
    picture = {"type": "image_url", "image_url": {"url": "data:image/png;base64,"
                                                  + base64.b64encode(buf.getvalue()).decode()}}
    body = {"messages": [{"role": "user", "content": [picture] * 8 + [{"type": "text", "text": "what?"}]}],
            "max_tokens": 2}
    before = httpx.get(url + "/health").json()["cancelled"]
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(url + "/v1/chat/completions", json=body, timeout=1.0)
    for _ in range(300):
        health = httpx.get(url + "/health").json()
        if not health["running"] and health["cancelled"] > before:
            break
        time.sleep(0.05)
    assert health["cancelled"] == before + 1 and not health["running"]
    assert encoded == ["image 1"]  # (old: all eight, image 1 to image 8)
