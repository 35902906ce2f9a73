"""``showo2 serve`` as the ``openai`` SDK uses it (probe DE): one real server on 127.0.0.1 in this
process, over the demo model, driven by the SDK with its defaults (retries on)."""

from __future__ import annotations

import contextlib

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
        yield model, f"http://{host}:{port}"
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

    model, url = server
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
