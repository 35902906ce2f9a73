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
