"""Structured output (probe FK): answers held to a JSON schema by constrained decoding (xgrammar)
through the Python API, the CLI's options and a real server on 127.0.0.1."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("xgrammar")

from showo2_cli.errors import UsageError  # noqa: E402
from showo2_cli.options import CaptionOptions, TextSampling  # noqa: E402
from showo2_cli.structured import check_schema, read_schema  # noqa: E402

IMAGE = "pexels-taryn-elliott-4144459.jpg"
WORD = {"type": "string", "maxLength": 12}
SCHEMAS = {
    "required fields": {"type": "object", "properties": {"name": WORD, "age": {"type": "integer", "minimum": 0,
                                                                                "maximum": 120}},
                        "required": ["name", "age"]},
    "enum": {"type": "object", "properties": {"color": {"enum": ["red", "green", "blue"]}}, "required": ["color"]},
    "array": {"type": "object", "properties": {"xs": {"type": "array", "items": {"type": "integer", "minimum": -5,
                                                                                  "maximum": 5},
                                                      "minItems": 1, "maxItems": 3}}, "required": ["xs"]},
    "nested": {"type": "object", "properties": {"box": {"type": "object", "properties": {
        "w": {"type": "integer", "minimum": 1, "maximum": 99}, "ok": {"type": "boolean"}}, "required": ["w", "ok"]}},
        "required": ["box"]},
}


def valid(value, schema) -> bool:
    """The JSON Schema rules these tests' schemas use (strict: no undeclared property)."""
    if "enum" in schema:
        return value in schema["enum"]
    kind = schema.get("type")
    if kind == "object":
        props = schema.get("properties", {})
        return (isinstance(value, dict) and set(schema.get("required", [])) <= set(value) <= set(props)
                and all(valid(v, props[k]) for k, v in value.items()))
    if kind == "array":
        return (isinstance(value, list) and schema.get("minItems", 0) <= len(value) <= schema.get("maxItems", 1e9)
                and all(valid(v, schema["items"]) for v in value))
    if kind == "integer":
        return (type(value) is int and schema.get("minimum", -1e18) <= value <= schema.get("maximum", 1e18))
    if kind == "string":
        return isinstance(value, str) and len(value) <= schema.get("maxLength", 1e9)
    if kind == "boolean":
        return isinstance(value, bool)
    raise AssertionError(f"the test's validator has no rule for {schema}")


@pytest.fixture(scope="module")
def demo():
    from showo2_cli.loading import load

    return load("demo")


@pytest.mark.parametrize("name", list(SCHEMAS))
def test_answers_parse_and_validate(demo, name):
    from showo2_cli.chat import Conversation

    schema = SCHEMAS[name]
    for temperature, seed in ((0.0, None), (1.0, 3)):  # greedy and sampled
        conv = Conversation(demo)
        answer = conv.ask("Describe a person.", TextSampling(48, temperature, seed=seed, json_schema=schema))
        assert conv.turns[-1].stopped, answer  # finished (the stop token), not cut
        assert valid(json.loads(answer), schema), answer


def test_caption_streams_a_valid_answer(demo, media_dir):
    from showo2_cli.api import caption

    pieces = []
    schema = SCHEMAS["nested"]
    r = caption(demo, media_dir / IMAGE, CaptionOptions(questions=["What is it?", "Where?"], max_new_tokens=48,
                                                         json_schema=schema),
                on_text=lambda i, p: pieces.append(p))
    assert "".join(pieces) == "".join(r.answers) and max(r.token_counts) < 48
    assert all(valid(json.loads(a), schema) for a in r.answers), r.answers
    assert r.options["json_schema"] == schema  # recorded with the other options


def test_without_a_schema_nothing_changes():
    from showo2_cli.text_decoding import logits_processors

    assert len(logits_processors(TextSampling(), 419)) == 0  # greedy decoding: the plain argmax, as before


@pytest.mark.parametrize("schema, named", [
    ({"type": "object", "not": {"required": ["a"]}}, "'not'"),
    ({"type": "object", "properties": {"a": {"type": "array", "uniqueItems": True}}}, "uniqueItems"),
    ({"type": "object", "properties": {"a": {"$ref": "https://example.com/s.json"}}}, "references"),
    ({"type": "number", "multipleOf": 0.5}, "multipleOf"),
    ({"type": "object", "if": {}, "then": {}}, "'if'"),
    ([1], "must be an object"),
    ({"type": "string", "pattern": "a(?!b)"}, "lookahead"),
    ({"type": "object", "patternProperties": {"(?<=x)y": {}}}, "lookahead"),
    # probe FQ: xgrammar holds the format and drops the pattern ('x@y.z' passed '^a+$')
    ({"type": "object", "properties": {"e": {"type": "string", "format": "email", "pattern": "^a+$"}}},
     "'pattern' beside a 'format'"),
])
def test_unsupported_schema_is_one_line(schema, named):
    with pytest.raises(UsageError) as e:
        check_schema(schema)
    assert named in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(UsageError):
        CaptionOptions(json_schema=schema).validate()


def optional(n, **more):
    return {"type": "object", "properties": {f"p{i}": {} for i in range(n)}, **more}


@pytest.mark.parametrize("schema, named", [
    (optional(1200), "optional properties"),  # FK: 44 s to compile over Qwen2.5's vocabulary
    (optional(6000), "optional properties"),  # 48 KB: hours
    ({"type": "object", "properties": {f"o{j}": optional(100) for j in range(4)}}, "optional properties"),
    (optional(40, minProperties=1), "optional properties"),  # 100 with minProperties: 7.5 s at 20k tokens
    ({"type": "string", "pattern": "^[a-z]{10000}$"}, "pattern 10,002"),  # 8 s to convert
    ({"type": "string", "pattern": "^((a{1,100}){1,100})$"}, "pattern 10,002"),
    ({"type": "object", "patternProperties": {".{0,9999}": {}}}, "patternProperties"),
    ({"type": "object", "properties": {f"s{i}": {"type": "string", "pattern": "[a-z]{1,900}"} for i in range(5)}},
     "in all"),
])
def test_costly_schema_is_refused_before_compiling(schema, named):
    from showo2_cli.structured import schema_grammar

    with pytest.raises(UsageError) as e:
        schema_grammar(schema)
    assert named in str(e.value) and "\n" not in str(e.value)


def test_honest_schemas_are_within_the_bounds():
    from showo2_cli.structured import pattern_size, schema_grammar

    assert [pattern_size(p) for p in ("^\\d{3}-\\d{4}$", "(ab){3}", "(a{1,10}){1,10}", "x{2,}", "[\\]a]{5}",
                                      "\\p{L}{4}", "((a")] == [10, 6, 100, 2, 5, 4, 1]
    pydantic = {"$defs": {"Step": {"properties": {"explanation": {"type": "string"}, "output": {"type": "string"}},
                                   "required": ["explanation", "output"], "type": "object"},
                          "Tree": {"type": "object", "properties": {"v": {"type": "integer"}, "kids": {
                              "type": "array", "items": {"$ref": "#/$defs/Tree"}}}, "required": ["v", "kids"]}},
                "properties": {"steps": {"items": {"$ref": "#/$defs/Step"}, "type": "array"},
                               "final_answer": {"type": "string"}, "tree": {"$ref": "#/$defs/Tree"},
                               "note": {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None}},
                "required": ["steps", "final_answer"], "type": "object", "additionalProperties": False}
    form = optional(100)  # a 100-field form, every field optional
    many = {"type": "object", "properties": {f"o{j}": optional(100) for j in range(3)}}
    email = {"type": "string", "pattern": "^[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9.-]{1,255}$"}
    for schema in (pydantic, form, many, email, optional(181), optional(32, maxProperties=3)):
        schema_grammar(schema)


def test_stop_strings_and_a_schema_are_refused():
    with pytest.raises(UsageError, match="stop strings"):
        TextSampling(json_schema={"type": "object"}, stop_strings=("}",)).validate()


def test_read_schema_text_and_file(tmp_path):
    assert read_schema('{"type": "object"}') == {"type": "object"}
    f = tmp_path / "s.json"
    f.write_text(json.dumps(SCHEMAS["enum"]))
    assert read_schema(str(f)) == SCHEMAS["enum"]
    for bad in ("{nope", str(tmp_path / "missing.json"), "", str(tmp_path)):
        with pytest.raises(Exception) as e:
            read_schema(bad)
        assert "\n" not in str(e.value)


def test_read_schema_file_encodings(tmp_path):
    """Probe FR: a schema file is read as editors save it (UTF-8 with a byte-order mark, UTF-16 with
    its mark), and bytes that are not text are refused in one line, never replaced: a Latin-1 enum
    value 'caf\xe9' was read as 'caf\ufffd' (the output held to a replacement character), and a
    byte-order mark made it 'not valid JSON'."""
    schema = {"enum": ["caf\u00e9", "tea"]}
    text = json.dumps(schema, ensure_ascii=False)
    for name, data in (("bom.json", b"\xef\xbb\xbf" + text.encode()), ("u16.json", text.encode("utf-16"))):
        (tmp_path / name).write_bytes(data)
        assert read_schema(str(tmp_path / name)) == schema
    (tmp_path / "latin1.json").write_bytes(text.encode("latin-1"))
    with pytest.raises(UsageError) as e:
        read_schema(str(tmp_path / "latin1.json"))
    assert str(e.value).endswith("latin1.json' is not UTF-8 text (byte 14): save the schema as UTF-8")
    (tmp_path / "odd16.json").write_bytes(b"\xff\xfe" + text.encode("utf-16-le") + b"x")
    with pytest.raises(UsageError, match=r"is not UTF-8 \(nor UTF-16\) text \(byte 52\)") as e:
        read_schema(str(tmp_path / "odd16.json"))
    assert "\n" not in str(e.value)


def test_a_schema_xgrammar_refuses_is_a_usage_error(demo, media_dir):
    from showo2_cli.api import caption

    with pytest.raises(UsageError, match="cannot be used"):
        caption(demo, media_dir / IMAGE, CaptionOptions(json_schema={"$ref": "#/$defs/missing"}))


@pytest.fixture(scope="module")
def server(demo):
    pytest.importorskip("fastapi")
    from conftest import serving

    with serving(demo) as base:
        yield f"{base}/v1/chat/completions"


def fmt(schema, strict=True):
    return {"type": "json_schema", "json_schema": {"name": "x", "schema": schema, "strict": strict}}


def test_server_response_format(server):
    import httpx

    hi = [{"role": "user", "content": "Describe a person."}]
    for name in ("required fields", "enum"):
        r = httpx.post(server, json={"messages": hi, "max_tokens": 48, "response_format": fmt(SCHEMAS[name])},
                       timeout=60)
        assert r.status_code == 200, r.text
        choice = r.json()["choices"][0]
        assert choice["finish_reason"] == "stop" and valid(json.loads(choice["message"]["content"]), SCHEMAS[name])
    r = httpx.post(server, json={"messages": hi, "max_tokens": 16, "response_format": {"type": "json_object"}},
                   timeout=60)
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"].startswith("{")
    # cut by max_tokens: "length", as OpenAI says it
    r = httpx.post(server, json={"messages": hi, "max_tokens": 3, "response_format": fmt(SCHEMAS["nested"])},
                   timeout=60)
    assert r.json()["choices"][0]["finish_reason"] == "length"
    # streamed: the pieces are the whole answer
    body = {"messages": hi, "max_tokens": 48, "stream": True, "response_format": fmt(SCHEMAS["array"])}
    with httpx.stream("POST", server, json=body, timeout=60) as r:
        chunks = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {")]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert valid(json.loads(text), SCHEMAS["array"]) and chunks[-1]["choices"][0]["finish_reason"] == "stop"
    # refused in one line, naming what
    for bad, words in (({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object", "not": {}}}}, "'not'"),
                       ({"type": "xml"}, "json_object or json_schema"),
                       (fmt({"type": "banana"}), "banana"),
                       (fmt(optional(1200)), "optional properties")):
        r = httpx.post(server, json={"messages": hi, "response_format": bad}, timeout=60)
        err = r.json()["error"]
        assert r.status_code == 400 and words in err["message"] and err["param"].startswith("response_format")
    r = httpx.post(server, json={"messages": hi, "stop": "}", "response_format": {"type": "json_object"}}, timeout=60)
    assert r.status_code == 400 and r.json()["error"]["param"] == "stop"
    prefill = hi + [{"role": "assistant", "content": "{"}]
    r = httpx.post(server, json={"messages": prefill, "response_format": {"type": "json_object"}}, timeout=60)
    assert r.status_code == 400
