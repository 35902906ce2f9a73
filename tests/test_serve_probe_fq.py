"""Structured output under the client tools people point at local servers (probe FQ): one real
server on 127.0.0.1 in this process, over the demo model, sent the requests those tools send
(recorded from ``llm`` 0.36, the ``openai`` SDK 3.63, instructor and vLLM/llama.cpp clients,
replayed with httpx so the tests need none of them)."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

SHAPE = {"properties": {"shape": {"enum": ["circle", "square"], "title": "Shape", "type": "string"},
                        "color": {"enum": ["red", "blue"], "title": "Color", "type": "string"}},
         "required": ["shape", "color"], "title": "Shape", "type": "object"}
ASK = [{"role": "user", "content": "a red circle"}]

#: instructor's ``Mode.TOOLS`` (its default) and LangChain's ``method="function_calling"``: the
#: schema as a tool the model is made to call
INSTRUCTOR_TOOLS = {"messages": ASK, "model": "demo", "max_tokens": 40,
                    "tool_choice": {"type": "function", "function": {"name": "Shape"}},
                    "tools": [{"type": "function", "function": {
                        "name": "Shape", "parameters": SHAPE,
                        "description": "Correctly extracted `Shape` with all the required parameters with correct types"}}]}
#: ``llm -m showo2 --schema 'shape, color' ...`` (streamed, with usage)
LLM_SCHEMA = {"messages": ASK, "model": "demo", "max_tokens": 40, "stream": True,
              "stream_options": {"include_usage": True},
              "response_format": {"type": "json_schema", "json_schema": {"name": "output", "schema": {
                  "type": "object", "properties": {"shape": {"type": "string", "enum": ["circle", "square"]},
                                                   "color": {"type": "string", "enum": ["red", "blue"]}},
                  "required": ["shape", "color"]}}}}


@pytest.fixture(scope="module")
def url():
    from conftest import serving
    from showo2_cli.loading import load

    with serving(load("demo")) as base:
        yield f"{base}/v1/chat/completions"


@pytest.mark.parametrize("field, value", [
    ("json_schema", SHAPE),  # llama.cpp's server: a schema beside the messages
    ("grammar", 'root ::= "{}"'),  # llama.cpp's GBNF
])
def test_other_servers_constraints_are_refused_not_ignored(url, field, value):
    """llama.cpp's ``json_schema`` and ``grammar`` fields were ignored: 200 with the free-text answer
    ("a red circle moving right on a gray background") where a client asked for JSON. Refused now,
    as vLLM's ``guided_json`` was, each pointing at ``response_format``; an empty one asks nothing."""
    r = httpx.post(url, json={"model": "demo", "messages": ASK, "max_tokens": 8, field: value}, timeout=60)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert (err["code"], err["param"]) == ("unsupported_parameter", field)
    assert "response_format" in err["message"] and "json_schema" in err["message"]
    r = httpx.post(url, json={"model": "demo", "messages": ASK, "max_tokens": 4, field: None}, timeout=60)
    assert r.status_code == 200, r.text


def test_instructor_tools_mode_gets_a_call_of_its_schema(url):
    """instructor's default mode (a named tool) was a 400 pointing at ``response_format``; since probe IE
    it is served as vLLM serves it: the call's arguments held to the tool's parameters."""
    pytest.importorskip("xgrammar")
    r = httpx.post(url, json=INSTRUCTOR_TOOLS, timeout=60)
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    call = choice["message"]["tool_calls"][0]["function"]
    answer = json.loads(call["arguments"])
    assert call["name"] == "Shape" and set(answer) == {"shape", "color"}
    assert answer["shape"] in ("circle", "square") and answer["color"] in ("red", "blue")


@pytest.mark.parametrize("body, param", [
    ({"messages": ASK, "model": "demo", "guided_json": SHAPE}, "guided_json"),  # vLLM's
    ({"messages": ASK, "model": "demo", "structured_outputs": {"json": SHAPE}}, "structured_outputs"),
])
def test_guided_refusals_name_response_format(url, body, param):
    """vLLM's guided fields were 400s saying "Show-o2 answers in plain text",
    which has not been the whole truth since structured output (probe FK): the 400 names the
    ``response_format`` that does the job (instructor's ``Mode.JSON_SCHEMA``)."""
    r = httpx.post(url, json=body, timeout=60)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert (err["code"], err["param"]) == ("unsupported_parameter", param)
    assert "plain text" not in err["message"] and "response_format" in err["message"], err["message"]
    r = httpx.post(url, json={"messages": ASK, "model": "demo", "max_tokens": 4, "logprobs": True}, timeout=60)
    assert "plain text" in r.json()["error"]["message"]  # other refusals keep their reason


def test_llm_schema_request_streams_valid_json(url):
    """``llm --schema`` (with ``supports_schema: true`` in its model entry, as README says) sends a
    streamed ``json_schema`` with usage: the pieces add up to an object of the schema, usage last."""
    pytest.importorskip("xgrammar")
    events = []
    with httpx.stream("POST", url, json=LLM_SCHEMA, timeout=120) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                events.append(json.loads(line[6:]))
    text = "".join(c["delta"].get("content") or "" for e in events for c in e["choices"])
    answer = json.loads(text)
    assert set(answer) == {"shape", "color"}
    assert answer["shape"] in ("circle", "square") and answer["color"] in ("red", "blue")
    assert events[-1]["choices"] == [] and events[-1]["usage"]["completion_tokens"] > 0
