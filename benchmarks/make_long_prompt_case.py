"""Make the long-prompt t2i parity case (tests/data/parity_long_prompt/) WITH the official code.

    python benchmarks/make_long_prompt_case.py --official PATH/TO/Show-o/show-o2 --site PATH/TO/official-site

A tiny official-format checkpoint whose LLM width (40) matches no registry entry is built by the
official classes (random weights, fixed seed) and stored as safetensors beside the case, so the
case needs no other fixture set. The prompt is 100 byte-level tokens, longer than any budget a
reader might guess for an unknown width; the rows use the official default ``max_seq_len`` 1024.
Recorded: the token rows and blocks, one forward at a fixed t (both rows' velocities and the
guided one) and the full official Euler sampler (6 grid points, g = 5), in float32 on CPU.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from official_harness import (  # noqa: E402
    Geometry,
    build_official,
    gen_token_rows,
    import_official,
    official_sample,
    randomize,
    special_ids,
    write_configs,
)

GEOMETRY = Geometry(vocab=282, hidden=40, intermediate=64, layers=2, heads=4, kv_heads=2, clip_dim=24, clip_layers=1,
                    clip_heads=2, clip_intermediate=48, grid=4, head_hidden=32, head_dim=8, head_intermediate=64,
                    head_heads=4, head_kv_heads=2, head_layers=1)
PROMPT = ("a long prompt: a small red cube on a wooden table beside a blue sphere, lit from the left, "
          "soft shadows")
MAX_SEQ_LEN = 1024  # the official yaml's max_seq_length
GUIDANCE, STEPS, SHIFT, FIXED_T = 5.0, 6, 3.0, 0.3


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--official", type=Path, required=True, help="the official code's show-o2/ folder")
    ap.add_argument("--site", type=Path, help="put first on sys.path (transformers 4.47 / diffusers 0.31)")
    ap.add_argument("--out", type=Path, default=HERE.parent / "tests" / "data" / "parity_long_prompt")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    import_official(args.official, args.site)
    from safetensors.torch import save_file

    g = GEOMETRY
    model_dir = args.out / "model"
    model_dir.mkdir(parents=True, exist_ok=True)
    kwargs = write_configs(model_dir, g)
    model = build_official(kwargs, g)
    randomize(model, seed=12)
    state = {k: v.clone().contiguous() for k, v in model.state_dict().items()}  # the tied lm_head as its own copy
    save_file(state, str(model_dir / "pytorch_model.safetensors"))
    config = {k: v for k, v in dict(model.config).items() if not k.startswith("_")}
    config = {k: config[k] for k in ("add_qk_norm", "add_time_embeds", "clip_latent_dim", "hidden_size",
                                     "image_latent_dim", "image_latent_height", "image_latent_width",
                                     "llm_vocab_size", "load_from_showo", "num_diffusion_layers", "patch_size",
                                     "video_latent_height", "video_latent_width")}
    config.update(_class_name="Showo2Qwen2_5", _diffusers_version="0.31.0", llm_model_path="llm",
                  clip_pretrained_model_path="siglip")
    (model_dir / "config.json").write_text(json.dumps(dict(sorted(config.items())), indent=1) + "\n")

    ids = special_ids(g.vocab)
    prompt_ids = list(PROMPT.encode())  # the tiny byte-level tokenizer: id = byte value
    assert len(prompt_ids) > 64, len(prompt_ids)
    num_image_tokens = g.grid * g.grid + 1
    cond, uncond, mp, mp_null = gen_token_rows(prompt_ids, num_image_tokens, MAX_SEQ_LEN, ids)
    text_tokens, positions = torch.cat([cond, uncond]), torch.cat([mp, mp_null])
    gen = torch.Generator().manual_seed(5)
    side = 2 * g.grid
    x = torch.randn(1, 16, side, side, generator=gen)
    z = torch.randn(1, 16, side, side, generator=gen).to(torch.bfloat16).float()
    from models import omni_attn_mask_naive

    mask = omni_attn_mask_naive(2, MAX_SEQ_LEN, positions, "cpu").to(torch.float32)
    with torch.no_grad():
        _, v = model(text_tokens, image_latents=torch.cat([x, x]), t=torch.full((2,), FIXED_T), attention_mask=mask,
                     modality_positions=positions, output_hidden_states=True, max_seq_len=MAX_SEQ_LEN)
        guided = model.t2i_generate(image_latents=torch.cat([x, x]), t=torch.full((2,), FIXED_T),
                                    text_tokens=text_tokens, attention_mask=mask, modality_positions=positions,
                                    max_seq_len=MAX_SEQ_LEN, guidance_scale=GUIDANCE)[:1]
        final = official_sample(model, torch.cat([z, z]), text_tokens, positions, MAX_SEQ_LEN, GUIDANCE, STEPS,
                                SHIFT)
    save_file({"text_tokens": text_tokens.contiguous(), "modality_positions": positions.contiguous(),
               "fixed_t_x_per_prompt": x, "fixed_t_velocity": v.float().contiguous(),
               "fixed_t_velocity_guided": guided.float().contiguous(), "z_init_per_prompt": z,
               "final_latents": torch.chunk(final, 2)[0].float().contiguous()},
              str(args.out / "case.safetensors"))
    meta = {"prompt": PROMPT, "prompt_ids": prompt_ids, "max_seq_len": MAX_SEQ_LEN, "guidance_scale": GUIDANCE,
            "num_steps": STEPS, "time_shifting_factor": SHIFT, "fixed_t": FIXED_T,
            "num_image_tokens_incl_time": num_image_tokens, "special_ids": ids, "geometry": asdict(g),
            "official_commit": "45a5a2de01d1ebd10cd5864d29310a76476cdf23", "made_by": "benchmarks/make_long_prompt_case.py"}
    (args.out / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(f"wrote {args.out}: prompt {len(prompt_ids)} tokens, rows {tuple(text_tokens.shape)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
