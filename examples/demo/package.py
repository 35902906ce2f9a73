"""Copy a trained demo checkpoint into the package (src/showo2_cli/assets/demo), atomically.

    python examples/demo/package.py                        # the latest checkpoint of runs/demo
    python examples/demo/package.py runs/demo/checkpoint-003500
    python examples/demo/package.py runs/demo-noise --vae runs/demo-vae-dec   # another decoder

Only what inference needs is copied (config, weights, tokenizer, VAE); the optimizer state stays
behind. When the checkpoint holds EMA weights (``ema/``, from ``[ema]`` in the config) those are
the ones shipped. ``--vae`` ships another VAE (a folder, or a ``showo2 train`` VAE run) in place of
the checkpoint's own; its encoder and latent statistics must equal the checkpoint's, so the model
sees the latents it was trained on (a decoder-only fine-tune, ``examples/demo/vae_decoder.toml``).
Refuses a result over 30 MB.
"""

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import torch

from showo2_cli.loading import bundled_demo_path, load
from showo2_cli.modeling.vae_files import load_vae
from showo2_cli.training.checkpoint import resolve_run_path

repo = Path(__file__).resolve().parents[2]
ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("checkpoint", nargs="?", type=Path, default=repo / "runs" / "demo")
ap.add_argument("--vae", type=Path, help="ship this VAE (folder or VAE run) instead of the checkpoint's")
args = ap.parse_args()
checkpoint = resolve_run_path(args.checkpoint)
src = checkpoint / "ema" if (checkpoint / "ema" / "config.json").exists() else checkpoint
vae_src = src / "vae"
if args.vae is not None:
    vae_src = resolve_run_path(args.vae)
    vae_src = vae_src / "vae" if (vae_src / "vae").is_dir() else vae_src
    old, new = load_vae(src / "vae").state_dict(), load_vae(vae_src).state_dict()
    kept = [k for k in old if not k.startswith(("model.decoder.", "model.post_quant_conv."))]
    if old.keys() != new.keys() or not all(old[k].shape == new[k].shape and torch.equal(old[k], new[k]) for k in kept):
        raise SystemExit(f"{vae_src}: its encoder or latent statistics differ from {src / 'vae'}'s; the model "
                         "was trained on that VAE's latents")
dst = bundled_demo_path()
files = ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]
dst.parent.mkdir(parents=True, exist_ok=True)
tmp = Path(tempfile.mkdtemp(prefix=".demo.", dir=dst.parent))
try:
    for name in files:
        if (src / name).exists():
            shutil.copy2(src / name, tmp / name)
    shutil.copytree(vae_src, tmp / "vae")
    config = json.loads((tmp / "config.json").read_text())
    config["showo2"].setdefault("training", {})["checkpoint"] = checkpoint.name + ("/ema" if src != checkpoint else "")
    if args.vae is not None:
        config["showo2"]["training"]["vae"] = vae_src.parent.name + "/" + vae_src.name
    (tmp / "config.json").write_text(json.dumps(config, indent=1) + "\n")
    size = sum(f.stat().st_size for f in tmp.rglob("*") if f.is_file())
    if size > 30 * 2**20:
        raise SystemExit(f"{size / 2**20:.1f} MB is over the 30 MB budget")
    load(tmp)  # it must load before it replaces anything
    if dst.exists():
        shutil.rmtree(dst)
    tmp.rename(dst)
finally:
    shutil.rmtree(tmp, ignore_errors=True)
print(f"{dst}: {size / 2**20:.1f} MB from {src}")
