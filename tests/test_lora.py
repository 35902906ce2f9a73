"""LoRA adapters: training only the adapter ([lora]), saving it alone in peft's layout, resuming it,
merging it on load (``--lora``, every model command) and into a full folder (``convert --lora``).

The fast tests adapt a random `tiny` model; the slow one fine-tunes the bundled demo on a new
caption style and shows that its answers change.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import set_dotted
from showo2_cli.cli import main
from showo2_cli.errors import ModelError, UsageError
from showo2_cli.lora import ADAPTER_CONFIG, ADAPTER_WEIGHTS, add_lora, load_adapter_state, merge_adapters
from showo2_cli.training import checkpoint as ckpt
from showo2_cli.training.config import parse_config
from showo2_cli.training.trainer import train


def lora_config(tmp_path: Path, base: Path, name: str = "run", **changes) -> dict:
    cfg = {
        "mode": "showo2", "seed": 0, "output_dir": str(tmp_path / name),
        "model": {"init": str(base)},
        "data": [{"kind": "shapes", "role": "t2i", "resolution": 64},
                 {"kind": "shapes", "role": "mmu", "format": "pretraining", "resolution": 64}],
        "batch": {"t2i": 2, "mmu": 2},
        "optim": {"lr": 1e-2, "max_steps": 6},
        "lora": {"rank": 4, "alpha": 8},
        "run": {"save_every": 0, "log_every": 1, "device": "cpu"},
    }
    return set_dotted(cfg, changes)


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("change, field", [
    ({"lora.rank": -1}, "lora.rank"),
    ({"lora.alpha": 0.0}, "lora.alpha"),
    ({"lora.dropout": 1.0}, "lora.dropout"),
    ({"lora.target_modules": []}, "lora.target_modules"),
    ({"optim.frozen": ["showo."]}, "optim.frozen"),
    ({"optim.grad_accumulation": 0}, "optim.grad_accumulation"),
    ({"run.log_with": ["tensorbored"]}, "run.log_with[0]"),
])
def test_lora_and_scaling_fields_are_checked(tmp_path, tiny_model_dir, change, field):
    raw = lora_config(tmp_path, tiny_model_dir, **change)
    with pytest.raises(UsageError) as err:
        parse_config(raw, source="c.toml")
    assert str(err.value).startswith(f"c.toml: {field}") and "\n" not in str(err.value), str(err.value)


def test_lora_run_trains_only_the_adapter_saves_it_alone_and_resumes_bit_identically(tmp_path, tiny_model_dir):
    events = []
    straight = train(parse_config(lora_config(tmp_path, tiny_model_dir, "a"), source="a"), progress=events.append)
    start = next(e for e in events if e["event"] == "start")
    assert set(start["groups"]) == {"lora", "frozen"} and 0 < start["trainable"] < start["groups"]["frozen"]["params"]
    ck = straight.checkpoint
    assert sorted(p.name for p in ck.iterdir()) == [ADAPTER_CONFIG, ADAPTER_WEIGHTS, ckpt.STATE_FILE]
    config = json.loads((ck / ADAPTER_CONFIG).read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 4 and config["lora_alpha"] == 8
    assert config["base_model_name_or_path"] == str(tiny_model_dir)
    assert all(name.startswith("showo.model.layers.") for name in config["target_modules"])
    adapter = load_file(str(ck / ADAPTER_WEIGHTS))
    assert adapter and all(".lora_A." in k or ".lora_B." in k for k in adapter)
    assert any(float(v.abs().max()) > 0 for k, v in adapter.items() if "lora_B" in k)  # B starts at 0 and moved
    assert (ck / ADAPTER_WEIGHTS).stat().st_size < 0.1 * (tiny_model_dir / "model.safetensors").stat().st_size
    losses = [m["loss"] for m in metrics(tmp_path / "a")]
    assert losses[-1] < losses[0]

    split = lora_config(tmp_path, tiny_model_dir, "b")
    assert train(parse_config(split, source="b"), stop_after=3).step == 3
    second = train(parse_config(split, source="b"))
    assert second.resumed_from.name == "checkpoint-000003" and second.step == 6
    assert [m["loss"] for m in metrics(tmp_path / "b")] == losses
    resumed = load_file(str(second.checkpoint / ADAPTER_WEIGHTS))
    assert resumed.keys() == adapter.keys() and all(torch.equal(resumed[k], adapter[k]) for k in adapter)
    # the base never changes: the run folder of a full fine-tune refuses a LoRA checkpoint and vice versa
    with pytest.raises(UsageError, match="is a LoRA checkpoint"):
        train(parse_config(lora_config(tmp_path, tiny_model_dir, "b", **{"lora.rank": 0, "optim.max_steps": 8}),
                           source="b"))


def test_lora_dropout_is_fixed_by_the_step_so_resume_and_a_second_run_repeat(tmp_path, tiny_model_dir):
    """[lora] dropout draws from torch's global generator, which the data loader and the set-up of a
    resumed run also draw from: each step seeds it from (seed, step, process), so a run repeats in a
    process that ran another first, and N steps straight equal N/2, resume, N/2."""
    drop = {"lora.dropout": 0.3, "optim.max_steps": 4, "batch.t2i": 1, "batch.mmu": 1}
    straight = train(parse_config(lora_config(tmp_path, tiny_model_dir, "a", **drop), source="a"))
    split = lora_config(tmp_path, tiny_model_dir, "b", **drop)
    train(parse_config(split, source="b"), stop_after=2)
    torch.rand(7)  # what the caller draws in between does not matter either
    second = train(parse_config(split, source="b"))
    losses = [m["loss"] for m in metrics(tmp_path / "a")]
    assert [m["loss"] for m in metrics(tmp_path / "b")] == losses and len(set(losses)) == 4
    a, b = (load_file(str(r.checkpoint / ADAPTER_WEIGHTS)) for r in (straight, second))
    assert all(torch.equal(a[k], b[k]) for k in a)


def _logits(network, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, network.spec.vocab_size, (2, 12), generator=gen)
    with torch.no_grad():
        hidden, _ = network.llm(network.showo.model.embed_tokens(ids), None)
        return network.logits(hidden)


def test_merged_adapters_equal_the_adapted_network_and_stack_in_order(tmp_path, tiny_model_dir, capsys):
    from showo2_cli.loading import load

    run_a = train(parse_config(lora_config(tmp_path, tiny_model_dir, "a"), source="a")).checkpoint
    run_b = train(parse_config(lora_config(tmp_path, tiny_model_dir, "b", seed=5, **{"lora.rank": 2}),
                               source="b")).checkpoint
    base = load(tiny_model_dir).network
    # the reference: the base with the adapter as a live peft layer (unmerged)
    live = load(tiny_model_dir).network
    lo = parse_config(lora_config(tmp_path, tiny_model_dir), source="x").lora
    add_lora(live, lo.rank, lo.alpha, lo.dropout, lo.target_modules, lo.within)
    load_adapter_state(live, load_file(str(run_a / ADAPTER_WEIGHTS)), "a")
    live.eval()
    merged = load(tiny_model_dir, lora=[tmp_path / "a"]).network  # a run folder: its latest checkpoint
    assert not any("lora" in k for k in merged.state_dict())
    assert not torch.allclose(_logits(base), _logits(merged), atol=1e-4)
    assert torch.allclose(_logits(live), _logits(merged), atol=1e-5)

    both = load(tiny_model_dir, lora=[run_a, run_b]).network
    only_b = load(tiny_model_dir, lora=[run_b]).network
    w = "showo.model.layers.0.mlp.up_proj.weight"
    s0, sa, sb, sab = (n.state_dict()[w] for n in (base, merged, only_b, both))
    assert torch.allclose(sab, s0 + (sa - s0) + (sb - s0), atol=1e-6)

    # convert --lora: a full model folder with the adapters merged, loading without them
    out = tmp_path / "merged"
    code = main(["convert", str(tiny_model_dir), "--lora", str(run_a), "--lora", str(run_b), "-o", str(out), "--json"])
    result = json.loads(capsys.readouterr().out)
    assert code == 0 and result["lora"] == [str(run_a), str(run_b)]
    again = load(out).network
    assert torch.allclose(_logits(again), _logits(both), atol=1e-6)


def test_lora_option_on_model_commands_and_its_errors(tmp_path, tiny_model_dir, capsys):
    run = train(parse_config(lora_config(tmp_path, tiny_model_dir, "a"), source="a"))
    plain, tuned = tmp_path / "plain.png", tmp_path / "tuned.png"
    common = ["--model", str(tiny_model_dir), "--steps", "3", "--seed", "4", "--quiet"]
    assert main(["t2i", "a red circle", "-o", str(plain), *common]) == 0
    assert main(["t2i", "a red circle", "-o", str(tuned), "--lora", str(run.checkpoint), *common]) == 0
    capsys.readouterr()
    assert json.loads(tuned.with_suffix(".json").read_text())["lora"] == [str(run.checkpoint)]
    assert "lora" not in json.loads(plain.with_suffix(".json").read_text())
    # (a random tiny model's flow head starts at zero, so its images cannot show the adapter; its
    # answers do: the adapted LLM predicts other tokens)
    answers = []
    for extra in ([], ["--lora", str(run.checkpoint)]):
        assert main(["caption", str(plain), "--model", str(tiny_model_dir), "--max-new-tokens", "8", "--json",
                     "--no-stream", *extra]) == 0
        answers.append(json.loads(capsys.readouterr().out))
    assert answers[0] != answers[1]

    assert main(["caption", str(plain), "--model", str(tiny_model_dir), "--lora", str(tmp_path / "nope"),
                 "--max-new-tokens", "2", "--quiet"]) == UsageError.exit_code
    err = capsys.readouterr().err.strip()
    assert "--lora" in err and "does not exist" in err and len(err.splitlines()) == 1
    assert main(["t2i", "x", "-o", str(tmp_path / "x.png"), "--lora", str(tiny_model_dir), *common]) == ModelError.exit_code
    assert "is not a LoRA adapter" in capsys.readouterr().err

    # ranks that lie about the saved tensors are refused before peft allocates them (r = 10^9 was a
    # 256 GB allocation; r = 0 a ValueError from peft)
    import shutil

    from showo2_cli.lora import ADAPTER_CONFIG, find_adapter, read_adapter

    for change in ({"r": 1_000_000_000}, {"r": 0}, {"rank_pattern": {"q_proj": 10**9}}, {"rank_pattern": [1]}):
        bad = tmp_path / f"bad-rank-{len(list(tmp_path.glob('bad-rank-*')))}"
        shutil.copytree(find_adapter(run.checkpoint), bad)
        cfg = json.loads((bad / ADAPTER_CONFIG).read_text())
        cfg.update(change)
        (bad / ADAPTER_CONFIG).write_text(json.dumps(cfg))
        with pytest.raises(ModelError, match=r"adapter_config\.json.*(rank|\br\b)"):
            read_adapter(bad)

    # an adapter trained on another base (other widths) does not fit: one line, exit 4
    from showo2_cli.loading import init_model, load

    other = init_model(_wider_tiny(), tmp_path / "wider", seed=0, vae_base_dim=4)
    with pytest.raises(ModelError, match="does not fit this model"):
        load(other, lora=[run.checkpoint])
    with pytest.raises(ModelError, match="does not fit this model|does not have"):
        merge_adapters(load(tiny_model_dir).network.float(), [_renamed(tmp_path, run.checkpoint)])


def test_lora_ema_is_an_adapter_of_its_own_and_chat_serve_take_lora(tmp_path, tiny_model_dir, capsys):
    """[ema] with [lora]: the average follows the adapter only, saved as ema/ (an adapter folder)."""
    from showo2_cli.loading import load

    result = train(parse_config(lora_config(tmp_path, tiny_model_dir, "e", ema={"decay": 0.9, "start_step": 1}),
                                source="e"))
    ema, online = result.checkpoint / ckpt.EMA_DIR, result.checkpoint
    assert sorted(p.name for p in ema.iterdir()) == [ADAPTER_CONFIG, ADAPTER_WEIGHTS]
    a, b = load_file(str(online / ADAPTER_WEIGHTS)), load_file(str(ema / ADAPTER_WEIGHTS))
    assert a.keys() == b.keys() and any(not torch.equal(a[k], b[k]) for k in a)
    state = torch.load(online / ckpt.STATE_FILE, weights_only=True)["ema"]
    assert "shadow_params" not in state and state["shadow_params_in"] == "ema"  # its weights: ema/ alone (probe CE)
    assert load(tiny_model_dir, lora=[ema]).adapters == [str(ema)]
    for command in (["chat", "--quiet"], ["serve", "--port", "0", "--quiet"]):
        assert main([*command, "--model", str(tiny_model_dir), "--lora", str(tmp_path / "missing")]) == \
            UsageError.exit_code
        assert "--lora" in capsys.readouterr().err


def _wider_tiny():
    from showo2_cli.specs import get_spec

    return get_spec("tiny").replace(intermediate_size=160)


def _renamed(tmp_path: Path, ck: Path) -> Path:
    """A copy of an adapter whose config names a layer the model lacks."""
    import shutil

    dst = tmp_path / "renamed"
    shutil.copytree(ck, dst)
    cfg = json.loads((dst / ADAPTER_CONFIG).read_text())
    cfg["target_modules"] = ["showo.model.layers.9.mlp.up_proj"]
    (dst / ADAPTER_CONFIG).write_text(json.dumps(cfg))
    return dst


# ---- the demo learns a new caption style ---------------------------------------------------------

def style(scene) -> str:
    """The new answer template: ``circle in red over black``."""
    return f"{scene.shape} in {scene.colour} over {scene.background}"


@pytest.mark.slow
def test_lora_fine_tune_of_the_demo_learns_a_new_caption_style(tmp_path, capsys):
    """250 adapter steps on 64 images captioned in a new style: the adapted demo answers in that
    style (the base never does), with the right colour and background, and the adapter is under
    10% of the model's size. (The shape, which the new style puts first, is right for about half:
    the rank-8 adapter of the LLM alone plateaus there on 64 images.)"""
    from showo2_cli import media as M
    from showo2_cli.loading import bundled_demo_path, load
    from showo2_cli.pipelines import CaptionOptions, caption
    from showo2_cli.training import shapes as S

    demo = bundled_demo_path()
    if not (demo / "config.json").exists():
        pytest.skip("demo not bundled")
    rng = np.random.default_rng(7)
    rows = []
    (tmp_path / "img").mkdir()
    for i in range(64):
        scene = S.random_scene(rng, canvas=64)
        M.write_image(tmp_path / "img" / f"{i}.png", S.render_image(scene))
        rows.append({"image": f"img/{i}.png", "conversations": [
            {"from": "human", "value": "<image>\nDescribe the image."}, {"from": "gpt", "value": style(scene)}]})
    (tmp_path / "style.json").write_text(json.dumps(rows))
    raw = {"mode": "showo2", "seed": 0, "output_dir": str(tmp_path / "run"), "model": {"init": str(demo)},
           "data": [{"kind": "llava", "role": "mmu", "path": str(tmp_path / "style.json"), "format": "tuning",
                     "resolution": 64, "max_seq_len": 72, "cache": str(tmp_path / "cache")}],
           "batch": {"mmu": 8}, "optim": {"lr": 5e-3, "max_steps": 250, "warmup_steps": 10},
           "lora": {"rank": 8, "alpha": 16}, "run": {"save_every": 0, "log_every": 10, "device": "cpu"}}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = train(parse_config(raw, source="style"))
    finally:
        torch.set_num_threads(threads)
    adapter = result.checkpoint / ADAPTER_WEIGHTS
    assert adapter.stat().st_size < 0.1 * (demo / "model.safetensors").stat().st_size

    base, tuned = load("demo"), load("demo", lora=[tmp_path / "run"])
    rng = np.random.default_rng(99)  # fresh scenes, not the training images
    opts = CaptionOptions(questions=["Describe the image."], max_new_tokens=24)
    new_style = re.compile(r"^\w+ in \w+ over \w+$")
    base_hits = tuned_hits = tuned_form = tuned_colours = 0
    for i in range(12):
        scene = S.random_scene(rng, canvas=64)
        path = tmp_path / f"test-{i}.png"
        M.write_image(path, S.render_image(scene))
        before, after = caption(base, path, opts).answers[0], caption(tuned, path, opts).answers[0]
        base_hits += before == style(scene)
        tuned_hits += after == style(scene)
        tuned_form += bool(new_style.match(after))
        words = after.split()
        tuned_colours += len(words) == 5 and words[2] == scene.colour and words[4] == scene.background
        assert before == S.caption(scene) or not new_style.match(before)
    assert base_hits == 0 and tuned_form >= 11 and tuned_colours >= 9, (base_hits, tuned_form, tuned_colours, tuned_hits)
    # the command line: the same adapter through --lora
    code = main(["caption", str(tmp_path / "test-0.png"), "-q", "Describe the image.", "--model", "demo",
                 "--lora", str(tmp_path / "run"), "--json", "--no-stream"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and new_style.match(out["answers"][0]["answer"]), out


@pytest.mark.parametrize("change", [
    {"lora_alpha": "x"}, {"lora_alpha": None}, {"lora_dropout": 5}, {"lora_dropout": "x"},
    {"alpha_pattern": {"q_proj": "x"}}, {"alpha_pattern": [1]}, {"target_modules": [5]},
    {"target_modules": ["q_proj", 5]}, {"init_lora_weights": "bogus"}, {"init_lora_weights": "loftq"},
    {"init_lora_weights": "pissa"}, {"layer_replication": [[0, 2], [0, 2]]}, {"modules_to_save": ["showo.model.norm"]},
    {"exclude_modules": 5}, {"trainable_token_indices": [1, 2]}, {"use_rslora": "yes"},
    {"target_parameters": ["showo.model.layers.0.mlp.up_proj.weight"]},
])
def test_adapter_configs_with_odd_values_are_refused_naming_the_file(tmp_path, tiny_model_dir, change):
    """Found by probing: each was an internal error (TypeError, KeyError, ImportError, ...) or, for
    PiSSA, a silently different merge (the base weights rewritten)."""
    import shutil

    from showo2_cli.lora import read_adapter

    run = train(parse_config(lora_config(tmp_path, tiny_model_dir, "a", **{"optim.max_steps": 1}), source="a"))
    adapter = tmp_path / "adapter"
    shutil.copytree(run.checkpoint, adapter, ignore=shutil.ignore_patterns(ckpt.STATE_FILE))
    cfg = json.loads((adapter / ADAPTER_CONFIG).read_text())
    (adapter / ADAPTER_CONFIG).write_text(json.dumps({**cfg, **change}))
    with pytest.raises(ModelError, match=ADAPTER_CONFIG):
        read_adapter(adapter)


def test_saving_an_adapter_asks_no_server(tmp_path, tiny_model_dir, monkeypatch):
    """peft's default save looked the base up on the Hugging Face Hub (a HEAD request for
    ``<base>/config.json`` at every checkpoint of a run whose base is a name such as ``demo``):
    saving an adapter opens no connection and resolves no host; the file holds the adapter only."""
    import socket

    from showo2_cli.loading import load
    from showo2_cli.lora import save_adapter

    network = load(tiny_model_dir, dtype=torch.float32).network
    config = add_lora(network, 2, 4, 0.0, ["q_proj", "lm_head"], [], base="someone/some-base")
    tried = []

    def refuse(*args, **kwargs):
        tried.append(args[:2])
        raise OSError("no network in this test")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    folder = save_adapter(tmp_path / "adapter", network, config)
    assert tried == []
    saved = load_file(str(folder / ADAPTER_WEIGHTS))
    assert saved and all(".lora_A." in k or ".lora_B." in k for k in saved), sorted(saved)[:4]
    assert any("lm_head.lora_" in k for k in saved)


def test_one_adapter_is_a_path_in_python_and_from_pretrained_takes_it(tmp_path, tiny_model_dir):
    """``load(model, lora=PATH)`` (one adapter, as ``vae=PATH``) took the path's characters for
    adapters ("--lora: '/' is not a LoRA adapter"); ``Showo2Pipeline.from_pretrained`` had no
    ``lora=`` at all. Both merge the adapter as ``lora=[PATH]`` does."""
    from showo2_cli import Showo2Pipeline
    from showo2_cli.loading import load
    from showo2_cli.lora import save_adapter

    network = load(tiny_model_dir).network
    config = add_lora(network, 2, 4, 0.0, ["up_proj"], [], base=str(tiny_model_dir))
    with torch.no_grad():
        for name, p in network.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))
    folder = save_adapter(tmp_path / "adapter", network, config)
    w = "showo.model.layers.0.mlp.up_proj.weight"
    base = load(tiny_model_dir).network.state_dict()[w]
    listed = load(tiny_model_dir, lora=[folder])
    assert not torch.allclose(listed.network.state_dict()[w], base)
    for one in (str(folder), folder):
        model = load(tiny_model_dir, lora=one)
        assert model.adapters == listed.adapters and len(model.adapters) == 1
        assert torch.equal(model.network.state_dict()[w], listed.network.state_dict()[w])
    pipe = Showo2Pipeline.from_pretrained(tiny_model_dir, lora=str(folder))
    assert pipe.model.adapters == listed.adapters
    assert torch.equal(pipe.model.network.state_dict()[w], listed.network.state_dict()[w])


def test_resuming_with_another_alpha_keeps_the_checkpoints(tmp_path, tiny_model_dir):
    """[lora] alpha scales the trained update (alpha / r * B A): resuming with another one changed
    the model at once, silently. The checkpoint's alpha and dropout are kept, with a notice, so the
    run continues as if uninterrupted."""
    straight = train(parse_config(lora_config(tmp_path, tiny_model_dir, "a", **{"optim.max_steps": 3}), source="a"))
    raw = lora_config(tmp_path, tiny_model_dir, "b", **{"optim.max_steps": 3})
    train(parse_config(raw, source="b"), stop_after=2)
    events = []
    resumed = train(parse_config(set_dotted(raw, {"lora.alpha": 32.0}), source="b"), progress=events.append)
    said = [e["message"] for e in events if e["event"] == "notice"]
    assert len(said) == 1 and "lora.alpha/dropout (32, 0) differ from the checkpoint's (8, 0)" in said[0], said
    assert [m["loss"] for m in metrics(tmp_path / "b")] == [m["loss"] for m in metrics(tmp_path / "a")]
    assert json.loads((resumed.checkpoint / ADAPTER_CONFIG).read_text())["lora_alpha"] == 8
    a, b = (load_file(str(r.checkpoint / ADAPTER_WEIGHTS)) for r in (straight, resumed))
    assert all(torch.equal(a[k], b[k]) for k in a)
