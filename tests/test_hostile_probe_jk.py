"""Probe JK: hostile round thirty-two, the surfaces of the day (tokenizer fd 1, chunked prefill's
option, answer-or-calls grammars, sharded indexes)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

import showo2_cli
from showo2_cli import tokenizer as tokenizer_module
from showo2_cli.errors import UsageError
from showo2_cli.serve_config import ServerConfig
from showo2_cli.tokenizer import load_tokenizer

DEMO_TOKENIZER = next(p.parent for p in (Path(showo2_cli.__file__).parent / "assets" / "demo").rglob("tokenizer.json"))


def test_two_tokenizer_loads_in_threads_give_stdout_back(monkeypatch):
    """A enters, B enters, A leaves, B leaves: each kept its own copy of fd 1, so B's copy (taken while
    fd 1 named stderr) was given back as stdout, for good."""
    real = tokenizer_module._load_fast
    a_entered, b_entered, a_left = threading.Event(), threading.Event(), threading.Event()

    def load(path):
        if threading.current_thread().name == "A":
            a_entered.set()
            assert b_entered.wait(10)
            return real(path)
        b_entered.set()
        assert a_left.wait(10)
        return real(path)

    monkeypatch.setattr(tokenizer_module, "_load_fast", load)
    keep = os.dup(1)
    try:
        before = os.fstat(1)
        a = threading.Thread(target=lambda: (load_tokenizer(DEMO_TOKENIZER), a_left.set()), name="A")
        b = threading.Thread(target=lambda: load_tokenizer(DEMO_TOKENIZER), name="B")
        a.start()
        assert a_entered.wait(20)
        b.start()
        a.join(20)
        b.join(20)
        after = os.fstat(1)
        assert (after.st_dev, after.st_ino) == (before.st_dev, before.st_ino), "fd 1 is not stdout any more"
    finally:
        os.dup2(keep, 1)
        os.close(keep)


@pytest.mark.parametrize("name", sorted(ServerConfig.LIMITS))
def test_a_limit_of_none_is_refused_before_the_server_starts(name):
    """``ServerConfig(max_num_batched_tokens=None)`` (or any other limit) passed ``validate``: ``parallel=None``
    raised TypeError in ``create_app``, the others answered 500 ("internal error (TypeError)") to requests."""
    from showo2_cli.serve import create_app

    low, high = ServerConfig.LIMITS[name]
    with pytest.raises(UsageError, match=rf"^{name} must be a whole number between {low} and {high}, got None$"):
        create_app(None, ServerConfig(**{name: None}))


@pytest.mark.parametrize("change, message", [
    (dict(prompts=["a", "b"], indices=[0]), "indices must give one job index a prompt: 1 for 2 prompts"),
    (dict(indices=[-1]), "indices must be whole numbers from 0 to 0 .* got -1"),
    (dict(prompts=["a", "b"], indices=[0.5, 1]), "indices must be whole numbers from 0 to 1 .* got 0.5"),
    (dict(indices=["0"]), "indices must be whole numbers from 0 to 0 .* got '0'"),
    (dict(indices=[3], n=2, total_jobs=6), "indices must be whole numbers from 0 to 2 .* got 3"),
    (dict(total_jobs="3"), "total_jobs must be None or a whole number of at least 1, got '3'"),
    (dict(total_jobs=0), "total_jobs must be None or a whole number of at least 1, got 0"),
    (dict(prompts="abc", indices=[0, 1, 2]), "prompts must be a list, got 'abc'"),
    (dict(prompts=[None]), "a prompt must be text"),
    (dict(overwrite="no"), "overwrite must be True or False, got 'no'"),
    (dict(output="a\x00b.png"), r"cannot write 'a\\0b.png': a path cannot hold a NUL character"),
])
def test_plan_outputs_refuses_what_it_cannot_plan(tmp_path, change, message):
    """``api.plan_outputs`` raised ValueError (zip's "argument 2 is shorter", "Unknown format code 'd'",
    "embedded null byte") or TypeError for these, or planned them: index -1 as 'x--01.png', a text's
    characters as three prompts, a prompt None as 'none-1.png', overwrite "no" as overwrite."""
    from showo2_cli import api
    from showo2_cli.errors import Showo2Error

    call = dict(kind="t2i", output=str(tmp_path / "x.png"), prompts=["a"], indices=[0], n=1, seed=1) | change
    with pytest.raises(Showo2Error, match=message):
        api.plan_outputs(**call)
    assert list(tmp_path.iterdir()) == []
    # the valid forms still plan (a process's share of a run: prompt 2 of 3, 2 each)
    plans = api.plan_outputs("t2i", str(tmp_path / "x.png"), ["b"], [2], 2, seed=1, total_jobs=6)
    assert [p.path.name for p in plans] == ["x-004.png", "x-005.png"]
