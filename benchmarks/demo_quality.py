"""Quality of a model on the synthetic shapes world, judged by plain pixel statistics.

Renders fresh scenes (seeds never used in training) and
* captions images and videos, comparing the answer with the exact caption and each attribute;
* generates images and videos from fresh captions and classifies them with
  :func:`showo2_cli.training.shapes.classify_image` / ``classify_video`` (never the model itself).

    python benchmarks/demo_quality.py --model demo --images 100 --videos 50
    python benchmarks/demo_quality.py --model demo --quick        # 20 / 10

Writes a JSON and a markdown table (``--out``); prints seconds per t2i image and per caption.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from showo2_cli import media as M
from showo2_cli.loading import load
from showo2_cli.pipelines import CaptionOptions, GenerateOptions, caption, text_to_image, text_to_video
from showo2_cli.training import shapes as S


def _rate(flags: list[bool]) -> float:
    return float(np.mean(flags)) if flags else float("nan")


def caption_quality(model, n_images: int, n_videos: int, seed: int, workdir: Path) -> dict:
    rng = np.random.default_rng(seed)
    out = {"image_exact": [], "image_colour": [], "image_shape": [], "image_background": [],
           "video_exact": [], "video_direction": [], "seconds": []}
    for kind, n in (("image", n_images), ("video", n_videos)):
        for i in range(n):
            scene = S.random_scene(rng, video=kind == "video")
            path = workdir / f"{kind}-{i}.{'png' if kind == 'image' else 'mp4'}"
            if kind == "image":
                M.write_image(path, S.render_image(scene), overwrite=True)
            else:
                M.write_video(path, S.render_video(scene), 8, overwrite=True)
            start = time.perf_counter()
            qs = ["Describe the image." if kind == "image" else "Describe the video.", "What color is the shape?",
                  "What shape is it?", "What color is the background?"]
            if kind == "video":
                qs.append("Which way is the shape moving?")
            res = caption(model, path, CaptionOptions(questions=qs, max_new_tokens=24))
            out["seconds"].append((time.perf_counter() - start) / len(qs))
            want = S.caption(scene)
            a = [x.strip().lower() for x in res.answers]
            out[f"{kind}_exact"].append(a[0] == want)
            if kind == "image":
                out["image_colour"].append(a[1] == scene.colour)
                out["image_shape"].append(a[2] == scene.shape)
                out["image_background"].append(a[3] == scene.background)
            else:
                out["video_direction"].append(a[4] == scene.direction)
    return {k: (_rate(v) if k != "seconds" else float(np.mean(v)) if v else None) for k, v in out.items()}


def generation_quality(model, n_images: int, n_videos: int, seed: int, steps: int | None) -> dict:
    rng = np.random.default_rng(seed + 1)
    scenes = [S.random_scene(rng) for _ in range(n_images)]
    start = time.perf_counter()
    images = text_to_image(model, [S.caption(s) for s in scenes],
                           GenerateOptions(seed=seed, steps=steps, batch_size=25)) if n_images else []
    t2i_seconds = (time.perf_counter() - start) / max(n_images, 1)
    res = {"t2i_colour": [], "t2i_shape": [], "t2i_background": [], "t2i_all": []}
    for scene, img in zip(scenes, images, strict=True):
        pred = S.classify_image(img.frames[0])
        sc = S.score(scene, pred)
        res["t2i_colour"].append(sc["colour"])
        res["t2i_shape"].append(sc["shape"])
        res["t2i_background"].append(sc["background"])
        res["t2i_all"].append(all(sc.values()))
    vscenes = [S.random_scene(rng, video=True) for _ in range(n_videos)]
    start = time.perf_counter()
    videos = text_to_video(model, [S.caption(s) for s in vscenes],
                           GenerateOptions(seed=seed, steps=steps, batch_size=10, frames=model.spec.video_frames)) if n_videos else []
    t2v_seconds = (time.perf_counter() - start) / max(n_videos, 1)
    vres = {"t2v_direction": [], "t2v_colours": [], "t2v_shape": []}
    for scene, vid in zip(vscenes, videos, strict=True):
        pred = S.classify_video(vid.frames)
        sc = S.score(scene, pred)
        vres["t2v_direction"].append(sc.get("direction", False))
        vres["t2v_colours"].append(sc["colour"] and sc["background"])
        vres["t2v_shape"].append(sc["shape"])
    out = {k: _rate(v) for k, v in {**res, **vres}.items()}
    out["t2i_seconds_per_image"] = t2i_seconds
    out["t2v_seconds_per_video"] = t2v_seconds
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="demo")
    p.add_argument("--images", type=int, default=100)
    p.add_argument("--videos", type=int, default=50)
    p.add_argument("--quick", action="store_true", help="20 images, 10 videos")
    p.add_argument("--steps", type=int, default=None, help="sampler grid points (default: the model's)")
    p.add_argument("--seed", type=int, default=12345)
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "demo-quality.json")
    args = p.parse_args()
    if args.quick:
        args.images, args.videos = 20, 10
    model = load(args.model)
    with tempfile.TemporaryDirectory() as tmp:
        cap = caption_quality(model, args.images, args.videos, args.seed, Path(tmp))
    gen = generation_quality(model, args.images, args.videos, args.seed, args.steps)
    result = {"model": args.model, "images": args.images, "videos": args.videos, "seed": args.seed,
              "steps": args.steps or model.spec.steps, "caption": cap, "generation": gen}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    goals = [("caption: image caption exactly right", cap["image_exact"], 0.95),
             ("caption: video caption exactly right (incl. direction)", cap["video_exact"], 0.90),
             ("caption: image colour / shape / background", None, None),
             ("t2i: shape colour and background right", min(gen["t2i_colour"], gen["t2i_background"]), 0.95),
             ("t2i: shape right", gen["t2i_shape"], 0.85),
             ("t2v: direction right", gen["t2v_direction"], 0.85),
             ("t2v: colours right", gen["t2v_colours"], 0.90)]
    lines = ["| measure | measured | goal |", "|---|---:|---:|"]
    for name, value, goal in goals:
        if value is None:
            value_s = f"{cap['image_colour']:.0%} / {cap['image_shape']:.0%} / {cap['image_background']:.0%}"
            lines.append(f"| {name} | {value_s} | |")
        else:
            lines.append(f"| {name} | {value:.0%} | {goal:.0%} |")
    lines.append(f"| seconds per t2i image ({result['steps']} steps, batch 25) | {gen['t2i_seconds_per_image']:.2f} | |")
    lines.append(f"| seconds per t2v video ({result['steps']} steps, batch 10) | {gen['t2v_seconds_per_video']:.2f} | |")
    lines.append(f"| seconds per caption answer | {cap['seconds']:.2f} | |")
    table = "\n".join(lines)
    args.out.with_suffix(".md").write_text(
        f"# Demo quality ({args.images} images, {args.videos} videos, seed {args.seed})\n\n"
        f"`python benchmarks/demo_quality.py --model {args.model} --images {args.images} --videos {args.videos}`\n\n"
        + table + "\n")
    print(table)


if __name__ == "__main__":
    main()
