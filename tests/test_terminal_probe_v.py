"""Probe V: what users see on their terminal and in their logs.

A program that imports showo2_cli keeps its own logging configuration (importing it set four
library loggers to ERROR for the rest of the process); the hints in error messages name options
that exist where the message is read (a server's client, a pipeline caller)."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import showo2_cli
from showo2_cli import runtime

SRC = str(Path(showo2_cli.__file__).resolve().parents[1])  # the sources under test, for the subprocess

# what a program does: its own logging set up first, then the library's whole path (import, load,
# generate, caption); it prints the levels and warning filters before and after
PROGRAM = textwrap.dedent("""
    import json, logging, sys, warnings
    import torch
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    logging.getLogger("torchao").setLevel(logging.INFO)      # the caller wants torchao's notes
    names = ["torchao", "torch.utils._pytree", "diffusers.quantizers.torchao.torchao_quantizer",
             "bitsandbytes.backends.cpu.ops", ""]
    warnings.filterwarnings("error", message="the caller's own")
    common = (Warning, UserWarning, DeprecationWarning, FutureWarning, RuntimeWarning)
    def state():  # libraries add filters of their own classes or modules on import (urllib3, sympy,
        # torch.optim); a filter over every warning of a common class would hide the caller's
        broad = [f[0] for f in warnings.filters if f[1] is None and f[3] is None and f[2] in common]
        return {"levels": {n: logging.getLogger(n).level for n in names},
                "handlers": len(logging.getLogger().handlers), "broad_filters": broad,
                "own_filter": any(f[0] == "error" and f[1] and f[1].pattern == "the caller's own"
                                  for f in warnings.filters)}
    before = state()
    from showo2_cli import api
    model = api.load("demo")
    api.text_to_image(model, ["a red circle"], api.GenerateOptions(seed=1, steps=2))
    api.caption(model, sys.argv[1])
    print(json.dumps({"before": before, "after": state()}))
""")


@pytest.mark.slow
def test_the_api_leaves_the_callers_logging_alone_and_writes_nothing(tmp_path):
    from PIL import Image

    image = tmp_path / "red.png"
    Image.new("RGB", (64, 48), (200, 30, 30)).save(image)
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-W", "default", "-c", PROGRAM, str(image)], env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr
    seen = json.loads(run.stdout.strip().splitlines()[-1])
    assert seen["after"] == seen["before"]  # torch.utils._pytree and torchao were left at ERROR (40)
    assert seen["after"]["levels"]["torchao"] == logging.INFO
    # torchao's missing CUDA extensions, torch's Enum note, bitsandbytes' `kernels` line: none of it
    assert run.stderr == ""


def test_quiet_imports_holds_back_only_while_importing_and_restores_levels():
    logger = logging.getLogger(runtime.IMPORT_NOISE[0])
    other = logging.getLogger(runtime.IMPORT_NOISE[1])
    saved = logger.level, other.level
    try:
        logger.setLevel(logging.DEBUG)
        other.setLevel(logging.CRITICAL)
        with runtime.quiet_imports():
            assert logger.level == logging.ERROR
            assert other.level == logging.CRITICAL  # never louder than the caller set it
        assert (logger.level, other.level) == (logging.DEBUG, logging.CRITICAL)
        with pytest.raises(ImportError), runtime.quiet_imports():
            import showo2_no_such_module  # noqa: F401
        assert logger.level == logging.DEBUG  # restored after a failed import too
        import warnings

        note = "`torch.jit.script_method` is deprecated. Please switch to `torch.compile` or `torch.export`."
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            filters = list(warnings.filters)
            with runtime.quiet_imports():  # torch's inductor, imported by bitsandbytes, says it 14 times
                warnings.warn(note, DeprecationWarning, stacklevel=1)
                warnings.warn("the caller's own", DeprecationWarning, stacklevel=1)
            assert warnings.filters == filters
            warnings.warn(note, DeprecationWarning, stacklevel=1)
        assert [str(w.message) for w in seen] == ["the caller's own", note]
    finally:
        logger.setLevel(saved[0])
        other.setLevel(saved[1])


# ---- hints name options that exist where the message is read ---------------------------------

def _generation_refused(monkeypatch, video: bool = False):
    """The ResourceError a job over the memory limit raises (the limit from the environment, as a
    server or a pipeline has it), with the library's own advice."""
    from showo2_cli.errors import ResourceError
    from showo2_cli.pipelines.generate import check_generation_memory
    from showo2_cli.specs import get_spec

    monkeypatch.setenv("SHOWO2_MAX_MEMORY_GB", "0.0001")
    import torch

    with pytest.raises(ResourceError) as e:
        check_generation_memory(get_spec("tiny"), torch.float32, (64, 64), 5 if video else 1, video, 2)
    return e.value


def test_a_server_clients_error_names_request_fields_not_command_line_options(monkeypatch):
    """`showo2 serve` answered a request over the memory limit with "lower --size or --batch-size
    (raise the limit with --max-memory or SHOWO2_MAX_MEMORY_GB)": options the client cannot pass
    and `showo2 serve` does not have."""
    from showo2_cli.serve.errors import api_error_of

    refused = _generation_refused(monkeypatch)
    assert "--size" in str(refused)  # the command line's message is unchanged
    err = api_error_of(refused)
    assert (err.status, err.code) == (422, "too_large")
    assert "--" not in err.message, err.message
    assert ("lower size or n (raise the limit with the server's max-memory setting or SHOWO2_MAX_MEMORY_GB)"
            in err.message)  # (serve has --max-memory since probe BA)
    assert "needs about" in err.message and "allowed by SHOWO2_MAX_MEMORY_GB" in err.message


def test_a_server_clients_tiling_advice_names_the_servers_setting():
    """A server started with `--vae-tiling off` told a client over the memory limit to "tile the
    VAE with --vae-tiling auto", an option no request has (probe BG's find)."""
    import torch

    from showo2_cli.errors import ResourceError
    from showo2_cli.pipelines.generate import check_generation_memory
    from showo2_cli.serve.errors import api_error_of
    from showo2_cli.specs import get_spec

    kwargs = dict(vae_tiling="off", device="cpu")
    with pytest.raises(ResourceError) as e:
        check_generation_memory(get_spec("tiny"), torch.float32, (2048, 2048), 1, False, 1, 0.05, **kwargs)
    assert "--vae-tiling auto" in str(e.value)  # the command line's advice
    message = api_error_of(e.value).message
    assert "--" not in message and "the server's vae-tiling setting at auto" in message, message


def test_a_pipeline_callers_error_names_the_variable_once(monkeypatch):
    """Showo2Pipeline's renaming turned "--max-memory or SHOWO2_MAX_MEMORY_GB" into
    "SHOWO2_MAX_MEMORY_GB or SHOWO2_MAX_MEMORY_GB"."""
    from showo2_cli.errors import ResourceError
    from showo2_cli.pipelines.arguments import PYTHON_NAMES, python_names

    refused = _generation_refused(monkeypatch, video=True)
    with pytest.raises(ResourceError) as e, python_names(PYTHON_NAMES):
        raise refused
    text = str(e.value)
    assert "--" not in text
    assert text.endswith("; lower width/height, num_frames or batch_size (raise the limit with "
                         "RuntimeOptions(max_memory_gb=...) or SHOWO2_MAX_MEMORY_GB)")  # (its limit since probe BA)


def _option_names_in_messages() -> dict[str, list[str]]:
    """Every ``--option`` written in a string of the package's code (messages, hints, notices),
    with where; docstrings and comments left out."""
    import ast
    import re

    found: dict[str, list[str]] = {}
    root = Path(showo2_cli.__file__).parent
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                      if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                      and node.body and isinstance(node.body[0], ast.Expr)
                      and isinstance(node.body[0].value, ast.Constant)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
                for name in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", node.value):
                    found.setdefault(name, []).append(f"{path.relative_to(root)}:{node.lineno}")
    return found


def test_every_option_a_message_names_exists():
    """A hint that names an option the command line does not have sends the user to --help for
    nothing: each ``--name`` in the code's strings is an option of some command (or of the tool
    the hint names: ``hf download --force-download``)."""
    import typer.main

    from showo2_cli.cli import app

    root = typer.main.get_command(app)
    options = {o for command in [root, *root.commands.values()] for p in command.params
               for o in (*p.opts, *p.secondary_opts)}
    options.add("--help")  # click's, on every command
    elsewhere = {"--force-download", "--local-dir", "--revision"}  # huggingface_hub's `hf download`
    found = _option_names_in_messages()
    assert {"--max-memory", "--overwrite", "--vae", "--size"} <= set(found)  # the scan sees the hints
    unknown = {name: where for name, where in found.items() if name not in options | elsewhere}
    assert not unknown, unknown


# ---- progress on a dumb terminal ---------------------------------------------------------------

class _Terminal(io.StringIO):
    """stderr as a terminal (isatty) that records what is written."""

    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("term", ["dumb", "xterm-256color"])
def test_a_dumb_terminal_gets_plain_lines_not_a_live_display(monkeypatch, term):
    """On `TERM=dumb` (Emacs' shell, some CI consoles) rich cannot redraw a line: the progress
    bars drew nothing and left an empty line on stderr, and `train` showed neither its bar nor
    its log lines (they were kept for pipes)."""
    from showo2_cli.cli import common
    from showo2_cli.training.command import _Renderer

    monkeypatch.setenv("TERM", term)
    for var in ("FORCE_COLOR", "NO_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE"):
        monkeypatch.delenv(var, raising=False)
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    monkeypatch.setitem(common.STATE, "quiet", False)
    monkeypatch.setitem(common.STATE, "json", False)
    dumb = term == "dumb"
    with common.ProgressReporter() as progress:
        assert (progress.bar is None) == dumb
        progress("denoising", 1, 3)
    if dumb:
        assert terminal.getvalue() == ""
    renderer = _Renderer(quiet=False, json_mode=False)
    assert renderer.tty == (not dumb)
    renderer({"event": "log", "step": 5, "loss": 0.5, "lr": 1e-4, "steps_per_s": 2.0})
    assert ("step 5  loss 0.5000  lr 1.00e-04  2.00 step/s" in terminal.getvalue()) == dumb


# ---- a prompt longer than the model holds --------------------------------------------------------

def test_a_pipeline_prompt_longer_than_the_model_holds_is_a_warning(tmp_path, capsys):
    """`showo2 t2i` says when a prompt was cut to the model's text budget; Showo2Pipeline cut it
    without a word (diffusers' pipelines log the part of a prompt they drop). It now warns, from the
    caller's line, with the command line's words (one method makes both)."""
    import warnings

    import torch

    from showo2_cli import Showo2Pipeline
    from showo2_cli.cli import main

    pipe = Showo2Pipeline.from_pretrained("demo")
    pipe.set_progress_bar_config(disable=True)
    note = r"prompt 0 has \d+ tokens; the model's sequence holds 27, so the rest was not used"
    with pytest.warns(UserWarning, match=note) as seen:
        out = pipe("a red circle " * 40, num_inference_steps=2, generator=torch.Generator().manual_seed(0))
    assert [w.filename for w in seen] == [__file__]
    assert out.results[0].params["prompt_tokens"] > 27 == out.results[0].params["prompt_tokens_used"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a prompt that fits: not a word
        pipe("a red circle", num_inference_steps=2, generator=torch.Generator().manual_seed(0))

    assert main(["t2i", "a red circle " * 40, "-o", str(tmp_path / "x.png"), "--steps", "2", "--seed", "1"]) == 0
    assert len(re.findall(note, capsys.readouterr().err)) == 1


# ---- stdout holds the result alone -----------------------------------------------------------

def test_encode_decode_and_convert_print_the_path_alone(tmp_path, capsys, tiny_model_dir):
    """`out=$(showo2 encode x.png -o z.safetensors); showo2 decode "$out"` failed: encode's stdout
    was "z.safetensors  latents [16, 1, 8, 8] from 1 frame(s) at 64x64" (decode's and convert's
    alike), where t2i's is the path alone. The description is now a notice on stderr."""
    from PIL import Image

    from showo2_cli.cli import main

    image = tmp_path / "red.png"
    Image.new("RGB", (64, 64), (200, 30, 30)).save(image)
    latents, decoded, folder = tmp_path / "z.safetensors", tmp_path / "back.png", tmp_path / "converted"
    for args, path, note in (
        (["encode", str(image), "-o", str(latents)], latents, "latents [16, 1, 8, 8] from 1 frame(s) at 64x64"),
        (["decode", str(latents), "-o", str(decoded)], decoded, "1 frame(s) 64x64"),
        (["convert", str(tiny_model_dir), "-o", str(folder)], folder, "wrote "),
    ):
        assert main([*args, "--model", "demo"] if args[0] != "convert" else args) == 0
        out, err = capsys.readouterr()
        assert out == f"{path}\n" and path.exists()
        assert note in err


def test_a_chats_t2i_over_the_memory_limit_names_its_own_options(monkeypatch, tmp_path):
    """`/t2i a cat -n 4` in a chat over the memory limit said "lower --size or --batch-size", and
    /t2i refuses --batch-size ("/t2i takes no --batch-size"): it now says -n, which it takes."""
    import showo2_cli.cli  # noqa: F401  (the commands' shared helpers)
    from showo2_cli.chat import Conversation
    from showo2_cli.cli.chat import ChatSession
    from showo2_cli.loading import load

    monkeypatch.chdir(tmp_path)
    out, err = io.StringIO(), io.StringIO()
    session = ChatSession(Conversation(load("demo")), out=out, err=err)
    monkeypatch.setenv("SHOWO2_MAX_MEMORY_GB", "0.00001")
    assert session.handle("/t2i a cat -n 4 --steps 2 -o never.png")
    line = err.getvalue().strip()
    assert line.startswith("showo2: error: generating 4 image(s) at 64x64 needs about") and out.getvalue() == ""
    assert "; lower --size or -n (raise the limit with --max-memory or SHOWO2_MAX_MEMORY_GB)" in line
    assert "--batch-size" not in line


def test_train_prints_the_checkpoint_alone(tmp_path, capsys, monkeypatch):
    """`showo2 train` ended with "<checkpoint>  step 3/3, loss 6.6795, 2.52 step/s, peak RSS 498
    MiB" on stdout: `showo2 caption -m "$(showo2 train ...)"` named no folder. The figures are now
    the last line on stderr. (The run's result is given: this is about what is printed.)"""
    from showo2_cli.cli import main
    from showo2_cli.training import trainer

    checkpoint = tmp_path / "run" / "checkpoint-000003"

    def train(cfg, **kwargs):
        return trainer.TrainResult(tmp_path / "run", checkpoint, 3, 3, False, 1.2, 2.5, 6.6795, 498.4)

    monkeypatch.setattr(trainer, "train", train)
    config = Path(__file__).resolve().parents[1] / "examples" / "train_tiny.toml"
    assert main(["train", str(config), "--max-steps", "3", "-o", str(tmp_path / "run")]) == 0
    out, err = capsys.readouterr()
    assert out == f"{checkpoint}\n"
    assert err.splitlines()[-1] == "done at step 3/3, loss 6.6795, 2.50 step/s, peak RSS 498 MiB"
    assert main(["train", str(config), "--max-steps", "3", "-o", str(tmp_path / "run"), "--quiet"]) == 0
    assert capsys.readouterr() == (f"{checkpoint}\n", "")


def test_caption_interrupted_mid_answer_ends_its_line(tmp_path, capsys, monkeypatch):
    """Ctrl-C while `caption` streamed an answer left the line open: a terminal showed
    "...a yellow sq^Cshowo2: error: interrupted"; and a carriage return in an answer sent the
    cursor back over it (chat made both spaces, caption only the line break)."""
    from PIL import Image

    from showo2_cli import pipelines
    from showo2_cli.cli import main

    image = tmp_path / "red.png"
    Image.new("RGB", (64, 64), (200, 30, 30)).save(image)

    def caption(model, media, opts, on_text=None, progress=None, on_done=None):
        on_text(0, "a yellow\r sq")
        raise KeyboardInterrupt

    monkeypatch.setattr(pipelines, "caption", caption)
    assert main(["caption", str(image), "--model", "demo"]) == 130
    out, err = capsys.readouterr()
    assert out == "a yellow  sq\n"
    assert err.splitlines()[-1] == "showo2: error: interrupted"
