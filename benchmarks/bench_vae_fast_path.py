"""Time the Wan VAE on single frames: 3-D causal convs vs the exact conv2d fast path.

Random weights (the cost does not depend on them). For each base_dim, encodes a batch of images
and decodes the latents, once with ``fast_single_frame=False`` and once with ``True``, and prints
seconds and the speed-up. Also checks the two paths agree.

    python benchmarks/bench_vae_fast_path.py                      # base_dim 16 and 96, 128 px, batch 8
    python benchmarks/bench_vae_fast_path.py --size 256 --batch 2 --base-dim 96 --repeats 3
"""

from __future__ import annotations

import argparse
import time

import torch

from showo2_cli.modeling.vae import WanVAE


def _time(fn, repeats: int) -> tuple[float, torch.Tensor]:
    best = float("inf")
    out = None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def bench(base_dim: int, size: int, batch: int, repeats: int, threads: int | None) -> None:
    vae = WanVAE.random(base_dim=base_dim, seed=0)
    gen = torch.Generator().manual_seed(0)
    pixels = torch.rand(batch, 3, size, size, generator=gen) * 2 - 1
    results = {}
    for fast in (False, True):
        vae.fast_single_frame = fast
        with torch.inference_mode():
            vae.decode(vae.encode(pixels[:1, :, :32, :32]))  # warm-up (allocator, kernels)
            t_enc, latents = _time(lambda: vae.encode(pixels), repeats)
            t_dec, decoded = _time(lambda: vae.decode(latents), repeats)  # noqa: B023
        results[fast] = (t_enc, t_dec, latents, decoded)
    (e3, d3, z3, x3), (e2, d2, z2, x2) = results[False], results[True]
    err_z = (z3 - z2).abs().max().item()
    err_x = (x3 - x2).abs().max().item()
    print(
        f"base_dim {base_dim:3d} | {batch}x{size}px | threads {threads or torch.get_num_threads()} | "
        f"3-D: enc {e3:6.2f}s dec {d3:6.2f}s total {e3 + d3:6.2f}s | "
        f"2-D: enc {e2:6.2f}s dec {d2:6.2f}s total {e2 + d2:6.2f}s | "
        f"speed-up enc {e3 / e2:4.2f}x dec {d3 / d2:4.2f}x total {(e3 + d3) / (e2 + d2):4.2f}x | "
        f"max diff latents {err_z:.1e} pixels {err_x:.1e}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128, help="image side in pixels (multiple of 8)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument(
        "--base-dim", type=int, nargs="+", default=[16, 96], help="VAE widths to try (real: 96)"
    )
    parser.add_argument("--repeats", type=int, default=1, help="timed runs per measurement (best is kept)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    for base_dim in args.base_dim:
        bench(base_dim, args.size, args.batch, args.repeats, args.threads)


if __name__ == "__main__":
    main()
