"""What the command line did that the Python API could not (probe FL): the same logic, once, in the core.

* ``showo2 decode``'s whole job (its checks of the output, the notices, the tiles a generated output
  was decoded in, the record written in the output) is :func:`api.decode_file`; the command calls it.
* Replacing the current folder (or one holding it) with a model folder is refused by every
  model-folder writer (``init_model``, ``save_folder``, ``save_pretrained``), not only by
  ``showo2 init``/``convert``: through the API it deleted the folder and everything in it.
* ``caption``'s notices (sampling options a greedy decode ignores, a video given to a checkpoint
  not trained for video understanding) are the result's ``notices``; a conversation says the latter.
* ``bind_socket`` checks the port as ``serve --port`` does (70000 listened on 4464).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from showo2_cli import api
from showo2_cli import media as M
from showo2_cli.cli import main
from showo2_cli.errors import OutputError, UsageError


@pytest.fixture(scope="module")
def vae(tiny_model_dir):
    model, name = api.resolve_vae(str(tiny_model_dir), parts=("decoder",))
    return model, name


def test_decode_file_is_the_commands_decode(tiny_model_dir, vae, tmp_path, capsys):
    torch.manual_seed(0)
    foreign = tmp_path / "foreign.safetensors"  # another tool's latents: no showo2 metadata
    save_file({"latents": (torch.randn(16, 1, 4, 6) * 0.5).contiguous()}, str(foreign))
    cli_png = tmp_path / "cli.png"
    assert main(["decode", str(foreign), "-o", str(cli_png), "--model", str(tiny_model_dir), "--quiet"]) == 0
    capsys.readouterr()
    model, name = vae
    model.tiling = "on"
    said = []
    result = api.decode_file(foreign, model, tmp_path / "api.png", vae_name=name, on_notice=said.append)
    assert model.tiling == "on"  # the caller's VAE is given back as it was
    assert result.output == tmp_path / "api.png" and result.frames.shape == (1, 32, 48, 3)
    assert said == result.notices and len(said) == 1 and "has no showo2 metadata" in said[0]
    assert np.array_equal(np.asarray(M.read_image(cli_png)), np.asarray(M.read_image(result.output)))
    cli_record, api_record = M.read_png_metadata(cli_png), M.read_png_metadata(result.output)
    assert api_record == cli_record == {**result.record}
    assert result.record == {"decoded_from": str(foreign), "vae": name, "fps": 8.0}
    # default name beside the file, never replacing one: foreign.png, then foreign-1.png
    model.tiling = "auto"
    first = api.decode_file(foreign, model).output
    second = api.decode_file(foreign, model).output
    assert (first.name, second.name) == ("foreign.png", "foreign-1.png")


def test_decode_file_refuses_as_the_command_does(vae, tmp_path):
    model, _ = vae
    encoded = tmp_path / "enc.safetensors"
    z = torch.zeros(16, 2, 4, 4)
    api.save_latents(encoded, z, {"format": "showo2-latents", "version": 1, "kind": "video"})
    with pytest.raises(UsageError, match="holds normalised latents .*: drop --raw"):
        api.decode_file(encoded, model, tmp_path / "out.mp4", raw=True)
    with pytest.raises(UsageError, match="is an image but the latents hold 5 frames"):
        api.decode_file(encoded, model, tmp_path / "out.png")
    with pytest.raises(UsageError, match="fps"):
        api.decode_file(encoded, model, tmp_path / "out.mp4", fps=1000)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["enc.safetensors"]  # nothing written


@pytest.mark.parametrize("where", ["cwd", "parent"])
def test_model_folder_writers_never_replace_the_current_folder(tiny_model_dir, tmp_path, monkeypatch, where):
    from showo2_cli.loading import init_model

    here = tmp_path / "project" / "work"
    here.mkdir(parents=True)
    (here / "notes.txt").write_text("mine")
    monkeypatch.chdir(here)
    target = here if where == "cwd" else here.parent
    with pytest.raises(OutputError, match="it is the current folder or holds it"):
        init_model("tiny", target, overwrite=True)
    pipe = api.Showo2Pipeline.from_pretrained(str(tiny_model_dir))
    with pytest.raises(OutputError, match="it is the current folder or holds it"):
        pipe.save_pretrained(target, overwrite=True)
    assert (here / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in here.iterdir()) == ["notes.txt"]
    assert sorted(p.name for p in here.parent.iterdir()) == ["work"]


@pytest.fixture(scope="module")
def image_only(tiny_model_dir):
    """The tiny model as a checkpoint not trained for video understanding (the released 1.5B/7B)."""
    from showo2_cli.specs import VIDEO_UND

    model = api.load(tiny_model_dir)
    model.spec = model.spec.replace(tasks=tuple(t for t in model.spec.tasks if t != VIDEO_UND))
    return model


def _clip():
    return [np.full((32, 32, 3), 40 * i, np.uint8) for i in range(5)]  # a video's frames, in memory


def test_caption_result_says_what_the_command_says(image_only):
    from showo2_cli.options import CaptionOptions

    result = api.caption(image_only, _clip(), CaptionOptions(max_new_tokens=2, top_k=5, frames=5))
    assert result.kind == "video"
    assert result.notices == [
        "--top-k has no effect without --temperature above 0 (decoding is greedy)",
        "note: this checkpoint was not trained for video understanding (use a -w-video-und model)"]
    image = api.caption(image_only, np.zeros((32, 32, 3), np.uint8), CaptionOptions(max_new_tokens=2))
    assert image.notices == []


def test_a_conversation_says_a_video_is_beyond_its_checkpoint(image_only):
    from showo2_cli.chat import Conversation

    said = []
    conv = Conversation(image_only, on_notice=said.append)
    conv.attach(np.zeros((32, 32, 3), np.uint8))
    assert said == conv.notices == []
    conv.attach(_clip())
    assert said == conv.notices == [
        "note: this checkpoint was not trained for video understanding (use a -w-video-und model)"]


@pytest.mark.parametrize("port", [70000, 65536, -1])
def test_bind_socket_checks_the_port_as_serve_does(port):
    from showo2_cli import serve as S

    # 70000 listened on 4464 (the address lookup takes it modulo 65536); -1 blamed the host
    with pytest.raises(UsageError, match=f"^--port must be between 0 and 65535, got {port}$"):
        S.bind_socket("127.0.0.1", port)


def test_encode_file_is_the_commands_encode(tiny_model_dir, tmp_path, capsys):
    from showo2_cli.options import EncodeOptions

    picture = tmp_path / "pic.png"
    M.write_image(picture, np.random.default_rng(0).integers(0, 256, (40, 56, 3), dtype=np.uint8))
    cli_out = tmp_path / "cli.latents.safetensors"
    assert main(["encode", str(picture), "-o", str(cli_out), "--model", str(tiny_model_dir), "--size", "32",
                 "--seed", "3", "--quiet"]) == 0
    capsys.readouterr()
    model, name = api.resolve_vae(str(tiny_model_dir), parts=("encoder",))
    opts = EncodeOptions(size=(32, 32), seed=3)
    first = api.encode_file(picture, model, None, opts, vae_name=name)
    second = api.encode_file(picture, model, None, opts, vae_name=name)  # a default name never replaces a file
    assert (first.output.name, second.output.name) == ("pic.png.latents.safetensors", "pic.png.latents-1.safetensors")
    assert first.notices == ["--seed has no effect without --sample (the posterior mean has no noise)"]
    (z_cli, meta_cli), (z_api, meta_api) = api.load_latents(cli_out), api.load_latents(first.output)
    assert torch.equal(z_cli, z_api) and meta_cli == meta_api == first.metadata
    with pytest.raises(UsageError, match=r"latents are written as \.safetensors"):
        api.encode_file(picture, model, tmp_path / "out.pt", opts)
    with pytest.raises(UsageError, match="media given in memory has no file"):
        api.encode_file(np.zeros((32, 32, 3), np.uint8), model, None, opts)
    assert not (tmp_path / "out.pt").exists()


def test_save_results_takes_the_commands_fps_range(image_only, tmp_path):
    videos = api.text_to_video(image_only, ["a ball"], api.GenerateOptions(seed=1, steps=2, size=(32, 32), frames=5))
    plans = api.plan_outputs("t2v", tmp_path / "v.mp4", ["a ball"], [0], 1, seed=1)
    for fps in (1000, 0.2):  # both were written; `t2v --fps` refuses them
        with pytest.raises(UsageError, match=f"^--fps must be a number >= 0.5 and <= 240, got {fps}$"):
            api.save_results(videos, plans, "t2v", fps=fps)
    assert list(tmp_path.iterdir()) == []


def test_overwrite_replaces_only_a_model_folder(tmp_path, monkeypatch):
    """Probe FP: ``showo2 init -o ~ --overwrite`` run from outside the home folder replaced the whole
    home folder (everything in it deleted) with a tiny model; so would any folder not holding the cwd."""
    from showo2_cli.model_files import check_output_folder

    home, work, model, empty = (tmp_path / n for n in ("home", "work", "model", "empty"))
    for folder in (home / "docs", work, model, empty):
        folder.mkdir(parents=True)
    (home / "docs" / "thesis.txt").write_text("mine")
    (work / "notes.txt").write_text("mine")
    (model / "config.json").write_text("{}")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path / "empty")
    with pytest.raises(OutputError, match="it is the home folder or holds it"):
        check_output_folder(home, overwrite=True)
    (tmp_path / "link").symlink_to(work)
    for folder in (work, tmp_path / "link", home / "docs"):
        with pytest.raises(OutputError, match=r"not a model folder \(no config.json or model_index.json in it\) and is not empty"):
            check_output_folder(folder, overwrite=True)
    check_output_folder(model, overwrite=True)  # a model folder and an empty one are replaced
    check_output_folder(tmp_path / "new")
    monkeypatch.chdir(tmp_path)
    check_output_folder(empty, overwrite=True)
    assert (home / "docs" / "thesis.txt").read_text() == "mine" and (work / "notes.txt").read_text() == "mine"
