"""What a request may ask of ``showo2 serve``: the server limits, the OpenAI error shape, and the
parsing and checking of chat and image requests into plans (no model here)."""

from __future__ import annotations

import base64
import binascii
import json
import logging
import math
import os
import re
from dataclasses import dataclass, field

from ..errors import (
    ContextTooLong,
    InputError,
    ModelError,
    ResourceError,
    Showo2Error,
    UsageError,
    is_out_of_memory,
    short,
)

try:  # module level: FastAPI resolves the handlers' (string) annotations in these globals
    from fastapi import Request
except ImportError:  # pragma: no cover - serve checks for FastAPI before it gets here
    Request = None

log = logging.getLogger("showo2.serve")


#: Environment variable holding the API key when ``--api-key`` is not given.
API_KEY_ENV = "SHOWO2_API_KEY"
ORIGINS_ENV = "SHOWO2_ORIGINS"  # comma-separated browser origins allowed to call the API (CORS)


@dataclass
class ServerConfig:
    model_id: str = "demo"
    api_key: str | None = None
    max_queue: int = 16  # requests waiting behind the running one
    max_body_bytes: int = 20 * 1024 * 1024
    max_image_pixels: int = 4096 * 4096  # per input image
    max_images: int = 8  # input images per chat request
    max_messages: int = 256
    default_max_tokens: int = 300
    max_tokens: int = 2048
    max_n: int = 4
    max_steps: int = 200
    max_size: int = 1024  # generated image side, pixels
    max_text_chars: int = 262_144  # characters of text in one chat request (32 a token of an 8k context)
    allow_origins: tuple[str, ...] = ()  # browser origins allowed by CORS ("*": any); none: no CORS


class ApiError(Exception):
    """A request the server refuses: its HTTP status and the OpenAI error fields."""

    def __init__(self, status: int, message: str, code: str | None = None, param: str | None = None,
                 type_: str | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param
        self.type = type_ or ("server_error" if status >= 500 else "invalid_request_error")

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def api_error_of(exc: BaseException) -> ApiError:
    """The HTTP form of a library error (one line) or of a bug (500, details in the log only)."""
    if isinstance(exc, ApiError):
        return exc
    from ..dialogue import Cancelled

    message = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, Cancelled):
        return ApiError(499, "the request was cancelled", "cancelled")
    if isinstance(exc, ResourceError):
        return ApiError(422, message, "too_large")
    if isinstance(exc, InputError):
        return ApiError(400, message, "invalid_input")
    if isinstance(exc, ContextTooLong):  # the code OpenAI clients look for before trimming a history
        return ApiError(400, message, "context_length_exceeded", "messages")
    if isinstance(exc, UsageError):
        return ApiError(400, message, "invalid_value")
    if isinstance(exc, ModelError):
        return ApiError(400, message, "unsupported")
    if is_out_of_memory(exc):
        return ApiError(500, "out of memory on the server", "out_of_memory")
    if isinstance(exc, Showo2Error):
        return ApiError(500, message, "server_error")
    log.error("internal error: %s: %s", type(exc).__name__, message, exc_info=exc)
    return ApiError(500, f"internal error ({type(exc).__name__})", "internal_error")


# ---- the worker ---------------------------------------------------------------------------------


# ---- request parsing ------------------------------------------------------------------------------

def _reject_constant(name: str):
    raise ValueError(f"{name} is not a number JSON allows")


async def read_json(request, limit: int) -> dict:
    """The request body as a JSON object: 413 beyond ``limit`` bytes, 400 when not a JSON object."""
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise ApiError(415, f"Content-Encoding '{short(encoding, 20)}' is not accepted: send the JSON body "
                            "uncompressed", "unsupported_content_encoding")
    length = request.headers.get("content-length")
    if length is not None:
        try:
            declared = int(length)
        except ValueError:
            raise ApiError(400, "bad Content-Length header", "invalid_request") from None
        if declared > limit:
            raise ApiError(413, f"request body of {declared} bytes is larger than the limit of {limit}",
                           "request_too_large")
    from starlette.requests import ClientDisconnect

    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise ApiError(413, f"request body is larger than the limit of {limit} bytes",
                               "request_too_large")
            chunks.append(chunk)
    except ClientDisconnect:  # the client went away (or stopped sending) before its body ended
        raise ApiError(400, "the request body ended early (the client stopped sending)",
                       "incomplete_body") from None
    raw = b"".join(chunks)
    if not raw.strip():
        raise ApiError(400, "the request body is empty: send a JSON object", "invalid_json")
    import asyncio

    return await asyncio.to_thread(parse_body, raw)  # a large body is parsed off the event loop


#: JSON values (counted by their separators) one request body may hold: a chat or image request
#: holds a few thousand at most; millions would take seconds to parse while holding the GIL
MAX_JSON_VALUES = 200_000
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def parse_body(raw: bytes) -> dict:
    """A request body's bytes as a JSON object, or the one :class:`ApiError` saying why not."""
    values = raw.count(b",") + raw.count(b"[") + raw.count(b"{")
    if values > MAX_JSON_VALUES:  # counted at C speed, before parsing
        raise ApiError(413, f"the request body holds more than {MAX_JSON_VALUES} JSON values", "request_too_large")
    try:
        data = json.loads(raw, parse_constant=_reject_constant)
    except UnicodeDecodeError:
        raise ApiError(400, "the request body is not UTF-8 JSON", "invalid_json") from None
    except (ValueError, RecursionError) as e:
        detail = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        raise ApiError(400, f"the request body is not valid JSON: {detail}", "invalid_json") from None
    if not isinstance(data, dict):
        raise ApiError(400, "the request body must be a JSON object", "invalid_json")
    where = _invalid_text(data) if _SURROGATE_ESCAPE.search(raw) else None  # only an escape makes one
    if where is not None:
        where = short(where, 80)  # a deep path would fill the message
        raise ApiError(400, f"{where or 'the request'} holds text that is not valid Unicode (a lone "
                            "surrogate \\ud800-\\udfff escape)", "invalid_json", where or None)
    return data


def _invalid_text(value, where: str = "") -> str | None:
    """Where a JSON value holds a string (or key) that cannot be UTF-8 encoded, e.g. a lone
    surrogate from a ``"\\ud800"`` escape, which JSON allows and no tokenizer or reply can take."""
    stack = [(value, where)]
    while stack:
        item, at = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return at
        elif isinstance(item, dict):
            for k, v in item.items():
                try:
                    k.encode("utf-8")
                except UnicodeEncodeError:
                    return at
                stack.append((v, f"{at}.{k}" if at else k))
        elif isinstance(item, list):
            stack.extend((v, f"{at}[{i}]") for i, v in enumerate(item))
    return None


def _number(body: dict, key: str, low: float, high: float, default=None, integer: bool = False,
            limit: float | None = None, limit_what: str = ""):
    """A field that must be a number in [low, high] (400 otherwise); over ``limit``: 422."""
    value = body.get(key, default)
    if value is None:
        return default
    if integer and isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        value = int(value)  # 3.0 is how some JSON writers send 3 (vLLM's pydantic takes it too)
    kind = "an integer" if integer else "a number"
    wrong_type = isinstance(value, bool) or not isinstance(value, int if integer else (int, float))
    if wrong_type:
        raise ApiError(400, f"'{key}' must be {kind}", "invalid_type", key)
    # a float may be inf/nan (from 1e999); an int may be too large for a float, so compare as is
    if (isinstance(value, float) and not math.isfinite(value)) or not low <= value <= high:
        raise ApiError(400, f"'{key}' must be {kind} between {low:g} and {high:g}, got {short(value, 24)}",
                       "invalid_value", key)
    if limit is not None and value > limit:
        raise ApiError(422, f"'{key}' of {value} is over this server's limit of {limit:g}{limit_what}",
                       "over_limit", key)
    return value


MAX_LOGIT_BIAS = 300  # OpenAI's limit on logit_bias entries


def _logit_bias(value) -> dict[int, float] | None:
    """OpenAI's ``logit_bias``: a map of token ids (as strings) to values from -100 to 100."""
    if value is None or value == {}:
        return None
    if not isinstance(value, dict):
        raise ApiError(400, "'logit_bias' must be an object mapping token ids to numbers", "invalid_type",
                       "logit_bias")
    if len(value) > MAX_LOGIT_BIAS:
        raise ApiError(400, f"'logit_bias' has {len(value)} entries (at most {MAX_LOGIT_BIAS})", "invalid_value",
                       "logit_bias")
    out = {}
    for key, bias in value.items():
        if not (isinstance(key, str) and key.isascii() and key.isdigit() and len(key) <= 10):
            raise ApiError(400, f"'logit_bias' keys must be token ids, got {short(key, 24)!r}", "invalid_value",
                           "logit_bias")
        if int(key) in out:
            raise ApiError(400, f"'logit_bias' names token {int(key)} twice", "invalid_value", "logit_bias")
        if bias is None:
            raise ApiError(400, f"'logit_bias' values must be numbers, got null for token {int(key)}",
                           "invalid_type", "logit_bias")
        out[int(key)] = float(_number({"logit_bias": bias}, "logit_bias", -100, 100))
    return out


def _seed(body: dict) -> int | None:
    """``seed``: 0 to 2^63-1, or -1 / null for a random one (the habit of many clients)."""
    seed = body.get("seed")
    if isinstance(seed, float) and seed.is_integer() and abs(seed) < 2**53:
        seed = int(seed)
        body = {**body, "seed": seed}
    if seed == -1 and not isinstance(seed, bool):
        return None
    if isinstance(seed, int) and not isinstance(seed, bool) and not 0 <= seed < 2**63:
        raise ApiError(400, "'seed' must be an integer from 0 to 2^63-1, or -1 for a random one", "invalid_value",
                       "seed")
    return _number(body, "seed", 0, 2**63 - 1, None, integer=True)


def _text(value, what: str, param: str) -> str:
    """Message content: a string or a list of text parts (images are refused here)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        out = []
        for part in value:
            if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str):
                out.append(part["text"])
            else:
                raise ApiError(400, f"{what} content may only hold text parts", "invalid_content", param)
        return "\n".join(out)
    raise ApiError(400, f"{what} content must be a string or a list of parts", "invalid_content", param)


_DATA_URL = re.compile(r"data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(?:;[\w.+-]+(?:=[^;,]*)?)*),",
                       re.ASCII | re.IGNORECASE)
_BASE64_SPACE = re.compile(r"[ \t\r\n\f\v]+")
_URLSAFE = str.maketrans("-_", "+/")


def decode_data_url(url: str, param: str) -> bytes:
    if not isinstance(url, str):
        raise ApiError(400, "an image_url must be a string", "invalid_image_url", param)
    m = _DATA_URL.match(url)
    if m is None:
        if re.match(r"https?://", url, re.IGNORECASE):
            raise ApiError(400, "only data: URLs are accepted (this server never fetches URLs)",
                           "unsupported_image_url", param)
        raise ApiError(400, "an image_url must be a data: URL (data:image/png;base64,...)",
                       "invalid_image_url", param)
    payload = url[m.end():]
    if ";base64" not in m.group("params").lower():
        raise ApiError(400, "an image data URL must be base64-encoded (;base64,)", "invalid_image_url", param)
    # what encoders write: MIME line breaks (base64.encodebytes), the URL-safe alphabet, no padding
    payload = _BASE64_SPACE.sub("", payload).translate(_URLSAFE)
    payload += "=" * (-len(payload) % 4) if "=" not in payload else ""
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, "the image data URL is not valid base64", "invalid_image_url", param) from None
    if not data:
        raise ApiError(400, "the image data URL holds no data", "invalid_image_url", param)
    return data


@dataclass
class PlannedTurn:
    question: str | None  # None: an assistant message that opens the conversation
    images: list[bytes] = field(default_factory=list)
    answer: str | None = None
    image_params: list[str] = field(default_factory=list)  # where each image is in the request
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


#: OpenAI chat fields that would change the reply and that this server cannot honour: refused
#: (400 ``unsupported_parameter``) unless they hold the value meaning "off"
_UNSUPPORTED_CHAT = {
    "logprobs": lambda v: v in (None, False),
    "top_logprobs": lambda v: v in (None, 0),
    "tools": lambda v: v in (None, []),
    "functions": lambda v: v in (None, []),
    "tool_choice": lambda v: v in (None, "none", "auto"),
    "function_call": lambda v: v in (None, "none", "auto"),
    "response_format": lambda v: v is None or v == "text" or (isinstance(v, dict) and v.get("type") == "text"),
    "audio": lambda v: v is None,
    "modalities": lambda v: v in (None, ["text"]),
    "prediction": lambda v: v is None,
    # vLLM's extras this server does not do: refused, not ignored (it takes top_k, min_p,
    # repetition_penalty and continue_final_message)
    **{k: (lambda v: v is None) for k in ("guided_json", "guided_regex", "guided_choice", "guided_grammar",
                                          "guided_decoding_backend", "structured_outputs", "prompt_logprobs")},
    "min_tokens": lambda v: v in (None, 0),
    "ignore_eos": lambda v: v in (None, False),
    "stop_token_ids": lambda v: v in (None, []),
    "echo": lambda v: v in (None, False),
    "include_stop_str_in_output": lambda v: v in (None, False),
    "best_of": lambda v: v in (None, 1),
    "use_beam_search": lambda v: v in (None, False),
}


def _stop_strings(body: dict) -> tuple[str, ...]:
    """OpenAI's ``stop``: null, a string or a list of up to 4 non-empty strings."""
    from ..options import MAX_STOP_CHARS

    value = body.get("stop")
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(v, str) for v in items):
        raise ApiError(400, "'stop' must be a string or a list of strings", "invalid_type", "stop")
    if len(items) > 4:
        raise ApiError(400, f"'stop' may hold at most 4 strings, got {len(items)}", "invalid_value", "stop")
    if any(not v or len(v) > MAX_STOP_CHARS for v in items):
        raise ApiError(400, f"each 'stop' string must be 1 to {MAX_STOP_CHARS} characters", "invalid_value",
                       "stop")
    return tuple(items)


def parse_chat(body: dict, config: ServerConfig) -> ChatPlan:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "'messages' must be a non-empty list", "invalid_value", "messages")
    if len(messages) > config.max_messages:
        raise ApiError(422, f"{len(messages)} messages is over this server's limit of {config.max_messages}",
                       "over_limit", "messages")
    n = _number(body, "n", 1, 128, 1, integer=True)
    if n != 1:
        raise ApiError(400, "'n' must be 1 on this server", "invalid_value", "n")
    for name, off in _UNSUPPORTED_CHAT.items():
        if name in body and not off(body[name]):
            raise ApiError(400, f"'{name}' is not supported by this server (Show-o2 answers in plain text)",
                           "unsupported_parameter", name)
    stop = _stop_strings(body)
    # max_completion_tokens replaces the deprecated max_tokens; a null one does not hide the other
    key = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    max_tokens = body.get(key)
    given = max_tokens is not None
    max_tokens = _number({key: max_tokens}, key, 1, 1_000_000, config.default_max_tokens, integer=True,
                         limit=config.max_tokens)
    temperature = _number(body, "temperature", 0, 2, 0.0)
    top_p = _number(body, "top_p", 0, 1, None)
    if top_p == 0:  # only the most likely token is left (OpenAI allows 0): greedy decoding
        temperature, top_p = 0.0, None
    seed = _seed(body)
    frequency = _number(body, "frequency_penalty", -2, 2, 0.0)
    presence = _number(body, "presence_penalty", -2, 2, 0.0)
    repetition = _number(body, "repetition_penalty", 0, 10, None)
    if repetition is not None and repetition <= 0:
        raise ApiError(400, "'repetition_penalty' must be greater than 0", "invalid_value", "repetition_penalty")
    repetition = None if repetition is None else float(repetition)  # transformers wants a float
    top_k = _number(body, "top_k", -1, 10_000_000, None, integer=True)
    top_k = int(top_k) if top_k is not None and top_k > 0 else None  # vLLM: -1 (or 0) is off
    min_p = _number(body, "min_p", 0, 1, None)
    min_p = float(min_p) if min_p else None
    if body.get("user") is not None and not isinstance(body.get("user"), str):
        raise ApiError(400, "'user' must be a string", "invalid_type", "user")
    bias = _logit_bias(body.get("logit_bias"))
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
    for i, msg in enumerate(messages):
        param = f"messages[{i}]"
        if not isinstance(msg, dict):
            raise ApiError(400, f"{param} must be an object", "invalid_value", param)
        if role not in ("system", "developer"):  # a system message between two replies does not part them
            prev_role = role
        role = msg.get("role")
        content = msg.get("content")
        if role in ("system", "developer"):
            system_parts.append(_text(content, f"a {role} message's", param))
        elif role == "user":
            text_parts, pics, where = [], [], []
            if isinstance(content, str):
                text_parts.append(content)
            elif isinstance(content, list):
                for j, part in enumerate(content):
                    p = f"{param}.content[{j}]"
                    kind = part.get("type") if isinstance(part, dict) else None
                    if kind == "text" and isinstance(part.get("text"), str):
                        text_parts.append(part["text"])
                    elif kind == "image_url":
                        ref = part.get("image_url")
                        url = ref.get("url") if isinstance(ref, dict) else ref
                        pics.append(decode_data_url(url, p))
                        where.append(p)
                    else:
                        raise ApiError(400, f"{p}: unsupported content part (use text or image_url)",
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
                last.image_params += where
            else:
                turns.append(PlannedTurn(text, pics, image_params=where))
        elif role == "assistant":
            text = _text(content, "an assistant message's", param)
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
            raise ApiError(400, f"{param}: unsupported role {str(role)[:20]!r} (use system, user, assistant)",
                           "invalid_value", param)
    last_role = next((m.get("role") for m in reversed(messages) if m.get("role") not in ("system", "developer")),
                     None)
    if turns and turns[-1].question is not None and turns[-1].answer is not None and last_role == "assistant":
        # a closing assistant message is a reply to continue (Ollama's and vLLM's continue_final_message)
        if body.get("continue_final_message") is False or body.get("add_generation_prompt") is True:
            raise ApiError(400, "Show-o2's chat template cannot open a second assistant turn: a request that ends "
                                "with an assistant message continues it", "invalid_value", "messages")
        turns[-1].prefix, turns[-1].answer = turns[-1].answer, None
    if not turns or turns[-1].answer is not None:
        raise ApiError(400, "the last message must be a user message, or an assistant reply to continue after one",
                       "invalid_value", "messages")
    for t in turns:
        if t.question is not None and not t.question.strip():
            if not t.images:
                raise ApiError(400, "a user message needs some text or an image", "invalid_value", "messages")
            t.question = "Describe the image."
    system = "\n".join(system_parts) if system_parts else None
    chars = sum(len(t.question or "") + len(t.answer or "") + len(t.prefix) for t in turns) + \
        sum(len(x) for x in system_parts)
    if chars > config.max_text_chars:  # refused before any tokenizing: it cannot fit a context
        raise ApiError(400, f"This model's maximum context length is exceeded: the messages hold {chars} "
                            f"characters, more than this server's limit of {config.max_text_chars}. Please reduce "
                            "the length of the messages.", "context_length_exceeded", "messages")
    return ChatPlan(system, turns, int(max_tokens), float(temperature), top_p, seed, stream,
                    bool(options.get("include_usage", False)), stop, float(frequency), float(presence), bias,
                    repetition, top_k, min_p, given)


@dataclass
class ImagePlan:
    prompt: str
    n: int
    size: tuple[int, int] | None
    seed: int | None
    steps: int | None
    guidance: float | None
    negative_prompt: str = ""
    output_format: str = "png"  # png, jpeg or webp (gpt-image-1's field)
    output_compression: int = 95  # jpeg/webp quality, 0-100


#: OpenAI image fields that do not change what this model makes: checked, then accepted
_IMAGE_CHOICES = {"quality": ("auto", "standard", "hd", "low", "medium", "high"), "style": ("vivid", "natural"),
                  "moderation": ("auto", "low"), "background": ("auto", "opaque")}


def parse_images(body: dict, config: ServerConfig, spec) -> ImagePlan:
    from ..options import MAX_PROMPT_CHARS

    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise ApiError(400, "'prompt' must be a non-empty string", "invalid_value", "prompt")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise ApiError(400, f"'prompt' is longer than {MAX_PROMPT_CHARS} characters", "invalid_value",
                       "prompt")
    n = _number(body, "n", 1, 128, 1, integer=True, limit=config.max_n)
    fmt = body.get("response_format") or "b64_json"
    if fmt != "b64_json":
        raise ApiError(400, "only response_format 'b64_json' is supported", "invalid_value",
                       "response_format")
    size = body.get("size")
    hw = None
    if size not in (None, "auto"):
        if not isinstance(size, str) or not re.fullmatch(r"\d{1,5}x\d{1,5}", size):
            raise ApiError(400, "'size' must be WIDTHxHEIGHT, e.g. '512x512'", "invalid_value", "size")
        w, h = (int(v) for v in size.split("x"))
        m = spec.latent_multiple
        if w <= 0 or h <= 0 or w % m or h % m:
            raise ApiError(400, f"'size' sides must be positive multiples of {m}, got {size}",
                           "invalid_value", "size")
        if max(w, h) > config.max_size:
            raise ApiError(422, f"'size' {size} is over this server's limit of {config.max_size} pixels "
                                "a side", "over_limit", "size")
        hw = (h, w)
    steps = _number(body, "steps", 2, 10000, None, integer=True, limit=config.max_steps)
    seed = _seed(body)
    guidance = _number(body, "guidance", 0, 100, None)
    negative = body.get("negative_prompt")
    if negative is None:
        negative = ""
    if not isinstance(negative, str) or len(negative) > MAX_PROMPT_CHARS:
        raise ApiError(400, f"'negative_prompt' must be a string of at most {MAX_PROMPT_CHARS} characters",
                       "invalid_value", "negative_prompt")
    for key, allowed in _IMAGE_CHOICES.items():
        if body.get(key) is not None and body.get(key) not in allowed:
            why = "this model draws opaque images only" if body.get(key) == "transparent" else \
                f"use one of {', '.join(allowed)}"
            raise ApiError(400, f"'{key}' {short(body.get(key))!r} is not supported: {why}", "invalid_value", key)
    for key in ("stream", "partial_images"):  # gpt-image-1's streaming: events this server does not send
        if body.get(key) not in (None, False, 0):
            raise ApiError(400, f"'{key}' is not supported by this server (the images come in one response)",
                           "unsupported_parameter", key)
    fmt = body.get("output_format")
    fmt = "png" if fmt is None else fmt
    if fmt not in ("png", "jpeg", "webp"):
        raise ApiError(400, "'output_format' must be png, jpeg or webp", "invalid_value", "output_format")
    compression = _number(body, "output_compression", 0, 100, 95, integer=True)
    return ImagePlan(prompt, int(n), hw, seed, steps, guidance, negative, fmt, int(compression))


def origins_from(options: list[str] | None) -> tuple[str, ...]:
    """The CORS origins: ``--allow-origin`` values, else ``$SHOWO2_ORIGINS`` (comma-separated);
    each ``*``, ``null`` (pages from files, sandboxed frames) or ``scheme://host[:port]`` (a
    browser's ``Origin``: no path, no trailing slash; ``app://``, ``tauri://`` for desktop apps)."""
    from ..errors import UsageError, short

    given = list(options or [])
    if not given:
        given = [o for o in os.environ.get(ORIGINS_ENV, "").split(",") if o.strip()]
    origins = []
    for origin in (o.strip() for o in given):
        if origin not in ("*", "null") and not re.fullmatch(r"[a-zA-Z][a-zA-Z0-9+.-]*://[^/\s?#]+", origin):
            raise UsageError(f"--allow-origin must be *, null or scheme://host[:port] (no path), got "
                             f"'{short(origin)}'")
        origins.append(origin.lower() if origin != "*" else origin)
    return tuple(dict.fromkeys(origins))


def api_key_from(option: str | None) -> str | None:
    key = option if option is not None else os.environ.get(API_KEY_ENV)
    return key or None
