"""Memory and time of quantizing one large linear layer whole or by chunks of rows (probe CB).

An untied ``lm_head`` of the 1.5B's shape (151669 x 1536, random, seed 0; ``--rows``/``--width``
for another, e.g. the 7B's 151669 x 3584) is quantized by ``acceleration.quantize_network`` with
``int8wo`` and ``nf4``, in float32 and bfloat16, each in a fresh process, with
``acceleration.QUANTIZE_CHUNK`` at its default (the layer by chunks of rows) and at a value no layer
exceeds (the layer whole, as before probe CB): the process's peak RSS over the RSS before
quantizing (``VmHWM``, reset by ``/proc/self/clear_refs``) is the quantizer's scratch plus the
quantized layer; the seconds are the quantization's. ``--repeat`` runs every variant that many
times, interleaved (timings on a shared machine are noisy: compare side by side).

    OMP_NUM_THREADS=1 python benchmarks/bench_quantize_chunks.py   # -> benchmarks/results/quantize-chunks.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from proc_memory import reset_peak, status  # noqa: E402

WHOLE = 1 << 40



def child(method: str, dtype_name: str, chunked: bool, rows: int, width: int) -> dict:
    import torch
    from torch import nn

    torch.set_num_threads(1)
    from showo2_cli import acceleration
    from showo2_cli.acceleration import quantize_network, weight_bytes

    if not chunked:
        acceleration.QUANTIZE_CHUNK = WHOLE
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    net = nn.Module()
    net.spec, net.showo = None, nn.Module()
    net.showo.lm_head = nn.Linear(width, rows, bias=False, device="meta")
    weight = torch.empty(rows, width, dtype=dtype)
    gen = torch.Generator().manual_seed(0)
    for start in range(0, rows, 8192):  # (random in slices: no float32 copy of a bf16 weight)
        weight[start:start + 8192] = torch.randn(min(8192, rows - start), width, generator=gen) * 0.02
    net.showo.lm_head.weight = nn.Parameter(weight, requires_grad=False)
    del weight
    warm = nn.Module()
    warm.spec, warm.showo = None, nn.Module()
    warm.showo.lm_head = nn.Linear(64, 8, dtype=dtype)
    quantize_network(warm, method)  # (the library's imports and first call, outside the measure)
    reset_peak()
    before = status()["VmRSS"]
    began = time.perf_counter()
    quantize_network(net, method)
    seconds = time.perf_counter() - began
    after = status()
    return {"method": method, "dtype": dtype_name, "chunked": chunked, "rows": rows, "width": width,
            "layer_bytes": rows * width * dtype.itemsize, "quantized_bytes": weight_bytes(net),
            "peak_over_before": after["VmHWM"] - before, "seconds": seconds,
            "chunk": acceleration.QUANTIZE_CHUNK}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=151669)
    ap.add_argument("--width", type=int, default=1536)
    ap.add_argument("--methods", nargs="*", default=["int8wo", "nf4"])
    ap.add_argument("--dtypes", nargs="*", default=["fp32", "bf16"])
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--results", type=Path, default=HERE / "results" / "quantize-chunks.json")
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        method, dtype_name, chunked = args.child
        print(json.dumps(child(method, dtype_name, chunked == "1", args.rows, args.width)))
        return
    rows = []
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for _ in range(args.repeat):
        for method in args.methods:
            for dtype_name in args.dtypes:
                for chunked in ("0", "1"):  # (whole, then by rows: side by side)
                    done = subprocess.run([sys.executable, __file__, "--child", method, dtype_name, chunked,
                                           "--rows", str(args.rows), "--width", str(args.width)],
                                          check=True, env=env, capture_output=True, text=True)
                    row = json.loads(done.stdout.strip().splitlines()[-1])
                    rows.append(row)
                    print(method, dtype_name, "by rows" if row["chunked"] else "whole",
                          f"layer {row['layer_bytes'] / 1e9:.2f} GB, quantized {row['quantized_bytes'] / 1e9:.2f} GB,"
                          f" peak +{row['peak_over_before'] / 1e9:.2f} GB, {row['seconds']:.2f} s", flush=True)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps({"machine": platform.platform(), "python": sys.version.split()[0],
                                        "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
