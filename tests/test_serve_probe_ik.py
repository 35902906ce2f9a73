"""Probe IK: hostile clients of tool calling on ``showo2 serve``: JSON nested past Python's recursion
limit inside a call's arguments text, a listed tool or a model's answer, tens of thousands of tools,
and a request's checks (a tool's grammar may take seconds to build) kept off the event loop."""

from __future__ import annotations

import threading

import pytest

from showo2_cli.serve import ApiError, ServerConfig
from showo2_cli.serve.requests import parse_chat
from showo2_cli.serve.responses import parse_responses
from showo2_cli.serve.tools import ToolPlan, read_tools

ASK = {"role": "user", "content": "hi"}
DEEP = "[" * 100_000 + "]" * 100_000  # JSON text nested far past Python's recursion limit
HUGE = '{"a": ' + "9" * 5000 + "}"  # an integer past Python's digit limit


def _refused(parse, body: dict) -> ApiError:
    with pytest.raises(ApiError) as e:
        parse({"model": "demo", **body}, ServerConfig(model_id="demo"))
    assert e.value.status == 400
    return e.value


def _chat_history(arguments: str) -> dict:
    call = {"id": "c1", "type": "function", "function": {"name": "g", "arguments": arguments}}
    return {"messages": [ASK, {"role": "assistant", "tool_calls": [call]},
                         {"role": "tool", "tool_call_id": "c1", "content": "x"}]}


def _responses_history(arguments: str) -> dict:
    return {"input": [ASK, {"type": "function_call", "call_id": "c1", "name": "g", "arguments": arguments},
                      {"type": "function_call_output", "call_id": "c1", "output": "x"}]}


@pytest.mark.parametrize("arguments, words", [(DEEP, "nested too deeply"), (HUGE, "more than 4,300 digits"),
                                              ("{bad", "is not valid JSON: Expecting property name")])
def test_an_earlier_calls_arguments_are_read_or_refused_in_our_words(arguments, words):
    """Arguments text nested 100,000 levels was a 500 (RecursionError) on both endpoints; a 5,000-digit
    number was "is not JSON text". Now a 400 naming the field, in the project's words."""
    e = _refused(parse_chat, _chat_history(arguments))
    assert e.param == "messages[1].tool_calls[0].function.arguments" and words in e.message, e.message
    e = _refused(parse_responses, _responses_history(arguments))
    assert e.param.endswith("[1].arguments") and words in e.message, e.message
    assert "recursion" not in e.message and "set_int_max_str_digits" not in e.message


def _nested(levels: int) -> dict:
    schema: dict = {"type": "string"}
    for _ in range(levels):
        schema = {"type": "object", "properties": {"a": schema}}
    return schema


@pytest.mark.parametrize("choice", ["auto", "required", {"type": "function", "function": {"name": "x"}}])
def test_a_tool_nested_past_the_limit_is_a_400_naming_it(choice):
    """A tool's parameters 490 schemas deep (980 JSON levels, inside the body parser's reach) were a 500
    with ``auto`` (writing the tools into the prompt: RecursionError) and "not plain JSON: maximum
    recursion depth exceeded ..." with a held choice. Now one 400 naming the tool."""
    tools = [{"type": "function", "function": {"name": "x", "parameters": _nested(490)}}]
    e = _refused(parse_chat, {"messages": [ASK], "tools": tools, "tool_choice": choice})
    assert e.param == "tools[0].function" and "nests deeper than 128 levels" in e.message, e.message
    e = _refused(parse_responses, {"input": "hi", "tools": [{"type": "function", "name": "x",
                                                             "parameters": _nested(490)}]})
    assert e.param == "tools[0]", e.message
    shallow = [{"type": "function", "function": {"name": "x", "parameters": _nested(60)}}]
    plan = parse_chat({"model": "demo", "messages": [ASK], "tools": shallow}, ServerConfig(model_id="demo"))
    assert plan.tools.choice == "auto"


def test_a_schema_past_pythons_recursion_limit_is_said_in_our_words():
    from showo2_cli.errors import UsageError
    from showo2_cli.structured import MAX_SCHEMA_DEPTH, check_schema

    with pytest.raises(UsageError) as e:
        check_schema(_nested(600))
    assert str(e.value) == f"the JSON schema nests deeper than {MAX_SCHEMA_DEPTH} levels"


def test_an_answer_nested_past_the_limit_is_text_or_the_calls_before_it():
    """A model's answer is bounded only by ``max_tokens``: a ``<tool_call>`` block nested past Python's
    limit was a RecursionError (a 500 after the whole answer). ``auto``: the answer is its text (as
    any block that does not parse); ``required``: the calls written whole before it."""
    functions = [{"name": "f", "parameters": {"type": "object", "properties": {"a": {}}}}]
    answer = "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"a\": " + "[" * 5000 + "</tool_call>"
    assert ToolPlan(functions, "auto").split(answer) == (answer, [])
    calls = ToolPlan(functions, "required").split('[{"name": "f", "parameters": {}}, {"name": "f", "parameters": '
                                                  '{"a": ' + "[" * 5000 + "]" * 5000 + "}}]")[1]
    assert [(c["name"], c["arguments"]) for c in calls] == [("f", "{}")]


def test_tens_of_thousands_of_tools_are_read_in_linear_time():
    """The duplicate-name check compared every name with every other, on the event loop: 20,000 tools
    (1 MB) took ~10 s on this host, 49,000 (about the most a body's 200,000 JSON values hold) 46 s.
    Now a set: 60,000 well inside the time given here; the duplicate is still found, wherever it is."""
    tools = [{"type": "function", "function": {"name": f"f{i}"}} for i in range(60_000)]
    done: list = []
    thread = threading.Thread(target=lambda: done.append(read_tools({"tools": tools}, "chat")), daemon=True)
    thread.start()
    thread.join(30)
    assert done and len(done[0].functions) == 60_000
    with pytest.raises(ApiError) as e:
        read_tools({"tools": [*tools, {"type": "function", "function": {"name": "f59999"}}]}, "chat")
    assert e.value.param == "tools" and "'f59999'" in e.value.message


@pytest.mark.slow
def test_health_answers_while_a_request_is_checked():
    """The checks of a request ran on the server's event loop: a ``required`` tool list's grammar (4.2 s
    for 100 tools of two parameters) or a long tool list stalled ``/health`` and every stream for as
    long. Now they run on a thread: ``/health`` answers while a chat request's checks are held."""
    pytest.importorskip("fastapi")
    httpx = pytest.importorskip("httpx")
    from conftest import serving
    from showo2_cli.loading import bundled_demo_path, load
    from showo2_cli.serve import app as app_module

    if bundled_demo_path() is None:
        pytest.skip("the bundled demo is not installed")
    entered, release = threading.Event(), threading.Event()

    def held(body, config):
        entered.set()
        release.wait(30)
        raise ApiError(400, "held", "invalid_value", "messages")

    with serving(load("demo")) as url, pytest.MonkeyPatch.context() as mp:
        mp.setattr(app_module, "parse_chat", held)
        answers: list = []
        client = threading.Thread(target=lambda: answers.append(httpx.post(
            f"{url}/v1/chat/completions", json={"model": "demo", "messages": [ASK]}, timeout=60)))
        client.start()
        try:
            assert entered.wait(30)
            health = httpx.get(f"{url}/health", timeout=5)
            assert health.status_code == 200 and health.json()["status"] == "ok"
        finally:
            release.set()
            client.join(60)
        assert answers[0].status_code == 400 and answers[0].json()["error"]["message"] == "held"
