"""Probe HN: leftovers of today's server probes (HK, HG), decided as OpenAI and vLLM do.

A ``json_schema`` format needs its ``name`` on both endpoints (OpenAI's and vLLM's rule; a Responses
answer echoes the format, and the SDK's models need the name); tools listed with ``tool_choice: "none"``
are checked as tools (their echo must be a valid tool list)."""

from __future__ import annotations

import pytest

from showo2_cli.serve import ApiError, ServerConfig
from showo2_cli.serve.requests import parse_chat
from showo2_cli.serve.responses import parse_responses

SCHEMA = {"type": "object", "properties": {"colour": {"type": "string"}}, "required": ["colour"]}
DONE = {"finish_reason": "stop", "prompt_tokens": 5, "completion_tokens": 2}


@pytest.fixture(scope="module")
def demo():
    from showo2_cli.loading import bundled_demo_path, load

    if bundled_demo_path() is None:
        pytest.skip("the bundled demo is not installed")
    return load("demo")


def _refused(parse, body: dict) -> ApiError:
    with pytest.raises(ApiError) as e:
        parse(body, ServerConfig())
    return e.value


@pytest.mark.parametrize("name", [None, "", 7, "my schema", "x" * 65])
def test_json_schema_needs_a_name_on_both_endpoints(name):
    """OpenAI and vLLM refuse a ``json_schema`` without a ``name`` (OpenAI: 1-64 of ``[A-Za-z0-9_-]``); it
    was taken by both endpoints and echoed by ``/v1/responses`` in a form the SDK's ``Response`` refuses."""
    pytest.importorskip("xgrammar")
    spec = {"schema": SCHEMA} if name is None else {"name": name, "schema": SCHEMA}
    err = _refused(parse_chat, {"messages": [{"role": "user", "content": "hi"}],
                                "response_format": {"type": "json_schema", "json_schema": spec}})
    assert (err.status, err.param) == (400, "response_format.json_schema.name")
    assert "name is required" in err.message
    err = _refused(parse_responses, {"input": "hi", "text": {"format": {"type": "json_schema", **spec}}})
    assert (err.status, err.param) == (400, "text.format.name") and "response_format" not in err.message


def test_the_responses_echo_validates_in_the_sdk():
    """A named format without a schema (any JSON object) and function tools listed with ``tool_choice:
    "none"`` are echoed as the SDK's ``Response`` model validates them (the schema held to is echoed)."""
    pytest.importorskip("xgrammar")
    types = pytest.importorskip("openai.types.responses")
    plan = parse_responses({"input": "hi", "text": {"format": {"type": "json_schema", "name": "any"}},
                            "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}},
                                      {"type": "custom", "name": "g"}], "tool_choice": "none"}, ServerConfig())
    got = types.Response.model_validate(plan.response(text="{}", result=DONE))
    assert got.text.format.name == "any" and got.text.format.schema_ == plan.chat.json_schema
    assert [t.name for t in got.tools] == ["f", "g"] and got.tool_choice == "none"
    assert parse_chat({"messages": [{"role": "user", "content": "hi"}], "response_format": {
        "type": "json_schema", "json_schema": {"name": "colour", "schema": SCHEMA}}}, ServerConfig()).json_schema


@pytest.mark.parametrize("tool, param", [
    (7, "tools[0]"), ({"type": "bogus"}, "tools[0].type"), ({"name": "f"}, "tools[0].type"),
    ({"type": "function"}, "tools[0].name"), ({"type": "function", "name": 3}, "tools[0].name"),
    ({"type": "function", "name": "f", "parameters": "x"}, "tools[0].parameters"),
    ({"type": "function", "name": "f", "strict": "yes"}, "tools[0].strict"),
    ({"type": "web_search"}, "tools[0].type")])
def test_junk_tools_under_tool_choice_none_are_refused(tool, param):
    """Junk tools with ``tool_choice: "none"`` were taken and echoed as ``Response.tools``, which the SDK's
    model refuses; vLLM and OpenAI refuse them. The chat endpoint checks its own shape the same way."""
    err = _refused(parse_responses, {"input": "hi", "tools": [tool], "tool_choice": "none"})
    assert (err.status, err.param) == (400, param)
    chat = {"messages": [{"role": "user", "content": "hi"}], "tool_choice": "none"}
    err = _refused(parse_chat, {**chat, "tools": [{"type": "function", "function": {"description": "d"}}]})
    assert (err.status, err.param) == (400, "tools[0].function.name")
    err = _refused(parse_chat, {**chat, "tools": [{"type": "function", "name": "f"}]})  # (the Responses shape)
    assert err.param == "tools[0].function"
    assert parse_chat({**chat, "tools": [{"type": "function", "function": {"name": "f"}}]}, ServerConfig())


def test_context_refusals_name_the_input():
    """``/v1/responses``' context-length refusals said "your messages" (the chat's words): they name the
    request's ``input`` now, keeping "maximum context length" (LiteLLM's context-window fallbacks match it)."""
    from showo2_cli.dialogue import answer_room
    from showo2_cli.errors import ContextTooLong

    plan = parse_responses({"input": "hi"}, ServerConfig())
    for args in ((9000, 10, 8192), (8000, 400, 8192, True)):
        with pytest.raises(ContextTooLong) as e:
            answer_room(*args)
        err = plan.renamed(e.value)
        assert (err.status, err.code, err.param) == (400, "context_length_exceeded", "input")
        assert "maximum context length is 8192 tokens" in err.message and "messages" not in err.message
        assert "your input" in err.message or "in the input" in err.message
    err = _refused(parse_responses, {"input": "x" * (ServerConfig().max_text_chars + 1)})
    assert err.code == "context_length_exceeded" and "maximum context length" in err.message
    assert "the input holds" in err.message and "messages" not in err.message
    chat = _refused(parse_chat, {"messages": [{"role": "user", "content": "x" * (ServerConfig().max_text_chars + 1)}]})
    assert "the messages hold" in chat.message  # (the chat's own words stay)


def test_notices_reach_the_client_as_a_field_clients_ignore(demo, monkeypatch):
    """The server computed a request's notices (here an answer the context shortened) and sent none: now
    each answer that has some carries them in ``notices`` (absent otherwise), on both endpoints, streamed
    or not, as vLLM and llama.cpp add their own fields; the SDK's models take the answers with it."""
    import dataclasses
    import json

    httpx = pytest.importorskip("httpx")
    openai = pytest.importorskip("openai")
    from conftest import serving

    ask = {"messages": [{"role": "user", "content": "Say hi."}], "temperature": 0, "seed": 1}
    with serving(demo) as url:
        plain = httpx.post(url + "/v1/chat/completions", json=ask, timeout=120).json()
        assert "notices" not in plain  # (nothing to say: no field)
        monkeypatch.setattr(demo, "spec", dataclasses.replace(
            demo.spec, max_position_embeddings=plain["usage"]["prompt_tokens"] + 3))
        said = ["the answer is limited to 3 tokens by the context budget of "
                f"{plain['usage']['prompt_tokens'] + 3}"]
        r = httpx.post(url + "/v1/chat/completions", json=ask, timeout=120).json()
        assert r["notices"] == said and r["choices"][0]["finish_reason"] == "length"
        assert openai.types.chat.ChatCompletion.model_validate(r).model_extra["notices"] == said
        with httpx.stream("POST", url + "/v1/chat/completions", json={**ask, "stream": True}, timeout=120) as s:
            chunks = [json.loads(x[6:]) for x in s.iter_lines() if x.startswith("data: {")]
        assert [c.get("notices") for c in chunks if c["choices"][0]["finish_reason"]] == [said]
        assert all("notices" not in c for c in chunks if not c["choices"][0]["finish_reason"])
        body = {"input": "Say hi.", "temperature": 0, "seed": 1}
        r = httpx.post(url + "/v1/responses", json=body, timeout=120).json()
        assert r["notices"] == said and r["status"] == "incomplete"
        assert openai.types.responses.Response.model_validate(r).model_extra["notices"] == said
        with httpx.stream("POST", url + "/v1/responses", json={**body, "stream": True}, timeout=120) as s:
            events = [json.loads(x[6:]) for x in s.iter_lines() if x.startswith("data: {")]
        assert events[-1]["type"] == "response.incomplete" and events[-1]["response"]["notices"] == said
        assert "notices" not in events[0]["response"]
