"""Training data as the official recipe prepares it (probe DK): the caption cleanup of ``pairs``
sources against the official ``remove_prefix`` (datasets/utils.py) and the official
``data['prompt'].replace('\\n', '')`` (datasets/image_text_dataset.py)."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from showo2_cli.errors import UsageError
from showo2_cli.specs import get_spec
from showo2_cli.training.config import parse_config
from showo2_cli.training.data import make_sources
from test_hub_pipeline import hub, offline  # noqa: F401  (the local Hub fixture)

# the official functions' outputs on these captions (computed with the official datasets/utils.py)
CAPTIONS = [
    "The image features a red circle.\nIn the image, a cat sits on a mat.",
    "a sign reading This is Sparta",
    "a cat\non a mat",
    "The image shows a cat",
    "In this image, we see two dogs",
    "This is a photo.\r\nThe photo depicts a dog",
]
OFFICIAL_T2I = ["a red circle.a cat sits on a mat.", "a sign reading Sparta", "a caton a mat",
                "The image shows a cat", "two dogs", "a photo.\ra dog"]
OFFICIAL_MMU = [c.replace("\n", "") for c in CAPTIONS]  # captioning targets keep their phrases
OPENINGS_T2I = ["a red circle. In the image, a cat sits on a mat.", "a sign reading This is Sparta", "a cat on a mat",
                "The image shows a cat", "two dogs", "a photo. The photo depicts a dog"]


def _config(tmp_path, data, batch):
    return parse_config({"mode": "showo2", "output_dir": str(tmp_path / "run"), "model": {"init_spec": "tiny"},
                         "data": data, "batch": batch, "optim": {"max_steps": 1}}, source="c.toml")


def _sources(tmp_path, **source):
    Image.new("RGB", (32, 32), (200, 30, 30)).save(tmp_path / "a.png")
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps({"path": "a.png", "prompt": c}) + "\n" for c in CAPTIONS))
    data = [{"kind": "pairs", "role": role, "path": str(tmp_path / "pairs.jsonl"), "resolution": 32, **source}
            for role in ("t2i", "mmu")]
    return make_sources(_config(tmp_path, data, {"t2i": 1, "mmu": 1}), get_spec("tiny"), tmp_path / "index")


def test_pairs_captions_are_cleaned_as_the_official_dataset_does(tmp_path):
    """The default was "the official cleanup" in name only: openings of its own list stripped (the
    first letter capitalised), lines joined with a space, phrases left inside; 153 of 3006 random
    captions came out as the official's."""
    t2i, mmu = _sources(tmp_path)
    assert [t2i.get(i, pixels=False).text for i in range(len(CAPTIONS))] == OFFICIAL_T2I
    samples = [mmu.get(i, pixels=False) for i in range(len(CAPTIONS))]
    assert [s.text for s in samples] == OFFICIAL_MMU
    assert [s.turns for s in samples] == [[("", c)] for c in OFFICIAL_MMU]


def test_the_openings_and_verbatim_caption_rules(tmp_path):
    t2i, mmu = _sources(tmp_path, captions="openings")
    assert [t2i.get(i, pixels=False).text for i in range(len(CAPTIONS))] == OPENINGS_T2I
    assert mmu.get(1, pixels=False).text == "a sign reading This is Sparta"
    assert mmu.get(0, pixels=False).text == "The image features a red circle. In the image, a cat sits on a mat."
    t2i, mmu = _sources(tmp_path, captions="verbatim")
    assert [t2i.get(i, pixels=False).text for i in range(len(CAPTIONS))] == CAPTIONS


@pytest.mark.parametrize(("source", "message"), [
    ({"kind": "pairs", "captions": "strip"}, "must be one of official, openings, verbatim"),
    ({"kind": "shapes", "captions": "openings"}, "only pairs sources"),
])
def test_a_caption_rule_is_checked(tmp_path, source, message):
    data = [{"role": "t2i", "resolution": 32, **source}]
    if source["kind"] == "pairs":
        (tmp_path / "p.jsonl").write_text('{"path": "a.png", "prompt": "x"}\n')
        data[0]["path"] = str(tmp_path / "p.jsonl")
    with pytest.raises(UsageError, match=message) as e:
        _config(tmp_path, data, {"t2i": 1})
    assert "data[0].captions" in str(e.value)


def test_the_caption_rule_does_not_move_the_data_order(tmp_path):
    """A resumed run whose config now names a caption rule keeps its order (no 'data changed' note)."""
    (tmp_path / "p.jsonl").write_text('{"path": "a.png", "prompt": "x"}\n')
    source = {"kind": "pairs", "role": "t2i", "path": str(tmp_path / "p.jsonl")}
    before = _config(tmp_path, [source], {"t2i": 1}).data_signature()
    assert _config(tmp_path, [{**source, "captions": "verbatim"}], {"t2i": 1}).data_signature() == before


@pytest.mark.parametrize("length", [5, 26, 27, 60])
def test_a_long_caption_is_cut_to_keep_its_eos_as_officially(length):
    """A captioning row over its budget was cut whole (``ids[:max_seq_len]``): its caption ran to
    the last position and the [eos] was lost, never supervised. The official ``format_sequence_und``
    gets the caption cut to ``max_text_len = max_seq_len - P - 4`` and ends every row with [eos]
    (checked against it on 7 lengths, up to P = 730 in 1024 positions)."""
    from types import SimpleNamespace

    from showo2_cli.sequences import IGNORE, TrainingRows
    from showo2_cli.tokenizer import add_showo2_tokens, byte_level_tokenizer

    tok = byte_level_tokenizer()
    tk = add_showo2_tokens(tok)
    text = ("abcdefghij" * 6)[:length]
    row = SimpleNamespace(format="captioning", text=text, turns=[("", text)], has_visual=True, source=0)
    ids, labels, slot = TrainingRows(tok, tk).understanding(row, 10, 40)
    kept = list(text.encode())[:40 - 10 - 4]
    assert ids == [tk.bos, tk.boi, *[tk.img_pad] * 10, tk.eoi, *kept, tk.eos]
    assert labels == [tk.bos, tk.boi, *[IGNORE] * 10, tk.eoi, *kept, tk.eos]
    assert slot == (2, 10)


def test_a_config_s_model_vae_takes_a_hub_repo_id_as_vae_does(hub, tiny_model_dir, tmp_path, monkeypatch,  # noqa: F811
                                                               capsys):
    """``model.vae = "owner/name"`` was read as a path beside the config ('.../owner/name' does not
    exist) where ``--vae`` takes a repo id (probe DC's hub_vae): now the same rules: offline and not
    cached one line (exit 4, nothing asked), online its vae/ alone downloaded and announced, then
    found in the cache with no request."""
    from showo2_cli.cli import main
    from test_vae_locations_probe_dc import PIPE, _pipeline_repo, online

    _pipeline_repo(hub, tiny_model_dir / "vae")
    config = tmp_path / "vae.toml"
    config.write_text(f'mode = "vae"\nseed = 0\noutput_dir = "run"\n[model]\nvae = "{PIPE}"\n'
                      '[[data]]\nkind = "shapes"\nrole = "vae"\nresolution = 32\nsize = 2\n[batch]\nvae = 1\n'
                      '[optim]\nmax_steps = 1\n[vae_loss]\nstats_samples = 1\n[run]\ndevice = "cpu"\nsave_every = 0\n')
    offline(monkeypatch)
    assert main(["train", str(config)]) == 4
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not in the Hugging Face cache and HF_HUB_OFFLINE is set" in err, err
    assert hub.requests == [] and not (tmp_path / "run").exists()
    online(monkeypatch)
    assert main(["train", str(config)]) == 0
    assert f"downloading the VAE {PIPE} into the Hugging Face cache" in capsys.readouterr().err
    assert sorted(hub.downloads()) == [f"{PIPE}:vae/config.json", f"{PIPE}:vae/diffusion_pytorch_model.safetensors"]
    hub.requests.clear()
    assert main(["train", str(config), "-o", str(tmp_path / "again"), "--quiet"]) == 0
    assert hub.requests == []


@pytest.mark.parametrize("end", ["\n", "\r\n", "\r"])
def test_a_caption_file_s_lines_are_joined_whatever_its_line_ends(tmp_path, end):
    """A ``.txt`` caption saved on Windows gave the official rule (which deletes "\\n" only) a
    caption joined by carriage returns ("a cat\\ron a mat"); its line ends are now read as Python's
    text mode reads them, so every file gives the caption the official rule gives "a cat\\non a mat"."""
    from showo2_cli.training.captions import read_caption_file

    (tmp_path / "a.txt").write_bytes(f"The image features a cat{end}on a mat{end}".encode())
    (tmp_path / "a.png").write_bytes(b"")
    (tmp_path / "pairs.jsonl").write_text('{"path": "a.png", "caption_file": "a.txt"}\n')
    src = make_sources(_config(tmp_path, [{"kind": "pairs", "role": "t2i", "path": str(tmp_path / "pairs.jsonl")}],
                               {"t2i": 1}), get_spec("tiny"), tmp_path / "index")[0]
    assert src.get(0, pixels=False).text == "a caton a mat"
    assert read_caption_file(tmp_path / "a.txt", "c") == "The image features a cat\non a mat"
