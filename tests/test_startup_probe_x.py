"""Small requests answer without the model libraries (probe X): help, `showo2 models`, and a bad
option, path or model name fail before torch, transformers or diffusers is imported (each is
seconds of a run that needs none of them)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

SRC = Path(__file__).resolve().parents[1] / "src"

# One fresh interpreter runs the commands one after another (in-process, as `showo2` does) and says,
# after each, its exit code and which of the model libraries it had imported so far.
SCRIPT = r"""
import contextlib, io, json, sys
from showo2_cli.cli import main
HEAVY = ("torch", "transformers", "diffusers")
report = []
for argv in json.loads(sys.argv[1]):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as e:
            code = e.code
    report.append({"argv": argv, "code": code, "stdout": out.getvalue(), "stderr": err.getvalue(),
                   "heavy": [m for m in HEAVY if m in sys.modules]})
print(json.dumps(report))
"""


@pytest.mark.slow
def test_cheap_commands_and_early_errors_leave_the_model_libraries_unimported(tmp_path):
    exists = tmp_path / "exists.png"
    exists.write_bytes(b"")
    picture = tmp_path / "picture.png"
    Image.new("RGB", (32, 32), "red").save(picture)
    commands = [
        (["--help"], 0, None),
        (["t2i", "--help"], 0, None),
        (["models", "--json"], 0, None),
        (["t2i", "a cat", "--size", "7x7", "-o", str(tmp_path / "a.png")], 2, "--size sides must be multiples of 16"),
        (["t2i", "a cat", "-o", str(exists)], 5, "exists; pass --overwrite"),
        (["encode", str(tmp_path / "missing.png"), "-o", str(tmp_path / "m.safetensors")], 3, "no such file"),
        (["info", str(tmp_path / "no-model")], 4, "no model"),
        # a mistyped --model, in every command that loads one
        (["t2i", "a cat", "-m", "1.5bb", "-o", str(tmp_path / "b.png")], 4, "did you mean '1.5B'?"),
        (["t2v", "a cat", "-m", str(tmp_path / "no-model"), "-o", str(tmp_path / "b.mp4")], 4, "no model"),
        (["caption", str(picture), "-m", "7c"], 4, "not a known variant"),
        (["chat", "-m", "1.5b-w-video"], 4, "did you mean '1.5B-w-video-und'?"),
        (["serve", "--port", "0", "-m", str(tmp_path / "no-model")], 4, "no model"),
    ]
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps([argv for argv, _, _ in commands])],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout.splitlines()[-1])
    for (argv, code, message), got in zip(commands, report, strict=True):
        assert got["code"] == code, (argv, got)
        if message is not None:
            assert message in got["stderr"] and got["stderr"].count("\n") == 1, (argv, got["stderr"])
        assert got["heavy"] == [], (argv, got["heavy"])
    listing = json.loads(report[2]["stdout"])  # `models` still says what is present: the bundled demo, nothing cached
    rows = {row["name"]: row for row in listing["models"]}
    assert rows["demo"]["present"] and not rows["1.5B"]["present"]
    assert "checkpoint" in rows["1.5B"]["missing"] and "VAE" in rows["1.5B"]["missing"]
