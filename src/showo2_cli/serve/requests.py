"""What a request may ask of ``showo2 serve``: the server limits, and the checking of chat
requests into plans (no model here; image requests: :mod:`.image_requests`, re-exported here);
the body's fields are read by :mod:`.body`, errors have the OpenAI shape of :mod:`.errors`."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from ..errors import Showo2Error, given, short
from ..serve_config import (  # (ServerConfig: here too, where it always was)
    ServerConfig,
    is_bearer_token,
    is_origin,
)
from ..tokenizer import plain_text
from .body import (
    Upload,
    decode_data_url,
    logit_bias_field,
    message_text,
    number_field,
    optional_string,
    seed_field,
    text_part,
)
from .errors import ApiError
from .image_requests import ImagePlan as ImagePlan  # (re-exported, as below: users import them here)
from .image_requests import parse_images as parse_images
from .image_requests import refuse_pipeline_arguments as refuse_pipeline_arguments
from .tools import ToolPlan, calls_text, check_listed_tools, hold_calls, read_tools, result_text

#: Environment variable holding the API key when ``--api-key`` is not given.
API_KEY_ENV = "SHOWO2_API_KEY"
ORIGINS_ENV = "SHOWO2_ORIGINS"  # comma-separated browser origins allowed to call the API (CORS)


@dataclass
class PlannedTurn:
    question: str | None  # None: an assistant message that opens the conversation
    images: list[Upload] = field(default_factory=list)
    answer: str | None = None
    prefix: str = ""  # the last turn: a reply to continue (a request ending with an assistant message)


@dataclass
class ChatPlan:
    system: str | None
    turns: list[PlannedTurn]
    max_tokens: int
    temperature: float
    top_p: float | None
    seed: int | None
    stream: bool
    include_usage: bool
    stop: tuple[str, ...] = ()
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    logit_bias: dict[int, float] | None = None
    repetition_penalty: float | None = None  # an extra field (transformers' and vLLM's name)
    top_k: int | None = None  # extra fields (vLLM's): top-k and min-p sampling
    min_p: float | None = None
    max_tokens_given: bool = False  # the request set max_tokens: a context it overflows is refused
    json_schema: dict | None = None  # response_format json_object / json_schema: the answer's schema
    strict_schema: bool = True
    # a history over the context: None, the chat rule (refused; without max_tokens the answer gets the room
    overflow: str | None = None  # left); "drop": its oldest turns leave (the Responses API's truncation auto)
    tools: ToolPlan | None = None  # the tools the model may call (None: it answers in text)
    tool_calls: dict | None = None  # auto beside a response_format: the calls' schema (TextSampling.tool_calls)


#: Other servers' fields for constrained output (vLLM's ``guided_*`` and ``structured_outputs``,
#: llama.cpp's ``json_schema`` and ``grammar``): refused with a pointer to ``response_format``, the
#: one way a schema is given here (ignored, the answer would be free text where JSON was asked for)
_CONSTRAINTS = ("guided_json", "guided_regex", "guided_choice", "guided_grammar", "guided_decoding_backend",
                "structured_outputs", "json_schema", "grammar")
#: OpenAI's deprecated function calling (``functions``, ``function_call``): tools do its job
_TOOL_FIELDS = ("functions", "function_call")

#: OpenAI chat fields that would change the reply and that this server cannot honour: refused
#: (400 ``unsupported_parameter``) unless they hold the value meaning "off"
_UNSUPPORTED_CHAT = {
    "logprobs": lambda v: v in (None, False),
    "top_logprobs": lambda v: v in (None, 0),
    "functions": lambda v: v in (None, []),
    "function_call": lambda v: v in (None, "none", "auto"),
    "audio": lambda v: v is None,
    "modalities": lambda v: v in (None, [], ["text"]),  # []: nothing asked (OpenAI's default is text)
    "prediction": lambda v: v is None,
    "web_search_options": lambda v: v is None,
    # vLLM's extras this server does not do: refused, not ignored (it takes top_k, min_p,
    # repetition_penalty and continue_final_message)
    **{k: (lambda v: v in (None, "")) for k in _CONSTRAINTS},  # "": no constraint asked
    "prompt_logprobs": lambda v: v is None,
    "min_tokens": lambda v: v in (None, 0),
    "ignore_eos": lambda v: v in (None, False),
    "stop_token_ids": lambda v: v in (None, []),
    "echo": lambda v: v in (None, False),
    "include_stop_str_in_output": lambda v: v in (None, False),
    "best_of": lambda v: v in (None, 1),
    "use_beam_search": lambda v: v in (None, False),
}


def notices_field(result: dict) -> dict:
    """A chat job's notices (an answer the context shortened, turns it let go, a video given to a model
    not trained on videos) as the answer's ``notices`` field, absent when there are none: a field
    OpenAI's clients and SDKs ignore and keep (as vLLM's and llama.cpp's own fields beside OpenAI's), in
    the body so that a stream has it too (its headers go before the notices are known)."""
    return {"notices": list(result["notices"])} if result.get("notices") else {}


def _stop_strings(body: dict) -> tuple[str, ...]:
    """OpenAI's ``stop``: null, a string or a list of non-empty strings, up to the 16 the library
    takes (OpenAI takes 4; vLLM, llama.cpp and Ollama any number, and clients send them uncapped:
    Continue caps its list for OpenAI's, Groq's, Azure's and Jan's servers only)."""
    from ..options import MAX_STOP_CHARS, MAX_STOP_STRINGS

    value = body.get("stop")
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(v, str) for v in items):
        raise ApiError(400, "'stop' must be a string or a list of strings", "invalid_type", "stop")
    if len(items) > MAX_STOP_STRINGS:
        raise ApiError(400, f"'stop' may hold at most {MAX_STOP_STRINGS} strings, got {len(items)}", "invalid_value",
                       "stop")
    if any(not v or len(v) > MAX_STOP_CHARS for v in items):
        raise ApiError(400, f"each 'stop' string must be 1 to {MAX_STOP_CHARS} characters", "invalid_value",
                       "stop")
    return tuple(items)


def _unsupported_why(name: str) -> str:
    if name in _CONSTRAINTS:
        return "for JSON held to a schema, send response_format {\"type\": \"json_schema\", ...}"
    if name in _TOOL_FIELDS:
        return "the deprecated function calling is not served: send tools and tool_choice"
    return "Show-o2 answers in plain text"


#: OpenAI's rule for a ``json_schema`` format's ``name``
_SCHEMA_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


def _response_format(body: dict) -> tuple[dict | None, bool]:
    """OpenAI's ``response_format``: ``text`` (or null), ``json_object`` (any JSON object) or
    ``json_schema`` (``{"name", "schema", "strict"}``): (the answer's schema or None, strict). A
    schema structured output cannot hold is a 400 naming its place (:func:`~showo2_cli.structured.check_schema`)."""
    from ..structured import INSTALL_HINT, JSON_OBJECT, available, schema_grammar

    value = body.get("response_format")
    if value is None or value == "text":
        return None, True
    if not isinstance(value, dict):
        raise ApiError(400, "'response_format' must be an object", "invalid_type", "response_format")
    kind = value.get("type")
    if kind == "text":
        return None, True
    if kind in ("json_object", "json_schema") and not available():
        raise ApiError(400, f"'response_format' {kind} is not supported by this server (structured output needs "
                            f"xgrammar on the server: {INSTALL_HINT})", "unsupported_parameter", "response_format")
    if kind == "json_object":
        return dict(JSON_OBJECT), False
    if kind != "json_schema":
        raise ApiError(400, f"response_format.type must be text, json_object or json_schema, got {short(kind)}",
                       "invalid_value", "response_format.type")
    spec = value.get("json_schema")
    if not isinstance(spec, dict) or not isinstance(spec.get("schema", {}), dict):
        raise ApiError(400, "response_format.json_schema must be an object with a 'schema' object",
                       "invalid_value", "response_format.json_schema")
    name = spec.get("name")  # OpenAI's and vLLM's rule: a named schema (what a response echoes)
    if not isinstance(name, str) or not _SCHEMA_NAME.fullmatch(name):
        got = "none" if name is None else given(short(name) if isinstance(name, str) else name)
        raise ApiError(400, "response_format.json_schema.name is required: a string of 1 to 64 letters, digits, "
                            f"'_' or '-', got {got}", "invalid_value", "response_format.json_schema.name")
    if not isinstance(spec.get("description", ""), str):
        raise ApiError(400, "response_format.json_schema.description must be a string", "invalid_type",
                       "response_format.json_schema.description")
    strict = spec.get("strict")
    if strict is not None and not isinstance(strict, bool):
        raise ApiError(400, "response_format.json_schema.strict must be true or false", "invalid_type",
                       "response_format.json_schema.strict")
    schema = spec.get("schema", {})  # OpenAI: no schema is any JSON value; here an object
    schema = schema or dict(JSON_OBJECT)
    try:  # converted here, not in the queue: a schema xgrammar refuses is this request's 400 too
        schema_grammar(schema, bool(strict))
    except Showo2Error as e:
        raise ApiError(400, f"response_format.json_schema.schema: {e}", "invalid_value",
                       "response_format.json_schema.schema") from None
    return schema, bool(strict)


def parse_chat(body: dict, config: ServerConfig, tool_shape: str = "chat") -> ChatPlan:
    """A chat request as the plan that runs it (a 4xx naming the field); ``tool_shape``: how its
    ``tools`` are written (``responses``: the Responses API's, whose request this is)."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "'messages' must be a non-empty list", "invalid_value", "messages")
    if len(messages) > config.max_messages:
        raise ApiError(422, f"{len(messages)} messages is over this server's limit of {config.max_messages}",
                       "over_limit", "messages")
    n = number_field(body, "n", 1, 128, 1, integer=True)
    if n != 1:
        raise ApiError(400, "'n' must be 1 on this server", "invalid_value", "n")
    tools = read_tools(body, tool_shape)  # (tool_choice "none": the tools are listed, none is called)
    if body.get("function_call") == "none" and body.get("functions") is not None:
        check_listed_tools(body["functions"], "functions", "functions")
        body = {**body, "functions": None}
    for name, off in _UNSUPPORTED_CHAT.items():
        if name in body and not off(body[name]):
            raise ApiError(400, f"'{name}' is not supported by this server ({_unsupported_why(name)})",
                           "unsupported_parameter", name)
    stop = _stop_strings(body)
    json_schema, strict_schema = _response_format(body)
    if tools is not None and json_schema is not None and tools.choice != "auto":
        raise ApiError(400, "'response_format' cannot hold a reply that must be a tool call (tool_choice "
                            f"{tools.choice}): send one of them", "unsupported_parameter", "response_format")
    calls_held = {"schema": hold_calls(tools, tool_shape), "parallel": tools.parallel} if tools and json_schema else None
    held = "a response_format" if json_schema is not None else "tool_choice" if tools and tools.schema() else None
    json_schema, strict_schema = (tools.schema(), True) if held == "tool_choice" else (json_schema, strict_schema)
    if held and stop:
        raise ApiError(400, f"'stop' cannot end a reply held to {held} (it would cut the JSON)",
                       "invalid_value", "stop")
    # max_completion_tokens replaces the deprecated max_tokens; a null one does not hide the other
    key = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    max_tokens = body.get(key)
    given = max_tokens is not None
    # without one, the server's default, within its limit (--max-tokens 100 generated 300 tokens)
    max_tokens = number_field({key: max_tokens}, key, 1, 1_000_000, min(config.default_max_tokens, config.max_tokens),
                              integer=True, limit=config.max_tokens)
    temperature = number_field(body, "temperature", 0, 2, 0.0)
    top_p = number_field(body, "top_p", 0, 1, None)
    if top_p == 0:  # only the most likely token is left (OpenAI allows 0): greedy decoding
        temperature, top_p = 0.0, None
    seed = seed_field(body)
    frequency = number_field(body, "frequency_penalty", -2, 2, 0.0)
    presence = number_field(body, "presence_penalty", -2, 2, 0.0)
    repetition = number_field(body, "repetition_penalty", 0, 10, None)
    if repetition is not None and repetition <= 0:
        raise ApiError(400, "'repetition_penalty' must be greater than 0", "invalid_value", "repetition_penalty")
    repetition = None if repetition is None else float(repetition)  # transformers wants a float
    top_k = number_field(body, "top_k", -1, 10_000_000, None, integer=True)
    top_k = int(top_k) if top_k is not None and top_k > 0 else None  # vLLM: -1 (or 0) is off
    min_p = number_field(body, "min_p", 0, 1, None)
    min_p = float(min_p) if min_p else None
    optional_string(body.get("user"), "user")
    bias = logit_bias_field(body.get("logit_bias"))
    stream = body.get("stream")
    stream = False if stream is None else stream  # OpenAI: "boolean or null"
    if not isinstance(stream, bool):
        raise ApiError(400, "'stream' must be true or false", "invalid_type", "stream")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise ApiError(400, "'stream_options' must be an object", "invalid_type", "stream_options")
    if body.get("stream_options") is not None and not stream:  # OpenAI's and vLLM's rule
        raise ApiError(400, "'stream_options' is only allowed when 'stream' is true", "invalid_value",
                       "stream_options")
    if options.get("include_usage") is not None and not isinstance(options.get("include_usage"), bool):
        raise ApiError(400, "'stream_options.include_usage' must be true or false", "invalid_type",
                       "stream_options.include_usage")
    system_parts: list[str] = []
    turns: list[PlannedTurn] = []
    images = 0
    role = None
    calling = False  # the last message called tools (or gave a result of its calls): results may follow
    call_ids: set[str] = set()  # the ids of the last assistant reply's calls, which its results name
    answered_ids: set[str] = set()  # those of them answered so far by a tool message
    for i, msg in enumerate(messages):
        param = f"messages[{i}]"
        if not isinstance(msg, dict):
            raise ApiError(400, f"{param} must be an object", "invalid_value", param)
        if role not in ("system", "developer"):  # a system message between two replies does not part them
            prev_role = role
        role = msg.get("role")
        content = msg.get("content")
        optional_string(msg.get("name"), f"{param}.name")
        if role == "tool":  # a tool's result: a user turn, as Qwen2.5's template feeds it
            optional_string(answers := msg.get("tool_call_id"), f"{param}.tool_call_id")
            if not calling:  # (OpenAI's rule)
                raise ApiError(400, f"{param}: a tool message must answer the tool calls of the assistant message "
                                    "before it", "invalid_value", param)
            if answers is not None and call_ids and answers not in call_ids:  # (OpenAI's rule; none: by order)
                raise ApiError(400, f"{param}.tool_call_id {short(answers, 64)!r} is not the id of a tool call of "
                                    "the assistant message before it", "invalid_value", f"{param}.tool_call_id")
            if answers is not None and answers in answered_ids:  # one call, two results (OpenAI refuses it too)
                raise ApiError(400, f"{param}.tool_call_id {short(answers, 64)!r} names a call an earlier tool "
                                    "message answered: send one result a call", "invalid_value",
                               f"{param}.tool_call_id")
            answered_ids.add(answers)
            role, content = "user", result_text(message_text(content, "a tool message's", param))
        if msg.get("role") not in ("system", "developer"):
            answered = msg.get("role") == "tool" or msg.get("tool_calls")
            if calling and turns and turns[-1].answer is not None and not answered:
                raise ApiError(400, f"{param}: the tool calls before it need their results first (tool messages)",
                               "invalid_value", param)  # (OpenAI's rule)
            calling = msg.get("role") == "tool" or bool(msg.get("tool_calls"))
        if role in ("system", "developer"):
            system_parts.append(message_text(content, f"a {role} message's", param))
        elif role == "user":
            if msg.get("images") not in (None, []):  # Ollama's own API's field: its images would be dropped
                raise ApiError(400, f"{param}.images: Ollama's field is not read here: send each image as an "
                                    "image_url part of the content (data:image/png;base64,...)",
                               "unsupported_parameter", f"{param}.images")
            text_parts, pics = [], []
            if isinstance(content, str):
                text_parts.append(content)
            elif isinstance(content, list):
                for j, part in enumerate(content):
                    p = f"{param}.content[{j}]"
                    kind = part.get("type") if isinstance(part, dict) else None
                    text = text_part(part, p)
                    if text is not None:
                        text_parts.append(text)
                    elif kind in ("image_url", "video_url"):  # video_url: vLLM's part for a video
                        ref = part.get(kind)
                        url = ref.get("url") if isinstance(ref, dict) else ref
                        upload = decode_data_url(url, p)
                        if kind == "video_url":  # it must hold a video
                            if upload.declared == "image":
                                raise ApiError(400, f"{p}: a video_url part holds an image data URL (send it as "
                                                    "an image_url part)", "invalid_image_url", p)
                            upload = upload._replace(declared="video", expected="a video_url part must hold a video")
                        pics.append(upload)
                    else:
                        raise ApiError(400, f"{p}: unsupported content part (use text, image_url or video_url)",
                                       "invalid_content", p)
            else:
                raise ApiError(400, f"{param}: content must be a string or a list of parts",
                               "invalid_content", param)
            images += len(pics)
            if images > config.max_images:
                raise ApiError(422, f"more than {config.max_images} images in one request", "over_limit",
                               param)
            text = "\n".join(t for t in text_parts if t.strip())
            if turns and turns[-1].answer is None:  # consecutive user messages: one turn
                last = turns[-1]
                last.question = "\n".join(t for t in (last.question, text) if t)
                last.images += pics
            else:
                turns.append(PlannedTurn(text, pics))
        elif role == "assistant":
            for field, what in (("function_call", "the deprecated function calls are not supported (send "
                                                  "tool_calls)"), ("audio", "audio replies are not supported")):
                if msg.get(field) not in (None, []):  # dropped silently, the history would lie
                    raise ApiError(400, f"{param}.{field}: {what} by this server", "unsupported_parameter",
                                   f"{param}.{field}")
            text = message_text(content, "an assistant message's", param, refusal=True)
            calls = calls_text(msg["tool_calls"], f"{param}.tool_calls") if msg.get("tool_calls") else ""
            ids = {c["id"] for c in msg.get("tool_calls") or () if isinstance(c.get("id"), str)}
            call_ids = call_ids | ids if prev_role == "assistant" else ids  # (one reply in parts: all its calls)
            answered_ids = answered_ids if prev_role == "assistant" else set()  # (a new reply's calls: none answered yet)
            text = "\n".join(t for t in (text, calls) if t)
            if turns and turns[-1].answer is not None and prev_role == "assistant":  # one reply in parts
                turns[-1].answer = "\n".join(t for t in (turns[-1].answer, text) if t)
            elif not turns:  # the assistant opens the conversation (a greeting); an empty one is nothing
                if text.strip():
                    turns.append(PlannedTurn(None, [], answer=text))
            elif turns[-1].answer is not None:
                raise ApiError(400, f"{param}: an assistant message must follow a user message (Show-o2's chat "
                                    "template has no turn for it)", "invalid_value", param)
            else:
                turns[-1].answer = text
        else:
            raise ApiError(400, f"{param}: unsupported role {str(role)[:20]!r} (use system or developer, user, "
                                "assistant, tool)",
                           "invalid_value", param)
    last_role = next((m.get("role") for m in reversed(messages) if m.get("role") not in ("system", "developer")),
                     None)
    if turns and turns[-1].question is not None and turns[-1].answer is not None and last_role == "assistant":
        # a closing assistant message is a reply to continue (Ollama's and vLLM's continue_final_message)
        if body.get("continue_final_message") is False or body.get("add_generation_prompt") is True:
            raise ApiError(400, "Show-o2's chat template cannot open a second assistant turn: a request that ends "
                                "with an assistant message continues it", "invalid_value", "messages")
        turns[-1].prefix, turns[-1].answer = turns[-1].answer, None
        if json_schema is not None:
            raise ApiError(400, f"{held if held == 'tool_choice' else 'a response_format schema'} holds a whole "
                                "reply: it cannot continue a final assistant message", "invalid_value",
                           "tool_choice" if held == "tool_choice" else "response_format")
        k = max(i for i, m in enumerate(messages) if m.get("role") == "assistant")
        if messages[k].get("tool_calls"):
            raise ApiError(400, f"messages[{k}]: its tool calls' results must follow, as tool messages",
                           "invalid_value", f"messages[{k}]")
    if not turns or turns[-1].answer is not None:
        raise ApiError(400, "the last message must be a user message, or an assistant reply to continue after one",
                       "invalid_value", "messages")
    for t in turns:
        if t.question is not None and not t.question.strip():
            if not t.images:
                raise ApiError(400, "a user message needs some text or an image", "invalid_value", "messages")
            t.question = "Describe the image."
    system = "\n".join(system_parts) if system_parts else None
    if tools is not None:  # (a system message's text, or Show-o2's default, then the tools)
        from ..dialogue import DEFAULT_SYSTEM

        system = tools.system(DEFAULT_SYSTEM if system is None else system)
        system_parts = [system]
    chars = sum(len(plain_text(t.question or "")) + len(plain_text(t.answer or "")) + len(t.prefix) for t in turns) + \
        sum(len(plain_text(x)) for x in system_parts)
    if chars > config.max_text_chars:  # refused before any tokenizing: it cannot fit a context
        raise ApiError(400, f"This model's maximum context length is exceeded: the messages hold {chars} "
                            f"characters, more than this server's limit of {config.max_text_chars}. Please reduce "
                            "the length of the messages.", "context_length_exceeded", "messages")
    return ChatPlan(system, turns, int(max_tokens), float(temperature), top_p, seed, stream,
                    bool(options.get("include_usage", False)), stop, float(frequency), float(presence), bias,
                    repetition, top_k, min_p, given, json_schema, strict_schema, tools=tools, tool_calls=calls_held)


def origins_from(options: list[str] | None) -> tuple[str, ...]:
    """The CORS origins: ``--allow-origin`` values, else ``$SHOWO2_ORIGINS`` (comma-separated);
    each ``*``, ``null`` (pages from files, sandboxed frames) or ``scheme://host[:port]`` (a
    browser's ``Origin``: no path, no trailing slash; ``app://``, ``tauri://`` for desktop apps)."""
    from ..errors import UsageError, short

    given, where = list(options or []), "--allow-origin"
    if not given:  # a bad value there is named as the variable, not as an option the user did not give
        given, where = [o for o in os.environ.get(ORIGINS_ENV, "").split(",") if o.strip()], ORIGINS_ENV
    origins = []
    for origin in (o.strip() for o in given):
        if not is_origin(origin):
            raise UsageError(f"{where} must be *, null or scheme://host[:port] (no path), got '{short(origin)}'")
        origins.append(origin.lower() if origin != "*" else origin)
    return tuple(dict.fromkeys(origins))


def api_key_from(option: str | None) -> str | None:
    """The API key (``--api-key``, else ``$SHOWO2_API_KEY``; empty: none), spaces around it
    dropped as they are from the client's header. It must be what a client can send in
    ``Authorization: Bearer KEY``: printable ASCII without spaces (a key holding other bytes, or
    only spaces, started a server that answered every request 500 or 401)."""
    from ..errors import UsageError

    where = "--api-key" if option is not None else API_KEY_ENV
    key = option if option is not None else os.environ.get(API_KEY_ENV)
    if not key:
        return None
    key = key.strip()
    if not is_bearer_token(key):
        raise UsageError(f"{where} must be printable ASCII without spaces (what a client sends as "
                         "'Authorization: Bearer KEY')" + ("" if key else ", not blank"))
    return key
