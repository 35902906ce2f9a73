"""Probe FN: mutation fuzzing of more readers (benchmarks/fuzz_more_readers.py): the defects it
found, each built here, and a small fixed set of the new readers' mutants that must come out clean."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from conftest import PARITY_DIR

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("size", [(64,), (64, 64, 64), [], 3.5, True, "abc", "ab", {"h": 64}, b"ab"])
def test_a_generate_size_that_is_not_a_pair_is_a_usage_error(size):
    """``GenerateOptions(size=...)`` as a record read back gives it (a list of one, a float, a text):
    ``validate`` unpacked it as ``h, w = size`` and raised ValueError/TypeError (``api.text_to_image``
    too), and a two-letter text was read as height and width ("got bxa"). Now the one message
    ``EncodeOptions``' size check gives."""
    from showo2_cli.errors import UsageError
    from showo2_cli.options import GenerateOptions

    with pytest.raises(UsageError, match=r"^size must be an integer or \(height, width\), got "):
        GenerateOptions(size=size).validate()


def test_generate_sizes_that_are_pairs_still_validate():
    from showo2_cli.errors import UsageError
    from showo2_cli.options import GenerateOptions

    assert GenerateOptions(size=64).size == (64, 64)
    GenerateOptions(size=[64, 32]).validate()
    GenerateOptions(size=(432, 432)).validate()
    with pytest.raises(UsageError, match="multiples of 16"):
        GenerateOptions(size=(64, 30)).validate()


def _fuzzer():
    spec = importlib.util.spec_from_file_location("fuzz_readers", ROOT / "benchmarks" / "fuzz_readers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    """The demo model with its weights in two shards and their index (the fuzzer's seed)."""
    root = tmp_path_factory.mktemp("fn") / "sharded"
    _fuzzer().more._demo_sharded(root)
    return root


@pytest.mark.parametrize("shard", ["gone", "nul", "long"])
def test_a_shard_index_naming_a_shard_not_in_the_folder_is_an_incomplete_model(tmp_path, sharded, shard):
    """A sharded checkpoint whose ``model.safetensors.index.json`` names a shard that is not there
    (a download cut short; a fuzzed name: a NUL byte, 300 characters): ``load`` stamped each shard
    before reading any and raised ``FileNotFoundError`` (``ValueError: embedded null byte``,
    ``OSError: File name too long``); ``showo2 t2i -m FOLDER`` said "internal error", exit 1. Now the
    model is incomplete (a model error, exit 4, before anything is read) and says which shard."""
    import json
    import shutil

    from showo2_cli import api
    from showo2_cli.errors import ModelError

    root = tmp_path / "sharded"
    shutil.copytree(sharded, root)
    index = root / "model.safetensors.index.json"
    doc = json.loads(index.read_text())
    if shard == "gone":
        (root / "model-00002-of-00002.safetensors").unlink()
        named = "model-00002-of-00002.safetensors"
    else:
        named = "a\x00b.safetensors" if shard == "nul" else "x" * 300 + ".safetensors"
        first = next(iter(doc["weight_map"]))
        doc["weight_map"][first] = named
        index.write_text(json.dumps(doc))
    with pytest.raises(ModelError, match=r"is incomplete: missing weights \(1 of the [23] shards its index names") as e:
        api.load(str(root), need=())
    assert repr(named)[:40] in str(e.value) and "\x00" not in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("questions", [5, None, 2.5, True, {"q": 1}])
def test_caption_questions_that_are_not_a_list_are_a_usage_error(questions):
    """``CaptionOptions(questions=5)`` (a record's field fuzzed to a number or null): ``validate``
    iterated it and raised ``TypeError: 'int' object is not iterable``."""
    from showo2_cli.errors import UsageError
    from showo2_cli.options import CaptionOptions

    with pytest.raises(UsageError, match=r"^questions must be a list of texts, got "):
        CaptionOptions(questions=questions).validate()
    CaptionOptions(questions="what is this?").validate()  # one question
    CaptionOptions(questions=("a?", "b?")).validate()


def test_a_choice_with_a_line_break_is_said_on_one_line():
    """``GenerateOptions(method="\\n\\n")``: the message quoted the value as it is, over three
    lines; the one shortening helper (``errors.short``) now writes what does not print escaped."""
    from showo2_cli.errors import UsageError, short
    from showo2_cli.options import GenerateOptions

    with pytest.raises(UsageError) as e:
        GenerateOptions(method="\n\x00\n").validate()
    assert str(e.value).endswith(r"got '\n\x00\n'") and "\n" not in str(e.value)
    assert short("é a 💥 b") == "é a 💥 b" and short("x\ty" * 20, 10) == r"x\tyx\t..."


@pytest.mark.parametrize("value", ['"512"', "[1]", "{}", "null", "true", "NaN"])
def test_a_tokenizer_config_whose_model_max_length_is_not_a_number_is_a_model_error(tmp_path, value):
    """``tokenizer_config.json`` with ``"model_max_length": "512"`` (or a list, a table): transformers
    keeps it as it is and every text's encoding compared it with an int: ``load`` (and every prompt
    after it) raised ``TypeError: '>' not supported between instances of 'int' and 'str'``."""
    import json
    import shutil

    import showo2_cli
    from showo2_cli.errors import ModelError
    from showo2_cli.tokenizer import load_tokenizer

    folder = tmp_path / "tok"
    demo = Path(showo2_cli.__file__).parent / "assets" / "demo"
    folder.mkdir()
    shutil.copy(demo / "tokenizer.json", folder)
    config = json.loads((demo / "tokenizer_config.json").read_text())
    config["model_max_length"] = json.loads(value) if value != "NaN" else float("nan")
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    if value == "null":  # transformers' default takes its place
        assert load_tokenizer(folder)("a red circle")["input_ids"]
        return
    with pytest.raises(ModelError, match=r"tokenizer_config.json's model_max_length must be a number, got "):
        load_tokenizer(folder)


@pytest.mark.parametrize("odd", ["\u202e\u0661", None, [1.0]])
def test_a_vae_config_statistic_that_is_not_a_number_is_named(tmp_path, odd):
    """A VAE ``config.json`` whose ``latents_mean`` holds 16 values, one of them text (a fuzzed
    one): the error said "must be a list of 16 numbers (found 16)"; it now names the value."""
    import json
    import shutil

    import showo2_cli
    from showo2_cli.errors import ModelError
    from showo2_cli.modeling.vae_files import load_vae

    folder = tmp_path / "vae"
    shutil.copytree(Path(showo2_cli.__file__).parent / "assets" / "demo" / "vae", folder)
    config = json.loads((folder / "config.json").read_text())
    config["latents_mean"][11] = odd
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match=r"latents_mean must be a list of 16 numbers \(found .+ among them\)$") as e:
        load_vae(folder)
    assert repr(odd)[:10] in str(e.value)


def test_a_fixed_set_of_the_new_readers_mutants_comes_out_clean(tmp_path):
    """The first mutants of seed 0 of three of probe FN's readers (the training config as TOML,
    YAML and JSON; the tokenizer files; JPEGs through the marker walk and Pillow): a result or the
    project's own one-line error each, no other exception, hang, memory growth or leftover."""
    fz = _fuzzer()
    for reader, count in (("config", 12), ("tokenizer", 9), ("jpeg", 15)):
        outcomes = fz.run(reader, count, 0, timeout=20, work=tmp_path / reader)
        assert sum(outcomes.values()) == count
        assert not [k for k in outcomes if k[1].startswith("defect")], fz.table(reader, outcomes)
        assert any(k[1].startswith("error:") for k in outcomes), reader


@pytest.mark.parametrize("rel", ["model.safetensors", "config.json", "vae/config.json"])
def test_a_cache_snapshot_link_to_a_name_too_long_is_a_model_error(tmp_path, rel):
    """A Hugging Face cache entry whose snapshot link points at a name longer than the system takes
    (a corrupt link; the fuzzer's ``link:`` seeds): ``Path.exists()`` raises ``OSError: [Errno 36]
    File name too long`` for it, and ``load("owner/name")`` said "internal error". The snapshot's
    files are now looked for with ``os.path`` (False for such a name): the cache entry is not a
    whole model, a one-line model error."""
    import os

    from showo2_cli import api
    from showo2_cli.errors import ModelError

    more = _fuzzer().more
    more.seeds_hf_cache(tmp_path)
    link = tmp_path / "cache" / "models--fuzz--demo" / "snapshots" / more.COMMIT / rel
    link.unlink()
    os.symlink("x" * 300 + "/config.json" if rel.startswith("vae/") else "../../blobs/" + "x" * 300, link)
    expected = {"vae/config.json": "incomplete: missing VAE", "config.json": "in the Hugging Face cache without config.json",
                "model.safetensors": "in the Hugging Face cache without its weights"}[rel]  # (no recorded listing)
    with pytest.raises(ModelError, match=expected):
        api.load("fuzz/demo", local_files_only=True, cache_dir=str(tmp_path / "cache"))


@pytest.mark.skipif(not (PARITY_DIR / "vae" / "Wan2.1_VAE_tiny.pth").is_file(), reason="needs the parity set")
def test_an_original_vae_pth_with_a_key_diffusers_cannot_convert_is_a_model_error(tmp_path):
    """An original-layout ``Wan2.1_VAE.pth`` with a corrupt key (``decoder.upsamples.0\\x7fresidual...``,
    a fuzzed byte): diffusers' ``convert_wan_vae_to_diffusers`` raised ``ValueError: invalid literal
    for int()`` out of ``load_vae`` (an internal error). Now a model error naming the file."""
    import torch

    from showo2_cli.errors import ModelError
    from showo2_cli.modeling.vae_files import load_vae

    sd = torch.load(PARITY_DIR / "vae" / "Wan2.1_VAE_tiny.pth", map_location="cpu", weights_only=True)
    key = next(k for k in sd if k.startswith("decoder.upsamples.0."))
    sd[key.replace("decoder.upsamples.0.", "decoder.upsamples.0\x7f", 1)] = sd.pop(key)
    torch.save(sd, tmp_path / "Wan2.1_VAE.pth")
    with pytest.raises(ModelError, match=r"not a Wan2.1 VAE state dict in the original layout \(converting it"):
        load_vae(tmp_path / "Wan2.1_VAE.pth")


def test_lora_config_fuzz_leftovers_are_model_errors_in_one_line(tiny_model_dir, tmp_path):
    """Probe FN's two LoRA leftovers: ``trainable_token_indices: []`` (empty, so let through) made
    peft build a token adapter whose tensor the file lacks (KeyError out of load); a target name with
    a line break was quoted over several lines."""
    from conftest import write_adapter
    from showo2_cli.errors import ModelError
    from showo2_cli.loading import load

    empty = write_adapter(tiny_model_dir, tmp_path / "empty", ["q_proj"], 1, trainable_token_indices=[])
    assert load(tiny_model_dir, lora=str(empty)).adapters  # an empty field is no field: it loads
    odd = write_adapter(tiny_model_dir, tmp_path / "odd", ["q_proj"], 1,
                        target_modules=["showo.model.layers.0.self_attn.q_proj\n\nx"])
    with pytest.raises(ModelError, match="does not have") as e:
        load(tiny_model_dir, lora=str(odd))
    assert "\n" not in str(e.value)
