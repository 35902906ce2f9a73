"""Probe HL: a training run's latent cache entries are checked before they are trained on.

An entry is used only when it is exactly what ``encode_missing`` writes for its source (the two
tensors, float32, the shape the source's geometry and the VAE give, values the encoder can make);
anything else (a folder copied from elsewhere, an older version's entry, a crafted file) is a
miss: encoded anew and overwritten, with one note naming the cache folder. The runs use the
`tiny` spec on the shapes world with a base-4 random VAE (tens of milliseconds a step).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from conftest import set_dotted
from showo2_cli.modeling.vae import WanVAE
from showo2_cli.training.config import parse_config
from showo2_cli.training.trainer import Run, train

Z, H, W = 16, 8, 8  # the latent of a 64x64 picture: the random VAE's 16 channels, 64 / 8


def config(tmp_path: Path, name: str, cache: str | None, size: int = 8, **changes) -> dict:
    raw = {
        "mode": "showo2", "seed": 0, "output_dir": str(tmp_path / name / "run"),
        "model": {"init_spec": "tiny", "vae_base_dim": 4},
        "data": [{"kind": "shapes", "role": "t2i", "resolution": 64, "size": size}],
        "batch": {"t2i": 4},
        "optim": {"lr": 1e-3, "max_steps": 2, "warmup_steps": 1, "schedule": "cosine"},
        "loss": {"ntp": 1.0, "flow": 1.0},
        "run": {"save_every": 0, "log_every": 1, "device": "cpu"},
    }
    if cache:
        raw["data"][0]["cache"] = cache
    return set_dotted(raw, changes)


@pytest.fixture
def encoded(monkeypatch):
    """Counts the pictures the VAE encodes (its ``encode_moments`` batch sizes)."""
    counts = []
    original = WanVAE.encode_moments

    def counting(self, pixels, *args, **kwargs):
        counts.append(int(pixels.shape[0]))
        return original(self, pixels, *args, **kwargs)

    monkeypatch.setattr(WanVAE, "encode_moments", counting)
    return counts


def trained(tmp_path: Path, name: str, cache: str | None, **changes) -> tuple[list, list[str]]:
    """The run's (data digest, loss) per step and its notes."""
    notes = []

    def progress(ev):
        if ev.get("event") == "notice":
            notes.append(ev["message"])

    train(parse_config(config(tmp_path, name, cache, **changes), source=name), progress=progress)
    lines = (tmp_path / name / "run" / "metrics.jsonl").read_text().splitlines()
    return [(m["data"], m["loss"]) for m in map(json.loads, lines)], notes


def same(a, b) -> bool:
    """The same data, and losses equal up to the last bits (a latent encoded in another batch
    composition moves float32 sums by ~1e-7)."""
    return [d for d, _ in a] == [d for d, _ in b] and all(
        abs(x - y) <= 1e-5 * max(1.0, abs(x)) for (_, x), (_, y) in zip(a, b, strict=True))


def entries(cache: Path) -> list[Path]:
    return sorted(cache.rglob("*.safetensors"))


def valid(path: Path) -> bool:
    with safe_open(str(path), framework="pt") as f:
        if sorted(f.keys()) != ["logvar", "mu"]:
            return False
        tensors = [f.get_tensor(k) for k in ("mu", "logvar")]
    return all(t.dtype == torch.float32 and tuple(t.shape) == (Z, H, W) and bool(torch.isfinite(t).all())
               for t in tensors)


def good():
    g = torch.Generator().manual_seed(1)
    return torch.randn(Z, H, W, generator=g), torch.randn(Z, H, W, generator=g) - 4.0


def hostile(kind: str) -> dict[str, torch.Tensor]:
    """An entry as a user's copied folder, an older version or a crafted file holds it."""
    mu, logvar = good()
    if kind == "other shape":
        return {"mu": torch.randn(3, 5, 5), "logvar": torch.zeros(3, 5, 5)}
    if kind == "1-D":
        return {"mu": mu.flatten(), "logvar": logvar.flatten()}
    if kind == "mu and logvar differ":
        return {"mu": mu, "logvar": torch.zeros(Z, H // 2, W // 2)}
    if kind == "nan":
        mu[3, 2, 1] = float("nan")
        return {"mu": mu, "logvar": logvar}
    if kind == "1e30":
        mu[0, 0, 0] = 1e30
        return {"mu": mu, "logvar": logvar}
    if kind == "logvar 1e30":
        logvar[5, 5, 5] = 1e30
        return {"mu": mu, "logvar": logvar}
    if kind == "int32":
        return {"mu": (mu * 10).to(torch.int32), "logvar": logvar.to(torch.int32)}
    if kind == "float64":
        return {"mu": mu.double(), "logvar": logvar.double()}
    if kind == "no logvar":
        return {"mu": mu}
    raise AssertionError(kind)


KINDS = ["other shape", "1-D", "mu and logvar differ", "nan", "1e30", "logvar 1e30", "int32", "float64",
         "no logvar"]


def test_hostile_entries_are_encoded_anew_with_the_losses_of_an_uncached_run(tmp_path, encoded):
    """Every item's entry replaced by a hostile one (each kind once): the run re-encodes them all,
    overwrites them with valid ones, trains with the losses of a run with no cache, says so once."""
    plain, _ = trained(tmp_path, "plain", None, size=len(KINDS), **{"batch.t2i": 3, "optim.max_steps": 3})
    cache = tmp_path / "cache"
    fill, _ = trained(tmp_path, "fill", str(cache), size=len(KINDS), **{"batch.t2i": 3, "optim.max_steps": 3})
    assert same(fill, plain)
    files = entries(cache)
    assert len(files) == len(KINDS) and all(valid(f) for f in files)
    for f, kind in zip(files, KINDS, strict=True):
        save_file(hostile(kind), str(f), metadata={"media": ""})  # the shapes world's media stamp
    encoded.clear()
    again, notes = trained(tmp_path, "again", str(cache), size=len(KINDS), **{"batch.t2i": 3, "optim.max_steps": 3})
    assert same(again, plain), (again, plain)
    assert sum(encoded) == len(KINDS)  # every entry encoded anew, once
    assert all(valid(f) for f in files)  # and overwritten with what this run writes
    said = [n for n in notes if "latent cache" in n]
    assert len(said) == 1 and str(cache) in said[0], notes


def test_a_valid_cache_still_hits(tmp_path, encoded):
    cache = tmp_path / "cache"
    plain, _ = trained(tmp_path, "plain", None, size=4, **{"batch.t2i": 2})
    encoded.clear()
    trained(tmp_path, "fill", str(cache), size=4, **{"batch.t2i": 2})
    assert sum(encoded) == 4
    stamps = {f: f.stat().st_mtime_ns for f in entries(cache)}
    encoded.clear()
    hit, notes = trained(tmp_path, "hit", str(cache), size=4, **{"batch.t2i": 2})
    assert encoded == [] and same(hit, plain)
    assert {f: f.stat().st_mtime_ns for f in entries(cache)} == stamps
    assert not [n for n in notes if "latent cache" in n]


@pytest.mark.parametrize("kind", KINDS)
def test_pre_encode_re_encodes_a_hostile_entry(tmp_path, kind, encoded):
    cache = tmp_path / "cache"
    raw = config(tmp_path, "pre", str(cache), size=2)
    assert Run(parse_config(raw, source="pre")).pre_encode()["encoded"] == 2
    target = entries(cache)[1]
    before = {k: v.clone() for k, v in _load(target).items()}
    save_file(hostile(kind), str(target), metadata={"media": ""})
    notes = []
    run = Run(parse_config(raw, source="pre"), progress=lambda ev: notes.append(ev))
    counts = run.pre_encode()
    assert (counts["encoded"], counts["cached"]) == (1, 1), counts
    assert valid(target)
    assert torch.allclose(_load(target)["mu"], before["mu"], atol=1e-5)
    said = [ev["message"] for ev in notes if ev.get("event") == "notice" and "latent cache" in ev["message"]]
    assert len(said) == 1 and str(cache) in said[0] and "encoded anew" in said[0], said


def _load(path: Path) -> dict[str, torch.Tensor]:
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


@pytest.mark.parametrize("role, frames, want", [
    ("t2i", 1, (Z, H, W)), ("mmu", 1, (Z, H, W)), ("t2v", 5, (Z, 2, H, W)), ("mmu_vid", 3, (3, Z, H, W))])
def test_entry_shape_is_what_encode_missing_writes(role, frames, want):
    """The one helper that says an entry's shape gives what the writer makes, for each role."""
    import numpy as np

    from showo2_cli.training.data import Sample
    from showo2_cli.training.latent_cache import entry_shape
    from showo2_cli.training.recipe import encode_missing

    vae = WanVAE.random(base_dim=4, seed=0)
    pixels = np.random.default_rng(0).integers(0, 256, (frames, 64, 64, 3), dtype=np.uint8)
    samples = [Sample(role, 0, i, pixels=pixels.copy()) for i in range(2)]
    encode_missing(samples, vae, torch.device("cpu"))
    assert entry_shape(role, frames, 64, 64, vae) == want
    for s in samples:
        assert tuple(s.latent["mu"].shape) == want and tuple(s.latent["logvar"].shape) == want


def test_video_sources_entries_hit_on_the_next_run(tmp_path, encoded):
    """The shape a run expects of a video source's entries is the one it writes: a second pass
    reads every entry (t2v: the VAE's latent frames; mmu_vid: frame by frame)."""
    cache = tmp_path / "cache"
    raw = config(tmp_path, "video", str(cache), size=2, **{"batch.t2i": 0, "batch.t2v": 1, "batch.mmu_vid": 1})
    raw["data"] = [{"kind": "shapes", "role": "t2v", "resolution": 64, "frames": 5, "size": 2, "cache": str(cache)},
                   {"kind": "shapes", "role": "mmu_vid", "resolution": 64, "frames": 3, "size": 2,
                    "cache": str(cache)}]
    del raw["batch"]["t2i"]
    assert Run(parse_config(raw, source="video")).pre_encode()["encoded"] == 4
    shapes = sorted(tuple(_load(f)["mu"].shape) for f in entries(cache))
    assert shapes == [(3, Z, H, W)] * 2 + [(Z, 2, H, W)] * 2
    encoded.clear()
    notes = []
    again = Run(parse_config(raw, source="video"), progress=notes.append).pre_encode()
    assert (again["encoded"], again["cached"], encoded) == (0, 4, [])
    assert not [ev for ev in notes if ev.get("event") == "notice" and "latent cache" in ev["message"]]
