"""Probe R: the package as users install it (a wheel, an sdist, Python 3.10, the declared
dependency floors)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import showo2_cli

REPO = Path(__file__).resolve().parents[1]
SRC = Path(showo2_cli.__file__).resolve().parents[1]


def test_toml_configs_read_without_the_standard_librarys_tomllib(monkeypatch, tmp_path):
    # Python 3.10 has no tomllib: `showo2 train config.toml` (and every --set) was "internal error:
    # ModuleNotFoundError: No module named 'tomllib'"; there the backport tomli (a dependency on
    # 3.10) reads it. Here the module this interpreter reads TOML with plays the backport's part.
    import importlib

    from showo2_cli.training.command import _parse_set
    from showo2_cli.training.config import read_raw

    reader = importlib.import_module("tomllib" if sys.version_info >= (3, 11) else "tomli")
    monkeypatch.setitem(sys.modules, "tomllib", None)  # `import tomllib` raises ModuleNotFoundError
    monkeypatch.setitem(sys.modules, "tomli", reader)
    config = tmp_path / "c.toml"
    config.write_text('mode = "showo2"\nseed = 3\n[optim]\nlr = 1e-4\n', encoding="utf-8")
    assert read_raw(config) == {"mode": "showo2", "seed": 3, "optim": {"lr": 1e-4}}
    assert _parse_set(["optim.lr=2e-5", "batch.t2i=[1, 2]", "run.name=plain text"]) == {
        "optim.lr": 2e-5, "batch.t2i": [1, 2], "run.name": "plain text"}


def test_pyproject_declares_the_backport_for_python_310():
    from showo2_cli.training.config import toml_module

    meta = toml_module().loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert meta["requires-python"] == ">=3.10"
    assert any(d.replace(" ", "").startswith("tomli>=") and "python_version<'3.11'" in d.replace(" ", "")
               for d in meta["dependencies"])


@pytest.mark.slow
def test_python_dash_m_runs_the_command(tmp_path):
    # `python -m showo2_cli` (where pip's script folder is not on PATH) was "No module named
    # showo2_cli.__main__"; it is the `showo2` command
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    version = subprocess.run([sys.executable, "-m", "showo2_cli", "--version"], env=env, cwd=tmp_path,
                             capture_output=True, text=True, timeout=120)
    assert (version.returncode, version.stdout.strip()) == (0, f"showo2 {showo2_cli.__version__}")
    bad = subprocess.run([sys.executable, "-m", "showo2_cli", "caption", str(tmp_path / "none.png")], env=env,
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 3 and bad.stderr.count("\n") == 1 and "none.png" in bad.stderr



@pytest.mark.slow
def test_the_sdist_holds_the_tests_their_data_docs_and_license(tmp_path):
    # the sdist had the package and tests/test_*.py only: no conftest.py, tests/data, docs, examples,
    # CHANGELOG or license text, so its tests could not run; and no LICENSE file existed
    import shutil
    import tarfile

    if not (REPO / "MANIFEST.in").is_file():
        pytest.fail("no MANIFEST.in: the sdist holds only what setuptools finds by itself")
    tree = tmp_path / "tree"
    junk = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", ".pytest_cache", ".hypothesis", "build")
    tree.mkdir()
    for name in ("pyproject.toml", "MANIFEST.in", "README.md", "CHANGELOG.md", "LICENSE"):
        shutil.copy2(REPO / name, tree / name)
    for name in ("src", "tests", "docs", "examples", "benchmarks"):
        shutil.copytree(REPO / name, tree / name, ignore=junk)
    out = tmp_path / "dist"
    subprocess.run([sys.executable, "-c", f"from setuptools import build_meta; build_meta.build_sdist({str(out)!r})"],
                   cwd=tree, check=True, capture_output=True, timeout=300)
    (sdist,) = out.glob("showo2-*.tar.gz")
    with tarfile.open(sdist) as tar:
        names = {m.name.split("/", 1)[1] for m in tar.getmembers() if m.isfile()}
    for needed in ("LICENSE", "CHANGELOG.md", "README.md", "tests/conftest.py", "tests/local_hub.py",
                   "docs/cli.md", "examples/train_tiny.toml", "src/showo2_cli/assets/demo/model.safetensors"):
        assert needed in names, needed
    data = [n for n in names if n.startswith("tests/data/")]
    assert len(data) == sum(1 for p in (REPO / "tests" / "data").rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    assert not any("__pycache__" in n for n in names)


@pytest.mark.parametrize("method, module, needs", [("int8wo", "torchao", "torchao 0.18"),
                                                   ("nf4", "bitsandbytes", "bitsandbytes >= 0.50")])
def test_a_missing_quantization_library_names_the_extra(monkeypatch, method, module, needs):
    # the message named a bare package range ("pip install 'torchao>=0.18,<0.19'"), another than
    # README's `pip install 'showo2[quant]'`, which keeps the tested range in one place
    import torch

    from showo2_cli.acceleration import quantize_network
    from showo2_cli.errors import UsageError

    for name in [n for n in sys.modules if n.startswith(f"{module}.")] + [module]:
        monkeypatch.setitem(sys.modules, name, None)  # not installed (nor imported before)
    with pytest.raises(UsageError) as caught:
        quantize_network(torch.nn.Sequential(torch.nn.Linear(4, 4)), method)
    assert str(caught.value) == f"--quantize {method} needs {needs}: pip install 'showo2[quant]'"


def test_a_missing_wandb_names_the_extra(monkeypatch):
    from types import SimpleNamespace

    import accelerate.utils

    from showo2_cli.errors import UsageError
    from showo2_cli.training.control import check_trackers

    monkeypatch.setattr(accelerate.utils, "is_wandb_available", lambda: False)
    cfg = SimpleNamespace(source="c.toml", run=SimpleNamespace(log_with=["wandb"]))
    with pytest.raises(UsageError, match=r"^c.toml: run.log_with\[0\]: 'wandb' is not installed "
                                         r"\(pip install 'showo2\[wandb\]'\)$"):
        check_trackers(cfg)


#: (package, newest release measured failing, oldest measured working): CHANGELOG, probe R
MEASURED_FLOORS = [("transformers", "4.57.6", "5.0.0"), ("huggingface_hub", "1.17.0", "1.18.0"),
                   ("tokenizers", "0.22.0", "0.22.1"), ("typer", "0.17.3", "0.20.0"), ("av", "17.0.0", "17.1.0"),
                   ("pillow", "11.0.0", "11.3.0"), ("peft", "0.17.1", "0.18.0"), ("diffusers", "0.35.2", "0.36.0"),
                   ("safetensors", "0.4.2", "0.4.3")]


@pytest.mark.parametrize("name, failing, working", MEASURED_FLOORS)
def test_declared_ranges_start_where_the_measured_floors_are(name, failing, working):
    # the declared floors (transformers 4.57, huggingface_hub 0.30, typer 0.12, PyAV 12, Pillow 10,
    # ...) let pip keep releases on which showo2 fails: see CHANGELOG, probe R
    from packaging.requirements import Requirement

    from showo2_cli.training.config import toml_module

    deps = toml_module().loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["dependencies"]
    (spec,) = [Requirement(d).specifier for d in deps if Requirement(d).name.lower() == name]
    assert failing not in spec and working in spec
