"""Parity probe I (round three): the semantic path's position table follows the official rule,
which reads the CONFIGURED token grid (config.json ``image_latent_height`` x ``image_latent_width``),
not the input's. The bundled ``tests/data/parity_sets/variant-t`` (made with the official code: a
non-square 2x8 grid over a 4x4 table, whose rows the official code adds as they are) checks the
numbers; these check the rule's other branches and that a non-square config is read and written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from showo2_cli.errors import ModelError
from showo2_cli.loading import build_network, load, official_config
from showo2_cli.modeling.semantic import interpolate_position_table
from showo2_cli.specs import REGISTRY

VARIANT_T = Path(__file__).resolve().parent / "data" / "parity_sets" / "variant-t"


def _net(grid, table_side):
    h, w = grid
    spec = REGISTRY["tiny"].replace(image_latent_grid=h, image_latent_grid_width=w if w != h else None,
                                    position_embedding_rows=table_side ** 2)
    net = build_network(spec, None, torch.float32).eval()
    with torch.no_grad():
        net.position_embedding.weight.copy_(torch.randn(net.position_embedding.weight.shape,
                                                        generator=torch.Generator().manual_seed(0)))
    return net


def test_table_with_the_configured_grids_rows_is_added_as_it_is_even_for_a_non_square_grid():
    net = _net((2, 8), 4)
    table = net.position_embedding.weight
    for understanding in (False, True):
        assert torch.equal(net.position_rows(2, 8, understanding=understanding), table)
    # the old rule (direct only for the table's own square) interpolated: another embedding
    assert (interpolate_position_table(table, 2, 8) - table).abs().max() > 0.1


def test_table_larger_than_the_configured_grid():
    # generation (the official forward) interpolates the 5x5 table to the 3x3 grid; the official
    # understanding demos add its first 9 rows as they are
    net = _net((3, 3), 5)
    table = net.position_embedding.weight
    assert torch.equal(net.position_rows(3, 3), interpolate_position_table(table, 3, 3))
    assert torch.equal(net.position_rows(3, 3, understanding=True), table[:9])
    assert not torch.allclose(table[:9], interpolate_position_table(table, 3, 3))
    # an input grid other than the configured one (a shape error in the official code): interpolated
    assert torch.equal(net.position_rows(4, 4, understanding=True), interpolate_position_table(table, 4, 4))


def test_released_geometry_unchanged():
    net = _net((4, 4), 4)  # the table is the configured square grid: added as it is on both paths
    table = net.position_embedding.weight
    assert torch.equal(net.position_rows(4, 4), table)
    assert torch.equal(net.position_rows(4, 4, understanding=True), table)
    assert torch.equal(net.position_rows(2, 3), interpolate_position_table(table, 2, 3))


def test_non_square_config_is_read_and_written():
    model = load(VARIANT_T / "model", vae=VARIANT_T / "vae" / "wan21_vae.safetensors")
    assert model.spec.config_grid == (2, 8) and model.spec.config_tokens == 16
    cfg = official_config(model.spec)
    assert (cfg["image_latent_height"], cfg["image_latent_width"]) == (2, 8)
    assert (cfg["video_latent_height"], cfg["video_latent_width"]) == (2, 8)


def test_bad_image_latent_width_is_a_model_error(tmp_path):
    folder = tmp_path / "m"
    shutil.copytree(VARIANT_T / "model", folder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["image_latent_width"] = "8"
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelError, match="image_latent_width"):
        load(folder, vae=VARIANT_T / "vae" / "wan21_vae.safetensors")


def test_non_square_config_generates_its_shape_by_default():
    # the official demos generate latent_height x latent_width (config.json): 2x8 tokens of 2x2
    # latent pixels of 8x8 pixels -> 32 high, 128 wide; the text budget leaves room for 2*8+1 tokens
    from showo2_cli.options import GenerateOptions

    model = load(VARIANT_T / "model", vae=VARIANT_T / "vae" / "wan21_vae.safetensors")
    spec = model.spec
    assert spec.default_size() == (32, 128) and spec.default_size(video=True) == (32, 128)
    assert GenerateOptions().resolved(spec, video=False).size == (32, 128)
    assert GenerateOptions(size=48).resolved(spec, video=False).size == (48, 48)  # an asked size wins
    assert spec.text_budget == spec.max_seq_len - (2 * 8 + 1) - 4
    square = REGISTRY["tiny"]
    assert square.default_size() == (square.resolution, square.resolution)


def _resized(tmp_path, rows):
    from safetensors.torch import load_file, save_file

    folder = tmp_path / f"rows-{rows}"
    shutil.copytree(VARIANT_T / "model", folder)
    state = load_file(str(folder / "pytorch_model.safetensors"))
    for key in ("showo.model.embed_tokens.weight", "showo.lm_head.weight"):
        w = state[key]
        extra = torch.randn(max(rows - w.shape[0], 0), w.shape[1], generator=torch.Generator().manual_seed(1))
        state[key] = torch.cat([w, extra])[:rows].contiguous()
    save_file(state, str(folder / "pytorch_model.safetensors"))
    cfg = json.loads((folder / "config.json").read_text())
    cfg["llm_vocab_size"] = rows
    (folder / "config.json").write_text(json.dumps(cfg))
    return folder


def test_embedding_resized_past_the_tokenizer_loads(tmp_path):
    # the official constructor resizes the embedding to its config's llm_vocab_size whatever the
    # tokenizer holds (a padded table): it runs, its logits have every row; it was refused here
    model = load(_resized(tmp_path, 300), vae=VARIANT_T / "vae" / "wan21_vae.safetensors")
    assert len(model.tokenizer) == 282 and model.spec.vocab_size == 300
    ids = torch.tensor([[model.tokens.bos, 72, 105]])
    hidden, _ = model.network.llm(model.network.showo.model.embed_tokens(ids), None)
    assert model.network.logits(hidden).shape[-1] == 300
    assert model.tokenizer.decode([72, 105, 290], skip_special_tokens=True) == "Hi"  # past the tokenizer: no text


def test_tokenizer_larger_than_the_embedding_is_refused(tmp_path):
    with pytest.raises(ModelError, match="wrong tokenizer"):
        load(_resized(tmp_path, 270), vae=VARIANT_T / "vae" / "wan21_vae.safetensors")


def _with_eos(tmp_path, eos: str) -> Path:
    folder = tmp_path / "eos"
    shutil.copytree(VARIANT_T / "model", folder)
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        cfg = json.loads((folder / "llm" / name).read_text())
        cfg["eos_token"] = eos
        (folder / "llm" / name).write_text(json.dumps(cfg))
    return folder


def test_tokenizers_own_eos_token_ends_generation_rows_and_answers(tmp_path, monkeypatch):
    # the official code's eos_id is the tokenizer's eos_token (a base Qwen2.5 tokenizer's
    # <|endoftext|>), looked up by name; <|im_end|> stays the chat template's turn end
    from showo2_cli.options import CaptionOptions
    from showo2_cli.pipelines import understand
    from showo2_cli.sequences import generation_layout

    model = load(_with_eos(tmp_path, "<|endoftext|>"), vae=VARIANT_T / "vae" / "wan21_vae.safetensors")
    tk, vocab = model.tokens, model.tokenizer.get_vocab()
    assert (tk.end, tk.eos) == (vocab["<|endoftext|>"], vocab["<|im_end|>"]) and tk.end != tk.eos
    row = generation_layout([[72, 105]], 5, tk, 16).input_ids[0].tolist()
    assert row[:10] == [tk.bos, 72, 105, tk.boi, *[tk.img_pad] * 5, tk.eoi] and row[10] == tk.end
    seen = []
    real = understand.generate
    monkeypatch.setattr(understand, "generate",
                        lambda net, embeds, mask, sampling, **kw: seen.append(sampling.stop_ids) or real(
                            net, embeds, mask, sampling, **kw))
    understand.caption(model, torch.zeros(32, 32, 3, dtype=torch.uint8).numpy(),
                       CaptionOptions(max_new_tokens=2, size=32))
    assert seen == [(tk.end,)]
    plain = load(VARIANT_T / "model", vae=VARIANT_T / "vae" / "wan21_vae.safetensors").tokens
    assert plain.end == plain.eos == vocab["<|im_end|>"]


@pytest.mark.parametrize("value, needle", [(False, "add_time_embeds false"), ("yes", "must be true or false")])
def test_add_time_embeds_other_than_true_is_refused(tmp_path, value, needle):
    # the official layout without the time token differs everywhere; it was silently ignored
    folder = tmp_path / "m"
    shutil.copytree(VARIANT_T / "model", folder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["add_time_embeds"] = value
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelError, match=needle):
        load(folder, vae=VARIANT_T / "vae" / "wan21_vae.safetensors")
