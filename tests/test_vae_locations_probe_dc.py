"""The VAE and model locations users give, and the checks before a load (probe DC).

Against a real HTTP server on 127.0.0.1 in the Hub's layout (``local_hub``), counting its requests:
``--vae`` / ``$SHOWO2_VAE`` / ``from_pretrained(vae=)`` as a Hub repo id, and a model repo with its
own ``vae/`` run with another VAE.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from PIL import Image

from showo2_cli.cli import main
from test_hub_pipeline import hub, offline  # noqa: F401  (the local Hub fixture)

PIPE = "acme/wan-diffusers"


def online(monkeypatch):
    import huggingface_hub.constants as C

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(C, "HF_HUB_OFFLINE", False)


def _pixels(path) -> bytes:
    with Image.open(path) as im:
        return im.convert("RGB").tobytes()


def _pipeline_repo(hub, vae_dir, repo=PIPE):  # noqa: F811
    """A diffusers pipeline repo as Wan-AI/Wan2.1-T2V-1.3B-Diffusers is laid out: its VAE in vae/, and a
    transformer and a text encoder (big here) nobody asked for."""
    return hub.add(repo, {"model_index.json": json.dumps({"_class_name": "WanPipeline"}).encode(),
                          "vae/config.json": vae_dir / "config.json",
                          "vae/diffusion_pytorch_model.safetensors": vae_dir / "diffusion_pytorch_model.safetensors",
                          "transformer/config.json": b"{}", "transformer/diffusion_pytorch_model.safetensors": b"\0" * 60_000,
                          "text_encoder/model.safetensors": b"\0" * 60_000})


def test_a_vae_named_by_repo_id_is_fetched_alone_announced_and_offline_after(hub, tiny_model_dir, tmp_path,  # noqa: F811
                                                                              monkeypatch, capsys):
    """`--vae owner/name` was "VAE 'owner/name' does not exist": a diffusers user's repo id. Now its
    vae/ alone is downloaded (announced), a second run asks the Hub nothing, offline an uncached one
    is one line with no request, and @revision pins a version."""
    first = _pipeline_repo(hub, tiny_model_dir / "vae")
    out = tmp_path / "x.png"
    args = ["t2i", "a red circle", "-m", str(tiny_model_dir), "-o", str(out), "--steps", "2", "--seed", "1"]
    offline(monkeypatch)
    assert main([*args, "--vae", PIPE]) == 4
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not in the Hugging Face cache and HF_HUB_OFFLINE is set" in err, err
    assert hub.requests == [] and not out.exists()
    online(monkeypatch)
    assert main([*args, "--vae", PIPE]) == 0
    assert f"downloading the VAE {PIPE} into the Hugging Face cache" in capsys.readouterr().err
    assert sorted(hub.downloads()) == [f"{PIPE}:vae/config.json", f"{PIPE}:vae/diffusion_pytorch_model.safetensors"]
    hub.requests.clear()
    again = tmp_path / "y.png"
    assert main(["t2i", "a red circle", "-m", str(tiny_model_dir), "-o", str(again), "--steps", "2", "--seed", "1",
                 "--vae", PIPE, "--json"]) == 0
    assert hub.requests == [] and json.loads(capsys.readouterr().out)["outputs"][0]["vae"] == PIPE
    assert _pixels(again) == _pixels(out)  # the same VAE: the same picture
    # a newer main, and the old one pinned: the pinned one is what the cache has, with no download
    hub.add(PIPE, {**hub.repos[PIPE].files, "README.md": b"# new\n"})
    hub.requests.clear()
    pinned = tmp_path / "z.png"
    assert main(["t2i", "a red circle", "-m", str(tiny_model_dir), "-o", str(pinned), "--steps", "2", "--seed", "1",
                 "--vae", f"{PIPE}@{first.sha}"]) == 0
    assert hub.requests == []
    assert _pixels(pinned) == _pixels(out)


def test_a_vae_repo_at_its_root_for_encode_the_api_and_the_environment(hub, tiny_model_dir, tmp_path,  # noqa: F811
                                                                       monkeypatch, capsys):
    """A repo holding the VAE at its root (a diffusers VAE repo), given to `encode --vae`,
    `Showo2Pipeline.from_pretrained(vae=)` and `$SHOWO2_VAE` for a model without a VAE of its own; a
    repo with no VAE is one line."""
    from showo2_cli import Showo2Pipeline
    from showo2_cli.hub import pull

    vae_dir = tiny_model_dir / "vae"
    hub.add("acme/vae-root", {"config.json": vae_dir / "config.json", "README.md": b"# a VAE\n",
                              "diffusion_pytorch_model.safetensors": vae_dir / "diffusion_pytorch_model.safetensors"})
    hub.add("acme/not-a-vae", {"config.json": b"{}", "pytorch_model.bin": b"\0" * 20_000})  # (an official model)
    image = tmp_path / "red.png"
    Image.new("RGB", (32, 32), (255, 0, 0)).save(image)
    lat = tmp_path / "red.safetensors"
    assert main(["encode", str(image), "--vae", "acme/vae-root", "-o", str(lat), "--size", "32"]) == 0
    assert "downloading the VAE acme/vae-root" in capsys.readouterr().err and lat.is_file()
    assert sorted(hub.downloads()) == ["acme/vae-root:config.json", "acme/vae-root:diffusion_pytorch_model.safetensors"]
    assert main(["encode", str(image), "--vae", "acme/not-a-vae", "-o", str(tmp_path / "n.safetensors")]) == 4
    err = capsys.readouterr().err.strip()
    assert err.splitlines()[1:] == ["showo2: error: 'acme/not-a-vae' on the Hub has no Wan2.1 VAE: no vae/config.json with "
                                "weights, no Wan2.1_VAE.pth, no config.json with diffusion_pytorch_model weights at "
                                    "its root"], err
    assert not any(d.startswith("acme/not-a-vae") for d in hub.downloads())  # a model's weights are no VAE
    hub.requests.clear()
    pipe = Showo2Pipeline.from_pretrained(tiny_model_dir, vae="acme/vae-root")
    assert pipe.model.vae is not None and hub.requests == []  # cached: no request
    # $SHOWO2_VAE as a repo id, for a model repo without a VAE: pulled with it, no Wan2.1 VAE
    hub.add_folder("acme/novae", tiny_model_dir, skip=("vae/*",))
    _pipeline_repo(hub, vae_dir)
    monkeypatch.setenv("SHOWO2_VAE", PIPE)
    hub.requests.clear()
    result = pull("acme/novae")
    assert PIPE in result.downloaded and result.pieces["VAE"].endswith("vae") and not result.missing
    assert sorted(d for d in hub.downloads() if d.startswith(PIPE)) == [f"{PIPE}:vae/config.json",
                                                                   f"{PIPE}:vae/diffusion_pytorch_model.safetensors"]
    assert not any(d.startswith("Wan-AI/") for d in hub.downloads())
    # a local folder without a VAE, $SHOWO2_VAE a repo not yet cached: downloaded, announced, as --vae's
    bare = tmp_path / "bare"
    shutil.copytree(tiny_model_dir, bare, ignore=shutil.ignore_patterns("vae"))
    monkeypatch.setenv("SHOWO2_VAE", "acme/vae-env")
    hub.add("acme/vae-env", hub.repos["acme/vae-root"].files)
    assert main(["t2i", "a red circle", "-m", str(bare), "-o", str(tmp_path / "env.png"), "--steps", "2"]) == 0
    assert "downloading the VAE acme/vae-env into the Hugging Face cache" in capsys.readouterr().err
    assert sorted(d for d in hub.downloads() if d.startswith("acme/vae-env")) == [
        "acme/vae-env:config.json", "acme/vae-env:diffusion_pytorch_model.safetensors"]


def test_a_model_repo_with_its_own_vae_run_with_another_fetches_no_vae(hub, tiny_model_dir, tmp_path,  # noqa: F811
                                                                       monkeypatch, capsys):
    """A showo2 repo holding vae/, run with --vae: its vae/ was downloaded whole (never read). Now only
    what the load reads; run later without --vae, its vae/ is fetched then (and only it)."""
    hub.add_folder("acme/own", tiny_model_dir)
    out = tmp_path / "x.png"
    vae = tiny_model_dir / "vae"
    assert main(["t2i", "a red circle", "-m", "acme/own", "--vae", str(vae), "-o", str(out), "--steps", "2"]) == 0
    assert "downloading acme/own" in capsys.readouterr().err
    assert not any(d.startswith("acme/own:vae/") for d in hub.downloads()), hub.downloads()
    model_files = sorted(d for d in hub.downloads())
    hub.requests.clear()
    assert main(["t2i", "a red circle", "-m", "acme/own", "--vae", str(vae), "-o", str(tmp_path / "y.png"),
                 "--steps", "2"]) == 0
    assert hub.requests == []  # complete for what it runs: no request
    offline(monkeypatch)  # without --vae, offline: the cache lacks the VAE, and the line says so
    assert main(["t2i", "a red circle", "-m", "acme/own", "-o", str(tmp_path / "z.png"), "--steps", "2"]) == 4
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "showo2: error: model 'acme/own' is in the Hugging Face cache without its own VAE (fetched for a run with "
        "--vae) and HF_HUB_OFFLINE is set: pass --vae, or get it while online with: showo2 pull acme/own")
    online(monkeypatch)
    assert main(["t2i", "a red circle", "-m", "acme/own", "-o", str(tmp_path / "z.png"), "--steps", "2"]) == 0
    assert sorted(hub.downloads()) == ["acme/own:vae/config.json", "acme/own:vae/diffusion_pytorch_model.safetensors"]
    assert len(model_files) + 2 == sum(1 for p in tiny_model_dir.rglob("*") if p.is_file())


def _resident(path) -> int:
    """How many pages of the file ``path`` are in the page cache (``mincore``)."""
    import ctypes
    import mmap
    import os

    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype, libc.mmap.argtypes = ctypes.c_void_p, (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int,
                                                             ctypes.c_int, ctypes.c_int, ctypes.c_long)
    libc.mincore.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p)
    libc.munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)
    size = os.path.getsize(path)
    vec = (ctypes.c_ubyte * ((size + mmap.PAGESIZE - 1) // mmap.PAGESIZE))()
    fd = os.open(path, os.O_RDONLY)
    try:
        address = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        assert libc.mincore(ctypes.c_void_p(address), size, vec) == 0
        libc.munmap(ctypes.c_void_p(address), size)
    finally:
        os.close(fd)
    return sum(v & 1 for v in vec)


def test_a_pickled_vae_is_counted_before_the_load_without_reading_its_data(tmp_path, capsys, monkeypatch):
    """A `.pth` VAE (as Wan2.1_VAE.pth) counted no weights in the check before a load (None: "a pickled
    file has no header"), so `--max-memory` judged a smaller job than the loaded check does. Its
    tensors' sizes now come from its pickle, storages memory-mapped and never read."""
    import os

    import pytest
    import torch
    from safetensors.torch import load_file

    from showo2_cli import api
    from showo2_cli.cli import generate, understand
    from showo2_cli.errors import ResourceError
    from showo2_cli.loading import load
    from showo2_cli.modeling.vae import WanVAE
    from showo2_cli.modeling.vae_files import header_sizes

    monkeypatch.delenv("SHOWO2_MAX_MEMORY_GB", raising=False)
    monkeypatch.delenv("SHOWO2_VAE", raising=False)
    src = tmp_path / "vae8.safetensors"
    from safetensors.torch import save_file

    save_file({k: t.contiguous() for k, t in WanVAE.random(base_dim=8, seed=1).model.state_dict().items()}, str(src))
    pth = tmp_path / "Wan2.1_VAE.pth"
    torch.save(load_file(str(src)), pth)
    assert header_sizes(pth) == header_sizes(src) and header_sizes(pth)[0] == 8
    image = tmp_path / "in.png"
    Image.new("RGB", (32, 32), (90, 90, 90)).save(image)
    loaded = load("demo", vae=pth)
    with pytest.raises(ResourceError) as e:
        api.caption(loaded, str(image), api.CaptionOptions(max_new_tokens=2, max_memory_gb=0.006))
    after = str(e.value)
    assert after.startswith("encoding an image at 64x64 needs about 7.7 MB (5.8 MB of weights, 1.9 MB to run)")

    def spy(*args, **kwargs):  # the commands' load: never reached
        raise AssertionError("the weights were read")

    monkeypatch.setattr(understand, "load_model", spy)
    monkeypatch.setattr(generate, "load_model", spy)
    capsys.readouterr()
    assert main(["caption", str(image), "--vae", str(pth), "--max-memory", "0.006"]) == 6
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"showo2: error: {after}"
    # its data is never read: of a 40 MB pickle dropped from the page cache, sizing it brings back
    # under 1 MB (the zip directory and the pickle; torch.load without mmap: all 40 MB)
    big = tmp_path / "big.pth"
    torch.save({"encoder.conv_in.weight": torch.zeros(8, 3, 3, 3, 3), "decoder.big": torch.ones(10_000_000)}, big)
    fd = os.open(big, os.O_RDONLY)
    os.fsync(fd)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(fd)
    if _resident(big) * 4096 > 1_000_000:
        pytest.skip("this file system keeps the file in memory (tmpfs?): its pages cannot be told")
    base, counts = header_sizes(big)
    assert (base, counts["decoder"]) == (8, 10_000_000)
    assert _resident(big) * 4096 < 1_000_000, _resident(big)


def test_sizes_are_judged_by_the_models_patch_size_before_it_loads(tmp_path_factory, tmp_path, monkeypatch, capsys):
    """The check before a load took every model's sizes as the released 16 px: `t2i --size 48` on a
    patch_size 4 model (multiples of 32) was refused only once the model had loaded, and `--size 40`
    on a patch_size 1 model (multiples of 8) was refused though the model takes it (so was `/t2i` in
    chat). The model's config.json, at hand, decides now."""
    import io

    from showo2_cli.chat import Conversation
    from showo2_cli.cli import generate
    from showo2_cli.cli.chat import ChatSession
    from showo2_cli.loading import init_model, load
    from showo2_cli.specs import get_spec

    models = tmp_path_factory.mktemp("patches")
    p4, p1 = models / "p4", models / "p1"
    init_model(get_spec("tiny").replace(patch_size=4), p4, seed=0, vae_base_dim=4)
    init_model(get_spec("tiny").replace(patch_size=1), p1, seed=0, vae_base_dim=4)
    real_load = generate.load_model

    def spy(*args, **kwargs):  # the command's load: never reached
        raise AssertionError("the weights were read")

    monkeypatch.setattr(generate, "load_model", spy)
    out = tmp_path / "x.png"
    assert main(["t2i", "a red circle", "-m", str(p4), "--size", "48", "--steps", "2", "-o", str(out)]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == \
        "showo2: error: --size sides must be multiples of 32 (VAE x patch), got 48x48"
    monkeypatch.setenv("SHOWO2_MODEL", str(p4))  # the model the environment names, likewise
    assert main(["t2i", "a red circle", "--size", "48", "--steps", "2", "-o", str(out)]) == 2
    assert "multiples of 32" in capsys.readouterr().err and not out.exists()
    monkeypatch.setattr(generate, "load_model", real_load)
    assert main(["t2i", "a red circle", "-m", str(p1), "--size", "40", "--steps", "2", "--seed", "1",
                 "-o", str(out)]) == 0
    with Image.open(out) as im:
        assert im.size == (40, 40)
    monkeypatch.chdir(tmp_path)
    err = io.StringIO()
    session = ChatSession(Conversation(load(p1)), out=io.StringIO(), err=err)
    assert session.handle("/t2i a red circle --steps 2 --size 24x40 -o chat.png")
    assert err.getvalue() == ""
    with Image.open(tmp_path / "chat.png") as im:
        assert im.size == (24, 40)


def test_vae_is_taken_as_typed_and_an_empty_one_is_refused(hub, tmp_path, monkeypatch, capsys):  # noqa: F811
    """`--vae` was a Path: `./acme/vae` (a folder meant, mistyped) became `acme/vae`, which now reads as a
    repo id, and `--vae ""` became `.`, the current folder: its first weight file was loaded as the VAE
    (any `.pth` there) and recorded as "vae": ".". Now text as typed, and an empty one is one line."""
    import torch

    monkeypatch.chdir(tmp_path)
    torch.save({"x": torch.zeros(2)}, tmp_path / "stray.pth")
    out = tmp_path / "x.png"
    args = ["t2i", "a red circle", "--steps", "2", "-o", str(out)]
    assert main([*args, "--vae", "./acme/vae"]) == 4
    assert capsys.readouterr().err.strip().splitlines()[-1] == "showo2: error: VAE './acme/vae' does not exist"
    assert main([*args, "--vae", ""]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == \
        "showo2: error: --vae: the name is empty (give a VAE file or folder, or a Hugging Face repo id)"
    assert hub.requests == [] and not out.exists()


def test_a_hugging_face_cache_entry_given_as_the_model_names_what_to_give(tmp_path, capsys):
    """`-m ~/.cache/huggingface/hub/models--owner--name` (the folder `hf download` fills) was "not a
    Show-o2 model folder: it has no config.json", with no word of what to give instead."""
    entry = tmp_path / "models--acme--m"
    shutil.copytree(Path(__file__).parents[1] / "src" / "showo2_cli" / "assets" / "demo", entry / "snapshots" / "abc")
    assert main(["t2i", "a red circle", "-m", str(entry), "-o", str(tmp_path / "x.png"), "--steps", "2"]) == 4
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"showo2: error: '{entry}' is not a Show-o2 model folder: it has no config.json (it is a Hugging Face "
        "cache's entry of 'acme/m': give a folder under its snapshots/, or the repo id acme/m where that cache is "
        "HF_HUB_CACHE)")
