"""One guided, prefix-cached video step (t2v / i2v sampling) of two showo2 source trees, side by side.

    python benchmarks/bench_video_step.py --model CHECKPOINT --base OLD/src --frames 4 8 --reps 2 \
        --out benchmarks/results/video-step.json

``--task t2i`` measures the image step instead (one latent frame in ``bench_official.py --only t2i``'s
1024-token rows, no video tokens; ``--frames`` is then 1).

``--model`` is an official-format checkpoint made by ``bench_official.py`` (its ``geometry.json``
beside the weights); ``--base`` the source folder to compare with (this checkout's ``src/`` is the
other). For each latent frame count, each tree runs in a fresh process (one thread, interleaved
A B, B A, ...) the rows ``bench_official.py --only t2v`` builds: the prefix cache, one step (not
timed: first touches), then one timed step at t = 0.3. Records process CPU seconds, peak RSS and
whether the two trees' velocities are the same bits.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def worker(args) -> dict:
    import torch

    sys.path.insert(0, str(HERE))
    import bench_official as bo
    from official_harness import Geometry

    from showo2_cli.loading import load
    from showo2_cli.sampling import guided_velocity_fn
    from showo2_cli.sequences import SpecialTokens, generation_layout

    torch.set_num_threads(1)
    g = Geometry(**json.loads((Path(args.model) / "geometry.json").read_text()))
    net = load(args.model, need=(), dtype=torch.float32).network
    x = bo.inputs(g)
    setup = argparse.Namespace(task=args.task, t2v_frames=args.frames)
    frames, seq_len, noise = bo.gen_setup(setup, g, x)
    layout = generation_layout([x["prompt"]], frames * g.grid * g.grid + 1, SpecialTokens(**x["ids"]), seq_len,
                               video=args.task != "t2i")
    with torch.no_grad():
        velocity = guided_velocity_fn(net, layout, bo.GUIDANCE, cache_prefix=True)
        velocity(noise, 0.3)
        start = time.process_time()
        v = velocity(noise, 0.3)
        seconds = time.process_time() - start
    torch.save(v, Path(args.io) / "velocity.pt")
    return {"step_s": seconds, "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
            "row_len": seq_len}


def run(args, src: Path, frames: int, io: Path) -> dict:
    io.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(src))
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--model", str(args.model), "--task", args.task,
           "--frames", str(frames), "--io", str(io)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"error: worker failed:\n{proc.stderr[-4000:]}")
    out = json.loads((io / "result.json").read_text())
    print(f"  {src}  {frames} frames  {out}", flush=True)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--base", type=Path, help="the source folder to compare with")
    ap.add_argument("--frames", type=int, nargs="+", default=[4])
    ap.add_argument("--task", choices=("t2v", "t2i"), default="t2v", help="t2i: the image step (frames 1)")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--io", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        args.frames = args.frames[0]
        (args.io / "result.json").write_text(json.dumps(worker(args)))
        return 0
    import torch

    if args.task == "t2i":
        args.frames = [1]
    trees = {"base": args.base, "this": HERE.parent / "src"}
    scratch = Path(tempfile.mkdtemp(prefix="showo2-video-step-"))
    record: dict = {"command": "python benchmarks/bench_video_step.py --model CHECKPOINT --base BASE/src "
                               f"--task {args.task} --frames {' '.join(map(str, args.frames))} --reps {args.reps}",
                    "note": "one process per run, one thread, base and this interleaved; process CPU seconds of one "
                            "guided prefix-cached step (cond + uncond rows); a shared host: ratios only",
                    "torch": torch.__version__, "frames": {}}
    for frames in args.frames:
        runs: dict = {"base": [], "this": []}
        for rep in range(args.reps):
            for which in ("base", "this") if rep % 2 == 0 else ("this", "base"):
                io = scratch / f"{frames}-{which}-{rep}"
                runs[which].append(run(args, trees[which], frames, io))
                runs[which][-1]["v"] = torch.load(io / "velocity.pt", weights_only=True)
        same = all(torch.equal(a["v"], b["v"]) for a in runs["base"] for b in runs["this"])
        b_s = statistics.median(r["step_s"] for r in runs["base"])
        t_s = statistics.median(r["step_s"] for r in runs["this"])
        record["frames"][frames] = {
            "row_len": runs["base"][0]["row_len"], "base_step_s": b_s, "this_step_s": t_s, "ratio": t_s / b_s,
            "ratio_per_rep": [t["step_s"] / b["step_s"] for b, t in zip(runs["base"], runs["this"],
                                                                                        strict=True)],
            "peak_rss_gib": {w: max(r["peak_rss_gib"] for r in runs[w]) for w in runs},
            "velocity_bits_identical": same,
            "base_runs_s": [r["step_s"] for r in runs["base"]], "this_runs_s": [r["step_s"] for r in runs["this"]],
        }
    print(json.dumps(record["frames"], indent=1))
    if args.out:
        args.out.write_text(json.dumps(record, indent=1) + "\n")
        kind = "image" if args.task == "t2i" else "video"
        lines = [f"# One guided prefix-cached {kind} step: base against this tree", "", f"    {record['command']}", "",
                 record["note"] + ".", "", "| latent frames | row | base s | this s | this / base | peak RSS GiB "
                 "base / this | same bits |", "|---:|---:|---:|---:|---:|---:|---|"]
        for frames, f in record["frames"].items():
            lines.append(f"| {frames} | {f['row_len']} | {f['base_step_s']:.2f} | {f['this_step_s']:.2f} | "
                         f"{f['ratio']:.2f}x ({', '.join(f'{r:.2f}' for r in f['ratio_per_rep'])}) | "
                         f"{f['peak_rss_gib']['base']:.2f} / {f['peak_rss_gib']['this']:.2f} | "
                         f"{f['velocity_bits_identical']} |")
        args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
