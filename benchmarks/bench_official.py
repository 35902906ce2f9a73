"""showo2 against the OFFICIAL Show-o2 code, side by side, on the same official-format weights.

    python benchmarks/bench_official.py --official PATH/TO/Show-o/show-o2 --site PATH/TO/official-site \
        --threads 1 --reps 2 --out benchmarks/results/vs-official.json

``--official`` is the official repository's ``show-o2/`` folder (showlab/Show-o, run from outside
this project, never vendored); ``--site`` an optional folder put first on ``sys.path`` for the
official runs only (the library versions it was written for: transformers 4.47, diffusers 0.31,
with torchdiffeq/einops/scipy). Both sides use the same torch.

What it does:

1. writes a random official-format checkpoint (``pytorch_model.bin`` + ``config.json`` + ``llm/``
   and ``siglip/`` configs) with the OFFICIAL classes: the real 432 px geometry (27x27 tokens, a
   54x54 latent, 729 position rows: no interpolation) and a mid-size width/depth (``--size``);
2. runs each measurement in a fresh process (peak RSS is the process's), official and ours
   interleaved A B A B so both see the same machine load:
   * t2i: ``inference_t2i.py``'s guided sampling (g = 5, Euler, shifted grid, 1024-token rows) for
     ``--t2i-steps`` grid points; the time of every model call (official) or step (ours); final
     latents compared;
   * t2v: the same sampling on ``--t2v-frames`` latent frames (the frame-major (B, C, T, h, w) latent
     the official model class takes, rows with bov / eov / vid_pad and t2i's text budget);
   * i2v: t2v with a clean first latent frame and ``first_frame_as_cond`` (the official has no i2v
     script: its model class's forward driven as spec §8.4 describes, frame 0's velocity zeroed);
   * video: ``inference_mmu_vid.py``'s prompt (``--video-frames`` frames, each through the dual path
     and pooled to 14 x 14, the 730-position official block) and the same greedy decoding;
   * caption: ``inference_mmu.py``'s prompt (system prompt, 729 image tokens + time slot,
     question) and ``mmu_generate`` greedy (top_k 1) for ``--tokens`` new tokens against ours
     (``text_decoding.generate``); token ids compared; the official model loaded as the scripts do
     (``from_pretrained``), so its load time beside ours gives load + first token (``--tokens 1``);
3. writes JSON (+ a Markdown table beside it).

Ours is measured through the library calls the pipelines make (``generate_latents`` with the
prefix cache, ``generate`` with the KV cache), from the same latents/noise the official side gets.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

SIZES = {
    # LLM 8 layers at 896 (Qwen2.5-0.5B's width), semantic layers 6 at 768, flow head 4 at 1024;
    # vocabulary 32768 keeps the language head's share of a forward near the real 1.5B model's
    "mid": dict(),
    "mid-4": dict(layers=4, clip_layers=3, head_layers=2),
    # for --smoke: the same geometry, tiny widths
    "smoke": dict(vocab=1024, hidden=64, intermediate=128, layers=2, heads=4, kv_heads=2, clip_dim=32,
                  clip_layers=1, clip_heads=2, clip_intermediate=64, head_hidden=48, head_dim=12,
                  head_intermediate=96, head_heads=4, head_kv_heads=2, head_layers=1),
}
PROMPT_TOKENS = 128
QUESTION_TOKENS = 16
SYSTEM_TOKENS = 36
GUIDANCE = 5.0
VIDEO_POOL = 14  # inference_mmu_vid.py pools every frame's tokens to 14 x 14
MAX_SEQ_LEN = 1024
GEN_TASKS = ("t2i", "t2v", "i2v")  # the flow-matching tasks (t2v and i2v on --t2v-frames latent frames)


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def clocks() -> tuple[float, float]:
    """(wall, CPU) seconds. With one thread the process CPU time is the compute itself, far less
    sensitive than wall time to other jobs sharing the machine; the ratios use it."""
    return time.perf_counter(), time.process_time()


def elapsed(start) -> dict:
    wall, cpu = clocks()
    return {"wall_seconds": wall - start[0], "seconds": cpu - start[1]}


def step_times(stamps) -> dict:
    return {"step_seconds": [b[1] - a[1] for a, b in zip(stamps, stamps[1:], strict=False)],
            "step_wall_seconds": [b[0] - a[0] for a, b in zip(stamps, stamps[1:], strict=False)]}


def inputs(g, seed: int = 1):
    """Prompt / question ids, the caption latents and the t2i noise (bf16-rounded, as the official script)."""
    import torch
    from official_harness import special_ids

    gen = torch.Generator().manual_seed(seed)
    ordinary = g.vocab - 200  # keep clear of the special ids at the end of the table
    prompt = torch.randint(0, ordinary, (PROMPT_TOKENS,), generator=gen).tolist()
    question = torch.randint(0, ordinary, (QUESTION_TOKENS,), generator=gen).tolist()
    system = torch.randint(0, ordinary, (SYSTEM_TOKENS,), generator=gen).tolist()
    side = 2 * g.grid
    latents = torch.randn(1, 16, side, side, generator=gen)
    noise = torch.randn(1, 16, side, side, generator=gen).to(torch.bfloat16).float()
    return dict(prompt=prompt, question=question, system=system, latents=latents, noise=noise,
                ids=special_ids(g.vocab))


def video_latents(g, frames: int):
    """``frames`` one-frame latents (the VAE's per-frame output the video demo feeds the model)."""
    import torch

    side = 2 * g.grid
    return torch.randn(frames, 16, side, side, generator=torch.Generator().manual_seed(2))


def gen_setup(args, g, x):
    """(latent frames, row length, noise) of a generation task: t2i's one image in 1024-token rows, or
    t2v's ``--t2v-frames`` latent frames (frame-major, as the official model class takes a
    (B, C, T, h, w) latent) in rows with the same text budget past the visual block."""
    import torch

    if args.task == "t2i":
        return 1, MAX_SEQ_LEN, x["noise"]
    frames = args.t2v_frames
    side = 2 * g.grid
    noise = torch.randn(1, 16, frames, side, side, generator=torch.Generator().manual_seed(3))
    if args.task == "i2v":  # the conditioning image's clean latent in frame 0
        noise[:, :, 0] = x["latents"][0]
    seq_len = frames * g.grid * g.grid + 1 + (MAX_SEQ_LEN - g.grid * g.grid - 1)
    return frames, seq_len, noise.to(torch.bfloat16).float()


# ---- workers (one process each) ---------------------------------------------------------------

def worker_make(args) -> dict:
    from official_harness import (
        Geometry,
        build_official,
        import_official,
        randomize,
        save_official,
        write_configs,
    )

    import_official(args.official, args.site)
    g = Geometry(**{**asdict(Geometry()), **SIZES[args.size]})
    folder = Path(args.model)
    kwargs = write_configs(folder, g)
    model = build_official(kwargs, g)
    randomize(model, seed=0)
    save_official(model, kwargs, folder, g)
    return {"params": sum(p.numel() for p in model.parameters())}


def worker_official(args) -> dict:
    import torch
    from official_harness import (
        gen_token_rows,
        import_official,
        load_official,
        load_official_pretrained,
        official_sample,
    )

    import_official(args.official, args.site)
    start = clocks()
    # the caption measures the scripts' from_pretrained (load time, time to first token); the others
    # build the model and load its state dict (the same weights, less of the library in the way)
    model, g = (load_official_pretrained if args.task == "caption" else load_official)(Path(args.model))
    out = {"load": elapsed(start), "peak_rss_after_load_gib": peak_rss_gib()}
    x = inputs(g)
    ids = x["ids"]
    with torch.no_grad():
        if args.task in GEN_TASKS:
            frames, seq_len, noise = gen_setup(args, g, x)
            cond, uncond, mp, mp_null = gen_token_rows(x["prompt"], frames * g.grid * g.grid + 1, seq_len, ids,
                                                       video=args.task != "t2i")
            text_tokens = torch.cat([cond, uncond])
            modality_positions = torch.cat([mp, mp_null])
            z = torch.cat([noise, noise])
            stamps = [clocks()]
            final = official_sample(model, z, text_tokens, modality_positions, seq_len, GUIDANCE, args.t2i_steps,
                                    on_call=lambda: stamps.append(clocks()), first_frame_as_cond=args.task == "i2v")
            out.update(step_times(stamps), row_len=seq_len)
            torch.save(torch.chunk(final, 2)[0].float().clone(), Path(args.io) / "latents.pt")
        else:  # the caption prompt (inference_mmu.py), or a video's (inference_mmu_vid.py)
            import torch.nn.functional as F

            video = args.task == "video"
            dtype = torch.float32
            emb = model.showo.model.embed_tokens
            a = torch.tensor([[ids["bos"], *x["system"]]])
            b = torch.tensor([[ids["boi"], ids["eoi"], *x["question"]]])
            lat = video_latents(g, args.video_frames) if video else x["latents"]
            start = clocks()
            und = model.image_embedder_und(lat) + model.position_embedding(model.image_position_ids)
            und = model.und_trans(und)["last_hidden_state"]
            image_embeds = model.fusion_proj(torch.cat([und, model.image_embedder_gen(lat)], dim=-1))
            if video:  # every frame through the dual path, pooled bilinearly to 14 x 14
                grid = image_embeds.reshape(lat.shape[0], g.grid, g.grid, -1).permute(0, 3, 1, 2).contiguous()
                grid = F.interpolate(grid, size=(VIDEO_POOL, VIDEO_POOL), mode="bilinear")
                image_embeds = grid.permute(0, 2, 3, 1).reshape(-1, image_embeds.size(-1))[None]
            time_embeds = model.time_embed_proj(model.time_embed(torch.Tensor([[1.0]]), dtype))
            ea, eb = emb(a), emb(b)
            embeds = torch.cat([ea, eb[:, :1], time_embeds, image_embeds, eb[:, 1:]], dim=1)
            from models import omni_attn_mask_naive

            mp = torch.tensor([a.shape[1] + 2, g.grid * g.grid + 1])[None, None]
            mask = omni_attn_mask_naive(B=1, LEN=embeds.size(1), modalities=mp, device="cpu",
                                        inverted=True).to(dtype)
            tokens = model.mmu_generate(input_embeds=embeds, attention_mask=mask, top_k=1,
                                        max_new_tokens=args.tokens, eos_token=None)
            out.update(elapsed(start))
            out["token_ids"] = [int(t) for t in tokens]
            out["prompt_len"] = embeds.shape[1]
    out["peak_rss_gib"] = peak_rss_gib()
    return out


def worker_ours(args) -> dict:
    import torch
    from official_harness import Geometry

    from showo2_cli.loading import load
    from showo2_cli.modeling.attention import omni_attention_mask
    from showo2_cli.options import TextSampling
    from showo2_cli.sampling import generate_latents
    from showo2_cli.sequences import SpecialTokens, generation_layout, understanding_layout
    from showo2_cli.text_decoding import generate

    g = Geometry(**json.loads((Path(args.model) / "geometry.json").read_text()))
    start = clocks()
    model = load(args.model, need=(), dtype=torch.float32)
    out = {"load": elapsed(start), "peak_rss_after_load_gib": peak_rss_gib()}
    net = model.network
    x = inputs(g)
    tok = SpecialTokens(**x["ids"])
    with torch.no_grad():
        if args.task in GEN_TASKS:
            frames, seq_len, noise = gen_setup(args, g, x)
            layout = generation_layout([x["prompt"]], frames * g.grid * g.grid + 1, tok, seq_len,
                                       video=args.task != "t2i")
            stamps = [clocks()]
            final = generate_latents(net, layout, noise, GUIDANCE, args.t2i_steps, 3.0, cache_prefix=True,
                                     first_frame_as_cond=args.task == "i2v",
                                     callback=lambda *a: stamps.append(clocks()))
            out.update(step_times(stamps), row_len=seq_len)
            torch.save(final.float().clone(), Path(args.io) / "latents.pt")
        else:  # the caption prompt, or a video's: its frames pooled to 14 x 14
            if args.task == "video":
                lat = video_latents(g, args.video_frames)
                start = clocks()
                visual = net.pooled_frame_tokens(lat, VIDEO_POOL)
            else:
                start = clocks()
                visual = net.encode_visual(x["latents"]).fused[0]
            _, time_token = net.time_embedding(torch.ones(1))
            layout = understanding_layout(x["question"], visual.shape[0], tok, x["system"], [], [],
                                          mask_mode="official", official_block_len=g.grid * g.grid + 1)
            embeds = net.embed_sequence(layout.input_ids, [[visual]], layout.slots, time_token[:, None])
            mask = omni_attention_mask(layout.blocks, layout.seq_len)
            res = generate(net, embeds, mask, TextSampling(max_new_tokens=args.tokens))
            out.update(elapsed(start))
            out["token_ids"] = res.token_ids
            out["prompt_len"] = embeds.shape[1]
    out["peak_rss_gib"] = peak_rss_gib()
    return out


# ---- the driver -------------------------------------------------------------------------------

def run_worker(args, which: str, task: str, io: Path) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    if which == "ours":
        env["PYTHONPATH"] = os.pathsep.join([str(args.ours_src or HERE.parent / "src"), env.get("PYTHONPATH", "")])
    io.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", which, "--task", task, "--model", str(args.model),
           "--io", str(io), "--official", str(args.official), "--t2i-steps", str(args.t2i_steps),
           "--tokens", str(args.tokens), "--video-frames", str(args.video_frames), "--t2v-frames", str(args.t2v_frames), "--threads", str(args.threads), "--size", args.size]
    if args.site:
        cmd += ["--site", str(args.site)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"error: {which} {task} worker failed:\n{proc.stderr[-4000:]}")
    result = json.loads((io / "result.json").read_text())
    print(f"  {which:8s} {task:7s} {json.dumps({k: v for k, v in result.items() if k != 'token_ids'})}", flush=True)
    return result


def public_args(args: list[str]) -> list[str]:
    """The command line with this machine's paths replaced by their roles (no machine paths in records)."""
    names = {"--official": "OFFICIAL/show-o2", "--site": "SITE", "--model": "CHECKPOINT", "--ours-src": "SRC",
             "--out": "OUT.json"}
    out = []
    for i, a in enumerate(args):
        prev = args[i - 1] if i else ""
        out.append(names.get(prev, a) if prev in names else a)
    return out


def per_step(result: dict) -> float:
    """Median step time after the first (the first of ours includes the one-off prefix cache)."""
    steps = result["step_seconds"]
    return statistics.median(steps[1:] if len(steps) > 1 else steps)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--official", type=Path, required=True, help="the official code's show-o2/ folder")
    ap.add_argument("--site", type=Path, help="put first on sys.path for the official runs (its library versions)")
    ap.add_argument("--size", choices=sorted(SIZES), default="mid")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=2, help="interleaved repetitions of each measurement")
    ap.add_argument("--caption-reps", type=int, help="repetitions for the caption (default --reps)")
    ap.add_argument("--t2i-steps", type=int, default=4, help="grid points (model calls = points - 1)")
    ap.add_argument("--tokens", type=int, default=64, help="new caption tokens")
    ap.add_argument("--video-frames", type=int, default=32, help="frames of the video understanding prompt")
    ap.add_argument("--t2v-frames", type=int, default=2, help="latent frames of the t2v and i2v tasks (frames > 1: the video path)")
    ap.add_argument("--only", choices=(*GEN_TASKS, "caption", "video"))
    ap.add_argument("--ours-src", type=Path, help="the showo2 source folder to measure (default: this checkout's src/)")
    ap.add_argument("--model", type=Path, help="checkpoint folder (made if missing)")
    ap.add_argument("--out", type=Path, help="JSON to write (a .md beside it)")
    ap.add_argument("--smoke", action="store_true", help="tiny widths, 1 rep, 3 grid points, 4 tokens (a check)")
    ap.add_argument("--worker", choices=("make", "official", "ours"), help=argparse.SUPPRESS)
    ap.add_argument("--task", choices=(*GEN_TASKS, "caption", "video", "make"), help=argparse.SUPPRESS)
    ap.add_argument("--io", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.worker:
        import torch

        torch.set_num_threads(args.threads)
        fn = {"make": worker_make, "official": worker_official, "ours": worker_ours}[args.worker]
        result = fn(args)
        (args.io / "result.json").write_text(json.dumps(result))
        return 0

    if args.smoke:
        args.size, args.reps, args.t2i_steps, args.tokens = "smoke", 1, 3, 4
    scratch = Path(tempfile.mkdtemp(prefix="showo2-vs-official-"))
    if args.model is None:
        args.model = scratch / f"official-{args.size}"
    if not (args.model / "pytorch_model.bin").exists():
        args.model.mkdir(parents=True, exist_ok=True)
        print(f"writing the official-format checkpoint to {args.model}", flush=True)
        run_worker(args, "make", "make", scratch / "make")
    import torch
    from official_harness import Geometry

    g = Geometry(**json.loads((args.model / "geometry.json").read_text()))
    tasks = [args.only] if args.only else [*GEN_TASKS, "caption", "video"]
    runs: dict = {t: {"official": [], "ours": []} for t in tasks}
    for task in tasks:
        reps = args.caption_reps if task in ("caption", "video") and args.caption_reps else args.reps
        for rep in range(reps):
            for which in ("official", "ours") if rep % 2 == 0 else ("ours", "official"):
                io = scratch / f"{task}-{which}-{rep}"
                res = run_worker(args, which, task, io)
                if task in GEN_TASKS:
                    res["latents"] = torch.load(io / "latents.pt", weights_only=True)
                runs[task][which].append(res)

    record: dict = {
        "command": "python benchmarks/bench_official.py " + " ".join(public_args(argv or sys.argv[1:])),
        "official_commit": "45a5a2de01d1ebd10cd5864d29310a76476cdf23 (showlab/Show-o, show-o2/)",
        "geometry": asdict(g), "size": args.size, "threads": args.threads, "reps": args.reps,
        "torch": torch.__version__, "machine": platform.machine(), "cpu_count": os.cpu_count(),
        "note": "one process per measurement; official and ours interleaved (A B, B A, ...); fp32; times are "
                "process CPU seconds (one thread), wall seconds beside them",
    }
    for task in GEN_TASKS:
        if task not in runs:
            continue
        off, ours = runs[task]["official"], runs[task]["ours"]
        o_step = statistics.median(per_step(r) for r in off)
        s_step = statistics.median(per_step(r) for r in ours)
        s_first = statistics.median(r["step_seconds"][0] for r in ours)
        diff = max(float((a["latents"] - b["latents"]).abs().max()) for a in off for b in ours)
        peak = float(off[0]["latents"].abs().max())
        record[task] = {
            "grid_points": args.t2i_steps, **({"latent_frames": args.t2v_frames} if task != "t2i" else {}),
            "row_len": off[0]["row_len"], "guidance": GUIDANCE, "prompt_tokens": PROMPT_TOKENS,
            "official_s_per_step": o_step, "ours_s_per_step": s_step, "ratio_ours_over_official": s_step / o_step,
            "speedup": o_step / s_step,
            "ours_first_step_s": s_first, "prefix_cache_s_once": max(s_first - s_step, 0.0),
            "ratio_at_50_steps_incl_prefix": (49 * s_step + s_first) / (50 * o_step),
            "final_latents_max_abs_diff": diff, "final_latents_peak": peak,
            "final_latents_max_rel_to_peak": diff / peak,
            "peak_rss_gib": {"official": max(r["peak_rss_gib"] for r in off), "ours": max(r["peak_rss_gib"] for r in ours)},
            "official_steps": [r["step_seconds"] for r in off], "ours_steps": [r["step_seconds"] for r in ours],
            "ratio_per_rep": [per_step(b) / per_step(a) for a, b in zip(off, ours, strict=True)],
            "official_steps_wall": [r["step_wall_seconds"] for r in off],
            "ours_steps_wall": [r["step_wall_seconds"] for r in ours],
        }
    for task in ("caption", "video"):
        if task not in runs:
            continue
        off, ours = runs[task]["official"], runs[task]["ours"]
        o_s = statistics.median(r["seconds"] for r in off)
        s_s = statistics.median(r["seconds"] for r in ours)
        record[task] = {
            "new_tokens": args.tokens, "prompt_len": off[0]["prompt_len"],
            **({"frames": args.video_frames, "pool": VIDEO_POOL} if task == "video" else {}),
            "official_s": o_s, "ours_s": s_s, "speedup": o_s / s_s,
            "token_ids_identical": all(a["token_ids"] == b["token_ids"] for a in off for b in ours),
            "peak_rss_gib": {"official": max(r["peak_rss_gib"] for r in off), "ours": max(r["peak_rss_gib"] for r in ours)},
            "official_runs_s": [r["seconds"] for r in off], "ours_runs_s": [r["seconds"] for r in ours],
            "speedup_per_rep": [a["seconds"] / b["seconds"] for a, b in zip(off, ours, strict=True)],
            "official_runs_wall_s": [r["wall_seconds"] for r in off], "ours_runs_wall_s": [r["wall_seconds"] for r in ours],
        }
    record["load_s"] = {which: statistics.median(r["load"]["seconds"] for t in runs for r in runs[t][which])
                        for which in ("official", "ours")}
    record["load_wall_s"] = {which: statistics.median(r["load"]["wall_seconds"] for t in runs for r in runs[t][which])
                             for which in ("official", "ours")}
    print(json.dumps({k: v for k, v in record.items() if k in (*GEN_TASKS, "caption", "video", "load_s")}, indent=1))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(record, indent=1) + "\n")
        args.out.with_suffix(".md").write_text(markdown(record))
    return 0


def markdown(r: dict) -> str:
    g = r["geometry"]
    lines = [
        "# showo2 vs the official Show-o2 code (side by side, same official-format weights)",
        "",
        f"    {r['command']}",
        "",
        f"Official code: {r['official_commit']}, run from a scratch folder with transformers 4.47 / diffusers 0.31; "
        f"ours with the project's libraries; the same torch ({r['torch']}), fp32, {r['threads']} thread(s), "
        f"{r['reps']} interleaved repetitions, one process per measurement.",
        f"Model (random weights, official format, written by the official classes): LLM {g['layers']} layers x "
        f"{g['hidden']} (vocab {g['vocab']}), semantic layers {g['clip_layers']} x {g['clip_dim']}, flow head "
        f"{g['head_layers']} x {g['head_hidden']}; real 432 px geometry ({g['grid']}x{g['grid']} tokens, "
        f"{2 * g['grid']}x{2 * g['grid']} latent).",
        "",
    ]
    for task in GEN_TASKS:
        if task not in r:
            continue
        t = r[task]
        frames = f", {t['latent_frames']} latent frames (frame-major)" if task != "t2i" else ""
        if task == "i2v":
            frames += ", frame 0 the clean condition (its velocity zeroed)"
        lines += [
            f"## {task}: one guided step (cond + uncond), {t['prompt_tokens']}-token prompt, "
            f"{t.get('row_len', t.get('max_seq_len'))}-token rows{frames}",
            "",
            "| | official | ours | ours / official |",
            "|---|---:|---:|---:|",
            f"| s per step (median, after the first) | {t['official_s_per_step']:.2f} | {t['ours_s_per_step']:.2f} | "
            f"{t['ratio_ours_over_official']:.2f}x |",
            f"| at 50 steps, prefix cache included | | | {t['ratio_at_50_steps_incl_prefix']:.2f}x |",
            f"| peak RSS GiB | {t['peak_rss_gib']['official']:.2f} | {t['peak_rss_gib']['ours']:.2f} | "
            f"{t['peak_rss_gib']['ours'] / t['peak_rss_gib']['official']:.2f}x |",
            "",
            f"Final latents after {t['grid_points'] - 1} Euler steps: max abs difference "
            f"{t['final_latents_max_abs_diff']:.2e} (peak magnitude {t['final_latents_peak']:.1f}, relative "
            f"{t['final_latents_max_rel_to_peak']:.1e}). Speed-up {t['speedup']:.2f}x. Times are process CPU "
            "seconds (one thread); wall times are in the JSON.",
            "",
            *per_rep_line(t.get("ratio_per_rep"), "ours / official", "{:.2f}x"),
        ]
    if "load_s" in r:
        lines += [f"Load (checkpoint to a model in memory, median of every worker): official "
                  f"{r['load_s']['official']:.2f} s, ours {r['load_s']['ours']:.2f} s CPU "
                  f"({r['load_wall_s']['official']:.2f} / {r['load_wall_s']['ours']:.2f} s wall).", ""]
    for task in ("caption", "video"):
        if task not in r:
            continue
        c = r[task]
        what = (f"{c['frames']} frames pooled to {c['pool']}x{c['pool']} ({c['prompt_len']} positions, "
                "inference_mmu_vid.py)" if task == "video" else f"a {c['prompt_len']}-position image prompt")
        lines += [
            f"## {task}: {c['new_tokens']} greedy tokens after {what}",
            "",
            "| | official | ours | speed-up |",
            "|---|---:|---:|---:|",
            f"| seconds (median) | {c['official_s']:.1f} | {c['ours_s']:.2f} | {c['speedup']:.1f}x |",
            f"| peak RSS GiB | {c['peak_rss_gib']['official']:.2f} | {c['peak_rss_gib']['ours']:.2f} | "
            f"{c['peak_rss_gib']['ours'] / c['peak_rss_gib']['official']:.2f}x |",
            "",
            f"Greedy token ids identical: {c['token_ids_identical']}.",
            "",
            *per_rep_line(c.get("speedup_per_rep"), "speed-up", "{:.1f}x"),
        ]
    return "\n".join(lines)


def per_rep_line(values, what: str, fmt: str) -> list[str]:
    """Each repetition's ratio (official run i against ours i): process CPU time still follows the
    host's load, so the spread says how far one figure can be trusted."""
    if not values or len(values) < 2:
        return []
    return [f"Per repetition ({what}): " + ", ".join(fmt.format(v) for v in values) + ".", ""]


if __name__ == "__main__":
    sys.exit(main())
