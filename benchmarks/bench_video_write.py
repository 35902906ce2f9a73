"""Time writing a video as ``write_video`` does, with and without x264's macroblock tree.

``write_video`` encodes H.264 with ``mbtree=0`` so that the same frames give the same bytes (the
AVX-512 mbtree code reads memory it never wrote). This compares it with x264's default (mbtree on),
the two interleaved (timings on a shared machine drift): wall and CPU seconds (the process's, x264's
threads included), file size and PSNR against the frames written.

    python benchmarks/bench_video_write.py                          # the shared mp4, 17 frames at 432x432
    python benchmarks/bench_video_write.py --video clip.mp4 --size 256 --frames 9 --repeats 5
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--video", default=str(Path(__file__).resolve().parents[2] / "shared" / "media" / "video1.mp4"))
    ap.add_argument("--size", type=int, default=432)
    ap.add_argument("--frames", type=int, default=17)
    ap.add_argument("--repeats", type=int, default=6)
    args = ap.parse_args()

    import av
    from PIL import Image

    import showo2_cli.media.video_write as V
    from showo2_cli.media import read_video

    source = read_video(args.video, num_frames=args.frames).frames
    frames = np.stack([np.asarray(Image.fromarray(f).resize((args.size, args.size))) for f in source])
    shipped = dict(V._CODEC_OPTIONS["libx264"])
    variants = {"mbtree off (shipped)": shipped,
                "mbtree on (x264 default)": {k: v for k, v in shipped.items() if k != "x264-params"}}
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.repeats):
            order = list(variants) if rep % 2 == 0 else list(reversed(variants))
            for name in order:
                V._CODEC_OPTIONS["libx264"] = variants[name]
                path = Path(tmp) / f"{rep}-{len(times[name])}-{order.index(name)}.mp4"
                wall, cpu = time.perf_counter(), time.process_time()
                V.write_av(path, frames, 8.0, ".mp4", None)
                times[name].append((time.perf_counter() - wall, time.process_time() - cpu))
                if rep == 0:
                    with av.open(str(path)) as c:
                        back = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)]).astype(float)
                    mse = float(np.mean((back - frames.astype(float)) ** 2))
                    print(f"{name}: {path.stat().st_size} bytes, PSNR {10 * np.log10(255 ** 2 / mse):.2f} dB")
    V._CODEC_OPTIONS["libx264"] = shipped
    for name, runs in times.items():
        print(f"{name}: wall median {np.median([w for w, _ in runs]):.2f} s, "
              f"CPU median {np.median([c for _, c in runs]):.2f} s over {len(runs)} runs")


if __name__ == "__main__":
    main()
