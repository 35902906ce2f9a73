"""Probe EL: prompt chunks (text_decoding.run_prompt) and reduced JPEG reads (media.read_image
``min_side=``) attacked together: each case fails on the code before the probe."""

from __future__ import annotations

import struct

import pytest
import torch

from showo2_cli.errors import ResourceError
from showo2_cli.media.image import read_image


def _segment(marker: int, payload: bytes) -> bytes:
    return bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload


def _flat_jpeg(width: int, height: int, separate_scans: bool) -> bytes:
    """A uniform mid-grey baseline (SOF0) YCbCr JPEG, every coefficient 0, written by hand: its
    three components in one interleaved scan, or each in a scan of its own (legal baseline, as
    ``cjpeg -scans`` writes it; Pillow cannot)."""
    out = b"\xff\xd8" + _segment(0xDB, b"\x00" + b"\x01" * 64)
    out += _segment(0xC0, struct.pack(">BHHB", 8, height, width, 3) + b"".join(bytes([c, 0x11, 0]) for c in (1, 2, 3)))
    table = bytes([1] + [0] * 15) + b"\x00"  # one code, '0': DC difference 0 / AC end of block
    out += _segment(0xC4, b"\x00" + table + b"\x10" + table)
    blocks = -(-width // 8) * -(-height // 8)
    for group in [(1,), (2,), (3,)] if separate_scans else [(1, 2, 3)]:
        out += _segment(0xDA, bytes([len(group)]) + b"".join(bytes([c, 0]) for c in group) + b"\x00\x3f\x00")
        bits = blocks * len(group) * 2
        out += b"\x00" * (bits // 8) + (bytes([(1 << (8 - bits % 8)) - 1]) if bits % 8 else b"")
    return out + b"\xff\xd9"


def test_a_jpeg_in_separate_scans_over_the_limit_is_refused_not_reduced(tmp_path):
    """libjpeg decodes a JPEG whose components come in separate scans only through a buffer of
    every coefficient of the full image (2 bytes a pixel and component: a 12000x9000 one took
    625 MB where the interleaved one took 7.5 MB), as a progressive one: over the limit it is
    refused as the progressive one is; the interleaved one of the same size is read reduced."""
    one, separate = tmp_path / "one-scan.jpg", tmp_path / "three-scans.jpg"
    one.write_bytes(_flat_jpeg(2400, 1800, separate_scans=False))
    separate.write_bytes(_flat_jpeg(2400, 1800, separate_scans=True))
    im = read_image(one, max_pixels=1_000_000, min_side=432)
    assert im.size == (600, 450) and im.getpixel((300, 200)) == (128, 128, 128)
    with pytest.raises(ResourceError, match=r"2400x1800 = 4,320,000 pixels is more than the limit of 1,000,000"):
        read_image(separate, max_pixels=1_000_000, min_side=432)
    # within the limit both are read in full, as before
    assert read_image(separate, max_pixels=5_000_000, min_side=432).size == (2400, 1800)



def _flat_lossless_jpeg(width: int, height: int) -> bytes:
    """A uniform lossless (SOF3, predictor 1) JPEG: every difference 0, so every sample 128."""
    out = b"\xff\xd8" + _segment(0xC3, struct.pack(">BHHB", 8, height, width, 3)
                                 + b"".join(bytes([c, 0x11, 0]) for c in (1, 2, 3)))
    out += _segment(0xC4, b"\x00" + bytes([1] + [0] * 15) + b"\x00")
    out += _segment(0xDA, b"\x03" + b"".join(bytes([c, 0]) for c in (1, 2, 3)) + b"\x01\x00\x00")
    bits = width * height * 3
    out += b"\x00" * (bits // 8) + (bytes([(1 << (8 - bits % 8)) - 1]) if bits % 8 else b"")
    return out + b"\xff\xd9"


def test_a_lossless_jpeg_over_the_limit_is_too_large_not_corrupt(tmp_path):
    """A lossless JPEG has no DCT to decode reduced in: libjpeg failed on the reduced read and a
    valid file over the limit was called "truncated or corrupt" (an input error); it is refused as
    too large, as a progressive one is, and read in full within the limit."""
    path = tmp_path / "lossless.jpg"
    path.write_bytes(_flat_lossless_jpeg(2400, 1800))
    with pytest.raises(ResourceError, match=r"2400x1800 = 4,320,000 pixels is more than the limit of 1,000,000"):
        read_image(path, max_pixels=1_000_000, min_side=432)
    im = read_image(path, max_pixels=5_000_000, min_side=432)
    assert im.size == (2400, 1800) and im.getpixel((1000, 900)) == (128, 128, 128)

def test_eager_attention_runs_a_long_prompt_whole(monkeypatch):
    """Eager attention's matmuls over chunk rows round differently from the whole prompt's (keys
    moved by up to 1.4e-6 on the demo): only the checked SDPA kernel takes chunks, so ``--attn
    eager`` (the official code's reference) keeps the whole prompt's bits."""
    from transformers import DynamicCache

    from showo2_cli.loading import load
    from showo2_cli.modeling.attention import omni_attention_mask
    from showo2_cli.text_decoding import run_prompt

    net = load("demo", dtype=torch.float32).network
    net.set_attention("eager")
    length = 1100
    embeds = torch.randn(1, length, net.spec.hidden_size, generator=torch.Generator().manual_seed(0)) * 0.5
    mask = omni_attention_mask(torch.tensor([[[40, 300]]]), length)
    with torch.no_grad():
        want_h, want_c = net.llm(embeds, mask, past_key_values=DynamicCache(), use_cache=True, last_only=True)
        calls = []
        real = net.llm

        def spy(x, m, *args, **kwargs):
            calls.append(tuple(m.shape[-2:]))
            return real(x, m, *args, **kwargs)

        monkeypatch.setattr(net, "llm", spy)
        got_h, got_c = run_prompt(net, embeds, mask, DynamicCache())
    assert calls == [(length, length)]
    assert torch.equal(got_h[:, -1], want_h[:, -1])
    for a, b in zip(got_c.layers, want_c.layers, strict=True) if hasattr(got_c, "layers") else ():
        assert torch.equal(a.keys, b.keys) and torch.equal(a.values, b.values)


def _peak_above_rss_mb(fn) -> float:
    """How far the process's peak RSS rose above its RSS while ``fn`` ran (Linux: the peak is reset
    through ``/proc/self/clear_refs``)."""
    def status():
        with open("/proc/self/status") as fh:
            fields = dict(line.split(":", 1) for line in fh)
        return (int(fields[key].split()[0]) / 1024 for key in ("VmHWM", "VmRSS"))

    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pytest.skip("the peak RSS cannot be reset here")
    _, before = status()
    fn()
    peak, _ = status()
    return peak - before


def test_prompt_chunks_reads_the_mask_a_few_rows_at_a_time():
    """Finding the chunks took the whole mask's column numbers at once, ``L x L`` int64s, 8 times
    the boolean mask: 343 MB above a 45 MB mask for a one-video prompt (6700 positions), 2.9 GB
    for a chat of three videos (19500). It reads 64 rows at a time (12 and 25 MB), with the same
    chunks, batch rows and rows attending to nothing included."""
    from showo2_cli.modeling.attention import omni_attention_mask
    from showo2_cli.text_decoding import prompt_chunks

    length = 6000
    mask = omni_attention_mask(torch.tensor([[[40, 2000], [3000, 900]]]), length)
    got = []
    assert _peak_above_rss_mb(lambda: got.append(prompt_chunks(mask))) < 100  # (old code: 275 MB)
    assert got[0] == [(0, 2048), (2048, 2560), (2560, 4096), (4096, 4608), (4608, 5120), (5120, 5632), (5632, 6000)]
    # a batch: the chunks hold every row's reach (the second's block over 512), and padding rows
    # attending to nothing
    causal = omni_attention_mask(torch.zeros(1, 1, 2, dtype=torch.long), 1200)
    block = omni_attention_mask(torch.tensor([[[400, 300]]]), 1200)
    block[..., :3, :] = False
    assert prompt_chunks(torch.cat([causal, block]), 512) == [(0, 1024), (1024, 1200)]
    assert prompt_chunks(causal, 512) == [(0, 512), (512, 1024), (1024, 1200)]
    assert prompt_chunks(causal[..., :3, :3] & False, 2) == [(0, 2), (2, 3)]
