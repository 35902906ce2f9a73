"""Small defects earlier probes left (probe Z3): example scripts' --help, control characters in
answers, one program entry for every ``python -m`` form, one speaker among processes, latents under
an address-space limit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

import showo2_cli
from conftest import REPO

SRC = str(showo2_cli.__path__[0].rsplit(os.sep, 1)[0])  # the sources under test (not always this checkout's)


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOWO2_")}
    env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", PYTHONPATH=SRC)
    return env


# ---- one entry: python -m showo2_cli / showo2_cli.cli / showo2_cli.training are the program ----

@pytest.mark.slow
@pytest.mark.parametrize("module, args", [
    ("showo2_cli", ["models", "--json"]),
    ("showo2_cli.cli", ["models", "--json"]),
    ("showo2_cli.training", [str(REPO / "examples" / "train_tiny.toml"), "--check", "--json"]),
])
def test_every_python_m_form_is_the_showo2_program(tmp_path, module, args):
    """`python -m showo2_cli.training` (what accelerate launches) died by a SIGTERM that came after
    its result (exit -15 after the final checkpoint); `python -m showo2_cli.cli` cut its shutdown
    short. Here the signal comes during the shutdown, after the program's exit handlers, as a late
    SIGTERM does: the result is out, the exit code 0, the rest of the shutdown runs."""
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(f"""
        import atexit, os, runpy, signal, sys, time
        def late():  # registered before the program's: runs after its exit handlers, as teardown does
            os.kill(os.getpid(), signal.SIGTERM); time.sleep(0.3); sys.stderr.write('alive\\n')
        atexit.register(late)
        sys.argv = [{module!r}, *{args!r}]
        runpy.run_module({module!r}, run_name="__main__", alter_sys=True)  # what `python -m` does
    """))
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, env=_env(),
                       cwd=tmp_path)
    assert (r.returncode, r.stderr) == (0, "alive\n"), (r.returncode, r.stderr[-2000:])
    assert json.loads(r.stdout)


# ---- example and benchmark scripts: --help prints usage and creates nothing -------------------

_HELP_ALL = r"""
import contextlib, io, os, runpy, sys
results = {}
for script in sys.argv[1:]:
    out = io.StringIO()
    sys.argv = [script, "--help"]
    code = None
    try:
        with contextlib.redirect_stdout(out):
            runpy.run_path(script, run_name="__main__")
    except SystemExit as e:
        code = e.code
    results[script] = [code, "usage:" in out.getvalue()]
sys.__stdout__.write(__import__("json").dumps(results))
"""


def _files(root) -> dict[str, int]:
    found = {}
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if d not in (".git", "__pycache__", ".ruff_cache", ".pytest_cache")]
        for name in names:
            path = os.path.join(folder, name)
            found[path] = os.stat(path).st_mtime_ns
    return found


@pytest.mark.slow
def test_every_script_answers_help_with_usage_and_writes_nothing(tmp_path):
    """`python examples/demo/make_caption_style.py --help` wrote 256 images and style.json into a
    folder named `--help`; `make_tokenizer.py --help` rebuilt the demo's tokenizer; the shell
    scripts ran their commands (gpu.sh: eight minutes of benchmarks)."""
    repo = REPO
    scripts = sorted(str(p) for p in [*repo.glob("examples/**/*.py"), *repo.glob("benchmarks/*.py")])
    before = _files(repo)
    r = subprocess.run([sys.executable, "-c", _HELP_ALL, *scripts], capture_output=True, text=True, timeout=300,
                       env=_env(), cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    results = json.loads(r.stdout.splitlines()[-1])
    for shell in [*repo.glob("examples/*.sh"), *repo.glob("benchmarks/*.sh")]:
        s = subprocess.run(["bash", str(shell), "--help"], capture_output=True, text=True, timeout=60, env=_env(),
                           cwd=tmp_path)
        results[str(shell)] = [s.returncode, bool(s.stdout.strip()) and not s.stderr]
    commands = {s for s in results if s.endswith(".sh") or "__main__" in open(s).read() or "parse_args" in open(s).read()}
    assert {s: results[s] for s in commands if results[s] not in ([0, True], [None, True])} == {}
    assert sorted(os.listdir(tmp_path)) == []  # nothing in the working folder (no `--help` folder)
    after = _files(repo)
    assert {p for p in before.keys() | after.keys() if before.get(p) != after.get(p)} == set()
    assert len(commands) >= 25


# ---- a model's answer cannot drive the terminal -------------------------------------------------

#: what tiny random models answer: ESC sequences (cursor up, clear screen, window title), BEL, a C1
#: CSI, DEL, a line separator; the tab stays (it moves to the next tab stop on the same line)
HOSTILE = "red\x1b[2A\x1b[2J\x1b]0;pwned\x07\x9b31m\x7f\u2028\tsq\r\nuare"
SHOWN = "red\\x1b[2A\\x1b[2J\\x1b]0;pwned\\x07\\x9b31m\\x7f\\u2028\tsq  uare"


@pytest.mark.parametrize("stream", ["--stream", "--no-stream"])
def test_caption_shows_an_answers_control_characters_escaped(tmp_path, capsys, monkeypatch, stream):
    """`caption` wrote a model's ESC sequences, BEL, C1 and DEL to the terminal as they were (a
    tiny random model's answer held \\x03, \\x7f, \\x12); `--json` keeps the exact answer."""
    from PIL import Image

    from showo2_cli import pipelines
    from showo2_cli.cli import main

    image = tmp_path / "red.png"
    Image.new("RGB", (64, 64), (200, 30, 30)).save(image)
    real = pipelines.caption

    def caption(model, media, opts, on_text=None, progress=None, on_done=None):
        result = real(model, media, opts, progress=progress)
        result.answers[:] = [HOSTILE]
        if on_text is not None:
            for piece in (HOSTILE[:5], HOSTILE[5:20], HOSTILE[20:]):  # an escape cut between pieces
                on_text(0, piece)
            on_done(0, HOSTILE)
        return result

    monkeypatch.setattr(pipelines, "caption", caption)
    args = ["caption", str(image), "--model", "demo", "--max-new-tokens", "2", stream]
    assert main(args) == 0
    out, err = capsys.readouterr()
    assert out == SHOWN + "\n" and "\x1b" not in err
    assert main([*args, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["answers"][0]["answer"] == HOSTILE


def test_chat_shows_an_answers_control_characters_escaped(monkeypatch):
    from typer.testing import CliRunner

    from showo2_cli.chat import Conversation
    from showo2_cli.cli import app

    def ask(self, question, sampling=None, on_text=None, **kwargs):
        for piece in (HOSTILE[:5], HOSTILE[5:20], HOSTILE[20:]):
            on_text(piece)
        return HOSTILE

    monkeypatch.setattr(Conversation, "ask", ask)
    result = CliRunner().invoke(app, ["chat", "--model", "demo", "--max-new-tokens", "2"], input="hi\n")
    assert result.exit_code == 0, result.output
    assert result.stdout == SHOWN + "\n"


# ---- several processes: only the main one reports an interruption -------------------------------

@pytest.mark.parametrize("rank, said", [("0", True), ("1", False)])
def test_an_interruption_is_said_by_the_main_process_alone(tmp_path, capsys, monkeypatch, rank, said):
    """Under `accelerate launch --num_processes 2` a Ctrl-C reached both processes, and both printed
    "showo2: error: interrupted at step 150/100000; saved ..." (and `t2i`'s "interrupted")."""
    from PIL import Image

    from showo2_cli import pipelines
    from showo2_cli.cli import main
    from showo2_cli.training import trainer

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", rank)
    image = tmp_path / "red.png"
    Image.new("RGB", (64, 64), (200, 30, 30)).save(image)

    def caption(model, media, opts, on_text=None, progress=None, on_done=None):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipelines, "caption", caption)
    assert main(["caption", str(image), "--model", "demo", "--no-stream"]) == 130
    assert capsys.readouterr() == ("", "showo2: error: interrupted\n" if said else "")

    checkpoint = tmp_path / "run" / "checkpoint-000150"
    monkeypatch.setattr(trainer, "train", lambda cfg, **kwargs: trainer.TrainResult(
        tmp_path / "run", checkpoint, 150, 1000, True, 30.0, 5.0, 1.6, 498.4, world_size=2))
    config = REPO / "examples" / "train_tiny.toml"
    assert main(["train", str(config), "-o", str(tmp_path / "run"), "--quiet"]) == 130
    line = (f"showo2: error: interrupted at step 150/1000; saved {checkpoint}; run the same command again to "
            "resume\n")
    assert capsys.readouterr() == ("", line if said else "")
    # an input error every process finds: the main one says it; another says it only when no
    # launcher ends it (here: none, and no wait) (probe AA)
    from showo2_cli import cli

    monkeypatch.setattr(cli, "_MAIN_GRACE_S", 0.0)
    assert main(["caption", str(tmp_path / "none.png"), "--model", "demo"]) == 3
    assert "none.png" in capsys.readouterr().err


# ---- latents and noise files that cannot be mapped: out of memory, as weights -------------------

def _sparse_safetensors(path, key: str, shape: list[int], metadata: dict | None = None):
    """A valid safetensors file of float32 zeros, sparse: its size on disk is its header's."""
    import struct

    count = 1
    for d in shape:
        count *= d
    header = {key: {"dtype": "F32", "shape": shape, "data_offsets": [0, count * 4]}}
    if metadata is not None:
        header["__metadata__"] = metadata
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        f.truncate(8 + len(raw) + count * 4)
    return path


def test_latents_and_noise_that_cannot_be_mapped_are_out_of_memory(tmp_path, capsys, monkeypatch):
    """Under `ulimit -v` safetensors' memory map of a large latents (`decode`) or `--noise` file
    fails with ENOMEM: that read "not a safetensors file or truncated", exit 3, for an intact file,
    while weights in the same case say "out of memory", exit 6 (the same mechanism now)."""
    import safetensors

    from showo2_cli.cli import main

    latents = _sparse_safetensors(tmp_path / "z.safetensors", "latents", [16, 1, 64, 64], {"showo2": "{}"})
    noise = _sparse_safetensors(tmp_path / "n.safetensors", "noise", [16, 1, 64, 64])

    def no_room(path, framework=None, **kwargs):
        raise RuntimeError(f"unable to mmap {os.path.getsize(path)} bytes from file <{path}>: "
                           "Cannot allocate memory (12)")

    monkeypatch.setattr(safetensors, "safe_open", no_room)
    assert main(["decode", str(latents), "--model", "demo", "-o", str(tmp_path / "d.png")]) == 6
    assert capsys.readouterr().err.startswith("showo2: error: out of memory")
    assert main(["t2i", "a cat", "--model", "demo", "--noise", str(noise), "-o", str(tmp_path / "t.png")]) == 6
    assert capsys.readouterr().err.startswith("showo2: error: out of memory")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["n.safetensors", "z.safetensors"]
    monkeypatch.undo()  # a file that is damaged is still said so
    (tmp_path / "bad.safetensors").write_bytes(latents.read_bytes()[:200])
    assert main(["decode", str(tmp_path / "bad.safetensors"), "--model", "demo", "-o", str(tmp_path / "d.png")]) == 3


@pytest.mark.slow
def test_a_huge_sparse_latents_file_under_an_address_space_limit_is_out_of_memory(tmp_path):
    latents = _sparse_safetensors(tmp_path / "z.safetensors", "latents", [16, 1, 4096, 8192], {"showo2": "{}"})
    code = ("import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30)); "
            "from showo2_cli.launch import main; main()")
    proc = subprocess.run([sys.executable, "-c", code, "decode", str(latents), "-o", str(tmp_path / "d.png")],
                          capture_output=True, text=True, timeout=180, env=_env(), cwd=tmp_path)
    assert (proc.returncode, proc.stderr.split(" (")[0]) == (6, "showo2: error: out of memory"), proc.stderr[-800:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["z.safetensors"]


@pytest.mark.parametrize("json_mode", [False, True])
def test_a_signal_after_trains_result_keeps_exit_0(tmp_path, capsys, monkeypatch, json_mode):
    """`showo2 train` wrote its result past the CLI's `emit`: a SIGTERM right after the checkpoint's
    path was out made it exit 143 with "showo2: error: terminated" (with --json a second object,
    the error, followed the result), where every other command's result keeps exit 0."""
    from showo2_cli import cli
    from showo2_cli.training import trainer

    real = cli.app

    def signal_as_the_command_returns(*args, **kwargs):
        real(*args, **kwargs)
        raise KeyboardInterrupt  # the signal lands after the command's return, before the exit

    monkeypatch.setattr(cli, "app", signal_as_the_command_returns)
    checkpoint = tmp_path / "run" / "checkpoint-000003"
    monkeypatch.setattr(trainer, "train", lambda cfg, **kwargs: trainer.TrainResult(
        tmp_path / "run", checkpoint, 3, 3, False, 1.2, 2.5, 6.6795, 498.4))
    args = ["train", str(REPO / "examples" / "train_tiny.toml"), "-o", str(tmp_path / "run"), "--quiet"]
    assert cli.main(args + (["--json"] if json_mode else [])) == 0
    out, err = capsys.readouterr()
    assert err == ""
    if json_mode:
        assert json.loads(out)["checkpoint"] == str(checkpoint)
    else:
        assert out == f"{checkpoint}\n"
    config = REPO / "examples" / "train_tiny.toml"
    assert cli.main(["train", str(config), "--check"]) == 0  # --check's line is a result too
    assert capsys.readouterr().out.startswith(f"{config}: valid (")
