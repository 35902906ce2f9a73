"""Where a guided t2i step's time goes, and its matmul work against the official model call's.

    python benchmarks/t2i_step_breakdown.py --model CHECKPOINT [--steps 3] \
        [--official PATH/TO/Show-o/show-o2 --site PATH/TO/official-site] [--out OUT.json]

``CHECKPOINT`` is an official-format folder written by ``bench_official.py`` (its ``--model``), so
the geometry is the real 432 px one (729 image tokens, 1024-token rows, 128-token prompt, g = 5).
Ours runs as ``bench_official.py`` runs it (``generate_latents`` with the prefix cache, no
autograd, one thread). Reported:

* per-module process CPU seconds of the steps after the first (inclusive timers on the LLM's
  layers, their attention and MLP, the flow head's blocks, the dual path, the projections);
* the FLOPs of one step (``torch.utils.flop_counter``: matmuls and attention), by module;
* with ``--official``: the FLOPs of one official model call on the same rows (its
  ``t2i_generate`` under the Euler sampler, both rows in one batch, as ``inference_t2i.py``),
  so ``ours / official`` FLOPs is the floor of the step-time ratio at equal kernel efficiency.
"""

from __future__ import annotations

import argparse
import collections
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def module_groups(net) -> dict:
    llm = list(net.showo.model.layers)
    head = list(net.diffusion_head_a)
    return {"llm layers": llm, "llm attention": [x.self_attn for x in llm], "llm mlp": [x.mlp for x in llm],
            "head blocks": head, "head attention": [b.self_attn for b in head], "head mlp": [b.mlp for b in head],
            "head adaLN": [b.adaLN_modulation for b in head], "head final layer": [net.diffusion_head_b],
            "diff_proj": [net.diff_proj], "semantic layers": [net.und_trans],
            "patch embeddings": [net.image_embedder_und, net.image_embedder_gen], "fusion_proj": [net.fusion_proj],
            "time embedding": [net.time_embed, net.time_embed_proj]}


def ours(args) -> dict:
    import torch
    from bench_official import GUIDANCE, MAX_SEQ_LEN, inputs
    from official_harness import Geometry
    from torch.utils.flop_counter import FlopCounterMode

    from showo2_cli.loading import load
    from showo2_cli.sampling import generate_latents, guided_velocity_fn
    from showo2_cli.sequences import SpecialTokens, generation_layout

    torch.set_num_threads(1)
    g = Geometry(**json.loads((args.model / "geometry.json").read_text()))
    net = load(str(args.model), need=(), dtype=torch.float32).network
    x = inputs(g)
    layout = generation_layout([x["prompt"]], g.grid * g.grid + 1, SpecialTokens(**x["ids"]), MAX_SEQ_LEN)
    times: dict = collections.defaultdict(float)
    starts: dict = {}

    def timed(name):
        def pre(module, _):
            starts[id(module)] = time.process_time()

        def post(module, _, __):
            times[name] += time.process_time() - starts.pop(id(module))
        return pre, post

    for name, mods in module_groups(net).items():
        pre, post = timed(name)
        for m in mods:
            m.register_forward_pre_hook(pre)
            m.register_forward_hook(post)
    stamps: list[float] = []

    def after_step(*_):  # the first step (with the prefix cache) is not counted
        stamps.append(time.process_time())
        if len(stamps) == 1:
            times.clear()

    with torch.no_grad():
        generate_latents(net, layout, x["noise"], GUIDANCE, args.steps + 2, 3.0, cache_prefix=True,
                         callback=after_step)
        per_step = {k: v / (len(stamps) - 1) for k, v in times.items()}  # (before the counted call below)
        velocity = guided_velocity_fn(net, layout, GUIDANCE, cache_prefix=True)
        with FlopCounterMode(display=False) as counter:
            velocity(x["noise"], 0.5)
    steps = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
    return {"step_s": steps, "module_s_per_step": dict(sorted(per_step.items(), key=lambda kv: -kv[1])),
            "gflop": counter.get_total_flops() / 1e9, "gflop_by_module": flops(counter)}


def flops(counter) -> dict:
    return {k: sum(v.values()) / 1e9 for k, v in sorted(counter.get_flop_counts().items(),
                                                         key=lambda kv: -sum(kv[1].values()))[:16]}


def official(args) -> dict:
    import torch
    from bench_official import GUIDANCE, MAX_SEQ_LEN, inputs
    from official_harness import gen_token_rows, import_official, load_official, official_sample
    from torch.utils.flop_counter import FlopCounterMode

    torch.set_num_threads(1)
    import_official(args.official, args.site)
    model, g = load_official(args.model)
    x = inputs(g)
    cond, uncond, mp, mp_null = gen_token_rows(x["prompt"], g.grid * g.grid + 1, MAX_SEQ_LEN, x["ids"])
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        official_sample(model, torch.cat([x["noise"]] * 2), torch.cat([cond, uncond]), torch.cat([mp, mp_null]),
                        MAX_SEQ_LEN, GUIDANCE, 2)  # two grid points: one model call
    return {"gflop": counter.get_total_flops() / 1e9, "gflop_by_module": flops(counter)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, required=True, help="official-format checkpoint (bench_official.py's)")
    ap.add_argument("--steps", type=int, default=3, help="steps timed after the first")
    ap.add_argument("--official", type=Path, help="the official code's show-o2/ folder (its FLOPs)")
    ap.add_argument("--site", type=Path, help="put first on sys.path for the official run")
    ap.add_argument("--out", type=Path, help="JSON to write")
    ap.add_argument("--worker", choices=("ours", "official"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps((ours if args.worker == "ours" else official)(args)))
        return 0
    record = {"ours": run(args, "ours")}
    if args.official:
        record["official"] = run(args, "official")
        record["gflop_ratio_ours_over_official"] = record["ours"]["gflop"] / record["official"]["gflop"]
    text = json.dumps(record, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


def run(args, which: str) -> dict:
    """One fresh process per side (the official side with its own library versions first)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", which, "--model", str(args.model),
           "--steps", str(args.steps)]
    if args.official:
        cmd += ["--official", str(args.official)]
    if args.site:
        cmd += ["--site", str(args.site)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"error: the {which} worker failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    sys.exit(main())
