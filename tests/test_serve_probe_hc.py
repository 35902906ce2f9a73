"""OpenAI's Responses API on ``showo2 serve`` (probe HC): ``POST /v1/responses`` over the chat
machinery. It was a 404 ("the Responses API is not served here"), what the ``openai`` SDK's
``client.responses`` and the clients built on it (the Agents SDK, Codex, LangChain's
``use_responses_api``) met first.

The fast tests check the request parsing and the app over a stand-in model; the ``slow`` one runs a
real server on 127.0.0.1 and talks to it with the ``openai`` SDK (sync, async, streams, an image, a
JSON schema, errors)."""

from __future__ import annotations

import base64
import json
from types import SimpleNamespace

import pytest

from showo2_cli.serve import ApiError, ServerConfig
from showo2_cli.serve.responses import parse_responses

PNG_URL = "data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\n").decode()
MP4_URL = "data:video/mp4;base64," + base64.b64encode(b"\x00\x00\x00\x18ftypmp42").decode()
SCHEMA = {"type": "object", "properties": {"colour": {"type": "string"}}, "required": ["colour"],
          "additionalProperties": False}


def _refused(body: dict, config: ServerConfig | None = None) -> ApiError:
    with pytest.raises(ApiError) as e:
        parse_responses(body, config or ServerConfig())
    return e.value


def test_input_items_are_the_chat_messages():
    """A string is one user message; items are messages of each role; ``instructions`` is the system
    prompt; an earlier response's output items (the SDK's ``[*resp.output, new]``) are the assistant's
    turns; ``input_image`` parts are the chat's images, named by their place in ``input``."""
    plan = parse_responses({"input": "Say hello.", "max_output_tokens": 12, "temperature": 0.5}, ServerConfig())
    assert plan.chat.system is None and [t.question for t in plan.chat.turns] == ["Say hello."]
    assert (plan.chat.max_tokens, plan.chat.max_tokens_given, plan.chat.temperature) == (12, True, 0.5)
    earlier = {"id": "msg_1", "type": "message", "status": "completed", "role": "assistant",
               "content": [{"type": "output_text", "text": "A red circle.", "annotations": [], "logprobs": []}]}
    plan = parse_responses({"instructions": "Be brief.", "input": [
        {"role": "developer", "content": "Answer in English."},
        {"role": "user", "content": [{"type": "input_text", "text": "What is this?"},
                                     {"type": "input_image", "image_url": PNG_URL, "detail": "auto"}]},
        earlier,
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "And this?"},
                                                        {"type": "input_image", "image_url": MP4_URL}]}]},
        ServerConfig())
    assert plan.chat.system == "Be brief.\nAnswer in English."
    first, second = plan.chat.turns
    assert (first.question, first.answer, second.question, second.answer) == \
        ("What is this?", "A red circle.", "And this?", None)
    assert [(u.param, u.declared) for u in first.images + second.images] == \
        [("input[1].content[1]", "image"), ("input[3].content[1]", "video")]
    assert plan.chat.overflow is None and plan.echo["truncation"] == "disabled"
    assert parse_responses({"input": "hi", "truncation": "auto"}, ServerConfig()).chat.overflow == "drop"


def test_text_format_is_the_chat_response_format():
    """``text.format`` (flat, as the Responses API has it) holds the answer to the schema the chat
    endpoint's ``response_format`` does; its errors name ``text.format``."""
    pytest.importorskip("xgrammar")
    fmt = {"type": "json_schema", "name": "colour", "schema": SCHEMA, "strict": True}
    plan = parse_responses({"input": "hi", "text": {"format": fmt}}, ServerConfig())
    assert (plan.chat.json_schema, plan.chat.strict_schema) == (SCHEMA, True)
    assert plan.echo["text"] == {"format": fmt, "verbosity": "medium"}
    assert parse_responses({"input": "hi", "text": {"format": {"type": "json_object"}}},
                           ServerConfig()).chat.json_schema is not None
    bad = {**fmt, "schema": {"type": "object", "properties": {"a": {"type": "bogus"}}}}
    err = _refused({"input": "hi", "text": {"format": bad}})
    assert (err.status, err.param) == (400, "text.format.schema") and "response_format" not in err.message
    err = _refused({"input": "hi", "text": {"format": {"type": "yaml"}}})
    assert err.param == "text.format.type" and err.message.startswith("text.format.type must be")


@pytest.mark.parametrize("body, status, param, words", [
    ({"input": 3}, 400, "input", "a string or a non-empty list"),
    ({"input": []}, 400, "input", "non-empty"),
    ({"input": "  "}, 400, "input", "empty"),
    ({}, 400, "input", "non-empty"),
    ({"input": [1]}, 400, "input[0]", "must be an object"),
    ({"input": [{"type": ["x"], "role": "user"}]}, 400, "input[0].type", "not supported"),
    ({"input": [{"role": "tool", "content": "1"}]}, 400, "input[0].role", "unsupported role"),
    ({"input": [{"role": "user", "content": {"text": "hi"}}]}, 400, "input[0].content", "string or a list"),
    ({"input": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]}, 400, "input[0].content[0]",
     "use input_text or input_image"),
    ({"input": [{"role": "user", "content": [{"type": "input_text", "text": 5}]}]}, 400, "input[0].content[0].text",
     "must be a string"),
    ({"input": [{"role": "user", "content": [{"type": "input_file", "file_data": "x"}]}]}, 400,
     "input[0].content[0]", "files are not read here"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "file-1"}]}]}, 400,
     "input[0].content[0].file_id", "no Files API"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "detail": "auto"}]}]}, 400,
     "input[0].content[0]", "needs an image_url"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "https://x/a.png"}]}]}, 400,
     "input[0].content[0]", "never fetches"),
    ({"input": [{"role": "system", "content": [{"type": "input_image", "image_url": PNG_URL}]}]}, 400,
     "input[0]", "only hold text"),
    ({"input": [{"role": "user", "content": "hi"},
                {"role": "assistant", "content": [{"type": "input_image", "image_url": PNG_URL}]}]}, 400,
     "input[1].content[0]", "use output_text or input_text or refusal"),
    ({"input": [{"type": "function_call_output", "call_id": "c", "output": "1"}]}, 400, "input[0]",
     "must answer the tool calls"),
    ({"input": [{"type": "web_search_call", "id": "ws_1"}]}, 400, "input[0].type", "not hosted ones"),
    ({"input": [{"type": "reasoning", "summary": []}]}, 400, "input[0].type", "no reasoning items"),
    ({"input": [{"type": "item_reference", "id": "msg_1"}]}, 400, "input[0].type", "stores no items"),
    ({"input": "hi", "instructions": 5}, 400, "instructions", "must be a string"),
    ({"input": "hi", "max_output_tokens": 0}, 400, "max_output_tokens", "'max_output_tokens' must be"),
    ({"input": "hi", "max_output_tokens": "9"}, 400, "max_output_tokens", "max_output_tokens"),
    ({"input": "hi", "max_output_tokens": 10**6}, 422, "max_output_tokens", "max_output_tokens"),
    ({"input": "hi", "temperature": 3}, 400, "temperature", "temperature"),
    ({"input": "hi", "stream": "yes"}, 400, "stream", "true or false"),
    ({"input": "hi", "stream_options": {}}, 400, "stream_options", "stream: true"),
    ({"input": "hi", "previous_response_id": "resp_1"}, 400, "previous_response_id", "stores no responses"),
    ({"input": "hi", "conversation": "conv_1"}, 400, "conversation", "stores no responses"),
    ({"input": "hi", "prompt": {"id": "pmpt_1"}}, 400, "prompt", "no prompt templates"),
    ({"input": "hi", "background": True}, 400, "background", "no responses to poll"),
    ({"input": "hi", "store": "yes"}, 400, "store", "true or false"),
    ({"input": "hi", "truncation": "middle"}, 400, "truncation", "auto or disabled"),
    ({"input": "hi", "include": "all"}, 400, "include", "list of strings"),
    ({"input": "hi", "include": ["message.output_text.logprobs"]}, 400, "include", "plain text"),
    ({"input": "hi", "top_logprobs": 3}, 400, "top_logprobs", "not supported"),
    ({"input": "hi", "reasoning": "high"}, 400, "reasoning", "an object"),
    ({"input": "hi", "text": "json"}, 400, "text", "an object"),
    ({"input": "hi", "text": {"verbosity": "max"}}, 400, "text.verbosity", "low, medium or high"),
    ({"input": "hi", "text": {"format": {"type": "json_schema", "name": "x", "schema": SCHEMA}}, "stop": "}"}, 400,
     "stop", "cut the JSON"),
    ({"input": "hi", "tools": [{"type": "image_generation"}]}, 400, "tools[0]", "/v1/images/generations"),
    ({"input": "hi", "tools": [{"type": "custom", "name": "f"}]}, 400, "tools[0].type", "custom tools"),
    ({"input": "hi", "tools": {"type": "function"}}, 400, "tools", "list of objects"),
    ({"input": "hi", "tool_choice": "required"}, 400, "tool_choice", "needs 'tools'"),
    ({"input": "hi", "tool_choice": 7}, 400, "tool_choice", "none, auto, required"),
    ({"input": "hi", "metadata": {str(k): "v" for k in range(17)}}, 400, "metadata", "16 keys"),
    ({"input": "hi", "metadata": {"k": 1}}, 400, "metadata", "16 keys"),
    ({"messages": [{"role": "user", "content": "hi"}]}, 400, "messages", "send 'input'"),
    ({"input": "hi", "max_tokens": 8}, 400, "max_tokens", "max_output_tokens"),
    ({"input": "hi", "response_format": {"type": "json_object"}}, 400, "response_format", "text.format"),
    ({"input": "hi", "logprobs": True}, 400, "logprobs", "not supported"),
    ({"input": "hi", "guided_json": SCHEMA}, 400, "guided_json", "not supported"),
    ({"input": "hi", "n": 2}, 400, "n", "must be 1"),
])
def test_bad_requests_name_their_field(body, status, param, words):
    err = _refused(body)
    assert (err.status, err.param) == (status, param), err.message
    assert words in err.message and "messages[" not in err.message, err.message
    assert "response_format" not in err.message or param == "response_format"


def test_server_limits_hold_as_for_chat():
    many = [{"role": "user", "content": [{"type": "input_image", "image_url": PNG_URL}]}] * 3
    err = _refused({"input": many}, ServerConfig(max_images=2))
    assert (err.status, err.param) == (422, "input[2]")
    err = _refused({"input": [{"role": "user", "content": "hi"}] * 5}, ServerConfig(max_messages=4))
    assert (err.status, err.param) == (422, "input")
    err = _refused({"input": "x" * 101, "instructions": "y"}, ServerConfig(max_text_chars=100))
    assert (err.status, err.code, err.param) == (400, "context_length_exceeded", "input")


def test_fields_that_change_nothing_here_are_taken():
    """``store`` (nothing is stored: answered false), ``reasoning`` (Show-o2 does not reason apart),
    ``include`` of items never made, tools listed with ``tool_choice: "none"``, ``metadata``
    (repeated), ``verbosity``, ``parallel_tool_calls``, ``user``, ``safety_identifier``, ``seed``."""
    plan = parse_responses({
        "input": "hi", "store": True, "reasoning": {"effort": "medium", "summary": "auto"},
        "include": ["reasoning.encrypted_content", "message.input_image.image_url"],
        "tools": [{"type": "function", "name": "f", "parameters": {}}], "tool_choice": "none",
        "metadata": {"run": "7"}, "text": {"verbosity": "low"}, "parallel_tool_calls": False, "user": "u",
        "safety_identifier": "s", "prompt_cache_key": "k", "seed": 5, "stream": True,
        "stream_options": {"include_obfuscation": False}}, ServerConfig())
    assert (plan.chat.seed, plan.chat.stream) == (5, True)
    echo = plan.echo
    assert (echo["store"], echo["metadata"], echo["parallel_tool_calls"], echo["tool_choice"]) == \
        (False, {"run": "7"}, False, "none")
    assert echo["reasoning"] == {"effort": None, "summary": None} and echo["text"]["verbosity"] == "low"


@pytest.fixture(scope="module")
def app_client():
    """The app over a stand-in model: these requests are answered before any model would run."""
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from showo2_cli.serve import create_app

    model = SimpleNamespace(spec=SimpleNamespace(vocab_size=1000, latent_multiple=16))
    with TestClient(create_app(model, ServerConfig(model_id="demo", max_body_bytes=4096))) as client:
        yield client


@pytest.mark.parametrize("raw", [
    b"[]", b'"hi"', b"null", b"{", b'{"input": NaN}', b'{"input": "hi", "logit_bias": {"5000": 1}}',
    b'{"input": "hi", "model": "gpt-5"}', b'{"input": "hi", "model": 5}',
    json.dumps({"input": "x" * 5000}).encode(),
    json.dumps({"input": [{"role": "user", "content": [{"type": {"a": 1}}]}]}).encode(),
    json.dumps({"input": [{"role": {"a": 1}}]}).encode(),
    json.dumps({"input": "hi", "tool_choice": {"type": "function", "name": "f"}}).encode(),
    json.dumps({"input": "hi", "truncation": ["auto"], "background": [1]}).encode(),
])
def test_hostile_bodies_get_a_json_4xx(app_client, raw):
    r = app_client.post("/v1/responses", content=raw, headers={"Content-Type": "application/json"})
    assert 400 <= r.status_code < 500, (r.status_code, r.text[:200])
    err = r.json()["error"]
    assert err["message"] and "\n" not in err["message"] and err["type"] == "invalid_request_error"
    assert "messages" not in err["message"], err


def test_the_404s_of_the_responses_api():
    """The stored-response endpoints (``GET /v1/responses/{id}``, ``cancel``, ``input_items``) say
    nothing is stored; a base URL without ``/v1`` is told so."""
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from showo2_cli.serve import create_app

    model = SimpleNamespace(spec=SimpleNamespace(vocab_size=1000, latent_multiple=16))
    with TestClient(create_app(model, ServerConfig(model_id="demo"))) as client:
        for method, path in (("GET", "/v1/responses/resp_1"), ("POST", "/v1/responses/resp_1/cancel"),
                             ("GET", "/v1/responses/resp_1/input_items"), ("DELETE", "/v1/responses/resp_1")):
            r = client.request(method, path)
            assert r.status_code == 404 and "stores no responses" in r.json()["error"]["message"], (path, r.text)
        r = client.post("/responses", json={"input": "hi"})
        assert r.status_code == 404 and "Try /v1/responses" in r.json()["error"]["message"]
        r = client.post("/v1/responses", json={"input": "hi", "max_output_tokens": 0})
        assert r.status_code == 400 and r.json()["error"]["param"] == "max_output_tokens"  # it was a 404


@pytest.mark.slow
def test_the_openai_sdk_against_a_real_server(media_dir, tmp_path):
    """``client.responses`` as users call it, against the demo model: the answer is the chat endpoint's
    (greedy, the same prompt), sync and async, streamed (raw events, and the SDK's ``stream()``
    helper that checks their order), with an image and a video, to a JSON schema, replayed as
    history, cut at ``max_output_tokens`` (``incomplete``), and errors as the SDK's exceptions."""
    import asyncio
    from typing import Literal

    from PIL import Image
    from pydantic import BaseModel

    openai = pytest.importorskip("openai")
    from conftest import serving
    from showo2_cli.loading import load
    from showo2_cli.structured import available

    with Image.open(media_dir / "pexels-taryn-elliott-4144459.jpg") as im:
        im.thumbnail((128, 128))
        im.save(tmp_path / "small.jpg")
    jpeg = "data:image/jpeg;base64," + base64.b64encode((tmp_path / "small.jpg").read_bytes()).decode()
    video = "data:video/mp4;base64," + base64.b64encode((media_dir / "video1.mp4").read_bytes()).decode()
    ask = [{"type": "input_text", "text": "What is this?"}, {"type": "input_image", "image_url": jpeg}]
    with serving(load("demo")) as base:
        client = openai.OpenAI(base_url=base + "/v1", api_key="none", max_retries=0)
        chat = client.chat.completions.create(model="demo", max_tokens=12, messages=[
            {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello."}])
        r = client.responses.create(model="demo", instructions="Be brief.", input="Say hello.", max_output_tokens=12)
        assert r.output_text == chat.choices[0].message.content and r.output_text
        assert (r.status, r.object, r.output[0].role, r.output[0].content[0].type) == \
            ("completed", "response", "assistant", "output_text")
        assert (r.usage.input_tokens, r.usage.output_tokens) == (chat.usage.prompt_tokens,
                                                                 chat.usage.completion_tokens)
        assert r.usage.total_tokens == r.usage.input_tokens + r.usage.output_tokens
        assert (r.max_output_tokens, r.store, r.model) == (12, False, "demo")

        events = list(client.responses.create(model="demo", instructions="Be brief.", input="Say hello.",
                                              max_output_tokens=12, stream=True))
        kinds = [e.type for e in events]
        assert kinds[:4] == ["response.created", "response.in_progress", "response.output_item.added",
                             "response.content_part.added"]
        assert kinds[-4:] == ["response.output_text.done", "response.content_part.done",
                              "response.output_item.done", "response.completed"]
        assert [e.sequence_number for e in events] == list(range(len(events)))
        assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == r.output_text
        assert events[-1].response.output_text == r.output_text and events[-1].response.usage.output_tokens
        with client.responses.stream(model="demo", input=[{"role": "user", "content": ask}],
                                     max_output_tokens=8) as stream:
            streamed = stream.get_final_response()  # the helper checks the events' identities and order
        pictured = client.responses.create(model="demo", input=[{"role": "user", "content": ask}], max_output_tokens=8)
        assert streamed.output_text == pictured.output_text
        as_chat = client.chat.completions.create(model="demo", max_tokens=8, messages=[{"role": "user", "content": [
            {"type": "text", "text": "What is this?"}, {"type": "image_url", "image_url": {"url": jpeg}}]}])
        assert pictured.output_text == as_chat.choices[0].message.content
        assert pictured.usage.input_tokens == as_chat.usage.prompt_tokens > r.usage.input_tokens  # the image's

        async def seen_async():
            aclient = openai.AsyncOpenAI(base_url=base + "/v1", api_key="none", max_retries=0)
            got = await aclient.responses.create(model="demo", input=[{"role": "user", "content": [
                {"type": "input_text", "text": "What happens?"}, {"type": "input_image", "image_url": video}]}],
                max_output_tokens=6)
            pieces = [e.delta async for e in await aclient.responses.create(
                model="demo", input="Say hello.", instructions="Be brief.", max_output_tokens=12, stream=True)
                if e.type == "response.output_text.delta"]
            return got, "".join(pieces)

        moving, joined = asyncio.run(seen_async())
        assert moving.output_text and joined == r.output_text

        again = client.responses.create(model="demo", input=[{"role": "user", "content": "Say hello."}, *r.output,
                                                             {"role": "user", "content": "Again."}],
                                        max_output_tokens=6)
        assert again.usage.input_tokens > r.usage.input_tokens  # the earlier turn is in the prompt
        long_ago = [{"role": "user", "content": "word " * 2800}, {"role": "assistant", "content": "Noted."},
                    {"role": "user", "content": "Say hello."}]  # over the demo's 8,192-token context
        with pytest.raises(openai.BadRequestError, match="maximum context length") as e:
            client.responses.create(model="demo", input=long_ago, max_output_tokens=4)
        assert (e.value.body["code"], e.value.body["param"]) == ("context_length_exceeded", "input")
        dropped = client.responses.create(model="demo", input=long_ago, max_output_tokens=4, truncation="auto")
        assert dropped.usage.input_tokens < 100 and dropped.truncation == "auto"  # the first turn left
        cut = client.responses.create(model="demo", input="Tell me a long story.", max_output_tokens=2)
        assert (cut.status, cut.incomplete_details.reason, cut.usage.output_tokens) == \
            ("incomplete", "max_output_tokens", 2)

        if available():  # structured output (xgrammar on the server)
            class Colour(BaseModel):  # (a free string: the demo model's runs past any max_output_tokens)
                colour: Literal["blue", "grey"]

            parsed = client.responses.parse(model="demo", input="Which colour is the sky?", text_format=Colour,
                                            max_output_tokens=40)
            assert isinstance(parsed.output_parsed, Colour), parsed.output_text
            assert json.loads(parsed.output_text) == parsed.output_parsed.model_dump()

        with pytest.raises(openai.BadRequestError, match="never fetches") as e:
            client.responses.create(model="demo", input=[{"role": "user", "content": [
                {"type": "input_image", "image_url": "https://example.com/a.png"}]}])
        assert e.value.body["param"] == "input[0].content[0]"
        with pytest.raises(openai.BadRequestError, match="/v1/images/generations"):
            client.responses.create(model="demo", input="Draw a cat.", tools=[{"type": "image_generation"}])
        with pytest.raises(openai.BadRequestError, match="stores no responses"):
            client.responses.create(model="demo", input="hi", previous_response_id=r.id)
        with pytest.raises(openai.NotFoundError, match="stores no responses"):
            client.responses.retrieve(r.id)
        with pytest.raises(openai.UnprocessableEntityError, match="input\\[0\\].content\\[0\\]"):
            big = Image.new("RGB", (5000, 4000))  # over the server's pixel limit: named by its place
            big.save(tmp_path / "big.png")
            client.responses.create(model="demo", input=[{"role": "user", "content": [{
                "type": "input_image", "image_url": "data:image/png;base64," +
                base64.b64encode((tmp_path / "big.png").read_bytes()).decode()}]}])


def _events(plan, first, rest) -> list[dict]:
    """The stream's events for a job whose events are ``first`` then ``rest``, each checked against the
    openai SDK's own models of them (validated, not constructed unchecked as the SDK reads them)."""
    import asyncio

    from pydantic import TypeAdapter

    from showo2_cli.serve.responses import stream_events

    stream_event = TypeAdapter(pytest.importorskip("openai.types.responses").ResponseStreamEvent)
    pending, cancelled = list(rest), []

    async def more():
        return pending.pop(0)

    async def run():
        return [chunk async for chunk in stream_events(plan, first, more, lambda: cancelled.append(1))]

    out = []
    for chunk in asyncio.run(run()):
        head, data = chunk.strip("\n").split("\n")
        payload = json.loads(data.removeprefix("data: "))
        assert head == f"event: {payload['type']}"
        stream_event.validate_python(payload)
        out.append(payload)
    assert not cancelled
    return out


def test_the_response_and_its_events_are_what_the_sdk_models_hold():
    """Every event of a stream, and the response object, pass the ``openai`` SDK's pydantic models
    with validation (each required field there, of its type): done, cut at ``max_output_tokens``,
    and an error once started (``error`` then ``response.failed``, its error renamed)."""
    types = pytest.importorskip("openai.types.responses")
    plan = parse_responses({"input": "hi", "max_output_tokens": 2, "metadata": {"a": "b"}}, ServerConfig())
    done = {"answer": "Hel lo", "content": "Hel lo", "tool_calls": [], "finish_reason": "stop", "prompt_tokens": 5,
            "completion_tokens": 2}
    whole = plan.response(text="Hel lo", result=done)
    got = types.Response.model_validate(whole)
    assert (got.output_text, got.status, got.usage.total_tokens, got.metadata) == ("Hel lo", "completed", 7, {"a": "b"})
    events = _events(plan, ("text", "Hel"), [("text", " lo"), ("done", done)])
    assert [e["sequence_number"] for e in events] == list(range(10))
    assert [e["delta"] for e in events if e["type"] == "response.output_text.delta"] == ["Hel", " lo"]
    final = events[-1]["response"]
    assert final.pop("completed_at") >= whole.pop("completed_at") >= final["created_at"]
    assert events[-1]["type"] == "response.completed" and final == whole
    cut = _events(plan, ("done", {**done, "finish_reason": "length"}), [])[-1]["response"]
    assert (cut["status"], cut["incomplete_details"], cut["output"][0]["status"]) == \
        ("incomplete", {"reason": "max_output_tokens"}, "incomplete")
    failed = _events(plan, ("text", "Hel"), [("error", ApiError(400, "bad 'messages[0]'", "invalid_input",
                                                                "messages[0]"))])
    assert [e["type"] for e in failed[-2:]] == ["error", "response.failed"]
    assert (failed[-2]["param"], failed[-2]["message"]) == ("input", "bad 'input'")
    assert failed[-1]["response"]["status"] == "failed" and failed[-1]["response"]["error"]["message"] == "bad 'input'"
