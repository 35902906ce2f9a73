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
