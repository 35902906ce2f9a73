"""Copy a trained demo checkpoint into the package (src/showo2_cli/assets/demo), atomically.

    python examples/demo/package.py                        # the latest checkpoint of runs/demo
    python examples/demo/package.py runs/demo/checkpoint-003500

Only what inference needs is copied (config, weights, tokenizer, VAE); the optimizer state stays
behind. When the checkpoint holds EMA weights (``ema/``, from ``[ema]`` in the config) those are
the ones shipped. Refuses a result over 30 MB.
"""

import json
import shutil
import sys
import tempfile
from pathlib import Path

from showo2_cli.loading import bundled_demo_path, load
from showo2_cli.training.checkpoint import resolve_run_path

repo = Path(__file__).resolve().parents[2]
checkpoint = resolve_run_path(Path(sys.argv[1]) if len(sys.argv) > 1 else repo / "runs" / "demo")
src = checkpoint / "ema" if (checkpoint / "ema" / "config.json").exists() else checkpoint
dst = bundled_demo_path()
files = ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]
dst.parent.mkdir(parents=True, exist_ok=True)
tmp = Path(tempfile.mkdtemp(prefix=".demo.", dir=dst.parent))
try:
    for name in files:
        if (src / name).exists():
            shutil.copy2(src / name, tmp / name)
    shutil.copytree(src / "vae", tmp / "vae")
    config = json.loads((tmp / "config.json").read_text())
    config["showo2"].setdefault("training", {})["checkpoint"] = checkpoint.name + ("/ema" if src != checkpoint else "")
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
