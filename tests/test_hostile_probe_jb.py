"""Probe JB: findings of the round-thirty hostile corpus (benchmarks/hostile_corpus_jb.py)."""

from __future__ import annotations

import pytest

from showo2_cli.errors import UsageError
from showo2_cli.loading import bundled_demo_path, load


@pytest.fixture(scope="module")
def demo():
    if bundled_demo_path() is None:
        pytest.skip("the bundled demo is not installed")
    return load("demo")


@pytest.mark.parametrize("kind", ["missing", "folder", "too large"])
def test_load_says_why_a_transcript_cannot_be_read_not_that_it_is_bad_json(demo, tmp_path, monkeypatch, kind):
    """/load of a file it cannot read said "transcript 'x' is not valid JSON: cannot read transcript
    'x': larger than 16 MiB" (the reader's UsageError is a ValueError, caught as a JSON error)."""
    from showo2_cli import chat_transcript  # (where load reads the limit)
    from showo2_cli.chat import Conversation

    path = tmp_path / "chat.json"
    if kind == "folder":
        path.mkdir()
    elif kind == "too large":
        monkeypatch.setattr(chat_transcript, "MAX_TRANSCRIPT_BYTES", 8)
        path.write_text('{"format": "showo2-chat"}')
    with pytest.raises(UsageError) as err:
        Conversation(demo).load(path)
    message = str(err.value)
    assert "not valid JSON" not in message
    assert message.count(str(path)) == 1, message
    assert {"missing": "no such", "folder": "directory", "too large": "larger than"}[kind] in message


def test_load_still_names_bad_json(demo, tmp_path):
    from showo2_cli.chat import Conversation

    path = tmp_path / "chat.json"
    path.write_text("{oops")
    with pytest.raises(UsageError, match="is not valid JSON"):
        Conversation(demo).load(path)


@pytest.mark.parametrize(("n", "seed", "message"), [(0, 1, "n must be"), (-3, 1, "n must be"), (None, 1, "n must be"),
                                                    (1, -5, "seed must be"), (1, 2**63, "seed must be")])
def test_plan_outputs_refuses_counts_and_seeds_no_run_takes(tmp_path, n, seed, message):
    """``api.plan_outputs`` planned nothing for n=0 or -1 (no error), and named the files of seed -5
    after seed 2^63-5 (``a-9223372036854775803.png``), a run no option allows."""
    from showo2_cli import api

    with pytest.raises(UsageError, match=message):
        api.plan_outputs("t2i", tmp_path / "p.png", ["a"], [0], n, seed=seed)


def test_plan_outputs_still_plans_valid_runs(tmp_path):
    from showo2_cli import api

    assert len(api.plan_outputs("t2i", tmp_path / "p.png", ["a", "b"], [0, 1], 2, seed=0)) == 4
    assert len(api.plan_outputs("t2i", tmp_path / "q.png", ["a"], [0], 1, seed=None)) == 1
    assert api.plan_outputs("t2i", tmp_path / "r.png", [], [], 1, seed=2**63 - 1) == []
