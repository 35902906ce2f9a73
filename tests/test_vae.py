"""Tests for `showo2_cli.modeling.vae`: loading, parity with the official Wan VAE, fast path, errors."""

from __future__ import annotations

import copy
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import official_vae_input
from showo2_cli.errors import InputError, ModelError
from showo2_cli.modeling import vae as vae_mod
from showo2_cli.modeling import vae_single_frame
from showo2_cli.modeling.vae import WAN_LATENTS_MEAN, WAN_LATENTS_STD, WanVAE
from showo2_cli.modeling.vae_files import load_vae

PARITY = Path(
    os.environ.get("SHOWO2_PARITY_DIR", Path(__file__).resolve().parents[1].parent / "shared" / "parity")
)
VAE_DIR = PARITY / "vae"
PTH = VAE_DIR / "Wan2.1_VAE_tiny.pth"
SAFETENSORS = VAE_DIR / "wan21_vae.safetensors"
CASE = PARITY / "cases" / "vae.safetensors"

needs_parity = pytest.mark.skipif(not PARITY.is_dir(), reason=f"parity fixtures not found at {PARITY}")

# Tolerances from the fixtures' README (section 9): latents 1e-4, decoded pixels 5e-4.
ATOL_LATENT = 1e-4
ATOL_PIXELS = 5e-4
ATOL_FAST = 1e-5


def _case_prefixes() -> tuple[list[str], list[str]]:
    """Every `<prefix>_input` in the case file, and those with a single frame (images)."""
    if not CASE.is_file():
        return ["video", "image"], ["image"]
    tensors = load_file(str(CASE))
    prefixes = sorted(k[: -len("_input")] for k in tensors if k.endswith("_input"))
    return prefixes, [p for p in prefixes if tensors[f"{p}_input"].shape[2] == 1]


PREFIXES, SINGLE_FRAME_PREFIXES = _case_prefixes()


@pytest.fixture(scope="module")
def case() -> dict[str, torch.Tensor]:
    return load_file(str(CASE))


@pytest.fixture(scope="module")
def tiny() -> WanVAE:
    return load_vae(PTH)


@pytest.fixture(scope="module")
def small_random() -> WanVAE:
    return WanVAE.random(base_dim=8, seed=0)


def _assert_one_line(exc: pytest.ExceptionInfo, *needles: str) -> None:
    msg = str(exc.value)
    assert "\n" not in msg, msg
    for needle in needles:
        assert needle in msg, msg


class _Count3d:
    """Counts calls of the 3-D `WanCausalConv3d.forward` (the fast path's fallback included)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        cls = vae_single_frame._causal_conv_cls()
        original = cls.forward
        self.calls = 0

        def counting(conv, x, cache_x=None):
            self.calls += 1
            return original(conv, x, cache_x)

        monkeypatch.setattr(cls, "forward", counting)


# ---------------------------------------------------------------------------------------------
# Constants and shapes (no fixtures needed)
# ---------------------------------------------------------------------------------------------


def test_constants_match_diffusers_defaults():
    import inspect

    from diffusers import AutoencoderKLWan

    assert len(WAN_LATENTS_MEAN) == len(WAN_LATENTS_STD) == 16
    params = inspect.signature(AutoencoderKLWan.__init__).parameters
    assert list(WAN_LATENTS_MEAN) == params["latents_mean"].default
    assert list(WAN_LATENTS_STD) == params["latents_std"].default


@needs_parity
def test_constants_match_fixture_config():
    config = json.loads((VAE_DIR / "config.json").read_text())
    torch.testing.assert_close(torch.tensor(config["latents_mean"]), torch.tensor(WAN_LATENTS_MEAN))
    torch.testing.assert_close(torch.tensor(config["latents_std"]), torch.tensor(WAN_LATENTS_STD))


def test_properties(small_random):
    v = small_random
    assert (v.z_dim, v.base_dim, v.spatial_factor, v.temporal_factor) == (16, 8, 8, 4)
    assert v.dtype == torch.float32 and v.device.type == "cpu"
    assert v.latents_mean.shape == v.latents_std.shape == (16,)


def test_frame_rule_shapes(small_random):
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        z = small_random.encode(torch.rand(1, 3, 17, 16, 24, generator=g) * 2 - 1)
        assert z.shape == (1, 16, 5, 2, 3) and z.dtype == torch.float32
        x = small_random.decode(torch.randn(1, 16, 5, 2, 3, generator=g))
        assert x.shape == (1, 3, 17, 16, 24) and x.dtype == torch.float32
        assert x.abs().max() <= 1.0
        # images: 4-D in, 4-D out
        assert small_random.encode(torch.zeros(2, 3, 16, 8)).shape == (2, 16, 2, 1)
        assert small_random.decode(torch.zeros(2, 16, 2, 1)).shape == (2, 3, 16, 8)


@pytest.mark.parametrize(
    ("shape", "needle"),
    [
        ((1, 3, 1, 20, 16), "20x16"),
        ((1, 3, 20, 16), "20x16"),
        ((1, 3, 4, 16, 16), "4 frames"),
        ((1, 4, 1, 16, 16), "channels"),
    ],
)
def test_bad_pixels(small_random, shape, needle):
    with pytest.raises(InputError) as exc:
        small_random.encode(torch.zeros(shape))
    _assert_one_line(exc, needle)


def test_bad_latents(small_random):
    with pytest.raises(InputError) as exc:
        small_random.decode(torch.zeros(1, 4, 1, 2, 2))
    _assert_one_line(exc, "channels")
    with pytest.raises(InputError):
        small_random.encode(torch.zeros(1, 3, 8, 8, dtype=torch.uint8))


def test_fast_path_equals_3d_on_random_weights(monkeypatch):
    vae = WanVAE.random(base_dim=16, seed=3)
    g = torch.Generator().manual_seed(1)
    images = torch.rand(2, 3, 1, 32, 32, generator=g) * 2 - 1
    video = torch.rand(1, 3, 5, 16, 16, generator=g) * 2 - 1
    results = {}
    with torch.no_grad():
        for fast in (False, True):
            vae.fast_single_frame = fast
            z_img = vae.encode(images)
            z_vid = vae.encode(video)
            results[fast] = (z_img, vae.decode(z_img), z_vid, vae.decode(z_vid))
    for a, b in zip(results[False], results[True], strict=True):
        torch.testing.assert_close(b, a, atol=ATOL_FAST, rtol=0)
    # The images really took the 2-D path: no 3-D conv call at all.
    counter = _Count3d(monkeypatch)
    vae.fast_single_frame = True
    with torch.no_grad():
        vae.decode(vae.encode(images))
    assert counter.calls == 0
    vae.fast_single_frame = False
    with torch.no_grad():
        vae.encode(images)
    assert counter.calls > 0


def test_fast_path_context_restores_forward(small_random):
    convs = [m for m in small_random.model.modules() if isinstance(m, vae_single_frame._causal_conv_cls())]
    with vae_mod.single_frame_conv2d(small_random.model):
        with vae_mod.single_frame_conv2d(small_random.model):
            assert all("forward" in m.__dict__ for m in convs)
        assert all("forward" in m.__dict__ for m in convs)
    assert not any("forward" in m.__dict__ for m in convs)


def test_random_is_deterministic():
    a = WanVAE.random(base_dim=4, seed=5)
    b = WanVAE.random(base_dim=4, seed=5)
    c = WanVAE.random(base_dim=4, seed=6)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------


@needs_parity
def test_pth_and_safetensors_identical(tiny):
    other = load_vae(SAFETENSORS)
    from_folder = load_vae(VAE_DIR)
    sa = tiny.state_dict()
    for vae in (other, from_folder):
        sb = vae.state_dict()
        assert sa.keys() == sb.keys()
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    raw = torch.load(PTH, map_location="cpu", weights_only=True)
    assert tiny.base_dim == raw["encoder.conv1.weight"].shape[0]


@needs_parity
def test_diffusers_round_trip(tiny, case, tmp_path):
    out = tiny.save_pretrained(tmp_path / "vae")
    assert (out / "config.json").is_file() and (out / "diffusion_pytorch_model.safetensors").is_file()
    config = json.loads((out / "config.json").read_text())
    assert config["latents_mean"] == pytest.approx(tiny.latents_mean.tolist())
    for path in (out, tmp_path, out / "diffusion_pytorch_model.safetensors"):
        loaded = load_vae(path)
        sa, sb = tiny.state_dict(), loaded.state_dict()
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    with torch.no_grad():
        for prefix in PREFIXES:
            z = case[f"{prefix}_latent_mean_normalized"]
            pixels, _ = official_vae_input(tiny, case[f"{prefix}_input"])
            if pixels is not None:
                assert torch.equal(tiny.encode(pixels), loaded.encode(pixels))
            assert torch.equal(tiny.decode(z), loaded.decode(z))


@needs_parity
def test_sibling_config_statistics_are_used(tmp_path):
    shutil.copy(PTH, tmp_path / PTH.name)
    config = json.loads((VAE_DIR / "config.json").read_text())
    config["latents_mean"] = [0.5] * len(config["latents_mean"])
    (tmp_path / "config.json").write_text(json.dumps(config))
    vae = load_vae(tmp_path / PTH.name)
    assert torch.equal(vae.latents_mean, torch.full_like(vae.latents_mean, 0.5))


def test_legacy_torch_save_format(small_random, tmp_path):
    path = tmp_path / "legacy.pth"
    torch.save(small_random.model.state_dict(), path, _use_new_zipfile_serialization=False)
    loaded = load_vae(path)
    sa, sb = small_random.state_dict(), loaded.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    # a {"state_dict": ...} wrapper is accepted too
    torch.save({"state_dict": small_random.model.state_dict()}, path)
    assert load_vae(path).base_dim == small_random.base_dim


@needs_parity
@pytest.mark.parametrize("cut", [0.5, 0.01, 0.0])
def test_truncated_pth(tmp_path, cut):
    data = PTH.read_bytes()
    path = tmp_path / PTH.name
    path.write_bytes(data[: int(len(data) * cut)])
    with pytest.raises(ModelError) as exc:
        load_vae(path)
    _assert_one_line(exc, str(path))


@needs_parity
def test_truncated_safetensors(tmp_path):
    data = SAFETENSORS.read_bytes()
    path = tmp_path / SAFETENSORS.name
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError) as exc:
        load_vae(path)
    _assert_one_line(exc, str(path), "corrupt")


class _Payload:
    """Unpickling this would write a marker file (a stand-in for arbitrary code execution)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


class _CustomObject:
    def __init__(self) -> None:
        self.weights = torch.zeros(2)


@pytest.mark.parametrize("kind", ["reduce", "custom_class"])
def test_malicious_pickle_is_refused(small_random, tmp_path, kind):
    marker = tmp_path / "marker.txt"
    payload = _Payload(marker) if kind == "reduce" else _CustomObject()
    path = tmp_path / "Wan2.1_VAE.pth"
    torch.save({"state_dict": small_random.model.state_dict(), "extra": payload}, path)
    with pytest.raises(ModelError) as exc:
        load_vae(path)
    _assert_one_line(exc, str(path), "safety")
    assert not marker.exists()


def test_wrong_shaped_state_dict(small_random, tmp_path):
    sd = {k: v.clone() for k, v in small_random.model.state_dict().items()}
    sd["decoder.conv_in.bias"] = torch.zeros(3)
    path = tmp_path / "bad.safetensors"
    save_file(sd, str(path))
    with pytest.raises(ModelError) as exc:
        load_vae(path)
    _assert_one_line(exc, str(path), "decoder.conv_in.bias (3,)", "wrong shape", "Wan2.1 VAE")


def test_missing_and_unexpected_keys(small_random, tmp_path):
    sd = {k: v.clone() for k, v in small_random.model.state_dict().items()}
    del sd["decoder.norm_out.gamma"]
    sd["decoder.extra.weight"] = torch.zeros(1)
    path = tmp_path / "bad.pth"
    torch.save(sd, path)
    with pytest.raises(ModelError) as exc:
        load_vae(path)
    _assert_one_line(exc, "1 missing key(s) (e.g. decoder.norm_out.gamma)", "1 unexpected key(s) (e.g. decoder.extra.weight)")


def test_not_a_vae_and_missing_paths(tmp_path):
    with pytest.raises(ModelError) as exc:
        load_vae(tmp_path / "nope.pth")
    _assert_one_line(exc, "not found")
    with pytest.raises(ModelError) as exc:
        load_vae(tmp_path)  # empty folder
    _assert_one_line(exc, "no VAE found")
    path = tmp_path / "other.safetensors"
    save_file({"a.weight": torch.zeros(2)}, str(path))
    with pytest.raises(ModelError) as exc:
        load_vae(path)
    _assert_one_line(exc, "not a Wan2.1 VAE")


# ---------------------------------------------------------------------------------------------
# Parity with the official code
# ---------------------------------------------------------------------------------------------


@needs_parity
@pytest.mark.parametrize("prefix", PREFIXES)
def test_encode_parity(tiny, case, prefix):
    expected = case[f"{prefix}_latent_mean_normalized"]
    pixels, _ = official_vae_input(tiny, case[f"{prefix}_input"])  # the frames the official encoder reads
    if pixels is None:
        pytest.skip("a size the VAE here refuses (not a multiple of 8): checked refused in one line")
    with torch.no_grad():
        z = tiny.encode(pixels)
    assert z.shape == expected.shape and z.dtype == torch.float32
    torch.testing.assert_close(z, expected, atol=ATOL_LATENT, rtol=0)
    # the raw mean and logvar too
    mu, logvar = tiny.encode_moments(pixels)
    torch.testing.assert_close(mu, case[f"{prefix}_latent_mean_raw"], atol=ATOL_LATENT, rtol=0)
    torch.testing.assert_close(logvar, case[f"{prefix}_latent_logvar"], atol=ATOL_LATENT, rtol=0)


@needs_parity
@pytest.mark.parametrize("prefix", PREFIXES)
def test_decode_parity(tiny, case, prefix):
    expected = case[f"{prefix}_decoded_unclamped"].clamp(-1, 1)
    z = case[f"{prefix}_latent_mean_normalized"]
    with torch.no_grad():
        x = tiny.decode(z)
    assert x.shape == expected.shape and x.dtype == torch.float32
    if (x - expected).abs().max() <= ATOL_PIXELS:
        return
    # A set's random VAE can be ill-conditioned: its official float32 decode is then itself far from
    # the exact one (probe EB's eb-yarn video: 8.0e-4 from float64, ours 2.0e-4, 1.0e-3 apart). Past
    # the tolerance, ours must be the closer of the two to a float64 decode of the same weights.
    with torch.no_grad():
        exact = copy.deepcopy(tiny).double().decode(z.double())
    ours, official = (x.double() - exact).abs().max(), (expected.double() - exact).abs().max()
    assert ours <= ATOL_PIXELS and ours < official, (
        f"{(x - expected).abs().max():.3g} from the fixture; from a float64 decode: ours {ours:.3g}, "
        f"the fixture's {official:.3g}")


@needs_parity
@pytest.mark.parametrize("prefix", PREFIXES)
def test_sample_quirk(tiny, case, prefix):
    z = case[f"{prefix}_latent_mean_normalized"]
    std = torch.exp(0.5 * case[f"{prefix}_latent_logvar"].clamp(-30, 20))
    eps = torch.randn(z.shape, generator=torch.Generator().manual_seed(7))
    pixels, _ = official_vae_input(tiny, case[f"{prefix}_input"])
    if pixels is None:
        pytest.skip("a size the VAE here refuses (not a multiple of 8): checked refused in one line")
    with torch.no_grad():
        sampled = tiny.encode(pixels, sample=True, generator=torch.Generator().manual_seed(7))
    # noise scale is the RAW posterior std, not divided by the latent std
    torch.testing.assert_close(sampled, z + std * eps, atol=ATOL_LATENT, rtol=0)


@needs_parity
@pytest.mark.parametrize("prefix", SINGLE_FRAME_PREFIXES)
def test_single_frame_fixture_uses_fast_path(tiny, case, prefix, monkeypatch):
    pixels = case[f"{prefix}_input"]
    latents = case[f"{prefix}_latent_mean_normalized"]
    counter = _Count3d(monkeypatch)
    with torch.no_grad():
        tiny.fast_single_frame = False
        z3, x3 = tiny.encode(pixels), tiny.decode(latents)
        assert counter.calls > 0
        counter.calls = 0
        tiny.fast_single_frame = True
        z2, x2 = tiny.encode(pixels), tiny.decode(latents)
        assert counter.calls == 0  # every conv ran as conv2d
        # 4-D image input gives the same numbers
        z4, x4 = tiny.encode(pixels[:, :, 0]), tiny.decode(latents[:, :, 0])
    torch.testing.assert_close(z2, z3, atol=ATOL_LATENT, rtol=0)
    # dim 3 means RMS norms over 3 channels: rounding noise grows to ~3e-5 through the decoder
    torch.testing.assert_close(x2, x3, atol=ATOL_PIXELS, rtol=0)
    assert torch.equal(z4, z2[:, :, 0]) and torch.equal(x4, x2[:, :, 0])
    torch.testing.assert_close(z2, latents, atol=ATOL_LATENT, rtol=0)
