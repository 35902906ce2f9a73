"""Structured output: answers held to a JSON schema (or to any JSON object) by constrained decoding.

The schema becomes a grammar (xgrammar, the library vLLM, SGLang and TensorRT-LLM use), the grammar
a mask over the vocabulary at each step of the project's one decoding loop
(:func:`~showo2_cli.text_decoding.generate`): a token that cannot continue a valid answer gets a
score of -inf before any penalty, bias or sampling, and once the answer is a complete value only the
stop token is left. So every answer parses and validates, unless ``max_new_tokens`` cut it.

xgrammar converts most of JSON Schema, but passes over a few keywords without a word (the answer
would then not validate): :func:`check_schema` refuses those by name, torch-free, before any model
loads. This module imports xgrammar only when a schema is used (``pip install 'showo2[json]'``).
"""

from __future__ import annotations

import json
import re
import weakref

from .errors import UsageError, short

try:  # the standard library's regular-expression parser (its public name until Python 3.11)
    from re import _parser as _regex_parser
except ImportError:  # pragma: no cover - Python 3.10
    import sre_parse as _regex_parser

#: the schema of JSON mode (OpenAI's ``json_object``, Ollama's ``format: "json"``): any JSON object
JSON_OBJECT = {"type": "object"}
#: the largest schema taken, as compact JSON (OpenAI's limit is 15,000 characters of property names
#: and enum values; a schema of 1 MiB compiles in seconds)
MAX_SCHEMA_CHARS = 64 * 1024
#: the deepest schema taken (a schema's nesting is the grammar's recursion)
MAX_SCHEMA_DEPTH = 32
#: the most compile work a schema may ask for, counted before compiling: an object's optional
#: properties ``k`` cost ``k**2`` (``k**3`` with ``minProperties``/``maxProperties``, which make
#: xgrammar count them), summed over the schema's objects. Measured over a 20,000-token vocabulary
#: (xgrammar 0.2.9): 100 optional properties 0.11 s, 400 2.4 s, 100 with ``minProperties`` 7.5 s;
#: about 3.6 times that at Qwen2.5's 151,665 tokens. 2**15 takes a 100-field form and 181
#: optional properties in one object (32 with a property count), about 2 s at worst.
MAX_SCHEMA_WORK = 2**15
#: the longest ``pattern`` once its counted repetitions are written out (``[a-z]{1,1000}`` is
#: 1,000), and the most of it in one schema: xgrammar expands them, about quadratically
#: (``^[a-z]{10000}$`` took 8 s to convert, ``.{0,2000}`` 3.0 s, ``.{0,1000}`` 0.29 s,
#: ``[a-z]{1,1000}`` 0.04 s; ``.{0,10000}`` 4.6 s to compile over 20,000 tokens)
MAX_PATTERN_SIZE = 1000
MAX_PATTERNS_SIZE = 4000

#: the counts of JSON Schema (a non-negative integer each) and the largest xgrammar holds: it takes
#: them as 32-bit integers, so ``minLength: -1`` compiled to a grammar it cannot parse (a RuntimeError
#: at the answer's first token) and ``maxLength: 2**32 + 3`` held answers to 3 characters
COUNTS = ("minLength", "maxLength", "minItems", "maxItems", "minProperties", "maxProperties")
MAX_COUNT = 2**31 - 1

#: JSON Schema keywords that xgrammar converts without honouring them (checked against xgrammar
#: 0.2: the grammar is the same with or without them), each refused with why
UNSUPPORTED = {
    "not": "a negated schema", "if": "a conditional schema", "then": "a conditional schema",
    "else": "a conditional schema", "dependentRequired": "dependent properties",
    "dependentSchemas": "dependent schemas", "dependencies": "dependent properties",
    "propertyNames": "constraints on property names", "contains": "constraints on some items",
    "minContains": "constraints on some items", "maxContains": "constraints on some items",
    "$dynamicRef": "dynamic references", "$recursiveRef": "dynamic references",
}
#: a regular expression's lookaround, which xgrammar's regex converter passes over (with a warning)
_LOOKAROUND = re.compile(r"(?<!\\)\(\?<?[=!]")
#: keywords whose value is a schema, a list of schemas, or a map of names to schemas
_SUBSCHEMA = {"items", "additionalProperties", "additionalItems", "unevaluatedItems", "unevaluatedProperties"}
_SCHEMA_LISTS = {"anyOf", "oneOf", "allOf", "prefixItems"}
_SCHEMA_MAPS = {"properties", "patternProperties", "$defs", "definitions"}


def check_schema(schema, strict: bool = True) -> None:
    """Refuse (:class:`UsageError`, one line naming the place) a schema that is not a JSON Schema
    object this module can hold an answer to: too large or deep, a keyword xgrammar would pass over
    (:data:`UNSUPPORTED`), ``uniqueItems``, ``multipleOf`` on a number that need not be whole, a
    ``$ref`` outside the schema, a ``pattern`` beside a ``format``, or beside a ``minLength`` or ``maxLength``
    that allows fewer lengths than the pattern does, a
    count (:data:`COUNTS`) below 0 or over :data:`MAX_COUNT`. Torch-free (the options' ``validate()`` calls it)."""
    if not isinstance(schema, dict):
        raise UsageError(f"a JSON schema must be an object, got {type(schema).__name__}")
    try:
        text = json.dumps(schema, separators=(",", ":"), allow_nan=False)
    except RecursionError:  # (Python's "maximum recursion depth exceeded while encoding ..." is no answer)
        raise UsageError(f"the JSON schema nests deeper than {MAX_SCHEMA_DEPTH} levels") from None
    except (TypeError, ValueError) as e:
        raise UsageError(f"the JSON schema is not plain JSON: {short(str(e))}") from None
    if len(text) > MAX_SCHEMA_CHARS:
        raise UsageError(f"the JSON schema is {len(text):,} characters, more than {MAX_SCHEMA_CHARS:,}")
    work = {"objects": 0, "patterns": 0}
    _walk(schema, "#", 0, work)


#: a counted repetition of a regular expression: {n}, {m,}, {m,n}
_COUNT = re.compile(r"\{(\d+)(?:(,)(\d*))?\}")
#: an escape that takes braces (\p{L}, \u{1F600}, \x{41}): one atom
_BRACED_ESCAPE = re.compile(r"\\[pPux]\{[^}]*\}")


def pattern_size(pattern: str) -> int:
    """How long ``pattern`` is once its counted repetitions are written out (``(ab){3}`` is 6,
    ``(a{1,10}){1,10}`` 100, ``a*`` 1): what xgrammar's regex converter expands. A rough measure,
    made for the bound, not a parser: an unclosed bracket or brace counts as characters."""
    stack, total, last, i = [], 0, 0, 0
    while i < len(pattern):
        c, atom = pattern[i], 1
        if c == "\\":
            m = _BRACED_ESCAPE.match(pattern, i)
            i = m.end() if m else i + 2
        elif c == "[":
            j = i + 1 + (pattern[i + 1:i + 2] == "^")
            j += pattern[j:j + 1] == "]"
            while j < len(pattern) and pattern[j] != "]":
                j += 2 if pattern[j] == "\\" else 1
            i = j + 1
        elif c == "(":
            stack.append(total)
            total, last, i = 0, 0, i + 1
            continue
        elif c == ")" and stack:
            atom, total, i = total, stack.pop(), i + 1
        elif c == "{" and (m := _COUNT.match(pattern, i)):
            low, comma, high = m.groups()
            n = max(int(low), int(high) if high else 0) if comma else int(low)
            total += last * (max(n, 1) - 1)
            last, i = last * max(n, 1), m.end()
            continue
        else:
            i += 1
        total, last = total + atom, atom
    while stack:  # an unclosed group
        total += stack.pop()
    return total


def _count_work(node: dict, where: str, work: dict) -> None:
    """Add ``node``'s compile work (:data:`MAX_SCHEMA_WORK`, :data:`MAX_PATTERN_SIZE`) to ``work``;
    refuse it, naming the place, once over."""
    props = node.get("properties")
    if isinstance(props, dict) and props:
        required = node.get("required") if isinstance(node.get("required"), list) else []
        k = len(set(props) - {r for r in required if isinstance(r, str)})
        counted = "minProperties" in node or "maxProperties" in node
        work["objects"] += k ** 3 if counted else k ** 2
        if work["objects"] > MAX_SCHEMA_WORK:
            raise UsageError(
                f"JSON schema {short(where)}: too many optional properties to compile ({k} here; an object's "
                f"k optional properties count k², k³ with minProperties/maxProperties, at most {MAX_SCHEMA_WORK:,} "
                "in all): make more of them required or split the schema")
    for key in ("pattern", "patternProperties"):
        value = node.get(key)
        for pattern in ([value] if key == "pattern" else value if isinstance(value, dict) else ()):
            if not isinstance(pattern, str):
                continue
            size = pattern_size(pattern)
            work["patterns"] += size
            if size > MAX_PATTERN_SIZE or work["patterns"] > MAX_PATTERNS_SIZE:
                raise UsageError(
                    f"JSON schema {short(where)}/{key}: "
                    + (f"a pattern {size:,} characters long written out, more than {MAX_PATTERN_SIZE:,}"
                       if size > MAX_PATTERN_SIZE else
                       f"the patterns are more than {MAX_PATTERNS_SIZE:,} characters written out in all")
                    + " (counted repetitions are expanded: write a smaller count, or bound the string with "
                       "minLength/maxLength instead of a pattern)")


def _walk(node, where: str, depth: int, work: dict) -> None:
    if isinstance(node, bool):  # true: anything; false: nothing
        return
    if not isinstance(node, dict):
        raise UsageError(f"JSON schema {where}: a schema must be an object or a boolean, got {type(node).__name__}")
    if depth > MAX_SCHEMA_DEPTH:
        raise UsageError(f"the JSON schema nests deeper than {MAX_SCHEMA_DEPTH} levels (at {short(where)})")
    _count_work(node, where, work)
    for key, value in node.items():
        at = f"{where}/{key}"
        if key in UNSUPPORTED:
            raise UsageError(f"JSON schema {short(at)}: '{key}' ({UNSUPPORTED[key]}) is not supported in "
                             "structured output")
        if key == "uniqueItems" and value is True:
            raise UsageError(f"JSON schema {short(at)}: 'uniqueItems' is not supported in structured output")
        if key == "multipleOf" and node.get("type") != "integer":
            raise UsageError(f"JSON schema {short(at)}: 'multipleOf' is supported on integers only "
                             "(\"type\": \"integer\")")
        if key == "pattern" and "format" in node:  # xgrammar holds the format and drops the pattern
            raise UsageError(f"JSON schema {short(at)}: a 'pattern' beside a 'format' is not supported in structured "
                             "output (only the format would be held): give one of them")
        if key in COUNTS and isinstance(value, (int, float)) and not isinstance(value, bool) \
                and not 0 <= value <= MAX_COUNT:
            raise UsageError(f"JSON schema {short(at)}: '{key}' must be a whole number from 0 to {MAX_COUNT:,}, "
                             f"got {short(value)}")
        if key == "pattern" and ("minLength" in node or "maxLength" in node) and not _lengths_implied(node):
            raise UsageError(f"JSON schema {short(at)}: a 'pattern' beside 'minLength'/'maxLength' is not supported "
                             "in structured output (only the pattern would be held, and it allows other lengths): "
                             "put the length in the pattern (^[a-z]{1,12}$)")
        if key == "pattern" and isinstance(value, str) and _LOOKAROUND.search(value):
            raise UsageError(f"JSON schema {short(at)}: a lookahead or lookbehind in a pattern is not supported in "
                             "structured output")
        if key == "patternProperties" and isinstance(value, dict) and any(_LOOKAROUND.search(k) for k in value):
            raise UsageError(f"JSON schema {short(at)}: a lookahead or lookbehind in a pattern is not supported in "
                             "structured output")
        if key == "$ref" and not (isinstance(value, str) and (value == "#" or value.startswith("#/"))):
            raise UsageError(f"JSON schema {short(at)}: only references inside the schema ('#/...') are "
                             f"supported, got {short(value)}")
        if key in _SUBSCHEMA:
            _walk(value, at, depth + 1, work)
        elif key in _SCHEMA_LISTS:
            if not isinstance(value, list):
                raise UsageError(f"JSON schema {short(at)}: '{key}' must be a list of schemas")
            for i, sub in enumerate(value):
                _walk(sub, f"{at}/{i}", depth + 1, work)
        elif key in _SCHEMA_MAPS:
            if not isinstance(value, dict):
                raise UsageError(f"JSON schema {short(at)}: '{key}' must be an object of schemas")
            for name, sub in value.items():
                _walk(sub, f"{at}/{name}", depth + 1, work)


def _lengths_implied(node: dict) -> bool:
    """Whether every string ``node``'s pattern matches is within its ``minLength``/``maxLength``, so
    that holding the pattern alone (xgrammar drops the lengths and holds the pattern as a whole match)
    holds them too: ``{"pattern": "^[A-Z]{3}$", "maxLength": 3}``, as Pydantic writes
    ``Field(pattern=..., max_length=...)``. The pattern's shortest and longest match are Python's
    reading of it (False where Python cannot read it)."""
    low, high = node.get("minLength", 0), node.get("maxLength", MAX_COUNT)
    if not (isinstance(node["pattern"], str) and all(isinstance(v, int) and not isinstance(v, bool)
                                                     for v in (low, high))):
        return False
    try:
        shortest, longest = _regex_parser.parse(node["pattern"]).getwidth()
    except (re.error, RecursionError, OverflowError, ValueError, TypeError):
        return False
    return low <= shortest and longest <= high


def _without_implied_lengths(node):
    """``node`` (a checked schema) without the lengths its patterns imply, which xgrammar would drop
    with a warning of its own on stderr (the subschemas walked as :func:`check_schema` walks them)."""
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key in ("minLength", "maxLength") and "pattern" in node:
            continue  # (check_schema took the pattern only where they were implied)
        if key in _SUBSCHEMA:
            value = _without_implied_lengths(value)
        elif key in _SCHEMA_LISTS:
            value = [_without_implied_lengths(v) for v in value]
        elif key in _SCHEMA_MAPS:
            value = {k: _without_implied_lengths(v) for k, v in value.items()}
        out[key] = value
    return out


def read_schema(text: str) -> dict:
    """A JSON schema given on the command line: JSON text (starting with ``{``) or a file holding it
    (at most 4 times :data:`MAX_SCHEMA_CHARS` bytes, read by the one bounded reader; UTF-8, a
    byte-order mark allowed, or UTF-16 with its mark: what editors save), checked by
    :func:`check_schema`. Each problem is one :class:`UsageError` (a file's: its own error) line."""
    if not text.strip():
        raise UsageError("--json-schema is empty: give a JSON schema's file or its text")
    if text.lstrip().startswith("{"):
        raw, where = text, "--json-schema"
    else:
        from .media.files import decode_text, read_limited, text_encoding

        data = read_limited(text, 4 * MAX_SCHEMA_CHARS, "the JSON schema")
        where = f"'{text}'"
        try:  # as saved by an editor (a byte-order mark dropped); never a byte replaced, which changed
            raw = decode_text(data)  # an enum's 'caf\xe9' (Latin-1) into 'caf\ufffd' without a word
        except UnicodeDecodeError as e:
            kind = "UTF-8 (nor UTF-16)" if text_encoding(data).startswith("utf-16") else "UTF-8"
            raise UsageError(f"{where} is not {kind} text (byte {e.start}): save the schema as UTF-8") from None
    try:
        schema = json.loads(raw)
    except RecursionError:
        raise UsageError(f"{where}: JSON nested too deeply") from None
    except ValueError as e:
        raise UsageError(f"{where} is not valid JSON ({short(str(e))})") from None
    check_schema(schema)
    return schema


# xgrammar's own messages start with "[12:35:13] /project/cpp/json_schema_converter.cc:5088: "
_XGR_PREFIX = re.compile(r"^(\[[\d:]+\]\s+)?\S+\.(cc|h):\d+:\s*")


def available() -> bool:
    """Whether xgrammar is installed (without importing it)."""
    import importlib.util

    return importlib.util.find_spec("xgrammar") is not None


#: what to install for structured output
INSTALL_HINT = "pip install 'showo2[json]'"


def _xgrammar():
    try:
        import xgrammar
    except ImportError:
        raise UsageError(f"structured output (a JSON schema or JSON mode) needs xgrammar: {INSTALL_HINT}") from None
    return xgrammar


def schema_grammar(schema: dict, strict: bool = True):
    """The xgrammar ``Grammar`` of ``schema`` (checked by :func:`check_schema`): compact JSON, no
    whitespace between tokens beyond ``", "`` and ``": "`` (a free run of whitespace is where small
    models loop until the token limit). ``strict``: properties and items the schema does not declare
    are not written (OpenAI's ``strict: true``); else JSON Schema's own rule (allowed unless forbidden)."""
    check_schema(schema, strict)
    xgr = _xgrammar()
    try:
        return xgr.Grammar.from_json_schema(json.dumps(_without_implied_lengths(schema)), any_whitespace=False,
                                            strict_mode=bool(strict))
    except (RuntimeError, ValueError) as e:
        lines = [line for line in str(e).splitlines() if line.strip()]
        why = _XGR_PREFIX.sub("", lines[0] if lines else "")
        raise UsageError(f"the JSON schema cannot be used: {short(why, 160)}") from None


#: the most memory a compiler's cache of compiled grammars holds (the least recently used go first)
COMPILED_CACHE_BYTES = 64 * 2**20
#: compilers per tokenizer, then per (vocabulary width, stop ids): building one reads the vocabulary
_COMPILERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _compiler(tokenizer, vocab_size: int, stop_ids: tuple[int, ...]):
    xgr = _xgrammar()
    by_shape = _COMPILERS.setdefault(tokenizer, {})
    key = (vocab_size, stop_ids)
    if key not in by_shape:
        info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size, stop_token_ids=list(stop_ids))
        # compiled grammars are cached (a server answering one schema again compiles it once), within a
        # bound: xgrammar's default cache has none, and a server's clients may send any number of schemas
        by_shape[key] = xgr.GrammarCompiler(info, max_threads=1, cache_limit_bytes=COMPILED_CACHE_BYTES)
    return by_shape[key]


class GrammarConstraint:
    """A transformers ``LogitsProcessor`` holding one answer to a grammar: called with the answer's
    ids so far ``(1, n)`` and the scores ``(1, V)``, it advances its matcher by the ids it has not
    seen and sets the scores of every token the grammar does not allow next to -inf. Once the answer
    is complete, only ``stop_ids`` are allowed. One per answer (it keeps the answer's state)."""

    holds_answer = True  # decoding never falls back past it (``text_decoding.choose_token``)

    def __init__(self, tokenizer, grammar, stop_ids: tuple[int, ...]):
        self.tokenizer, self.grammar, self.stop_ids = tokenizer, grammar, tuple(stop_ids)
        self.matcher = self.mask = None
        self.seen = 0

    def __call__(self, input_ids, scores):
        xgr = _xgrammar()
        if self.matcher is None:  # the vocabulary's width is the scores' (the head may be padded)
            compiled = _compiler(self.tokenizer, scores.shape[-1], self.stop_ids).compile_grammar(self.grammar)
            self.matcher = xgr.GrammarMatcher(compiled)
            self.mask = xgr.allocate_token_bitmask(1, scores.shape[-1])
        ids = input_ids[0].tolist()
        for token in ids[self.seen:]:
            if not self.matcher.accept_token(int(token)):
                raise RuntimeError(f"token {token} does not continue the answer's grammar")
        self.seen = len(ids)
        self.matcher.fill_next_token_bitmask(self.mask)
        out = scores.float().clone()  # the caller's scores stay as they were
        xgr.apply_token_bitmask_inplace(out, self.mask.to(out.device))
        return out


def answer_or_calls_grammar(schema: dict, strict: bool, call: dict, parallel: bool = True):
    """The grammar of a reply that is either JSON of ``schema`` (as :func:`schema_grammar` holds it) or
    tool calls: ``<tool_call>`` blocks (Qwen2.5's hermes format, one a line) each holding a JSON ``call``
    (strict), one block only unless ``parallel``. xgrammar's structural tags join the two grammars."""
    xgr = _xgrammar()
    block = {"type": "tag", "begin": "<tool_call>\n", "content": {"type": "grammar", "grammar": str(
        schema_grammar(call, True))}, "end": "\n</tool_call>"}
    calls = {"type": "tags_with_separator", "tags": [block], "separator": "\n", "at_least_one": True,
             "stop_after_first": not parallel}
    answer = {"type": "grammar", "grammar": str(schema_grammar(schema, strict))}
    return xgr.Grammar.from_structural_tag(json.dumps({"type": "structural_tag", "format": {
        "type": "or", "elements": [answer, calls]}}))


def constraint_for(tokenizer, sampling) -> GrammarConstraint | None:
    """The constraint of ``sampling``'s JSON schema (a :class:`~showo2_cli.options.TextSampling`; with
    its ``tool_calls``, the schema's JSON or those calls), None for free text. Raises
    :class:`UsageError` for a schema that cannot be used."""
    schema = getattr(sampling, "json_schema", None)
    if schema is None:
        return None
    calls = getattr(sampling, "tool_calls", None)
    grammar = (schema_grammar(schema, sampling.strict_schema) if calls is None else
               answer_or_calls_grammar(schema, sampling.strict_schema, calls["schema"], calls["parallel"]))
    return GrammarConstraint(tokenizer, grammar, sampling.stop_ids)
