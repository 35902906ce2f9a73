"""The tokenizer gives the ids the official code's (transformers 4.47) gives for the same files.

The expected ids were taken from the official ``get_text_tokenizer`` (show-o2 ``models/misc.py``)
under transformers 4.47 on these very folders (probe P): it loads ``tokenizer.json`` as written,
normalizer, pre-tokenizer and added tokens included.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from showo2_cli.tokenizer import add_showo2_tokens, encode_text, load_tokenizer

SET_LLM = Path(__file__).parent / "data" / "parity_sets" / "variant-b" / "model" / "llm"


@pytest.fixture
def folder(tmp_path):
    """An official-layout ``llm/`` folder (Qwen2 config.json beside the byte-level tokenizer)."""
    out = tmp_path / "llm"
    shutil.copytree(SET_LLM, out)
    return out


def _edit(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_text_is_not_renormalized(folder):
    # the fixture tokenizer.json has no normalizer: a decomposed accent stays its bytes (transformers 5's
    # rebuilt Qwen2 tokenizer applied NFC: [99, 97, 102, 195, 169] for "cafe\u0301")
    tok = load_tokenizer(folder)
    add_showo2_tokens(tok)
    assert encode_text(tok, "cafe\u0301 A\u030a") == [99, 97, 102, 101, 204, 129, 32, 65, 204, 138]
    assert encode_text(tok, "\u212b") == [226, 132, 171]  # the Angstrom sign, not NFC's U+00C5


def test_the_files_normalizer_is_applied(folder):
    _edit(folder / "tokenizer.json", lambda t: t.update(normalizer={"type": "Lowercase"}))
    tok = load_tokenizer(folder)
    add_showo2_tokens(tok)
    assert encode_text(tok, "You AB") == [121, 111, 117, 32, 97, 98]


def test_tokens_already_added_in_the_file_keep_their_ids(folder):
    def add(t):  # Show-o2's additions (and one more) already in tokenizer.json, in another order
        n = max(a["id"] for a in t["added_tokens"]) + 1
        for i, name in enumerate(["<|vid_end|>", "<extra_0>", "<image>", "[PAD]"]):
            t["added_tokens"].append({"id": n + i, "content": name, "single_word": False, "lstrip": False,
                                      "rstrip": False, "normalized": name != "[PAD]", "special": name == "[PAD]"})

    _edit(folder / "tokenizer.json", add)
    tok = load_tokenizer(folder)
    ids = add_showo2_tokens(tok)
    assert (ids.pad, ids.img, ids.bov, ids.eov) == (281, 280, 282, 278)  # the official ids
    assert len(tok) == 283
    assert encode_text(tok, "<|vision_start|><image><|vid_start|>") == [265, 280, 282]
