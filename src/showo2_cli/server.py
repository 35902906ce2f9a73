"""An OpenAI-compatible HTTP server over one resident Show-o2 model (``showo2 serve``).

Endpoints (JSON in and out, errors always ``{"error": {"message", "type", "param", "code"}}``):

* ``GET /health``: status, queue depth and counters (no key needed);
* ``GET /v1/models`` and ``GET /v1/models/{id}``: the one served model;
* ``POST /v1/chat/completions``: system/user/assistant messages, text and ``image_url`` parts
  (``data:`` URLs only: the server never fetches anything), greedy unless ``temperature`` > 0,
  ``top_p``, ``max_tokens`` (or ``max_completion_tokens``), ``seed``, ``stream`` (server-sent
  events in the OpenAI chunk format, ending with ``data: [DONE]``);
* ``POST /v1/images/generations``: ``prompt``, ``n``, ``size``, ``response_format=b64_json``, and
  the extra fields ``seed``, ``steps``, ``guidance``; returns PNGs carrying their parameters.

One worker thread owns the model and runs one job at a time; requests wait in a bounded queue
(full: 429). A job whose client disconnects is dropped from the queue or stopped at its next
token / sampling step. Status codes: 400 malformed request or invalid value, 401 missing or
wrong API key, 404 unknown route or model, 413 body too large, 422 a valid request over a limit
of this server (``max_tokens``, ``n``, ``steps``, size, image pixels, image count), 429 queue full,
503 shutting down, 500 a bug (one line in the log, never a crash).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import json
import logging
import math
import os
import re
import secrets
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import __version__
from .errors import InputError, ModelError, ResourceError, Showo2Error, UsageError

try:  # module level: FastAPI resolves the handlers' (string) annotations in these globals
    from fastapi import Request
except ImportError:  # pragma: no cover - serve checks for FastAPI before it gets here
    Request = None

log = logging.getLogger("showo2.server")

#: Environment variable holding the API key when ``--api-key`` is not given.
API_KEY_ENV = "SHOWO2_API_KEY"


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
    from .dialogue import Cancelled

    message = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, Cancelled):
        return ApiError(499, "the request was cancelled", "cancelled")
    if isinstance(exc, ResourceError):
        return ApiError(422, message, "too_large")
    if isinstance(exc, InputError):
        return ApiError(400, message, "invalid_input")
    if isinstance(exc, UsageError):
        return ApiError(400, message, "invalid_value")
    if isinstance(exc, ModelError):
        return ApiError(400, message, "unsupported")
    if isinstance(exc, MemoryError) or "out of memory" in message.lower():
        return ApiError(500, "out of memory on the server", "out_of_memory")
    if isinstance(exc, Showo2Error):
        return ApiError(500, message, "server_error")
    log.error("internal error: %s: %s", type(exc).__name__, message, exc_info=exc)
    return ApiError(500, f"internal error ({type(exc).__name__})", "internal_error")


# ---- the worker ---------------------------------------------------------------------------------

class QueueFull(Exception):
    pass


class Job:
    """One request's work: ``fn(job)`` runs on the worker thread; events flow back to the event loop."""

    def __init__(self, fn: Callable[[Job], Any], loop: asyncio.AbstractEventLoop):
        self.fn, self.loop = fn, loop
        self.cancel = threading.Event()
        self.events: asyncio.Queue = asyncio.Queue()
        self.started = False

    def emit(self, kind: str, value: Any = None) -> None:
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, (kind, value))
        except RuntimeError:  # the loop is closed: nobody is listening any more
            pass


class Worker:
    """One thread owning the model: one job at a time, at most ``max_queue`` waiting."""

    def __init__(self, max_queue: int):
        self.max_queue = max_queue
        self._cv = threading.Condition()
        self._waiting: deque[Job] = deque()
        self.running: Job | None = None
        self._stop = False
        self.counts = {"completed": 0, "failed": 0, "cancelled": 0, "rejected": 0}
        self._thread = threading.Thread(target=self._loop, name="showo2-worker", daemon=True)

    def start(self) -> None:
        self._thread.start()

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def submit(self, job: Job) -> None:
        with self._cv:
            if self._stop:
                raise ApiError(503, "the server is shutting down", "shutting_down", type_="server_error")
            if (self.running is not None or self._waiting) and len(self._waiting) >= self.max_queue:
                self.counts["rejected"] += 1
                raise QueueFull
            self._waiting.append(job)
            self._cv.notify()

    def cancel(self, job: Job) -> None:
        """Stop a job: taken out of the queue if it waits, told to stop if it runs."""
        job.cancel.set()
        with self._cv:
            if job in self._waiting:
                self._waiting.remove(job)
                self.counts["cancelled"] += 1

    def _loop(self) -> None:
        from .dialogue import Cancelled

        while True:
            with self._cv:
                while not self._waiting and not self._stop:
                    self._cv.wait()
                if not self._waiting and self._stop:
                    return
                job = self._waiting.popleft()
                self.running = job
            try:
                if job.cancel.is_set():
                    raise Cancelled("cancelled")
                job.started = True
                result = job.fn(job)
            except BaseException as e:  # every failure goes back to its request, the thread lives on
                kind = "cancelled" if isinstance(e, Cancelled) else "failed"
                with self._cv:
                    self.counts[kind] += 1
                job.emit("error", e)
            else:
                with self._cv:
                    self.counts["completed"] += 1
                job.emit("done", result)
            finally:
                with self._cv:
                    self.running = None

    def stop(self, timeout: float = 30.0) -> None:
        """Finish the running job, cancel any still waiting, end the thread."""
        with self._cv:
            self._stop = True
            for job in self._waiting:
                job.cancel.set()
            self._cv.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)


# ---- request parsing ------------------------------------------------------------------------------

def _reject_constant(name: str):
    raise ValueError(f"{name} is not a number JSON allows")


async def read_json(request, limit: int) -> dict:
    """The request body as a JSON object: 413 beyond ``limit`` bytes, 400 when not a JSON object."""
    length = request.headers.get("content-length")
    if length is not None:
        try:
            declared = int(length)
        except ValueError:
            raise ApiError(400, "bad Content-Length header", "invalid_request") from None
        if declared > limit:
            raise ApiError(413, f"request body of {declared} bytes is larger than the limit of {limit}",
                           "request_too_large")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"request body is larger than the limit of {limit} bytes",
                           "request_too_large")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        raise ApiError(400, "the request body is empty: send a JSON object", "invalid_json")
    try:
        data = json.loads(raw, parse_constant=_reject_constant)
    except UnicodeDecodeError:
        raise ApiError(400, "the request body is not UTF-8 JSON", "invalid_json") from None
    except (ValueError, RecursionError) as e:
        detail = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        raise ApiError(400, f"the request body is not valid JSON: {detail}", "invalid_json") from None
    if not isinstance(data, dict):
        raise ApiError(400, "the request body must be a JSON object", "invalid_json")
    return data


def _number(body: dict, key: str, low: float, high: float, default=None, integer: bool = False,
            limit: float | None = None, limit_what: str = ""):
    """A field that must be a number in [low, high] (400 otherwise); over ``limit``: 422."""
    value = body.get(key, default)
    if value is None:
        return default
    kind = "an integer" if integer else "a number"
    wrong_type = isinstance(value, bool) or not isinstance(value, int if integer else (int, float))
    if wrong_type:
        raise ApiError(400, f"'{key}' must be {kind}", "invalid_type", key)
    if not math.isfinite(value) or not low <= value <= high:
        raise ApiError(400, f"'{key}' must be {kind} between {low:g} and {high:g}, got {value}",
                       "invalid_value", key)
    if limit is not None and value > limit:
        raise ApiError(422, f"'{key}' of {value} is over this server's limit of {limit:g}{limit_what}",
                       "over_limit", key)
    return value


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


_DATA_URL = re.compile(r"data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(?:;[\w.+-]+(?:=[^;,]*)?)*),", re.ASCII)


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
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, "the image data URL is not valid base64", "invalid_image_url", param) from None
    if not data:
        raise ApiError(400, "the image data URL holds no data", "invalid_image_url", param)
    return data


@dataclass
class PlannedTurn:
    question: str
    images: list[bytes] = field(default_factory=list)
    answer: str | None = None


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
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    key = "max_completion_tokens" if "max_completion_tokens" in body else "max_tokens"
    max_tokens = _number({key: max_tokens}, key, 1, 1_000_000, config.default_max_tokens, integer=True,
                         limit=config.max_tokens)
    temperature = _number(body, "temperature", 0, 2, 0.0)
    top_p = _number(body, "top_p", 0, 1, None)
    if top_p is not None and top_p <= 0:
        raise ApiError(400, "'top_p' must be greater than 0", "invalid_value", "top_p")
    seed = _number(body, "seed", 0, 2**63 - 1, None, integer=True)
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise ApiError(400, "'stream' must be true or false", "invalid_type", "stream")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise ApiError(400, "'stream_options' must be an object", "invalid_type", "stream_options")
    system_parts: list[str] = []
    turns: list[PlannedTurn] = []
    images = 0
    for i, msg in enumerate(messages):
        param = f"messages[{i}]"
        if not isinstance(msg, dict):
            raise ApiError(400, f"{param} must be an object", "invalid_value", param)
        role = msg.get("role")
        content = msg.get("content")
        if role in ("system", "developer"):
            system_parts.append(_text(content, f"a {role} message's", param))
        elif role == "user":
            text_parts, pics = [], []
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
            else:
                turns.append(PlannedTurn(text, pics))
        elif role == "assistant":
            if not turns or turns[-1].answer is not None:
                raise ApiError(400, f"{param}: an assistant message must follow a user message",
                               "invalid_value", param)
            turns[-1].answer = _text(content, "an assistant message's", param)
        else:
            raise ApiError(400, f"{param}: unsupported role {str(role)[:20]!r} (use system, user, assistant)",
                           "invalid_value", param)
    if not turns or turns[-1].answer is not None:
        raise ApiError(400, "the last message must be a user message", "invalid_value", "messages")
    for t in turns:
        if not t.question.strip():
            if not t.images:
                raise ApiError(400, "a user message needs some text or an image", "invalid_value", "messages")
            t.question = "Describe the image."
    system = "\n".join(system_parts) if system_parts else None
    return ChatPlan(system, turns, int(max_tokens), float(temperature), top_p, seed, stream,
                    bool(options.get("include_usage", False)))


@dataclass
class ImagePlan:
    prompt: str
    n: int
    size: tuple[int, int] | None
    seed: int | None
    steps: int | None
    guidance: float | None


def parse_images(body: dict, config: ServerConfig, spec) -> ImagePlan:
    from .options import MAX_PROMPT_CHARS

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
    seed = _number(body, "seed", 0, 2**63 - 1, None, integer=True)
    guidance = _number(body, "guidance", 0, 100, None)
    return ImagePlan(prompt, int(n), hw, seed, steps, guidance)


# ---- the jobs (run on the worker thread) ---------------------------------------------------------

def _chat_job(model, config: ServerConfig, plan: ChatPlan, job: Job) -> dict:
    from .chat import Conversation
    from .dialogue import TextSampling

    conv = Conversation(model, plan.system, name=config.model_id)
    with tempfile.TemporaryDirectory(prefix="showo2-serve-") as tmp:
        count = 0

        def attach(data: bytes) -> None:
            nonlocal count
            path = Path(tmp) / f"image-{count}"
            path.write_bytes(data)
            conv.attach(path, name=f"image {count + 1}", max_pixels=config.max_image_pixels)
            path.unlink()
            count += 1

        for turn in plan.turns:
            for data in turn.images:
                attach(data)
            if job.cancel.is_set():
                from .dialogue import Cancelled

                raise Cancelled("cancelled")
            if turn.answer is not None:
                conv.add_turn(turn.question, turn.answer)
    sampling = TextSampling(plan.max_tokens, plan.temperature, None, plan.top_p, plan.seed)
    answer = conv.ask(plan.turns[-1].question, sampling, on_text=lambda piece: job.emit("text", piece),
                      cancel=job.cancel)
    turn = conv.turns[-1]
    return {"answer": answer, "finish_reason": "stop" if turn.stopped else "length",
            "prompt_tokens": turn.prompt_tokens, "completion_tokens": len(turn.answer_ids),
            "notices": list(conv.notices)}


def _images_job(model, plan: ImagePlan, job: Job) -> list[dict]:
    from . import media as M
    from .dialogue import Cancelled
    from .options import GenerateOptions
    from .pipelines import text_to_image

    def progress(phase: str, done: int, total: int) -> None:
        if job.cancel.is_set():
            raise Cancelled("cancelled")

    opts = GenerateOptions(size=plan.size, steps=plan.steps, guidance=plan.guidance, seed=plan.seed,
                           num_per_prompt=plan.n, batch_size=min(plan.n, 4))
    results = text_to_image(model, [plan.prompt], opts, progress=progress)
    out = []
    with tempfile.TemporaryDirectory(prefix="showo2-serve-") as tmp:
        for k, item in enumerate(results):
            path = Path(tmp) / f"image-{k}.png"
            meta = {**item.params, "showo2_version": __version__, "kind": "t2i"}
            M.write_image(path, item.frames[0], metadata=meta)
            out.append({"b64_json": base64.b64encode(path.read_bytes()).decode("ascii"),
                        "revised_prompt": plan.prompt, "seed": item.seed})
    return out


# ---- the app --------------------------------------------------------------------------------------

def create_app(model, config: ServerConfig):
    """The FastAPI app serving ``model`` (a loaded :class:`~showo2_cli.loading.Showo2`)."""
    from fastapi import FastAPI
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, StreamingResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    worker = Worker(config.max_queue)
    state = {"draining": False, "started": time.time()}

    @asynccontextmanager
    async def lifespan(app):
        worker.start()
        try:
            yield
        finally:
            state["draining"] = True
            await asyncio.to_thread(worker.stop)

    app = FastAPI(title="showo2", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.state.worker = worker
    app.state.server_state = state

    def error(exc: BaseException) -> JSONResponse:
        err = api_error_of(exc)
        headers = {"Retry-After": "1"} if err.status in (429, 503) else None
        if err.status == 401:
            headers = {"WWW-Authenticate": "Bearer"}
        return JSONResponse(err.body(), status_code=err.status if err.status != 499 else 400, headers=headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, exc):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        message = "no such endpoint" if exc.status_code == 404 else str(exc.detail)
        return error(ApiError(exc.status_code, f"{message}: {request.method} {request.url.path}", code))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request, exc):
        return error(ApiError(400, "invalid request", "invalid_request"))

    @app.exception_handler(Exception)
    async def unexpected(request, exc):
        return error(exc)

    def check(request: Request) -> None:
        if state["draining"]:
            raise ApiError(503, "the server is shutting down", "shutting_down", type_="server_error")
        if config.api_key:
            header = request.headers.get("authorization", "")
            scheme, _, token = header.partition(" ")
            good = hmac.compare_digest(token.strip().encode(), config.api_key.encode())
            if scheme.lower() != "bearer" or not good:
                what = "no API key given" if not header else "wrong API key"
                raise ApiError(401, f"{what}: send 'Authorization: Bearer KEY'", "invalid_api_key")

    def check_model(body: dict) -> None:
        name = body.get("model")
        if name is None:
            return
        if not isinstance(name, str):
            raise ApiError(400, "'model' must be a string", "invalid_type", "model")
        if name != config.model_id:
            raise ApiError(404, f"model '{name[:80]}' is not served here (this server serves "
                                f"'{config.model_id}')", "model_not_found", "model")

    def model_card() -> dict:
        return {"id": config.model_id, "object": "model", "created": int(state["started"]),
                "owned_by": "showo2"}

    def submit(fn) -> Job:
        job = Job(fn, asyncio.get_running_loop())
        try:
            worker.submit(job)
        except QueueFull:
            raise ApiError(429, f"the server is busy ({worker.waiting} requests waiting): retry later",
                           "queue_full", type_="rate_limit_error") from None
        return job

    async def next_event(request: Request, job: Job) -> tuple[str, Any]:
        """The job's next event; the job is cancelled if the client goes away meanwhile."""
        while True:
            try:
                return await asyncio.wait_for(job.events.get(), timeout=0.25)
            except asyncio.TimeoutError:
                if await request.is_disconnected():
                    worker.cancel(job)
                    raise ApiError(499, "client disconnected", "cancelled") from None
            except asyncio.CancelledError:
                worker.cancel(job)
                raise

    async def outcome(request: Request, job: Job):
        """Wait for the job's result (skipping streamed pieces); raise its error."""
        while True:
            kind, value = await next_event(request, job)
            if kind == "done":
                return value
            if kind == "error":
                raise value

    @app.get("/health")
    async def health():
        return JSONResponse({"status": "draining" if state["draining"] else "ok", "model": config.model_id,
                             "version": __version__, "running": worker.running is not None,
                             "queued": worker.waiting, "max_queue": config.max_queue, **worker.counts},
                            status_code=503 if state["draining"] else 200)

    @app.get("/v1/models")
    async def list_models(request: Request):
        try:
            check(request)
            return JSONResponse({"object": "list", "data": [model_card()]})
        except Exception as e:
            return error(e)

    @app.get("/v1/models/{name:path}")
    async def get_model(name: str, request: Request):
        try:
            check(request)
            check_model({"model": name})
            return JSONResponse(model_card())
        except Exception as e:
            return error(e)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        try:
            check(request)
            body = await read_json(request, config.max_body_bytes)
            check_model(body)
            plan = parse_chat(body, config)
            job = submit(lambda job: _chat_job(model, config, plan, job))
            rid = "chatcmpl-" + secrets.token_hex(12)
            created = int(time.time())
            if not plan.stream:
                result = await outcome(request, job)
                return JSONResponse({
                    "id": rid, "object": "chat.completion", "created": created, "model": config.model_id,
                    "system_fingerprint": f"showo2-{__version__}",
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": result["answer"]},
                                 "logprobs": None, "finish_reason": result["finish_reason"]}],
                    "usage": _usage(result)})
            first = await next_event(request, job)  # an error before the first token keeps its status
            if first[0] == "error":
                raise first[1]
        except Exception as e:
            return error(e)
        return StreamingResponse(_sse(request, job, first, rid, created, plan.include_usage),
                                 media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    def chunk(rid: str, created: int, delta: dict, finish: str | None = None) -> str:
        payload = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": config.model_id,
                   "system_fingerprint": f"showo2-{__version__}",
                   "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
        return f"data: {json.dumps(payload)}\n\n"

    async def _sse(request: Request, job: Job, first, rid: str, created: int, include_usage: bool):
        event = first
        try:
            yield chunk(rid, created, {"role": "assistant", "content": ""})
            while True:
                kind, value = event
                if kind == "text":
                    yield chunk(rid, created, {"content": value})
                elif kind == "done":
                    yield chunk(rid, created, {}, value["finish_reason"])
                    if include_usage:
                        usage = {"id": rid, "object": "chat.completion.chunk", "created": created,
                                 "model": config.model_id, "choices": [], "usage": _usage(value)}
                        yield f"data: {json.dumps(usage)}\n\n"
                    break
                elif kind == "error":
                    yield f"data: {json.dumps(api_error_of(value).body())}\n\n"
                    break
                event = await job.events.get()
            yield "data: [DONE]\n\n"
        finally:
            if not (event and event[0] in ("done", "error")):
                worker.cancel(job)  # the client went away (or the server is cancelling): stop generating

    @app.post("/v1/images/generations")
    async def images_generations(request: Request):
        try:
            check(request)
            body = await read_json(request, config.max_body_bytes)
            check_model(body)
            plan = parse_images(body, config, model.spec)
            job = submit(lambda job: _images_job(model, plan, job))
            data = await outcome(request, job)
            return JSONResponse({"created": int(time.time()), "data": data})
        except Exception as e:
            return error(e)

    return app


def _usage(result: dict) -> dict:
    p, c = result["prompt_tokens"], result["completion_tokens"]
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}


# ---- running it -------------------------------------------------------------------------------------

def bind_socket(host: str, port: int):
    """A bound (not yet listening) TCP socket, so a busy port fails before the model loads."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise UsageError(f"--host '{host}' cannot be resolved ({e.strerror or e})") from None
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as e:
        sock.close()
        raise UsageError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    sock.set_inheritable(True)
    return sock


def serve(model, config: ServerConfig, sock, drain_timeout: float = 60.0, log_level: str = "info",
          on_ready: Callable[[str], None] | None = None) -> None:
    """Run the server on ``sock`` until SIGTERM/SIGINT, then drain: no new connections, running and
    queued requests finish (at most ``drain_timeout`` seconds, then they are cancelled)."""
    import uvicorn

    app = create_app(model, config)

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame):
            app.state.server_state["draining"] = True
            super().handle_exit(sig, frame)
            # drained: exit normally instead of re-raising the signal afterwards
            getattr(self, "_captured_signals", []).clear()

        async def startup(self, sockets=None):
            await super().startup(sockets=sockets)
            if on_ready is not None and not self.should_exit:
                host, port = sock.getsockname()[:2]
                shown = f"[{host}]" if ":" in host else host
                on_ready(f"http://{shown}:{port}")

    cfg = uvicorn.Config(app, log_level=log_level, lifespan="on", server_header=False,
                         timeout_graceful_shutdown=int(drain_timeout),
                         access_log=log_level in ("info", "debug"))
    Server(cfg).run(sockets=[sock])


def api_key_from(option: str | None) -> str | None:
    key = option if option is not None else os.environ.get(API_KEY_ENV)
    return key or None


__all__ = ["API_KEY_ENV", "ApiError", "ServerConfig", "Worker", "api_key_from", "bind_socket", "create_app",
           "serve"]
