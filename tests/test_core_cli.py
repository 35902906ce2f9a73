"""`showo2 init / info / convert / encode / decode` and the loader, end to end."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import PARITY_DIR, parity_weight_file
from showo2_cli import media as M
from showo2_cli.cli import main
from showo2_cli.errors import ModelError
from showo2_cli.loading import find_files, load, read_state_dict


def run(args, capsys):
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def parity_model(tmp_path: Path, fmt: str = "bin") -> Path:
    if not PARITY_DIR.is_dir():
        pytest.skip("no parity fixtures")
    folder = tmp_path / f"official-{fmt}"
    shutil.copytree(PARITY_DIR / "model", folder, ignore=shutil.ignore_patterns("*.bin", "*.safetensors", "*.index.json"))
    parity_weight_file(fmt, folder)  # one file, also from a set stored in shards
    return folder


def parity_vae() -> Path:
    return sorted((PARITY_DIR / "vae").glob("*.pth"))[0]


# ---- init / info ------------------------------------------------------------------------------

def test_init_writes_a_loadable_model_of_the_spec(tmp_path, capsys):
    code, out, _ = run(["init", "--spec", "tiny", "-o", tmp_path / "m", "--seed", "3", "--vae-dim", "4"], capsys)
    assert code == 0 and (tmp_path / "m" / "model.safetensors").exists()
    code, out, _ = run(["info", tmp_path / "m", "--json"], capsys)
    info = json.loads(out)
    assert code == 0 and info["format"] == "showo2" and info["spec"]["name"] == "tiny"
    assert info["parameters"]["total"] == sum(v for k, v in info["parameters"].items() if k != "total") > 0
    model = load(tmp_path / "m")
    assert len(model.tokenizer) == model.spec.vocab_size
    assert model.tokens.pad == 278 and model.tokens.eov == 281  # the fixture id pattern
    # same seed, same weights; the flow head's output layer starts at zero (official init)
    assert torch.count_nonzero(model.network.diffusion_head_b.linear.weight) == 0
    code, _, err = run(["init", "--spec", "tiny", "-o", tmp_path / "m"], capsys)
    assert code == 5 and "exists" in err


def test_init_refuses_an_unknown_spec(tmp_path, capsys):
    code, _, err = run(["init", "--spec", "13B", "-o", tmp_path / "x"], capsys)
    assert code == 2 and "unknown model spec" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()


def test_info_reads_the_official_fixture_geometry(tmp_path, capsys):
    folder = parity_model(tmp_path)
    code, out, _ = run(["info", folder, "--vae", parity_vae(), "--json"], capsys)
    info = json.loads(out)
    state = read_state_dict(sorted(folder.glob("*.bin")))
    assert code == 0 and info["format"] == "official"
    spec = info["spec"]
    assert spec["head_hidden"] == state["diffusion_head_b.linear.weight"].shape[1]
    assert spec["head_layers"] == len({k.split(".")[1] for k in state if k.startswith("diffusion_head_a.")})
    assert spec["hidden_size"] == state["showo.model.embed_tokens.weight"].shape[1]
    tied = json.loads((folder / "llm" / "config.json").read_text()).get("tie_word_embeddings", True)
    unique = {id(v.untyped_storage()) for v in state.values()}
    assert len(unique) == len(state) - tied  # a tied lm_head shares storage...
    total = sum(v.numel() for k, v in state.items() if not (tied and k == "showo.lm_head.weight"))
    assert info["parameters"]["total"] == total  # ...and is counted once


# ---- convert ----------------------------------------------------------------------------------

def test_convert_official_bin_to_safetensors_folder(tmp_path, capsys):
    folder = parity_model(tmp_path)
    out_dir = tmp_path / "converted"
    code, out, err = run(["convert", folder, "-o", out_dir, "--vae", parity_vae(), "--dtype", "bf16"], capsys)
    assert code == 0, err
    assert sorted(p.name for p in out_dir.iterdir()) == ["config.json", "model.safetensors", "tokenizer.json",
                                                        "tokenizer_config.json", "vae"]
    original = load(folder, vae=parity_vae())
    converted = load(out_dir, dtype=torch.bfloat16)
    a, b = original.network.state_dict(), converted.network.state_dict()
    for k in a:
        assert torch.equal(a[k].to(torch.bfloat16), b[k]), k
    assert converted.tokens == original.tokens
    x = torch.rand(1, 3, 1, 16, 16) * 2 - 1
    assert torch.allclose(original.vae.encode(x), converted.vae.to(dtype=torch.float32).encode(x), atol=5e-2)
    # a second convert without --overwrite leaves the first untouched
    before = (out_dir / "model.safetensors").stat().st_mtime_ns
    code, _, err = run(["convert", folder, "-o", out_dir], capsys)
    assert code == 5 and (out_dir / "model.safetensors").stat().st_mtime_ns == before


def test_convert_keep_dtype_round_trips_exactly(tmp_path, capsys):
    folder = parity_model(tmp_path, "safetensors")
    code, _, err = run(["convert", folder, "-o", tmp_path / "c", "--vae", parity_vae()], capsys)
    assert code == 0, err
    a = load(folder, vae=parity_vae()).network.state_dict()
    b = load(tmp_path / "c").network.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_truncated_checkpoint_is_a_one_line_model_error(tmp_path, capsys):
    folder = parity_model(tmp_path)
    weights = folder / "pytorch_model.bin"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    code, _, err = run(["convert", folder, "-o", tmp_path / "out", "--vae", parity_vae()], capsys)
    assert code == 4 and "truncated or corrupt" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.*"))


def test_wrong_shapes_in_a_state_dict_are_named(tmp_path, capsys):
    folder = parity_model(tmp_path)
    state = {k: v.clone() for k, v in read_state_dict([folder / "pytorch_model.bin"]).items()}
    (folder / "pytorch_model.bin").unlink()  # never rewrite a memory-mapped file in place
    state["fusion_proj.3.weight"] = torch.zeros(3, 3)
    state["surplus.weight"] = torch.zeros(1)
    del state["time_embed.mlp.0.bias"]
    torch.save(state, folder / "pytorch_model.bin")
    code, _, err = run(["info", folder], capsys)
    assert code == 4 and len(err.strip().splitlines()) == 1
    assert "fusion_proj.3.weight" in err and "surplus.weight" in err and "time_embed.mlp.0.bias" in err


def test_pickle_payload_never_runs(tmp_path, capsys):
    folder = parity_model(tmp_path)
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    (folder / "pytorch_model.bin").unlink()
    torch.save({"showo.model.norm.weight": Payload()}, folder / "pytorch_model.bin")
    code, _, err = run(["info", folder], capsys)
    assert code == 4 and "refusing" in err and not marker.exists()


# ---- finding pieces ---------------------------------------------------------------------------

def test_missing_pieces_are_named_with_how_to_get_them(tmp_path):
    folder = parity_model(tmp_path)
    shutil.rmtree(folder / "llm")
    cfg = json.loads((folder / "config.json").read_text())
    cfg["llm_model_path"] = "Qwen/Qwen2.5-1.5B-Instruct"
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelError) as e:
        load(folder)
    msg = str(e.value)
    assert ("tokenizer (hf download Qwen/Qwen2.5-1.5B-Instruct config.json tokenizer.json tokenizer_config.json "
            "vocab.json merges.txt)") in msg and "VAE (hf download Wan-AI/Wan2.1-T2V-14B" in msg


def test_repo_ids_resolve_from_the_offline_hf_cache(tmp_path, monkeypatch):
    """A Show-o2 repo and the Qwen tokenizer repo found in a Hugging Face cache layout."""
    if not PARITY_DIR.is_dir():
        pytest.skip("no parity fixtures")
    cache = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as C

    monkeypatch.setattr(C, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(C, "HF_HUB_OFFLINE", True)

    def put(repo, files: dict[str, Path]):
        base = cache / f"models--{repo.replace('/', '--')}"
        snap = base / "snapshots" / "0123abcd"
        for rel, src in files.items():
            (snap / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, snap / rel)
        (base / "refs").mkdir(parents=True, exist_ok=True)
        (base / "refs" / "main").write_text("0123abcd")

    cfg = json.loads((PARITY_DIR / "model" / "config.json").read_text())
    cfg["llm_model_path"] = "acme/tiny-qwen"
    cfg_file = tmp_path / "config.json"
    cfg_file.write_text(json.dumps(cfg))
    put("acme/showo2-tiny", {"config.json": cfg_file, "pytorch_model.bin": parity_weight_file("bin", tmp_path / "w"),
                             "Wan2.1_VAE.pth": parity_vae(), "siglip/config.json": PARITY_DIR / "model" / "siglip" / "config.json"})
    put("acme/tiny-qwen", {p.name: p for p in (PARITY_DIR / "model" / "llm").iterdir()})
    files = find_files("acme/showo2-tiny")
    assert files.format == "official" and files.tokenizer is not None and files.vae.name == "Wan2.1_VAE.pth"
    model = load("acme/showo2-tiny")
    assert model.tokens.pad == model.tokenizer.pad_token_id
    with pytest.raises(ModelError, match="not in the Hugging Face cache"):
        find_files("acme/not-there")


# ---- encode / decode on real media ------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_vae(tmp_path_factory):
    from showo2_cli.modeling.vae import WanVAE

    path = tmp_path_factory.mktemp("vae") / "vae"
    WanVAE.random(base_dim=4, seed=1).save_pretrained(path)
    return path


@pytest.mark.parametrize("name,size,frames,fps", [
    ("video1.mp4", 64, 49, 30.0),  # 52 frames -> the first 49 (1+4k), with a notice
    ("waves.gif", 48, 17, None),
])
def test_encode_decode_video_keeps_frames_size_and_fps(name, size, frames, fps, media_dir, tiny_vae, tmp_path, capsys):
    src = media_dir / name
    lat = tmp_path / "lat.safetensors"
    code, out, err = run(["encode", src, "-o", lat, "--vae", tiny_vae, "--size", size, "--json"], capsys)
    assert code == 0, err
    meta = json.loads(out)
    assert meta["frames"] == frames and meta["latent_frames"] == 1 + (frames - 1) // 4
    assert meta["shape"] == [16, 1 + (frames - 1) // 4, size // 8, size // 8]
    source_fps = M.read_video(src).fps
    assert meta["fps"] == pytest.approx(source_fps)
    if fps:
        assert source_fps == pytest.approx(fps, rel=1e-3)
    for ext in (".mp4", ".gif"):
        video = tmp_path / f"out{ext}"
        code, out, err = run(["decode", lat, "-o", video, "--vae", tiny_vae], capsys)
        assert code == 0, err
        back = M.read_video(video)
        assert back.num_frames == frames and (back.width, back.height) == (size, size)
        if ext == ".gif":  # GIF stores frame delays in 1/100 s
            assert abs(1 / back.fps - 1 / source_fps) <= 0.005 + 1e-9
        else:
            assert back.fps == pytest.approx(source_fps, rel=1e-3)


def test_video_frames_not_1_plus_4k_are_rounded_with_a_notice(media_dir, tiny_vae, tmp_path, capsys):
    lat = tmp_path / "lat.safetensors"
    code, out, err = run(["encode", media_dir / "video1.mp4", "-o", lat, "--vae", tiny_vae, "--size", 32,
                          "--frames", 6], capsys)
    assert code == 0 and "6 was rounded to 9" in err
    code, out, err = run(["encode", media_dir / "video1.mp4", "-o", tmp_path / "b.safetensors", "--vae", tiny_vae,
                          "--size", 32], capsys)
    assert "52 frames is not 1+4k" in err
    code, out, err = run(["encode", media_dir / "video1.mp4", "-o", tmp_path / "c.safetensors", "--vae", tiny_vae,
                          "--size", 32, "--frames", 100000], capsys)
    assert code == 0 and "has only 52 frames: using 49" in err and "rounded" not in err  # not "rounded to 100001"


@pytest.mark.parametrize("photo", ["pexels-talha-ahmed-26040377-7949588.jpg", "pexels-taryn-elliott-4144459.jpg"])
def test_encode_decode_photos(photo, media_dir, tiny_vae, tmp_path, capsys):
    lat = tmp_path / "p.safetensors"
    code, out, err = run(["encode", media_dir / photo, "-o", lat, "--vae", tiny_vae, "--size", "48x32"], capsys)
    assert code == 0, err
    png = tmp_path / "p.png"
    code, out, err = run(["decode", lat, "-o", png, "--vae", tiny_vae], capsys)
    assert code == 0, err
    img = M.read_image(png)
    assert img.size == (48, 32)
    assert M.read_png_metadata(png)["decoded_from"] == str(lat)


def test_decode_names_a_recorded_vae_only_when_it_is_another(media_dir, tiny_vae, tmp_path, capsys, monkeypatch):
    """``decode`` without --vae/--model uses the default model's VAE; it says so only when the
    latents file records a different VAE (the default's own was noise)."""
    monkeypatch.delenv("SHOWO2_MODEL", raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    photo = media_dir / "pexels-taryn-elliott-4144459.jpg"
    for vae, named in ((None, False), (tiny_vae, True)):
        lat = tmp_path / f"{named}.safetensors"
        code, _, err = run(["encode", photo, "-o", lat, "--size", "32"] + (["--vae", vae] if vae else []), capsys)
        assert code == 0, err
        code, _, err = run(["decode", lat, "-o", tmp_path / f"{named}.png"], capsys)
        noted = "the latents were encoded with" in err
        assert (code, noted) == (0, named), err


def test_encode_is_deterministic_and_sample_adds_posterior_noise(media_dir, tiny_vae, tmp_path, capsys):
    from showo2_cli.api import load_latents

    photo = media_dir / "pexels-taryn-elliott-4144459.jpg"
    paths = [tmp_path / f"{i}.safetensors" for i in range(4)]
    extra = [[], [], ["--sample", "--seed", "1"], ["--sample", "--seed", "1"]]
    for p, e in zip(paths, extra, strict=True):
        assert run(["encode", photo, "-o", p, "--vae", tiny_vae, "--size", 32, *e], capsys)[0] == 0
    z = [load_latents(p)[0] for p in paths]
    assert torch.equal(z[0], z[1]) and torch.equal(z[2], z[3]) and not torch.equal(z[0], z[2])


@pytest.mark.parametrize("make,code_want,needle", [
    (lambda d: d / "missing.png", 3, "no such file"),
    (lambda d: (d / "text.png").write_text("hello") and d / "text.png", 3, "text.png"),
    (lambda d: (d / "empty.mp4").write_bytes(b"") or d / "empty.mp4", 3, "empty"),
    (lambda d: d, 3, "directory"),
])
def test_bad_media_gives_one_line_and_no_output(make, code_want, needle, tiny_vae, tmp_path, capsys):
    src = make(tmp_path)
    out = tmp_path / "never.safetensors"
    code, stdout, err = run(["encode", src, "-o", out, "--vae", tiny_vae, "--json"], capsys)
    assert code == code_want and needle in err and len(err.strip().splitlines()) == 1
    assert json.loads(stdout)["error"]["exit_code"] == code_want
    assert not out.exists()


def test_bad_latents_files(tmp_path, tiny_vae, capsys):
    from safetensors.torch import save_file

    bad = {
        "wrong_key": {"x": torch.zeros(16, 1, 4, 4)},
        "wrong_channels": {"latents": torch.zeros(8, 1, 4, 4)},
        "int_dtype": {"latents": torch.zeros(16, 1, 4, 4, dtype=torch.int32)},
        "nan": {"latents": torch.full((16, 1, 4, 4), float("nan"))},
    }
    for name, tensors in bad.items():
        path = tmp_path / f"{name}.safetensors"
        save_file(tensors, str(path))
        out = tmp_path / f"{name}.png"
        code, _, err = run(["decode", path, "-o", out, "--vae", tiny_vae], capsys)
        assert code == 3 and len(err.strip().splitlines()) == 1, (name, err)
        assert not out.exists()
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 100)
    code, _, err = run(["decode", tmp_path / "junk.safetensors", "-o", tmp_path / "j.png", "--vae", tiny_vae], capsys)
    assert code == 3 and "junk.safetensors" in err


def test_console_script_runs_as_a_real_process(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "showo2_cli.cli", "info", str(tmp_path / "nope")],
                          capture_output=True, text=True)
    assert proc.returncode == 4 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
