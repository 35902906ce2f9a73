"""Probe BR: the evening's features used together (quantized placed loads, LoRA strengths,
``.bin`` adapters, lazy heads, the memory guard)."""

from __future__ import annotations

import pytest
import torch

from showo2_cli.loading import ALL_HEADS, load
from showo2_cli.options import RuntimeOptions
from test_placement_probe_bk import _quantized_after, _same, _tensors


@pytest.fixture(scope="module")
def lm_head_adapter(tmp_path_factory):
    """An adapter of the demo (whose ``lm_head`` is tied to the embedding) over its ``lm_head``
    and the LLM's ``q_proj``."""
    from conftest import write_adapter

    return write_adapter("demo", tmp_path_factory.mktemp("br") / "lm", ["lm_head", "q_proj"], 3)


def test_a_tied_lm_heads_adapter_is_merged_by_a_quantized_load(lm_head_adapter):
    """A tied ``lm_head`` is the embedding's tensor, not a group placed: a quantized load left its
    adapter out (the embedding and ``lm_head`` those of the base model, silently), where the
    unquantized load merges it into the shared tensor. Eager and lazy heads, at a weight of 0.5."""
    pytest.importorskip("torchao")
    lora = [(str(lm_head_adapter), 0.5)]
    reference = _tensors(_quantized_after("demo", "int8wo", torch.float32, lora).network)
    plain = _tensors(load("demo", runtime=RuntimeOptions(quantize="int8wo")).network)
    changed = {k for k in _same(reference, plain) if k.startswith(("showo.lm_head", "showo.model.embed_tokens"))}
    assert changed == {"showo.lm_head.weight#", "showo.model.embed_tokens.weight#"}  # the adapter counts
    for heads in (ALL_HEADS, ()):
        model = load("demo", lora=lora, heads=heads, runtime=RuntimeOptions(quantize="int8wo"))
        model.network.load_heads()
        assert model.network.showo.lm_head.weight is model.network.showo.model.embed_tokens.weight
        assert not _same(reference, _tensors(model.network)), heads


def test_an_adapter_of_the_embedding_says_it_is_no_linear_layer(lm_head_adapter, tmp_path):
    """An adapter whose targets include ``embed_tokens`` (Unsloth's continued pretraining) was
    told the model has no such layer; it has one, an embedding, which no merge here takes."""
    import json
    import shutil

    from showo2_cli.errors import ModelError
    from showo2_cli.lora import ADAPTER_CONFIG

    folder = shutil.copytree(lm_head_adapter, tmp_path / "emb")
    config = json.loads((folder / ADAPTER_CONFIG).read_text())
    (folder / ADAPTER_CONFIG).write_text(json.dumps({**config, "target_modules": ["embed_tokens", "lm_head"]}))
    with pytest.raises(ModelError, match=r"targets embed_tokens \(Embedding, not a linear layer\): only adapters "
                                         "of linear layers"):
        load("demo", lora=[folder])


@pytest.mark.parametrize("name", ["metadata.csv", "metadata.jsonl"])
def test_an_imagefolder_without_a_caption_column_is_refused(tmp_path, name):
    """A Hugging Face imagefolder whose captions' column is named otherwise (``description``)
    trained every image on an empty caption (the unconditional row), silently; ``text`` reads."""
    import json

    from showo2_cli.errors import InputError
    from showo2_cli.training.records import Records, build_index
    from showo2_cli.training.schema import DataSource

    folder = tmp_path / "photos"
    folder.mkdir()
    rows = [{"file_name": f"{i}.png", "description": f"photo {i}"} for i in range(2)]

    def write(rows):
        if name.endswith(".csv"):
            lines = [",".join(rows[0])] + [",".join(r.values()) for r in rows]
        else:
            lines = [json.dumps(r) for r in rows]
        (folder / name).write_text("\n".join(lines) + "\n", encoding="utf-8")

    write(rows)
    source = DataSource(kind="pairs", path=str(folder))
    with pytest.raises(InputError, match=rf"'{folder / name}' has no caption field \(prompt, caption, text\): "
                                         "its fields are file_name, description; name the captions' column text"):
        build_index(source, tmp_path / "index")
    write([{"file_name": r["file_name"], "text": r["description"]} for r in rows])
    records = Records(*build_index(source, tmp_path / "index2"))
    assert [records[i]["text"] for i in range(len(records))] == ["photo 0", "photo 1"]


def test_an_imagefolder_with_split_folders_is_refused_not_trained_without_captions(tmp_path):
    """Probe EE: a Hugging Face imagefolder with its splits in folders (``train/metadata.jsonl``,
    ``test/metadata.jsonl``, as ``datasets`` reads them) given by its top folder was listed as a
    folder of pairs: every image, the test split's too, trained on an empty caption (no ``.txt``)."""
    import json

    from PIL import Image

    from showo2_cli.errors import InputError
    from showo2_cli.training.records import Records, build_index
    from showo2_cli.training.schema import DataSource

    folder = tmp_path / "photos"
    for split in ("test", "train"):
        (folder / split).mkdir(parents=True)
        Image.new("RGB", (32, 32), "red").save(folder / split / "0.png")
        (folder / split / "metadata.jsonl").write_text(json.dumps({"file_name": "0.png", "text": split}) + "\n")
    with pytest.raises(InputError, match=rf"folder '{folder}' has no metadata.jsonl or metadata.csv of its own, "
                                         rf"but '{folder / 'test' / 'metadata.jsonl'}' names captions .*such as "
                                         rf"'{folder / 'test'}'"):
        build_index(DataSource(kind="pairs", role="t2i", path=str(folder)), tmp_path / "index")
    assert not list((tmp_path / "index").iterdir())  # no listing published
    records = Records(*build_index(DataSource(kind="pairs", role="t2i", path=str(folder / "train")), tmp_path / "i2"))
    assert [records[i]["text"] for i in range(len(records))] == ["train"]
