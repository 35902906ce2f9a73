"""Probe IJ: probe IF worded JSON nested past Python's recursion limit and numbers past its digit limit
in the project's words (``errors.json_problem``: the server's body, training records; probe IK's tool
arguments). Two readers of the same texts still said Python's: a training config (TOML, YAML or
JSON) and a chat transcript (``/load``)."""

from __future__ import annotations

import pytest

from showo2_cli.errors import UsageError

DEEP = "[" * 100_000 + "]" * 100_000
HUGE = "9" * 5_000
PYTHONS = ("recursion", "set_int_max_str_digits", "Exceeds the limit")


@pytest.mark.parametrize("name, text, words", [
    ("c.json", '{"x": ' + DEEP + "}", "holds JSON nested too deeply"),
    ("c.json", '{"x": ' + HUGE + "}", "holds a number of more than 4,300 digits"),
    ("c.toml", "x = " + DEEP + "\n", "holds TOML nested too deeply"),
    ("c.toml", "x = " + HUGE + "\n", "holds a number of more than 4,300 digits"),
    ("c.yaml", "x: " + DEEP + "\n", "holds YAML nested too deeply"),
    ("c.yaml", "x: " + HUGE + "\n", "holds a number of more than 4,300 digits"),
    ("c.toml", "x = [1\n", "is not valid TOML: Unclosed array"),  # a syntax error keeps the parser's words
])
def test_a_training_config_past_pythons_limits_is_said_in_the_projects_words(tmp_path, name, text, words):
    """Before: "config '...' is not valid JSON: maximum recursion depth exceeded while decoding a JSON
    array from a unicode string", "... is not valid TOML: Exceeds the limit (4300 digits) for integer
    string conversion: value has 5000 digits; use sys.set_int_max_str_digits() to increase the limit"."""
    if name.endswith(".yaml"):
        pytest.importorskip("yaml")
    from showo2_cli.training.config import load_config

    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(UsageError) as e:
        load_config(path)
    message = str(e.value)
    assert message.startswith(f"config '{path}' {words}") and "\n" not in message
    assert not any(w in message for w in PYTHONS)


@pytest.fixture(scope="module")
def demo():
    from showo2_cli.loading import bundled_demo_path, load

    if bundled_demo_path() is None:
        pytest.skip("the bundled demo is not installed")
    return load("demo")


@pytest.mark.parametrize("text, words", [(DEEP, "holds JSON nested too deeply"),
                                         ('{"turns": [], "x": ' + HUGE + "}", "holds a number of more than 4,300 digits"),
                                         ('{"turns": [', "is not valid JSON: Expecting value")])
def test_a_transcript_past_pythons_limits_is_said_in_the_projects_words(demo, tmp_path, text, words):
    """Before: "cannot read transcript '...': not JSON (Exceeds the limit (4300 digits) for i...)"."""
    from showo2_cli.chat import Conversation

    path = tmp_path / "t.json"
    path.write_text(text)
    conv = Conversation(demo)
    with pytest.raises(UsageError) as e:
        conv.load(path)
    assert str(e.value).startswith(f"transcript '{path}' {words}")
    assert not any(w in str(e.value) for w in PYTHONS) and conv.turns == []


@pytest.mark.parametrize("arguments, words", [
    ("{bad", "is not valid JSON: Expecting property name enclosed in double quotes"),
    ('{"x": NaN}', "is not valid JSON: NaN is not a number JSON allows"),
    ('{"x": -Infinity}', "is not valid JSON: -Infinity is not a number JSON allows"),
])
def test_an_earlier_calls_arguments_are_read_as_the_request_body_is(arguments, words):
    """Probe IE read a call's arguments text with Python's ``json.loads``: NaN was taken (the body's
    reader refuses it) and written into the prompt, and a syntax error said "is not JSON text" where the
    body says "is not valid JSON: <where and why>"."""
    from showo2_cli.serve import ApiError, ServerConfig
    from showo2_cli.serve.requests import parse_chat

    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": arguments}}
    body = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "tool_calls": [call]},
                         {"role": "tool", "tool_call_id": "c1", "content": "ok"}],
            "tools": [{"type": "function", "function": {"name": "f"}}]}
    with pytest.raises(ApiError) as e:
        parse_chat(body, ServerConfig())
    assert e.value.status == 400 and e.value.param == "messages[1].tool_calls[0].function.arguments"
    assert e.value.message.startswith(f"'messages[1].tool_calls[0].function.arguments' {words}")


@pytest.mark.parametrize("arguments", ['{"x": NaN}', '{"x": -Infinity}', '{"x": 1e999}'])
def test_a_call_written_with_a_number_json_lacks_is_the_answers_text(arguments):
    """With ``auto``, a ``<tool_call>`` whose arguments held NaN (or 1e999, inf to Python) was reported
    as a call whose ``arguments`` text said ``NaN``/``Infinity``: not JSON, which a client's JSON.parse
    refuses. Such a block does not parse: the answer is its text (as for any block that does not)."""
    from showo2_cli.serve.tools import ToolPlan, split_answer

    plan = ToolPlan([{"name": "f"}], "auto")
    answer = 'sure <tool_call>\n{"name": "f", "arguments": ' + arguments + '}\n</tool_call>'
    assert split_answer(plan, answer, True)[:2] == (answer, [])
    good = answer.replace(arguments, '{"x": 1.5}')
    assert split_answer(plan, good, True)[1][0]["arguments"] == '{"x": 1.5}'
