"""OpenAI's Responses API (``POST /v1/responses``) over the chat machinery: a request's ``input``
items and fields become a chat request checked by :func:`~showo2_cli.serve.requests.parse_chat`
(the same message checks, limits and structured output), run as the same chat job; its answer
comes back as a ``response`` object, or as the Responses stream's typed events. Errors name the
request's own fields (``input[2].content[1]``, ``max_output_tokens``, ``text.format``).

Nothing is stored (as vLLM without its store): ``store`` is taken and answered ``false``,
``previous_response_id`` and ``conversation`` are refused, naming the field."""

from __future__ import annotations

import json
import re
import secrets
import time
from dataclasses import dataclass, field

from ..errors import short
from .body import optional_string
from .errors import ApiError, api_error_of
from .requests import ChatPlan, ServerConfig, notices_field, parse_chat
from .tools import ToolStream, read_arguments

#: chat completions' names, which a client sending them here mixed up with the Responses API's
_CHAT_NAMES = {"messages": "input", "max_tokens": "max_output_tokens", "max_completion_tokens": "max_output_tokens",
               "response_format": "text.format"}
#: the Responses fields read here, not passed on to the chat request; the rest are (seed, top_k, stop,
#: logit_bias, ..., and what chat refuses: logprobs, top_logprobs, guided_json, ...)
_OWN = {"input", "instructions", "max_output_tokens", "text", "reasoning", "store",
        "previous_response_id", "conversation", "background", "truncation", "include", "metadata", "prompt",
        "stream_options", "max_tool_calls", "stream", "temperature", "top_p", "user"}
#: what a request may ``include`` that refers to items this server never makes (tool calls, reasoning,
#: stored inputs): taken, as nothing is left out; the one that would change the reply is logprobs
_LOGPROBS = "message.output_text.logprobs"
#: a context-length refusal's words for the chat's messages, as this request's input
_CONTEXT_WORDS = (("your messages resulted", "your input resulted"), ("in the messages", "in the input"),
                  ("the length of the messages", "the length of the input"), ("the messages hold", "the input holds"))
#: content parts of a message, by role: the Responses name and the chat part it is
_USER_PARTS = ("input_text", "input_image")
_ASSISTANT_PARTS = ("output_text", "input_text", "refusal")
#: input items that are not messages, and why they are refused
_NO_TOOLS = "this server serves function tools, not hosted ones: their calls are not in its conversations"
_ITEM_WHY = {"reasoning": "Show-o2 makes no reasoning items; send the conversation's messages",
             "item_reference": "this server stores no items (store is off): send the item itself"}


@dataclass
class ResponsesPlan:
    """A Responses request: the chat plan that runs it, the names of its input items (by chat message
    index) for errors, and the fields its response object repeats."""

    chat: ChatPlan
    names: list[str]
    echo: dict = field(default_factory=dict)
    id: str = field(default_factory=lambda: "resp_" + secrets.token_hex(24))
    message_id: str = field(default_factory=lambda: "msg_" + secrets.token_hex(24))
    created: int = field(default_factory=lambda: int(time.time()))

    def rename(self, text: str | None, param: str | None = None) -> str | None:
        """A chat error's words (or its ``param``, the default) as this request's fields. The message the
        error names by its ``param`` is renamed where the words name it; a client's own value that looks
        like one (a ``logit_bias`` key ``'messages[4]'``) is quoted back as sent (it was looked up among
        the items: an IndexError, a 500)."""
        if text is None:
            return None
        named = re.match(r"messages\[(\d+)\]", text if param is None else param)
        if named and int(named.group(1)) < len(self.names):
            text = text.replace(named.group(0), self.names[int(named.group(1))])
        for chat, ours in (("response_format.json_schema", "text.format"), ("response_format", "text.format"),
                           ("max_completion_tokens", "max_output_tokens"), ("max_tokens", "max_output_tokens"),
                           ("tool_call_id", "call_id")):
            text = re.sub(rf"\b{re.escape(chat)}\b", ours, text)
        return "input" if text == "messages" else text.replace("'messages'", "'input'")

    def renamed(self, exc: BaseException) -> ApiError:
        err = api_error_of(exc)
        message = self.rename(err.message, err.param or "")
        if err.code == "context_length_exceeded":  # the chat's "messages" are this request's input; the
            for chat, ours in _CONTEXT_WORDS:     # sentence clients match on ("maximum context length") stays
                message = message.replace(chat, ours)
        return ApiError(err.status, message, err.code, self.rename(err.param), err.type, err.retry)

    def response(self, status: str = "completed", text: str | None = None, result: dict | None = None,
                 error: ApiError | None = None) -> dict:
        """The ``response`` object: ``in_progress`` with no output yet, ``completed`` or ``incomplete``
        (the answer reached ``max_output_tokens``) with the answer, ``failed`` with the error."""
        if result is not None:
            status = "incomplete" if result["finish_reason"] == "length" else "completed"
        output = [] if text is None else [self.message(text, status)]
        output += [self.call(c, status) for c in (result or {}).get("tool_calls", ())]
        usage = None
        if result is not None:
            p, c = result["prompt_tokens"], result["completion_tokens"]
            usage = {"input_tokens": p, "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0}, "output_tokens": c,
                     "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": p + c}
        return {"id": self.id, "object": "response", "created_at": self.created, "status": status,
                "completed_at": int(time.time()) if status == "completed" else None,
                "error": None if error is None else {"code": _failure_code(error), "message": error.message},
                "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
                "output": output, "usage": usage, **self.echo, **notices_field(result or {})}

    def message(self, text: str, status: str) -> dict:
        return {"id": self.message_id, "type": "message", "status": status, "role": "assistant",
                "content": [] if status == "in_progress" else [self.part(text)]}

    @staticmethod
    def call(call: dict, status: str) -> dict:
        """A tool call's ``function_call`` item (its arguments so far while ``in_progress``)."""
        return {"id": "fc_" + call["id"].removeprefix("call_"), "type": "function_call", "status": status,
                "call_id": call["id"], "name": call["name"], "arguments": call.get("arguments", "")}

    @staticmethod
    def part(text: str) -> dict:
        return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


#: the codes a failed response's ``error`` may have (the SDK's ``ResponseError.code``) that this server's
#: errors can be; the error event before it has the server's own code
_FAILURE_CODES = ("server_error", "rate_limit_exceeded", "invalid_prompt", "invalid_image_url")


def _failure_code(err: ApiError) -> str:
    if err.code in _FAILURE_CODES:
        return err.code
    return "server_error" if err.status >= 500 else "rate_limit_exceeded" if err.status == 429 else "invalid_prompt"


def _refuse(param: str, why: str, code: str = "unsupported_parameter", status: int = 400):
    raise ApiError(status, f"'{param}' {why}", code, param)


def _content(content, role: str, param: str) -> str | list:
    """A message's content as the chat request's: a string as it is, each part as its chat part."""
    if isinstance(content, str) or content is None:
        return content
    if not isinstance(content, list):
        raise ApiError(400, f"{param}.content must be a string or a list of parts", "invalid_content",
                       f"{param}.content")
    allowed = _ASSISTANT_PARTS if role == "assistant" else _USER_PARTS
    parts = []
    for j, part in enumerate(content):
        p = f"{param}.content[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind not in allowed:
            files = " (files are not read here: send an image or a video as input_image, a data: URL)" \
                if kind == "input_file" else ""
            raise ApiError(400, f"{p}: unsupported content part {short(kind, 40)} in a{'n' if role[0] in 'aeiou' else ''} "
                                f"{role} message (use {' or '.join(allowed)}){files}", "invalid_content", p)
        if kind == "refusal":
            parts.append(part)
        elif kind != "input_image":
            parts.append({"type": "text", "text": part.get("text")})
        elif part.get("file_id") is not None:
            raise ApiError(400, f"{p}.file_id: this server has no Files API: send the image in image_url, as a "
                                "data: URL", "unsupported_parameter", f"{p}.file_id")
        elif part.get("image_url") is None:
            raise ApiError(400, f"{p}: an input_image needs an image_url (a data: URL)", "invalid_image_url", p)
        else:
            parts.append({"type": "image_url", "image_url": {"url": part["image_url"]}})
    return parts


def _messages(body: dict) -> tuple[list[dict], list[str]]:
    """The chat messages of ``instructions`` and ``input``, and each one's name in this request."""
    messages, names = [], []
    instructions = body.get("instructions")
    optional_string(instructions, "instructions")
    if instructions:
        messages.append({"role": "system", "content": instructions})
        names.append("instructions")
    items = body.get("input")
    if isinstance(items, str):
        if not items.strip():
            _refuse("input", "must not be empty", "invalid_value")
        return [*messages, {"role": "user", "content": items}], [*names, "input"]
    if not isinstance(items, list) or not items:
        _refuse("input", "must be a string or a non-empty list of items", "invalid_value")
    for i, item in enumerate(items):
        param = f"input[{i}]"
        if not isinstance(item, dict):
            raise ApiError(400, f"{param} must be an object", "invalid_value", param)
        kind = item.get("type", "message")
        if kind in ("function_call", "function_call_output"):
            messages.append(_tool_item(item, kind, param))
            names.append(param)
            continue
        if kind != "message":
            kind = kind if isinstance(kind, str) else short(kind, 40)
            why = _ITEM_WHY.get(kind) or (_NO_TOOLS if kind.endswith(("_call", "_output"))
                                          else "use message items (role and content)")
            raise ApiError(400, f"{param}: {short(kind, 40)} items are not supported by this server ({why})",
                           "unsupported_parameter", f"{param}.type")
        role = item.get("role")
        if role not in ("user", "system", "developer", "assistant"):
            raise ApiError(400, f"{param}: unsupported role {short(role, 20)} (use user, system, developer or "
                                "assistant)", "invalid_value", f"{param}.role")
        messages.append({"role": role, "content": _content(item.get("content"), role, param)})
        names.append(param)
    return messages, names


def _tool_item(item: dict, kind: str, param: str) -> dict:
    """A ``function_call`` item as the chat's assistant message calling it, a ``function_call_output``
    as its tool message."""
    for key in ("call_id", "name", "arguments") if kind == "function_call" else ("call_id",):
        if not isinstance(item.get(key), str) or (key != "arguments" and not item[key]):
            raise ApiError(400, f"{param}.{key} must be a{' non-empty' if key != 'arguments' else ''} string",
                           "invalid_value", f"{param}.{key}")
    if kind == "function_call_output":
        output = item.get("output")
        if not isinstance(output, (str, list)):
            raise ApiError(400, f"{param}.output must be a string or a list of parts", "invalid_value",
                           f"{param}.output")
        return {"role": "tool", "tool_call_id": item["call_id"], "content": _content(output, "tool", param)}
    read_arguments(item["arguments"] or "{}", f"{param}.arguments")
    return {"role": "assistant", "content": None, "tool_calls": [
        {"id": item["call_id"], "type": "function", "function": {"name": item["name"], "arguments": item["arguments"]}}]}


def _text_format(value) -> dict | None:
    """``text``: its ``format`` as chat's ``response_format``; ``verbosity`` is a hint, taken."""
    if value is None:
        return None
    if not isinstance(value, dict):
        _refuse("text", "must be an object", "invalid_type")
    if value.get("verbosity") not in (None, "low", "medium", "high"):
        _refuse("text.verbosity", "must be low, medium or high", "invalid_value")
    fmt = value.get("format")
    if fmt is None or not isinstance(fmt, dict) or fmt.get("type") != "json_schema":
        return fmt  # (chat's checks: an object, of type text or json_object)
    return {"type": "json_schema", "json_schema": {k: fmt[k] for k in ("name", "description", "schema", "strict")
                                                   if k in fmt}}


def _tools(body: dict) -> None:
    """An image generation tool is pointed at the images endpoint (the rest: the chat's tool checks)."""
    tools = body.get("tools")
    for k, tool in enumerate(tools if isinstance(tools, list) and body.get("tool_choice") != "none" else ()):
        if isinstance(tool, dict) and tool.get("type") == "image_generation":
            _refuse(f"tools[{k}]", "image_generation is not served as a tool here: POST /v1/images/generations "
                                   "makes images from a prompt")


def _metadata(value) -> dict:
    """OpenAI's ``metadata``: at most 16 string keys (64 characters) to string values (512), repeated."""
    if value is None:
        return {}
    if not isinstance(value, dict) or len(value) > 16 or not all(
            isinstance(k, str) and len(k) <= 64 and isinstance(v, str) and len(v) <= 512 for k, v in value.items()):
        _refuse("metadata", "must map at most 16 keys (strings of at most 64 characters) to strings of at most "
                            "512 characters", "invalid_value")
    return value


def parse_responses(body: dict, config: ServerConfig) -> ResponsesPlan:
    """A Responses request as the chat plan that runs it (a 400 naming the field, or the chat checks'
    4xx renamed to this request's fields)."""
    for chat, ours in _CHAT_NAMES.items():
        if body.get(chat) is not None:
            _refuse(chat, f"is a chat completions field: send '{ours}' to /v1/responses", "invalid_value")
    if body.get("previous_response_id") is not None or body.get("conversation") is not None:
        key = "previous_response_id" if body.get("previous_response_id") is not None else "conversation"
        _refuse(key, "is not supported: this server stores no responses (store is off); send the whole "
                     "conversation in 'input' (earlier output items included)")
    if body.get("prompt") is not None:
        _refuse("prompt", "is not supported: this server stores no prompt templates; send the text in "
                          "'instructions' and 'input'")
    if body.get("background") not in (None, False):
        _refuse("background", "is not supported: this server stores no responses to poll (send stream: true "
                              "to read the answer as it comes)")
    if body.get("store") is not None and not isinstance(body["store"], bool):
        _refuse("store", "must be true or false", "invalid_type")
    truncation = body.get("truncation")
    if truncation not in (None, "auto", "disabled"):
        _refuse("truncation", "must be auto or disabled", "invalid_value")
    include = body.get("include")
    if include is not None and not (isinstance(include, list) and all(isinstance(v, str) for v in include)):
        _refuse("include", "must be a list of strings", "invalid_type")
    if _LOGPROBS in (include or ()):
        _refuse("include", f"{_LOGPROBS} is not supported by this server (Show-o2 answers in plain text)")
    reasoning = body.get("reasoning")
    if reasoning is not None and not isinstance(reasoning, dict):
        _refuse("reasoning", "must be an object", "invalid_type")
    options = body.get("stream_options")
    if options is not None and (not isinstance(options, dict) or body.get("stream") is not True):
        _refuse("stream_options", "must be an object, sent with stream: true", "invalid_value")
    _tools(body)
    metadata = _metadata(body.get("metadata"))
    text_format = _text_format(body.get("text"))
    messages, names = _messages(body)
    chat = {k: v for k, v in body.items() if k not in _OWN}
    chat.update(messages=messages, max_completion_tokens=body.get("max_output_tokens"),
                response_format=text_format, **{k: body[k] for k in ("stream", "temperature", "top_p", "user")
                                                  if k in body})
    plan = ResponsesPlan(None, names)
    try:
        plan.chat = parse_chat(chat, config, tool_shape="responses")
    except ApiError as e:
        raise plan.renamed(e) from None
    for turn in plan.chat.turns:  # the media's names in later errors (an unreadable image)
        turn.images = [u._replace(param=plan.rename(u.param)) for u in turn.images]
    if truncation == "auto":  # OpenAI's: the oldest items leave a context they do not fit
        plan.chat.overflow = "drop"
    fmt = (body.get("text") or {}).get("format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema" and "schema" not in fmt:
        fmt = {**fmt, "schema": plan.chat.json_schema}  # (the echo's format has one: the schema held to)
    text = {"format": fmt if isinstance(fmt, dict) else {"type": "text"},
            "verbosity": (body.get("text") or {}).get("verbosity") or "medium"}
    plan.echo = {"model": config.model_id, "instructions": body.get("instructions"),
                 "max_output_tokens": plan.chat.max_tokens, "temperature": plan.chat.temperature,
                 "top_p": 1.0 if plan.chat.top_p is None else plan.chat.top_p, "text": text,
                 "tools": body.get("tools") or [], "tool_choice": body.get("tool_choice") or "auto",
                 "parallel_tool_calls": body.get("parallel_tool_calls", True) is not False,
                 "truncation": truncation or "disabled", "metadata": metadata, "store": False,
                 "background": False, "previous_response_id": None,
                 "reasoning": {"effort": None, "summary": None}, "user": body.get("user")}
    return plan


async def stream_events(plan: ResponsesPlan, first, events, cancel):
    """The Responses stream (``event: TYPE`` / ``data: JSON``, no ``[DONE]``) of a job whose first event
    is ``first`` and whose next ones ``events()`` gives; ``cancel()`` when the client leaves first. The
    answer's message item opens at once without tools, at its first text with them; each tool call
    is a ``function_call`` item after it."""
    seq = 0

    def event(kind: str, **fields) -> str:
        nonlocal seq
        seq += 1
        return f"event: {kind}\ndata: {json.dumps({'type': kind, **fields, 'sequence_number': seq - 1})}\n\n"

    items: list = []  # the output items opened so far: "message", or a call's id
    where = {"item_id": plan.message_id, "output_index": 0}
    pieces: list[str] = []
    arguments: dict[int, list[str]] = {}
    split = ToolStream(plan.chat.tools)
    current = first

    def open_message():
        items.append("message")
        yield event("response.output_item.added", output_index=0, item=plan.message("", "in_progress"))
        yield event("response.content_part.added", **where, content_index=0, part=plan.part(""))

    def close_message(status: str):
        text = "".join(pieces)
        yield event("response.output_text.done", **where, content_index=0, text=text, logprobs=[])
        yield event("response.content_part.done", **where, content_index=0, part=plan.part(text))
        yield event("response.output_item.done", output_index=0, item=plan.message(text, status))

    def send(part: tuple, status: str):
        kind, *rest = part
        if kind == "content":
            if "message" not in items:
                yield from open_message()
            pieces.append(rest[0])
            yield event("response.output_text.delta", **where, content_index=0, delta=rest[0], logprobs=[])
            return
        k, value = rest
        at = {"item_id": "fc_" + (value["id"] if kind != "arguments" else items[-1]).removeprefix("call_")}
        if kind == "call":
            if items == ["message"]:  # the text before the calls is whole
                yield from close_message(status)
            items.append(value["id"])
            arguments[k] = []
            yield event("response.output_item.added", output_index=len(items) - 1,
                        item=plan.call({**value, "arguments": ""}, "in_progress"))
        elif kind == "arguments":
            arguments[k].append(value)
            if value:
                yield event("response.function_call_arguments.delta", **at, output_index=len(items) - 1, delta=value)
        else:
            text = "".join(arguments[k])
            yield event("response.function_call_arguments.done", **at, output_index=len(items) - 1, arguments=text)
            yield event("response.output_item.done", output_index=len(items) - 1, item=plan.call(value, status))

    try:
        yield event("response.created", response=plan.response("in_progress"))
        yield event("response.in_progress", response=plan.response("in_progress"))
        if plan.chat.tools is None:
            for line in open_message():
                yield line
        while True:
            kind, value = current
            if kind == "text":
                for part in split.feed(value):
                    for line in send(part, "in_progress"):
                        yield line
            elif kind == "done":
                final = plan.response(text=value["content"], result=value)
                status = final["status"]
                for part in split.finish(value["content"], value["tool_calls"]):
                    for line in send(part, status):
                        yield line
                if value["content"] is not None and "message" not in items:  # (an empty answer)
                    for line in open_message():
                        yield line
                if items and items[0] == "message" and len(items) == 1:
                    for line in close_message(status):
                        yield line
                yield event(f"response.{status}", response=final)
                break
            elif kind == "error":
                err = plan.renamed(value)
                yield event("error", code=err.code, message=err.message, param=err.param)
                yield event("response.failed", response=plan.response("failed", error=err))
                break
            current = await events()
    finally:
        if current[0] not in ("done", "error"):
            cancel()  # the client went away (or the server is cancelling): stop generating
