"""Quality against model calls for every ``--sampler``, on a model of the synthetic shapes world.

For fresh captions, each sampler runs at several grid sizes from the same starting noise. Two
measures per setting:

* the pixel checker's verdicts (:func:`showo2_cli.training.shapes.classify_image`): colour, shape,
  background, all three;
* the distance to a reference (Euler on a fine grid, ``--reference-steps``), the same noise and
  prompt: mean squared pixel error in [0, 1] and the share of images whose checker verdict
  agrees with the reference's. This is what "fewer steps" should keep.

    python benchmarks/sampler_quality.py --model demo --images 60

Writes a JSON and a markdown table (``--out``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from showo2_cli.loading import load
from showo2_cli.options import SAMPLERS
from showo2_cli.pipelines import GenerateOptions, text_to_image
from showo2_cli.sampling import diffusers_scheduler, time_grid
from showo2_cli.training import shapes as S


def model_calls(method: str, steps: int, shift: float) -> int:
    """Network evaluations per image (times two rows under guidance)."""
    if method in ("euler", "flow-euler"):
        return steps - 1
    if method == "heun":
        return 2 * (steps - 1) - 1
    return len(diffusers_scheduler(method, time_grid(steps, shift), shift).timesteps)


def verdict(pred: dict) -> tuple:
    """The checker's named attributes (its dict also holds measurements)."""
    return tuple(pred.get(k) for k in ("colour", "shape", "background"))


def pixels(images) -> np.ndarray:
    return np.stack([np.asarray(i.frames[0], dtype=np.float32) / 255.0 for i in images])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="demo")
    p.add_argument("--images", type=int, default=60)
    p.add_argument("--steps", type=int, nargs="+", default=[4, 6, 8, 12, 20, 30])
    p.add_argument("--samplers", nargs="+", default=[s for s in SAMPLERS if s != "flow-euler"])
    p.add_argument("--reference-steps", type=int, default=100)
    p.add_argument("--seed", type=int, default=4242)
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "sampler-quality.json")
    a = p.parse_args()

    model = load(a.model)
    spec = model.spec
    rng = np.random.default_rng(a.seed)
    scenes = [S.random_scene(rng) for _ in range(a.images)]
    prompts = [S.caption(s) for s in scenes]

    def run(method: str, steps: int):
        start = time.perf_counter()
        imgs = text_to_image(model, prompts, GenerateOptions(seed=a.seed, steps=steps, method=method, batch_size=30))
        return imgs, time.perf_counter() - start

    ref_imgs, _ = run("euler", a.reference_steps)
    ref_px = pixels(ref_imgs)
    ref_pred = [S.classify_image(i.frames[0]) for i in ref_imgs]
    rows = []
    for method in a.samplers:
        for steps in a.steps:
            imgs, seconds = run(method, steps)
            preds = [S.classify_image(i.frames[0]) for i in imgs]
            scores = [S.score(s, q) for s, q in zip(scenes, preds, strict=True)]
            rows.append({
                "sampler": method, "grid_points": steps, "model_calls": model_calls(method, steps, spec.shift),
                "colour": float(np.mean([x["colour"] for x in scores])),
                "shape": float(np.mean([x["shape"] for x in scores])),
                "background": float(np.mean([x["background"] for x in scores])),
                "all": float(np.mean([all(x.values()) for x in scores])),
                "mse_to_reference": float(np.mean((pixels(imgs) - ref_px) ** 2)),
                "agrees_with_reference": float(np.mean([verdict(q) == verdict(r) for q, r in zip(preds, ref_pred, strict=True)])),
                "seconds_per_image": seconds / a.images,
            })
            print(json.dumps(rows[-1]), flush=True)
    ref_scores = [S.score(s, q) for s, q in zip(scenes, ref_pred, strict=True)]
    result = {"model": a.model, "images": a.images, "seed": a.seed, "guidance": spec.guidance, "shift": spec.shift,
              "reference": {"sampler": "euler", "grid_points": a.reference_steps,
                            "all": float(np.mean([all(x.values()) for x in ref_scores]))},
              "rows": rows}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=1) + "\n")
    lines = [f"# Sampler quality against model calls ({a.model}, {a.images} images, guidance {spec.guidance}, "
             f"shift {spec.shift}; reference: euler, {a.reference_steps} grid points, all-right "
             f"{result['reference']['all']:.2f})", "",
             "| sampler | grid points | model calls | colour | shape | background | all | MSE to reference "
             "| agrees with reference |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['sampler']} | {r['grid_points']} | {r['model_calls']} | {r['colour']:.2f} | {r['shape']:.2f} "
              f"| {r['background']:.2f} | {r['all']:.2f} | {r['mse_to_reference']:.4f} "
              f"| {r['agrees_with_reference']:.2f} |" for r in rows]
    a.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"wrote {a.out} and {a.out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
