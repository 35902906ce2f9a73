"""Peak memory of ``showo2 encode`` on a long, large video against its output's size (probe BC).

    python benchmarks/bench_encode_memory.py [--width 1920 --height 1080 --frames 300] [--size 64]

Writes a synthetic H.264 clip (a bar moving over a gradient), then runs ``showo2 encode`` on it in
fresh processes (peak RSS, ``ru_maxrss`` of the child, only grows): all frames, and ``--frames 17``.
It prints each run's peak RSS, its seconds, and the ratio of the peak to the frames' decoded size:
the frames are resized to ``--size`` as they are decoded, so the peak should follow the output
(about the process's imports plus the decoder's few frames), not ``frames x width x height x 3``.
Seconds are only comparable side by side on an idle machine.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def write_clip(path: Path, width: int, height: int, frames: int) -> None:
    import av
    import numpy as np

    ramp = np.linspace(0, 255, width, dtype=np.uint8)[None, :, None]
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=30)
        s.width, s.height, s.pix_fmt = width, height, "yuv420p"
        s.options = {"preset": "ultrafast"}
        for i in range(frames):
            f = np.broadcast_to(ramp, (height, width, 3)).copy()
            x = i * 17 % max(width - width // 8, 1)
            f[:, x:x + width // 8, 2] = 255
            vf = av.VideoFrame.from_ndarray(f, format="rgb24")
            vf.pts = i
            c.mux(s.encode(vf))
        c.mux(s.encode())


def run(args: list[str]) -> tuple[float, float]:
    """(peak RSS in MB, seconds) of one ``showo2`` command in a fresh process."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "showo2_cli.cli", *args], env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"showo2 {' '.join(args)} failed: {proc.stderr.strip()}")
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=int, default=1920)
    ap.add_argument("--height", type=int, default=1080)
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--size", type=int, default=64)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "clip.mp4"
        write_clip(clip, a.width, a.height, a.frames)
        decoded_mb = a.frames * a.width * a.height * 3 / 2**20
        print(f"{a.frames} frames of {a.width}x{a.height}: {decoded_mb:.0f} MB decoded; encoded at {a.size} px")
        for extra in (["--frames", "17"], []):
            # ru_maxrss of children is the largest child so far: the runs go from small to large
            rss, seconds = run(["encode", str(clip), "--size", str(a.size), "-o", str(Path(tmp) / "z.safetensors"),
                                "--overwrite", *extra])
            print(f"encode {' '.join(extra) or '(all frames)':14s} peak RSS {rss:7.0f} MB  {seconds:6.1f} s  "
                  f"peak / decoded frames {rss / decoded_mb:.2f}")


if __name__ == "__main__":
    main()
