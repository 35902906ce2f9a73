"""Accuracy of the shapes-world pixel classifiers on freshly rendered scenes under degradations.

For every resolution x noise level x blur setting, renders ``--n`` random images and ``--n``
random videos (:mod:`showo2_cli.training.shapes`), degrades them the way a small generative model's
outputs may look -- downscale to the resolution with PIL bilinear, optional Gaussian blur
(PIL ``GaussianBlur``, radius = ``--blur`` px at the target resolution), additive Gaussian noise
of the given standard deviation -- and prints the fraction of scenes whose colour, shape,
background (and direction, for videos) :func:`classify_image` / :func:`classify_video` get right,
plus the fraction with every attribute right.

    python benchmarks/quality_classifier_check.py --n 300 --seed 0
    python benchmarks/quality_classifier_check.py --n 100 --resolutions 128,64,32 --noise 0,10,25,40

Exits with status 1 when ``--require`` is given and some condition's all-attributes accuracy is
below it.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
from PIL import Image, ImageFilter

from showo2_cli.training import shapes as S


def degrade(frames: np.ndarray, res: int, noise: float, blur: float, rng: np.random.Generator) -> np.ndarray:
    """Downscale ``(..., H, W, 3)`` uint8 frames to ``res`` (PIL bilinear), blur, add noise."""
    shape = frames.shape
    out = []
    for f in frames.reshape(-1, *shape[-3:]):
        im = Image.fromarray(f)
        if res != f.shape[0]:
            im = im.resize((res, res), Image.BILINEAR)
        if blur > 0:
            im = im.filter(ImageFilter.GaussianBlur(blur))
        out.append(np.asarray(im))
    a = np.stack(out).astype(np.float32)
    if noise > 0:
        a += rng.standard_normal(a.shape, dtype=np.float32) * np.float32(noise)
    return np.clip(a + 0.5, 0, 255).astype(np.uint8).reshape(*shape[:-3], res, res, 3)


def evaluate(n: int, video: bool, res: int, noise: float, blur: float, seed: int) -> dict[str, float]:
    """Per-attribute accuracy (and ``all``) over ``n`` fresh scenes; ``ms`` per classification."""
    rng = np.random.default_rng(seed)  # scenes: the same for every condition with this seed
    noise_rng = np.random.default_rng([seed, 1])
    hits: dict[str, int] = {}
    seconds = 0.0
    for _ in range(n):
        scene = S.random_scene(rng, video=video)
        pixels = S.render_video(scene) if video else S.render_image(scene)
        pixels = degrade(pixels, res, noise, blur, noise_rng)
        t0 = time.perf_counter()
        pred = S.classify_video(pixels) if video else S.classify_image(pixels)
        seconds += time.perf_counter() - t0
        result = S.score(scene, pred)
        result["all"] = all(result.values())
        for key, ok in result.items():
            hits[key] = hits.get(key, 0) + int(ok)
    acc = {key: count / n for key, count in hits.items()}
    acc["ms"] = 1000 * seconds / n
    return acc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=200, help="scenes per condition and kind (default 200)")
    parser.add_argument("--seed", type=int, default=0, help="base random seed (default 0)")
    parser.add_argument("--resolutions", default="128,64,32,16", help="comma-separated sides in px")
    parser.add_argument("--noise", default="0,10,25", help="comma-separated noise std devs (0..255 scale)")
    parser.add_argument("--blur", type=float, default=1.0,
                        help="Gaussian blur radius in px; each condition runs without and with it (0: never)")
    parser.add_argument("--no-video", action="store_true", help="images only")
    parser.add_argument("--require", type=float, default=None,
                        help="exit 1 if some condition's all-attributes accuracy is below this fraction")
    args = parser.parse_args(argv)

    resolutions = [int(v) for v in args.resolutions.split(",") if v.strip()]
    noises = [float(v) for v in args.noise.split(",") if v.strip()]
    blurs = [0.0, args.blur] if args.blur > 0 else [0.0]
    kinds = [False] if args.no_video else [False, True]

    print(f"shapes-world classifier accuracy: n={args.n} per condition and kind, seed={args.seed}, "
          f"canvas {S.CANVAS} px rendered then downscaled (PIL bilinear)")
    header = (f"{'kind':<6}{'res':>5}{'noise':>7}{'blur':>6}  {'colour':>7}{'shape':>7}{'bg':>7}"
              f"{'dir':>7}{'all':>7}{'ms':>7}")
    print(header)
    print("-" * len(header))
    worst = 1.0
    for video in kinds:
        for res in resolutions:
            for noise in noises:
                for blur in blurs:
                    # the same scenes (seed) for every condition of a kind, so rows compare directly
                    acc = evaluate(args.n, video, res, noise, blur, args.seed + (1 if video else 0))
                    worst = min(worst, acc["all"])
                    direction = f"{acc['direction']:7.3f}" if video else f"{'-':>7}"
                    print(f"{'video' if video else 'image':<6}{res:>5}{noise:>7g}{blur:>6g}  "
                          f"{acc['colour']:7.3f}{acc['shape']:7.3f}{acc['background']:7.3f}"
                          f"{direction}{acc['all']:7.3f}{acc['ms']:7.2f}", flush=True)
    print(f"worst all-attributes accuracy: {worst:.3f}")
    if args.require is not None and worst < args.require:
        print(f"below --require {args.require}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
