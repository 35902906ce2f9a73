"""Wheels for the lent GPU machine: the packages `benchmarks/gpu.sh` needs that its image lacks.

The device image (the tool library's device/KINDS.md) has PyTorch, transformers, accelerate,
peft, safetensors and huggingface_hub, but not diffusers (imported by the network module for the
Wan VAE) nor bitsandbytes (the 7b-nf4 section), and nothing can be installed there from a
registry. This downloads the versions installed here (the tested ones) for the device's Python
into `.whl/` (ignored by git), dropping from bitsandbytes the native libraries of CUDA and ROCm
versions other than the ones kept (its wheel is 43 MB; the working tree that travels is limited
to 64 MiB). `gpu.sh` unpacks whatever it finds in `.whl/` into a temporary folder on its path.

    python benchmarks/gpu_wheels.py                 # then, on the device:
    run(command="bash benchmarks/gpu.sh", carry=[".whl"], timeout_s=560)
"""

from __future__ import annotations

import argparse
import importlib.metadata
import re
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("diffusers", "bitsandbytes")
PLATFORMS = [f"manylinux_2_{n}_x86_64" for n in (17, 24, 27, 28, 31, 34, 35)] + ["manylinux2014_x86_64"]


def download(name: str, version: str, python: str, dest: Path) -> Path:
    args = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--implementation",
            "cp", "--python-version", python, "-d", str(dest), f"{name}=={version}"]
    for p in PLATFORMS:
        args += ["--platform", p]
    subprocess.run(args, check=True)
    found = sorted(dest.glob(f"{name.replace('-', '_')}-{version}-*.whl"))
    if not found:
        raise SystemExit(f"no wheel of {name} {version} in {dest}")
    return found[-1]


def trim(wheel: Path, keep: re.Pattern) -> tuple[int, int]:
    """Rewrite ``wheel`` without the native libraries whose names ``keep`` does not match."""
    before = wheel.stat().st_size
    tmp = wheel.with_suffix(".tmp")
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as dst:
        for item in src.infolist():
            name = item.filename.rsplit("/", 1)[-1]
            if name.startswith("libbitsandbytes_") and not keep.search(name):
                continue
            dst.writestr(item, src.read(item))
    tmp.replace(wheel)
    return before, wheel.stat().st_size


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / ".whl")
    ap.add_argument("--python-version", default="3.12", help="the device image's Python (KINDS.md: 3.12)")
    ap.add_argument("--keep", default=r"_(cuda13\d|cpu)\.so$",
                    help="native bitsandbytes libraries to keep (the image's torch is built for CUDA 13.0)")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for old in args.out.glob("*.whl"):
        old.unlink()
    for name in PACKAGES:
        version = importlib.metadata.version(name)
        wheel = download(name, version, args.python_version, args.out)
        if name == "bitsandbytes":
            before, after = trim(wheel, re.compile(args.keep))
            print(f"{wheel.name}: {before / 2**20:.1f} MiB -> {after / 2**20:.1f} MiB (kept {args.keep})")
        else:
            print(f"{wheel.name}: {wheel.stat().st_size / 2**20:.1f} MiB")
    total = sum(w.stat().st_size for w in args.out.glob("*.whl"))
    print(f"{args.out}: {total / 2**20:.1f} MiB in all")
    tree = travelling_bytes(ROOT)
    if tree is not None:
        whole = tree + (total if args.out.resolve() == (ROOT / ".whl").resolve() else 0)
        print(f"the device call sends about {whole / 2**20:.1f} MiB (the tree git sees and .whl/; the limit is "
              f"{TRAVEL_LIMIT // 2**20} MiB)")
        if whole > TRAVEL_LIMIT:
            print("error: over the device call's limit: the call would be refused", file=sys.stderr)
            return 1
    return 0


#: what one device call may send: the working tree (tracked and untracked-not-ignored files) and
#: the carried paths (the tool library's device/README.md, "Limits")
TRAVEL_LIMIT = 64 * 2**20


def travelling_bytes(root: Path) -> int | None:
    """Bytes of the files git tracks or sees untracked (not ignored) under ``root``; None outside git."""
    try:
        listed = subprocess.run(["git", "-C", str(root), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                                capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    total = 0
    for name in {n for n in listed.decode(errors="surrogateescape").split("\0") if n}:
        path = root / name
        if path.is_file() and not path.is_symlink():
            total += path.stat().st_size
    return total


if __name__ == "__main__":
    sys.exit(main())
