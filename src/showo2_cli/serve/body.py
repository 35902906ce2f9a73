"""The body of a request to ``showo2 serve``: read within its limits, parsed as JSON off the
event loop, and its fields checked one by one (numbers, seeds, logit biases, message text, image
data URLs), each problem an OpenAI-shaped :class:`~showo2_cli.serve.errors.ApiError`."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextvars
import functools
import json
import math
import os
import re
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import NamedTuple

from ..errors import json_problem, short
from .errors import ApiError, shutting_down


def no_constant(name: str):
    """``json.loads``' ``parse_constant``: NaN and Infinity, which Python reads and JSON does not have, refused."""
    raise ValueError(f"{name} is not a number JSON allows")


#: the slowest average pace (bytes a second) a request body may come at, after ``timeout`` seconds
#: of grace: a client trickling a body (or never sending the bytes its Content-Length declares)
#: would otherwise hold its connection for ever
BODY_MIN_RATE = 8192


#: request bodies of the largest size allowed that may be read and parsed at once: each costs
#: about three times its size while it is parsed, and the queue's limit comes only after that
BODIES_AT_ONCE = 4
#: a body this small is always read (a chat without images): large ones cannot crowd it out
SMALL_BODY = 64 * 1024


class BodyBudget:
    """The bytes of request bodies being read and parsed at once, at most ``total`` (a request
    that would go over gets 429, unless it is the only one or small): thirty clients sending
    19 MiB each at once took the server from 0.9 to 2.6 GiB, however short its queue."""

    def __init__(self, total: int):
        self.total, self.used, self.rejected = total, 0, 0

    @contextmanager
    def hold(self, size: int):
        if size <= SMALL_BODY:
            yield
            return
        if self.used and self.used + size > self.total:
            self.rejected += 1
            raise ApiError(429, f"the server is busy reading other large requests ({self.used / 2**20:.1f} MiB): "
                                "retry later", "server_busy", type_="rate_limit_error")
        self.used += size
        try:
            yield
        finally:
            self.used -= size


async def read_json(request, limit: int, timeout: float = 15.0, budget: BodyBudget | None = None) -> dict:
    """The request body as a JSON object: 413 beyond ``limit`` bytes, 400 when not a JSON object,
    408 when its bytes come slower than ``timeout`` seconds plus one for each ``BODY_MIN_RATE``,
    429 when ``budget`` has no room for it (its Content-Length, or ``limit`` without one)."""
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
    if budget is None:
        return await _read_json(request, limit, timeout)
    with budget.hold(max(declared, 0) if length is not None else limit):
        return await _read_json(request, limit, timeout)


async def _read_json(request, limit: int, timeout: float) -> dict:
    from starlette.requests import ClientDisconnect

    chunks, size = [], 0
    loop = asyncio.get_running_loop()
    start, stream = loop.time(), request.stream().__aiter__()

    def too_slow() -> ApiError:
        return ApiError(408, f"the request body came too slowly ({size} bytes in {loop.time() - start:.0f} s)",
                        "request_timeout")

    def add(chunk: bytes) -> None:
        nonlocal size
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"request body is larger than the limit of {limit} bytes", "request_too_large")
        chunks.append(chunk)

    try:
        if hasattr(asyncio, "timeout_at"):  # Python 3.11+: one timer, moved on as the bytes come
            try:
                async with asyncio.timeout_at(start + timeout) as deadline:
                    async for chunk in stream:
                        add(chunk)
                        deadline.reschedule(start + timeout + size / BODY_MIN_RATE)
            except TimeoutError:
                raise too_slow() from None
        else:  # pragma: no cover - Python 3.10: a timed wait a chunk (a task each: ~2% of a 6 MiB upload)
            while True:
                try:
                    chunk = await asyncio.wait_for(stream.__anext__(), max(
                        start + timeout + size / BODY_MIN_RATE - loop.time(), 0.0))
                except StopAsyncIteration:
                    break
                except asyncio.TimeoutError:
                    raise too_slow() from None
                add(chunk)
    except ClientDisconnect:  # the client went away (or stopped sending) before its body ended
        raise ApiError(400, "the request body ended early (the client stopped sending)",
                       "incomplete_body") from None
    except asyncio.CancelledError:  # uvicorn gave up on the drain while the body came: a 503, not its 500
        raise shutting_down() from None
    raw = b"".join(chunks)
    if not raw.strip():
        raise ApiError(400, "the request body is empty: send a JSON object", "invalid_json")
    return await asyncio.to_thread(parse_body, raw)  # a large body is parsed off the event loop


#: the threads that check requests held to a grammar (a ``json_schema`` response format, tools with
#: ``tool_choice`` required or named: structured output compiles it, up to seconds), as vLLM compiles
#: grammars on their own pool of half the cores: however many such requests come at once, the other
#: requests' checks (on the event loop's default pool) never wait behind them
GRAMMAR_CHECKS = max(1, (os.cpu_count() or 1) // 2)
_GRAMMAR_POOL = ThreadPoolExecutor(GRAMMAR_CHECKS, thread_name_prefix="showo2-grammar-check")


def holds_grammar(body) -> bool:
    """Whether a request body's checks may compile a grammar (chat's or the Responses API's fields)."""
    if not isinstance(body, dict):
        return False
    choice, text = body.get("tool_choice"), body.get("text")
    formats = (body.get("response_format"), text.get("format") if isinstance(text, dict) else None)
    return (bool(body.get("tools")) and (choice == "required" or isinstance(choice, dict))) or \
        any(isinstance(f, dict) and f.get("type") == "json_schema" for f in formats)


async def check_off_loop(parse, body, *args):
    """``parse(body, *args)`` on a thread (a request's checks), on the grammar pool where
    :func:`holds_grammar`, else on the event loop's default pool (as :func:`asyncio.to_thread`)."""
    if not holds_grammar(body):
        return await asyncio.to_thread(parse, body, *args)
    call = functools.partial(contextvars.copy_context().run, parse, body, *args)
    return await asyncio.get_running_loop().run_in_executor(_GRAMMAR_POOL, call)


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
        text = raw.decode("utf-8-sig" if raw.startswith(b"\xef\xbb\xbf") else "utf-8")  # strict: json.loads
    except UnicodeDecodeError:  # of bytes lets UTF-8-encoded surrogates (CESU-8, WTF-8) through
        raise ApiError(400, "the request body is not UTF-8 JSON", "invalid_json") from None
    try:
        data = json.loads(text, parse_constant=no_constant)
    except (ValueError, RecursionError) as e:  # nesting and digits past Python's limits said in our words
        raise ApiError(400, f"the request body {json_problem(e)}", "invalid_json") from None
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


def _whole(value):
    """A whole-number float as an int (3.0 is how some JSON writers send 3; vLLM's pydantic takes
    it too); anything else as it is."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    return value


def number_field(body: dict, key: str, low: float, high: float, default=None, integer: bool = False,
            limit: float | None = None, limit_what: str = ""):
    """A field that must be a number in [low, high] (400 otherwise); over ``limit``: 422."""
    value = body.get(key, default)
    if value is None:
        return default
    if integer:
        value = _whole(value)
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


def logit_bias_field(value) -> dict[int, float] | None:
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
            raise ApiError(400, f"'logit_bias' keys must be token ids, got '{short(key, 24)}'", "invalid_value",
                           "logit_bias")
        if int(key) in out:
            raise ApiError(400, f"'logit_bias' names token {int(key)} twice", "invalid_value", "logit_bias")
        if bias is None:
            raise ApiError(400, f"'logit_bias' values must be numbers, got null for token {int(key)}",
                           "invalid_type", "logit_bias")
        out[int(key)] = float(number_field({"logit_bias": bias}, "logit_bias", -100, 100))
    return out


def seed_field(body: dict) -> int | None:
    """``seed``: 0 to 2^63-1, or -1 / null for a random one (the habit of many clients)."""
    seed = _whole(body.get("seed"))
    if seed == -1 and not isinstance(seed, bool):
        return None
    if isinstance(seed, int) and not isinstance(seed, bool) and not 0 <= seed < 2**63:
        raise ApiError(400, "'seed' must be an integer from 0 to 2^63-1, or -1 for a random one", "invalid_value",
                       "seed")
    return number_field({"seed": seed}, "seed", 0, 2**63 - 1, None, integer=True)


def optional_string(value, param: str) -> None:
    """A field that is a string when given (a request's ``user``, a message's ``name``): another
    type is a 400 naming it, as OpenAI answers (it was taken without a word)."""
    if value is not None and not isinstance(value, str):
        raise ApiError(400, f"'{param}' must be a string", "invalid_type", param)


def text_part(part, param: str) -> str | None:
    """The text of a content part ``{"type": "text", "text": ...}``; None for a part of another
    type. A text part whose ``text`` is not a string is a 400 naming it (it was "unsupported
    content part (use text, ...)", for a part that was one)."""
    from ..messages import text_of_part

    try:
        return text_of_part(part)
    except TypeError as e:
        raise ApiError(400, f"{param}.{e}", "invalid_type", f"{param}.text") from None


def message_text(value, what: str, param: str, refusal: bool = False) -> str:
    """Message content: a string or a list of text parts (images are refused here); with
    ``refusal`` (an assistant message) also OpenAI's ``{"type": "refusal", "refusal": ...}`` parts,
    which a history replayed from OpenAI holds: their text is what the assistant said."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        out = []
        for j, part in enumerate(value):
            text = text_part(part, f"{param}.content[{j}]")
            if text is not None:
                out.append(text)
            elif refusal and isinstance(part, dict) and part.get("type") == "refusal" and \
                    isinstance(part.get("refusal"), str):
                out.append(part["refusal"])
            else:
                raise ApiError(400, f"{what} content may only hold text parts", "invalid_content", param)
        return "\n".join(out)
    raise ApiError(400, f"{what} content must be a string or a list of parts", "invalid_content", param)


_DATA_URL = re.compile(r"data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(?:;[\w.+-]+(?:=[^;,]*)?)*),",
                       re.ASCII | re.IGNORECASE)
_BASE64_SPACE = re.compile(r"[ \t\r\n\f\v]+")
_URLSAFE = str.maketrans("-_", "+/")


class Upload(NamedTuple):
    """A medium sent in a request: its bytes, where it is in the request, and the kind its data URL
    declares (``image``, ``video``, or None when it names no type or ``application/octet-stream``);
    ``expected`` says why, when not its data URL (a ``video_url`` part must hold a video)."""

    data: bytes
    param: str
    declared: str | None
    expected: str = ""


def decode_data_url(url: str, param: str) -> Upload:
    """A ``data:`` URL's bytes. A declared type other than ``image/*``, ``video/*`` or
    ``application/octet-stream`` is refused (a PDF is no picture, even where FFmpeg finds JPEGs in it)."""
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
    mime = (m.group("mime") or "").lower()
    declared = mime.split("/")[0] if mime.split("/")[0] in ("image", "video") else None
    if mime and declared is None and mime != "application/octet-stream":
        raise ApiError(400, f"the data URL holds '{mime}'; only image/* and video/* data are read",
                       "invalid_image_url", param)
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
    return Upload(data, param, declared)
