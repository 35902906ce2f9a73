"""``showo2 serve`` under the client tools people point at local model servers (probe EC): one real
server on 127.0.0.1 in this process, over the demo model, sent the requests those tools send
(recorded from ``llm``, ``langchain-openai``, LiteLLM and the ollama clients, replayed with httpx
so the tests need none of them)."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

HI = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def url():
    from conftest import run_in_thread
    from showo2_cli.loading import load
    from showo2_cli.serve import ServerConfig, bind_socket
    from showo2_cli.serve.app import server_for

    sock = bind_socket("127.0.0.1", 0)
    srv = server_for(load("demo"), ServerConfig(model_id="demo"), sock, log_level="error")
    thread = run_in_thread(srv, sock)
    host, port = sock.getsockname()[:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        srv.should_exit = True
        thread.join(30)
        sock.close()


#: what Ollama clients send first, recorded: Open WebUI's and Continue's Ollama connections probe
#: the version and the model list; LiteLLM's ``ollama_chat/demo`` and ``ollama/demo`` post these
OLLAMA_REQUESTS = (
    ("GET", "/api/version", None),
    ("GET", "/api/tags", None),
    ("POST", "/api/show", {"model": "demo"}),
    ("POST", "/api/chat", {"model": "demo", "messages": [{"role": "user", "content": "hi", "images": []}],
                           "options": {}, "stream": False}),
    ("POST", "/api/generate", {"model": "demo", "prompt": "### User:\nhi\n\n", "options": {}, "stream": False,
                               "images": []}),
    ("GET", "/v1/api/tags", None),  # an Ollama client given the OpenAI base URL
)


def test_ollama_clients_are_told_to_connect_as_openai(url):
    """An Ollama client pointed at the server got a bare "no such endpoint" 404 for each of its
    requests (LiteLLM: ``NotFoundError: Ollama_chatException - ... no such endpoint: POST
    '/api/chat'``): nothing said that the server speaks OpenAI's API, nor where it is. The 404
    stays (one protocol, as vLLM and llama.cpp's server have: Ollama's own API has model pulls,
    ``keep_alive`` loads and its NDJSON streams, which would lie here) and says what to set up."""
    for method, path, body in OLLAMA_REQUESTS:
        r = httpx.request(method, url + path, json=body, timeout=30)
        assert r.status_code == 404, path
        error = r.json()["error"]
        assert error["code"] == "not_found"
        assert f"no such endpoint: {method} '{path}'" in error["message"]
        assert "Ollama's API is not served here" in error["message"], path
        assert "OpenAI-compatible connection with base URL http://HOST:PORT/v1" in error["message"]
    assert httpx.get(url + "/health").json()["completed"] == 0  # nothing ran


def test_the_root_and_v1_say_what_is_served(url):
    """``GET /`` (a browser, a client checking its base URL) and ``GET /v1`` name the endpoints."""
    for path in ("/", "/v1", "/v1/"):
        r = httpx.get(url + path, timeout=30)
        assert r.status_code == 404
        message = r.json()["error"]["message"]
        assert "OpenAI-compatible API: POST /v1/chat/completions, POST /v1/images/generations, GET " \
               "/v1/models, GET /health" in message, path
    r = httpx.get(url + "/v2/whatever", timeout=30)  # a path nothing is known about: no guess
    assert r.status_code == 404 and r.json()["error"]["message"] == "no such endpoint: GET '/v2/whatever'"
