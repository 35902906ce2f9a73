"""Does a negative prompt steer the demo away from what it names? Judged by pixel statistics.

For each colour of the shapes world, text-to-image of a prompt that names no colour ("a circle on
a white background"), once with the official empty negative prompt and once with the negative
"a <colour> circle on a white background", over the same seeds; each image is classified with
:func:`showo2_cli.training.shapes.classify_image` (never the model). Reports, per colour, how
often the image has that colour with and without the negative prompt.

    python benchmarks/negative_prompt.py --model demo --seeds 10 --out benchmarks/results/negative-prompt.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from showo2_cli.loading import load
from showo2_cli.pipelines import GenerateOptions, text_to_image
from showo2_cli.training import shapes as S


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="demo")
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--prompt", default="a circle on a white background")
    ap.add_argument("--guidance", type=float, default=None, help="default: the model's")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    model = load(args.model)
    seeds = list(range(1000, 1000 + args.seeds))
    start = time.perf_counter()

    def colours(negative: str) -> list[str | None]:
        found = []
        for seed in seeds:  # one output per call: the same seed, whatever the batch
            opts = GenerateOptions(seed=seed, guidance=args.guidance, negative_prompt=negative, batch_size=1)
            found.append(S.classify_image(text_to_image(model, [args.prompt], opts)[0].frames[0])["colour"])
        return found

    plain = colours("")
    rows = {}
    for colour in S.COLOURS:
        negative = args.prompt.replace("a circle", f"a {colour} circle", 1)
        got = colours(negative)
        rows[colour] = {"negative_prompt": negative,
                        "rate_without": float(np.mean([c == colour for c in plain])),
                        "rate_with": float(np.mean([c == colour for c in got])),
                        "colours_with": got}
        print(f"{colour:7s} without {rows[colour]['rate_without']:.2f}  with negative {rows[colour]['rate_with']:.2f}",
              flush=True)
    result = {"model": args.model, "prompt": args.prompt, "seeds": seeds, "guidance": args.guidance,
              "colours_without": plain, "per_colour": rows,
              "mean_rate_without": float(np.mean([r["rate_without"] for r in rows.values()])),
              "mean_rate_with": float(np.mean([r["rate_with"] for r in rows.values()])),
              "seconds": round(time.perf_counter() - start, 1)}
    print(json.dumps({k: v for k, v in result.items() if k.startswith("mean") or k == "seconds"}))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
