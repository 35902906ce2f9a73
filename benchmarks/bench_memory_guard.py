"""A job's measured peak memory against the memory guard's estimate (probe BM).

    python benchmarks/bench_memory_guard.py [--model demo|wide] [--cases t2i,t2v,i2v,caption,chat,encode,decode]

Each case runs in a fresh process: the model loads, the same job runs once at the smallest size (so
imports and first-call set-ups are not counted), then the peak resident memory is reset
(``/proc/self/clear_refs``, Linux) and the job runs at the size measured. It prints the job's peak
over the memory held before it (``VmHWM - VmRSS``), the weights the job runs (what the guard adds
to its estimate) and the guard's estimate of the job's working memory. ``chat``: a question of text
alone (no image: the guard counts no VAE encoder, probe CA), its prompt of about SIZE words. ``wide``: a random model of
wider layers (LLM 512/2048, flow head 512/2048, VAE base_dim 32) written to a temporary folder; ``vae96``: the tiny
network with a random VAE of the real Wan2.1 architecture (base_dim 96), for the VAE's own cases.
The estimate of a video job (more than one frame) counts the CPU heap's allowance, as the guard does
(``runtime.heap_allowance_gb``). Peaks are in MB; they do not depend on the machine's load; the
job's seconds are printed for comparisons side by side (``MALLOC_MMAP_THRESHOLD_`` set or not).
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

sys.path.insert(0, str(Path(__file__).resolve().parent))

from proc_memory import reset_peak, status  # noqa: E402

CASES = {  # name: (command, size, frames)
    "t2i": [("t2i", s, 1) for s in (64, 256, 512)],
    "t2v": [("t2v", s, f) for s, f in ((64, 17), (128, 17), (256, 9))],
    "i2v": [("i2v", s, f) for s, f in ((64, 17), (128, 17))],
    "caption": [("caption", s, 1) for s in (256, 432)],
    "chat": [("chat", s, 1) for s in (16, 256, 1024)],
    "encode": [("encode", s, f) for s, f in ((256, 1), (512, 1), (256, 17))],
    "decode": [("decode", s, f) for s, f in ((256, 1), (512, 1), (256, 17))],
    # the video terms across lengths (probe DD): frames 1, 5, 9, 17 (latent frames 1, 2, 3, 5) at two sizes
    "decode-frames": [("decode", s, f) for s in (128, 256) for f in (1, 5, 9, 17)],
    "encode-frames": [("encode", s, f) for s in (128, 256) for f in (1, 5, 9, 17)],
    "t2v-frames": [("t2v", s, f) for s in (128, 256) for f in (5, 9, 17)],
    # every video job on the CPU at 64-256 px and 5-33 frames (probe DN: the heap allowance)
    "video-cpu": [(c, s, f) for c in ("t2v", "i2v", "decode", "encode") for s in (64, 128, 256) for f in (5, 17, 33)],
    "vae-cpu": [(c, s, f) for c in ("decode", "encode") for s in (64, 128) for f in (5, 17, 33)],
}


def _job(model, command: str, size: int, frames: int):
    """A callable running the job, and the guard's (weights, working memory) estimate in bytes."""
    import numpy as np
    import torch

    from showo2_cli import api
    from showo2_cli.pipelines import latents as L
    from showo2_cli.pipelines.generate import generation_memory_gb
    from showo2_cli.runtime import heap_allowance_gb

    spec, vae = model.spec, model.vae
    steps = 2
    if command in ("t2i", "t2v", "i2v"):
        video = command != "t2i"
        image = np.random.default_rng(0).integers(0, 255, (size, size, 3), dtype=np.uint8)

        def run():
            if command == "t2i":
                return api.text_to_image(model, "a red circle", api.GenerateOptions(size=(size, size), steps=steps, seed=0))
            opts = api.GenerateOptions(size=(size, size), steps=steps, seed=0, frames=frames)
            if command == "t2v":
                return api.text_to_video(model, "a red circle", opts)
            return api.image_to_video(model, image, "a red circle", opts)

        work = generation_memory_gb(spec, model.dtype, (size, size), frames, video, 1, vae.base_dim, vae_tile=vae.tile)
        return run, (work + heap_allowance_gb(vae.device, video and frames > 1)) * 1e9
    if command == "caption":
        image = np.random.default_rng(0).integers(0, 255, (size, size, 3), dtype=np.uint8)

        def run():
            return api.caption(model, image, api.CaptionOptions(max_new_tokens=8))

        from showo2_cli.pipelines.understand import answer_memory_gb

        side = spec.resolution
        return run, (answer_memory_gb(model, 64, 8) + vae.encode_memory_gb(1, side, side)) * 1e9
    if command == "chat":
        from showo2_cli.chat import Conversation
        from showo2_cli.options import CaptionOptions
        from showo2_cli.pipelines.understand import answer_memory_gb

        question = " ".join(["what"] * size) + "?"
        chat = Conversation(model, options=CaptionOptions(max_new_tokens=8))

        def run():
            chat.reset()
            return chat.ask(question)

        run()  # (once before: the prompt's length the guard judges)
        return run, answer_memory_gb(model, chat.turns[-1].prompt_tokens, 8) * 1e9
    if command == "encode":
        clip = np.random.default_rng(0).integers(0, 255, (frames, size, size, 3), dtype=np.uint8)

        def run():
            return L.encode(list(clip) if frames > 1 else clip[0], vae, api.EncodeOptions(size=(size, size),
                                                                                          frames=frames))

        return run, (vae.encode_memory_gb(frames, size, size) + heap_allowance_gb(vae.device, frames > 1)) * 1e9
    t = 1 + (frames - 1) // 4
    z = torch.randn(vae.z_dim, t, size // 8, size // 8)

    def run():
        return L.decode(z, vae)

    return run, (vae.decode_memory_gb(t, size // 8, size // 8) + heap_allowance_gb(vae.device, t > 1)) * 1e9


def child(model_name: str, command: str, size: int, frames: int) -> None:
    import ctypes
    import gc

    import torch

    torch.set_num_threads(1)
    from showo2_cli import api

    model = api.load(model_name)
    small = 64 if command not in ("caption",) else 64
    warm, _ = _job(model, command, small if command != "chat" else 16,
                   1 if command in ("t2i", "caption", "chat") else min(frames, 5))
    warm()
    run, work = _job(model, command, size, frames)
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # what the warm-up freed goes back, so it is not counted as held
    before = status()["VmRSS"]
    reset_peak()
    start = time.perf_counter()
    run()
    seconds = time.perf_counter() - start
    peak = status()["VmHWM"] - before
    job = f"{command} of {size} words" if command == "chat" else f"{command} {size}px x{frames}"
    print(json.dumps({"job": job, "peak_mb": round(peak / 1e6, 1),
                      "estimate_mb": round(work / 1e6, 1), "ratio": round(work / max(peak, 1), 2),
                      "seconds": round(seconds, 2)}))


def wide_model(folder: Path) -> Path:
    from showo2_cli.loading import init_model
    from showo2_cli.specs import get_spec

    spec = get_spec("tiny").replace(name="wide", hidden_size=512, num_heads=8, num_kv_heads=2, head_dim=64,
                                    intermediate_size=2048, head_hidden=512, head_heads=8, head_kv_heads=2,
                                    head_dim_flow=64, head_intermediate=2048, clip_latent_dim=64)
    path = folder / "wide"
    if not path.exists():
        init_model(spec, path, seed=0, vae_base_dim=32)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="demo")
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--child", nargs=3, metavar=("COMMAND", "SIZE", "FRAMES"))
    args = ap.parse_args()
    if args.child:
        child(args.model, args.child[0], int(args.child[1]), int(args.child[2]))
        return
    with tempfile.TemporaryDirectory() as tmp:
        name = str(wide_model(Path(tmp))) if args.model == "wide" else args.model
        if args.model == "vae96":
            from showo2_cli.loading import init_model

            name = str(init_model("tiny", Path(tmp) / "vae96", seed=0, vae_base_dim=96))
        for case in args.cases.split(","):
            for command, size, frames in CASES[case]:
                env = {**os.environ, "OMP_NUM_THREADS": "1"}
                proc = subprocess.run([sys.executable, __file__, "--model", name, "--child", command, str(size),
                                       str(frames)], env=env, capture_output=True, text=True)
                out = proc.stdout.strip().splitlines()
                print(out[-1] if proc.returncode == 0 and out else
                      f"{command} {size} x{frames}: failed: {proc.stderr.strip().splitlines()[-1:]}", flush=True)


if __name__ == "__main__":
    main()
