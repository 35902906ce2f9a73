"""Quality of a model on the synthetic shapes world, judged by plain pixel statistics.

Renders fresh scenes (seeds never used in training) and
* captions images and videos, comparing the answer with the exact caption and each attribute;
* generates images and videos from fresh captions and classifies them with
  :func:`showo2_cli.training.shapes.classify_image` / ``classify_video`` (never the model itself);
* animates fresh images (i2v): the first frame keeps the input's colours, the shape moves the
  prompted way;
* round-trips fresh 17-frame clips (at the model's video resolution) through the VAE alone:
  per-frame reconstruction MSE (pixels in [0, 1]), the ceiling of every video task;
* runs the README's headline: ``t2i "a red circle on a white background"`` then ``caption`` of the
  result, for 20 seeds (right = colour, shape and background in both the image and the answer).

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
from showo2_cli.pipelines import (
    CaptionOptions,
    GenerateOptions,
    caption,
    image_to_video,
    text_to_image,
    text_to_video,
)
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
                out.setdefault("video_direction_in_caption", []).append(f"moving {scene.direction} " in a[0] + " ")
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


def i2v_quality(model, n_videos: int, seed: int, steps: int | None, workdir: Path) -> dict:
    """Animate fresh still scenes with their video caption: frame 0 keeps the input's colours and
    shape; the shape moves the prompted way."""
    rng = np.random.default_rng(seed + 2)
    res = {"i2v_first_frame": [], "i2v_direction": [], "i2v_colours": []}
    for i in range(n_videos):
        scene = S.random_scene(rng, video=True)
        still = workdir / f"i2v-{i}.png"
        M.write_image(still, S.render_video(scene, 1)[0], overwrite=True)
        vid = image_to_video(model, still, [S.caption(scene)],
                             GenerateOptions(seed=seed + i, steps=steps, frames=model.spec.video_frames))[0]
        first = S.score(scene, S.classify_image(vid.frames[0]))
        res["i2v_first_frame"].append(first["colour"] and first["background"] and first["shape"])
        sc = S.score(scene, S.classify_video(vid.frames))
        res["i2v_direction"].append(sc.get("direction", False))
        res["i2v_colours"].append(sc["colour"] and sc["background"])
    return {k: _rate(v) for k, v in res.items()}


def vae_round_trip(model, n_videos: int, seed: int) -> dict:
    """Per-frame MSE (pixels in [0, 1]) of fresh 17-frame clips through the VAE alone, and what the
    pixel checker makes of the reconstructions. The clips are rendered at the model's video
    resolution, the size every video task hands the VAE (and the size it was trained at)."""
    import torch

    rng = np.random.default_rng(seed + 3)
    vae = model.require_vae()
    errs, direction, colours = [], [], []
    for _ in range(n_videos):
        scene = S.random_scene(rng, video=True, canvas=model.spec.video_resolution)
        frames = S.render_video(scene, 17)
        x = M.frames_to_tensor(frames)[None].to(vae.device)
        with torch.no_grad():
            y = vae.decode(vae.encode(x))
        rec = M.tensor_to_frames(y[0])
        errs.append(((rec.astype(np.float64) - frames.astype(np.float64)) / 255.0) ** 2)
        sc = S.score(scene, S.classify_video(rec))
        direction.append(sc["direction"])
        colours.append(sc["colour"] and sc["background"])
    per_frame = np.mean([e.mean(axis=(1, 2, 3)) for e in errs], axis=0)
    return {"vae_frame_mse": [float(v) for v in per_frame],
            "vae_worst_to_first": float(per_frame.max() / max(per_frame[0], 1e-12)),
            "vae_round_trip_direction": _rate(direction), "vae_round_trip_colours": _rate(colours)}


def headline(model, workdir: Path, seeds: int = 20, steps: int | None = None) -> dict:
    """The README's first command: t2i "a red circle on a white background", then caption it."""
    prompt = "a red circle on a white background"
    ok_image, ok_caption, ok_both = [], [], []
    images = text_to_image(model, [prompt], GenerateOptions(seed=1, num_per_prompt=seeds, steps=steps, batch_size=seeds))
    for k, img in enumerate(images):
        pred = S.classify_image(img.frames[0])
        right = pred.get("colour") == "red" and pred.get("shape") == "circle" and pred.get("background") == "white"
        path = workdir / f"headline-{k}.png"
        M.write_image(path, img.frames[0], overwrite=True)
        answer = caption(model, path, CaptionOptions(questions=["Describe the image."], max_new_tokens=24)).answers[0]
        ok_image.append(right)
        ok_caption.append(answer.strip().lower() == prompt)
        ok_both.append(right and answer.strip().lower() == prompt)
    return {"headline_seeds": seeds, "headline_image_right": int(sum(ok_image)),
            "headline_caption_right": int(sum(ok_caption)), "headline_both_right": int(sum(ok_both))}


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
        i2v = i2v_quality(model, args.videos, args.seed, args.steps, Path(tmp))
        head = headline(model, Path(tmp), steps=args.steps)
    gen = generation_quality(model, args.images, args.videos, args.seed, args.steps)
    vae = vae_round_trip(model, args.videos, args.seed)
    result = {"model": args.model, "images": args.images, "videos": args.videos, "seed": args.seed,
              "steps": args.steps or model.spec.steps, "caption": cap, "generation": gen, "i2v": i2v,
              "vae": vae, "headline": head}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    goals = [("caption: image caption exactly right", cap["image_exact"], 0.95),
             ("caption: video caption exactly right (incl. direction)", cap["video_exact"], 0.90),
             ("caption: image colour / shape / background", None, None),
             ("t2i: shape colour and background right", min(gen["t2i_colour"], gen["t2i_background"]), 0.95),
             ("t2i: shape right", gen["t2i_shape"], 0.85),
             ("t2v: direction right", gen["t2v_direction"], 0.85),
             ("t2v: colours right", gen["t2v_colours"], 0.90),
             ("i2v: direction right", i2v["i2v_direction"], 0.85),
             ("i2v: first frame keeps the input (colours, shape)", i2v["i2v_first_frame"], None),
             ("i2v: colours right over the clip", i2v["i2v_colours"], None),
             ("caption: video direction, in the description / asked", None, "dir"),
             ("VAE round trip of 17-frame clips: direction / colours kept", None, "vae")]
    lines = ["| measure | measured | goal |", "|---|---:|---:|"]
    for name, value, goal in goals:
        if value is None and goal == "dir":
            lines.append(f"| {name} | {cap['video_direction_in_caption']:.0%} / {cap['video_direction']:.0%} | |")
        elif value is None and goal == "vae":
            lines.append(f"| {name} | {vae['vae_round_trip_direction']:.0%} / {vae['vae_round_trip_colours']:.0%} | |")
        elif value is None:
            value_s = f"{cap['image_colour']:.0%} / {cap['image_shape']:.0%} / {cap['image_background']:.0%}"
            lines.append(f"| {name} | {value_s} | |")
        else:
            lines.append(f"| {name} | {value:.0%} | {goal:.0%} |" if goal else f"| {name} | {value:.0%} | |")
    lines.append(f"| headline `t2i` + `caption` right, of {head['headline_seeds']} seeds (image / caption / both) | "
                 f"{head['headline_image_right']} / {head['headline_caption_right']} / {head['headline_both_right']} | 18 |")
    mse = vae["vae_frame_mse"]
    lines.append(f"| VAE per-frame MSE, 17-frame clips: frame 0 / worst / worst-to-first | {mse[0]:.4f} / "
                 f"{max(mse):.4f} / {vae['vae_worst_to_first']:.1f}x | <= 2x |")
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
