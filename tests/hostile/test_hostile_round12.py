"""Hostile inputs, round twelve (probe BI): the evening's new surfaces (--lora repo ids, adapters
checked before loading, placement values, official depths, the video check cache). An adapter
config's regular expressions (a string ``target_modules`` or ``exclude_modules``, the keys of
``rank_pattern``/``alpha_pattern``) went to peft, which matches them with ``re`` over every module
name: a pattern with nested repetition, ``(.*)*x``, backtracked for hours (``showo2 t2i --lora``
killed after 40 s; a server's ``load_lora_weights`` thread likewise, uninterruptible). They are now
matched by the ``regex`` engine within a time limit and handed to peft as literal names. Each test
fails on the code before its fix (the hostile ones by not finishing)."""

from __future__ import annotations

import json
import shutil
import signal

import pytest
import torch

from conftest import write_adapter
from showo2_cli import lora
from showo2_cli.cli import main
from showo2_cli.errors import ModelError, UsageError
from showo2_cli.loading import load

HOSTILE = "(.*)*x"  # under re: 2**len(name) steps on a layer name that holds no x


def finishes(fn, seconds: int = 30):
    """``fn()``, failing when it is still running after ``seconds`` (the code before the fix
    backtracked for hours; re's matcher checks for signals, so an alarm interrupts it)."""
    def alarm(*_):
        raise TimeoutError

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(seconds)
    try:
        return fn()
    except TimeoutError:
        pytest.fail(f"still matching after {seconds} s")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture(scope="module")
def merged(tiny_model_dir, tmp_path_factory):
    """(the plain adapter on q_proj, alpha_pattern on one layer; the network's weights with it merged)."""
    tmp = tmp_path_factory.mktemp("bi")
    plain = write_adapter(tiny_model_dir, tmp / "plain", ["q_proj"], 5, alpha_pattern={"layers.0.self_attn.q_proj": 9.0})
    return plain, load(tiny_model_dir, lora=[plain], need=()).network.state_dict()


def variant(plain, dest, **fields):
    """The adapter ``plain`` (the same tensors) with ``fields`` set in its config."""
    shutil.copytree(plain, dest)
    raw = json.loads((dest / lora.ADAPTER_CONFIG).read_text())
    (dest / lora.ADAPTER_CONFIG).write_text(json.dumps({**raw, **fields}))
    return dest


def test_a_hostile_target_modules_pattern_is_refused_at_once_not_matched_for_hours(tiny_model_dir, merged, tmp_path,
                                                                                    tmp_path_factory, capsys):
    folder = variant(merged[0], tmp_path_factory.mktemp("bi") / "hostile", target_modules=HOSTILE)
    with pytest.raises(ModelError, match=r"target_modules '\(\.\*\)\*x' matches no linear layer"):
        finishes(lambda: load(tiny_model_dir, lora=[folder], need=()))
    out = tmp_path / "x.png"
    code = finishes(lambda: main(["t2i", "a red circle", "--model", str(tiny_model_dir), "--lora", str(folder),
                                  "-o", str(out), "--steps", "2"]))
    err = capsys.readouterr().err
    assert code == 4 and "matches no linear layer" in err and len(err.strip().splitlines()) == 1, err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("fields", [
    {"exclude_modules": HOSTILE},
    {"rank_pattern": {"(.*)*zz": 2}},
    {"alpha_pattern": {"layers.0.self_attn.q_proj": 9.0, "(.*)*zz": 3.0}},
], ids=["exclude_modules", "rank_pattern", "alpha_pattern"])
def test_hostile_patterns_elsewhere_in_the_config_match_nothing_and_load_as_without_them(tiny_model_dir, merged,
                                                                                           fields, tmp_path):
    plain, expected = merged
    folder = variant(plain, tmp_path / "hostile", **fields)
    got = finishes(lambda: load(tiny_model_dir, lora=[folder], need=()).network.state_dict())
    assert got.keys() == expected.keys()
    assert all(torch.equal(got[k], expected[k]) for k in expected)  # bit for bit the plain adapter's merge


def test_regular_expressions_still_mean_what_peft_means(tiny_model_dir, merged, tmp_path):
    """A target_modules pattern, an alpha_pattern key with regex syntax and an exclude pattern merge
    bit for bit as the plain names they stand for."""
    plain, expected = merged
    folder = variant(plain, tmp_path / "regex", target_modules=r".*\.(q_proj|k_proj)", exclude_modules=r".*k_pro[j]",
                     alpha_pattern={r"layers\.(0)\.self_attn\.q_proj": 9.0})
    base = load(tiny_model_dir, need=()).network.state_dict()
    got = load(tiny_model_dir, lora=[folder], need=()).network.state_dict()
    changed = {k for k in base if not torch.equal(base[k], got[k])}
    assert changed and all("q_proj" in k for k in changed)
    assert all(torch.equal(got[k], expected[k]) for k in expected)


def test_a_pattern_over_the_time_limit_is_one_line_naming_it(tiny_model_dir, merged, monkeypatch, tmp_path):
    folder = variant(merged[0], tmp_path / "slow", target_modules=r".*q_proj")
    monkeypatch.setattr(lora, "MATCH_SECONDS", 0.0)
    with pytest.raises(ModelError, match=r"target_modules '\.\*q_proj' takes over 0 s to match this model's layer"):
        load(tiny_model_dir, lora=[folder], need=())


def test_an_empty_lora_is_refused_not_read_as_the_current_folder(tiny_model_dir, merged, tmp_path, monkeypatch,
                                                                  capsys):
    """``--lora ""`` (typer's Path made it '.') merged the adapter in the current folder unasked."""
    monkeypatch.chdir(variant(merged[0], tmp_path / "adapter_here"))
    out = tmp_path / "x.png"
    for empty in ("", " "):
        assert main(["t2i", "a red circle", "--model", str(tiny_model_dir), "--lora", empty, "-o", str(out),
                     "--steps", "2"]) == 2
        err = capsys.readouterr().err
        assert "--lora: the name is empty" in err and len(err.strip().splitlines()) == 1, err
        with pytest.raises(UsageError, match="lora: the name is empty"):
            load(tiny_model_dir, lora=[empty], need=())
    assert not out.exists()


def test_a_lora_name_is_echoed_as_typed(capsys, tmp_path):
    """A URL given as --lora is named as given (typer's Path turned '//' into '/')."""
    url = "https://huggingface.co/acme/x"
    assert main(["t2i", "a red circle", "--lora", url, "-o", str(tmp_path / "x.png"), "--steps", "2"]) == 2
    err = capsys.readouterr().err
    assert f"--lora: '{url}' does not exist" in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("dtype", [torch.float8_e4m3fn, torch.float8_e5m2])
def test_a_float8_adapter_merges_as_its_float32_values_and_its_nan_is_named(tiny_model_dir, merged, tmp_path, dtype):
    """float8_e4m3fn tensors were an internal error (torch has no isfinite for them); e5m2 loaded."""
    from safetensors.torch import load_file, save_file

    def with_tensors(name, change):
        folder = variant(merged[0], tmp_path / name)
        weights = folder / lora.ADAPTER_WEIGHTS
        save_file({k: change(v) for k, v in load_file(weights).items()}, weights)
        return folder

    low = with_tensors("f8", lambda t: t.to(dtype))
    wide = with_tensors("f32", lambda t: t.to(dtype).float())  # the same values in float32
    got = load(tiny_model_dir, lora=[low], need=()).network.state_dict()
    want = load(tiny_model_dir, lora=[wide], need=()).network.state_dict()
    assert all(torch.equal(got[k], want[k]) for k in want)
    assert any(not torch.equal(want[k], merged[1][k]) for k in want)  # (float8 rounded the adapter)
    nan = with_tensors("nan", lambda t: torch.full_like(t, float("nan")).to(dtype))
    with pytest.raises(ModelError, match="holds NaN or infinite values"):
        load(tiny_model_dir, lora=[nan], need=())
    assert main(["t2i", "x", "--model", str(tiny_model_dir), "--lora", str(nan), "-o", str(tmp_path / "x.png"),
                 "--steps", "2"]) == 4
    assert not (tmp_path / "x.png").exists()
