"""``showo2 serve`` under real clients and hostile HTTP, round four (probe GD): one real server on
127.0.0.1 in this process, over the demo model, sent what clients of other OpenAI-compatible
servers send: fields under diffusers' names, Ollama's message ``images``, an assistant's ``audio``."""

from __future__ import annotations

import base64
import io
import json

import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

TINY = {"prompt": "a cat", "size": "64x64", "steps": 2}


@pytest.fixture(scope="module")
def url():
    from conftest import serving
    from showo2_cli.loading import load

    with serving(load("demo")) as base:
        yield base


def _made(url, body) -> list[dict]:
    """The parameters each answered image records (its PNG text chunk)."""
    from PIL import Image

    r = httpx.post(url + "/v1/images/generations", json=body, timeout=120)
    assert r.status_code == 200, r.text[:300]
    out = []
    for item in r.json()["data"]:
        with Image.open(io.BytesIO(base64.b64decode(item["b64_json"]))) as im:
            out.append({**json.loads(im.text["showo2"]), "pixels": im.size})
    return out


def test_diffusers_names_of_the_image_fields_are_honoured(url):
    """``num_inference_steps``, ``guidance_scale``, ``width``/``height`` and ``num_images_per_prompt``
    (diffusers' pipelines' names, and ``Showo2Pipeline``'s; clients of diffusers-based image servers
    send them) were dropped without a word: a request for 3 steps at guidance 2 and 80x48 made the
    default steps and guidance at the default size."""
    (got,) = _made(url, {"prompt": "a cat", "num_inference_steps": 3, "guidance_scale": 2.0,
                         "width": 80, "height": 48})
    assert (got["steps"], got["guidance"], got["width"], got["height"], got["pixels"]) == (3, 2.0, 80, 48, (80, 48))
    assert len(_made(url, {**TINY, "num_images_per_prompt": 2})) == 2
    # the same value under both names is one request; the size as both, too
    (got,) = _made(url, {**TINY, "num_inference_steps": 2, "width": 64, "height": 64})
    assert (got["steps"], got["pixels"]) == (2, (64, 64))


@pytest.mark.parametrize("extra, param, words", [
    ({"num_inference_steps": 3}, "num_inference_steps", "'steps' and 'num_inference_steps'"),
    ({"guidance": 1.0, "guidance_scale": 2.0}, "guidance_scale", "'guidance' and 'guidance_scale'"),
    ({"width": 64}, "height", "'height' is missing"),
    ({"width": 80, "height": 48}, "size", "differ"),
    ({"num_inference_steps": 1, "steps": None}, "num_inference_steps", "between 2 and"),
    ({"guidance_scale": "high"}, "guidance_scale", "must be a number"),
    ({"size": None, "width": 72, "height": 64}, "width", "multiples of 16"),
])
def test_diffusers_names_are_checked_as_the_fields_they_name(url, extra, param, words):
    r = httpx.post(url + "/v1/images/generations", json={**TINY, **extra}, timeout=60)
    assert r.status_code == 400, r.text[:300]
    err = r.json()["error"]
    assert err["param"] == param and words in err["message"], err


def test_over_the_limits_under_diffusers_names_is_the_422(url):
    for extra, param in (({"steps": None, "num_inference_steps": 9999}, "num_inference_steps"),
                         ({"size": None, "width": 2048, "height": 64}, "width"),
                         ({"num_images_per_prompt": 99}, "num_images_per_prompt")):
        r = httpx.post(url + "/v1/images/generations", json={**TINY, **extra}, timeout=60)
        assert r.status_code == 422 and r.json()["error"]["param"] == param, r.text[:300]


def _chat(url, messages):
    return httpx.post(url + "/v1/chat/completions", json={"messages": messages, "max_tokens": 3}, timeout=60)


def test_ollama_s_images_field_is_refused_not_dropped(url):
    """A user message with Ollama's ``images`` (base64 strings) was answered as if it held no image."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 30, 30)).save(buf, "PNG")
    r = _chat(url, [{"role": "user", "content": "What is it?", "images": [base64.b64encode(buf.getvalue()).decode()]}])
    assert r.status_code == 400, r.text[:300]
    err = r.json()["error"]
    assert err["param"] == "messages[0].images" and "image_url" in err["message"], err
    assert _chat(url, [{"role": "user", "content": "hi", "images": []}]).status_code == 200  # none: nothing lost


def test_an_assistant_s_audio_is_not_called_a_tool_call(url):
    """``messages[1].audio: tool calls are not supported``: the refusal named the wrong thing."""
    r = _chat(url, [{"role": "user", "content": "hi"}, {"role": "assistant", "audio": {"id": "a1"}},
                    {"role": "user", "content": "again"}])
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["param"] == "messages[1].audio" and "audio" in err["message"].split(":", 1)[1], err
    assert "tool" not in err["message"], err


def _raw(url, data: bytes) -> bytes:
    import socket

    host, port = url.rsplit("/", 1)[1].split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(data)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out


@pytest.mark.parametrize("request_bytes", [
    b"GET /health HTTP/1.1\r\n\r\n",  # no Host
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",  # a bad chunk size
    b"GET /health HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n",
], ids=["no-host", "negative-length", "two-lengths", "bad-chunk", "bad-header-line"])
def test_what_is_not_http_is_answered_in_the_openai_error_shape(url, request_bytes):
    """uvicorn answered bytes h11 cannot parse with a text/plain "Invalid HTTP request received.",
    the one answer of the server not in the OpenAI error shape its clients read."""
    head, _, body = _raw(url, request_bytes).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 "), head
    assert b"application/json" in head.lower() and b"connection: close" in head.lower(), head
    err = json.loads(body)["error"]
    assert err["code"] == "invalid_http" and "invalid HTTP request" in err["message"], err
    assert httpx.get(url + "/health", timeout=10).status_code == 200  # the server goes on
