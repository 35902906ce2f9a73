"""Make a whole parity fixture set, in the public set's format, WITH the official Show-o2 code.

    python benchmarks/make_parity_set.py --official PATH/TO/Show-o/show-o2 --site PATH/TO/official-site \\
        --variant b --out /tmp/parity-b
    SHOWO2_PARITY_DIR=/tmp/parity-b python -m pytest -q tests/test_parity.py

The public set (``../shared/parity``) is one draw of sizes, seeds, prompts and step counts; the
tests are meant to pass on any other draw. This script makes other draws, following the recipe
its README gives case by case (the official classes at tiny random sizes, float32, one thread):
``model/`` (config.json, llm/, siglip/, the .bin and .safetensors), ``vae/`` (.pth, safetensors,
config.json), ``cases/*.safetensors`` and ``meta.json``. The byte-level tokenizer files are taken
from a reference set (``--tokenizer-from``, default the public set): its 282 ids are fixed by the
recipe, not by the sizes; a tokenizer with more added tokens (other special-token ids) needs the
spec's ``llm_vocab_size`` at least its length.

A variant is a set of overrides of the public spec (``VARIANTS``), or a JSON file of them
(``--spec FILE``; ``parity_specs/`` holds later rounds' draws, see its README). Nothing of the
official code is vendored; see ``official_harness.py``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from official_harness import (  # noqa: E402
    Geometry,
    build_official,
    import_official,
    randomize,
    save_official,
    write_configs,
)

PUBLIC = dict(
    seed=1234, hidden_size=64, llm_intermediate_size=128, llm_layers=2, llm_heads=4, llm_kv_heads=2,
    llm_config_vocab_size=300, tie_word_embeddings=True, rope_theta=1e6, clip_latent_dim=32,
    siglip_intermediate_size=64, siglip_layers_before_deletion=3, siglip_heads=2, head_hidden=48, head_dim=12,
    head_intermediate=96, head_heads=4, head_kv_heads=2, num_diffusion_layers=2, image_latent_height=4,
    vae_dim=3, vae_video_shape=[1, 3, 5, 32, 32], vae_image_shape=[1, 3, 1, 64, 64],
    t2i_prompts=["a red cube on a table"], t2i_max_seq_len=48, t2i_guidance=5.0, t2i_steps=6, t2i_fixed_t=0.3,
    time_shifting_factor=3.0, mmu_question="What is in the image?", mmu_max_new_tokens=8,
    t2v_prompts=["waves at sunset"], t2v_latent_frames=2, t2v_max_seq_len=64, t2v_guidance=5.0, t2v_steps=4,
    t2v_fixed_t=0.6, vid_und_frames=2, vid_und_question="Describe the video.", vid_und_max_new_tokens=6,
    dynres_grid=6, dynres_max_seq_len=64, dynres_prompt="a blue ball", dynres_fixed_t=0.45,
    mask_layout={"B": 2, "LEN": 24, "modality_positions": [[[3, 6], [12, 5]], [[2, 9], [0, 0]]]},
)

#: what the "7b" and "1.5b" variants share (see there)
_SHAPES_OF_RELEASED = dict(
    rope_theta=1e6, clip_latent_dim=48, siglip_intermediate_size=179, siglip_layers_before_deletion=3, siglip_heads=16,
    head_hidden=32, head_dim=4, head_intermediate=128, head_heads=8, head_kv_heads=2, num_diffusion_layers=2,
    image_latent_height=3, vae_image_shape=[1, 3, 1, 48, 48], t2i_guidance=7.5, time_shifting_factor=3.0,
    mmu_max_new_tokens=10, t2v_guidance=5.0, t2v_steps=3, vid_und_question="Describe the video.",
    vid_und_max_new_tokens=6, dynres_max_seq_len=40, dynres_prompt="a red car",
)
_RELEASED_LLM_EXTRA = dict(torch_dtype="bfloat16", bos_token_id=151643, eos_token_id=151645)

VARIANTS = {
    # other widths and depths, an odd token grid, untied embeddings (as in the 7B), two prompts per
    # generation case, more latent frames, a non-ASCII question and a prompt exactly max_text_len long
    "b": dict(
        seed=777, hidden_size=48, llm_intermediate_size=80, llm_layers=3, llm_heads=6, llm_kv_heads=2,
        llm_config_vocab_size=320, tie_word_embeddings=False, rope_theta=10000.0, clip_latent_dim=24,
        siglip_intermediate_size=40, siglip_layers_before_deletion=4, siglip_heads=3, head_hidden=40, head_dim=10,
        head_intermediate=72, head_heads=4, head_kv_heads=2, num_diffusion_layers=3, image_latent_height=3,
        vae_dim=4, vae_video_shape=[1, 3, 9, 24, 40], vae_image_shape=[1, 3, 1, 48, 48],
        t2i_prompts=["two green apples", "a tall lighthouse at night fog"], t2i_max_seq_len=44,
        t2i_guidance=3.5, t2i_steps=7, t2i_fixed_t=0.72, time_shifting_factor=2.0,
        mmu_question="Qu'est-ce que c'est ? Réponds en un mot.", mmu_max_new_tokens=12,
        t2v_prompts=["a dog runs", "rain on glass"], t2v_latent_frames=3, t2v_max_seq_len=48, t2v_guidance=2.0,
        t2v_steps=5, t2v_fixed_t=0.15, vid_und_frames=3, vid_und_question="What happens?",
        vid_und_max_new_tokens=9, dynres_grid=5, dynres_max_seq_len=41, dynres_prompt="x" * 11,
        dynres_fixed_t=0.9,
        mask_layout={"B": 3, "LEN": 30, "modality_positions": [[[1, 4], [8, 6], [20, 3]], [[0, 0], [5, 10], [0, 0]],
                                                               [[2, 2], [4, 26], [0, 0]]]},
    ),
    # the public sizes with the grid and steps changed: a 2x2 token grid, one-step and many-step
    # samplers, prompts the official code cuts to max_text_len (t2i, t2v)
    "c": dict(
        seed=4242, image_latent_height=2, vae_image_shape=[1, 3, 1, 32, 32], vae_video_shape=[1, 3, 1, 16, 16],
        t2i_prompts=["a red cube on a table", "a"], t2v_prompts=["waves at sunset over the sea"], t2i_max_seq_len=16, t2i_steps=2, t2i_guidance=1.0, t2i_fixed_t=0.0,
        mmu_question="?", mmu_max_new_tokens=4, t2v_latent_frames=1, t2v_max_seq_len=24, t2v_steps=9,
        t2v_guidance=7.5, t2v_fixed_t=0.999, vid_und_frames=1, vid_und_max_new_tokens=3, dynres_grid=3,
        dynres_max_seq_len=32, dynres_prompt="hi", dynres_fixed_t=0.5, llm_kv_heads=1, head_kv_heads=1,
        mask_layout={"B": 1, "LEN": 8, "modality_positions": [[[0, 8]]]},
    ),
    # a degenerate but official-supported draw: a SigLIP of depth 1 (no semantic layer left after the
    # deleted last one), one LLM and one flow-head layer, a 512-row LLM config table, guidance 0 for
    # video (the official t2i_generate then skips guidance: the conditional rows' own velocity) and 1
    # for images, fixed t 0 / 0.999 / 1, shift 1.0, three video prompts, five latent frames, a cut
    # prompt with CJK and emoji, tabs / CRLF / doubled spaces in questions and prompts
    "g": dict(
        seed=5, hidden_size=32, llm_intermediate_size=48, llm_layers=1, llm_heads=2, llm_kv_heads=1,
        llm_config_vocab_size=512, tie_word_embeddings=False, rope_theta=1000.0, clip_latent_dim=16,
        siglip_intermediate_size=24, siglip_layers_before_deletion=1, siglip_heads=1, head_hidden=24, head_dim=12,
        head_intermediate=40, head_heads=2, head_kv_heads=1, num_diffusion_layers=1, image_latent_height=3,
        vae_image_shape=[1, 3, 1, 48, 48], vae_video_shape=[1, 3, 5, 32, 16],
        t2i_prompts=['a very long prompt 漢字 🌊🌊 that the official code has to cut because it is far too long'],
        t2i_max_seq_len=24, t2i_steps=12, t2i_guidance=1.0, t2i_fixed_t=0.999, time_shifting_factor=1.0,
        mmu_question='Describe\tthe image\r\nin detail, please.', mmu_max_new_tokens=16,
        t2v_prompts=['🎆', 'x', '  spaces  '], t2v_latent_frames=5, t2v_max_seq_len=56, t2v_steps=2, t2v_guidance=0.0,
        t2v_fixed_t=0.0, vid_und_frames=5, vid_und_question='日本語で説明して', vid_und_max_new_tokens=4, dynres_grid=4,
        dynres_max_seq_len=30, dynres_prompt='ab  cd\n', dynres_fixed_t=1.0,
        mask_layout={"B": 1, "LEN": 20, "modality_positions": [[[19, 1], [1, 17]]]},
    ),
    # the released checkpoints' proportions at tiny width (probe BF): "7b" Qwen2.5-7B's 7:1 GQA,
    # intermediate 5.29x hidden, rope_theta 1e6, untied, a larger LLM config table, and a flow head
    # NARROWER than the LLM; "1.5b" Qwen2.5-1.5B's 6:1 GQA, 5.83x, tied, a flow head WIDER than the
    # LLM. Both: the flow head's 4:1 GQA and 4x MLP, SigLIP-so400m's 16 heads and 3.74x MLP, the
    # real LLM configs' window fields and token ids, 8 / 4 video-understanding frames.
    "7b": dict(_SHAPES_OF_RELEASED, seed=7070, hidden_size=56, llm_intermediate_size=296, llm_layers=2, llm_heads=7,
               llm_kv_heads=1, llm_config_vocab_size=600, tie_word_embeddings=False, vae_video_shape=[1, 3, 9, 24, 24],
               t2i_prompts=["a photo of a cat", "an astronaut riding a horse on the moon, highly detailed"],
               t2i_max_seq_len=30, t2i_steps=5, t2i_fixed_t=0.5, mmu_question="Describe the image in detail.",
               t2v_prompts=["a dog runs on the beach"], t2v_latent_frames=5, t2v_max_seq_len=64, t2v_fixed_t=0.3,
               vid_und_frames=8, dynres_grid=4, dynres_fixed_t=0.2,
               llm_config_extra=dict(_RELEASED_LLM_EXTRA, max_window_layers=28, sliding_window=131072)),
    "1.5b": dict(_SHAPES_OF_RELEASED, seed=1515, hidden_size=24, llm_intermediate_size=140, llm_layers=3, llm_heads=12,
                 llm_kv_heads=2, llm_config_vocab_size=560, tie_word_embeddings=True, vae_video_shape=[1, 3, 5, 24, 24],
                 t2i_prompts=["a photo of a cat"], t2i_max_seq_len=24, t2i_steps=6, t2i_fixed_t=0.8,
                 mmu_question="What is shown?", t2v_prompts=["fireworks"], t2v_latent_frames=3, t2v_max_seq_len=40,
                 t2v_fixed_t=0.7, vid_und_frames=4, dynres_grid=5, dynres_fixed_t=0.4,
                 llm_config_extra=dict(_RELEASED_LLM_EXTRA, max_window_layers=21, sliding_window=32768)),
}

VAE_MEAN = [-0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508, 0.4134, -0.0715, 0.5517, -0.3632,
            -0.1922, -0.9497, 0.2503, -0.2921]  # the official WanVAE wrapper's constants
VAE_STD = [2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743, 3.2687, 2.1526, 2.8652, 1.5579, 1.6382,
           1.1253, 2.8251, 1.9160]
SYSTEM = "system\nYou are a helpful assistant.<|im_end|>"
ROLE_A, ROLE_B = "\n<|im_start|>user\n", "\n<|im_start|>assistant\n"


def smooth(gen, shape, scale=4):
    """A smooth random picture in [-1, 1]: low-resolution noise upsampled bilinearly, through tanh."""
    b, c, t, h, w = shape
    low = torch.randn(b * t, c, max(1, h // scale), max(1, w // scale), generator=gen)
    up = torch.nn.functional.interpolate(low, size=(h, w), mode="bilinear", align_corners=False)
    return torch.tanh(up).reshape(b, t, c, h, w).permute(0, 2, 1, 3, 4).contiguous()


class SetMaker:
    def __init__(self, spec: dict, out: Path, tokenizer_from: Path):
        self.s, self.out = spec, out
        self.gen = torch.Generator().manual_seed(spec["seed"])
        self.cases: dict = {}
        self.tokenizer_from = tokenizer_from

    # ---- model, tokenizer, VAE --------------------------------------------------------------
    def geometry(self) -> Geometry:
        s = self.s
        return Geometry(vocab=s.get("llm_vocab_size", 282), hidden=s["hidden_size"], intermediate=s["llm_intermediate_size"],
                        layers=s["llm_layers"], heads=s["llm_heads"], kv_heads=s["llm_kv_heads"],
                        rope_theta=s["rope_theta"], clip_dim=s["clip_latent_dim"],
                        clip_layers=s["siglip_layers_before_deletion"] - 1, clip_heads=s["siglip_heads"],
                        clip_intermediate=s["siglip_intermediate_size"], grid=s["image_latent_height"],
                        head_hidden=s["head_hidden"], head_dim=s["head_dim"], head_intermediate=s["head_intermediate"],
                        head_heads=s["head_heads"], head_kv_heads=s["head_kv_heads"],
                        head_layers=s["num_diffusion_layers"])

    def build_model(self):
        from safetensors.torch import save_file

        s, g = self.s, self.geometry()
        model_dir = self.out / "model"
        model_dir.mkdir(parents=True, exist_ok=True)
        self.kwargs = write_configs(model_dir, g)
        self.kwargs["patch_size"] = s.get("patch_size", 2)  # latent pixels per token side (official config)
        # a non-square token grid: image/video_latent_width beside the height (= image_latent_height)
        self.grid_w = s.get("image_latent_width", g.grid)
        self.kwargs.update(image_latent_width=self.grid_w, video_latent_width=self.grid_w)
        if s.get("video_latent_grid"):  # [h, w]: config.json's video grid alone (the 512 / 1024 px demo configs
            # say 27 beside an image grid of 32 / 64; the official model reads neither video field)
            self.kwargs.update(video_latent_height=s["video_latent_grid"][0], video_latent_width=s["video_latent_grid"][1])
        llm = json.loads((model_dir / "llm" / "config.json").read_text())
        llm.update(vocab_size=s["llm_config_vocab_size"], tie_word_embeddings=s["tie_word_embeddings"],
                   bos_token_id=257, eos_token_id=258, max_position_embeddings=4096)
        llm.update(s.get("llm_config_extra") or {})  # other Qwen2 config fields the official code reads
        for key in s.get("llm_config_drop") or ():  # fields a config leaves out (a transformers 5 config: rope_theta)
            llm.pop(key, None)
        (model_dir / "llm" / "config.json").write_text(json.dumps(llm, indent=2))
        if s.get("siglip_vision_extra") or s.get("siglip_table_side"):  # other SigLIP vision-config fields
            sig = json.loads((model_dir / "siglip" / "config.json").read_text())
            if s.get("siglip_table_side"):  # a position table of side**2 rows, whatever the token grid
                sig["vision_config"]["image_size"] = 14 * s["siglip_table_side"]
            sig["vision_config"].update(s.get("siglip_vision_extra") or {})
            (model_dir / "siglip" / "config.json").write_text(json.dumps(sig, indent=1))
        for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
            shutil.copy(self.tokenizer_from / "model" / "llm" / name, model_dir / "llm" / name)
        self.g = g
        model = build_official(self.kwargs, g)
        # the weights' scale (``init_gain``, ``llm_gain``, ``embed_std``; the public set's 1.0 / 1.5 / 0.05
        # by default): larger draws give the large activations and logits of a trained model
        randomize(model, seed=s["seed"], **{k: s[k] for k in ("init_gain", "llm_gain", "embed_std") if k in s})
        # ``lm_head_rows_from``: [[to, from, scale], ...] sets the output row of id ``to`` to ``scale`` x
        # that of id ``from`` (tied: the embedding row too), e.g. eos taking a token greedy decoding
        # picks, so the official answer stops on eos before max_new_tokens (an early stop)
        with torch.no_grad():
            for to, src, scale in s.get("lm_head_rows_from") or ():
                model.showo.lm_head.weight[to] = model.showo.lm_head.weight[src] * scale
        self.model = model
        save_official(model, self.kwargs, model_dir, g)  # the .bin and config.json, as save_pretrained
        if s.get("weights_dtype", "float32") != "float32" or s.get("max_shard_size"):
            self.save_as_released(model_dir)  # the cases then use what the official from_pretrained loads
        else:
            state = model.state_dict()
            save_file({k: v.clone().contiguous() for k, v in state.items()}, str(model_dir / "pytorch_model.safetensors"))
        (model_dir / "geometry.json").unlink()  # the harness's own record; not in the public format
        state = self.model.state_dict()
        from models.misc import get_text_tokenizer

        self.tok, self.ids = get_text_tokenizer(str(model_dir / "llm"), add_showo_tokens=True,
                                                return_showo_token_ids=True, llm_name="qwen2_5")
        # the public tokenizer has 282 entries; another --tokenizer-from (more added tokens: other
        # special-token ids) needs a table of at least its length (spec llm_vocab_size)
        assert len(self.tok) <= g.vocab, (len(self.tok), g.vocab)
        self.state_info = {"num_keys": len(state), "tied_lm_head": s["tie_word_embeddings"],
                           "num_params_unique": sum(p.numel() for p in model.parameters())}

    def save_as_released(self, model_dir: Path):
        """``weights_dtype`` (``bfloat16`` as the released Show-o2 files, or ``float16``) and
        ``max_shard_size`` (e.g. ``"200KB"``): the weights rounded to that dtype and saved by the
        official ``save_pretrained`` (``pytorch_model.bin``, or its shards
        ``pytorch_model-0000k-of-0000n.bin`` and ``diffusion_pytorch_model.bin.index.json``), the
        safetensors beside them in that dtype (sharded: ``model-0000k-of-0000n.safetensors`` and
        ``model.safetensors.index.json`` by huggingface_hub, as transformers names them; the
        official loader reads the .bin); the model the cases use is the official
        ``from_pretrained`` of that folder (float32 parameters holding the stored values)."""
        import copy
        import tempfile

        from huggingface_hub import save_torch_state_dict
        from official_harness import load_official_pretrained
        from safetensors.torch import save_file

        s = self.s
        dtype = getattr(torch, s.get("weights_dtype", "float32"))
        shard = s.get("max_shard_size")
        typed = copy.deepcopy(self.model).to(dtype)
        (model_dir / "pytorch_model.bin").unlink()
        with tempfile.TemporaryDirectory() as tmp:
            typed.save_pretrained(tmp, safe_serialization=False, **({"max_shard_size": shard} if shard else {}))
            for f in Path(tmp).iterdir():
                if f.name.endswith((".bin", ".index.json")):
                    shutil.move(str(f), str(model_dir / f.name))
        clones = {k: v.clone().contiguous() for k, v in typed.state_dict().items()}
        if shard:
            save_torch_state_dict(clones, str(model_dir), max_shard_size=shard)
        else:
            save_file(clones, str(model_dir / "pytorch_model.safetensors"))
        loaded, _ = load_official_pretrained(model_dir)
        want = {k: v.float() for k, v in typed.state_dict().items()}
        for k, v in loaded.state_dict().items():
            assert v.dtype == torch.float32 and torch.equal(v, want[k]), k
        self.model = loaded

    def build_vae(self):
        from models.wan21_vae import WanVAE_
        from safetensors.torch import save_file

        vae_dir = self.out / "vae"
        vae_dir.mkdir(parents=True, exist_ok=True)
        cfg = dict(dim=self.s["vae_dim"], z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                   temperal_downsample=[False, True, True], dropout=0.0)
        cfg.update(self.s.get("vae_extra") or {})  # other WanVAE_ constructor kwargs (attn_scales, ...)
        torch.manual_seed(self.s["seed"] + 1)
        vae = WanVAE_(**cfg).eval()
        state = vae.state_dict()
        torch.save(state, vae_dir / "Wan2.1_VAE_tiny.pth")
        save_file({k: state[k].contiguous() for k in sorted(state)}, str(vae_dir / "wan21_vae.safetensors"))
        (vae_dir / "config.json").write_text(json.dumps(
            dict(cfg, temperal_upsample=cfg["temperal_downsample"][::-1], latents_mean=VAE_MEAN, latents_std=VAE_STD,
                 note="constructor kwargs of the official WanVAE_ class; the official wrapper hard-codes dim=96"),
            indent=1))
        self.vae = vae
        self.vae_scale = [torch.tensor(VAE_MEAN), 1.0 / torch.tensor(VAE_STD)]
        self.vae_info = {"config": cfg, "num_keys": len(state), "mean": VAE_MEAN, "std": VAE_STD}

    def encode(self, pixels):
        with torch.no_grad():
            mu, logvar, _ = self.vae.encode(pixels, self.vae_scale)
        return mu, logvar

    def save(self, name: str, tensors: dict, info: dict):
        from safetensors.torch import save_file

        (self.out / "cases").mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().contiguous() for k, v in tensors.items()}
        save_file(tensors, str(self.out / "cases" / f"{name}.safetensors"))
        info = dict(info, shapes={k: list(v.shape) for k, v in tensors.items()})
        self.cases[name] = info

    # ---- (a) VAE ----------------------------------------------------------------------------
    def case_vae(self):
        s = self.s
        video = torch.rand(s["vae_video_shape"], generator=self.gen) * 2 - 1
        # a batch of images for the VAE case alone (``vae_image_batch``); understanding reads the first
        shape = list(s["vae_image_shape"])
        image = smooth(self.gen, [s.get("vae_image_batch", shape[0])] + shape[1:])
        self.image_input = image[:shape[0]]
        out = {}
        for p, x in (("video", video), ("image", image)):
            with torch.no_grad():
                mu, logvar, _ = self.vae.encode(x, self.vae_scale)
                raw, _, _ = self.vae.encode(x, [0.0, 1.0])
                dec = self.vae.decode(mu, self.vae_scale)
            out.update({f"{p}_input": x, f"{p}_latent_mean_normalized": mu, f"{p}_latent_mean_raw": raw,
                        f"{p}_latent_logvar": logvar, f"{p}_decoded_unclamped": dec})
        self.save("vae", out, {})

    # ---- (d) omni mask ----------------------------------------------------------------------
    def case_omni_mask(self):
        from models import omni_attn_mask_naive

        lay = self.s["mask_layout"]
        mp = torch.tensor(lay["modality_positions"])
        allowed = omni_attn_mask_naive(lay["B"], lay["LEN"], mp, "cpu", inverted=False).bool()
        inv = omni_attn_mask_naive(lay["B"], lay["LEN"], mp, "cpu", inverted=True)
        self.save("omni_mask", {"mask_bool": allowed, "modality_positions": mp, "mask_additive_int64": inv,
                                "mask_additive_float32": inv.to(torch.float32)}, dict(lay))

    # ---- (b) / (e2) understanding -----------------------------------------------------------
    def _visual(self, latents):
        m = self.model
        und = m.image_embedder_und(latents)
        und_out = m.und_trans(und + m.position_embedding(m.image_position_ids))["last_hidden_state"]
        gen = m.image_embedder_gen(latents)
        fused = m.fusion_proj(torch.cat([und_out, gen], dim=-1))
        return und, und_out, gen, fused

    def _understand(self, name, latents, question, max_new, video_frames=0):
        from models import omni_attn_mask_naive

        m, tok, ids = self.model, self.tok, self.ids
        g2 = self.g.grid * self.grid_w
        sys_ids = tok(SYSTEM, add_special_tokens=False)["input_ids"]
        role_a = tok(ROLE_A, add_special_tokens=False)["input_ids"]
        role_b = tok(ROLE_B, add_special_tokens=False)["input_ids"]
        q_ids = tok(question, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            und, und_out, gen, fused = self._visual(latents)
            if video_frames:
                tmp = fused.reshape(video_frames, self.g.grid, self.grid_w, fused.size(-1)).permute(0, 3, 1, 2).contiguous()
                tmp = torch.nn.functional.interpolate(tmp, size=(14, 14), mode="bilinear")
                visual = tmp.permute(0, 2, 3, 1).reshape(-1, fused.size(-1)).unsqueeze(0)
            else:
                visual = fused
            a = torch.tensor([ids["bos_id"]] + sys_ids + role_a)[None]
            b = torch.tensor([ids["boi_id"], ids["eoi_id"]] + q_ids + role_b)[None]
            ea, eb = m.showo.model.embed_tokens(a), m.showo.model.embed_tokens(b)
            time_embeds = m.time_embed(torch.Tensor([[1.0]]), ea.dtype)
            time_proj = m.time_embed_proj(time_embeds) if hasattr(m, "time_embed_proj") else time_embeds.clone()
            embeds = torch.cat([ea, eb[:, :1], time_proj, visual, eb[:, 1:]], dim=1)
            mp = torch.tensor([a.shape[1] + 2, g2 + 1])[None, None, :]
            mask = omni_attn_mask_naive(1, embeds.size(1), mp, "cpu", inverted=True).to(embeds.dtype)
            allowed = omni_attn_mask_naive(1, embeds.size(1), mp, "cpu", inverted=False).bool()
            logits = m.showo(inputs_embeds=embeds, attention_mask=mask)["logits"]
            steps = []
            showo_forward = m.showo.forward

            def recording(*args, **kwargs):
                out = showo_forward(*args, **kwargs)
                steps.append(out["logits"][0, -1].clone())
                return out

            m.showo.forward = recording
            try:
                out_ids = m.mmu_generate(input_embeds=embeds, attention_mask=mask, top_k=1, max_new_tokens=max_new,
                                         eos_token=tok.eos_token_id)
            finally:
                del m.showo.forward
        step_logits = torch.stack(steps)
        top2 = step_logits.topk(2, dim=-1).values
        info = {"question": question, "question_ids": q_ids, "system_prompt_text": SYSTEM, "system_prompt_ids": sys_ids,
                "role_a_text": ROLE_A, "role_a_ids": role_a, "role_b_text": ROLE_B, "role_b_ids": role_b,
                "text_tokens_a": a[0].tolist(), "text_tokens_b": b[0].tolist(), "seq_len": embeds.size(1),
                "time_embed_position": a.shape[1] + 1, "modality_positions": mp.tolist(),
                "generated_token_ids": [int(i) for i in out_ids], "max_new_tokens": max_new, "top_k": 1,
                "temperature": 1.0, "eos_token_id": tok.eos_token_id,
                "greedy_top1_minus_top2_margins": (top2[:, 0] - top2[:, 1]).tolist()}
        tensors = {"generated_token_ids": torch.tensor([int(i) for i in out_ids]), "modality_positions": mp,
                   "text_tokens_a": a[0], "text_tokens_b": b[0], "fusion_out": fused, "gen_patch_embeds": gen,
                   "generation_step_logits": step_logits, "image_latents": latents,
                   "time_embed_proj_t1": time_proj, "time_embed_t1": time_embeds, "und_patch_embeds": und,
                   "und_trans_out": und_out}
        if video_frames:
            tensors["prompt_logits_last8"] = logits[:, -8:]
            tensors["video_tokens_after_interp_frame0"] = visual[:, :196]
        else:
            tensors.update(input_embeds=embeds, prompt_logits=logits, attention_mask_bool=allowed)
        self.save(name, tensors, info)

    def case_mmu(self):
        latents = self.encode(self.image_input)[0].squeeze(2)
        self._understand("mmu", latents, self.s["mmu_question"], self.s["mmu_max_new_tokens"])

    def case_vid_und(self):
        f = self.s["vid_und_frames"]
        shape = list(self.s["vae_image_shape"])
        frames = [smooth(self.gen, shape) for _ in range(f)]
        latents = torch.cat([self.encode(x)[0].squeeze(2) for x in frames])
        self._understand("vid_und", latents, self.s["vid_und_question"], self.s["vid_und_max_new_tokens"],
                         video_frames=f)

    # ---- (c) / (e1) / (f) generation --------------------------------------------------------
    def _generate(self, name, model, prompts, grid, frames, max_seq_len, guidance, steps, fixed_t, extra=None,
                  first_frame=None):
        from models import omni_attn_mask_naive
        from models.misc import prepare_gen_input
        from transport import Sampler, create_transport

        ids, shift = self.ids, self.s["time_shifting_factor"]
        video = frames > 0
        grid_h, grid_w = grid if isinstance(grid, tuple) else (grid, grid)
        n_tok = (frames or 1) * grid_h * grid_w + 1
        max_text_len = max_seq_len - n_tok - 4
        assert max_text_len >= 0, f"{name}: max_seq_len {max_seq_len} leaves no room for {n_tok} visual tokens"
        bo, eo, pad_tok = (("bov_id", "eov_id", "vid_pad_id") if video else ("boi_id", "eoi_id", "img_pad_id"))
        cond, uncond, mp, mp_null = prepare_gen_input(prompts, self.tok, n_tok, ids["bos_id"], ids["eos_id"], ids[bo],
                                                      ids[eo], self.tok.pad_token_id, ids[pad_tok], max_text_len, "cpu")
        tokens, positions = torch.cat([cond, uncond]), torch.cat([mp, mp_null])
        prompt_ids = [self.tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
        p_n, p = len(prompts), self.kwargs["patch_size"]
        shape = (p_n, 16, frames, p * grid_h, p * grid_w) if video else (p_n, 16, p * grid_h, p * grid_w)
        x = torch.randn(shape, generator=self.gen)
        z = torch.randn(shape, generator=self.gen).to(torch.bfloat16).float()
        cond_kw = {}
        if first_frame is not None:  # image-to-video: a clean latent in frame 0, its velocity zeroed (spec §6.5)
            x[:, :, 0], z[:, :, 0] = first_frame, first_frame
            cond_kw = {"first_frame_as_cond": True}
        t = torch.full((2 * p_n,), fixed_t)
        mask = omni_attn_mask_naive(2 * p_n, max_seq_len, positions, "cpu").to(torch.float32)
        allowed = omni_attn_mask_naive(2 * p_n, max_seq_len, positions, "cpu", inverted=False).bool()
        caught = {}
        hooks = [model.fusion_proj.register_forward_hook(lambda mod, i, o: caught.__setitem__("fusion", o)),
                 model.showo.model.norm.register_forward_hook(lambda mod, i, o: caught.__setitem__("hidden", o))]
        with torch.no_grad():
            _, v = model(tokens, image_latents=torch.cat([x, x]), t=t, attention_mask=mask, modality_positions=positions,
                         output_hidden_states=True, max_seq_len=max_seq_len, **cond_kw)
            for h in hooks:
                h.remove()
            te = model.time_embed(t, torch.float32)
            tep = model.time_embed_proj(te) if hasattr(model, "time_embed_proj") else te.clone()  # equal widths
            vg = model.t2i_generate(image_latents=torch.cat([x, x]), t=t.clone(), text_tokens=tokens,
                                    attention_mask=mask, modality_positions=positions, max_seq_len=max_seq_len,
                                    guidance_scale=guidance, **cond_kw)[:p_n]
            called = []
            transport = create_transport(path_type="Linear", prediction="velocity", loss_weight=None, train_eps=None,
                                         sample_eps=None, snr_type="lognorm", do_shift=True,
                                         seq_len=int(positions[0, 0, 1]))
            fn = Sampler(transport).sample_ode(sampling_method="euler", num_steps=steps, atol=1e-6, rtol=1e-3,
                                               reverse=False, time_shifting_factor=shift)

            def model_fn(xx, tt, **kw):
                called.append(float(tt.reshape(-1)[0]))
                return model.t2i_generate(xx, tt, **kw)

            traj = fn(torch.cat([z, z]), model_fn, text_tokens=tokens, attention_mask=mask, modality_positions=positions,
                      output_hidden_states=True, max_seq_len=max_seq_len, guidance_scale=guidance, **cond_kw)
        traj = torch.stack(list(traj))[:, :p_n]
        s_ = torch.linspace(0, 1, steps)
        grid_t = s_ / (s_ + shift - shift * s_) if shift else s_  # the official ode: a shift of 0 is none
        assert torch.allclose(torch.tensor(called + [1.0]), grid_t, atol=1e-6), (called, grid_t)
        tensors = {"modality_positions": positions, "text_tokens": tokens, "final_latents": traj[-1],
                   "fixed_t_fusion_out": caught["fusion"], "fixed_t_t": t, "fixed_t_time_embed": te,
                   "fixed_t_time_embed_proj": tep, "fixed_t_velocity": v, "fixed_t_velocity_guided": vg,
                   "fixed_t_x_per_prompt": x, "sampler_t_grid": grid_t, "z_init_per_prompt": z,
                   "attention_mask_bool": allowed}
        if not video and not extra:
            with torch.no_grad():
                decoded = self.vae.decode(traj[-1][:1, :, None], self.vae_scale).clamp(-1, 1)
            tensors.update(fixed_t_llm_last_hidden=caught["hidden"], sampler_trajectory=traj,
                           final_decoded_clamped_first_prompt=decoded[:, :, 0])
        info = {"prompts": prompts, "prompt_ids": prompt_ids, "num_image_tokens_incl_time": n_tok,
                "max_seq_len": max_seq_len, "max_text_len": max_text_len, "text_tokens": tokens.tolist(),
                "modality_positions": positions.tolist(), "guidance_scale": guidance, "num_steps": steps,
                "integrator": "torchdiffeq odeint, method='euler' (fixed grid = t_grid)", "atol": 1e-6, "rtol": 1e-3,
                "time_shifting_factor": shift, "t_grid": grid_t.tolist(), "model_called_at_t": called,
                "fixed_t": fixed_t, "latent_shape_per_sample": list(shape[1:]),
                "prompts_cut_to_max_text_len": [len(p) > max_text_len for p in prompt_ids],
                "z_init_note": "drawn as float32 normal, rounded to bfloat16, back to float32"}
        if first_frame is not None:
            info["first_frame_as_cond"] = True
        info.update(extra or {})
        self.save(name, tensors, info)

    def case_t2i(self):
        s = self.s
        self._generate("t2i", self.model, s["t2i_prompts"], (self.g.grid, self.grid_w), 0, s["t2i_max_seq_len"], s["t2i_guidance"],
                       s["t2i_steps"], s["t2i_fixed_t"])

    def case_t2v(self):
        s = self.s
        self._generate("t2v", self.model, s["t2v_prompts"], (self.g.grid, self.grid_w), s["t2v_latent_frames"], s["t2v_max_seq_len"],
                       s["t2v_guidance"], s["t2v_steps"], s["t2v_fixed_t"])

    def case_i2v(self):
        """Image-to-video (spec §6.5, §8.4): the model forward's ``first_frame_as_cond``, which zeroes
        the velocity of latent frame 0, with a VAE-encoded image's latent (the mean) as that frame of
        the fixed-t latent and of the initial noise, for every prompt; one time token for the video.
        No released script runs it: this is the official forward and sampler with that switch on."""
        s = self.s
        frames = s.get("i2v_latent_frames", max(s["t2v_latent_frames"], 2))
        first = torch.cat([self.encode(smooth(self.gen, list(s["vae_image_shape"])))[0][:, :, 0]
                           for _ in s.get("i2v_prompts", s["t2v_prompts"])])
        self._generate("i2v", self.model, s.get("i2v_prompts", s["t2v_prompts"]), (self.g.grid, self.grid_w), frames,
                       s.get("i2v_max_seq_len", s["t2v_max_seq_len"]), s.get("i2v_guidance", s["t2v_guidance"]),
                       s.get("i2v_steps", s["t2v_steps"]), s.get("i2v_fixed_t", s["t2v_fixed_t"]), first_frame=first)

    def case_t2i_dynres(self):
        from models.misc import interpolate_pos_encoding
        from safetensors.torch import save_file

        s, d = self.s, self.s["dynres_grid"]
        dh, dw = (d, d) if isinstance(d, int) else d  # [height, width] for a non-square grid
        overrides = dict(image_latent_height=dh, image_latent_width=dw, video_latent_height=dh, video_latent_width=dw)
        model = build_official(dict(self.kwargs, **overrides), self.g)
        model.load_state_dict(self.model.state_dict())
        self._generate("t2i_dynres", model, [s["dynres_prompt"]], (dh, dw), 0, s["dynres_max_seq_len"], s["t2i_guidance"],
                       3, s["dynres_fixed_t"], extra={"config_overrides": overrides})
        with torch.no_grad():
            pe = interpolate_pos_encoding(self.g.clip_dim, model.position_embedding, dh, dw, 1)
        save_file({"interpolated_position_embedding": pe.contiguous()},
                  str(self.out / "cases" / "t2i_dynres_posemb.safetensors"))

    def write_meta(self, name: str):
        import diffusers
        import transformers

        meta = {"set": name, "seed": self.s["seed"], "spec": self.s,
                "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                             "diffusers": diffusers.__version__, "threads": torch.get_num_threads(),
                             "official_commit": "45a5a2de01d1ebd10cd5864d29310a76476cdf23"},
                "tokenizer": {"len_tokenizer": len(self.tok), "showo_token_ids": self.ids,
                              "eos_token_id": self.tok.eos_token_id},
                "state_dict": self.state_info,
                "diffusion_head_config_used": {"hidden_size": self.g.head_hidden, "head_dim": self.g.head_dim,
                                               "intermediate_size": self.g.head_intermediate,
                                               "num_attention_heads": self.g.head_heads,
                                               "num_key_value_heads": self.g.head_kv_heads},
                "vae": self.vae_info, "cases": self.cases, "made_by": "benchmarks/make_parity_set.py"}
        (self.out / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--official", type=Path, required=True, help="the official code's show-o2/ folder")
    ap.add_argument("--site", type=Path, help="put first on sys.path (transformers 4.47 / diffusers 0.31)")
    ap.add_argument("--variant", default="b", help=f"one of {sorted(VARIANTS)} or 'public'")
    ap.add_argument("--spec", type=Path, help="a JSON file of overrides of the public spec (instead of --variant)")
    ap.add_argument("--tokenizer-from", type=Path, default=HERE.parent.parent / "shared" / "parity")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    import_official(args.official, args.site)
    overrides = json.loads(args.spec.read_text()) if args.spec else ({} if args.variant == "public"
                                                                    else VARIANTS[args.variant])
    spec = dict(PUBLIC, **overrides)
    if args.out.exists():
        shutil.rmtree(args.out)
    maker = SetMaker(spec, args.out, args.tokenizer_from)
    maker.build_model()
    maker.build_vae()
    for step in (maker.case_vae, maker.case_omni_mask, maker.case_mmu, maker.case_vid_und, maker.case_t2i,
                 maker.case_t2v, maker.case_t2i_dynres, maker.case_i2v):
        step()
    maker.write_meta(args.spec.stem if args.spec else args.variant)
    print(f"wrote {args.out}: cases {sorted(maker.cases)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
