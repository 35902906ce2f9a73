"""Probe JC: a new user from nothing, by the README and docs/; and the tokenizers library's own
stdout lines ("Ignored unknown kwarg option ...") kept off a ``--json`` answer."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import showo2_cli
from showo2_cli.tokenizer import add_showo2_tokens, load_tokenizer

DEMO = Path(showo2_cli.__file__).parent / "assets" / "demo"


def _edit_json(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def _first_added(data):
    data["added_tokens"][0]["lstripx"] = False  # a key AddedToken does not know: the Rust library prints it


# Each place of a tokenizer folder that transformers hands to the Rust library as keyword arguments
# (AddedToken(**entry), enable_padding(**padding)): an unknown key there is printed on fd 1 by `tokenizers`.
CHANGES = {
    "tokenizer.json added_tokens": ("tokenizer.json", _first_added),
    "tokenizer_config.json added_tokens_decoder": (
        "tokenizer_config.json",
        lambda d: d.update(added_tokens_decoder={"5": {"content": "<|im_end|>", "special": True, "lstripx": False}})),
    "tokenizer_config.json tokenizer_padding": (
        "tokenizer_config.json",
        lambda d: d.update(tokenizer_padding={"lengthx": None, "pad_id": 0, "pad_token": "[PAD]", "pad_type_id": 0,
                                              "direction": "right", "pad_to_multiple_of": None, "length": None})),
}


@pytest.mark.parametrize("where", list(CHANGES))
def test_a_tokenizer_field_the_rust_library_complains_about_writes_nothing_on_stdout(tmp_path, capfd, where):
    name, change = CHANGES[where]
    for n in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(DEMO / n, tmp_path / n)
    _edit_json(tmp_path / name, change)
    capfd.readouterr()
    tok = load_tokenizer(tmp_path)
    add_showo2_tokens(tok)
    out, err = capfd.readouterr()
    assert out == "", out  # was "Ignored unknown kwarg option lstripx\n" on stdout
    assert "Ignored unknown kwarg option" in err  # the library's word kept, on stderr
    print("still mine")  # stdout is stdout again after the load
    assert capfd.readouterr().out == "still mine\n"


@pytest.mark.slow  # a subprocess run of caption (about 30 s on a shared CPU)
def test_a_json_answer_stays_pure_json_beside_such_a_tokenizer(tmp_path, tiny_model_dir, media_dir):
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    _edit_json(model / "tokenizer.json", _first_added)
    image = next(p for p in sorted(media_dir.iterdir()) if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    run = subprocess.run([sys.executable, "-m", "showo2_cli", "caption", str(image), "-m", str(model), "--json",
                          "--max-new-tokens", "2", "--device", "cpu"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    answer = json.loads(run.stdout)  # was: "Expecting value" (stdout began "Ignored unknown kwarg option lstripx")
    assert isinstance(answer, dict)
    assert "Ignored unknown kwarg option lstripx" in run.stderr
