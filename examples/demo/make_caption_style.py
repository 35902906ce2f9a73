"""Data for examples/demo/lora_caption_style.toml: 256 shapes-world images whose captions follow a
new style ("circle in red over black" instead of "a red circle on a black background"), as a
LLaVA-style conversation file.

    python examples/demo/make_caption_style.py [OUT_FOLDER]     # default: runs/demo-caption-style
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from showo2_cli import media as M
from showo2_cli.training import shapes as S

REPO = Path(__file__).resolve().parents[2]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", nargs="?", type=Path, default=REPO / "runs" / "demo-caption-style",
                    help="folder for images/ and style.json (default: runs/demo-caption-style)")
    out = ap.parse_args(argv).out
    (out / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    rows = []
    for i in range(256):
        scene = S.random_scene(rng, canvas=64)
        M.write_image(out / "images" / f"{i:04d}.png", S.render_image(scene), overwrite=True)
        rows.append({"image": f"images/{i:04d}.png", "conversations": [
            {"from": "human", "value": "<image>\n" + S.Q_DESCRIBE_IMAGE},
            {"from": "gpt", "value": f"{scene.shape} in {scene.colour} over {scene.background}"}]})
    (out / "style.json").write_text(json.dumps(rows, indent=0) + "\n")
    print(out / "style.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
