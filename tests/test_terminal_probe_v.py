"""Probe V: what users see on their terminal and in their logs.

A program that imports showo2_cli keeps its own logging configuration (importing it set four
library loggers to ERROR for the rest of the process); the hints in error messages name options
that exist where the message is read (a server's client, a pipeline caller)."""

from __future__ import annotations

import json
import logging
import os
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
    run = subprocess.run([sys.executable, "-c", PROGRAM, str(image)], env=env, capture_output=True, text=True,
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
    finally:
        logger.setLevel(saved[0])
        other.setLevel(saved[1])
