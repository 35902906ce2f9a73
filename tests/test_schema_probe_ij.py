"""Probe IJ: today's merges used together. IH refused a ``pattern`` beside ``minLength``/``maxLength``
(xgrammar holds the pattern and drops the lengths); IE holds ``required`` and named tool calls to the
tools' parameters. Pydantic writes ``Field(pattern=..., max_length=...)`` as both keywords, so a
tool made by the openai SDK's ``pydantic_function_tool`` from such a model was refused with
``required`` or a named choice, though its pattern alone already keeps every answer within the
lengths. Such lengths are taken now (and left out of what xgrammar reads); lengths the pattern does
not imply are refused as before."""

from __future__ import annotations

import json

import pytest

from showo2_cli.errors import UsageError
from showo2_cli.serve import ServerConfig
from showo2_cli.serve.requests import parse_chat
from showo2_cli.serve.responses import parse_responses

pytest.importorskip("xgrammar")
openai = pytest.importorskip("openai")
pydantic = pytest.importorskip("pydantic")


def _accepts(grammar, value) -> bool:
    from xgrammar.testing import _is_grammar_accept_string

    return _is_grammar_accept_string(grammar, json.dumps(value, ensure_ascii=False))


def _models():
    from pydantic import BaseModel, Field

    class Airport(BaseModel):
        """An airport by its IATA code."""
        code: str = Field(pattern=r"^[A-Z]{3}$", max_length=3)

    class Flight(BaseModel):
        """Book a flight."""
        origin: Airport
        number: str = Field(pattern=r"^[A-Z]{2}\d{1,4}$", min_length=3, max_length=6)

    return Airport, Flight


@pytest.mark.parametrize("choice", ["required", "named"])
def test_a_pydantic_tools_pattern_with_its_implied_length_is_held_on_both_endpoints(choice):
    """Before: 400 "tools[0].function.parameters: JSON schema #/$defs/Airport/properties/code/pattern:
    a 'pattern' beside 'minLength'/'maxLength' is not supported in structured output"."""
    tools = [openai.pydantic_function_tool(m) for m in _models()]
    assert tools[1]["function"]["parameters"]["$defs"]["Airport"]["properties"]["code"]["maxLength"] == 3
    named = choice == "named"
    chat = parse_chat({"messages": [{"role": "user", "content": "Book LH400 from FRA"}], "tools": tools,
                       "tool_choice": {"type": "function", "function": {"name": "Flight"}} if named else choice},
                      ServerConfig())
    responses = parse_responses({"input": "Book LH400 from FRA", "tools": [{"type": "function", **t["function"]}
                                                                          for t in tools],
                                 "tool_choice": {"type": "function", "name": "Flight"} if named else choice},
                                ServerConfig())
    assert chat.tools.choice == responses.chat.tools.choice == ("function" if named else "required")


def test_the_held_answers_keep_the_pattern_and_so_the_lengths_without_xgrammars_warning(capfd):
    from showo2_cli.structured import schema_grammar

    _, flight = _models()
    schema = openai.pydantic_function_tool(flight)["function"]["parameters"]
    grammar = schema_grammar(schema, True)
    assert "minLength/maxLength" not in capfd.readouterr().err  # xgrammar warned of the lengths it dropped
    good = {"origin": {"code": "FRA"}, "number": "LH400"}
    assert _accepts(grammar, good)
    assert not _accepts(grammar, {**good, "origin": {"code": "FRAN"}})
    assert not _accepts(grammar, {**good, "number": "LH40000"})
    assert schema["$defs"]["Airport"]["properties"]["code"]["maxLength"] == 3  # the caller's schema is untouched


@pytest.mark.parametrize("rule", [
    {"pattern": "^[a-z]+$", "maxLength": 2},         # the pattern allows any length
    {"pattern": "^[A-Z]{2,5}$", "maxLength": 3},     # longer than the lengths
    {"pattern": "^[A-Z]{3}$", "minLength": 4},       # shorter than the lengths
    {"pattern": "^[A-Z]{3}$", "maxLength": 3.0},     # a length that is not a whole number
    {"pattern": r"^\p{L}{3}$", "maxLength": 3},      # a pattern Python cannot read: not known to imply
])
def test_lengths_the_pattern_does_not_imply_are_still_refused(rule):
    from showo2_cli.structured import check_schema

    with pytest.raises(UsageError, match="a 'pattern' beside 'minLength'/'maxLength' is not supported"):
        check_schema({"type": "object", "properties": {"a": {"type": "string", **rule}}})


def test_only_schemas_lose_their_implied_lengths_not_values_that_look_like_them():
    """A ``const`` (or ``enum``, ``default``) object holding "pattern" and "maxLength" keys is a value,
    kept whole in the grammar."""
    from showo2_cli.structured import schema_grammar

    value = {"pattern": "^a$", "maxLength": 1}
    grammar = schema_grammar({"type": "object", "properties": {"v": {"const": value}}, "required": ["v"]}, True)
    from xgrammar.testing import _is_grammar_accept_string

    assert _is_grammar_accept_string(grammar, '{"v": {"pattern":"^a$","maxLength":1}}')  # (a const: compact)
    assert not _is_grammar_accept_string(grammar, '{"v": {"pattern":"^a$"}}')
