"""Probe IO: tool calling's leftovers decided. A ``required`` call whose arguments hold a number past a
float's range (``1e999``, written back as ``Infinity``) is not reported as a call; a tool message's
``tool_call_id`` (a ``function_call_output``'s ``call_id``) must name a call of the assistant reply
before it, as OpenAI requires. The server's answers are validated against the ``openai`` SDK's models."""

from __future__ import annotations

import json

import pytest

from showo2_cli.serve import ApiError, ServerConfig
from showo2_cli.serve.requests import parse_chat
from showo2_cli.serve.responses import parse_responses
from showo2_cli.serve.tools import ToolPlan, ToolStream, split_answer

TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "number"}}}}},
         {"type": "function", "function": {"name": "get_time"}}]
ASK = {"role": "user", "content": "Weather in Paris?"}
CALLED = {"role": "assistant", "content": None, "tool_calls": [
    {"id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
    {"id": "call_b", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}]}


# ---- 1. a required call past a float's range ---------------------------------------------------------

@pytest.mark.parametrize("number", ["1e999", "-1e999", "12E+400"])
def test_a_required_call_no_client_can_read_is_the_answers_text(number):
    """The grammar lets a number have any exponent; Python reads ``1e999`` as inf and ``json.dumps``
    writes ``Infinity`` (no JSON parser's). Such an answer is its text, no call (as ``auto`` treats a
    block that does not parse), streamed the same."""
    plan = ToolPlan([{"name": "get_weather"}, {"name": "get_time"}], "required")
    answer = f'[{{"name": "get_time", "parameters": {{}}}}, {{"name": "get_weather", "parameters": {{"days": {number}}}}}]'
    content, calls, finish = split_answer(plan, answer, True)
    assert (content, calls, finish) == (answer, [], "stop")
    stream = ToolStream(plan)
    assert [e for piece in (answer[:30], answer[30:]) for e in stream.feed(piece)] == []
    assert stream.finish(content, calls) == [("content", answer)]


def test_a_required_call_within_range_keeps_its_numbers_as_json():
    """Large and tiny finite numbers, and integers of any size, are reported as JSON any parser reads."""
    plan = ToolPlan([{"name": "get_weather"}], "required")
    answer = '[{"name": "get_weather", "parameters": {"days": 1e300, "n": -1e-999, "big": 123456789012345678901234}}]'
    _, calls, finish = split_answer(plan, answer, True)
    assert finish == "tool_calls" and json.loads(calls[0]["arguments"]) == {"days": 1e300, "n": -0.0,
                                                                            "big": 123456789012345678901234}
    assert "Infinity" not in calls[0]["arguments"]
    cut = answer[:-1] + ', {"name": "get_weather", "parameters": {"days": 1e9'  # a cut answer: the whole calls
    assert [c["name"] for c in split_answer(plan, cut, False)[1]] == ["get_weather"]


# ---- 4. a tool result's id --------------------------------------------------------------------------

def _refused(parse, body: dict) -> ApiError:
    with pytest.raises(ApiError) as e:
        parse(body, ServerConfig())
    return e.value


def test_a_tool_result_must_name_a_call_of_the_reply_before_it():
    """OpenAI: each tool message's ``tool_call_id`` names a call of the preceding assistant message. A
    result naming another call (of an older reply, or none) is a 400 naming the field; ids that match,
    in any order, and results sent without ids (answered by order, as vLLM's template does) are served."""
    result = lambda i, text: {"role": "tool", "content": text, **({} if i is None else {"tool_call_id": i})}  # noqa: E731
    ok = [ASK, CALLED, result("call_b", "noon"), result("call_a", "18 C")]
    assert len(parse_chat({"messages": ok, "tools": TOOLS}, ServerConfig()).turns) == 2
    assert parse_chat({"messages": [ASK, CALLED, result(None, "18 C")], "tools": TOOLS}, ServerConfig())
    e = _refused(parse_chat, {"messages": [ASK, CALLED, result("call_a", "18 C"), result("call_z", "noon")],
                              "tools": TOOLS})
    assert (e.status, e.param, e.code) == (400, "messages[3].tool_call_id", "invalid_value")
    assert "'call_z' is not the id of a tool call of the assistant message before it" in e.message
    later = {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_c", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}]}
    e = _refused(parse_chat, {"messages": [*ok, later, result("call_a", "18 C")], "tools": TOOLS})
    assert e.param == "messages[5].tool_call_id"  # (an id of an older reply)
    parts = [ASK, {"role": "assistant", "content": "Looking."}, CALLED, result("call_a", "18 C")]
    assert parse_chat({"messages": parts, "tools": TOOLS}, ServerConfig())  # (one reply in parts)

    items = [ASK, {"type": "function_call", "call_id": "call_a", "name": "get_weather", "arguments": "{}"},
             {"type": "function_call_output", "call_id": "call_q", "output": "18 C"}]
    tools = [{"type": "function", **t["function"]} for t in TOOLS]
    e = _refused(parse_responses, {"input": items, "tools": tools})
    assert (e.status, e.param) == (400, "input[2].call_id") and "'call_q' is not the id" in e.message


def test_a_real_server_refuses_a_result_for_no_call(demo_url):
    httpx = pytest.importorskip("httpx")
    chat = pytest.importorskip("openai.types.chat")
    url = f"{demo_url}/v1/chat/completions"
    body = {"model": "demo", "tools": TOOLS, "max_tokens": 4, "messages": [
        ASK, CALLED, {"role": "tool", "tool_call_id": "call_a", "content": "18 C"},
        {"role": "tool", "tool_call_id": "call_b", "content": "noon"}]}
    r = httpx.post(url, json=body, timeout=120)
    assert r.status_code == 200, r.text
    chat.ChatCompletion.model_validate(r.json())
    body["messages"][3] = {**body["messages"][3], "tool_call_id": "call_x"}
    r = httpx.post(url, json=body, timeout=120)
    assert r.status_code == 400 and r.json()["error"]["param"] == "messages[3].tool_call_id", r.text
    r = httpx.post(f"{demo_url}/v1/responses", timeout=120, json={
        "model": "demo", "max_output_tokens": 4, "tools": [{"type": "function", **t["function"]} for t in TOOLS],
        "input": [ASK, {"type": "function_call", "call_id": "call_a", "name": "get_weather", "arguments": "{}"},
                  {"type": "function_call_output", "call_id": "call_x", "output": "18 C"}]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "input[2].call_id", r.text


# ---- 3. checks that compile a grammar, many at once ---------------------------------------------------

def test_grammar_checks_at_once_do_not_hold_up_other_requests_checks(demo_url, monkeypatch):
    """Requests held to a grammar are checked on their own threads: with as many of them in their checks
    as the event loop's default pool has threads (each held here until released), a plain request is
    still checked and answered (a 400 naming its field) at once; /health too. They all finish after."""
    import os
    import threading

    pytest.importorskip("xgrammar")
    httpx = pytest.importorskip("httpx")
    from showo2_cli import structured

    release, compiling, compile_ = threading.Event(), threading.Semaphore(0), structured.schema_grammar

    def held(*args, **kwargs):
        compiling.release()
        release.wait(60)
        return compile_(*args, **kwargs)

    from showo2_cli.serve import app

    read, arrived = app.read_json, threading.Semaphore(0)

    async def counted(*args, **kwargs):  # (a hostile body read: its checks are next, on a thread)
        body = await read(*args, **kwargs)
        if body.get("tool_choice") == "required":
            arrived.release()
        return body

    monkeypatch.setattr(structured, "schema_grammar", held)
    monkeypatch.setattr(app, "read_json", counted)
    url = f"{demo_url}/v1/chat/completions"
    hostile = {"model": "demo", "messages": [ASK], "tools": TOOLS, "tool_choice": "required", "stop": ["x"]}
    answers = []
    clients = [threading.Thread(target=lambda: answers.append(httpx.post(url, json=hostile, timeout=120)))
               for _ in range(min(32, (os.cpu_count() or 1) + 4))]  # (as many as asyncio's default pool has threads)
    try:
        for c in clients:
            c.start()
        assert all(arrived.acquire(timeout=60) for _ in clients) and compiling.acquire(timeout=60)
        plain = httpx.post(url, json={"model": "demo", "messages": [ASK], "temperature": 5}, timeout=10)
        assert plain.status_code == 400 and plain.json()["error"]["param"] == "temperature"
        assert httpx.get(f"{demo_url}/health", timeout=10).status_code == 200
        assert not release.is_set() and len(answers) == 0
    finally:
        release.set()
        for c in clients:
            c.join(120)
    assert [a.status_code for a in answers] == [400] * len(clients)
    assert {a.json()["error"]["param"] for a in answers} == {"stop"}
