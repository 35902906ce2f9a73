"""Probe IH: mutants of the readers added since probes FA and FN (``benchmarks/fuzz_readers.py
--reader train-run / latent-cache / schema / chat-load``) that escaped as internal errors or were
taken when they cannot be held."""

from __future__ import annotations

import importlib.util
import json
import math
import re
from pathlib import Path

import pytest
import torch

from showo2_cli.errors import ModelError, UsageError
from showo2_cli.training import checkpoint as ckpt

ROOT = Path(__file__).resolve().parents[1]

# ---------------------------------------------------------------- a run folder's training state


def _adamw():
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    net(torch.ones(1, 3)).sum().backward()
    opt.step()
    return net, opt


def _state_with(change):
    _, opt = _adamw()
    saved = opt.state_dict()
    change(saved["state"][0])
    return saved


DAMAGED = {
    "step -1e38": lambda s: s.update(step=torch.tensor(-1e38)),
    "step nan": lambda s: s.update(step=torch.tensor(float("nan"))),
    "step 2.5": lambda s: s.update(step=torch.tensor(2.5)),
    "step 10^13": lambda s: s.update(step=torch.tensor(1e13)),
    "step text": lambda s: s.update(step="1"),
    "step complex": lambda s: s.update(step=torch.tensor(1 + 1j)),
    "step of two values": lambda s: s.update(step=torch.tensor([1.0, 2.0])),
    "exp_avg nan": lambda s: s["exp_avg"].fill_(float("nan")),
    "exp_avg_sq inf": lambda s: s["exp_avg_sq"].fill_(float("inf")),
    "exp_avg_sq negative": lambda s: s["exp_avg_sq"].fill_(-1.0),
    "exp_avg a list": lambda s: s.update(exp_avg=[0.0] * 6),
    "exp_avg transposed": lambda s: s.update(exp_avg=s["exp_avg"].t()),
    "exp_avg dropped": lambda s: s.pop("exp_avg"),  # mutant 948: KeyError: 'exp_avg' at the first step
}
DAMAGED_TABLES = {  # mutants 318, 324, 372: a state no group names ('int' object has no attribute 'shape')
    "a state of parameter 999": lambda o: o["state"].update({999: o["state"][0]}),
    "a state that is no table": lambda o: o["state"].update({1: 5}),
}


@pytest.mark.parametrize("name", list(DAMAGED))
def test_a_damaged_optimizer_state_is_a_model_error_naming_the_file(tmp_path, name):
    _, opt = _adamw()
    with pytest.raises(ModelError, match=r"trainer_state.pt': the optimizer state does not fit this model \("):
        ckpt.restore_optimizer(opt, _state_with(DAMAGED[name]), tmp_path / "trainer_state.pt")


@pytest.mark.parametrize("name", list(DAMAGED_TABLES))
def test_an_optimizer_state_for_parameters_it_lacks_is_refused(tmp_path, name):
    _, opt = _adamw()
    saved = opt.state_dict()
    DAMAGED_TABLES[name](saved)
    with pytest.raises(ModelError, match=r"the optimizer state does not fit this model \("):
        ckpt.restore_optimizer(opt, saved, tmp_path / "trainer_state.pt")


@pytest.mark.parametrize("switch", [{"amsgrad": True}, {"maximize": True}, {"foreach": "yes"}])
def test_an_optimizer_state_with_other_switches_is_refused(tmp_path, switch):
    """Mutant 72 of ``--reader train-run --seed 53``: ``amsgrad`` switched on in a group; the resume's
    first step raised ``KeyError: 'max_exp_avg_sq'``. ``maximize`` trained the loss up, silently."""
    _, opt = _adamw()
    saved = opt.state_dict()
    saved["param_groups"][0].update(switch)
    key = next(iter(switch))
    with pytest.raises(ModelError, match=f"does not fit this model \\(group 0 has {key} "):
        ckpt.restore_optimizer(opt, saved, tmp_path / "trainer_state.pt")


@pytest.mark.parametrize("saved", [None, "0.9", [0.9], torch.tensor([0.9, 0.999]), {"a": 1}])
def test_the_configs_betas_replace_any_a_damaged_state_holds(saved):
    """Mutant 174 of ``--reader train-run --seed 53``: a group's ``betas`` None; the resume raised
    ``TypeError: 'NoneType' object is not iterable`` putting the config's settings back."""
    groups = [{"name": "x\ny", "betas": saved, "base_lr": 1e-3, "eps": torch.tensor([1e-8, 1e-8])}]
    said = ckpt.restore_settings(groups, [{"betas": (0.9, 0.999), "base_lr": 1e-3, "eps": 1e-8}])
    assert groups[0]["betas"] == (0.9, 0.999) and groups[0]["eps"] == 1e-8
    assert said.startswith("the optimizer settings differ from the checkpoint's: betas of group 'x\\ny' "
                           "(0.9, 0.999) (the checkpoint's: ") and "\n" not in said


def test_a_sound_optimizer_state_is_restored_as_saved(tmp_path):
    _, opt = _adamw()
    saved = opt.state_dict()
    _, fresh = _adamw()
    fresh.state.clear()
    ckpt.restore_optimizer(fresh, saved, tmp_path / "trainer_state.pt")
    for key in ("step", "exp_avg", "exp_avg_sq"):
        assert torch.equal(fresh.state_dict()["state"][0][key], saved["state"][0][key])


def test_a_run_record_nested_past_the_recursion_limit_is_no_record(tmp_path):
    """check_same_run (every resume reads train_config.json) raised RecursionError: an internal error."""
    from showo2_cli.training.schema import ModelConfig

    (tmp_path / "train_config.json").write_text("[" * 100_000 + "]" * 100_000)
    assert ckpt.check_same_run(tmp_path, ModelConfig(init_spec="tiny")) is None
    ckpt.write_run_config(tmp_path, {"max_steps": 4}, 3, resumed=True)  # (started again)
    assert [e["start_step"] for e in json.loads((tmp_path / "train_config.json").read_text())["invocations"]] == [3]


def _newest_readers():
    """benchmarks/fuzz_newest_readers.py, for its tiny run's config (``TINY``)."""
    spec = importlib.util.spec_from_file_location("fuzz_newest_readers", ROOT / "benchmarks" / "fuzz_newest_readers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_a_resume_from_a_damaged_optimizer_state_is_refused_in_one_line(tmp_path):
    """Mutants 18 and 72 of ``--reader train-run --seed 53``: one parameter's step count -1e38, a
    group's ``amsgrad`` on; the resume's first step raised OverflowError from AdamW's bias correction,
    ``KeyError: 'max_exp_avg_sq'`` (``showo2 train``: internal errors). A NaN first moment trained
    on, every weight NaN after the step."""
    from showo2_cli.training import load_config, train

    (tmp_path / "c.toml").write_text(_newest_readers().TINY.format(out="run", steps=2))
    train(load_config(tmp_path / "c.toml"))
    path = tmp_path / "run" / "checkpoint-000002" / "trainer_state.pt"
    good = path.read_bytes()
    for change, said in ((lambda o: o["state"][0].update(step=torch.tensor(-1e38)), "a step count of -1e+38"),
                         (lambda o: o["param_groups"][0].update(amsgrad=True), "group 0 has amsgrad True, not False"),
                         (lambda o: o["state"][0]["exp_avg"].fill_(float("nan")),
                          "exp_avg holds values that are not finite")):
        state = torch.load(path, weights_only=True)
        change(state["optimizer"])
        torch.save(state, path)
        cfg = load_config(tmp_path / "c.toml")
        cfg.optim.max_steps = 3
        with pytest.raises(ModelError, match=re.escape(f"optimizer state does not fit this model ({said})")):
            train(cfg)
        path.write_bytes(good)
    cfg = load_config(tmp_path / "c.toml")
    cfg.optim.max_steps = 3
    assert math.isfinite(train(cfg).loss)  # the sound state resumes


# ---------------------------------------------------------------- schema files


@pytest.mark.parametrize("lengths", [{"maxLength": 2}, {"minLength": 3}, {"minLength": 1, "maxLength": 8}])
def test_a_pattern_beside_a_length_is_refused_before_any_model_loads(tmp_path, lengths):
    """xgrammar keeps the pattern and drops the lengths (printing a warning of its own on stderr):
    ``{"pattern": "^[a-z]+$", "maxLength": 2}`` was answered with 60 letters."""
    from showo2_cli import api
    from showo2_cli.structured import read_schema

    schema = {"type": "object", "properties": {"a": {"type": "string", "pattern": "^[a-z]+$", **lengths}},
              "required": ["a"]}
    path = tmp_path / "s.json"
    path.write_text(json.dumps(schema))
    with pytest.raises(UsageError, match=r"#/properties/a/pattern: a 'pattern' beside 'minLength'/'maxLength' is "
                                         r"not supported in structured output"):
        read_schema(str(path))
    with pytest.raises(UsageError, match="beside 'minLength'/'maxLength'"):
        api.CaptionOptions(json_schema=schema).validate()


def test_a_length_or_a_pattern_alone_is_still_taken():
    from showo2_cli.structured import check_schema

    check_schema({"type": "string", "pattern": "^[a-z]{1,8}$"})
    check_schema({"type": "string", "minLength": 1, "maxLength": 8})
    check_schema({"type": "object", "properties": {"a": {"type": "string", "pattern": "^a$"},
                                                   "b": {"type": "string", "maxLength": 3}}})


@pytest.mark.parametrize("key", ["minLength", "maxLength", "minItems", "maxItems", "minProperties", "maxProperties"])
@pytest.mark.parametrize("count", [-1, -860969361696, 2**31, 2**32 + 3, -0.5])
def test_a_count_xgrammar_cannot_hold_is_refused_naming_its_place(key, count):
    """Mutant 978 of ``--reader schema --seed 53``: ``minLength: -860969361696``; xgrammar took it as
    a 32-bit integer and wrote a grammar it could not parse: ``api.caption`` raised RuntimeError at the
    first token (the CLI's internal error). ``maxLength: 2**32 + 3`` held answers to 3 characters."""
    from showo2_cli.structured import check_schema

    kind = {"L": "string", "I": "array", "P": "object"}[key[3]]
    schema = {"type": "object", "properties": {"a": {"type": kind, key: count}}}
    with pytest.raises(UsageError, match=re.escape(f"JSON schema #/properties/a/{key}: '{key}' must be a whole "
                                                   "number from 0 to 2,147,483,647, got ")):
        check_schema(schema)


@pytest.mark.parametrize("count", [0, 3, 2**31 - 1])
def test_counts_in_range_are_taken(count):
    from showo2_cli.structured import check_schema

    check_schema({"type": "object", "properties": {"a": {"type": "string", "maxLength": count},
                                                   "b": {"type": "array", "minItems": 0, "maxItems": count}}})
