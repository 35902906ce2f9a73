"""Parity probe U (round six): checkpoints as they are stored. Checked against the official
loader (diffusers 0.31 ``Showo2Qwen2_5.from_pretrained``): every stored tensor is set as it is,
so a checkpoint whose LLM config says ``tie_word_embeddings: true`` but whose ``lm_head`` differs
from the embedding runs with that head. These tests build such checkpoints at test time from the
bundled ``variant-q`` set (tied embeddings)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from showo2_cli.loading import load

BUNDLED = Path(__file__).resolve().parent / "data" / "parity_sets"
VARIANT_Q = BUNDLED / "variant-q" / "model"
HEAD, EMBED = "showo.lm_head.weight", "showo.model.embed_tokens.weight"


def _copy(tmp_path: Path, change) -> tuple[Path, dict]:
    folder = tmp_path / "model"
    shutil.copytree(VARIANT_Q, folder)
    state = load_file(str(folder / "pytorch_model.safetensors"))
    state = change(state)
    save_file(state, str(folder / "pytorch_model.safetensors"))
    return folder, state


def test_a_stored_head_other_than_the_embedding_is_used_though_the_config_says_tied(tmp_path):
    def drift(state):
        noise = torch.randn(state[HEAD].shape, generator=torch.Generator().manual_seed(0))
        return dict(state, **{HEAD: state[HEAD] + 0.05 * noise})

    folder, state = _copy(tmp_path, drift)
    assert '"tie_word_embeddings": true' in (folder / "llm" / "config.json").read_text()
    model = load(folder, need=())
    net = model.network
    assert model.spec.tie_word_embeddings is False
    assert torch.equal(net.state_dict()[HEAD], state[HEAD])
    assert torch.equal(net.state_dict()[EMBED], state[EMBED])
    x = torch.randn(3, state[EMBED].shape[1], generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got = net.logits(x)
    torch.testing.assert_close(got, x @ state[HEAD].T, atol=1e-5, rtol=1e-5)
    # what the tied head gave: other logits (about 0.2 off here)
    assert (got - x @ state[EMBED].T).abs().max() > 0.05


@pytest.mark.parametrize("how", ["copy", "absent"])
def test_a_head_equal_to_the_embedding_or_absent_stays_tied(tmp_path, how):
    def same(state):
        state = dict(state)
        if how == "absent":
            del state[HEAD]
        else:
            state[HEAD] = state[EMBED].clone()
        return state

    folder, state = _copy(tmp_path, same)
    model = load(folder, need=())
    assert model.spec.tie_word_embeddings is True
    net = model.network
    assert net.showo.lm_head.weight is net.showo.model.embed_tokens.weight


@pytest.mark.parametrize("how", ["_orig_mod.", "module._orig_mod.", "_orig_mod.module.", "deepspeed"])
def test_training_wrappers_are_read_as_the_network_itself(tmp_path, how):
    """torch.compile's ``_orig_mod.`` (alone or under DDP's ``module.``) and DeepSpeed's model file
    (``{"module": state, "ds_version": ...}``) hold the same tensors under other names."""
    from showo2_cli.weights import read_state_dict

    state = load_file(str(VARIANT_Q / "pytorch_model.safetensors"))
    obj = ({"module": state, "buffer_names": [], "ds_version": "0.16.0", "global_steps": 7} if how == "deepspeed"
           else {how + k: v for k, v in state.items()})
    torch.save(obj, tmp_path / "mp_rank_00_model_states.pt")
    got = read_state_dict(tmp_path / "mp_rank_00_model_states.pt")
    assert got.keys() == state.keys()
    assert all(torch.equal(got[k], state[k]) for k in state)


def test_weights_under_another_prefix_are_named_in_the_error(tmp_path):
    from showo2_cli.errors import ModelError

    folder, _ = _copy(tmp_path, lambda state: {"model." + k: v for k, v in state.items()})  # a Lightning module's
    with pytest.raises(ModelError, match=r"under the prefix 'model\.'"):
        load(folder, need=())


def test_an_official_training_checkpoint_folder_names_its_model_subfolder(tmp_path):
    from showo2_cli.errors import ModelError

    ckpt = tmp_path / "checkpoint-500"
    shutil.copytree(VARIANT_Q, ckpt / "unwrapped_model")  # what the official save_checkpoint writes
    (ckpt / "metadata.json").write_text('{"global_step": 500}')
    with pytest.raises(ModelError, match=r"no config\.json \(its subfolder 'unwrapped_model' has one"):
        load(ckpt, need=())


@pytest.fixture(scope="module")
def real_1_5b_shapes():
    """The 1.5B network's state dict on the meta device: the real shapes, no memory."""
    from showo2_cli.modeling.showo2 import Showo2Model
    from showo2_cli.specs import REGISTRY

    with torch.device("meta"):
        return Showo2Model(REGISTRY["1.5B"]).state_dict()


@pytest.mark.parametrize("grid,max_seq_len,budget", [(32, 1280, 251), (64, 4352, 251), (27, 1024, 290)])
def test_an_official_hq_checkpoint_in_any_folder_gets_the_official_sequence_budget(real_1_5b_shapes, grid,
                                                                                    max_seq_len, budget):
    """The 1.5B-HQ's config (image_latent_height 32 or 64: 512 or 1024 px) in a folder not named
    after its repo (``hf download ... --local-dir hq``) gets the official demos' max_seq_len (their
    yaml: 1280 at 512, 4352 at 1024) and so their 251 prompt tokens; it had 1045 / 4117 and 16."""
    from showo2_cli.loading import ModelFiles
    from showo2_cli.model_config import spec_from_files

    config = {"_class_name": "Showo2Qwen2_5", "hidden_size": 1536, "image_latent_height": grid,
              "image_latent_width": grid, "video_latent_height": 27, "video_latent_width": 27, "patch_size": 2,
              "llm_model_path": "Qwen/Qwen2.5-1.5B-Instruct", "llm_vocab_size": 151669}
    spec = spec_from_files(ModelFiles("hq", Path("/models/hq"), "official", config, []), real_1_5b_shapes)
    assert spec.resolution == grid * 16
    assert spec.max_seq_len == max_seq_len
    assert spec.text_budget == budget


def test_a_tied_model_written_by_safetensors_save_model_loads(tmp_path):
    """The official ``save_pretrained(safe_serialization=True)`` fails on the tied pair and points to
    safetensors' ``save_model``, which keeps ``showo.lm_head.weight`` alone; that file was refused
    as "lack 'showo.model.embed_tokens.weight': not a Show-o2 checkpoint"."""
    import safetensors.torch
    from safetensors import safe_open

    original = load(VARIANT_Q, need=()).network
    folder = tmp_path / "converted"
    shutil.copytree(VARIANT_Q, folder, ignore=shutil.ignore_patterns("*.safetensors", "*.bin"))
    safetensors.torch.save_model(original, str(folder / "model.safetensors"))
    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        assert HEAD in f.keys() and EMBED not in f.keys()
    model = load(folder, need=())
    assert model.spec.tie_word_embeddings is True
    want = original.state_dict()
    got = model.network.state_dict()
    assert got.keys() == want.keys()
    assert all(torch.equal(got[k], want[k]) for k in want)


def test_an_llm_config_without_rope_theta_gets_the_qwen2_default(tmp_path):
    """A Qwen2 config that omits ``rope_theta`` runs with transformers' ``Qwen2Config`` default,
    10000, in the official code; it ran with 1e6 (prompt logits 2.15 off on a set made so).
    ``variant-b`` was made with rope_theta 10000: its official logits must hold without the key."""
    import json

    root = BUNDLED / "variant-b"
    folder = tmp_path / "model"
    shutil.copytree(root / "model", folder, ignore=shutil.ignore_patterns("*.bin"))
    llm = json.loads((folder / "llm" / "config.json").read_text())
    assert llm.pop("rope_theta") == 10000.0
    (folder / "llm" / "config.json").write_text(json.dumps(llm))
    model = load(folder, need=())
    case = load_file(str(root / "cases" / "mmu.safetensors"))
    with torch.no_grad():
        hidden, _ = model.network.llm(case["input_embeds"], case["attention_mask_bool"])
        logits = model.network.logits(hidden)
    torch.testing.assert_close(logits, case["prompt_logits"], atol=1e-4, rtol=1e-4)
    assert model.spec.rope_theta == 10000.0


def test_a_siglip_config_without_num_attention_heads_gets_the_siglip_default(tmp_path):
    """The official code builds the semantic layers from the SigLIP config: one without
    ``num_attention_heads`` has ``SiglipVisionConfig``'s 12 heads (the registry's 16, or the tiny
    default, were used). ``variant-b``'s 24-wide layers: 12 heads of 2, as a config naming 12 gives."""
    import json

    root = BUNDLED / "variant-b"
    outputs = {}
    for heads in (12, None):
        folder = tmp_path / f"heads-{heads}"
        shutil.copytree(root / "model", folder, ignore=shutil.ignore_patterns("*.bin"))
        sig = json.loads((folder / "siglip" / "config.json").read_text())
        sig["vision_config"].pop("num_attention_heads")
        if heads is not None:
            sig["vision_config"]["num_attention_heads"] = heads
        (folder / "siglip" / "config.json").write_text(json.dumps(sig))
        model = load(folder, need=())
        assert model.spec.semantic_heads == 12
        latents = load_file(str(root / "cases" / "mmu.safetensors"))["image_latents"]
        with torch.no_grad():
            outputs[heads] = model.network.encode_visual(latents, understanding=True).semantic
    assert torch.equal(outputs[None], outputs[12])
    # the fixture's own 3 heads give other semantic features
    three = load_file(str(root / "cases" / "mmu.safetensors"))["und_trans_out"]
    assert (outputs[None] - three).abs().max() > 1e-3
