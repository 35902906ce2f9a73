"""``showo2 serve`` as real OpenAI-compatible clients call it: request shapes other servers take
(vLLM's ``video_url`` parts, OpenAI's assistant ``refusal`` parts, an empty ``model``) and 404s
that say what to do (legacy completions, embeddings, Azure paths, a base URL without ``/v1``).

The fast tests check the request parsing and the app in this process (no model runs); the
``slow`` one starts a real server and talks to it with the ``openai`` client.
"""

from __future__ import annotations

import base64
from types import SimpleNamespace

import pytest

from showo2_cli.serve import ApiError, ServerConfig, parse_chat
from showo2_cli.tokenizer import plain_text

USER = {"role": "user", "content": "hi"}
VIDEO_BYTES = b"\x00\x00\x00\x18ftypmp42"  # parsing only looks at the data URL, not the bytes
PNG_URL = "data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\n").decode()


def _video_part(url, nested: bool = True) -> dict:
    return {"type": "video_url", "video_url": {"url": url} if nested else url}


def test_video_url_parts_are_taken_as_vllm_sends_them():
    cfg = ServerConfig()
    b64 = base64.b64encode(VIDEO_BYTES).decode()
    for url, nested in ((f"data:video/mp4;base64,{b64}", True), (f"data:video/mp4;base64,{b64}", False),
                        (f"data:application/octet-stream;base64,{b64}", True), (f"data:;base64,{b64}", True)):
        plan = parse_chat({"messages": [{"role": "user", "content": [{"type": "text", "text": "What happens?"},
                                                                     _video_part(url, nested)]}]}, cfg)
        (upload,) = plan.turns[0].images  # it was a 400: "unsupported content part"
        assert upload.data == VIDEO_BYTES and upload.declared == "video" and "video_url" in upload.expected
        assert upload.param == "messages[0].content[1]"
    with pytest.raises(ApiError) as e:  # an image sent as a video: said, not drawn from as a one-frame video
        parse_chat({"messages": [{"role": "user", "content": [_video_part(PNG_URL)]}]}, cfg)
    assert (e.value.status, e.value.code, e.value.param) == (400, "invalid_image_url", "messages[0].content[0]")
    with pytest.raises(ApiError) as e:  # never fetched, as image_url parts
        parse_chat({"messages": [{"role": "user", "content": [_video_part("https://example.com/v.mp4")]}]}, cfg)
    assert e.value.code == "unsupported_image_url"
    cfg_two = ServerConfig(max_images=2)
    many = [_video_part(f"data:video/mp4;base64,{b64}")] * 3  # they count as media against the limit
    with pytest.raises(ApiError) as e:
        parse_chat({"messages": [{"role": "user", "content": many}]}, cfg_two)
    assert e.value.status == 422


def test_an_assistant_refusal_part_is_what_it_said():
    """OpenAI's assistant content may hold ``refusal`` parts (a history replayed from OpenAI)."""
    cfg = ServerConfig()
    refused = {"role": "assistant", "content": [{"type": "refusal", "refusal": "I can't help with that."}]}
    plan = parse_chat({"messages": [USER, refused, USER]}, cfg)  # it was a 400
    assert plan.turns[0].answer == "I can't help with that."
    mixed = {"role": "assistant", "content": [{"type": "text", "text": "Well."}, *refused["content"]]}
    assert parse_chat({"messages": [USER, mixed, USER]}, cfg).turns[0].answer == "Well.\nI can't help with that."
    for bad in ({"role": "system", "content": refused["content"]},  # only an assistant refuses
                {"role": "assistant", "content": [{"type": "refusal", "refusal": None}]}):
        with pytest.raises(ApiError) as e:
            parse_chat({"messages": [USER, bad, USER]} if bad["role"] == "assistant" else
                       {"messages": [bad, USER]}, cfg)
        assert (e.value.status, e.value.code) == (400, "invalid_content")


@pytest.fixture(scope="module")
def app_client():
    """The app over a stand-in model: these requests are answered before any model would run."""
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from showo2_cli.serve import create_app

    model = SimpleNamespace(spec=SimpleNamespace(vocab_size=1000, latent_multiple=16))
    with TestClient(create_app(model, ServerConfig(model_id="demo"))) as client:
        yield client


def test_unserved_openai_endpoints_say_what_to_use(app_client):
    cases = {"/v1/completions": "POST /v1/chat/completions", "/v1/embeddings": "embeddings are not served",
             "/v1/responses/resp_1/cancel": "stores no responses", "/v1/images/edits": "/v1/images/generations",
             "/v1/images/variations": "/v1/images/generations",
             "/openai/deployments/demo/chat/completions?api-version=2024-06-01": "Azure OpenAI paths",
             "/chat/completions": "Try /v1/chat/completions", "/images/generations": "Try /v1/images/generations"}
    for path, hint in cases.items():
        r = app_client.post(path, json={"model": "demo", "prompt": "hi", "input": "hi"})
        assert r.status_code == 404, (path, r.text)
        err = r.json()["error"]
        assert err["code"] == "not_found" and hint in err["message"], (path, err)
    r = app_client.get("/models/demo")
    assert r.status_code == 404 and "Try /v1/models/demo" in r.json()["error"]["message"]
    plain = app_client.get("/v1/nothing").json()["error"]["message"]  # no hint where there is none to give
    assert plain == "no such endpoint: GET '/v1/nothing'"


def test_an_empty_model_name_is_the_served_model(app_client):
    """vLLM takes ``"model": ""`` as its model; a wrong name is still a 404."""
    r = app_client.post("/v1/images/generations", json={"model": "", "prompt": ""})
    assert r.status_code == 400 and r.json()["error"]["param"] == "prompt"  # past the model check
    r = app_client.post("/v1/images/generations", json={"model": "dall-e-3", "prompt": "x"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"


@pytest.mark.slow
def test_client_request_shapes_against_a_real_server(media_dir):
    from openai import BadRequestError, NotFoundError, OpenAI

    from test_chat_serve import ServerProcess, data_url, scene

    server = ServerProcess("--max-tokens", "32")
    try:
        client = OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0)
        video = f"data:video/mp4;base64,{base64.b64encode((media_dir / 'video1.mp4').read_bytes()).decode()}"
        question = {"type": "text", "text": "What happens?"}
        as_video = client.chat.completions.create(model="", max_tokens=8, messages=[{"role": "user", "content": [
            question, {"type": "video_url", "video_url": {"url": video}}]}])  # vLLM's part; an empty model
        as_image_url = client.chat.completions.create(model="demo", max_tokens=8, messages=[
            {"role": "user", "content": [question, {"type": "image_url", "image_url": {"url": video}}]}])
        assert as_video.choices[0].message.content == as_image_url.choices[0].message.content  # the same video
        assert as_video.usage.prompt_tokens == as_image_url.usage.prompt_tokens
        picture = {"type": "video_url", "video_url": {"url": "data:;base64," + data_url(scene(3)).split(",")[1]}}
        with pytest.raises(BadRequestError, match="a video_url part must hold a video, but it holds an image"):
            client.chat.completions.create(model="demo", messages=[{"role": "user", "content": [picture]}])
        refused = [{"role": "user", "content": "hi"},
                   {"role": "assistant", "content": [{"type": "refusal", "refusal": "I can't."}]},
                   {"role": "user", "content": "hi"}]
        assert client.chat.completions.create(model="demo", messages=refused, max_tokens=4).choices[0].message.content
        with pytest.raises(NotFoundError, match="chat/completions"):
            client.completions.create(model="demo", prompt="hi", max_tokens=4)
        with pytest.raises(NotFoundError, match="embeddings are not served"):
            client.embeddings.create(model="demo", input="hi")
        no_v1 = OpenAI(base_url=server.url, api_key="none", max_retries=0)
        with pytest.raises(NotFoundError, match="missing '/v1'"):
            no_v1.chat.completions.create(model="demo", messages=[{"role": "user", "content": "hi"}])
    finally:
        assert server.stop() == 0


#: langchain-openai's ``ChatOpenAI(...).bind_tools([GetWeather], tool_choice="none")`` body, as sent
LANGCHAIN_TOOLS_NONE = {
    "model": "demo", "stream": False, "messages": [{"content": "hi", "role": "user"}], "max_completion_tokens": 8,
    "tool_choice": "none", "tools": [{"type": "function", "function": {
        "name": "GetWeather", "description": "Get the weather in a city.",
        "parameters": {"properties": {"city": {"type": "string"}}, "required": ["city"], "type": "object"}}}]}


def test_tools_listed_with_tool_choice_none_are_taken():
    """``tool_choice: "none"`` asks for a text answer with no tool called: clients (langchain's
    ``bind_tools``, agents between tool steps) send their tool list with it; the tools are not offered
    to the model. Tools that may be called are served since probe IE; the deprecated ``functions``
    are still refused, pointing at tools."""
    cfg = ServerConfig()
    plan = parse_chat(LANGCHAIN_TOOLS_NONE, cfg)
    assert plan.turns[-1].question == "hi" and plan.max_tokens == 8 and plan.max_tokens_given
    assert plan.tools is None and plan.system is None
    legacy = {"messages": [USER], "function_call": "none", "functions": [{"name": "f", "parameters": {}}]}
    assert parse_chat(legacy, cfg).turns[-1].question == "hi"
    refused = [({**legacy, "function_call": "auto"}, "functions"),
               ({**legacy, "function_call": None, "tool_choice": "none"}, "functions")]  # each has its own switch
    for body, param in refused:
        with pytest.raises(ApiError) as e:
            parse_chat(body, cfg)
        assert (e.value.status, e.value.code, e.value.param) == (400, "unsupported_parameter", param), body
    with pytest.raises(ApiError) as e:  # still a list, as OpenAI checks
        parse_chat({**LANGCHAIN_TOOLS_NONE, "tools": {"type": "function"}}, cfg)
    assert (e.value.status, e.value.code, e.value.param) == (400, "invalid_type", "tools")
    history = {**LANGCHAIN_TOOLS_NONE, "messages": [  # a history with tool calls: shown as the template shows it
        USER, {"role": "assistant", "content": None, "tool_calls": [{"id": "1", "type": "function", "function": {
            "name": "GetWeather", "arguments": "{}"}}]}, {"role": "tool", "tool_call_id": "1", "content": "sun"}]}
    turns = parse_chat(history, cfg).turns
    # (the template's tags are marked as its own, their tokens where the tokenizer has them: probe IM)
    assert plain_text(turns[0].answer) == '<tool_call>\n{"name": "GetWeather", "arguments": {}}\n</tool_call>'
    assert plain_text(turns[1].question) == "<tool_response>\nsun\n</tool_response>"


def test_a_model_served_by_its_path_is_found_by_its_id():
    """``showo2 serve --model /abs/path/`` serves the id as given; ``client.models.retrieve(id)``
    escapes its slashes (``/v1/models/%2Fabs%2Fpath%2F``). The clean-up of the slashes a client
    writes took the escaped ones too and answered 404 for the served model."""
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient
    from openai import NotFoundError, OpenAI

    from showo2_cli.serve import create_app

    model = SimpleNamespace(spec=SimpleNamespace(vocab_size=1000, latent_multiple=16))
    for model_id in ("/srv/models/show-o2-1.5B", "/srv/models/show-o2-1.5B/", "./out//tiny", "showlab/show-o2-1.5B"):
        with TestClient(create_app(model, ServerConfig(model_id=model_id))) as http:
            client = OpenAI(base_url=str(http.base_url) + "/v1", api_key="none", http_client=http, max_retries=0)
            assert client.models.list().data[0].id == model_id
            assert client.models.retrieve(model_id).id == model_id  # was a 404 for the paths
            with pytest.raises(NotFoundError):
                client.models.retrieve(model_id.strip("/") + "-other")
            for path in ("/v1/models/", "//v1/models", "/v1//models//"):  # what the client wrote is still cleaned
                assert http.get(str(http.base_url) + path).json()["data"][0]["id"] == model_id, path


def test_a_page_on_an_allowed_origin_can_read_retry_after():
    """A 429 (queue full) or 503 (draining) says when to retry in ``Retry-After``; a browser hides
    a response header from the page unless CORS exposes it, so the OpenAI JS SDK in a web UI could
    not read it and fell back to its own back-off."""
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from showo2_cli.serve import create_app
    from showo2_cli.serve.worker import QueueFull

    model = SimpleNamespace(spec=SimpleNamespace(vocab_size=1000, latent_multiple=16))
    page = {"Origin": "http://localhost:3000"}
    app = create_app(model, ServerConfig(model_id="demo", allow_origins=("http://localhost:3000",)))

    def full(job):
        raise QueueFull

    app.state.worker.submit = full
    with TestClient(app) as http:
        r = http.post("/v1/chat/completions", headers=page, json={"model": "demo", "messages": [USER]})
        assert r.status_code == 429 and r.headers["retry-after"] == "1"
        assert r.headers["access-control-allow-origin"] == "http://localhost:3000"
        assert "retry-after" in r.headers["access-control-expose-headers"].lower()  # was absent
        r = http.options("/v1/chat/completions", headers={**page, "Access-Control-Request-Method": "POST"})
        assert r.status_code == 200  # the preflight is as it was


def test_a_developer_message_is_a_system_message_and_the_refusal_of_a_role_says_so():
    """OpenAI's newer clients send the system prompt as a ``developer`` message (the ``openai``
    SDK's reasoning-model habit, Vercel's AI SDK): it is taken as one, and the 400 for a role this
    server does not take names it among the roles to use."""
    cfg = ServerConfig()
    plan = parse_chat({"messages": [{"role": "developer", "content": [{"type": "text", "text": "Be brief."}]},
                                    USER, {"role": "system", "content": "Say it in English."}]}, cfg)
    assert plan.system == "Be brief.\nSay it in English." and plan.turns[-1].question == "hi"
    with pytest.raises(ApiError) as e:
        parse_chat({"messages": [USER, {"role": "robot", "content": "sun"}]}, cfg)
    assert (e.value.status, e.value.code, e.value.param) == (400, "invalid_value", "messages[1]")
    assert e.value.message == "messages[1]: unsupported role 'robot' (use system or developer, user, assistant, tool)"
    with pytest.raises(ApiError) as e:  # a tool's result answers a call (OpenAI's rule)
        parse_chat({"messages": [USER, {"role": "tool", "tool_call_id": "1", "content": "sun"}]}, cfg)
    assert (e.value.status, e.value.param) == (400, "messages[1]") and "tool calls" in e.value.message
