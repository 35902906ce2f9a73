"""How far sampling's default (trimmed rows; at guidance 0, 1 or below 0 no unconditional rows) ends
from the official final latents, beside the official-shaped run and the set's own sensitivity.

    SHOWO2_PARITY_DIR is not read: name the sets.
    python benchmarks/trimmed_sampler_rounding.py /tmp/sets/probe-ia-g1 /tmp/sets/probe-ja-shards

For each generation case of each parity set (the dynamic-grid case, which needs its config
overrides, is left out): the case's guidance, steps and shift; the final latents' peak; the max
difference from the stored official final latents of ``generate_latents(..., trim=False)`` (the
official op shapes) and of ``trim=True`` (the default); and the official-shaped run's change when its
noise is multiplied by 1 + 2**-23 (one float32 ulp), the rounding sensitivity the parity tests scale
their sampler bound by. Probe KC's figures are in the CHANGELOG.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from showo2_cli.loading import load
from showo2_cli.sampling import generate_latents
from showo2_cli.sequences import generation_layout


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sets", nargs="+", type=Path, help="parity fixture sets (folders holding meta.json)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    for root in args.sets:
        meta = json.loads((root / "meta.json").read_text())
        model = load(root / "model", dtype=torch.float32, need=())
        for name, info in sorted(meta["cases"].items()):
            if not name.startswith(("t2i", "t2v", "i2v")) or info.get("config_overrides"):
                continue
            data = load_file(str(root / "cases" / f"{name}.safetensors"))
            layout = generation_layout(info["prompt_ids"], int(info["num_image_tokens_incl_time"]), model.tokens,
                                       int(info["max_seq_len"]), video=data["z_init_per_prompt"].dim() == 5)
            g, steps, shift = float(info["guidance_scale"]), int(info["num_steps"]), float(info["time_shifting_factor"])
            z, want = data["z_init_per_prompt"], data["final_latents"]

            first = bool(info.get("first_frame_as_cond"))
            net = model.network

            def run(noise, trim, g=g, steps=steps, shift=shift, layout=layout, first=first, net=net):
                return generate_latents(net, layout, noise, g, steps, shift, trim=trim, first_frame_as_cond=first)

            with torch.no_grad():
                full, trimmed, nudged = run(z, False), run(z, True), run(z * (1 + 2.0 ** -23), False)
            print(f"{root.name}/{name}: guidance {g:g}, {steps} steps, shift {shift:g}, peak {want.abs().max():.3g}: "
                  f"untrimmed {float((full - want).abs().max()):.3g}, trimmed {float((trimmed - want).abs().max()):.3g}, "
                  f"one-ulp sensitivity {float((nudged - full).abs().max()):.3g}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
