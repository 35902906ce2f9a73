"""Weight-only quantization (``--quantize int8wo`` / ``nf4``) on a 1.5B-shaped network: bytes, RAM, fidelity.

The network is the registry's ``1.5B`` spec at full width (hidden 1536, vocabulary 151669, flow
head 2048 wide) with a few layers (``--llm-layers``, ``--head-layers``, ``--semantic-layers``),
randomly initialised with the training initialisation (seed 0): the same weights in every run.
Each variant runs in a fresh process (so peak RSS figures do not mix):

* ``fp32``: the weights in float32 (the reference);
* ``bf16``: the weights and activations in bfloat16 (for scale: the usual GPU choice);
* ``int8wo``: the LLM's and flow head's linear layers quantized with
  ``acceleration.quantize_network`` (torchao ``Int8WeightOnlyConfig``), activations float32;
* ``nf4``: the same layers in 4-bit NormalFloat (bitsandbytes ``Linear4bit``), compute float32;
* ``int8wo-bf16`` / ``nf4-bf16``: the same with bfloat16 weights and activations elsewhere.

Per variant: parameter bytes (total, LLM, flow head), RSS after loading (the peak is reset there
through ``/proc/self/clear_refs``), peak RSS while computing, and the seconds of one guided
velocity (t2i, ``--size``) and one 16-token greedy decode. Fidelity against fp32: velocity max
abs diff and relative L2, last-position logits max abs diff, greedy tokens equal. The bytes of the
full 28-layer LLM + 10-layer head are extrapolated from the per-layer bytes.

    OMP_NUM_THREADS=1 python benchmarks/bench_quantize.py      # -> benchmarks/results/quantize.json

Random weights are not trained ones: trained layers have outlier rows, so the quantization error
of the real checkpoints is larger than here; the byte and RAM figures carry over exactly. The
bundled demo (trained) is checked too: velocity and a greedy caption against fp32.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from proc_memory import reset_peak, status  # noqa: E402

VARIANTS = ("fp32", "bf16", "int8wo", "int8wo-bf16", "nf4", "nf4-bf16")



def child(variant: str, args, out_path: Path) -> None:
    import gc

    import torch

    from showo2_cli.acceleration import quantize_network, weight_bytes
    from showo2_cli.loading import PARAMETER_GROUPS, build_network
    from showo2_cli.modeling.attention import omni_attention_mask
    from showo2_cli.options import TextSampling
    from showo2_cli.specs import get_spec
    from showo2_cli.text_decoding import generate

    torch.manual_seed(0)
    spec = get_spec("1.5B").replace(num_layers=args.llm_layers, head_layers=args.head_layers,
                                    semantic_layers=args.semantic_layers)
    dtype = torch.bfloat16 if variant.endswith("bf16") else torch.float32
    net = build_network(spec, None, torch.float32).eval()  # init_weights(seed=0)
    # The training init zeroes the flow head's adaLN and output layers (velocity 0): give them
    # small random weights so the head's output depends on every layer.
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for mod in [*(b.adaLN_modulation[-1] for b in net.diffusion_head_a), net.diffusion_head_b.adaLN_modulation[-1],
                    net.diffusion_head_b.linear]:
            mod.weight.copy_(torch.randn(mod.weight.shape, generator=g) * 0.02)
    if dtype != torch.float32:
        net = net.to(dtype)
    if variant.startswith(("int8wo", "nf4")):
        quantize_network(net, variant.split("-")[0])
    gc.collect()

    def group_bytes(prefixes):
        return sum(weight_bytes(m) for n, m in net.named_children() if (n + ".").startswith(prefixes))

    sizes = {"total": weight_bytes(net), "llm": group_bytes(PARAMETER_GROUPS["llm"]),
             "flow_head": group_bytes(PARAMETER_GROUPS["flow_head"]),
             "llm_layer": weight_bytes(net.showo.model.layers[0]), "head_layer": weight_bytes(net.diffusion_head_a[0])}
    after_load = status()["VmRSS"]
    reset_peak()

    gen = torch.Generator().manual_seed(1)
    side = args.size // spec.vae_spatial
    n_vis = spec.tokens_per_frame(args.size, args.size)
    text = 32
    length = text + 1 + n_vis + 2
    ids = torch.randint(0, 150000, (2, length), generator=gen)
    blocks = torch.tensor([[[text, 1 + n_vis]], [[text, 1 + n_vis]]])
    mask = omni_attention_mask(blocks, length)
    x = torch.randn(2, spec.latent_channels, side, side, generator=gen)
    t = torch.full((2,), 0.4)
    with torch.no_grad():
        start = time.perf_counter()
        v = net.velocity(ids, x.to(dtype), t, blocks, mask).float()
        t_velocity = time.perf_counter() - start
        prompt = torch.randint(0, 150000, (1, 48), generator=gen)
        embeds = net.showo.model.embed_tokens(prompt)
        causal = torch.ones(48, 48, dtype=torch.bool).tril()[None, None]
        hidden, _ = net.llm(embeds, causal)
        all_logits = net.logits(hidden).float()[0]  # (48, V): teacher-forced next-token logits
        logits = all_logits[-1]
        start = time.perf_counter()
        tokens = generate(net, embeds, causal, TextSampling(max_new_tokens=16)).token_ids
        t_decode = time.perf_counter() - start
    peak = status()["VmHWM"]
    torch.save({"velocity": v, "logits": logits, "argmax": all_logits.argmax(-1), "tokens": torch.tensor(tokens)},
               out_path)
    print(json.dumps({"variant": variant, "bytes": sizes, "rss_after_load": after_load, "peak_rss_compute": peak,
                      "seconds_velocity": round(t_velocity, 3), "seconds_decode_16": round(t_decode, 3),
                      "sequence": length}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--llm-layers", type=int, default=4)
    ap.add_argument("--head-layers", type=int, default=2)
    ap.add_argument("--semantic-layers", type=int, default=2)
    ap.add_argument("--size", type=int, default=256, help="t2i pixels per side for the velocity")
    ap.add_argument("--results", type=Path, default=HERE / "results" / "quantize.json")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    ap.add_argument("--child", nargs=2, metavar=("VARIANT", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args.child[0], args, Path(args.child[1]))

    import tempfile

    import torch

    from showo2_cli.specs import get_spec

    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for variant in dict.fromkeys(["fp32", *args.variants]):  # fp32 is the reference
            out = Path(tmp) / f"{variant}.pt"
            cmd = [sys.executable, __file__, "--child", variant, str(out), "--llm-layers", str(args.llm_layers),
                   "--head-layers", str(args.head_layers), "--semantic-layers", str(args.semantic_layers),
                   "--size", str(args.size)]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
            runs[variant] = json.loads(proc.stdout.strip().splitlines()[-1])
            runs[variant]["outputs"] = torch.load(out, weights_only=True)
            print(variant, {k: v for k, v in runs[variant].items() if k != "outputs"}, flush=True)
    ref = runs["fp32"]["outputs"]
    full = get_spec("1.5B")
    for run in runs.values():
        o = run.pop("outputs")
        dv = o["velocity"] - ref["velocity"]
        run["fidelity_vs_fp32"] = {
            "velocity_max_abs_diff": float(dv.abs().max()), "velocity_rel_l2": float(dv.norm() / ref["velocity"].norm()),
            "velocity_max_abs": float(ref["velocity"].abs().max()),
            "logits_max_abs_diff": float((o["logits"] - ref["logits"]).abs().max()),
            "logits_max_abs": float(ref["logits"].abs().max()),
            "argmax_agreement_48_positions": float((o["argmax"] == ref["argmax"]).float().mean()),
            "greedy_tokens_equal": bool(torch.equal(o["tokens"], ref["tokens"])),
            "greedy_tokens_matching_prefix": int(next((i for i, (a, b) in enumerate(zip(o["tokens"].tolist(),
                                                  ref["tokens"].tolist(), strict=True)) if a != b), len(o["tokens"]))),
        }
        b = run["bytes"]
        run["full_depth_bytes_estimate"] = {
            "llm": b["llm"] + (full.num_layers - args.llm_layers) * b["llm_layer"],
            "flow_head": b["flow_head"] + (full.head_layers - args.head_layers) * b["head_layer"]}
    demo = demo_check()
    result = {
        "what": "1.5B-shaped Show-o2 network (random init, seed 0), fp32 vs bf16 vs weight-only int8 (torchao) "
                "and NF4 (bitsandbytes)",
        "layers": {"llm": args.llm_layers, "flow_head": args.head_layers, "semantic": args.semantic_layers},
        "size": args.size, "threads": int(os.environ.get("OMP_NUM_THREADS", "0") or 0) or None,
        "torch": torch.__version__, "torchao": _version("torchao"), "bitsandbytes": _version("bitsandbytes"),
        "machine": platform.machine(),
        "note": "seconds are one run on a shared CPU, indicative only; bytes and RSS are exact",
        "runs": runs,
        "demo_trained_weights": demo,
    }
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({v: {"bytes": r["bytes"]["total"], "fidelity": r["fidelity_vs_fp32"]} for v, r in runs.items()},
                     indent=1))


def demo_check() -> dict:
    """The bundled demo (trained weights, fp32) against its int8wo and nf4 copies: velocity and a
    greedy caption."""
    import torch

    from showo2_cli import api
    from showo2_cli.acceleration import weight_bytes
    from showo2_cli.options import RuntimeOptions
    from showo2_cli.sampling import guided_velocity_fn
    from showo2_cli.sequences import generation_layout
    from showo2_cli.tokenizer import encode_text

    media = Path(__file__).resolve().parents[2] / "shared" / "media" / "pexels-taryn-elliott-4144459.jpg"
    out = {}
    ref = api.load("demo")
    spec = ref.spec
    visual = 1 + spec.tokens_per_frame(spec.resolution, spec.resolution)
    layout = generation_layout([encode_text(ref.tokenizer, "a red circle")], visual, ref.tokens, visual + 44)
    x = torch.randn(1, spec.latent_channels, spec.resolution // 8, spec.resolution // 8,
                    generator=torch.Generator().manual_seed(0))
    v_ref = guided_velocity_fn(ref.network, layout, 4.0)(x, 0.3)
    opts = api.CaptionOptions(max_new_tokens=40)
    a = api.caption(ref, media, opts) if media.exists() else None
    out["weight_bytes_fp32"] = weight_bytes(ref.network)
    if a is not None:
        out["caption_fp32"] = a.answers[0]
    for method in ("int8wo", "nf4"):
        q = api.load("demo", runtime=RuntimeOptions(quantize=method))
        v_q = guided_velocity_fn(q.network, layout, 4.0)(x, 0.3)
        row = {"weight_bytes": weight_bytes(q.network), "velocity_rel_l2": float((v_q - v_ref).norm() / v_ref.norm()),
               "velocity_max_abs_diff": float((v_q - v_ref).abs().max())}
        if a is not None:
            b = api.caption(q, media, opts)
            row["caption"], row["caption_tokens_equal"] = b.answers[0], a.answers == b.answers
        out[method] = row
    return out


def _version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


if __name__ == "__main__":
    main()
