"""Tool calling on ``showo2 serve``, as vLLM serves it for Qwen2.5 models (Show-o2's LLM): the
request's function tools are listed in the system turn as Qwen2.5's chat template lists them;
``tool_choice: "auto"`` lets the model answer or call, its hermes-style ``<tool_call>{...}</tool_call>``
blocks parsed back (vLLM's ``--tool-call-parser hermes``); ``"required"`` and a named function are
held by structured output (:mod:`showo2_cli.structured`) to valid calls: a JSON array of
``{"name", "parameters"}`` objects (vLLM's schema for ``required``) or the named function's arguments.
Earlier calls and their results are fed back as the template feeds them (the calls in the assistant
turn, each result in a ``<tool_response>`` block of a user turn). Torch-free."""

from __future__ import annotations

import json
import math
import re
import secrets
from dataclasses import dataclass, field

from ..errors import Showo2Error, given, json_problem, short
from ..tokenizer import template_tag
from .body import no_constant
from .errors import ApiError

#: Qwen2.5's chat template: what follows the system text when tools are given, around their list (the
#: template's tags marked as its own: their tokens where the tokenizer has them, :func:`template_tag`)
TOOLS_HEAD = ("\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
              f"You are provided with function signatures within {template_tag('<tools>')}{template_tag('</tools>')} "
              f"XML tags:\n{template_tag('<tools>')}")
TOOLS_TAIL = (f"\n{template_tag('</tools>')}\n\nFor each function call, return a json object with function name and "
              f"arguments within {template_tag('<tool_call>')}{template_tag('</tool_call>')} XML tags:\n"
              f"{template_tag('<tool_call>')}\n{{\"name\": <function-name>, \"arguments\": <args-json-object>}}\n"
              f"{template_tag('</tool_call>')}")
CALL_OPEN, CALL_CLOSE = "<tool_call>", "</tool_call>"
_CALL_BLOCK = re.compile(r"<tool_call>(.*?)(?:</tool_call>|$)", re.DOTALL)
#: a function's parameters when the tool gives none (OpenAI: an empty parameter list)
NO_PARAMETERS = {"type": "object", "properties": {}}
#: the deepest a listed tool may nest (objects and lists inside each other): each tool is written into
#: the prompt as JSON, which Python cannot write past its recursion limit (~1,000 levels, less the stack)
MAX_TOOL_DEPTH = 128


def call_id() -> str:
    return "call_" + secrets.token_hex(12)


@dataclass
class ToolPlan:
    """The tools a request offers: ``functions`` (each ``{"name", "description"?, "parameters"?}``,
    in the request's order), ``choice`` (``auto``, ``required`` or ``function``: the one ``name``d),
    whether several calls may come at once, and the named call's id (known before it is written, as
    a stream sends it first)."""

    functions: list[dict]
    choice: str
    name: str | None = None
    parallel: bool = True
    named_id: str = field(default_factory=call_id)

    def system(self, text: str) -> str:
        """The system turn's text with the tools listed, as Qwen2.5's template lists them."""
        listed = "".join("\n" + json.dumps({"type": "function", "function": f}, ensure_ascii=False)
                         for f in self.functions)
        return text + TOOLS_HEAD + listed + TOOLS_TAIL

    def schema(self) -> dict | None:
        """The answer's JSON schema for ``required`` and a named function (None for ``auto``)."""
        if self.choice == "function":
            return next(f.get("parameters") or NO_PARAMETERS for f in self.functions if f["name"] == self.name)
        if self.choice != "required":
            return None
        call = self.call_schema("parameters")
        defs = {k: call.pop(k) for k in ("$defs", "definitions") if k in call}
        return {"type": "array", "minItems": 1, **({} if self.parallel else {"maxItems": 1}), "items": call, **defs}

    def call_schema(self, key: str = "arguments") -> dict:
        """The schema of one call of any of the tools: ``{"name", key}``, ``key`` the function's parameters
        (``arguments`` as a ``<tool_call>`` block writes them; ``parameters`` in ``required``'s array),
        the tools' ``$defs`` made the schema's own (a tool's ``"#/$defs/..."`` references point there)."""
        defs: dict = {}
        for f in self.functions:
            for kind in ("$defs", "definitions"):
                for name, sub in ((f.get("parameters") or {}).get(kind) or {}).items():
                    if defs.setdefault(kind, {}).setdefault(name, sub) != sub:
                        raise ApiError(400, f"'tools': two tools define '{kind}/{short(name, 40)}' differently (held "
                                            "calls share their definitions)", "invalid_value", "tools")
        calls = [{"type": "object", "required": ["name", key], "properties": {
            "name": {"type": "string", "enum": [f["name"]]},
            key: {k: v for k, v in (f.get("parameters") or NO_PARAMETERS).items()
                  if k not in ("$defs", "definitions")}}} for f in self.functions]
        return {**({"anyOf": calls} if len(calls) > 1 else calls[0]), **defs}

    def split(self, text: str) -> tuple[str | None, list[dict]]:
        """An answer as (its text content, its calls ``[{"id", "name", "arguments"}]``); content is
        None where the answer is calls alone. A call cut by the token limit keeps the arguments written."""
        if self.choice == "function":
            return None, [{"id": self.named_id, "name": self.name, "arguments": text}]
        if self.choice == "required":
            try:
                items = _whole_items(text)
            except _OutOfRange:  # (a call no client can read back: the answer is its text, as with auto)
                return text, []
            return None, [{"id": call_id(), "name": item["name"],
                           "arguments": json.dumps(item["parameters"], ensure_ascii=False)} for item in items]
        start = text.find(CALL_OPEN)
        if start < 0:
            return text, []
        calls = []
        for block in _CALL_BLOCK.findall(text[start:]):
            try:  # (NaN, Infinity and 1e999 are not JSON a client can read back: no call)
                call = json.loads(block, parse_constant=no_constant)
                known = isinstance(call, dict) and any(call.get("name") == f["name"] for f in self.functions)
                arguments = call.get("arguments", {}) if known else None
                if isinstance(arguments, dict):
                    arguments = json.dumps(arguments, ensure_ascii=False, allow_nan=False)
            except (ValueError, RecursionError):
                return text, []  # (vLLM's hermes parser: an answer whose calls do not parse is its text)
            if not isinstance(arguments, str):
                return text, []  # a call the client has no function for is no call
            calls.append({"id": call_id(), "name": call["name"], "arguments": arguments})
        return text[:start].rstrip() or None, calls[:None if self.parallel else 1]


def _outside_ref(node) -> str | None:
    """A ``$ref`` of a schema that is not to its ``$defs``/``definitions`` (None: there is none)."""
    if isinstance(node, list):
        return next((r for r in map(_outside_ref, node) if r is not None), None)
    if not isinstance(node, dict):
        return None
    ref = node.get("$ref")
    if isinstance(ref, str) and not ref.startswith(("#/$defs/", "#/definitions/")):
        return ref
    return next((r for r in map(_outside_ref, node.values()) if r is not None), None)


class _OutOfRange(Exception):
    """A number past a float's range (``1e999``): JSON's grammar allows it, but Python reads it as inf and
    writes it back as ``Infinity``, which is not JSON."""


def _finite(digits: str) -> float:
    value = float(digits)
    if value in (math.inf, -math.inf):
        raise _OutOfRange(digits)
    return value


def _whole_items(text: str) -> list:
    """The objects of a JSON array, as many as were written whole (the array may be cut short);
    :class:`_OutOfRange` where one holds a number no float holds."""
    decoder = json.JSONDecoder(parse_float=_finite, parse_constant=no_constant)
    items, at = [], text.find("[") + 1
    while at > 0:
        while at < len(text) and text[at] in " \n\t,":
            at += 1
        try:
            item, at = decoder.raw_decode(text, at)
        except (ValueError, RecursionError):  # (nesting past Python's limit: the items before it)
            break
        items.append(item)
    return items


def split_answer(plan: ToolPlan | None, text: str, stopped: bool) -> tuple[str | None, list[dict], str]:
    """(content, calls, finish_reason) of an answer: ``tool_calls`` when calls end it."""
    content, calls = (text, []) if plan is None else plan.split(text)
    return content, calls, "length" if not stopped else "tool_calls" if calls else "stop"


class ToolStream:
    """An answer's streamed pieces as the events a client is sent: ``("content", text)``,
    ``("call", k, call)`` (a call begins: its id and name), ``("arguments", k, text)`` and
    ``("call_done", k, call)``. Text that may be the start of a ``<tool_call>`` is held back until
    it is not; a named function's arguments stream as they come; other calls come whole at the end."""

    def __init__(self, plan: ToolPlan | None):
        self.plan, self.text, self.sent, self.started = plan, "", 0, False

    def feed(self, piece: str) -> list[tuple]:
        self.text += piece
        if self.plan is None:
            self.sent = len(self.text)
            return [("content", piece)]
        if self.plan.choice == "function":
            events = [] if self.started else [("call", 0, {"id": self.plan.named_id, "name": self.plan.name})]
            self.started = True
            return [*events, ("arguments", 0, piece)] if piece else events
        if self.plan.choice == "required":
            return []
        start = self.text.find(CALL_OPEN)
        if start < 0:
            start = len(self.text) - next((n for n in range(len(CALL_OPEN) - 1, 0, -1)
                                           if self.text.endswith(CALL_OPEN[:n])), 0)
        return self._content(len(self.text[:start].rstrip()))

    def _content(self, upto: int) -> list[tuple]:
        if upto <= self.sent:
            return []
        piece, self.sent = self.text[self.sent:upto], upto
        return [("content", piece)]

    def finish(self, content: str | None, calls: list[dict]) -> list[tuple]:
        """The events left once the answer is whole: its content not yet sent, then its calls."""
        events = self._content(len(content)) if content is not None and content.startswith(self.text[:self.sent]) \
            else []
        for k, call in enumerate(calls):
            if not (self.started and k == 0):
                events += [("call", k, call), ("arguments", k, call["arguments"])]
            events.append(("call_done", k, call))
        return events


def _function_of(tool: dict, shape: str) -> dict:
    fields = tool.get("function") if shape == "chat" else tool
    return {k: fields[k] for k in ("name", "description", "parameters") if fields.get(k) is not None}


def read_tools(body: dict, shape: str) -> ToolPlan | None:
    """The tools of a request (``shape``: ``chat`` or ``responses``), None where none may be called
    (none given, or ``tool_choice: "none"``). A 400 naming the field for what cannot be served: a tool
    choice without tools, a named function not among them, a custom tool, parameters structured output
    cannot hold (required and named choices are held to them)."""
    tools, choice = body.get("tools"), body.get("tool_choice")
    parallel = body.get("parallel_tool_calls")
    if parallel is not None and not isinstance(parallel, bool):
        raise ApiError(400, "'parallel_tool_calls' must be true or false", "invalid_type", "parallel_tool_calls")
    if tools is not None:
        check_listed_tools(tools, "tools", shape)
    named = isinstance(choice, dict)
    if not (choice in (None, "none", "auto", "required") or named):
        raise ApiError(400, f"'tool_choice' must be none, auto, required or a function, got {given(short(choice))}",
                       "invalid_value", "tool_choice")
    if choice == "none" or (not tools and choice in (None, "auto")):
        return None
    if not tools:
        raise ApiError(400, "'tool_choice' needs 'tools' to choose from", "invalid_value", "tool_choice")
    name = None
    if named:
        where = "tool_choice.function" if shape == "chat" else "tool_choice"
        target = choice.get("function") if shape == "chat" else choice
        if choice.get("type") != "function" or not isinstance(target, dict) or not isinstance(target.get("name"), str):
            shown = '"function": {"name": ...}' if shape == "chat" else '"name": ...'
            raise ApiError(400, f"'tool_choice' must be none, auto, required or {{\"type\": \"function\", {shown}}}",
                           "invalid_value", "tool_choice")
        name = target["name"]
    functions = []
    for k, tool in enumerate(tools):
        if tool.get("type") == "custom":
            raise ApiError(400, f"'tools[{k}]': custom tools are not served here (function tools are)",
                           "unsupported_parameter", f"tools[{k}].type")
        functions.append(_function_of(tool, shape))
    names: set[str] = set()
    twice = next((f["name"] for f in functions if f["name"] in names or names.add(f["name"])), None)
    if twice is not None:
        raise ApiError(400, f"'tools': two tools are named {short(twice, 64)!r}", "invalid_value", "tools")
    if name is not None and name not in names:
        raise ApiError(400, f"'{where}.name' {short(name, 64)!r} is not one of the tools", "invalid_value",
                       f"{where}.name")
    plan = ToolPlan(functions, "function" if named else choice or "auto", name, parallel is not False)
    if plan.choice != "auto":
        hold_calls(plan, shape)
    return plan


def hold_calls(plan: ToolPlan, shape: str) -> dict:
    """Check that structured output can hold ``plan``'s calls (a 400 naming the tool whose parameters it
    cannot hold, or ``tool_choice``/``response_format`` without xgrammar) and return the schema held:
    ``required``'s array, the named function's arguments, or (``auto`` beside a ``response_format``) one
    ``<tool_call>`` block's ``{"name", "arguments"}``."""
    from ..structured import INSTALL_HINT, available, schema_grammar

    named, why = plan.choice == "function", "tool_choice" if plan.choice != "auto" else "response_format"
    if not available():
        what = "a function" if named else plan.choice if plan.choice == "required" else "beside tools"
        raise ApiError(400, f"'{why}' {what} is not supported by this server (calls are held to the tools' "
                            f"parameters by structured output, which needs xgrammar on the server: {INSTALL_HINT})",
                       "unsupported_parameter", why)
    for k, f in enumerate(plan.functions):  # each tool's own schema first: its error names the tool
        if plan.name in (None, f["name"]):
            at = f"tools[{k}].function.parameters" if shape == "chat" else f"tools[{k}].parameters"
            try:
                schema_grammar(f.get("parameters") or NO_PARAMETERS, True)
            except Showo2Error as e:
                raise ApiError(400, f"{at}: {e}", "invalid_value", at) from None
            ref = None if named else _outside_ref(f.get("parameters") or {})
            if ref is not None:  # (held calls of several tools: their root is the calls' schema)
                raise ApiError(400, f"{at}: with {'tool_choice required' if why == 'tool_choice' else why} a '$ref' "
                                    f"must point into '#/$defs/' or '#/definitions/', got {short(ref, 60)!r}",
                               "invalid_value", at)
    schema = plan.schema() if plan.choice != "auto" else plan.call_schema()
    try:
        schema_grammar(schema, True)
    except Showo2Error as e:
        raise ApiError(400, f"tools: {e}", "invalid_value", "tools") from None
    return schema


def check_listed_tools(tools, param: str, shape: str) -> list:
    """Tools, checked as OpenAI and vLLM check them, so that what a response echoes is a valid tool
    list: a list of objects, each a function tool named by a string. ``shape``: ``chat`` (``{"type":
    "function", "function": {"name", ...}}``), ``functions`` (the legacy ``{"name", ...}``) or
    ``responses`` (``{"type": "function" or "custom", "name", ...}``; the hosted tools are not served)."""
    if not isinstance(tools, list):
        raise ApiError(400, f"'{param}' must be a list of objects", "invalid_type", param)
    kinds = ("function", "custom") if shape == "responses" else ("function",)
    for k, tool in enumerate(tools):
        where = f"{param}[{k}]"
        if not isinstance(tool, dict):
            raise ApiError(400, f"'{where}' must be an object", "invalid_type", where)
        if shape != "functions" and tool.get("type") not in kinds:
            raise ApiError(400, f"'{where}.type' must be {' or '.join(kinds)} (Show-o2 serves function tools, and "
                                f"no hosted ones), got {given(tool.get('type'))}", "invalid_value", f"{where}.type")
        fields = tool.get("function") if shape == "chat" else tool
        at = f"{where}.function" if shape == "chat" else where
        if not isinstance(fields, dict):
            raise ApiError(400, f"'{at}' must be an object", "invalid_type", at)
        if not isinstance(fields.get("name"), str) or not fields["name"]:
            raise ApiError(400, f"'{at}.name' is required (a string)", "invalid_value", f"{at}.name")
        for key, kind, what in (("description", str, "a string"), ("parameters", dict, "an object"),
                                ("strict", bool, "true or false")):
            if fields.get(key) is not None and not isinstance(fields[key], kind):
                raise ApiError(400, f"'{at}.{key}' must be {what}", "invalid_type", f"{at}.{key}")
        if _depth(fields) > MAX_TOOL_DEPTH:
            raise ApiError(400, f"'{at}' nests deeper than {MAX_TOOL_DEPTH} levels (objects and lists inside each "
                                "other)", "invalid_value", at)
    return tools


def _depth(value) -> int:
    """How deep JSON nests (a scalar 0, ``[]`` 1), without recursion."""
    deepest, todo = 0, [(value, 1)]
    while todo:
        node, depth = todo.pop()
        if isinstance(node, (dict, list)):
            deepest = max(deepest, depth)
            todo.extend((v, depth + 1) for v in (node.values() if isinstance(node, dict) else node))
    return deepest


# ---- a conversation's earlier calls and results, as the template shows them ------------------------

def calls_text(calls, param: str) -> str:
    """An assistant message's ``tool_calls`` as its turn shows them: each a ``<tool_call>`` block of
    ``{"name": ..., "arguments": {...}}`` (the arguments a client sends as JSON text, read back)."""
    if not isinstance(calls, list):
        raise ApiError(400, f"'{param}' must be a list", "invalid_type", param)
    blocks = []
    for j, call in enumerate(calls):
        at = f"{param}[{j}]"
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict) or call.get("type", "function") != "function" or \
                not isinstance(fn.get("name"), str) or not fn["name"]:
            raise ApiError(400, f"'{at}' must be a function call: {{\"type\": \"function\", \"function\": "
                                "{\"name\": ..., \"arguments\": ...}}", "invalid_value", at)
        arguments = fn.get("arguments") or "{}"
        arguments = read_arguments(arguments, f"{at}.function.arguments") if isinstance(arguments, str) else arguments
        blocks.append(template_tag(CALL_OPEN) + "\n" + json.dumps({"name": fn["name"], "arguments": arguments},
                                                                ensure_ascii=False) + "\n" + template_tag(CALL_CLOSE))
    return "\n".join(blocks)


def read_arguments(text: str, param: str):
    """A call's arguments, JSON text, read as the request body is (NaN and Infinity refused); a 400
    naming ``param`` where they are not, in :func:`~showo2_cli.errors.json_problem`'s words."""
    try:
        return json.loads(text, parse_constant=no_constant)
    except (ValueError, RecursionError) as e:
        raise ApiError(400, f"'{param}' {json_problem(e, 120)}", "invalid_value", param) from None


def result_text(content: str) -> str:
    """A tool's result as the user turn that carries it shows it."""
    return f"{template_tag('<tool_response>')}\n{content}\n{template_tag('</tool_response>')}"


__all__ = ["ToolPlan", "ToolStream", "calls_text", "check_listed_tools", "hold_calls", "read_arguments", "read_tools",
           "result_text", "split_answer"]
