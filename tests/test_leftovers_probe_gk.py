"""Probe GK: small leftovers users meet (top-k 0, output tensors' device, the server's edges,
HF_HOME that names no folder, a config without the latent grid, a closed stdout)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from showo2_cli.errors import UsageError
from showo2_cli.options import CaptionOptions, TextSampling


# ---- 1. top_k=0 is "no top-k" everywhere (transformers' generate, llama.cpp; vLLM's -1 or 0) ----
def test_top_k_zero_means_no_top_k_in_the_options_and_the_decoder():
    from transformers import TemperatureLogitsWarper

    from showo2_cli.text_decoding import choose_token, logits_processors

    TextSampling(temperature=0.7, top_k=0).validate()  # was: --top-k must be between 1 and 10000000, got 0
    CaptionOptions(top_k=0, temperature=0.7).sampling().validate()
    kinds = [type(p) for p in logits_processors(TextSampling(temperature=0.7, top_k=0), 10)]
    assert kinds == [TemperatureLogitsWarper]  # no TopKLogitsWarper (which refuses 0)
    gen = torch.Generator().manual_seed(0)
    logits = torch.tensor([2.0, 1.9, 1.8, 1.7])
    drawn = {choose_token(logits, TextSampling(temperature=50.0, top_k=0), gen) for _ in range(200)}
    assert drawn == {0, 1, 2, 3}  # every token stays drawable
    assert TextSampling(top_k=0).unused_sampling_options() == []  # no top-k given: nothing to warn of
    with pytest.raises(UsageError, match=r"^--top-k must be between 0 and 10000000, got -1$"):
        TextSampling(temperature=0.7, top_k=-1).validate()


def test_top_k_zero_in_the_cli_the_pipeline_and_the_server(tiny_pipe, tmp_path, capsys):
    from PIL import Image

    from showo2_cli.cli import main
    from showo2_cli.serve.requests import parse_chat
    from showo2_cli.serve_config import ServerConfig

    Image.new("RGB", (64, 64), "white").save(tmp_path / "white.png")
    args = ["caption", str(tmp_path / "white.png"), "--model", "demo", "--max-new-tokens", "3", "--seed", "4"]
    assert main([*args, "--temperature", "0.7", "--top-k", "0"]) == 0
    zero = capsys.readouterr()
    assert zero.err == ""
    assert main([*args, "--temperature", "0.7"]) == 0
    assert capsys.readouterr().out == zero.out  # the same draw as no top-k at all
    assert main([*args, "--top-k", "0"]) == 0
    assert "--top-k" not in capsys.readouterr().err  # (--seed is named: it has no effect)
    image = np.full((32, 32, 3), 90, np.uint8)
    assert tiny_pipe.caption(image, "What?", max_new_tokens=3, temperature=0.7, top_k=0, seed=1) == \
        tiny_pipe.caption(image, "What?", max_new_tokens=3, temperature=0.7, seed=1)
    user = {"role": "user", "content": "hi"}
    assert parse_chat({"messages": [user], "top_k": 0}, ServerConfig()).top_k is None


# ---- 2. output_type "pt" / "latent" tensors are on the pipeline's device (diffusers') ----------
def test_pipeline_tensors_come_back_on_the_pipelines_device(tiny_pipe, monkeypatch):
    """They were made on the CPU whatever the device (``torch.from_numpy``, the results' CPU latents);
    diffusers returns them on its execution device. The meta device stands in for a GPU here: the
    tensors follow ``pipe.device``, whatever it is, and the results keep CPU latents for saving."""
    call = dict(num_inference_steps=2, height=32, width=32, seed=1)
    for kind in ("pt", "latent"):
        assert tiny_pipe("a", output_type=kind, **call).images.device == tiny_pipe.device
    plain = tiny_pipe("a", output_type="latent", **call)
    monkeypatch.setattr(type(tiny_pipe), "device", property(lambda self: torch.device("meta")))
    for kind in ("pt", "latent"):
        out = tiny_pipe("a", output_type=kind, **call)
        assert out.images.device.type == "meta"
        assert out.results[0].latents.device.type == "cpu"
        assert out.images.shape == (plain.images.shape if kind == "latent" else (1, 3, 32, 32))
    assert isinstance(tiny_pipe("a", output_type="np", **call).images, np.ndarray)  # np and PIL: on the host


# ---- 3. the server: `modalities: []`, an absolute-form request line ---------------------------
def test_an_empty_modalities_list_asks_for_nothing_unusual():
    from showo2_cli.serve.errors import ApiError
    from showo2_cli.serve.requests import parse_chat
    from showo2_cli.serve_config import ServerConfig

    user = {"role": "user", "content": "hi"}
    for modalities in ([], ["text"], None):  # [] was a 400 unsupported_parameter, as ["audio"]
        assert parse_chat({"messages": [user], "modalities": modalities}, ServerConfig()).turns
    with pytest.raises(ApiError) as e:
        parse_chat({"messages": [user], "modalities": ["text", "audio"]}, ServerConfig())
    assert (e.value.status, e.value.param) == (400, "modalities")


def test_an_absolute_form_target_is_served_by_its_path():
    """RFC 9112 3.2.2: a server MUST accept the absolute-form (a client told this server is its proxy
    sends it); h11 passed ``http://host/v1/models`` on as the path, a 404."""
    import json
    import socket

    pytest.importorskip("fastapi")
    from conftest import serving
    from showo2_cli.loading import load
    from showo2_cli.serve.app import CleanPath

    def raw(url: str, target: str) -> tuple[int, bytes]:
        host, port = url.rsplit("/", 1)[1].split(":")
        with socket.create_connection((host, int(port)), timeout=30) as s:
            s.sendall(f"GET {target} HTTP/1.1\r\nHost: elsewhere\r\nConnection: close\r\n\r\n".encode())
            out = b""
            while chunk := s.recv(65536):
                out += chunk
        head, _, body = out.partition(b"\r\n\r\n")
        return int(head.split()[1]), body

    with serving(load("demo")) as url:
        address = url.split("//", 1)[1]
        for target in (f"http://{address}/v1/models", "HTTP://example.com:80/v1//models/", "https://x/v1/models?a=1"):
            status, body = raw(url, target)
            assert status == 200, (target, body[:200])
            assert json.loads(body)["data"][0]["id"] == "demo"
        assert raw(url, "http://x/v1/nothing")[0] == 404  # routed by its path: a path served nowhere
        assert raw(url, "/v1/models")[0] == 200
    clean = CleanPath.cleaned
    assert clean({"type": "http", "path": "http://h", "raw_path": b"http://h"})["path"] == "/"
    assert clean({"type": "http", "path": "http://h/a%2Fb", "raw_path": b"http://h/a%2Fb"}) == \
        {"type": "http", "path": "/a/b", "raw_path": b"/a%2Fb"}
    assert clean({"type": "http", "path": "/v1/http://x"})["path"] == "/v1/http:/x"  # only a target's start


# ---- 4. HF_HOME / HF_HUB_CACHE naming no folder ----------------------------------------------
@pytest.mark.parametrize("variable", ["HF_HOME", "HF_HUB_CACHE"])
@pytest.mark.parametrize("kind", ["fifo", "file", "under a file"])
def test_a_hub_variable_naming_no_folder_says_so(variable, kind, tmp_path, monkeypatch, capsys):
    """HF_HOME a FIFO or a file was "the token file '.../token' ... cannot be read (Not a directory):
    write the token to it again (hf auth login)"; HF_HUB_CACHE one, "not in the cache"."""
    import os

    from huggingface_hub import constants

    from showo2_cli.cli import main
    from showo2_cli.errors import ModelError
    from showo2_cli.hub_auth import check_hub_folders

    (tmp_path / "file").write_text("x")
    os.mkfifo(tmp_path / "fifo")
    target = tmp_path / {"fifo": "fifo", "file": "file", "under a file": "file/sub"}[kind]
    home = target if variable == "HF_HOME" else tmp_path / "home"
    monkeypatch.setenv(variable, str(target))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(constants, "HF_HOME", str(home))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(target if variable == "HF_HUB_CACHE" else home / "hub"))
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(home / "token"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing is reached either way
    what = {"fifo": "it is a FIFO", "file": "it is a regular file", "under a file": "in it is a regular file"}[kind]
    with pytest.raises(ModelError, match=f"^{variable} names '.*', which is no folder \\(.*{what}\\)"):
        check_hub_folders()
    assert main(["pull", "someone/model"]) != 0
    err = capsys.readouterr().err
    assert f"{variable} names '" in err and "token" not in err and len(err.strip().splitlines()) == 1, err
    assert target.exists() or kind == "under a file"  # nothing was made or replaced
    assert (tmp_path / "file").read_text() == "x"


def test_hub_folders_that_do_not_exist_yet_are_fine(tmp_path, monkeypatch):
    from huggingface_hub import constants

    from showo2_cli.hub_auth import check_hub_folders

    monkeypatch.setattr(constants, "HF_HOME", str(tmp_path / "new" / "home"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "new" / "home" / "hub"))
    check_hub_folders()
    assert not (tmp_path / "new").exists()


# ---- 5. an official config.json without its token grid --------------------------------------
@pytest.mark.parametrize("removed", [("image_latent_height",), ("image_latent_width",),
                                     ("image_latent_height", "image_latent_width"), ("null",)])
def test_an_official_config_without_its_token_grid_is_refused(tmp_path, removed, capsys):
    """It was read as 27 x 27 (432 px; a missing width as the height) where the official class
    reads its constructor's default 16 x 16: a silent difference (the position table used as it is
    here, interpolated there, for a grid of 729 tokens that is not 27 x 27)."""
    import json
    import shutil
    from pathlib import Path

    from showo2_cli.cli import main
    from showo2_cli.errors import ModelError
    from showo2_cli.model_config import spec_from_files
    from showo2_cli.model_files import find_files
    from showo2_cli.weights import read_state_dict

    variant = Path(__file__).resolve().parent / "data" / "parity_sets" / "variant-g"
    folder = tmp_path / "official"
    shutil.copytree(variant / "model", folder)
    config = json.loads((folder / "config.json").read_text())
    if removed == ("null",):
        config["image_latent_width"] = None  # the official constructor: arange(16 * None), a TypeError
        removed = ("image_latent_width",)
    else:
        for key in removed:
            del config[key]
    (folder / "config.json").write_text(json.dumps(config))
    vae = variant / "vae" / "wan21_vae.safetensors"
    message = f"{' and '.join(removed)} {'is' if len(removed) == 1 else 'are'} missing: the official class reads 16"
    with pytest.raises(ModelError, match=message):
        files = find_files(folder, vae=vae, local_files_only=True)
        spec_from_files(files, read_state_dict(files.weights))
    assert main(["info", str(folder), "--vae", str(vae)]) != 0
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err
    config.update(image_latent_height=3, image_latent_width=3)  # as variant-g records it: loads
    (folder / "config.json").write_text(json.dumps(config))
    assert main(["info", str(folder), "--vae", str(vae)]) == 0


# ---- 6. a closed stdout where stdout is the result -------------------------------------------
def test_a_closed_stdout_is_refused_where_it_is_the_result(monkeypatch, tmp_path, capsys):
    """``showo2 caption x.png >&-`` exited 0 and the answer was lost (GNU tools: "write error: Bad
    file descriptor", exit 1). Where stdout is the whole result (answers, info, the list of models,
    any --json object) a closed one is the output error (5), before any work; path lines after
    written files and --version only inform, and stay the null device (probe C's choice)."""
    import sys

    from showo2_cli.cli import main

    monkeypatch.setattr(sys, "stdout", None)
    said = "standard output is closed (>&-), and {} would be lost there: send it to a file, or to /dev/null to drop it"
    for args, what in ((["caption", str(tmp_path / "absent.png"), "--model", str(tmp_path / "no-model")], "the answers"),
                       (["chat", "--model", str(tmp_path / "no-model")], "the answers"),
                       (["info", "demo"], "the model's details"), (["models"], "the list of models"),
                       (["t2i", "a cat", "-m", "demo", "--steps", "2", "--size", "32", "-o", str(tmp_path / "j.png"),
                         "--json"], "the JSON result (--json)")):
        assert main(args) == 5, args  # before the input, the model or the sampling is looked at
        assert capsys.readouterr().err == f"showo2: error: {said.format(what)}\n"
    assert not (tmp_path / "j.png").exists()
    assert main(["--version"]) == 0
    assert main(["t2i", "a cat", "-m", "demo", "--steps", "2", "--size", "32", "-o", str(tmp_path / "i.png")]) == 0
    assert (tmp_path / "i.png").is_file()  # the file is the result: its path line only informs
    assert sys.stdout is None
    monkeypatch.setattr(sys, "stdout", open(tmp_path / "out.txt", "w"))  # an open stdout: the answer is there
    assert main(["info", "demo", "--json"]) == 0
    sys.stdout.close()
    assert '"spec"' in (tmp_path / "out.txt").read_text()
