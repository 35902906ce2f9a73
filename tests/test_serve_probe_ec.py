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
    from conftest import serving
    from showo2_cli.loading import load

    with serving(load("demo")) as base:
        yield base


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
    ("GET", "/api", None),
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
        assert "OpenAI-compatible API: POST /v1/chat/completions, POST /v1/responses, POST /v1/images/generations, GET " \
               "/v1/models, GET /health" in message, path
    r = httpx.get(url + "/v2/whatever", timeout=30)  # a path nothing is known about: no guess
    assert r.status_code == 404 and r.json()["error"]["message"] == "no such endpoint: GET '/v2/whatever'"


def _streamed_text(response) -> tuple[str, str]:
    import json

    text, finish = "", None
    for line in response.iter_lines():
        if line.startswith("data: ") and line != "data: [DONE]":
            for choice in json.loads(line[6:])["choices"]:
                text += choice["delta"].get("content") or ""
                finish = choice["finish_reason"] or finish
    return text, finish


def test_a_stop_list_longer_than_openais_is_taken(url):
    """Continue sends its stop list uncapped to any server but OpenAI's, Groq's, Azure's and Jan's
    (``getMaxStopWords``: ``Infinity``), as vLLM, llama.cpp and Ollama take any number, and a
    template's list holds 9 and more (Qwen's FIM and chat tokens, blank lines): each such request
    was a 400 "'stop' may hold at most 4 strings". The server now takes the 16 the library does."""
    stop = ["<|endoftext|>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
            "<|file_sep|>", "<|im_start|>", "<|im_end|>", "\n\n", " moving"]  # the demo: "a red circle moving ..."
    body = {"model": "demo", "messages": HI, "max_tokens": 12, "temperature": 0, "top_p": 1, "frequency_penalty": 0,
            "presence_penalty": 0, "stream": True, "stop": stop}  # Continue's toChatBody, as it sends it
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=60) as r:
        assert r.status_code == 200, r.read()
        assert _streamed_text(r) == ("a red circle", "stop")
    r = httpx.post(url + "/v1/chat/completions", json={**body, "stream": False, "stop": stop[:9] + [" red"] * 7},
                   timeout=60)
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "a"
    r = httpx.post(url + "/v1/chat/completions", json={**body, "stop": [f"s{i}" for i in range(17)]}, timeout=60)
    assert r.status_code == 400
    assert r.json()["error"] | {"message": None} == {"message": None, "type": "invalid_request_error",
                                                      "param": "stop", "code": "invalid_value"}
    assert r.json()["error"]["message"] == "'stop' may hold at most 16 strings, got 17"


def test_an_anthropic_client_is_told_what_is_served(url):
    """Claude Code and the Anthropic SDKs given the server's address (``ANTHROPIC_BASE_URL``, as
    llama.cpp's and vLLM's servers take it) post to ``/v1/messages``: a bare "no such endpoint"."""
    body = {"model": "demo", "max_tokens": 16, "messages": HI}
    for path in ("/v1/messages", "/v1/messages/count_tokens"):
        r = httpx.post(url + path, json=body, headers={"anthropic-version": "2023-06-01"}, timeout=30)
        assert r.status_code == 404
        assert "Anthropic's Messages API is not served here: use an OpenAI client, with base URL " \
               "http://HOST:PORT/v1, and POST /v1/chat/completions" in r.json()["error"]["message"], path
