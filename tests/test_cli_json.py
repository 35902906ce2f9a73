"""The machine-readable surface: --json error envelopes only where --json was asked for."""

from __future__ import annotations

import json

from showo2_cli.cli import main


def test_json_value_of_another_option_is_not_json_mode(tmp_path, capsys):
    # `-q --json` asks the question "--json": the error stays one line on stderr, stdout empty
    code = main(["caption", str(tmp_path / "missing.png"), "-q", "--json"])
    out, err = capsys.readouterr()
    assert code == 3 and out == ""
    assert err.startswith("showo2: error: cannot read media file")


def test_json_after_double_dash_is_an_argument(tmp_path, capsys):
    code = main(["t2i", "--model", str(tmp_path / "none"), "--", "--json"])
    out, err = capsys.readouterr()
    assert code == 4 and out == "" and err.startswith("showo2: error: no model")


def test_json_flag_still_gives_the_envelope(tmp_path, capsys):
    code = main(["caption", str(tmp_path / "missing.png"), "-q", "x", "--json"])
    out, _ = capsys.readouterr()
    assert code == 3
    assert json.loads(out) == {"error": {"kind": "input", "message": json.loads(out)["error"]["message"],
                                         "exit_code": 3}}
