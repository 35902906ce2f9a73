"""Pairwise matrix of the model commands' options (probe AP).

Every pair of option values (``--dtype``, ``--offload``, ``--attn``, ``--compile``, ``--quantize``,
``--vae-tiling``, ``--lora``, ``--sampler``, ``--guidance``, ``--batch-size``, ``-n``,
``--negative-prompt``, ``--save-latents``, ``--noise``, ``--json``, ...) appears in at least one run
of each command where both apply (a greedy pairwise covering, seeded, so the list repeats). Each
run is the CLI's ``main()`` in this process and is checked: exit code 0 (or the documented refusal),
no traceback, the outputs exist and open, ``--json`` is one object, and the output equals the plain
run (same output-changing options; no offload, sdpa, no compile, no tiling, one batch) within the
tolerance README documents: latents within 1e-4 and pixels within 2/255 in fp32 (attention backend,
compile, offload and batch size round differently; an MP4 within 24/255, H.264 being lossy; bf16
runs of another attention backend are not compared: they round apart as bf16 does from fp32), a
saved latents file decoded by ``decode`` (default options) equal to the direct output, and a
caption's answers equal token for token. ``--quantize nf4`` with ``--offload sequential`` must be
refused.

    OMP_NUM_THREADS=1 python benchmarks/option_matrix.py --out /tmp/matrix [--model demo|parity]
        [--commands t2i,caption,t2v,i2v] [--slow]   # --slow adds flex attention and --compile

A summary (runs, held, failures with their command lines) is printed and written as
``summary.json`` in ``--out``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import json
import random
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
MODELS = {
    "demo": [],
    "parity": ["--model", str(SHARED / "parity" / "model"), "--vae", str(SHARED / "parity" / "vae" / "wan21_vae.safetensors")],
}


def pairwise(factors: dict[str, list], seed: int = 0, allowed=lambda row: True) -> list[dict]:
    """A greedy covering of every pair of values of two factors (rows that ``allowed`` refuses are
    never chosen; their pairs are then left out)."""
    names = list(factors)
    rng = random.Random(seed)
    todo = {((a, va), (b, vb)) for a, b in itertools.combinations(names, 2)
            for va in range(len(factors[a])) for vb in range(len(factors[b]))}
    rows = []
    stale = 0
    while todo and stale < 50:
        best, gain = None, 0
        for _ in range(300):
            (a, va), (b, vb) = rng.choice(sorted(todo))
            row = {n: rng.randrange(len(factors[n])) for n in names}
            row[a], row[b] = va, vb
            if not allowed({n: factors[n][i] for n, i in row.items()}):
                continue
            g = sum(((x, row[x]), (y, row[y])) in todo for x, y in itertools.combinations(names, 2))
            if g > gain:
                best, gain = row, g
        if best is None:
            stale += 1
            continue
        todo -= {((x, best[x]), (y, best[y])) for x, y in itertools.combinations(names, 2)}
        rows.append({n: factors[n][i] for n, i in best.items()})
    return rows


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    from showo2_cli.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(argv)
        except SystemExit as e:
            rc = e.code if isinstance(e.code, int) else 1
        except BaseException:  # noqa: BLE001 - the matrix records it
            err.write(traceback.format_exc())
            rc = -1
    return rc, out.getvalue(), err.getvalue()


def pixels(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.int16)


def video_pixels(path: Path) -> np.ndarray:
    import av

    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)]).astype(np.int16)


def latents(path: Path) -> torch.Tensor | None:
    from safetensors.torch import load_file

    return load_file(str(path))["latents"] if path.exists() else None


def lat_path(out: Path) -> Path:
    return out.with_name(out.stem + ".latents.safetensors")


GEN_FACTORS = {
    "dtype": ["fp32", "bf16"],
    "offload": ["none", "model", "sequential"],
    "quantize": ["none", "int8wo", "nf4"],
    "tiling": ["auto", "on", "off"],
    "size": ["default", "big"],
    "lora": [0, 1, 2],
    "sampler": ["euler", "heun", "flow-euler", "unipc", "dpm++"],
    "guidance": [None, 0.0, 1.0],
    "batch": [1, 4],
    "n": [1, 3],
    "negative": [False, True],
    "save_latents": [False, True],
    "noise": [False, True],
    "json": [False, True],
    "attn": ["sdpa", "eager"],
}
SLOW = {"attn": ["sdpa", "eager", "flex"], "compile": [False, True]}
#: options that claim the plain run's numbers (to float rounding)
SAME = ("offload", "attn", "compile", "batch", "save_latents", "json")


class Matrix:
    def __init__(self, out: Path, model: str, slow: bool):
        self.out, self.model, self.slow = out, model, slow
        self.model_args = MODELS[model]
        self.refs: dict = {}
        self.records: list[dict] = []
        self.count = 0
        self.adapters = self._adapters()

    def _adapters(self) -> list[Path]:
        from showo2_cli.loading import load
        from showo2_cli.lora import add_lora, save_adapter

        name = self.model_args[1] if self.model_args else "demo"
        found = []
        for i, within in enumerate((("showo.model.layers",), ("diffusion_head_a", "showo.model.layers"))):
            folder = self.out / f"adapter{i}"
            if not (folder / "adapter_config.json").exists():
                network = load(name, need=()).network
                cfg = add_lora(network, 2, 4.0, 0.0, ("q_proj", "v_proj", "linear", "fc1"), within)
                torch.manual_seed(i)
                with torch.no_grad():
                    for n, p in network.named_parameters():
                        if "lora_B" in n:
                            p.copy_(torch.randn_like(p) * 0.05)
                save_adapter(folder, network, cfg)
            found.append(folder)
        return found

    # ---- generation --------------------------------------------------------------------------
    def gen_args(self, cmd: str, row: dict, folder: Path) -> list[str]:
        video = cmd in ("t2v", "i2v")
        ext = ".mp4" if video else ".png"
        a = [cmd]
        if cmd == "i2v":
            a.append(str(self.out / "start.png"))
        a += ["a red circle on a white background", "-o", str(folder / f"out{ext}"), "--seed", "5",
              "--steps", "4", "--quiet", *self.model_args]
        if video:
            a += ["--frames", "5"]
        a += ["--dtype", row["dtype"], "--offload", row["offload"], "--quantize", row["quantize"],
              "--vae-tiling", row["tiling"], "--sampler", row["sampler"], "--batch-size", str(row["batch"]),
              "-n", str(row["n"]), "--attn", row.get("attn", "sdpa")]
        if row["size"] == "big":
            a += ["--size", "288x272"]
        for i in range(row["lora"]):
            a += ["--lora", str(self.adapters[i])]
        if row["guidance"] is not None:
            a += ["--guidance", str(row["guidance"])]
        if row["negative"]:
            a += ["--negative-prompt", "blurry"]
        if row["save_latents"]:
            a.append("--save-latents")
        if row["noise"]:
            a += ["--noise", str(self.noise_file(cmd, row))]
        if row["json"]:
            a.append("--json")
        if row.get("compile"):
            a.append("--compile")
        return a

    def noise_file(self, cmd: str, row: dict) -> Path:
        path = self.out / f"noise-{cmd}-{row['size']}.safetensors"
        if not path.exists():
            plain = {k: v[0] for k, v in GEN_FACTORS.items()} | {"size": row["size"], "save_latents": True}
            folder = self.out / f"noiseref-{cmd}-{row['size']}"
            folder.mkdir(parents=True, exist_ok=True)
            rc, _, err = run_cli(self.gen_args(cmd, plain, folder) + ["--overwrite"])
            assert rc == 0, err
            shape = latents(next(folder.glob("*.latents.safetensors"))).shape
            from safetensors.torch import save_file

            save_file({"noise": torch.randn(shape, generator=torch.Generator().manual_seed(3))}, str(path))
        return path

    def reference(self, cmd: str, row: dict) -> Path:
        eff_tiling = row["tiling"] == "on" and row["size"] == "big"
        key = (cmd, row["dtype"], row["quantize"], row["lora"], row["sampler"], row["guidance"],
               row["negative"], row["noise"], row["size"], row["n"], eff_tiling)
        if key not in self.refs:
            plain = dict(row, offload="none", attn="sdpa", compile=False, batch=4, save_latents=True, json=False,
                         tiling="on" if eff_tiling else "off")
            folder = self.out / f"ref{len(self.refs)}-{cmd}"
            folder.mkdir(parents=True, exist_ok=True)
            argv = self.gen_args(cmd, plain, folder) + ["--overwrite"]
            rc, _, err = run_cli(argv)
            self.refs[key] = (folder, rc, err.strip().splitlines()[-1:] if rc else None)
        return self.refs[key]

    def check_gen(self, cmd: str, row: dict) -> None:
        self.count += 1
        folder = self.out / f"run{self.count:03d}-{cmd}"
        folder.mkdir(parents=True, exist_ok=True)
        argv = self.gen_args(cmd, row, folder) + ["--overwrite"]
        start = time.perf_counter()
        rc, out, err = run_cli(argv)
        rec = {"cmd": cmd, "row": row, "argv": " ".join(argv), "rc": rc, "s": round(time.perf_counter() - start, 1),
               "problems": []}
        video = cmd in ("t2v", "i2v")
        expected_refusal = row["quantize"] == "nf4" and row["offload"] == "sequential"
        if "Traceback" in err or rc == -1:
            rec["problems"].append("traceback: " + err.strip().splitlines()[-1][:300])
        if expected_refusal:
            if rc == 0:
                rec["problems"].append("nf4 + sequential offload was not refused")
            rec["refused"] = err.strip().splitlines()[-1:] if err.strip() else None
            self.records.append(rec)
            return
        if rc != 0:
            rec["problems"].append(f"exit {rc}: {err.strip().splitlines()[-1:] if err.strip() else ''}")
            self.records.append(rec)
            return
        if row["json"]:
            try:
                json.loads(out)
            except ValueError:
                rec["problems"].append(f"--json stdout is not one object: {out[:200]!r}")
        outs = sorted(p for p in folder.iterdir() if p.suffix in (".png", ".mp4"))
        if len(outs) != row["n"]:
            rec["problems"].append(f"{len(outs)} outputs for -n {row['n']}")
        ref, ref_rc, ref_err = self.reference(cmd, row)
        if ref_rc:
            rec["problems"].append(f"plain run failed: {ref_err}")
            self.records.append(rec)
            return
        refs = sorted(p for p in ref.iterdir() if p.suffix in (".png", ".mp4"))
        read = video_pixels if video else pixels
        worst_px, worst_lat = 0, 0.0
        for o, r in zip(outs, refs, strict=False):
            a, b = read(o), read(r)
            if a.shape != b.shape:
                rec["problems"].append(f"{o.name}: shape {a.shape} vs plain {b.shape}")
                continue
            worst_px = max(worst_px, int(np.abs(a - b).max()))
            la, lb = latents(lat_path(o)), latents(lat_path(r))
            if row["save_latents"] and la is None:
                rec["problems"].append(f"{o.name}: no latents file")
            if la is not None and lb is not None:
                worst_lat = max(worst_lat, float((la.float() - lb.float()).abs().max()))
            if la is not None:
                self.check_decode(o, rec, video, row)
        rec["max_px"], rec["max_lat"] = worst_px, worst_lat
        tol_lat, tol_px = (1e-4, 2) if row["dtype"] == "fp32" else (0.05, 8)
        if video:  # H.264 is lossy: latents 2e-5 apart encode to frames up to ~16/255 apart
            tol_px = 24
        if row["quantize"] != "none" and (row["offload"] != "none" or row["batch"] != 4):
            tol_lat, tol_px = tol_lat * 10, tol_px * 2
        if row["dtype"] != "fp32" and row.get("attn", "sdpa") != "sdpa":
            rec["note"] = "bf16 attention backends round apart as bf16 does from fp32: not compared"
        elif worst_lat > tol_lat or worst_px > tol_px:
            rec["problems"].append(f"differs from the plain run: latents {worst_lat:.3g}, pixels {worst_px}/255")
        self.records.append(rec)

    def check_decode(self, out: Path, rec: dict, video: bool, row: dict) -> None:
        dec = out.with_name("decoded" + out.stem + out.suffix)
        # default options: decode follows the dtype and VAE tiles the latents file records
        argv = ["decode", str(lat_path(out)), "-o", str(dec), "--quiet", "--overwrite"]
        if self.model_args:
            argv += ["--vae", self.model_args[3]]
        rc, _, err = run_cli(argv)
        if rc != 0:
            rec["problems"].append(f"decode exit {rc}: {err.strip().splitlines()[-1:]}")
            return
        read = video_pixels if video else pixels
        d = int(np.abs(read(dec) - read(out)).max())
        rec.setdefault("decode_px", []).append(d)
        if d:
            rec["problems"].append(f"decode of --save-latents differs from the output by {d}/255")

    # ---- caption -----------------------------------------------------------------------------
    def check_caption(self, row: dict) -> None:
        self.count += 1
        media = {"image": str(SHARED / "media" / self.photo), "video": str(self.clip)}[row["media"]]
        def argv_of(r):
            a = ["caption", media, "-q", "What is this?", "--max-new-tokens", "12", "--json", "--quiet",
                 *self.model_args, "--dtype", r["dtype"], "--offload", r["offload"], "--quantize", r["quantize"],
                 "--attn", r.get("attn", "sdpa"), "--frames", "5"]
            for i in range(r["lora"]):
                a += ["--lora", str(self.adapters[i])]
            if r["temperature"]:
                a += ["--temperature", "0.8", "--seed", "3"]
            if r.get("compile"):
                a.append("--compile")
            if r["stream"] is False:
                a.append("--no-stream")
            return a
        argv = argv_of(row)
        start = time.perf_counter()
        rc, out, err = run_cli(argv)
        rec = {"cmd": "caption", "row": row, "argv": " ".join(argv), "rc": rc,
               "s": round(time.perf_counter() - start, 1), "problems": []}
        if "Traceback" in err or rc == -1:
            rec["problems"].append("traceback: " + err.strip().splitlines()[-1][:300])
        if rc != 0:
            rec["problems"].append(f"exit {rc}: {err.strip().splitlines()[-1:] if err.strip() else ''}")
            self.records.append(rec)
            return
        key = ("caption", row["dtype"], row["quantize"], row["lora"], row["temperature"], row["media"])
        if key not in self.refs:
            plain = dict(row, offload="none", attn="sdpa", compile=False, stream=True)
            self.refs[key] = run_cli(argv_of(plain))
        ref = self.refs[key]
        try:
            got = [a["answer"] for a in json.loads(out)["answers"]]
            want = [a["answer"] for a in json.loads(ref[1])["answers"]]
            rec["answer"] = got
            if got != want and row["dtype"] == "fp32":
                rec["problems"].append(f"answer {got} vs plain {want}")
            elif got != want:
                rec["note"] = f"bf16 answer {got} vs plain {want}"
        except (ValueError, KeyError) as e:
            rec["problems"].append(f"bad --json: {e}: {out[:200]!r} / plain rc {ref[0]} {ref[2][-300:]}")
        self.records.append(rec)

    photo = None
    clip = None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--model", choices=tuple(MODELS), default="demo")
    p.add_argument("--commands", default="t2i,caption,t2v,i2v")
    p.add_argument("--slow", action="store_true", help="also flex attention and --compile (minutes each on a CPU)")
    p.add_argument("--limit", type=int, default=0, help="at most this many runs a command (0: all)")
    args = p.parse_args()
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    m = Matrix(args.out, args.model, args.slow)
    media = sorted((SHARED / "media").iterdir())
    m.photo = next(x.name for x in media if x.suffix.lower() in (".jpg", ".jpeg", ".png"))
    m.clip = next(x for x in media if x.suffix == ".mp4")
    rc, _, err = run_cli(["t2i", "start", "-o", str(args.out / "start.png"), "--seed", "1", "--steps", "3", "--quiet",
                          "--overwrite", *m.model_args])
    assert rc == 0, err
    extra = SLOW if args.slow else {}
    for cmd in args.commands.split(","):
        if cmd == "caption":
            factors = {"dtype": ["fp32", "bf16"], "offload": ["none", "model", "sequential"],
                       "quantize": ["none", "int8wo", "nf4"], "attn": ["sdpa", "eager"], "lora": [0, 1, 2],
                       "temperature": [False, True], "media": ["image", "video"], "stream": [True, False]} | extra
            rows = pairwise(factors, seed=1, allowed=lambda r: not (r["quantize"] == "nf4" and r["offload"] == "sequential"))
            check = m.check_caption
        else:
            factors = dict(GEN_FACTORS) | extra
            if cmd != "t2i":
                factors["n"], factors["size"] = [1, 2], ["default"]
            rows = pairwise(factors, seed=2)
            check = lambda r, c=cmd: m.check_gen(c, r)  # noqa: E731
        if args.limit:
            rows = rows[: args.limit]
        print(f"{cmd}: {len(rows)} runs", flush=True)
        for row in rows:
            check(row)
            rec = m.records[-1]
            print(("FAIL " if rec["problems"] else "ok   ") + f"{rec['s']:6.1f}s {cmd} {row} "
                  + ("; ".join(rec["problems"]) if rec["problems"] else
                     f"px {rec.get('max_px')} lat {rec.get('max_lat')}"), flush=True)
    bad = [r for r in m.records if r["problems"]]
    summary = {"model": args.model, "runs": len(m.records), "held": len(m.records) - len(bad), "failures": bad,
               "records": m.records}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    print(f"{len(m.records)} runs, {len(m.records) - len(bad)} held", flush=True)
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
