"""Inference speed of the optimisations, side by side in one run, on a 1.5B-shaped random model.

The model has the real widths (LLM 1536, vocab 151,669, semantic 1152, flow head 2048) and the
real 432px geometry (729 visual tokens), but only a few layers of each stack so it runs on a CPU.

* t2i: seconds per guided step (cond+uncond in one batch) for
  official     full 1024-token sequence, language-head logits computed (what the official forward does)
  no-logits    full sequence, no logits
  trimmed      no logits, positions after the image block dropped
  cached       trimmed + the text prefix's keys/values computed once per run
  and the share of a step spent in the dual path, the LLM and the flow head.
* caption: tokens/s for N new tokens after a 432px image prompt, with the official full recompute
  (all-position logits each step), a full recompute with last-position logits, and the KV cache.

Each variant runs in its own process so peak RSS is per variant.

    python benchmarks/bench_inference.py --llm-layers 2 --semantic-layers 2 --head-layers 2 --tokens 300
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

VARIANTS_T2I = ("official", "no-logits", "trimmed", "cached")
VARIANTS_CAP = ("official-recompute", "recompute", "kv-cache")


def build(args):
    import torch

    from showo2_cli.modeling.showo2 import Showo2Model
    from showo2_cli.specs import REGISTRY

    spec = REGISTRY["1.5B"].replace(num_layers=args.llm_layers, semantic_layers=args.semantic_layers,
                                    head_layers=args.head_layers)
    torch.manual_seed(0)
    net = Showo2Model(spec).eval()
    net.init_weights(seed=0)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # give the zero-initialised layers values so nothing is trivially zero
        for block in net.diffusion_head_a:
            block.adaLN_modulation[-1].weight.copy_(torch.randn(block.adaLN_modulation[-1].weight.shape, generator=g) * 0.02)
        net.diffusion_head_b.linear.weight.normal_(0, 0.02, generator=g)
    return spec, net


def tokens_real():
    from showo2_cli.sequences import SpecialTokens

    return SpecialTokens(bos=151644, eos=151645, boi=151652, eoi=151653, img_pad=151655, vid_pad=151656, pad=151665,
                         img=151666, bov=151667, eov=151668)


def child_t2i(args, variant):
    import torch

    from showo2_cli.modeling.attention import omni_attention_mask
    from showo2_cli.sampling import guided_velocity_fn
    from showo2_cli.sequences import generation_layout

    spec, net = build(args)
    prompt = [1000 + i for i in range(args.prompt_tokens)]
    layout = generation_layout([prompt], 730, tokens_real(), 1024)
    x = torch.randn(1, 16, 54, 54)
    times, parts = [], {"dual_path": 0.0, "llm": 0.0, "flow_head": 0.0, "logits": 0.0}
    with torch.no_grad():
        if variant in ("official", "no-logits"):
            ids, mask = layout.input_ids, omni_attention_mask(layout.blocks, layout.seq_len)
            for i in range(args.steps + 1):
                t0 = time.perf_counter()
                xx = torch.cat([x, x])
                tt = torch.full((2,), 0.5)
                a = time.perf_counter()
                cond, time_token = net.time_embedding(tt)
                tok = net.visual_tokens(xx[:, :, None])
                b = time.perf_counter()
                embeds = net.embed_sequence(ids, [[tok[j]] for j in range(2)], layout.slots, time_token[:, None])
                hidden, _ = net.llm(embeds, mask)
                c = time.perf_counter()
                if variant == "official":
                    net.logits(hidden)
                d = time.perf_counter()
                net.flow_head(hidden, cond[:, None], layout.blocks, mask)
                e = time.perf_counter()
                if i > 0:  # the first step warms up
                    times.append(e - t0)
                    parts["dual_path"] += b - a
                    parts["llm"] += c - b
                    parts["logits"] += d - c
                    parts["flow_head"] += e - d
        else:
            setup = time.perf_counter()
            fn = guided_velocity_fn(net, layout, 5.0, trim=True, cache_prefix=(variant == "cached"))
            setup = time.perf_counter() - setup
            for i in range(args.steps + 1):
                t0 = time.perf_counter()
                fn(x, 0.5)
                if i > 0:
                    times.append(time.perf_counter() - t0)
            parts = {"prefix_setup_once": setup}
    return {"variant": variant, "seconds_per_step": sum(times) / len(times), "steps": len(times),
            "parts_seconds_per_step": {k: v / len(times) for k, v in parts.items()} if variant in ("official", "no-logits") else parts,
            "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


def child_caption(args, variant):
    import torch

    from showo2_cli.modeling.attention import extend_mask_for_decoding, omni_attention_mask
    from showo2_cli.options import TextSampling
    from showo2_cli.sequences import understanding_layout
    from showo2_cli.text_decoding import generate, generate_uncached

    spec, net = build(args)
    tok = tokens_real()
    layout = understanding_layout([1000] * 8, 729, tok, [1] * 9, [2] * 4, [3] * 4)
    with torch.no_grad():
        visual = net.encode_visual(torch.randn(1, 16, 54, 54)).fused[0]
        _, time_token = net.time_embedding(torch.ones(1))
        embeds = net.embed_sequence(layout.input_ids, [[visual]], layout.slots, time_token[:, None])
        mask = omni_attention_mask(layout.blocks, layout.seq_len)
        n_tokens = {"official-recompute": args.official_tokens,
                    "recompute": args.recompute_tokens or args.tokens}.get(variant, args.tokens)
        opts = TextSampling(max_new_tokens=n_tokens, stop_ids=())
        t0 = time.perf_counter()
        if variant == "kv-cache":
            out = generate(net, embeds, mask, opts)
        elif variant == "recompute":
            out = generate_uncached(net, embeds, mask, opts)
        else:  # the official loop: full recompute, logits for every position
            ids = []
            e, m = embeds, mask
            for _ in range(n_tokens):
                hidden, _ = net.llm(e, m)
                logits = net.logits(hidden)
                token = int(logits[0, -1].argmax())
                ids.append(token)
                e = torch.cat([e, net.showo.model.embed_tokens(torch.tensor([[token]]))], dim=1)
                m = extend_mask_for_decoding(m, 1)
            out = type("R", (), {"token_ids": ids})()
        seconds = time.perf_counter() - t0
    return {"variant": variant, "tokens": len(out.token_ids), "seconds": seconds, "tokens_per_s": len(out.token_ids) / seconds,
            "first_ids": out.token_ids[:8], "prompt_len": layout.seq_len,
            "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--llm-layers", type=int, default=2)
    p.add_argument("--semantic-layers", type=int, default=2)
    p.add_argument("--head-layers", type=int, default=2)
    p.add_argument("--steps", type=int, default=3, help="timed t2i steps per variant (after one warm-up)")
    p.add_argument("--prompt-tokens", type=int, default=128)
    p.add_argument("--tokens", type=int, default=300, help="new tokens for the caption benchmark")
    p.add_argument("--official-tokens", type=int, default=32,
                   help="new tokens for the official loop (all-position logits each step: very slow)")
    p.add_argument("--recompute-tokens", type=int, default=None,
                   help="new tokens for the full-recompute loop (default: --tokens)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--only", choices=["t2i", "caption"], default=None)
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "inference-cpu.json")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.child:
        kind, variant = args.child.split(":")
        result = child_t2i(args, variant) if kind == "t2i" else child_caption(args, variant)
        print("RESULT " + json.dumps(result), flush=True)
        return
    results = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version()}, "args": vars(args) | {"out": args.out.name},
               "t2i": [], "caption": []}
    import torch

    results["machine"]["torch"] = torch.__version__
    jobs = []
    if args.only in (None, "t2i"):
        jobs += [("t2i", v) for v in VARIANTS_T2I]
    if args.only in (None, "caption"):
        jobs += [("caption", v) for v in reversed(VARIANTS_CAP)]
    for kind, variant in jobs:
        cmd = [sys.executable, __file__, "--child", f"{kind}:{variant}"] + [a for a in sys.argv[1:] if a != "--child"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
        if proc.returncode or not line:
            print(proc.stderr[-3000:], file=sys.stderr)
            raise SystemExit(f"{kind}:{variant} failed")
        r = json.loads(line[0][7:])
        results[kind].append(r)
        print(kind, json.dumps(r), flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1) + "\n")
    if results["t2i"]:
        base = results["t2i"][0]["seconds_per_step"]
        print("\n| t2i variant | s/step | vs official | peak RSS GiB |\n|---|---:|---:|---:|")
        for r in results["t2i"]:
            print(f"| {r['variant']} | {r['seconds_per_step']:.3f} | {r['seconds_per_step'] / base:.2f}x | {r['peak_rss_gib']:.2f} |")
    if results["caption"]:
        print("\n| caption variant | tokens | s | tokens/s | peak RSS GiB |\n|---|---:|---:|---:|---:|")
        for r in results["caption"]:
            print(f"| {r['variant']} | {r['tokens']} | {r['seconds']:.1f} | {r['tokens_per_s']:.2f} | {r['peak_rss_gib']:.2f} |")


if __name__ == "__main__":
    main()
