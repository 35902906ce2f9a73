"""Every subcommand, as a real subprocess, against the hostile corpus (see hostile_corpus.py).

For each bad case: the documented exit code, exactly one line on stderr that starts with
``showo2: error:`` and names the file and the problem (no traceback), with ``--json`` a JSON
error object and nothing else on stdout (without it, nothing on stdout), no file created or
changed in the case's folder, and the pickle payload never runs. The corpus runs once, on a few
worker threads; the per-command tests below only look at the results.

``SHOWO2_HOSTILE_REPORT=FILE python -m pytest tests/hostile`` also writes the corpus table.
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
    snapshot,
)

from conftest import MEDIA_DIR

WORKERS = int(os.environ.get("SHOWO2_HOSTILE_WORKERS", "3"))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, tiny_model_dir):
    return corpus_for(tmp_path_factory, tiny_model_dir, MEDIA_DIR if MEDIA_DIR.is_dir() else None)


@pytest.fixture(scope="module")
def results(corpus, tiny_model_dir, tmp_path_factory):
    root, marker, files = corpus
    cases = hostile_cases(files, tiny_model_dir)
    names = [c.name for c in cases]
    assert len(names) == len(set(names)), "case names must be unique"
    work = tmp_path_factory.mktemp("hostile-runs")
    hf_cache = tmp_path_factory.mktemp("empty-hf-cache")
    env = base_env(hf_cache)
    inputs_before = snapshot(root)
    # the slowest first, so the pool does not end on a long tail
    order = sorted(cases, key=lambda c: 0 if c.args[0] in ("t2i", "t2v", "i2v", "convert", "info") else 1)
    with ThreadPoolExecutor(WORKERS) as pool:
        done = list(pool.map(lambda c: run_case(c, work, env), order))
    by_name = {r.case.name: r for r in done}
    ordered = [by_name[c.name] for c in cases]
    report = os.environ.get("SHOWO2_HOSTILE_REPORT")
    if report:
        Path(report).write_text(corpus_table(ordered, root, tiny_model_dir), encoding="utf-8")
    return {"results": ordered, "inputs_before": inputs_before, "inputs_after": snapshot(root),
            "marker": marker, "root": root}


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
