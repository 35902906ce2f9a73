"""A training step's attention masks, before and after probe GE, side by side.

    python benchmarks/bench_train_mask.py [--frames 4] [--layers 8] [--head-layers 4] [--reps 2] [--out FILE.json]

One training-style forward and backward (the recipe's: hidden states, then the flow head under the
one omni mask; a loss on both) of a video row: ``--frames`` latent frames of 27 x 27 tokens (the 432 px
geometry, 1 + 729 * frames positions after a short prompt). The network is the tiny spec made deeper
(``--layers`` LLM, ``--head-layers`` flow-head layers), so the masks, whose size depends on the
sequence and the layer count only, are a visible share of the memory. "old": every layer given the
boolean mask (SDPA converts it per call and keeps each layer's float copy for the backward);
"new": the mask converted once, shared by both modules (``attention.shared_mask``, as the training
recipe does). ``--checkpointing``: with gradient checkpointing (the layers' inputs kept). Each run is a fresh process
(one thread), interleaved old, new, new, old, ...; reports peak RSS, CPU seconds of the step, the
mask-sized tensors autograd kept, and whether the two forms' gradients are the same bits.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path


def worker(a) -> dict:
    import dataclasses

    import torch

    from showo2_cli.loading import build_network
    from showo2_cli.modeling import attention
    from showo2_cli.modeling.attention import omni_attention_mask
    from showo2_cli.sequences import SpecialTokens, generation_layout
    from showo2_cli.specs import get_spec

    torch.set_num_threads(1)
    torch.manual_seed(0)
    spec = dataclasses.replace(get_spec("tiny"), num_layers=a.layers, head_layers=a.head_layers,
                               position_embedding_rows=729, image_latent_grid=27,
                               max_position_embeddings=32768)
    net = build_network(spec, None, torch.float32)
    for p in net.parameters():  # small random values everywhere (zero-initialised heads give v = 0)
        torch.nn.init.normal_(p, std=0.02)
    if a.form == "old":  # the boolean mask to every layer, as before probe GE
        attention.sdpa_mask = lambda mask_bool, dtype: mask_bool
        attention.shared_mask = lambda mask_bool, attn, dtype: mask_bool
    if a.checkpointing:
        net.set_gradient_checkpointing(True)
        net.train()
    tokens = SpecialTokens(bos=1, eos=2, boi=3, eoi=4, img_pad=5, vid_pad=6, pad=0, img=7, bov=8, eov=9)
    positions = 1 + 729 * a.frames
    layout = generation_layout([[20 + i for i in range(12)]], positions, tokens, positions + 40, video=True)
    rows = 1  # one training row (the conditional one)
    ids, blocks = layout.input_ids[:rows], layout.blocks[:rows]
    length = ids.shape[1]
    x = torch.randn(rows, spec.latent_channels, a.frames, 54, 54)
    saved: dict[int, int] = {}

    def pack(t):
        if t.shape[-2:] == (length, length):
            saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    start = time.process_time()
    mask = attention.shared_mask(omni_attention_mask(blocks, length), net.attn, net.dtype)  # as the recipe does
    visual = net.visual_tokens(x)
    t = torch.full((rows,), 0.4)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        hidden, cond = net.hidden_states(ids, [[v] for v in visual], blocks, t, mask)
        out = net.flow_head(hidden, cond[:, None], blocks, mask)
    (out.float().square().mean() + hidden.float().mean()).backward()
    seconds = time.process_time() - start
    digest = hashlib.sha256()
    for _, p in sorted(net.named_parameters()):
        if p.grad is not None:
            digest.update(p.grad.numpy().tobytes())
    return {"form": a.form, "length": length, "step_cpu_s": round(seconds, 2),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "saved_masks": len(saved), "saved_mask_mb": round(sum(saved.values()) / 2**20, 1),
            "grads_sha256": digest.hexdigest()[:16]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=4)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--head-layers", type=int, default=4)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--checkpointing", action="store_true", help="gradient checkpointing on (LLM and flow head)")
    ap.add_argument("--form", choices=("old", "new"), help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    if a.form:
        print(json.dumps(worker(a)))
        return 0
    rows = []
    for rep in range(a.reps):
        for form in (("old", "new") if rep % 2 == 0 else ("new", "old")):
            cmd = [sys.executable, __file__, "--form", form, "--frames", str(a.frames), "--layers", str(a.layers),
                   "--head-layers", str(a.head_layers)] + (["--checkpointing"] if a.checkpointing else [])
            proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
            if proc.returncode:
                print(proc.stderr[-3000:], file=sys.stderr)
                return proc.returncode
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), file=sys.stderr)
    same = len({r["grads_sha256"] for r in rows}) == 1
    result = {"frames": a.frames, "layers": a.layers, "head_layers": a.head_layers,
              "checkpointing": a.checkpointing, "rows": rows,
              "gradients_same_bits": same}
    if a.out:
        a.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
