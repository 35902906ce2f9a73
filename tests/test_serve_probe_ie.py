"""Probe IE: tool calling on ``showo2 serve`` (chat completions and responses), as vLLM serves it for
Qwen2.5 models: ``auto`` offers the tools in the system turn as Qwen2.5's chat template does and parses
the hermes ``<tool_call>`` blocks back; ``required`` and a named function are held by structured output
to valid calls; earlier calls and their results are fed back as the template feeds them. Every response
and event is validated against the ``openai`` SDK's pydantic models."""

from __future__ import annotations

import asyncio
import json

import pytest

from showo2_cli.serve import ApiError, ServerConfig
from showo2_cli.serve.requests import parse_chat
from showo2_cli.serve.responses import parse_responses, stream_events
from showo2_cli.tokenizer import plain_text

WEATHER = {"type": "object", "properties": {
    "city": {"type": "string", "maxLength": 12}, "unit": {"type": "string", "enum": ["c", "f"]},
    "days": {"type": "integer", "minimum": 1, "maximum": 7}}, "required": ["city", "unit"]}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "The weather in a city.",
                                           "parameters": WEATHER}},
         {"type": "function", "function": {"name": "get_time"}}]
RESPONSES_TOOLS = [{"type": "function", **t["function"]} for t in TOOLS]
ASK = [{"role": "user", "content": "Weather in Paris?"}]
NAMED = {"type": "function", "function": {"name": "get_weather"}}
CALL = '{"name": "get_weather", "arguments": {"city": "Paris", "unit": "c"}}'


def _plan(**body):
    return parse_chat({"messages": ASK, **body}, ServerConfig())


def _refused(parse, body: dict) -> ApiError:
    with pytest.raises(ApiError) as e:
        parse(body, ServerConfig())
    return e.value


def _valid(args: dict, schema: dict = WEATHER) -> bool:
    """``args`` holds to ``schema`` (this file's schemas, held strictly: no property it does not declare)."""
    props = schema.get("properties", {})
    if not isinstance(args, dict) or set(args) - set(props) or set(schema.get("required", [])) - set(args):
        return False
    for key, value in args.items():
        rule = props[key]
        if "enum" in rule and value not in rule["enum"]:
            return False
        if rule.get("type") == "string" and not (isinstance(value, str) and len(value) <= rule.get("maxLength", 1e9)):
            return False
        if rule.get("type") == "integer" and not (type(value) is int and rule["minimum"] <= value <= rule["maximum"]):
            return False
    return True


# ---- the prompt: Qwen2.5's template -----------------------------------------------------------------

def test_auto_lists_the_tools_as_qwen25s_template_does():
    """The system turn is the system text (or Show-o2's default), then Qwen2.5's tools section, each
    tool as the request's JSON; nothing constrains the answer."""
    plan = _plan(tools=TOOLS, messages=[{"role": "system", "content": "Be brief."}, *ASK])
    listed = "\n".join(json.dumps(t, ensure_ascii=False) for t in TOOLS)
    assert plain_text(plan.system) == (
        "Be brief.\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
        "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n" + listed +
        "\n</tools>\n\nFor each function call, return a json object with function name and arguments within "
        "<tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": "
        "<args-json-object>}\n</tool_call>")
    assert plan.tools.choice == "auto" and plan.json_schema is None
    assert _plan(tools=TOOLS).system.startswith("You are a helpful assistant.\n\n# Tools\n")
    assert _plan(tools=TOOLS, tool_choice="none").system is None  # listed, not offered


def test_earlier_calls_and_results_are_fed_as_the_template_feeds_them():
    """An assistant message's text then each call in a ``<tool_call>`` block (its JSON-text arguments read
    back as an object, as vLLM gives them to the template); consecutive tool results are one user turn of
    ``<tool_response>`` blocks."""
    messages = [*ASK, {"role": "assistant", "content": "Let me look.", "tool_calls": [
        {"id": "a", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris", "unit": "c"}'}},
        {"id": "b", "type": "function", "function": {"name": "get_time", "arguments": ""}}]},
        {"role": "tool", "tool_call_id": "a", "content": "18 C"},
        {"role": "tool", "tool_call_id": "b", "content": [{"type": "text", "text": "noon"}]}]
    turns = _plan(messages=messages, tools=TOOLS).turns
    assert plain_text(turns[0].answer) == ("Let me look.\n<tool_call>\n" + CALL + "\n</tool_call>\n<tool_call>\n"
                               '{"name": "get_time", "arguments": {}}\n</tool_call>')
    assert plain_text(turns[1].question) == "<tool_response>\n18 C\n</tool_response>\n<tool_response>\nnoon\n</tool_response>"
    assert turns[1].answer is None
    plan = parse_responses({"input": [ASK[0], {"type": "function_call", "call_id": "a", "name": "get_weather",
                                              "arguments": '{"city": "Paris", "unit": "c"}'},
                                      {"type": "function_call_output", "call_id": "a", "output": "18 C"}],
                            "tools": RESPONSES_TOOLS}, ServerConfig())
    assert [(plain_text(t.question), t.answer and plain_text(t.answer)) for t in plan.chat.turns] == [
        ("Weather in Paris?", "<tool_call>\n" + CALL + "\n</tool_call>"),
        ("<tool_response>\n18 C\n</tool_response>", None)]


def test_required_and_named_are_held_to_the_tools_parameters():
    """vLLM's schemas: a named function's parameters; ``required``: an array of ``{"name", "parameters"}``
    (one item without ``parallel_tool_calls``), a tool without parameters taking ``{}``."""
    pytest.importorskip("xgrammar")
    assert _plan(tools=TOOLS, tool_choice=NAMED).json_schema == WEATHER
    schema = _plan(tools=TOOLS, tool_choice="required", parallel_tool_calls=False).json_schema
    assert (schema["type"], schema["minItems"], schema["maxItems"]) == ("array", 1, 1)
    names = [c["properties"]["name"]["enum"] for c in schema["items"]["anyOf"]]
    assert names == [["get_weather"], ["get_time"]]
    assert schema["items"]["anyOf"][1]["properties"]["parameters"] == {"type": "object", "properties": {}}
    assert "maxItems" not in _plan(tools=TOOLS, tool_choice="required").json_schema
    node = {"type": "object", "properties": {"kids": {"type": "array", "items": {"$ref": "#/$defs/node"}}}}
    shared = {"type": "function", "function": {"name": "tree", "parameters": {
        "type": "object", "properties": {"root": {"$ref": "#/$defs/node"}}, "$defs": {"node": node}}}}
    schema = _plan(tools=[TOOLS[1], shared], tool_choice="required").json_schema  # its $defs: the array's
    assert schema["$defs"] == {"node": node} and "$defs" not in schema["items"]["anyOf"][1]["properties"]["parameters"]
    assert _plan(tools=[shared], tool_choice={"type": "function", "function": {"name": "tree"}}).json_schema == \
        shared["function"]["parameters"]
    clash = {"type": "function", "function": {"name": "other", "parameters": {"$defs": {"node": {"type": "string"}}}}}
    assert _refused(parse_chat, {"messages": ASK, "tools": [shared, clash], "tool_choice": "required"}).param == "tools"


@pytest.mark.parametrize("body, param, words", [
    ({"tool_choice": "required"}, "tool_choice", "needs 'tools'"),
    ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}},
     "tool_choice.function.name", "not one of the tools"),
    ({"tools": TOOLS, "tool_choice": {"type": "function", "name": "get_time"}}, "tool_choice", '"function": {"name"'),
    ({"tools": TOOLS, "tool_choice": "any"}, "tool_choice", "none, auto, required"),
    ({"tools": TOOLS, "parallel_tool_calls": "no"}, "parallel_tool_calls", "true or false"),
    ({"tools": [TOOLS[0], TOOLS[0]]}, "tools", "two tools are named"),
    ({"tools": TOOLS, "tool_choice": "required", "response_format": {"type": "json_object"}}, "response_format",
     "must be a tool call"),  # (auto beside a response_format: held to either, probe JD)
    ({"tools": TOOLS, "tool_choice": "required", "stop": "}"}, "stop", "held to tool_choice"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"not": {}}}}],
      "tool_choice": "required"}, "tools[0].function.parameters", "not"),
    ({"tools": [TOOLS[1], {"type": "function", "function": {"name": "tree", "parameters": {
        "type": "object", "properties": {"kids": {"type": "array", "items": {"$ref": "#"}}}}}}],
      "tool_choice": "required"}, "tools[1].function.parameters", "'$ref' must point into"),
    ({"messages": [*ASK, {"role": "assistant", "tool_calls": [{"type": "function", "function": {
        "name": "get_time", "arguments": "{oops"}}]}, {"role": "tool", "content": "x"}], "tools": TOOLS},
     "messages[1].tool_calls[0].function.arguments", "is not valid JSON"),
    ({"messages": [*ASK, {"role": "assistant", "tool_calls": [{"type": "function", "function": {
        "name": "get_time", "arguments": "{}"}}]}], "tools": TOOLS}, "messages[1]", "results must follow"),
    ({"messages": [*ASK, {"role": "assistant", "content": "ok"}, {"role": "tool", "content": "x"}]},
     "messages[2]", "must answer the tool calls"),
    ({"messages": [*ASK, {"role": "assistant", "content": "{", "tool_calls": None}], "tools": TOOLS,
      "tool_choice": "required"}, "tool_choice", "cannot continue"),
])
def test_what_cannot_be_served_is_one_400_naming_the_field(body, param, words):
    if "tool_choice" in body and body["tool_choice"] in ("required", NAMED):
        pytest.importorskip("xgrammar")
    err = _refused(parse_chat, {"messages": ASK, **body})
    assert (err.status, err.param) == (400, param) and words in err.message, err.message


@pytest.mark.parametrize("body, param, words", [
    ({"tools": [{"type": "custom", "name": "sql"}]}, "tools[0].type", "custom tools"),
    ({"tools": RESPONSES_TOOLS, "tool_choice": {"type": "function", "name": "nope"}}, "tool_choice.name", "not one"),
    ({"tools": [{"type": "function", "name": "f", "parameters": {"uniqueItems": True}}], "tool_choice": "required"},
     "tools[0].parameters", "uniqueItems"),
    ({"input": [ASK[0], {"type": "function_call", "call_id": "a", "name": "f", "arguments": "{"},
                {"type": "function_call_output", "call_id": "a", "output": "1"}]}, "input[1].arguments", "JSON"),
    ({"input": [ASK[0], {"type": "function_call_output", "call_id": "a", "output": "1"}]}, "input[1]",
     "must answer"),
    ({"input": [ASK[0], {"type": "function_call", "call_id": "a", "name": "get_time", "arguments": "{}"}],
      "tools": RESPONSES_TOOLS}, "input[1]", "results must follow"),
    ({"tools": RESPONSES_TOOLS, "tool_choice": "required", "text": {"format": {"type": "json_object"}}}, "text.format",
     "must be a tool call"),  # (auto beside a format: held to either, probe JD)
])
def test_responses_refusals_name_its_own_fields(body, param, words):
    if body.get("tool_choice") == "required":
        pytest.importorskip("xgrammar")
    err = _refused(parse_responses, {"input": "hi", **body})
    assert (err.status, err.param) == (400, param) and words in err.message, err.message


# ---- the answer parsed back ---------------------------------------------------------------------------

def test_hermes_calls_are_parsed_back_as_vllms_parser_does():
    from showo2_cli.serve.tools import split_answer

    plan = _plan(tools=TOOLS).tools
    content, calls, finish = split_answer(plan, "Sure.\n<tool_call>\n" + CALL + "\n</tool_call>\n<tool_call>\n"
                                          '{"name": "get_time", "arguments": {}}\n</tool_call>', True)
    assert (content, finish) == ("Sure.", "tool_calls")
    assert [(c["name"], json.loads(c["arguments"])) for c in calls] == [
        ("get_weather", {"city": "Paris", "unit": "c"}), ("get_time", {})]
    assert len({c["id"] for c in calls}) == 2 and all(c["id"].startswith("call_") for c in calls)
    for text in ("<tool_call>\n{oops}\n</tool_call>", '<tool_call>{"name": "rm", "arguments": {}}</tool_call>',
                 "no call here"):  # unparsable, a function the client does not have, none: the text
        assert split_answer(plan, text, True) == (text, [], "stop")
    single = _plan(tools=TOOLS, parallel_tool_calls=False).tools
    assert len(split_answer(single, "<tool_call>" + CALL + "</tool_call>" * 2 + "<tool_call>" + CALL, True)[1]) == 1
    cut = split_answer(plan, "<tool_call>\n" + CALL, False)
    assert cut[1] and cut[2] == "length"  # (a call cut by the limit is whole JSON here)


def test_a_stream_holds_back_what_may_open_a_call():
    """Streamed in pieces that split ``<tool_call>``, the text sent is the answer's content, never a part
    of the tag; the calls come after it, as the whole answer parses."""
    from showo2_cli.serve.tools import ToolStream, split_answer

    plan = _plan(tools=TOOLS).tools
    answer = "Hi <b>.  \n<tool_call>\n" + CALL + "\n</tool_call>"
    for cut in range(1, 12):
        split = ToolStream(plan)
        events = [e for k in range(0, len(answer), cut) for e in split.feed(answer[k:k + cut])]
        content, calls, _ = split_answer(plan, answer, True)
        events += split.finish(content, calls)
        assert "".join(e[1] for e in events if e[0] == "content") == content == "Hi <b>."
        assert [e[0] for e in events if e[0] != "content"] == ["call", "arguments", "call_done"]
    split = ToolStream(plan)  # no call: all the text, the held back tail at the end
    sent = split.feed("a <tool") + split.finish("a <tool", [])
    assert "".join(e[1] for e in sent) == "a <tool"


def test_responses_stream_events_validate_in_the_sdk():
    """The Responses stream of a text then two calls (auto), and of a named call streamed as it is
    written: every event passes the SDK's event models; the final response's output matches the items."""
    from showo2_cli.serve.tools import split_answer

    pydantic = pytest.importorskip("pydantic")
    types = pytest.importorskip("openai.types.responses")
    adapter = pydantic.TypeAdapter(types.ResponseStreamEvent)

    def events(plan, pieces):
        answer = "".join(pieces)
        content, calls, finish = split_answer(plan.chat.tools, answer, True)
        done = {"answer": answer, "content": content, "tool_calls": calls, "finish_reason": finish,
                "prompt_tokens": 5, "completion_tokens": 9}
        queue = [("text", p) for p in pieces[1:]] + [("done", done)]

        async def run():
            async def next_event():
                return queue.pop(0)
            return [chunk async for chunk in stream_events(plan, ("text", pieces[0]), next_event, lambda: None)]

        out = []
        for chunk in asyncio.run(run()):
            payload = json.loads(chunk.split("data: ", 1)[1])
            adapter.validate_python(payload)
            out.append(payload)
        return out

    plan = parse_responses({"input": "hi", "tools": RESPONSES_TOOLS}, ServerConfig())
    got = events(plan, ["Sure", ". <tool", "_call>\n" + CALL, "\n</tool_call>\n<tool_call>",
                        '{"name": "get_time", "arguments": {}}</tool_call>'])
    final = types.Response.model_validate(got[-1]["response"])
    assert [o.type for o in final.output] == ["message", "function_call", "function_call"]
    assert final.output_text == "Sure." and final.status == "completed"
    added = [e["item"]["id"] for e in got if e["type"] == "response.output_item.added"]
    assert added == [o.id for o in final.output]
    assert [e["output_index"] for e in got if e["type"] == "response.output_item.done"] == [0, 1, 2]
    pytest.importorskip("xgrammar")
    plan = parse_responses({"input": "hi", "tools": RESPONSES_TOOLS,
                            "tool_choice": {"type": "function", "name": "get_weather"}}, ServerConfig())
    got = events(plan, ['{"city"', ': "Paris"', ', "unit": "c"}'])
    deltas = [e["delta"] for e in got if e["type"] == "response.function_call_arguments.delta"]
    assert deltas == ['{"city"', ': "Paris"', ', "unit": "c"}']
    final = types.Response.model_validate(got[-1]["response"])
    assert final.tool_choice.name == "get_weather" and [o.type for o in final.output] == ["function_call"]
    assert json.loads(final.output[0].arguments) == {"city": "Paris", "unit": "c"}


# ---- a real server, the demo model --------------------------------------------------------------------

@pytest.fixture(scope="module")
def base(demo_url):
    return demo_url


def _sse(httpx, url: str, body: dict) -> list[dict]:
    with httpx.stream("POST", url, json=body, timeout=120) as r:
        assert r.status_code == 200, r.read()
        return [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: ") and line != "data: [DONE]"]


def test_constrained_calls_are_valid_every_time(base):
    """With the random demo model, at temperature 1 and any seed, ``required`` and a named function give
    calls whose arguments hold to the tool's schema, streamed or not; each response and chunk validates
    against the SDK's models; the stream's pieces add up to the whole answer's call. (``required`` with
    parallel calls may list calls until ``max_tokens``: ``length``, with the calls written whole.)"""
    _constrained_calls(base, (0, 3))


@pytest.mark.slow
def test_constrained_calls_are_valid_for_many_seeds(base):
    _constrained_calls(base, range(4, 24))


def _constrained_calls(base: str, seeds) -> None:
    pytest.importorskip("xgrammar")
    httpx = pytest.importorskip("httpx")
    chat = pytest.importorskip("openai.types.chat")
    url = f"{base}/v1/chat/completions"
    for seed in seeds:
        for choice in ("required", NAMED):
            body = {"model": "demo", "messages": ASK, "tools": TOOLS, "tool_choice": choice, "max_tokens": 60,
                    "temperature": 1.0, "seed": seed, "parallel_tool_calls": seed > 1}
            r = httpx.post(url, json=body, timeout=120)
            done = chat.ChatCompletion.model_validate(r.json())
            calls = done.choices[0].message.tool_calls
            finish = done.choices[0].finish_reason
            assert calls and finish in (("tool_calls", "length") if seed > 1 else ("tool_calls",)), r.text
            assert seed > 1 or len(calls) == 1
            assert done.choices[0].message.content is None
            for call in calls:
                args = json.loads(call.function.arguments)
                assert _valid(args) if call.function.name == "get_weather" else args == {}, call
            if seed % 3:
                continue
            chunks = [chat.ChatCompletionChunk.model_validate(c) for c in _sse(httpx, url, {**body, "stream": True})]
            deltas = [t for c in chunks for t in (c.choices[0].delta.tool_calls or [])]
            streamed = {}
            for t in deltas:
                entry = streamed.setdefault(t.index, {"name": None, "arguments": ""})
                entry["name"] = t.function.name or entry["name"]
                entry["arguments"] += t.function.arguments or ""
            assert [(e["name"], json.loads(e["arguments"])) for e in streamed.values()] == \
                [(c.function.name, json.loads(c.function.arguments)) for c in calls]
            assert chunks[-1].choices[0].finish_reason == finish


def test_an_agent_loop_over_the_sdk(base):
    """The ``openai`` SDK as an agent drives it: a required call, its result sent back as a tool message
    (the prompt grows by it), an answer in auto mode; the Responses API the same way with
    ``function_call_output`` items, streamed events validated by the SDK."""
    pytest.importorskip("xgrammar")
    openai = pytest.importorskip("openai")
    types = pytest.importorskip("openai.types.responses")
    client = openai.OpenAI(base_url=f"{base}/v1", api_key="none", max_retries=0)
    first = client.chat.completions.create(model="demo", messages=ASK, tools=TOOLS, tool_choice="required",
                                           max_tokens=60, parallel_tool_calls=False)
    msg = first.choices[0].message
    assert len(msg.tool_calls) == 1 and first.choices[0].finish_reason == "tool_calls"
    history = [*ASK, msg.model_dump(exclude_none=True),
               {"role": "tool", "tool_call_id": msg.tool_calls[0].id, "content": "18 C, sunny"}]
    second = client.chat.completions.create(model="demo", messages=history, tools=TOOLS, max_tokens=6)
    assert second.usage.prompt_tokens > first.usage.prompt_tokens + 10
    assert second.choices[0].finish_reason in ("stop", "length", "tool_calls")

    tools = RESPONSES_TOOLS
    r = client.responses.create(model="demo", input=ASK, tools=tools, tool_choice="required", max_output_tokens=60)
    calls = [o for o in r.output if o.type == "function_call"]
    assert calls and r.status == "completed" and all(o.call_id.startswith("call_") for o in calls)
    outputs = [{"type": "function_call_output", "call_id": o.call_id, "output": "18 C"} for o in calls]
    body = {"model": "demo", "input": [*ASK, *[o.model_dump(exclude_none=True) for o in calls], *outputs],
            "tools": tools, "max_output_tokens": 6, "stream": True}
    adapter = pytest.importorskip("pydantic").TypeAdapter(types.ResponseStreamEvent)
    seen = [adapter.validate_python(e) for e in _sse(pytest.importorskip("httpx"), f"{base}/v1/responses", body)]
    assert seen[-1].type in ("response.completed", "response.incomplete")
    assert seen[-1].response.usage.input_tokens > r.usage.input_tokens + 4
