"""caption / t2i / t2v / i2v / models: library, CLI (runner and subprocess), caching and sharding."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from conftest import PARITY_DIR, REPO, enliven
from showo2_cli import media as M
from showo2_cli import pipelines as P
from showo2_cli.cli import app, main
from showo2_cli.loading import load
from showo2_cli.modeling.attention import omni_attention_mask
from showo2_cli.options import TextSampling
from showo2_cli.sampling import generate_latents
from showo2_cli.sequences import generation_layout, understanding_layout
from showo2_cli.specs import REGISTRY
from showo2_cli.text_decoding import generate, generate_uncached


def run(args, capsys):
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return load(tiny_model_dir)


@pytest.fixture(scope="module")
def lively(tiny):
    """The tiny model with its zero-initialised flow-head layers given small random values, so
    velocities are non-zero and sampling actually moves (the official init makes v = 0)."""
    return enliven(load(tiny.files.root).network)


# ---- library ----------------------------------------------------------------------------------

def test_kv_cached_caption_equals_the_official_full_recompute(tiny):
    net, tok = tiny.network, tiny.tokens
    latents = torch.randn(1, 16, 8, 8, generator=torch.Generator().manual_seed(0))
    visual = net.encode_visual(latents).fused[0]
    _, time_token = net.time_embedding(torch.ones(1))
    layout = understanding_layout([5, 6, 7], visual.shape[0], tok, [1, 2], [3], [4])
    embeds = net.embed_sequence(layout.input_ids, [[visual]], layout.slots, time_token[:, None])
    mask = omni_attention_mask(layout.blocks, layout.seq_len)
    opts = TextSampling(max_new_tokens=24, stop_ids=(tok.eos,))
    cached = generate(net, embeds, mask, opts, keep_logits=True)
    reference = generate_uncached(net, embeds, mask, opts)
    assert cached.token_ids == reference.token_ids
    assert torch.allclose(torch.stack(cached.step_logits), torch.stack(reference.step_logits), atol=1e-4)


def test_token_choice_goes_through_transformers_logits_processors():
    """Greedy decoding has no processor (the official argmax); penalties, biases and the sampling
    warpers are transformers' (the OpenAI penalties are ours), applied over the answer so far."""
    from transformers import RepetitionPenaltyLogitsProcessor, TemperatureLogitsWarper, TopKLogitsWarper

    from showo2_cli.text_decoding import OpenAIPenalties, choose_token, logits_processors

    assert len(logits_processors(TextSampling(), 10)) == 0
    kinds = [type(p) for p in logits_processors(TextSampling(temperature=0.7, top_k=3, repetition_penalty=1.2), 10)]
    assert kinds == [RepetitionPenaltyLogitsProcessor, TemperatureLogitsWarper, TopKLogitsWarper]
    logits = torch.tensor([2.0, 1.9, 0.0, -1.0])
    assert choose_token(logits, TextSampling(), None, [0]) == 0
    assert choose_token(logits, TextSampling(repetition_penalty=1.2), None, [0]) == 1  # 2 / 1.2 < 1.9
    assert choose_token(logits, TextSampling(), None) == 0
    assert choose_token(logits, TextSampling(presence_penalty=0.2), None, [0]) == 1
    assert choose_token(logits, TextSampling(frequency_penalty=0.06), None, [0, 0]) == 1  # 2 - 0.12 < 1.9
    assert choose_token(logits, TextSampling(frequency_penalty=0.06), None, [0]) == 0
    assert choose_token(logits, TextSampling(logit_bias={3: 100.0}), None) == 3
    assert choose_token(logits, TextSampling(logit_bias={0: -100.0}), None) == 1
    gen = torch.Generator().manual_seed(0)
    assert {choose_token(logits, TextSampling(temperature=50.0, top_k=2), gen) for _ in range(200)} == {0, 1}
    assert {choose_token(logits, TextSampling(temperature=50.0, top_p=0.3), gen) for _ in range(50)} <= {0, 1}
    scores = OpenAIPenalties(0.5, 1.0)(torch.tensor([[2, 2, 1]]), torch.zeros(1, 4))
    assert scores.tolist() == [[0.0, -1.5, -2.0, 0.0]]
    with pytest.raises(Exception, match="not in the vocabulary"):
        logits_processors(TextSampling(logit_bias={10: 1.0}), 10)
    with pytest.raises(Exception, match="--repetition-penalty"):
        TextSampling(repetition_penalty=0).validate()


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("masked", [True, False], ids=["omni-mask", "causal-none"])
def test_a_prompt_run_for_its_last_state_fills_the_same_cache(tiny_model_dir, attn, masked):
    """``llm(last_only=True)``: the last layer runs attention and MLP for the last position alone,
    yet that position's state and every layer's keys/values are those of the whole forward."""
    from transformers import DynamicCache

    from showo2_cli.options import RuntimeOptions

    net, tok = (lambda m: (m.network, m.tokens))(load(tiny_model_dir, runtime=RuntimeOptions(attn=attn)))
    latents = torch.randn(1, 16, 8, 8, generator=torch.Generator().manual_seed(3))
    visual = net.encode_visual(latents).fused[0]
    layout = understanding_layout([5, 6, 7, 8], visual.shape[0], tok, [1, 2], [3], [4])
    embeds, _ = net.embed_inputs(layout.input_ids, [[visual]], layout.slots, torch.ones(1))
    mask = omni_attention_mask(layout.blocks, layout.seq_len) if masked else None
    with torch.no_grad():
        full, full_cache = net.llm(embeds, mask, past_key_values=DynamicCache(), use_cache=True)
        last, cut_cache = net.llm(embeds, mask, past_key_values=DynamicCache(), use_cache=True, last_only=True)
    assert last.shape == (1, 1, full.shape[-1])
    assert (last[:, 0] - full[:, -1]).abs().max() < 1e-5
    assert cut_cache.get_seq_length() == full_cache.get_seq_length() == embeds.shape[1]
    for a, b in zip(full_cache.layers, cut_cache.layers, strict=True):
        assert (a.keys - b.keys).abs().max() < 1e-5 and (a.values - b.values).abs().max() < 1e-5
    assert not any(layer._forward_pre_hooks for layer in net.showo.model.layers)  # removed after the call


@pytest.mark.parametrize("mask_mode", ["official", "training"])
def test_questions_share_the_image_prefix_and_answer_as_if_asked_alone(tiny, mask_mode):
    from showo2_cli.text_decoding import prefill, shared_prefix_length

    net, tok = tiny.network, tiny.tokens
    latents = torch.randn(1, 16, 8, 8, generator=torch.Generator().manual_seed(1))
    visual = net.encode_visual(latents).fused[0]
    opts = TextSampling(max_new_tokens=12, stop_ids=(tok.eos,))
    head = head_len = None
    for question in ([5, 6, 7], [40, 41, 42, 43, 44, 45], [9]):
        layout = understanding_layout(question, visual.shape[0], tok, [1, 2], [3], [4], mask_mode=mask_mode)
        embeds, _ = net.embed_inputs(layout.input_ids, [[visual]], layout.slots, torch.ones(1))
        mask = omni_attention_mask(layout.blocks, layout.seq_len)
        alone = generate(net, embeds, mask, opts, keep_logits=True)
        if head is None:
            head_len = shared_prefix_length(layout)
            assert head_len == layout.seq_len - len(question) - 1  # all but the question and role
            head = prefill(net, embeds[:, :head_len], mask[..., :head_len, :head_len])
        shared = generate(net, embeds[:, head_len:], None, opts, keep_logits=True, cache=head)
        assert head.get_seq_length() == head_len  # cropped back for the next question
        assert shared.token_ids == alone.token_ids
        assert torch.allclose(torch.stack(shared.step_logits), torch.stack(alone.step_logits), atol=1e-5)


def test_a_video_block_running_into_the_question_is_not_shared_between_questions(tiny, monkeypatch):
    """Parity probe N: the official video block (1 + the configured image tokens) is longer than
    the pooled tokens of few frames; it then covers the question's first tokens, which the visual
    tokens attend to. Sharing the head gave the second question the first one's visual states."""
    import dataclasses

    import numpy as np

    from showo2_cli.options import CaptionOptions
    from showo2_cli.pipelines.understand import caption
    from showo2_cli.text_decoding import shared_prefix_length

    tok = tiny.tokens
    n = 4  # one frame pooled to 2x2 tokens, under the tiny model's 16 configured image tokens
    layout = understanding_layout([5, 6, 7], n, tok, [1, 2], [3], [4], official_block_len=17)
    assert int(layout.blocks[0, 0].sum()) > int(layout.slots[0, 0].sum()) + 1  # past eoi
    assert shared_prefix_length(layout) == 0
    plain = understanding_layout([5, 6, 7], n, tok, [1, 2], [3], [4])
    assert shared_prefix_length(plain) == plain.seq_len - 4  # up to eoi, as before

    import showo2_cli.pipelines.understand as understand

    logits = []  # every answer's step logits (the tiny model's answers are all alike)

    def recording(*args, **kwargs):
        out = generate(*args, **dict(kwargs, keep_logits=True))
        logits.append(torch.stack(out.step_logits))
        return out

    monkeypatch.setattr(understand, "generate", recording)
    video = (np.random.default_rng(0).random((3, 64, 64, 3)) * 255).astype(np.uint8)
    questions = ["What colour is it?", "Is there a dog in this video, yes or no?", "Why"]
    spec = tiny.spec
    tiny.spec = dataclasses.replace(spec, und_video_pool=2)
    try:
        def ask(qs):
            return caption(tiny, video, CaptionOptions(questions=qs, frames=1, max_new_tokens=4,
                                                       mask_mode="official"))
        together = ask(questions)
        alone = [ask([q]) for q in questions]
    finally:
        tiny.spec = spec
    assert together.answers == [a.answers[0] for a in alone]
    shared, single = logits[:3], logits[3:]
    assert (single[0] - single[1]).abs().max() > 1e-3  # the questions do change the answers' logits
    for a, b in zip(shared, single, strict=True):
        assert torch.allclose(a, b, atol=1e-5), float((a - b).abs().max())


@pytest.mark.parametrize("video,negatives", [(False, None), (True, None), (False, [[120, 121], [122] * 12])],
                         ids=["image", "video", "negative-prompts"])
def test_prefix_cached_sampling_equals_uncached(lively, tiny, video, negatives):
    shape = (2, 16, 2, 8, 8) if video else (2, 16, 8, 8)
    visual = 1 + (2 if video else 1) * 16
    layout = generation_layout([[97, 98, 99, 100], [101] * 9], visual, tiny.tokens, 80, video=video,
                               negatives=negatives)
    z = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    plain = generate_latents(lively, layout, z, 5.0, 10, 3.0, trim=False)
    cached = generate_latents(lively, layout, z, 5.0, 10, 3.0, trim=True, cache_prefix=True)
    assert (plain - z).abs().max() > 0.1  # the sampler really moved
    assert torch.allclose(plain, cached, atol=1e-5, rtol=0)
    if negatives:  # the unconditional rows' text steers the result
        empty = generation_layout([[97, 98, 99, 100], [101] * 9], visual, tiny.tokens, 80, video=video)
        assert (generate_latents(lively, empty, z, 5.0, 10, 3.0) - plain).abs().max() > 1e-3
    if video:  # i2v: frame 0 never changes
        frozen = generate_latents(lively, layout, z, 5.0, 6, 3.0, cache_prefix=True, first_frame_as_cond=True)
        assert torch.equal(frozen[:, :, 0], z[:, :, 0]) and not torch.equal(frozen[:, :, 1], z[:, :, 1])


@pytest.mark.parametrize("trim", [True, False], ids=["trimmed", "official-shapes"])
@pytest.mark.parametrize("prompts", [1, 2])
@pytest.mark.parametrize("cached", [False, True], ids=["full", "prefix-cached"])
def test_guided_dual_path_shared_when_trimmed_and_official_untrimmed(lively, tiny, cached, prompts, trim):
    """cond and uncond rows share their latents. Trimmed (the default), the semantic layers see each
    latent once and the velocity equals the official batch's to float rounding (a kernel may round
    batch 1 and batch 2 otherwise); untrimmed, every row runs the dual path as the official
    ``t2i_generate``'s batch does, and the velocity is that batch's bit for bit (probe IA)."""
    from showo2_cli.modeling.attention import omni_attention_mask
    from showo2_cli.sampling import guided, guided_velocity_fn

    layout = generation_layout([[97, 98, 99, 100], [101] * 9][:prompts], 17, tiny.tokens, 48)
    x = torch.randn(prompts, 16, 8, 8, generator=torch.Generator().manual_seed(3))
    seen: list[int] = []
    hook = lively.und_trans.register_forward_pre_hook(
        lambda mod, args, kwargs: seen.append(kwargs["inputs_embeds"].shape[0]), with_kwargs=True)
    try:
        v = guided_velocity_fn(lively, layout, 5.0, trim=trim, cache_prefix=cached)(x, 0.3)
    finally:
        hook.remove()
    assert seen == [prompts if trim else 2 * prompts]  # shared by a prompt's two rows when trimmed
    rows = torch.cat([x, x])
    mask = omni_attention_mask(layout.blocks, layout.seq_len)
    with torch.no_grad():
        full = lively.velocity(layout.input_ids, rows, torch.full((2 * prompts,), 0.3), layout.blocks, mask)
    want = guided(full[:prompts], full[prompts:], 5.0)
    assert v.abs().max() > 0.1
    if cached or trim:  # other op shapes than the official batch's: float32 rounding
        assert torch.allclose(v, want, atol=1e-5, rtol=1e-5), float((v - want).abs().max())
    else:
        assert torch.equal(v, want), float((v - want).abs().max())


@pytest.mark.parametrize("guidance", [0.0, -2.0])
def test_no_guidance_is_the_conditional_velocity(lively, tiny, guidance):
    """The official ``t2i_generate`` guides only for guidance > 0; otherwise each row keeps its own
    velocity, so the prompt's rows are conditional (the formula would give the unconditional
    velocity at 0): the sampler and :func:`guided` agree with it."""
    from showo2_cli.modeling.attention import omni_attention_mask
    from showo2_cli.sampling import guided, guided_velocity_fn, uses_uncond

    assert not uses_uncond(guidance) and not uses_uncond(1.0) and uses_uncond(0.5)
    layout = generation_layout([[97, 98, 99, 100], [101] * 9], 17, tiny.tokens, 48)
    x = torch.randn(2, 16, 8, 8, generator=torch.Generator().manual_seed(4))
    rows = torch.cat([x, x])
    mask = omni_attention_mask(layout.blocks, layout.seq_len)
    full = lively.velocity(layout.input_ids, rows, torch.full((4,), 0.3), layout.blocks, mask)
    assert (full[:2] - full[2:]).abs().max() > 1e-3  # the prompt matters
    assert torch.equal(guided(full[:2], full[2:], guidance), full[:2])
    v = guided_velocity_fn(lively, layout, guidance)(x, 0.3)
    assert torch.allclose(v, full[:2], atol=1e-5, rtol=1e-5), float((v - full[:2]).abs().max())


def test_same_seed_same_image_different_seed_different(tiny):
    opts = P.GenerateOptions(steps=3, seed=11)
    a = P.text_to_image(tiny, ["a red circle"], opts)[0]
    b = P.text_to_image(tiny, ["a red circle"], opts)[0]
    c = P.text_to_image(tiny, ["a red circle"], P.GenerateOptions(steps=3, seed=12))[0]
    assert np.array_equal(a.frames, b.frames) and torch.equal(a.latents, b.latents)
    assert not np.array_equal(a.frames, c.frames)


def test_batching_does_not_change_per_prompt_results(tiny):
    prompts = ["one", "two", "three"]
    together = P.text_to_image(tiny, prompts, P.GenerateOptions(steps=3, seed=5, num_per_prompt=2, batch_size=6))
    alone = P.text_to_image(tiny, ["three"], P.GenerateOptions(steps=3, seed=5, num_per_prompt=2), indices=[2])
    assert [g.seed for g in together] == [5, 6, 7, 8, 9, 10]
    assert [g.seed for g in alone] == [9, 10]
    assert torch.allclose(together[4].latents, alone[0].latents, atol=1e-5)


def test_explicit_noise_reproduces_a_run(tiny):
    first = P.text_to_image(tiny, ["x"], P.GenerateOptions(steps=3, seed=3))[0]
    noise = torch.randn(16, 8, 8, generator=torch.Generator().manual_seed(3))
    again = P.text_to_image(tiny, ["x"], P.GenerateOptions(steps=3, seed=99, noise=noise))[0]
    assert torch.equal(first.latents, again.latents)
    with pytest.raises(Exception, match="--noise has shape"):
        P.text_to_image(tiny, ["x"], P.GenerateOptions(steps=3, noise=torch.zeros(16, 4, 4)))


def test_video_understanding_samples_frames_and_pools(tiny, media_dir):
    result = P.caption(tiny, media_dir / "video1.mp4", P.CaptionOptions(questions=["a?", "b?"], max_new_tokens=3))
    assert result.kind == "video" and result.frames == tiny.spec.und_video_frames
    assert len(result.answers) == 2 and all(0 < n <= 3 for n in result.token_counts)


def test_released_checkpoints_refuse_video_generation(tmp_path, capsys, monkeypatch):
    if not PARITY_DIR.is_dir():
        pytest.skip("no parity fixtures")
    vae = sorted((PARITY_DIR / "vae").glob("*.pth"))[0]
    monkeypatch.setenv("SHOWO2_VAE", str(vae))
    out = tmp_path / "v.mp4"
    code, _, err = run(["t2v", "waves", "--model", PARITY_DIR / "model", "--frames", "5", "-o", out, "--steps", "2"], capsys)
    assert code == 4 and "not trained for text-to-video" in err and len(err.strip().splitlines()) <= 2
    assert not out.exists()
    code, _, err = run(["i2v", REPO / "README.md", "x", "--model", PARITY_DIR / "model", "-o", out], capsys)
    assert code == 3 and not out.exists()


def test_showo2_vae_is_the_fallback_after_the_models_own(tmp_path, monkeypatch):
    """--help says "the model's, then $SHOWO2_VAE": the variable overrode the demo's own VAE (a
    real Wan VAE would break it), and a path that did not exist was ignored silently."""
    from showo2_cli.errors import ModelError
    from showo2_cli.hub import bundled_demo_path
    from showo2_cli.hub_vae import find_vae

    other = tmp_path / "other-vae"
    other.mkdir()
    monkeypatch.setenv("SHOWO2_VAE", str(other))
    assert find_vae(bundled_demo_path()) == bundled_demo_path() / "vae"
    assert find_vae(tmp_path / "no-vae-here") == other
    monkeypatch.setenv("SHOWO2_VAE", str(tmp_path / "missing"))
    with pytest.raises(ModelError, match="SHOWO2_VAE names .*missing.*does not exist"):
        find_vae(tmp_path / "no-vae-here")


# ---- CLI --------------------------------------------------------------------------------------

def test_t2i_writes_png_with_metadata_and_sidecar(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "cat.png"
    code, stdout, err = run(["t2i", "a cat", "--model", tiny_model_dir, "-o", out, "--steps", "3", "--seed", "7",
                             "--save-latents", "--json"], capsys)
    assert code == 0, err
    record = json.loads(stdout)["outputs"][0]
    assert record["seed"] == 7 and record["prompt"] == "a cat" and record["steps"] == 3
    img = M.read_image(out)
    assert img.size == (64, 64)
    meta = M.read_png_metadata(out)
    assert meta["seed"] == 7 and meta["guidance"] == 5.0 and meta["shift"] == 3.0
    assert json.loads(out.with_suffix(".json").read_text())["seed"] == 7
    lat = Path(record["latents"])
    back = tmp_path / "back.png"
    assert run(["decode", lat, "-o", back, "--model", tiny_model_dir], capsys)[0] == 0
    assert np.array_equal(np.asarray(M.read_image(back)), np.asarray(img))
    # never clobbers without --overwrite
    before = out.read_bytes()
    code, _, err = run(["t2i", "a dog", "--model", tiny_model_dir, "-o", out, "--steps", "3"], capsys)
    assert code == 5 and out.read_bytes() == before


def test_t2i_batch_from_prompts_file_numbered_outputs(tiny_model_dir, tmp_path, capsys):
    prompts = tmp_path / "p.txt"
    prompts.write_text("one\n\ntwo\n")
    code, stdout, err = run(["t2i", "--prompts-file", prompts, "-n", "2", "--model", tiny_model_dir, "-o",
                             tmp_path / "b.jpg", "--steps", "2", "--seed", "1", "--batch-size", "3", "--json"], capsys)
    assert code == 0, err
    outs = [r["output"] for r in json.loads(stdout)["outputs"]]
    assert [Path(o).name for o in outs] == ["b-000.jpg", "b-001.jpg", "b-002.jpg", "b-003.jpg"]
    assert all(Path(o).exists() for o in outs)


def test_default_output_name_from_prompt_and_seed(tiny_model_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for _ in range(2):
        code, stdout, err = run(["t2i", "A red Circle!", "--model", tiny_model_dir, "--steps", "2", "--seed", "4"], capsys)
        assert code == 0, err
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["a-red-circle-4-1.png", "a-red-circle-4.png"]


def test_t2v_and_i2v_write_videos_of_the_stated_frames_and_fps(tiny_model_dir, tmp_path, capsys, media_dir):
    out = tmp_path / "v.mp4"
    code, _, err = run(["t2v", "waves", "--model", tiny_model_dir, "-o", out, "--frames", "6", "--fps", "12",
                        "--steps", "2", "--seed", "3"], capsys)
    assert code == 0 and "6 was rounded to 9" in err
    video = M.read_video(out)
    assert video.num_frames == 9 and video.fps == pytest.approx(12) and (video.width, video.height) == (64, 64)
    assert M.read_metadata(out)["seed"] == 3
    gif = tmp_path / "i.gif"
    photo = media_dir / "pexels-taryn-elliott-4144459.jpg"
    code, _, err = run(["i2v", photo, "moving", "--model", tiny_model_dir, "-o", gif, "--frames", "5", "--steps", "2"], capsys)
    assert code == 0, err
    assert M.read_video(gif).num_frames == 5


def test_caption_stdout_holds_only_the_answers(tiny_model_dir, media_dir, capsys):
    photo = media_dir / "pexels-talha-ahmed-26040377-7949588.jpg"
    code, stdout, err = run(["caption", photo, "-q", "one?", "-q", "two?", "--model", tiny_model_dir,
                             "--max-new-tokens", "4", "--no-stream"], capsys)
    assert code == 0, err
    assert stdout.count("\n") == 2
    code, stdout, _ = run(["caption", photo, "-q", "one?", "--model", tiny_model_dir, "--max-new-tokens", "4", "--json"], capsys)
    data = json.loads(stdout)
    assert data["answers"][0]["question"] == "one?" and data["options"]["max_new_tokens"] == 4
    code, streamed, _ = run(["caption", photo, "-q", "one?", "-q", "two?", "--model", tiny_model_dir,
                             "--max-new-tokens", "4"], capsys)
    assert streamed.count("\n") == 2


@pytest.mark.parametrize("args,needle", [
    (["t2i", "x", "--steps", "-1"], "--steps"),
    (["t2i", "x", "--guidance", "nan"], "--guidance"),
    (["t2i", "x", "--size", "100"], "multiples of 16"),
    (["t2v", "x", "--frames", "0"], "--frames"),
    (["caption", "README.md", "--max-new-tokens", "1000000000"], "--max-new-tokens"),
    (["t2i", "x", "-o", "out.tiff"], "unsupported output extension"),
])
def test_absurd_options_are_usage_errors(args, needle, tiny_model_dir, capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(REPO)
    code, stdout, err = run([*args, "--model", tiny_model_dir], capsys)
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, err
    assert not list(Path(".").glob("x-*.png"))


def test_models_lists_variants_and_how_to_get_them(capsys):
    code, stdout, _ = run(["models", "--json"], capsys)
    rows = {r["name"]: r for r in json.loads(stdout)["models"]}
    assert code == 0 and set(REGISTRY) - {"tiny"} <= set(rows)
    if not rows["1.5B"]["present"]:
        assert "hf download showlab/show-o2-1.5B" in rows["1.5B"]["get"]


def test_typer_runner_and_subprocess(tiny_model_dir, tmp_path):
    result = CliRunner().invoke(app, ["info", str(tiny_model_dir), "--json"])
    assert result.exit_code == 0 and json.loads(result.stdout)["spec"]["name"] == "tiny"
    out = tmp_path / "s.png"
    proc = subprocess.run([sys.executable, "-m", "showo2_cli.cli", "t2i", "x", "--model", str(tiny_model_dir), "-o",
                           str(out), "--steps", "2", "--seed", "1", "--json"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["outputs"][0]["output"] == str(out) and out.exists()


def test_accelerate_two_processes_share_the_outputs(tiny_model_dir, tmp_path):
    if shutil.which("accelerate") is None and not (Path(sys.executable).parent / "accelerate").exists():
        pytest.skip("accelerate launcher not installed")
    launcher = shutil.which("accelerate") or str(Path(sys.executable).parent / "accelerate")
    prompts = tmp_path / "p.txt"
    prompts.write_text("".join(f"prompt {i}\n" for i in range(5)))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # on CPU, accelerate starts several processes only with --multi_gpu (gloo)
    cmd = [launcher, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
           "--dynamo_backend", "no", "-m", "showo2_cli.cli", "t2i", "--prompts-file", str(prompts), "--model",
           str(tiny_model_dir), "-o", str(tmp_path / "d" / "img.png"), "--steps", "2", "--seed", "9", "--json"]
    (tmp_path / "d").mkdir()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout)  # one object, from process 0, the run's outputs in order
    assert (report["rank"], report["world_size"]) == (0, 2)
    assert [Path(o["output"]).name for o in report["outputs"]] == [f"img-{i:03d}.png" for i in range(5)]
    files = sorted(p.name for p in (tmp_path / "d").glob("*.png"))
    assert files == [f"img-{i:03d}.png" for i in range(5)]
    seeds = [json.loads((tmp_path / "d" / f"img-{i:03d}.json").read_text())["seed"] for i in range(5)]
    assert seeds == [9 + i for i in range(5)]
    single = load(tiny_model_dir)
    ref = P.text_to_image(single, ["prompt 3"], P.GenerateOptions(steps=2, seed=9), indices=[3])[0]
    # process 1 made outputs 3 and 4 in one batch (shares of 3 and 2): float rounding apart from it alone
    made = np.asarray(M.read_image(tmp_path / "d" / "img-003.png")).astype(int)
    assert np.abs(made - ref.frames[0].astype(int)).max() <= 1


def test_examples_run_on_a_tiny_model(tiny_model_dir, tmp_path, media_dir, monkeypatch, capsys):
    """The Python examples run as scripts (``__main__``) in this process, and examples/commands.sh
    runs under bash with a ``showo2`` on PATH that records its arguments: each recorded command
    then runs, in order, through the CLI's entry point here (the torch/transformers imports of ten
    fresh interpreters cost more than the runs; the real ``showo2`` process is tested elsewhere)."""
    import runpy

    ex = REPO / "examples"
    checks = [
        [ex / "api_text_to_image.py", "a cat", tmp_path / "a.png", "--model", tiny_model_dir, "--steps", "2"],
        [ex / "api_caption.py", media_dir / "waves.gif", "What?", "--model", tiny_model_dir, "--max-new-tokens", "3"],
        [ex / "api_video.py", "waves", tmp_path / "v.mp4", "--model", tiny_model_dir, "--steps", "2", "--frames", "5"],
    ]
    for cmd in checks:
        monkeypatch.setattr(sys, "argv", [str(c) for c in cmd])
        runpy.run_path(str(cmd[0]), run_name="__main__")  # an exception or sys.exit(non-zero) fails here
    out = capsys.readouterr().out
    assert "Q: What?\nA: " in out and str(tmp_path / "a.png") in out and "(5, " in out, out
    assert M.read_image(tmp_path / "a.png").size[0] >= 16 and M.read_video(tmp_path / "v.mp4").frames.shape[0] == 5
    bin_dir, record = tmp_path / "bin", tmp_path / "showo2-calls.jsonl"
    bin_dir.mkdir()
    (bin_dir / "showo2").write_text(f"#!/bin/sh\nexec {sys.executable} -c 'import json, sys; "
                                    f"open(sys.argv[1], \"a\").write(json.dumps(sys.argv[2:]) + chr(10))' {record} \"$@\"\n")
    (bin_dir / "showo2").chmod(0o755)
    proc = subprocess.run(["bash", str(ex / "commands.sh")], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                          env={**os.environ, "MODEL": str(tiny_model_dir), "OUT": str(tmp_path / "cmds"), "STEPS": "2",
                               "PATH": str(bin_dir) + os.pathsep + os.environ["PATH"]})
    assert proc.returncode == 0, proc.stderr[-2000:]
    calls = [json.loads(line) for line in record.read_text().splitlines()]
    assert [c[0] for c in calls] == ["info", "t2i", "caption", "t2v", "i2v", "encode", "decode", "t2i", "models"]
    monkeypatch.chdir(tmp_path)
    for args in calls:
        assert main(args) == 0, (args, capsys.readouterr().err[-2000:])
    assert M.read_video(tmp_path / "cmds" / "square-decoded.mp4").frames.shape[0] == 17
    batch = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith('{"outputs"')]
    assert len(batch) == 1 and len(batch[0]["outputs"]) == 4, batch  # the --json batch: 2 prompts, -n 2


def test_diffusers_flow_euler_scheduler_equals_the_official_euler(tiny):
    """--sampler flow-euler (diffusers' FlowMatchEulerDiscreteScheduler on the official grid) gives
    the same latents as the native Euler loop; the multistep schedulers run and stay finite."""
    prompts = ["a red circle", "a blue square"]
    base = P.GenerateOptions(seed=3, steps=6, batch_size=2)
    ref = P.text_to_image(tiny, prompts, base)
    from dataclasses import replace

    same = P.text_to_image(tiny, prompts, replace(base, method="flow-euler"))
    for a, b in zip(ref, same, strict=True):
        assert torch.allclose(a.latents, b.latents, atol=1e-5), (a.latents - b.latents).abs().max()
    for method in ("unipc", "dpm++"):
        out = P.text_to_image(tiny, prompts, replace(base, method=method))
        assert all(torch.isfinite(o.latents).all() and o.params["sampler"] == method for o in out)


def test_multistep_schedulers_are_more_accurate_in_few_steps():
    """On the exact (curved) flow of a two-point data distribution, UniPC and DPM-Solver++ with a
    few steps land closer to the exact end point than Euler with as many model calls."""
    from showo2_cli.sampling import sample, time_grid

    points = torch.tensor([[2.0, 0.5], [-1.0, -1.5]])

    def velocity(x, t):  # E[x1 - x0 | x_t] for x1 uniform on `points`, x0 ~ N(0, I)
        s = max(1.0 - t, 1e-4)
        d = ((x[:, None, :] - t * points[None]) ** 2).sum(-1)
        w = torch.softmax(-d / (2 * s * s), dim=1)
        x1 = w @ points
        return (x1 - x) / s

    x0 = torch.tensor([[0.4, -0.3], [-0.2, 0.9], [1.1, 0.1]])
    exact = sample(velocity, x0, time_grid(20000, 3.0), "euler")
    err = {m: float((sample(velocity, x0, time_grid(7, 3.0), m, shift=3.0) - exact).abs().max())
           for m in ("euler", "flow-euler", "unipc", "dpm++")}
    assert abs(err["euler"] - err["flow-euler"]) < 1e-5
    assert err["unipc"] < err["euler"] and err["dpm++"] < err["euler"], err
