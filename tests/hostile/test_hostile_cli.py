"""Every subcommand against the hostile corpus (see hostile_corpus.py).

For each bad case: the documented exit code, exactly one line on stderr that starts with
``showo2: error:`` and names the file and the problem (no traceback), with ``--json`` a JSON
error object and nothing else on stdout (without it, nothing on stdout), no file created or
changed in the case's folder, and the pickle payload never runs. The whole corpus runs once,
in-process through the CLI's entry point (stdout/stderr caught down to the file descriptors);
a sample that covers every command, every exit code and both output modes also runs as real
subprocesses, which must answer exactly as the in-process run did. The per-command tests below
only look at the results.

``SHOWO2_HOSTILE_REPORT=FILE python -m pytest tests/hostile`` also writes the corpus table;
``SHOWO2_HOSTILE_SUBPROCESS=all`` runs every case as a subprocess too (about 180 of them).
"""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from hostile_corpus import (
    base_env,
    check_case,
    corpus_for,
    corpus_table,
    hostile_cases,
    run_case,
    run_case_in_process,
    snapshot,
)

from conftest import MEDIA_DIR

WORKERS = int(os.environ.get("SHOWO2_HOSTILE_WORKERS", "3"))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, tiny_model_dir):
    return corpus_for(tmp_path_factory, tiny_model_dir, MEDIA_DIR if MEDIA_DIR.is_dir() else None)


#: the cases also run as real subprocesses, in the fast suite: every exit code and both output modes,
#: libav's native stderr, an environment variable read by the child, a pickle payload
SUBPROCESS_SAMPLE = (
    "unknown-command (plain)", "t2i/steps-negative (plain)", "train/not-toml.toml (plain)", "encode/truncated.mp4 (plain)",
    "encode/max-pixels-env", "decode/output-read-only-fs", "info/model-pickle-payload",
)
#: and in the slow suite (``-m slow``): one case of each other command
SUBPROCESS_SAMPLE_SLOW = (
    "caption/corrupt.jpg", "i2v/bomb-20000.png", "t2v/output-png", "convert/output-exists", "init/bad-dtype",
    "models/unknown-option",
)


@pytest.fixture(scope="module")
def cases(corpus, tiny_model_dir):
    cases = hostile_cases(corpus[2], tiny_model_dir)
    names = [c.name for c in cases]
    assert len(names) == len(set(names)), "case names must be unique"
    return cases


@pytest.fixture(scope="module")
def results(corpus, cases, tiny_model_dir, tmp_path_factory):
    root, marker, _ = corpus
    work = tmp_path_factory.mktemp("hostile-runs")
    hf_cache = tmp_path_factory.mktemp("empty-hf-cache")
    inputs_before = snapshot(root)
    ordered = [run_case_in_process(c, work, hf_cache) for c in cases]
    report = os.environ.get("SHOWO2_HOSTILE_REPORT")
    if report:
        Path(report).write_text(corpus_table(ordered, root, tiny_model_dir), encoding="utf-8")
    return {"results": ordered, "inputs_before": inputs_before, "inputs_after": snapshot(root),
            "marker": marker, "root": root}


def _subprocess_results(names, corpus, cases, tmp_path_factory) -> dict:
    """The cases named (every case with ``SHOWO2_HOSTILE_SUBPROCESS=all``) run as subprocesses."""
    root, marker, _ = corpus
    every = os.environ.get("SHOWO2_HOSTILE_SUBPROCESS") == "all"
    chosen = [c for c in cases if every or c.name in names]
    assert every or len(chosen) == len(names), "a sampled case is not in the corpus"
    work = tmp_path_factory.mktemp("hostile-subprocess-runs")
    env = base_env(tmp_path_factory.mktemp("empty-hf-cache"))
    inputs_before = snapshot(root)
    # the slowest first, so the pool does not end on a long tail
    order = sorted(chosen, key=lambda c: 0 if c.args[0] in ("t2i", "t2v", "i2v", "convert", "info") else 1)
    with ThreadPoolExecutor(WORKERS) as pool:
        done = list(pool.map(lambda c: run_case(c, work, env), order))
    return {"results": done, "inputs_before": inputs_before, "inputs_after": snapshot(root), "marker": marker}


COMMANDS = ["caption", "t2i", "t2v", "i2v", "encode", "decode", "info", "convert", "init", "models", "train", "other"]


def _command(name: str) -> str:
    head = name.split("/")[0]
    return head if head in COMMANDS else "other"


@pytest.mark.parametrize("command", COMMANDS)
def test_bad_inputs_fail_cleanly(results, command):
    mine = [r for r in results["results"] if _command(r.case.name) == command]
    assert mine, f"no hostile case for {command}"
    failures = []
    for r in mine:
        problems = check_case(r)
        if problems:
            failures.append(f"{r.case.name}: {'; '.join(problems)}\n    $ showo2 {' '.join(r.case.args)[:300]}\n"
                            f"    stderr: {r.stderr.strip()[-800:]!r}\n    stdout: {r.stdout.strip()[:300]!r}")
    assert not failures, f"{len(failures)} of {len(mine)} {command} case(s) misbehaved:\n" + "\n".join(failures)


def test_the_pickle_payload_never_ran(results):
    assert not results["marker"].exists()
    pickled = [r for r in results["results"] if "pickle" in r.case.name or "evil" in r.case.name]
    assert len(pickled) >= 6 and all(r.code == 4 for r in pickled)


def test_no_input_was_modified(results):
    assert results["inputs_before"] == results["inputs_after"]


def test_nothing_was_written_to_the_read_only_places(results):
    for name in ("/proc", "/sys"):
        assert not [p for p in os.listdir(name) if "showo2" in p]


def _answer_as_in_process(results, ran: dict) -> None:
    """Each subprocess behaves (as :func:`check_case` says) and answers with the exit code, stderr
    and stdout of its in-process run (the case folder's own path aside): the in-process corpus
    stands for what ``showo2`` does."""
    in_process = {r.case.name: r for r in results["results"]}

    def said(result):
        return [text.replace(str(result.folder), "CASE") for text in (result.stderr, result.stdout)]

    failures = []
    for r in ran["results"]:
        mine = in_process[r.case.name]
        problems = check_case(r)
        if r.code != mine.code or said(r) != said(mine):
            problems.append(f"in-process: exit {mine.code}, {said(mine)!r}; subprocess: exit {r.code}, {said(r)!r}")
        if problems:
            failures.append(f"{r.case.name}: {'; '.join(problems)}")
    assert not failures, "\n".join(failures)
    assert not ran["marker"].exists()
    assert ran["inputs_before"] == ran["inputs_after"]


def test_subprocesses_answer_as_the_in_process_runs(results, corpus, cases, tmp_path_factory):
    ran = _subprocess_results(SUBPROCESS_SAMPLE, corpus, cases, tmp_path_factory)
    assert {r.case.code for r in ran["results"]} == {r.case.code for r in results["results"]}
    assert {r.case.json for r in ran["results"]} == {True, False}
    _answer_as_in_process(results, ran)


@pytest.mark.slow
def test_more_subprocesses_answer_as_the_in_process_runs(corpus, cases, tmp_path_factory):
    both = {_command(name) for name in (*SUBPROCESS_SAMPLE, *SUBPROCESS_SAMPLE_SLOW)}
    assert both == set(COMMANDS), set(COMMANDS) - both
    ran = _subprocess_results(SUBPROCESS_SAMPLE_SLOW, corpus, cases, tmp_path_factory)
    work, hf_cache = tmp_path_factory.mktemp("hostile-runs"), tmp_path_factory.mktemp("empty-hf-cache")
    in_process = [run_case_in_process(r.case, work, hf_cache) for r in ran["results"]]  # these only
    _answer_as_in_process({"results": in_process}, ran)


def test_debug_shows_the_traceback(corpus, tiny_model_dir, tmp_path):
    root, _, files = corpus
    proc = subprocess.run([sys.executable, "-m", "showo2_cli.cli", "--debug", "encode",
                           str(files["media"]["truncated.png"]), "-o", str(tmp_path / "o.safetensors"),
                           "-m", str(tiny_model_dir)], capture_output=True, text=True, env=base_env(tmp_path))
    assert proc.returncode == 3 and "Traceback" in proc.stderr and "InputError" in proc.stderr
    assert not (tmp_path / "o.safetensors").exists()


def test_hostile_runs_are_fast(results):
    """Validation happens before a model loads: no failing case should take long."""
    slow = sorted((r.seconds, r.case.name) for r in results["results"] if r.seconds > 60)
    assert not slow, slow
