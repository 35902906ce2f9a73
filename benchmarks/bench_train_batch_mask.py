"""A real training step's omni mask and memory, two source trees side by side (probe ID).

    python benchmarks/bench_train_batch_mask.py --before OLD_SRC [--after src] [--model 1.5B|demo]
        [--role mmu|t2i] [--layers 1] [--rows 4] [--steps 2] [--reps 2] [--out FILE.json]
    python benchmarks/bench_train_batch_mask.py --before OLD_SRC --build [--rows 4] [--length 3000]

``OLD_SRC`` is a ``src`` folder of another commit (``git archive START src | tar -x -C DIR``). Each
run is a fresh process (one thread) with that tree first on ``PYTHONPATH``, interleaved before,
after, after, before, ...; each runs ``showo2 train``'s :class:`Run` for ``--steps`` steps of
``--rows`` rows of one role (``--role``: ``mmu``, image understanding in the pretraining format,
whose rows all have their image at one place: the layout probe ID shares; ``t2i``, whose blocks
start after captions of different lengths, except where every caption fills the text budget, as
the demo's do) and reports:

* the peak RSS after building and after the steps (``ru_maxrss``);
* the CPU seconds of the steps after the first (the first pays one-off costs);
* what autograd kept for the backward (``saved_mb``: saved tensors by storage over the run, the
  weights they reference included; a storage address a later step reuses counts once), and the
  ``L x L`` masks among them (``mask_shapes``; ``mask_mb``: the largest one's storage);
* the per-step losses and grad norms (metrics.jsonl) and a digest of the final weights, which
  must be the same bits in every run.

``--build``: the mask alone (the recipe's: built for ``--rows`` rows of one layout at ``--length``
positions, then SDPA's float form), CPU ms per build and the peak RSS it adds.

``--model 1.5B``: the registry spec "1.5B" (hidden 1536, MLP 8960, the 2048-wide flow head) from
scratch at ``--layers`` LLM / semantic / flow-head layers, a byte vocabulary, 432 px rows (729
visual tokens), a small random VAE (frozen), fp32. ``--model demo``: the bundled demo's spec and
its source of the role (examples/demo/showo2.toml; 64 px) with a random VAE.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def raw_config(out: Path, a) -> dict:
    if a.model == "demo":
        from showo2_cli.training.config import read_raw

        raw = read_raw(REPO / "examples" / "demo" / "showo2.toml")
        raw["model"].pop("vae", None)
        raw["model"]["tokenizer"] = str(REPO / "examples" / "demo" / "tokenizer")
        data = [{k: v for k, v in d.items() if k != "cache"} for d in raw["data"] if d["role"] == a.role][:1]
        model = {**raw["model"], "vae_base_dim": 8}
    else:
        model = {"init_spec": "1.5B", "vae_base_dim": 8,
                 "spec": {"num_layers": a.layers, "semantic_layers": a.layers, "head_layers": a.layers}}
        data = [{"kind": "shapes", "role": a.role, "resolution": 432}
                | ({"format": "pretraining"} if a.role == "mmu" else {})]
    return {"mode": "showo2", "seed": 0, "output_dir": str(out), "model": model, "data": data,
            "batch": {a.role: a.rows}, "optim": {"lr": 1e-5, "max_steps": a.steps},
            "run": {"save_every": 0, "log_every": 1, "device": "cpu", "mixed_precision": "no"}}


def worker(a) -> dict:
    import hashlib
    import resource

    import torch

    from showo2_cli.training.config import parse_config
    from showo2_cli.training.trainer import Run

    torch.set_num_threads(1)
    marks: dict = {}
    step_cpu: list[float] = []
    kept: dict[int, tuple[int, bool]] = {}
    masks: set[tuple[tuple[int, ...], int]] = set()  # (shape, bytes of its storage)

    def pack(t):
        st = t.untyped_storage()
        square = t.dim() >= 2 and t.shape[-1] == t.shape[-2] and t.shape[-1] > 64 and not t.requires_grad
        mask = square and t.dtype in (torch.bool, torch.float32, torch.bfloat16)
        kept[st.data_ptr()] = (st.nbytes(), mask)
        if mask:
            masks.add((tuple(t.shape), st.nbytes()))
        return t

    def progress(ev):
        if ev["event"] == "start":
            marks["after_build_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
        if ev["event"] in ("start", "step"):
            step_cpu.append(time.process_time())

    with tempfile.TemporaryDirectory(prefix="bench-batch-mask-") as tmp:
        cfg = parse_config(raw_config(Path(tmp) / "run", a), source=f"bench-{a.model}")
        run = Run(cfg, progress=progress, stop_after=a.steps)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            run.run()
        lines = [json.loads(x) for x in (Path(tmp) / "run" / "metrics.jsonl").read_text().splitlines()]
        digest = hashlib.sha256()
        for _, p in sorted(run.objective.network.state_dict().items()):
            digest.update(p.float().numpy().tobytes())
    cpu = [b - a_ for a_, b in zip(step_cpu, step_cpu[1:], strict=False)]
    return {**marks, "peak_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "step_cpu_s": [round(x, 2) for x in cpu], "later_steps_cpu_s": round(sum(cpu[1:]) / max(len(cpu) - 1, 1), 2),
            "saved_mb": round(sum(n for n, _ in kept.values()) / 2**20, 1),
            "mask_shapes": sorted(list(shape) for shape, _ in masks),
            "mask_mb": round(max((n for _, n in masks), default=0) / 2**20, 2),
            "losses": [x["loss"] for x in lines], "grad_norms": [x.get("grad_norm") for x in lines],
            "weights_sha256": digest.hexdigest()[:16]}


def build_worker(a) -> dict:
    """The recipe's mask of ``--rows`` rows of one layout at ``--length`` positions, built and
    converted (``--build``): CPU time per build, the peak RSS it adds, the kept mask's size."""
    import resource

    import torch

    from showo2_cli.modeling import attention

    torch.set_num_threads(1)
    slots = torch.tensor([[[40, a.length - 60]]] * a.rows)
    make = getattr(attention, "batch_mask", attention.omni_attention_mask)  # (before probe ID: one row per row)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.process_time()
    mask = None
    for _ in range(3):
        mask = None  # (the last one freed first: the peak is one build's)
        mask = attention.shared_mask(make(slots, a.length), "sdpa", torch.float32)
    seconds = (time.process_time() - t0) / 3
    return {"build_ms": round(seconds * 1000), "build_peak_mb": round((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024),
            "mask_mb": round(mask.numel() * mask.element_size() / 2**20, 1), "mask_shape": list(mask.shape)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", type=Path, required=True, help="the src folder of the commit to compare with")
    ap.add_argument("--after", type=Path, default=REPO / "src")
    ap.add_argument("--model", choices=("1.5B", "demo"), default="1.5B")
    ap.add_argument("--layers", type=int, default=1)
    ap.add_argument("--role", choices=("t2i", "mmu"), default="mmu")
    ap.add_argument("--rows", type=int, default=4)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--build", action="store_true", help="time the mask's building alone (--rows, --length)")
    ap.add_argument("--length", type=int, default=3000)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    if a.worker:
        print(json.dumps(build_worker(a) if a.build else worker(a)))
        return 0
    args = ["--model", a.model, "--role", a.role, "--layers", str(a.layers), "--rows", str(a.rows), "--steps", str(a.steps),
            "--before", str(a.before), "--length", str(a.length)] + ["--build"] * a.build
    rows = []
    for rep in range(a.reps):
        for name in (("before", "after") if rep % 2 == 0 else ("after", "before")):
            src = (a.before if name == "before" else a.after).resolve()
            env = {**os.environ, "OMP_NUM_THREADS": "1",
                   "PYTHONPATH": os.pathsep.join([str(src), os.environ.get("PYTHONPATH", "")])}
            proc = subprocess.run([sys.executable, __file__, "--worker", *args], capture_output=True, text=True, env=env)
            if proc.returncode:
                print(proc.stderr[-3000:], file=sys.stderr)
                return proc.returncode
            rows.append({"tree": name, **json.loads(proc.stdout.strip().splitlines()[-1])})
            print(json.dumps(rows[-1]), file=sys.stderr)
    import torch

    if a.build:
        result = {"build": True, "rows": a.rows, "length": a.length, "threads": 1, "torch": torch.__version__, "runs": rows}
    else:
        same = len({(json.dumps(r["losses"]), json.dumps(r["grad_norms"]), r["weights_sha256"]) for r in rows}) == 1
        result = {"model": a.model, "role": a.role, "layers": a.layers, "rows": a.rows, "steps": a.steps, "threads": 1,
                  "torch": torch.__version__, "runs": rows, "losses_grad_norms_weights_same_bits": same}
    if a.out:
        a.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
