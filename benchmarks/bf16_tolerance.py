"""How far bfloat16 moves every path from float32, on the parity fixture model (official outputs).

    python benchmarks/bf16_tolerance.py --parity ../shared/parity --out benchmarks/results/bf16-tolerance.json

For each path the model is loaded twice through ``showo2_cli.loading.load`` (float32 and
bfloat16, VAE included) and run on the fixture's inputs; both are compared with the official
float32 outputs stored in the fixtures. Reported per tensor: the largest absolute difference,
the same relative to the tensor's largest magnitude, and for text the greedy ids (do they match
the official ones, and at which step do they first differ). Paths: VAE encode / decode, image
understanding (prompt logits, greedy decode), t2i (a forward at fixed t, the full sampler),
t2v, video understanding, the omni mask (additive forms in each dtype).

The fixture model is tiny with random weights, so the figures are an upper-bound picture of the
rounding, not of image quality; bf16 sampling keeps the sampler state in float32 (as the
pipelines do) and only the network runs in bf16.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from showo2_cli.loading import load
from showo2_cli.modeling.attention import additive_mask, omni_attention_mask
from showo2_cli.modeling.vae import SPATIAL_FACTOR, TEMPORAL_FACTOR
from showo2_cli.options import TextSampling
from showo2_cli.sampling import generate_latents, guided_velocity_fn
from showo2_cli.sequences import generation_layout, understanding_layout
from showo2_cli.text_decoding import generate


def diff(got: torch.Tensor, want: torch.Tensor) -> dict:
    got, want = got.detach().float().cpu(), want.detach().float().cpu()
    d = float((got - want).abs().max())
    scale = float(want.abs().max()) or 1.0
    return {"max_abs": d, "max_rel_to_peak": d / scale, "peak": scale}


def first_mismatch(a: list[int], b: list[int]) -> int | None:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


@torch.no_grad()
def vae_path(model, case) -> dict:
    out = {}
    for p in sorted({k.split("_input")[0] for k in case if k.endswith("_input")}):
        pixels = case[f"{p}_input"].to(model.vae.dtype if hasattr(model.vae, "dtype") else torch.float32)
        if pixels.dim() == 5:  # the official encoder reads the first 1 + 4k frames (chunks 1, 4, 4, ...)
            pixels = pixels[:, :, :1 + (pixels.shape[2] - 1) // TEMPORAL_FACTOR * TEMPORAL_FACTOR]
        if not any(s % SPATIAL_FACTOR for s in pixels.shape[-2:]):  # other sizes are refused here
            out[f"vae:{p}_latent_mean_normalized"] = diff(model.vae.encode(pixels),
                                                          case[f"{p}_latent_mean_normalized"])
        out[f"vae:{p}_decoded"] = diff(model.vae.decode(case[f"{p}_latent_mean_normalized"]),
                                       case[f"{p}_decoded_unclamped"].clamp(-1, 1))
    return out


@torch.no_grad()
def understanding_path(name, model, case, info, video: bool) -> dict:
    net, tok = model.network, model.tokens
    latents = case["image_latents"]
    if video:
        side = int(round(case["video_tokens_after_interp_frame0"].shape[1] ** 0.5))
        visual = net.pooled_frame_tokens(latents, side)
    else:
        # understanding's position table: the first configured-grid rows of a larger one (the
        # official demos), not generation's interpolation
        visual = net.encode_visual(latents, understanding=True).fused[0]
    # the official mask block: the configured grid's tokens + 1, a non-square grid too
    layout = understanding_layout(info["question_ids"], visual.shape[0], tok, system=info["system_prompt_ids"],
                                  user_prefix=info["role_a_ids"], assistant_prefix=info["role_b_ids"],
                                  mask_mode="official", official_block_len=model.spec.config_tokens + 1)
    embeds, _ = net.embed_inputs(layout.input_ids, [[visual]], layout.slots, torch.ones(1))
    mask = omni_attention_mask(layout.blocks, layout.seq_len)
    hidden, _ = net.llm(embeds, mask)
    out = {}
    if video:
        last = case["prompt_logits_last8"].shape[1]
        out[f"{name}:prompt_logits_last{last}"] = diff(net.logits(hidden[:, -last:]), case["prompt_logits_last8"])
    else:
        out[f"{name}:prompt_logits"] = diff(net.logits(hidden), case["prompt_logits"])
    want = case["generated_token_ids"].tolist()
    res = generate(net, embeds, mask, TextSampling(max_new_tokens=len(want), stop_ids=(tok.eos,)), keep_logits=True)
    out[f"{name}:greedy_ids"] = {"got": res.token_ids, "official": want, "identical": res.token_ids == want,
                                 "first_mismatch": first_mismatch(res.token_ids, want)}
    steps = min(len(res.step_logits), case["generation_step_logits"].shape[0])
    out[f"{name}:generation_step_logits(first {steps})"] = diff(torch.stack(res.step_logits[:steps]),
                                                                case["generation_step_logits"][:steps])
    return out


@torch.no_grad()
def generation_path(name, model, case, info) -> dict:
    net, tok = model.network, model.tokens
    video = case["z_init_per_prompt"].dim() == 5
    layout = generation_layout(info["prompt_ids"], int(info["num_image_tokens_incl_time"]), tok,
                               int(info["max_seq_len"]), video=video)
    g = float(info["guidance_scale"])
    x, t = case["fixed_t_x_per_prompt"], float(case["fixed_t_t"][0])
    out = {f"{name}:fixed_t_velocity_guided": diff(guided_velocity_fn(net, layout, g, cache_prefix=True)(x, t),
                                                   case["fixed_t_velocity_guided"])}
    final = generate_latents(net, layout, case["z_init_per_prompt"], g, int(info["num_steps"]),
                             float(info["time_shifting_factor"]), cache_prefix=True)
    out[f"{name}:final_latents"] = diff(final, case["final_latents"])
    if "final_decoded_clamped_first_prompt" in case:
        want = case["final_decoded_clamped_first_prompt"]
        out[f"{name}:final_decoded"] = diff(model.vae.decode(final[:1]).reshape(want.shape), want)
    return out


def omni_path(case, info) -> dict:
    mask = omni_attention_mask(torch.tensor(info["modality_positions"]), case["mask_bool"].shape[-1])
    out = {"omni_mask:bool_identical": bool(torch.equal(mask, case["mask_bool"]))}
    for dtype in (torch.float32, torch.bfloat16):
        add = additive_mask(mask, dtype)
        # blocked entries must stay hugely negative (softmax weight exactly 0) and allowed ones 0
        out[f"omni_mask:additive_{dtype}".replace("torch.", "")] = {
            "blocked_value": float(add[~mask].max()) if (~mask).any() else None,  # a one-block layout blocks nothing
            "allowed_value": float(add[mask].abs().max()) if mask.any() else None,
            "softmax_of_blocked_is_zero": bool((torch.softmax(add.float(), -1)[~mask] == 0).all())}
    return out


def run(parity: Path, dtype: torch.dtype) -> dict:
    meta = json.loads((parity / "meta.json").read_text())
    vae = sorted((parity / "vae").glob("*.pth"))
    model = load(parity / "model", vae=vae[0] if vae else parity / "vae", dtype=dtype)
    out: dict = {}
    for path in sorted((parity / "cases").glob("*.safetensors")):
        name = path.stem
        if name.endswith("_posemb") or name == "t2i_dynres":
            continue  # the dynres case needs a config override; t2i covers the same path
        case, info = load_file(str(path)), meta["cases"].get(name, {})
        if name == "vae":
            out.update(vae_path(model, case))
        elif name == "mmu":
            out.update(understanding_path(name, model, case, info, video=False))
        elif name == "vid_und":
            out.update(understanding_path(name, model, case, info, video=True))
        elif name == "omni_mask":
            out.update(omni_path(case, info))
        elif name.startswith(("t2i", "t2v")):
            out.update(generation_path(name, model, case, info))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--parity", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "parity")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    result = {"fixture": "official float32 outputs (parity set)", "float32": run(args.parity, torch.float32),
              "bfloat16": run(args.parity, torch.bfloat16), "torch": torch.__version__}
    text = json.dumps(result, indent=1)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    for key in result["float32"]:
        a, b = result["float32"][key], result["bfloat16"][key]
        if isinstance(a, dict) and "max_abs" in a:
            print(f"{key:48s} fp32 {a['max_abs']:.2e} ({a['max_rel_to_peak']:.1e})   bf16 {b['max_abs']:.2e} "
                  f"({b['max_rel_to_peak']:.1e})")
        elif isinstance(a, dict) and "identical" in a:
            print(f"{key:48s} fp32 identical={a['identical']}   bf16 identical={b['identical']} "
                  f"first mismatch at {b['first_mismatch']}")
        else:
            print(f"{key:48s} fp32 {a}   bf16 {b}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
