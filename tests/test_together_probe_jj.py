"""Probe JJ: the day's merges (probes JA, JB, JC, JD, JF, JG) used together."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

import showo2_cli
from showo2_cli.errors import UsageError
from showo2_cli.options import TextSampling
from showo2_cli.serve_config import ServerConfig
from showo2_cli.tokenizer import load_tokenizer

DEMO = Path(showo2_cli.__file__).parent / "assets" / "demo"


def test_two_tokenizer_loads_at_once_give_stdout_back(capfd, monkeypatch):
    """Probe JC points fd 1 at fd 2 while a tokenizer loads. Two threads loading at once, the first
    ending first: the second had saved fd 1 while the first's redirection held it (fd 2), and put that
    back last, so the process's stdout stayed on stderr for good (a Python host loading two models in
    threads; 2 runs in 3 of three threads loading five times each)."""
    from transformers import PreTrainedTokenizerFast

    load = PreTrainedTokenizerFast.from_pretrained.__func__
    second_in, first_out = threading.Event(), threading.Event()
    order: list[str] = []

    def held(cls, *args, **kwargs):  # the first load waits for the second to start; the second for the first to end
        first = not order
        order.append("first" if first else "second")
        if first:
            assert second_in.wait(30)
        else:
            second_in.set()
            assert first_out.wait(30)
        return load(cls, *args, **kwargs)

    load_tokenizer(DEMO)  # (transformers imported before the threads)
    monkeypatch.setattr(PreTrainedTokenizerFast, "from_pretrained", classmethod(held))

    def first():
        load_tokenizer(DEMO)
        first_out.set()

    threads = [threading.Thread(target=first), threading.Thread(target=load_tokenizer, args=(DEMO,))]
    threads[0].start()
    while not order:  # the first is inside its load (stdout redirected) before the second starts
        threading.Event().wait(0.01)
    threads[1].start()
    for t in threads:
        t.join(60)
    assert order == ["first", "second"]
    capfd.readouterr()
    os.write(1, b"still mine\n")  # (fd 1 itself: capfd's sys.stdout writes to its file directly)
    out, err = capfd.readouterr()
    assert out == "still mine\n", (out, err)  # was "" (and "still mine" on stderr)


@pytest.mark.parametrize("calls", [5, {}, {"parallel": True}, {"schema": {"type": "object"}},
                                   {"schema": {"type": "object"}, "parallel": "yes"},
                                   {"schema": {"type": "object"}, "parallel": True, "extra": 1}])
def test_text_samplings_tool_calls_are_checked(calls):
    """Probe JD's ``TextSampling.tool_calls`` (a chat's ``ask`` in Python) was read unchecked: 5 raised
    TypeError and a missing key KeyError from ``validate()``; ``{"schema": ...}`` alone passed it and raised
    KeyError 'parallel' when the answer's grammar was built; ``"yes"`` was read by its truth."""
    with pytest.raises(UsageError, match="tool_calls"):
        TextSampling(json_schema={"type": "object"}, tool_calls=calls).validate()


def test_text_samplings_tool_calls_as_the_server_gives_them():
    TextSampling(json_schema={"type": "object"}, tool_calls={"schema": {"type": "object"}, "parallel": False}).validate()


@pytest.mark.parametrize("name", list(ServerConfig.LIMITS))
def test_a_server_limit_of_none_is_refused(name):
    """``ServerConfig``'s limits went through ``check_int``, which lets None pass (an option not given):
    ``server_for(model, ServerConfig(parallel=2, max_num_batched_tokens=None))`` started, and a request
    arriving while another decoded was a 500 ("internal error (TypeError)", both requests); max_queue and
    max_tokens None the same from the first request."""
    with pytest.raises(UsageError, match=f"^{name} must be a whole number between .* got None$"):
        ServerConfig(**{name: None}).validate()


def test_serve_says_the_flex_refusal_in_its_own_words(capsys, tmp_path):
    """Probe JD moved the refusal of flex beside --parallel into the block that renames ServerConfig's
    fields to options: "parallel answers" became "--parallel answers (--parallel above 1) ..."."""
    from showo2_cli.cli import main

    code = main(["serve", "--model", str(tmp_path / "nowhere"), "--attn", "flex", "--parallel", "2", "--port", "0"])
    err = capsys.readouterr().err
    assert code == 2
    assert err == "showo2: error: parallel answers (--parallel above 1) need attention sdpa or eager (--attn), not " \
                  "flex\n", err
