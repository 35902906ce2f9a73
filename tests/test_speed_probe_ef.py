"""Probe EF: exact savings on the paths measured against the official code (video understanding).

Each saving keeps the outputs (compared to the computation it replaces) and is shown to happen by a
count of the work done, never by a timing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from showo2_cli import media as M
from showo2_cli.dialogue import distinct_frames, encode_media
from showo2_cli.loading import load
from showo2_cli.options import CaptionOptions
from showo2_cli.pipelines.understand import caption


@pytest.fixture(scope="module")
def demo():
    torch.manual_seed(0)
    return load("demo", dtype=torch.float32)


def _frames(side: int, distinct: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (distinct, side, side, 3), dtype=np.uint8)


def _count_calls(monkeypatch, obj, name):
    calls = []
    real = getattr(obj, name)

    def spy(x, *args, **kwargs):
        calls.append(x.shape[0])
        return real(x, *args, **kwargs)

    monkeypatch.setattr(obj, name, spy)
    return calls


def test_distinct_frames_maps_repeats_to_first_appearance():
    a, b, c = _frames(8, 3)
    keep, index = distinct_frames(np.stack([a, a, b, a, c, c]))
    assert keep == [0, 2, 4]
    assert index.tolist() == [0, 0, 1, 0, 2, 2]
    assert distinct_frames(np.stack([a, b, c])) is None


def test_repeated_frames_are_encoded_once_with_the_same_tokens(demo, monkeypatch):
    """A clip with fewer frames than asked (a short GIF sampled to 32 frames repeats them): each
    distinct frame goes through the VAE and the semantic layers once; the tokens are the ones of
    every frame encoded (frame embedding by the video's order included)."""
    spec, net, vae = demo.spec, demo.network, demo.vae
    side = spec.resolution
    a, b = _frames(side, 2, seed=3)
    video = np.stack([a, a, b, b, b, a])  # 6 frames, 2 distinct
    opts = CaptionOptions(frames=6)

    vae_calls = _count_calls(monkeypatch, vae, "encode_moments")
    enc_calls = _count_calls(monkeypatch, net, "encode_visual")
    got = encode_media(demo, video, opts)
    assert got.kind == "video" and got.frames == 6
    assert len(vae_calls) == 2 and enc_calls == [2]  # two frames encoded, not six

    # the computation it replaces: every frame through the VAE and the semantic layers
    pixels = M.frames_to_tensor(video).permute(1, 0, 2, 3)[:, :, None]
    latents = torch.cat([vae.encode(pixels[i:i + 1]) for i in range(6)])[:, :, 0]
    want = net.pooled_frame_tokens(latents, spec.und_video_pool)
    assert got.tokens.shape == want.shape
    torch.testing.assert_close(got.tokens, want, atol=1e-6, rtol=0)


def test_caption_of_a_video_with_repeats_is_unchanged(demo, monkeypatch):
    """The answer (greedy ids) of a video with repeated frames is the same as with every frame encoded."""
    side = demo.spec.resolution
    a, b, c = _frames(side, 3, seed=5)
    video = np.stack([a, b, b, c])
    opts = CaptionOptions(frames=4, max_new_tokens=6, questions=["What?"])
    got, got_ids = caption(demo, video, opts, streamer=Ids()), Ids.last
    monkeypatch.setattr("showo2_cli.dialogue.distinct_frames", lambda frames: None)  # every frame encoded
    enc_calls = _count_calls(monkeypatch, demo.network, "encode_visual")
    want, want_ids = caption(demo, video, opts, streamer=Ids()), Ids.last
    assert enc_calls == [4]
    assert len(got_ids) == len(want_ids) > 1
    assert got_ids == want_ids and got.answers == want.answers and got.token_counts == want.token_counts


class Ids:
    """A transformers-style streamer keeping the answer's ids (after the prompt's)."""

    last: list[int] = []

    def __init__(self):
        self.seen = 0
        Ids.last = []

    def put(self, value):
        self.seen += 1
        if self.seen > 1:
            Ids.last.extend(int(v) for v in value.flatten())

    def end(self):
        pass


def test_drawn_vae_sample_encodes_every_frame(demo, monkeypatch):
    """With the official demos' drawn VAE sample each frame has its own noise: nothing is shared."""
    side = demo.spec.resolution
    a = _frames(side, 1, seed=7)[0]
    vae_calls = _count_calls(monkeypatch, demo.vae, "encode_moments")
    got = encode_media(demo, np.stack([a, a, a]), CaptionOptions(frames=3, vae_sample=True, seed=1)).tokens
    assert len(vae_calls) == 3
    per_frame = got.reshape(3, -1, got.shape[-1])
    assert (per_frame[0] - per_frame[1]).abs().max() > 1e-3


# ---- long prompts run in causal chunks (text_decoding.run_prompt) ---------------------------


def _long_prompt(net, length: int, block: tuple[int, int], seed: int = 0):
    from showo2_cli.modeling.attention import omni_attention_mask

    gen = torch.Generator().manual_seed(seed)
    embeds = torch.randn(1, length, net.spec.hidden_size, generator=gen) * 0.5
    mask = omni_attention_mask(torch.tensor([[list(block)]]), length)
    return embeds, mask


def test_prompt_chunks_keep_a_block_whole_and_end_on_multiples():
    from showo2_cli.modeling.attention import omni_attention_mask
    from showo2_cli.text_decoding import prompt_chunks

    mask = omni_attention_mask(torch.tensor([[[40, 730]]]), 1700)  # a block from 40 to 770
    assert prompt_chunks(mask, 512) == [(0, 1024), (1024, 1536), (1536, 1700)]
    assert prompt_chunks(mask[..., :785, :785], 512) == [(0, 785)]  # an image prompt: one chunk
    causal = omni_attention_mask(torch.zeros(1, 1, 2, dtype=torch.long), 1100)
    assert prompt_chunks(causal, 512) == [(0, 512), (512, 1024), (1024, 1100)]
    for start, end in prompt_chunks(mask, 512):  # no row of a chunk attends past its end
        assert not bool(mask[..., start:end, end:].any())


def test_long_prompt_runs_in_chunks_with_the_whole_prompts_cache(demo, monkeypatch):
    """A 1700-position prompt runs as three chunks (1024 + 512 + 164 queries) and gives the last
    state and every key and value of the whole prompt's forward, bit for bit."""
    from transformers import DynamicCache

    from showo2_cli.text_decoding import run_prompt

    net = demo.network
    embeds, mask = _long_prompt(net, 1700, (40, 730))
    with torch.no_grad():
        want_h, want_c = net.llm(embeds, mask, past_key_values=DynamicCache(), use_cache=True, last_only=True)
        calls = []
        real = net.llm

        def spy(x, m, *args, **kwargs):
            calls.append((x.shape[1], tuple(m.shape[-2:])))
            return real(x, m, *args, **kwargs)

        monkeypatch.setattr(net, "llm", spy)
        got_h, got_c = run_prompt(net, embeds, mask, DynamicCache())
    assert calls == [(1024, (1024, 1024)), (512, (512, 1536)), (164, (164, 1700))]
    assert torch.equal(got_h[:, -1], want_h[:, -1])
    assert got_c.get_seq_length() == want_c.get_seq_length() == 1700
    for layer in range(len(net.showo.model.layers)):
        for a, b in zip(_kv(got_c, layer), _kv(want_c, layer), strict=True):
            assert torch.equal(a, b), layer


def _kv(cache, layer):
    if hasattr(cache, "layers"):
        return cache.layers[layer].keys, cache.layers[layer].values
    return cache.key_cache[layer], cache.value_cache[layer]


def test_decoding_after_a_long_prompt_is_unchanged(demo, monkeypatch):
    """Greedy decoding from a chunked 1600-position prompt: the same ids and step logits, bit for
    bit, as from the prompt run whole (and as the official full recompute, within rounding)."""
    import showo2_cli.text_decoding as T
    from showo2_cli.options import TextSampling

    net = demo.network
    embeds, mask = _long_prompt(net, 1600, (10, 600), seed=3)
    opts = TextSampling(max_new_tokens=4)
    got = T.generate(net, embeds, mask, opts, keep_logits=True)
    monkeypatch.setattr(T, "prompt_chunks", lambda m, chunk=512: [(0, m.shape[-1])])
    want = T.generate(net, embeds, mask, opts, keep_logits=True)
    assert got.token_ids == want.token_ids
    for a, b in zip(got.step_logits, want.step_logits, strict=True):
        assert torch.equal(a, b)


def test_flex_attention_runs_a_long_prompt_whole(demo, monkeypatch):
    """Flex attention skips blocked tiles itself and compiles per shape: no chunks there."""
    from transformers import DynamicCache

    from showo2_cli.text_decoding import run_prompt

    net = demo.network
    embeds, mask = _long_prompt(net, 1100, (10, 600))
    calls = []
    monkeypatch.setattr(net, "attn", "flex")
    monkeypatch.setattr(net, "llm", lambda x, m, **kw: calls.append(tuple(m.shape[-2:])) or (x[:, -1:], None))
    run_prompt(net, embeds, mask, DynamicCache())
    assert calls == [(1100, 1100)]
