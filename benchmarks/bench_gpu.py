"""GPU figures: the 1.5B- and 7B-shaped networks at full depth, random weights, bf16.

    python benchmarks/bench_gpu.py --section t2i --out $OUT/gpu-t2i.json    # one section; gpu.sh runs them all
    python benchmarks/bench_gpu.py --section t2i --smoke                    # CPU: the tiny spec, a few steps

Sections (one process each, so a native crash in one, e.g. flex attention, loses nothing else):

* t2i at 432x432, 50 steps, guidance 5 (cond + uncond), s/image at batch 1 and 4, through
  ``sampling.generate_latents`` as the pipeline calls it (prefix cache, shared dual path);
* caption: greedy tokens/s after a 729-token image prompt (``text_decoding.generate``);
* peak GPU memory (``torch.cuda.max_memory_allocated``) of each;
* attention variants, 10 guided t2i steps each: sdpa (default), flex (transformers'
  ``flex_attention`` for the LLM), and ``torch.compile`` of the LLM and flow-head blocks;
* the 7B-shaped network's peak memory for t2i (batch 1), weights built directly in bf16.

Weights are random (built on the device, no files), so only time and memory mean anything.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

import torch

from showo2_cli.modeling.attention import omni_attention_mask
from showo2_cli.options import TextSampling
from showo2_cli.sampling import generate_latents
from showo2_cli.sequences import SpecialTokens, generation_layout, understanding_layout
from showo2_cli.specs import get_spec
from showo2_cli.text_decoding import generate

REAL_IDS = dict(bos=151644, eos=151645, boi=151652, eoi=151653, img_pad=151655, vid_pad=151656, pad=151665,
                img=151666, bov=151667, eov=151668)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def reset_peak(device):
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_gib(device) -> float | None:
    return torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None


def make_network(spec, device, dtype):
    """Random weights straight on the device (meta build, ``to_empty``, small normal values)."""
    with torch.device("meta"):
        from showo2_cli.modeling.showo2 import Showo2Model

        net = Showo2Model(spec)
    net = net.to_empty(device=device).to(dtype)
    gen = torch.Generator(device=device).manual_seed(0)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=gen, device=device, dtype=torch.float32).mul_(0.02).to(dtype))
            elif "norm" in name and name.endswith("weight"):
                p.fill_(1)
            else:
                p.zero_()
    net.reset_buffers()
    return net.eval()


def ids(spec) -> SpecialTokens:
    if spec.vocab_size >= 151669:
        return SpecialTokens(**REAL_IDS)
    return SpecialTokens(**{k: spec.vocab_size - (151669 - v) for k, v in REAL_IDS.items()})


def t2i(net, spec, batch: int, steps: int, device, prompt_len: int = 64) -> dict:
    tok = ids(spec)
    grid = spec.image_latent_grid
    prompts = [[(i * 7 + j) % 1000 + 100 for j in range(prompt_len)] for i in range(batch)]
    layout = generation_layout(prompts, grid * grid + 1, tok, spec.max_seq_len)
    noise = torch.randn(batch, spec.latent_channels, 2 * grid, 2 * grid, generator=torch.Generator().manual_seed(0))
    generate_latents(net, layout, noise.to(device), 5.0, 3, 3.0, cache_prefix=True)  # warm-up
    reset_peak(device)
    sync(device)
    start = time.perf_counter()
    generate_latents(net, layout, noise.to(device), 5.0, steps + 1, 3.0, cache_prefix=True)
    sync(device)
    seconds = time.perf_counter() - start
    return {"batch": batch, "steps": steps, "seconds": seconds, "s_per_image": seconds / batch,
            "peak_gib": peak_gib(device)}


def caption(net, spec, new_tokens: int, device) -> dict:
    tok = ids(spec)
    grid = spec.image_latent_grid
    latents = torch.randn(1, spec.latent_channels, 2 * grid, 2 * grid, generator=torch.Generator().manual_seed(0))
    system = [100 + i for i in range(36)]
    question = [200 + i for i in range(16)]

    def once(n):
        visual = net.encode_visual(latents.to(device)).fused[0]
        layout = understanding_layout(question, visual.shape[0], tok, system, [], [], mask_mode="official",
                                      official_block_len=grid * grid + 1)
        embeds, _ = net.embed_inputs(layout.input_ids, [[visual]], layout.slots, torch.ones(1))
        mask = omni_attention_mask(layout.blocks, layout.seq_len, device=device)
        return generate(net, embeds, mask, TextSampling(max_new_tokens=n))

    with torch.no_grad():
        once(4)
        reset_peak(device)
        sync(device)
        start = time.perf_counter()
        out = once(new_tokens)
        sync(device)
    seconds = time.perf_counter() - start
    return {"new_tokens": len(out.token_ids), "seconds": seconds, "tokens_per_s": len(out.token_ids) / seconds,
            "peak_gib": peak_gib(device)}


def attention_variant(variant: str, spec, device, dtype, steps: int) -> dict:
    """One guided t2i run of ``steps`` steps with the LLM's attention as ``variant``."""
    net = make_network(spec, device, dtype)
    if variant == "flex":
        net.showo.set_attn_implementation("flex_attention")
    elif variant == "compile":
        net.showo.model = torch.compile(net.showo.model)
        for i, block in enumerate(net.diffusion_head_a):
            net.diffusion_head_a[i] = torch.compile(block)
    return t2i(net, spec, 1, steps, device)


def guarded(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except Exception as e:
        return {"error": f"{type(e).__name__}: {e}"[:500], "trace": traceback.format_exc()[-1500:]}


def versions() -> dict:
    """The libraries that ran (the device image's, or the wheels gpu.sh unpacked)."""
    import importlib.metadata

    found = {}
    for name in ("transformers", "diffusers", "accelerate", "bitsandbytes"):
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


SECTIONS = ("t2i", "caption", "attn-sdpa", "attn-flex", "attn-compile", "7b", "7b-nf4")


def run_section(section: str, smoke: bool, steps: int, tokens: int) -> dict:
    device = torch.device("cuda" if torch.cuda.is_available() and not smoke else "cpu")
    dtype = torch.bfloat16
    spec = get_spec("tiny" if smoke else ("7B" if section.startswith("7b") else "1.5B"))
    record = {"section": section, "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
              "torch": torch.__version__, "versions": versions(), "dtype": "bf16", "spec": spec.name, "smoke": smoke}
    start = time.perf_counter()
    if section.startswith("attn-"):
        record["result"] = guarded(attention_variant, section[5:], spec, device, dtype, 1 if smoke else 10)
    else:
        reset_peak(device)
        net = make_network(spec, device, dtype)
        record["params"] = sum(p.numel() for p in net.parameters())
        if section == "7b-nf4":  # --quantize nf4: bitsandbytes 4-bit LLM and flow head
            from showo2_cli.acceleration import quantize_network

            record["quantized_layers"] = quantize_network(net, "nf4")
            record["weights_gib_bf16_peak"] = peak_gib(device)
            reset_peak(device)
        record["weights_gib"] = peak_gib(device)
        if section == "t2i":
            record["result"] = [guarded(t2i, net, spec, b, steps, device) for b in (1, 4)]
        elif section == "caption":
            record["result"] = guarded(caption, net, spec, tokens, device)
        elif section.startswith("7b"):
            record["result"] = guarded(t2i, net, spec, 1, 1 if smoke else 2, device)
    record["seconds"] = time.perf_counter() - start
    return record


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--section", choices=SECTIONS, required=True, help="one measurement (one process each)")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--smoke", action="store_true", help="CPU, the tiny spec, few steps (checks the script runs)")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--tokens", type=int, default=128)
    args = ap.parse_args(argv)
    record = run_section(args.section, args.smoke, 2 if args.smoke else args.steps, 4 if args.smoke else args.tokens)
    text = json.dumps(record, indent=1)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(json.dumps({k: v for k, v in record.items() if k != "trace"})[:2000], flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
