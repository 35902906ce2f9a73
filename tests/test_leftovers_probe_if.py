"""The long left-alone list judged again (probe IF): each thing decided as the field's tools do it,
fixed in one place; these tests fail on the sources the probe began from."""

from __future__ import annotations

import json

import pytest


@pytest.mark.parametrize("raw, words", [
    (b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "the request body holds JSON nested too deeply"),
    (b"[" * 5_000 + b"]" * 5_000, "the request body holds JSON nested too deeply"),
    (b'{"seed": ' + b"9" * 5_000 + b"}", "the request body holds a number of more than 4,300 digits"),
    (b'{"seed": -' + b"9" * 4_301 + b"}", "the request body holds a number of more than 4,300 digits"),
    (b'{"temperature": NaN}', "the request body is not valid JSON: NaN is not a number JSON allows"),
    (b'{"a": ', "the request body is not valid JSON: Expecting value: line 1 column 7"),
])
def test_a_body_past_pythons_json_limits_is_refused_in_the_apis_words(raw, words):
    """Deep nesting and a 5,000-digit integer were 400s in Python's words ("maximum recursion depth
    exceeded while decoding a JSON array from a unicode string", "Exceeds the limit (4300 digits) for
    integer string conversion ...; use sys.set_int_max_str_digits() to increase the limit", advice
    a client cannot take): they are the API's own now, as the project's other JSON readers say them."""
    from showo2_cli.serve.body import parse_body
    from showo2_cli.serve.errors import ApiError

    with pytest.raises(ApiError) as refused:
        parse_body(raw)
    err = refused.value
    assert (err.status, err.code) == (400, "invalid_json")
    assert err.message.startswith(words), err.message
    assert "recursion" not in err.message and "sys." not in err.message


def test_a_training_record_past_pythons_json_limits_is_said_in_the_projects_words(tmp_path):
    from showo2_cli.errors import InputError
    from showo2_cli.training.records import Records, build_index
    from showo2_cli.training.schema import DataSource

    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "metadata.jsonl").write_text(json.dumps({"file_name": "1.png", "text": "one"}) + "\n"
                                           + '{"file_name": "2.png", "text": "x", "n": ' + "7" * 5000 + "}\n")
    records = Records(*build_index(DataSource(kind="pairs", path=str(folder)), tmp_path / "index"))
    assert records[0]["text"] == "one"
    with pytest.raises(InputError, match=r"record 1 holds a number of more than 4,300 digits$"):
        records[1]
