"""Memory and speed options: attention backends, torch.compile, int8 weights, VAE tiling."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from showo2_cli import api
from showo2_cli import media as M
from showo2_cli.errors import ResourceError, UsageError
from showo2_cli.modeling.attention import backend_mask, flex_block_mask, omni_attention_mask
from showo2_cli.options import RuntimeOptions
from showo2_cli.sampling import guided_velocity_fn
from showo2_cli.sequences import generation_layout
from showo2_cli.tokenizer import encode_text


@pytest.fixture(scope="module")
def demo():
    return api.load("demo")


def _layout(model, prompt="a red circle on a white background"):
    spec = model.spec
    side = spec.resolution
    visual = 1 + spec.tokens_per_frame(side, side)
    ids = [encode_text(model.tokenizer, prompt)]
    layout = generation_layout(ids, visual, model.tokens, visual + 4 + 40, video=False)
    x = torch.randn(1, spec.latent_channels, side // 8, side // 8, generator=torch.Generator().manual_seed(0))
    return layout, x


def _velocities(model, attn: str) -> dict[bool, torch.Tensor]:
    """Guided velocities with and without the prefix cache, with ``attn`` (then back to sdpa)."""
    layout, x = _layout(model)
    model.network.set_attention(attn)
    try:
        return {c: guided_velocity_fn(model.network, layout, 4.0, cache_prefix=c)(x, 0.3) for c in (False, True)}
    finally:
        model.network.set_attention("sdpa")


# ---- options ------------------------------------------------------------------------------------

@pytest.mark.parametrize("field,value,message", [
    ("attn", "flash", "--attn must be one of sdpa, eager, flex"),
    ("vae_tiling", "yes", "--vae-tiling must be one of auto, on, off"),
    ("quantize", "int4", "--quantize must be one of none, int8wo"),
    ("compile", "true", "--compile must be True or False"),
])
def test_runtime_options_are_checked_once(field, value, message):
    opts = RuntimeOptions(**{field: value})
    with pytest.raises(UsageError, match=message):
        opts.validate()
    RuntimeOptions(attn="flex", compile=True, vae_tiling="on", quantize="int8wo").validate()


def test_cli_rejects_a_bad_backend_before_loading(capsys):
    from showo2_cli.cli import main

    code = main(["t2i", "a cat", "--attn", "flash", "--model", "/nonexistent"])
    err = capsys.readouterr().err
    assert code != 0 and "flash" in err and "Traceback" not in err


def test_load_applies_the_runtime_options():
    model = api.load("demo", runtime=RuntimeOptions(attn="eager", vae_tiling="off"))
    assert model.network.attn == "eager"
    assert model.network.showo.config._attn_implementation == "eager"
    assert model.vae.tiling == "off"
    plain = api.load("demo")
    assert plain.network.attn == "sdpa" and plain.vae.tiling == "auto"


# ---- attention backends ---------------------------------------------------------------------------

def test_each_backend_gets_the_mask_in_its_form():
    mask = omni_attention_mask(torch.tensor([[[3, 5]]]), 10)
    assert torch.equal(backend_mask(mask, "sdpa", torch.float32) == 0, mask)  # SDPA's float form (probe GE)
    additive = backend_mask(mask, "eager", torch.float32)
    assert additive.dtype == torch.float32
    assert torch.equal(additive == 0, mask) and float(additive.min()) < -1e18
    assert backend_mask(additive, "eager", torch.float32) is additive  # converted once


def test_flex_block_mask_is_the_dense_omni_mask():
    """The BlockMask's mask function reproduces the omni mask exactly, and its block structure
    skips fully blocked tiles, masks partial ones and runs fully allowed ones unmasked."""
    length, block = 300, 64
    blocks = torch.tensor([[[10, 150], [200, 40]], [[5, 20], [0, 0]]])
    dense = omni_attention_mask(blocks, length)
    bm = flex_block_mask(dense, block_size=block)
    b, q, k = torch.meshgrid(torch.arange(2), torch.arange(length), torch.arange(length), indexing="ij")
    assert torch.equal(bm.mask_mod(b, torch.zeros_like(b), q, k), dense[:, 0])
    tiles = -(-length // block)
    padded = torch.zeros(2, tiles * block, tiles * block, dtype=torch.bool)
    padded[:, :length, :length] = dense[:, 0]
    per_tile = padded.view(2, tiles, block, tiles, block)
    any_allowed = per_tile.any(dim=4).any(dim=2)
    assert torch.equal(bm.to_dense()[:, 0].bool(), any_allowed)
    # the upper-right tiles of the second sequence (causal, one short block) are skipped
    assert not any_allowed[1, 0, tiles - 1]
    assert any_allowed[0, 0, 2]  # the first image block reaches from tile 0 into tile 2


def test_eager_equals_sdpa(demo):
    ref, eager = _velocities(demo, "sdpa"), _velocities(demo, "eager")
    for cache in (False, True):
        assert (eager[cache] - ref[cache]).abs().max() < 1e-4  # measured 1.6e-5 (|v| ~ 3)


def _same_caption_as_sdpa(model, attn: str, image, max_new_tokens: int) -> None:
    opts = api.CaptionOptions(max_new_tokens=max_new_tokens)
    ref = api.caption(model, image, opts)
    model.network.set_attention(attn)
    try:
        got = api.caption(model, image, opts)
    finally:
        model.network.set_attention("sdpa")
    assert got.answers == ref.answers and got.token_counts == ref.token_counts


def test_eager_caption_tokens_equal_sdpa(demo, media_dir):
    _same_caption_as_sdpa(demo, "eager", media_dir / "pexels-taryn-elliott-4144459.jpg", 12)


@pytest.mark.slow
def test_flex_equals_sdpa(demo):
    """flex attention (compiled flex_attention over the BlockMask; inductor on CPU) in the LLM
    (transformers' flex_attention) and the flow head, with and without the prefix cache."""
    ref, flex = _velocities(demo, "sdpa"), _velocities(demo, "flex")
    for cache in (False, True):
        assert (flex[cache] - ref[cache]).abs().max() < 1e-4  # measured 1.6e-5 (|v| ~ 3)


@pytest.mark.slow
def test_compile_equals_eager_mode():
    from showo2_cli.acceleration import compile_network

    model = api.load("demo")
    layout, x = _layout(model)
    ref = {c: guided_velocity_fn(model.network, layout, 4.0, cache_prefix=c)(x, 0.3) for c in (False, True)}
    compile_network(model.network)
    for cache in (False, True):
        got = guided_velocity_fn(model.network, layout, 4.0, cache_prefix=cache)(x, 0.3)
        assert (got - ref[cache]).abs().max() < 1e-4


# ---- int8 weights ---------------------------------------------------------------------------------

def test_int8_weight_only_llm_and_flow_head(media_dir):
    pytest.importorskip("torchao", reason="--quantize int8wo needs torchao (pip install 'torchao>=0.18,<0.19')")
    from torchao.quantization import Int8Tensor

    from showo2_cli.acceleration import weight_bytes

    ref = api.load("demo")
    layout, x = _layout(ref)
    v_ref = guided_velocity_fn(ref.network, layout, 4.0)(x, 0.3)
    before = weight_bytes(ref.network)
    model = api.load("demo", runtime=RuntimeOptions(quantize="int8wo"))
    net = model.network
    layer = net.showo.model.layers[0]
    assert isinstance(layer.self_attn.q_proj.weight, Int8Tensor)
    assert isinstance(layer.mlp.down_proj.weight, Int8Tensor)
    assert isinstance(net.diffusion_head_a[0].self_attn.q_proj.weight, Int8Tensor)
    assert isinstance(net.diffusion_head_b.linear.weight, Int8Tensor)
    assert not isinstance(net.und_trans.layers[0].self_attn.q_proj.weight, Int8Tensor)  # semantic layers
    if model.spec.tie_word_embeddings:
        assert net.showo.lm_head.weight is net.showo.model.embed_tokens.weight
    after = weight_bytes(net)
    quantized = sum(m.weight.numel() for m in net.modules() if isinstance(getattr(m, "weight", None), Int8Tensor))
    assert before - after >= 2.9 * quantized  # 4 bytes -> 1 byte (+ one float scale per row)
    v = guided_velocity_fn(net, layout, 4.0)(x, 0.3)
    rel = ((v - v_ref).norm() / v_ref.norm()).item()
    assert rel < 0.02, rel  # measured 1.3%
    opts = api.CaptionOptions(max_new_tokens=12)
    image = media_dir / "pexels-taryn-elliott-4144459.jpg"
    assert api.caption(model, image, opts).answers == api.caption(ref, image, opts).answers


def test_nf4_weight_only_llm_and_flow_head(media_dir):
    """--quantize nf4: bitsandbytes' 4-bit layers in the LLM and flow head (on the CPU here),
    about 8x fewer bytes for those weights, and the trained demo still answers as in fp32."""
    pytest.importorskip("bitsandbytes", reason="--quantize nf4 needs bitsandbytes (pip install 'bitsandbytes>=0.50')")
    import bitsandbytes as bnb

    from showo2_cli.acceleration import weight_bytes

    ref = api.load("demo")
    layout, x = _layout(ref)
    v_ref = guided_velocity_fn(ref.network, layout, 4.0)(x, 0.3)
    model = api.load("demo", runtime=RuntimeOptions(quantize="nf4"))
    net = model.network
    layer = net.showo.model.layers[0]
    four_bit = [m for m in net.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert isinstance(layer.self_attn.q_proj, bnb.nn.Linear4bit) and isinstance(layer.mlp.down_proj, bnb.nn.Linear4bit)
    assert isinstance(net.diffusion_head_a[0].self_attn.q_proj, bnb.nn.Linear4bit)
    assert isinstance(net.diffusion_head_b.linear, bnb.nn.Linear4bit)
    assert not isinstance(net.und_trans.layers[0].self_attn.q_proj, bnb.nn.Linear4bit)  # semantic layers stay
    assert all(m.weight.bnb_quantized and m.weight.dtype == torch.uint8 for m in four_bit)
    quantized = sum(m.in_features * m.out_features for m in four_bit)
    saved = weight_bytes(ref.network) - weight_bytes(net)
    assert saved >= 3.3 * quantized  # 4 bytes -> half a byte plus a scale per 64 weights
    v = guided_velocity_fn(net, layout, 4.0)(x, 0.3)
    rel = ((v - v_ref).norm() / v_ref.norm()).item()
    assert 0 < rel < 0.2, rel  # measured 11.7% (int8wo: 1.3%); small layers quantize worst
    opts = api.CaptionOptions(max_new_tokens=12)
    image = media_dir / "pexels-taryn-elliott-4144459.jpg"
    assert api.caption(model, image, opts).answers == api.caption(ref, image, opts).answers


def test_nf4_runs_under_model_offload_and_refuses_sequential(capsys, media_dir):
    pytest.importorskip("bitsandbytes", reason="--quantize nf4 needs bitsandbytes")
    from showo2_cli.cli import main

    image = str(media_dir / "pexels-taryn-elliott-4144459.jpg")
    args = ["caption", image, "--model", "demo", "--quantize", "nf4", "--max-new-tokens", "8"]
    assert main(args) == 0
    plain = capsys.readouterr().out
    assert main([*args, "--offload", "model"]) == 0
    assert capsys.readouterr().out == plain
    assert main([*args, "--offload", "sequential"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--offload model" in err[0]


@pytest.mark.parametrize(("method", "module", "hint"), [("nf4", "bitsandbytes", "bitsandbytes >= 0.50"),
                                                      ("int8wo", "torchao.quantization", "torchao 0.18")])
def test_a_missing_quantization_library_is_one_clear_error(monkeypatch, capsys, media_dir, method, module, hint):
    import sys

    from showo2_cli.cli import main
    from showo2_cli.modeling.vae import autoencoder_class

    # diffusers decides once, when it is first imported, whether bitsandbytes/torchao are installed;
    # import it (as every earlier test in a run does) before hiding the library, or diffusers itself
    # fails on the hidden module, which a machine without the library never sees
    autoencoder_class()
    monkeypatch.setitem(sys.modules, module, None)  # as if not installed: importing it fails
    code = main(["caption", str(media_dir / "pexels-taryn-elliott-4144459.jpg"), "--model", "demo",
                 "--quantize", method])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and hint in err[0] and "pip install 'showo2[quant]'" in err[0]
    assert "Traceback" not in err[0]


# ---- VAE tiling -----------------------------------------------------------------------------------

def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(4 / ((a - b) ** 2).mean()))  # pixels in [-1, 1]


def test_vae_tiling_decodes_what_the_guard_refuses_untiled(media_dir):
    """A 320x320 decode that does not fit the limit untiled is refused with tiling off and runs
    in 256-pixel tiles with auto; the tiled picture is close to the untiled one and as close to
    the source photo."""
    from showo2_cli.pipelines.latents import decode

    vae, _ = api.resolve_vae("demo")
    img = M.resize_center_crop(M.read_image(media_dir / "pexels-taryn-elliott-4144459.jpg"), (320, 320))
    pixels = M.frames_to_tensor(np.asarray(img)[None])[None]  # (1, 3, 1, 320, 320)
    with torch.no_grad():
        z = vae.encode(pixels)[0]  # (16, 1, 40, 40)
        untiled = vae.decode(z[None], tiled=False)[0]
    full, tiled_gb = vae.decode_memory_gb(1, 40, 40), vae.decode_memory_gb(1, 40, 40, tiled=True)
    assert tiled_gb < 0.7 * full
    limit = (full + tiled_gb) / 2
    vae.tiling = "off"
    with pytest.raises(ResourceError, match="--vae-tiling auto"):
        decode(z, vae, max_memory_gb=limit)
    vae.tiling = "auto"
    frames = decode(z, vae, max_memory_gb=limit)
    got = M.frames_to_tensor(frames)[:, 0]
    tiled = vae.decode(z[None], tiled=True)[0, :, 0]
    assert torch.equal(got, M.frames_to_tensor(M.tensor_to_frames(tiled[:, None]))[:, 0])
    assert _psnr(tiled, untiled[:, 0]) > 24  # measured 26.4 dB (the demo VAE, 2x2 tiles)
    assert (tiled - untiled[:, 0]).abs().mean() < 0.05
    source = pixels[0, :, 0]
    assert abs(_psnr(tiled, source) - _psnr(untiled[:, 0], source)) < 0.5  # 13.80 vs 13.72 dB
    # auto without a tight limit, and sizes within one tile, are exactly the untiled decode
    assert torch.equal(M.frames_to_tensor(decode(z, vae, max_memory_gb=0))[:, 0],
                       M.frames_to_tensor(M.tensor_to_frames(untiled))[:, 0])


def test_vae_enable_tiling_takes_diffusers_tile_sizes(media_dir):
    """vae.enable_tiling(tile_sample_min_height=..., ...) as on AutoencoderKLWan: smaller tiles
    decode the same picture (blended overlaps) in less estimated memory, and the guard uses them."""
    from showo2_cli.errors import UsageError
    from showo2_cli.modeling.vae import DEFAULT_TILE

    vae, _ = api.resolve_vae("demo")
    img = M.resize_center_crop(M.read_image(media_dir / "pexels-taryn-elliott-4144459.jpg"), (320, 320))
    pixels = M.frames_to_tensor(np.asarray(img)[None])[None]
    try:
        with torch.no_grad():
            z = vae.encode(pixels, tiled=False)[0]
            untiled = vae.decode(z[None], tiled=False)[0, :, 0]
            default = vae.decode(z[None], tiled=True)[0, :, 0]
            default_gb = vae.decode_memory_gb(1, 40, 40, tiled=True)
            vae.enable_tiling(tile_sample_min_height=128, tile_sample_min_width=128, tile_sample_stride_height=96,
                              tile_sample_stride_width=96)
            assert vae.tiling == "on" and vae.tile == (128, 128, 96, 96)
            small = vae.decode(z[None])[0, :, 0]  # tiling "on": tiles of 128 every 96 pixels
            assert vae.decode_memory_gb(1, 40, 40, tiled=True) < 0.6 * default_gb
            assert not torch.equal(small, default)  # the sizes reached diffusers' tiler
            assert _psnr(small, untiled) > 20 and (small - untiled).abs().mean() < 0.06
            vae.enable_tiling(tile_sample_stride_width=128)  # unset arguments keep their values
            assert vae.tile == (128, 128, 96, 128)
        for bad in (dict(tile_sample_min_height=100), dict(tile_sample_stride_height=256),
                    dict(tile_sample_min_width=0), dict(tile_sample_stride_width=8.0)):
            with pytest.raises(UsageError, match="tile_sample"):
                vae.enable_tiling(**bad)
        assert vae.tile == (128, 128, 96, 128)  # a refused call changes nothing
    finally:
        vae.tile, vae.tiling = DEFAULT_TILE, "auto"


def test_generation_guard_uses_the_tile_size():
    from showo2_cli.pipelines import check_generation_memory, generation_memory_gb, generation_tiling
    from showo2_cli.specs import get_spec

    spec = get_spec("1.5B")
    job = (spec, torch.bfloat16, (1024, 1024), 1, False, 1)  # t2i: the VAE decode dominates
    full, tiled = generation_memory_gb(*job), generation_memory_gb(*job, vae_tiled=True)
    assert tiled < full * 0.7  # 5.1 -> 3.4 GB (bf16 decode activations since probe BM; the LLM's step is the rest)
    limit = (full + tiled) / 2
    with pytest.raises(ResourceError, match="--vae-tiling auto"):
        check_generation_memory(*job, max_memory_gb=limit, vae_tiling="off")
    assert check_generation_memory(*job, max_memory_gb=limit, vae_tiling="auto") == pytest.approx(tiled)
    assert generation_tiling(*job, max_memory_gb=limit, vae_tiling="auto")
    assert not generation_tiling(*job, max_memory_gb=10 * full, vae_tiling="auto")  # fits: untiled as before
    assert generation_tiling(*job, max_memory_gb=10 * full, vae_tiling="on")
    with pytest.raises(ResourceError):
        check_generation_memory(*job, max_memory_gb=tiled / 2, vae_tiling="auto")


@pytest.mark.slow
def test_t2v_with_tiling_decodes_a_video_refused_untiled(tmp_path):
    """An end-to-end text-to-video at 320x320, 5 frames, under a limit only the tiled decode fits."""
    from showo2_cli.pipelines import generation_memory_gb

    model = api.load("demo")
    job = (model.spec, model.dtype, (320, 320), 5, True, 1, model.vae.base_dim)
    full, tiled = generation_memory_gb(*job), generation_memory_gb(*job, vae_tiled=True)
    assert tiled < full
    from showo2_cli.runtime import heap_allowance_gb

    opts = api.GenerateOptions(size=(320, 320), frames=5, steps=3, seed=1,
                               max_memory_gb=(full + tiled) / 2 + heap_allowance_gb("cpu"))  # (both count it, probe DN)
    model.vae.tiling = "off"
    with pytest.raises(ResourceError):
        api.text_to_video(model, ["waves"], opts)
    model.vae.tiling = "auto"
    out = api.text_to_video(model, ["waves"], opts)[0]
    assert out.frames.shape == (5, 320, 320, 3)
    with torch.no_grad():
        untiled = model.vae.decode(out.latents[None], tiled=False)[0]
    assert _psnr(M.frames_to_tensor(out.frames), untiled) > 20


@pytest.mark.slow
def test_cli_encode_decode_tile_what_does_not_fit(tmp_path, media_dir, capsys):
    """`showo2 encode`/`decode` with a limit between the tiled and untiled estimates: refused
    (exit 6, one line naming --vae-tiling) with tiling off, written with the default auto."""
    from showo2_cli.cli import main

    vae, _ = api.resolve_vae("demo")
    limit = (vae.decode_memory_gb(1, 40, 40) + vae.decode_memory_gb(1, 40, 40, tiled=True)) / 2
    photo = media_dir / "pexels-taryn-elliott-4144459.jpg"
    z = tmp_path / "photo.latents.safetensors"
    enc_limit = (vae.encode_memory_gb(1, 320, 320) + vae.encode_memory_gb(1, 320, 320, tiled=True)) / 2
    args = ["encode", photo, "-o", z, "--model", "demo", "--size", "320", "--max-memory", f"{enc_limit:.4f}"]
    assert main([str(a) for a in [*args, "--vae-tiling", "off"]]) == 6
    err = capsys.readouterr().err
    assert "--vae-tiling auto" in err and len(err.strip().splitlines()) == 1 and not z.exists()
    assert main([str(a) for a in args]) == 0 and z.exists()
    out = tmp_path / "back.png"
    args = ["decode", z, "-o", out, "--model", "demo", "--max-memory", f"{limit:.4f}"]
    assert main([str(a) for a in [*args, "--vae-tiling", "off"]]) == 6
    err = capsys.readouterr().err
    assert "--vae-tiling auto" in err and not out.exists()
    assert main([str(a) for a in args]) == 0
    assert M.read_image(out).size == (320, 320)


def test_vae_tiling_and_slicing_switches():
    """diffusers' names on the wrapper (Showo2Pipeline.enable_vae_tiling/slicing forward to them)."""
    vae, _ = api.resolve_vae("demo")
    assert vae.tiling == "auto"
    vae.enable_tiling()
    assert vae.tiling == "on"
    with vae.tiled():
        assert vae.model.use_tiling and vae.model.tile_sample_min_height == 256
    assert not vae.model.use_tiling  # only while a call runs
    vae.disable_tiling()
    assert vae.tiling == "off"
    vae.enable_slicing()
    assert vae.model.use_slicing
    z = torch.randn(2, 16, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        both = vae.decode(z)
        vae.disable_slicing()
        assert torch.allclose(both, vae.decode(z), atol=1e-5)


@pytest.mark.slow
def test_flex_caption_on_cpu_decodes_the_tokens_of_sdpa(tiny_model_dir, media_dir):
    """A caption's decoding steps (a new shape after its prompt) made inductor compile flex
    attention again with dynamic shapes, which torch's CPU template fails to build: `showo2
    caption --attn flex` stopped after its prompt with an internal error (CppCompileError)."""
    _same_caption_as_sdpa(api.load(tiny_model_dir), "flex", media_dir / "pexels-taryn-elliott-4144459.jpg", 3)
