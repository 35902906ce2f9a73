"""Write a random Show-o2 checkpoint in the official format from a key -> shape listing.

The result looks like what the official ``Showo2Qwen2_5.save_pretrained`` writes: a diffusers-style
``config.json`` and one ``pytorch_model.bin`` (``torch.save`` of a flat state dict), with the tied
``showo.lm_head.weight`` being the very same tensor as ``showo.model.embed_tokens.weight`` (so it is
stored once). The values are random (``randn * 0.02``; norm weights one, norm biases zero): the
checkpoint is for load-time and memory benchmarks, not for generating anything.

    python benchmarks/make_official_checkpoint.py \
        --shapes ../shared/parity/reference/real_showo2_1.5B_state_dict_shapes.json \
        --out /tmp/showo2-bench/official-1.5B --dtype bf16 --seed 0

No tokenizer, LLM config or VAE is written; load such a folder with ``need=()``.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
EMBED, LM_HEAD = "showo.model.embed_tokens.weight", "showo.lm_head.weight"

# The 1.5B release's config.json (the field set of the official diffusers config, real values).
CONFIG_1_5B = {
    "_class_name": "Showo2Qwen2_5",
    "_diffusers_version": "0.31.0",
    "add_qk_norm": True,
    "add_time_embeds": True,
    "clip_latent_dim": 1152,
    "clip_pretrained_model_path": "google/siglip-so400m-patch14-384",
    "hidden_size": 1536,
    "image_latent_dim": 16,
    "image_latent_height": 27,
    "image_latent_width": 27,
    "llm_model_path": "Qwen/Qwen2.5-1.5B-Instruct",
    "llm_vocab_size": 151669,
    "load_from_showo": False,
    "num_diffusion_layers": 10,
    "patch_size": 2,
    "video_latent_height": 27,
    "video_latent_width": 27,
}


def _is_shape(value) -> bool:
    return isinstance(value, list) and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in value)


def _flatten(tree: dict, prefix: str = "") -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for key, value in tree.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if _is_shape(value):
            out[name] = value
        elif isinstance(value, dict):
            out.update(_flatten(value, name))
        else:
            raise SystemExit(f"error: '{name}' is neither a shape (list of ints) nor a nested object")
    return out


def read_shapes(path: Path) -> dict[str, list[int]]:
    """key -> shape from the listing: ``{"shapes": {...}}`` (with metadata beside it), a flat
    ``{key: shape}`` object, or nested objects whose leaves are shapes (joined with '.')."""
    data = json.loads(Path(path).read_text())
    if not isinstance(data, dict):
        raise SystemExit(f"error: '{path}' is not a JSON object")
    if isinstance(data.get("shapes"), dict):
        shapes = _flatten(data["shapes"])
        if "num_keys" in data and int(data["num_keys"]) != len(shapes):
            raise SystemExit(f"error: '{path}' says num_keys={data['num_keys']} but lists {len(shapes)} keys")
        if "num_params" in data:
            total = sum(math.prod(s) for s in shapes.values())
            if int(data["num_params"]) != total:
                raise SystemExit(f"error: '{path}' says num_params={data['num_params']} but the shapes add to {total}")
        return shapes
    return _flatten(data)


def _fill(key: str, shape: list[int], dtype: torch.dtype, gen: torch.Generator) -> torch.Tensor:
    module = key.rsplit(".", 1)[0].rsplit(".", 1)[-1]  # e.g. input_layernorm, q_norm, layer_norm1
    is_norm = "norm" in module.lower()
    if is_norm and key.endswith(".weight"):
        return torch.ones(shape, dtype=dtype)
    if is_norm and key.endswith(".bias"):
        return torch.zeros(shape, dtype=dtype)
    out = torch.empty(shape, dtype=dtype)
    flat = out.view(-1)
    step = 1 << 24  # 16M values (64 MB of float32) at a time keeps the temporaries small
    for start in range(0, flat.numel(), step):
        n = min(step, flat.numel() - start)
        flat[start:start + n] = torch.randn(n, generator=gen, dtype=torch.float32).mul_(0.02)
    return out


def make_state_dict(shapes: dict[str, list[int]], dtype: torch.dtype, seed: int, tie: bool = True,
                    log=None) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    tied = tie and EMBED in shapes and LM_HEAD in shapes and shapes[EMBED] == shapes[LM_HEAD]
    state: dict[str, torch.Tensor] = {}
    for i, (key, shape) in enumerate(shapes.items()):
        if tied and key == LM_HEAD and EMBED in state:
            state[key] = state[EMBED]  # the same tensor object, as in the official state dict
            continue
        state[key] = _fill(key, shape, dtype, gen)
        if tied and key == EMBED and LM_HEAD in state:
            state[LM_HEAD] = state[EMBED]
        if log and (i % 100 == 0 or i == len(shapes) - 1):
            log(f"  {i + 1}/{len(shapes)} tensors")
    return state


def _atomic_write(dst: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, dst)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def config_for(shapes: dict[str, list[int]]) -> dict:
    config = dict(CONFIG_1_5B)
    hidden = shapes.get(EMBED, [None, None])[1]
    if hidden != CONFIG_1_5B["hidden_size"]:
        print(f"warning: the shapes have hidden size {hidden}, not 1536; the config still says 1536",
              file=sys.stderr)
    return config


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shapes", type=Path, required=True, help="JSON listing key -> shape")
    ap.add_argument("--out", type=Path, required=True, help="folder to write (created if missing)")
    ap.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-tie", action="store_true", help="store lm_head as its own tensor")
    args = ap.parse_args(argv)

    start = time.perf_counter()
    shapes = read_shapes(args.shapes)
    dtype = DTYPES[args.dtype]
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"{len(shapes)} keys, {sum(math.prod(s) for s in shapes.values()) / 1e9:.3f} B values listed "
          f"(lm_head counted), dtype {args.dtype}, seed {args.seed}", flush=True)
    state = make_state_dict(shapes, dtype, args.seed, tie=not args.no_tie, log=lambda m: print(m, flush=True))
    made = time.perf_counter()
    unique = {t.untyped_storage().data_ptr(): t for t in state.values()}
    nbytes = sum(t.numel() * t.element_size() for t in unique.values())
    print(f"generated {len(state)} keys / {len(unique)} storages ({nbytes / 1e9:.2f} GB) in {made - start:.1f} s; "
          f"tied lm_head: {state.get(LM_HEAD) is state.get(EMBED) and LM_HEAD in state}", flush=True)
    _atomic_write(args.out / "pytorch_model.bin", functools.partial(torch.save, state))
    del state, unique
    saved = time.perf_counter()
    config = config_for(shapes)

    def write_config(p):
        Path(p).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")

    _atomic_write(args.out / "config.json", write_config)
    size = (args.out / "pytorch_model.bin").stat().st_size
    print(f"wrote {args.out / 'pytorch_model.bin'} ({size / 1e9:.2f} GB) in {saved - made:.1f} s and "
          f"{args.out / 'config.json'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
