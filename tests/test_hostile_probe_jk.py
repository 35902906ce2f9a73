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
