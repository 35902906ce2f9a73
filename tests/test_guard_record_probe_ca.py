"""Probe CA: the memory guard counts what a request runs, and chat's ``/save`` records the load as
every other output does. A question of text alone (a chat's, a server request's without an image)
counts no VAE encoder; the command line's check before a load counts the VAE the load will read
(``--vae``, ``$SHOWO2_VAE``), from its header; ``/save`` carries :meth:`Showo2.record`."""

from __future__ import annotations

import base64
import io
import json
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest

import showo2_cli
from conftest import write_adapter
from showo2_cli import api
from showo2_cli.chat import Conversation
from showo2_cli.cli import main
from showo2_cli.errors import ModelError, ResourceError
from showo2_cli.loading import load
from showo2_cli.options import CaptionOptions, RuntimeOptions

DEMO = Path(showo2_cli.__file__).parent / "assets" / "demo"
IMAGE = np.full((32, 32, 3), 90, np.uint8)


@pytest.fixture(scope="module")
def demo():
    return load("demo")


def _refused(run) -> str:
    with pytest.raises(ResourceError) as e:
        run()
    return str(e.value)


def test_a_text_question_counts_no_vae_encoder(demo, monkeypatch):
    from showo2_cli.footprint import weights_gb

    monkeypatch.delenv("SHOWO2_MAX_MEMORY_GB", raising=False)
    # the demo's network without its flow head is 4.19 MB in fp32; with the VAE's encoder, 10.35 MB
    assert weights_gb(demo, ("lm_head",), ())[0] == pytest.approx(0.0041902, abs=1e-7)
    assert weights_gb(demo, ("lm_head",), ("encoder",))[0] == pytest.approx(0.0103469, abs=1e-7)

    def chat(limit):
        return Conversation(demo, options=CaptionOptions(max_new_tokens=2, max_memory_gb=limit))

    said = _refused(lambda: chat(0.004).ask("What is red?"))
    assert said.startswith("a conversation of 23 prompt tokens needs about 4.5 MB (4.2 MB of weights, ")  # old: 10.3
    # under 9 MB a question of text alone is answered, while an image is refused before the VAE encodes it
    text = chat(0.009)
    assert text.ask("What is red?") and len(text.turns) == 1  # old: refused, "10.7 MB (10.3 MB of weights"
    assert _refused(lambda: text.attach(IMAGE)) == (
        "encoding an image at 64x64 needs about 14.0 MB (10.3 MB of weights, 3.6 MB to run), more than the "
        "9.0 MB allowed by --max-memory (raise the limit with --max-memory or SHOWO2_MAX_MEMORY_GB)")
    # and a question about an image (attached under no limit) counts the encoder that made its tokens
    seen = chat(0)
    seen.attach(IMAGE)
    seen.options.max_memory_gb = 0.009
    assert "(10.3 MB of weights, " in _refused(lambda: seen.ask("What is it?"))


def test_the_server_answers_text_alone_under_a_limit_that_refuses_an_image(monkeypatch):
    from fastapi.testclient import TestClient
    from PIL import Image

    from showo2_cli.serve import ServerConfig, create_app

    monkeypatch.delenv("SHOWO2_MAX_MEMORY_GB", raising=False)
    model = load("demo", runtime=RuntimeOptions(max_memory_gb=0.009))  # serve --max-memory 0.009
    buf = io.BytesIO()
    Image.fromarray(IMAGE).save(buf, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    ask = {"type": "text", "text": "What is red?"}
    with TestClient(create_app(model, ServerConfig(model_id="demo"))) as http:
        text = http.post("/v1/chat/completions", json={"model": "demo", "max_tokens": 2,
                                                       "messages": [{"role": "user", "content": [ask]}]})
        assert text.status_code == 200 and text.json()["choices"][0]["message"]["content"]  # old: 422
        image = http.post("/v1/chat/completions", json={"model": "demo", "max_tokens": 2, "messages": [
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}, ask]}]})
        assert image.status_code == 422
        assert "needs about 14.0 MB (10.3 MB of weights" in image.json()["error"]["message"]


def _vae_of_another_size(path: Path) -> Path:
    """A Wan2.1 VAE of base_dim 8 (the demo's is 16) in one safetensors file, no config beside it."""
    from safetensors.torch import save_file

    from showo2_cli.modeling.vae import WanVAE

    vae = WanVAE.random(base_dim=8, seed=1)
    save_file({k: t.contiguous() for k, t in vae.model.state_dict().items()}, str(path))
    return path


def _cli_refusal(capsys, args) -> str:
    capsys.readouterr()
    assert main(args) == 6
    return capsys.readouterr().err.strip().splitlines()[-1].removeprefix("showo2: error: ")


def test_the_check_before_loading_counts_the_vae_the_load_reads(tmp_path, capsys, monkeypatch):
    from PIL import Image

    from showo2_cli.cli import generate, understand

    monkeypatch.delenv("SHOWO2_MAX_MEMORY_GB", raising=False)
    monkeypatch.delenv("SHOWO2_VAE", raising=False)
    vae = _vae_of_another_size(tmp_path / "vae8.safetensors")
    image = tmp_path / "in.png"
    Image.fromarray(IMAGE).save(image)
    loaded = load("demo", vae=vae)
    assert loaded.vae.base_dim == 8
    caption = _refused(lambda: api.caption(loaded, str(image), api.CaptionOptions(max_new_tokens=2,
                                                                                  max_memory_gb=0.006)))
    assert caption.startswith("encoding an image at 64x64 needs about 7.7 MB (5.8 MB of weights, 1.9 MB to run)")
    t2i = _refused(lambda: api.text_to_image(loaded, "a red circle", api.GenerateOptions(
        steps=2, size=(64, 64), max_memory_gb=0.012)))
    assert t2i.startswith("generating 1 image(s) at 64x64 needs about 16.9 MB (13.6 MB of weights, 3.4 MB to run)")

    # a VAE the load cannot read is said as the load says it, not refused on a guess of its size
    # (old: "needs about 14.0 MB (10.3 MB of weights, ...", the model's own VAE's figures, exit 6)
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(vae.read_bytes()[:2000])
    capsys.readouterr()
    assert main(["caption", str(image), "--vae", str(broken)]) == 4
    unreadable = capsys.readouterr().err.strip().splitlines()[-1]
    assert main(["caption", str(image), "--vae", str(broken), "--max-memory", "0.006"]) == 4
    assert capsys.readouterr().err.strip().splitlines()[-1] == unreadable and "broken.safetensors" in unreadable

    real_load = understand.load_model

    def spy(*args, **kwargs):  # the commands' load: never reached
        raise AssertionError("the weights were read")

    monkeypatch.setattr(understand, "load_model", spy)
    monkeypatch.setattr(generate, "load_model", spy)
    # old: judged on the demo's own VAE, "14.0 MB (10.3 MB of weights, 3.6 MB to run)" and "26.4 MB (19.7 MB ..."
    assert _cli_refusal(capsys, ["caption", str(image), "--vae", str(vae), "--max-memory", "0.006"]) == caption
    assert _cli_refusal(capsys, ["t2i", "a red circle", "-o", str(tmp_path / "x.png"), "--steps", "2",
                                 "--size", "64", "--vae", str(vae), "--max-memory", "0.012"]) == t2i
    # a model without a VAE of its own takes $SHOWO2_VAE: judged on it, its base_dim from its header
    # (old: a file's base_dim was taken as 96, the Wan2.1 VAE's: "26.4 MB (5.8 MB of weights, 20.7 MB to run)")
    bare = shutil.copytree(DEMO, tmp_path / "bare", ignore=shutil.ignore_patterns("vae"))
    monkeypatch.setenv("SHOWO2_VAE", str(vae))
    assert _cli_refusal(capsys, ["caption", str(image), "-m", str(bare), "--max-memory", "0.006"]) == caption
    assert not (tmp_path / "x.png").exists()
    from showo2_cli.modeling.vae_files import header_sizes

    base_dim, counts = header_sizes(vae)  # from the header alone
    assert base_dim == 8 and counts["encoder"] + counts["quant_conv"] == 400400
    # nor is a special file opened for its header (a FIFO would wait for a writer for ever): a socket
    # file, which fails at once where opened, gives the load's "not a regular file", not the open's error
    special = tmp_path / "s.safetensors"
    monkeypatch.setattr(understand, "load_model", real_load)
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(special))
        with pytest.raises(ModelError, match="is not a regular file"):
            header_sizes(special)
        assert main(["caption", str(image), "--vae", str(special), "--max-memory", "0.006"]) == 4
        assert capsys.readouterr().err.strip().endswith(f"weight file '{special}' is not a regular file")


LOAD_FIELDS = ("model", "model_revision", "lora", "vae", "quantize", "dtype")
#: the fields of a transcript saved before this probe (what a reader of one reads)
OLD_FIELDS = ("format", "version", "showo2_version", "model", "lora", "system", "template", "mask_mode",
              "max_context", "turns", "pending_media", "notices", "saved_at")


def test_save_records_the_load_as_t2i_json_does(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("SHOWO2_MAX_MEMORY_GB", raising=False)
    adapter = write_adapter(DEMO, tmp_path / "a", ["q_proj", "fc1", "linear"], 1)
    load_options = ["--lora", str(adapter), "--lora-weight", "0.5", "--dtype", "bf16", "--quantize", "int8wo"]
    capsys.readouterr()
    assert main(["t2i", "a red circle", "-o", str(tmp_path / "x.png"), "--steps", "2", "--seed", "1",
                 "--json", *load_options]) == 0
    made = json.loads(capsys.readouterr().out)["outputs"][0]
    saved = tmp_path / "chat.json"
    monkeypatch.setattr("sys.stdin", io.StringIO(f"What is red?\n/save {saved}\n"))
    assert main(["chat", "--max-new-tokens", "2", *load_options]) == 0
    transcript = json.loads(saved.read_text())
    record = {k: made[k] for k in LOAD_FIELDS if k in made}
    assert record["dtype"] == "bf16" and record["quantize"] == "int8wo" and record["lora"][0]["weight"] == 0.5
    assert {k: transcript[k] for k in LOAD_FIELDS if k in transcript} == record  # old: model and lora alone
    # a transcript keeps every field of the old format, so a reader of one reads the other
    assert transcript["format"] == "showo2-chat" and transcript["version"] == 1
    assert set(OLD_FIELDS) <= set(transcript) and transcript["turns"][0]["question"] == "What is red?"


def test_a_vae_headers_sizes_are_the_loaded_vaes_in_either_layout(tmp_path):
    """The header's counts, by the diffusers module each tensor loads into, are the loaded VAE's:
    a diffusers-layout file and the original Wan layout (``conv1``/``conv2`` are the quant convs)."""
    from conftest import shared_dir
    from showo2_cli.modeling.vae_files import header_sizes, load_vae

    files = [_vae_of_another_size(tmp_path / "vae8.safetensors")]
    original = shared_dir("parity", "SHOWO2_PARITY_DIR") / "vae" / "wan21_vae.safetensors"
    if original.is_file():  # (the parity fixtures' tiny Wan2.1 VAE, in the original layout)
        files.append(original)
    for path in files:
        vae = load_vae(path)
        loaded: dict[str, int] = {}
        for name, p in vae.model.named_parameters():
            loaded[name.split(".")[0]] = loaded.get(name.split(".")[0], 0) + p.numel()
        assert header_sizes(path) == (vae.base_dim, loaded)
