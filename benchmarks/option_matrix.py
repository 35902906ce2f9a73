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

Probe EG added the options since: ``--lora-weight``, a ``.jsonl`` ``--prompts-file``, ``--scheduler``
(``--sampler``'s other name), and checks that each output's metadata (the file's and the sidecar's)
records the sampler, ``--quantize``, ``--dtype``, the adapters with their weights, the noise row in
place of a seed and a negative prompt where guidance used it; ``latents``: ``encode`` then
``decode`` over ``--dtype`` x ``--vae-tiling`` x ``--size`` x ``--sample`` x image/video, each
recording the dtype and tiles that made it; ``pipeline``: ``Showo2Pipeline`` with quantization,
offload, VAE tiling, a diffusers scheduler assigned (UniPC, DPM-Solver++), a list of generators or
a seed and ``batch_size``, against the CLI's plain run (pixels and records).

    OMP_NUM_THREADS=1 python benchmarks/option_matrix.py --out /tmp/matrix [--model demo|parity]
        [--commands t2i,caption,t2v,i2v,latents,pipeline] [--slow]   # --slow adds flex attention and --compile

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
    # probe EG: the options added since probe AP
    "lora_weight": [None, 0.5, -1.0],  # --lora-weight for each --lora (None: as trained)
    "prompts": ["arg", "jsonl"],  # the prompt as an argument, or two records of a .jsonl --prompts-file
    "scheduler_flag": [False, True],  # --scheduler, --sampler's other name
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
        if row.get("prompts", "arg") == "jsonl":
            a += ["--prompts-file", str(self.prompts_file())]
        else:
            a.append("a red circle on a white background")
        a += ["-o", str(folder / f"out{ext}"), "--seed", "5", "--steps", "4", "--quiet", *self.model_args]
        if video:
            a += ["--frames", "5"]
        a += ["--dtype", row["dtype"], "--offload", row["offload"], "--quantize", row["quantize"],
              "--vae-tiling", row["tiling"], "--scheduler" if row.get("scheduler_flag") else "--sampler",
              row["sampler"], "--batch-size", str(row["batch"]),
              "-n", str(row["n"]), "--attn", row.get("attn", "sdpa")]
        if row["size"] == "big":
            a += ["--size", "288x272"]
        for i in range(row["lora"]):
            a += ["--lora", str(self.adapters[i])]
            if row.get("lora_weight") is not None:
                a += ["--lora-weight", str(row["lora_weight"])]
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

    def prompts_file(self) -> Path:
        path = self.out / "prompts.jsonl"
        if not path.exists():
            path.write_text(json.dumps({"prompt": "a red circle on a white background"}) + "\n"
                            + json.dumps({"caption": "a blue square"}) + "\n")
        return path

    def noise_file(self, cmd: str, row: dict) -> Path:
        path = self.out / f"noise-{cmd}-{row['size']}.safetensors"  # one row: every output starts from it
        if not path.exists():
            plain = {k: v[0] for k, v in GEN_FACTORS.items()} | {"size": row["size"], "save_latents": True, "n": 1}
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
               row["negative"], row["noise"], row["size"], row["n"], eff_tiling, row.get("lora_weight"),
               row.get("prompts", "arg"))
        if key not in self.refs:
            plain = dict(row, offload="none", attn="sdpa", compile=False, batch=4, save_latents=True, json=False,
                         tiling="on" if eff_tiling else "off", scheduler_flag=False)
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
        prompts = 2 if row.get("prompts") == "jsonl" else 1
        if len(outs) != row["n"] * prompts:
            rec["problems"].append(f"{len(outs)} outputs for -n {row['n']} x {prompts} prompt(s)")
        for o in outs:
            self.check_record(o, row, rec)
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
        elif row["dtype"] != "fp32" and row["batch"] != 4 and (worst_lat > tol_lat or worst_px > tol_px):
            # (probe EG: another batch size in bf16 with a multistep solver or a LoRA subtracted gave
            # latents 0.26 / 46/255 apart on the demo, as far as bf16 is from fp32: rounding)
            rec["note"] = f"bf16 batch {row['batch']} vs 4: latents {worst_lat:.3g}, pixels {worst_px}/255 (rounding)"
        elif worst_lat > tol_lat or worst_px > tol_px:
            rec["problems"].append(f"differs from the plain run: latents {worst_lat:.3g}, pixels {worst_px}/255")
        self.records.append(rec)

    def check_record(self, out: Path, row: dict, rec: dict) -> None:
        """The output's metadata (in the file and its sidecar JSON) records every option that changed it."""
        from showo2_cli.media import read_metadata
        from showo2_cli.sampling import uses_uncond

        inside = read_metadata(out) or {}
        side = json.loads(out.with_suffix(".json").read_text()) if out.with_suffix(".json").exists() else {}
        for where, meta in (("file", inside), ("sidecar", side)):
            wrong = []
            if meta.get("sampler") != row["sampler"]:
                wrong.append(f"sampler {meta.get('sampler')!r}")
            if meta.get("quantize", "none") != row["quantize"]:
                wrong.append(f"quantize {meta.get('quantize')!r}")
            if meta.get("dtype", "fp32") != row["dtype"]:
                wrong.append(f"dtype {meta.get('dtype')!r}")
            weight = 1.0 if row.get("lora_weight") is None else row["lora_weight"]
            lora = [a if isinstance(a, dict) else {"path": a, "weight": 1.0} for a in meta.get("lora", [])]
            if [(Path(a["path"]).name, a["weight"]) for a in lora] != \
                    [(self.adapters[i].name, weight) for i in range(row["lora"])]:
                wrong.append(f"lora {meta.get('lora')!r}")
            if ("noise_row" in meta) != row["noise"] or (meta.get("seed") is None) != row["noise"]:
                wrong.append(f"seed {meta.get('seed')!r} / noise_row {meta.get('noise_row')!r}")
            guidance = 4.0 if row["guidance"] is None else row["guidance"]
            if ("negative_prompt" in meta) != (row["negative"] and uses_uncond(guidance)):
                wrong.append(f"negative_prompt {meta.get('negative_prompt')!r}")
            if wrong:
                rec["problems"].append(f"{out.name}: the {where} metadata says " + ", ".join(wrong))

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

    # ---- encode and decode (probe EG) ---------------------------------------------------------
    def check_latents(self, row: dict) -> None:
        """``encode`` then ``decode`` with the row's options: each exits 0, records the dtype and tiles
        that made it, and ``decode`` with the same options twice gives the same pixels."""
        self.count += 1
        folder = self.out / f"run{self.count:03d}-latents"
        folder.mkdir(parents=True, exist_ok=True)
        media = str(SHARED / "media" / self.photo) if row["media"] == "image" else str(self.clip)
        lat = folder / "in.latents.safetensors"
        argv = ["encode", media, "-o", str(lat), "--dtype", row["dtype"], "--vae-tiling", row["tiling"], "--size",
                row["size"], "--json", "--quiet", "--overwrite", "--frames", "5"]
        if row["sample"]:
            argv += ["--sample", "--seed", "4"]
        if self.model_args:
            argv += ["--vae", self.model_args[3]]
        start = time.perf_counter()
        rc, out, err = run_cli(argv)
        rec = {"cmd": "encode", "row": row, "argv": " ".join(argv), "rc": rc, "problems": []}
        if rc != 0:
            rec["problems"].append(f"encode exit {rc}: {err.strip().splitlines()[-1:]}")
            rec["s"] = round(time.perf_counter() - start, 1)
            self.records.append(rec)
            return
        from showo2_cli.media import read_metadata
        from showo2_cli.pipelines.latents import load_latents

        tiled = row["tiling"] == "on" and int(row["size"]) > 256
        meta = load_latents(lat)[1]
        self._recorded(rec, "encode's latents file", meta, row, tiled)
        ext = ".png" if row["media"] == "image" else ".mp4"
        dec = [folder / f"dec{i}{ext}" for i in range(2)]
        for d in dec:
            dargv = ["decode", str(lat), "-o", str(d), "--dtype", row["dtype"], "--vae-tiling", row["tiling"],
                     "--json", "--quiet", "--overwrite"]
            if self.model_args:
                dargv += ["--vae", self.model_args[3]]
            rc, out, err = run_cli(dargv)
            if rc != 0:
                rec["problems"].append(f"decode exit {rc}: {err.strip().splitlines()[-1:]}")
                break
        else:
            self._recorded(rec, "decode's output", read_metadata(dec[0]) or {}, row, tiled)
            read = pixels if ext == ".png" else video_pixels
            if int(np.abs(read(dec[0]) - read(dec[1])).max()):
                rec["problems"].append("decode twice gave different pixels")
        rec["s"] = round(time.perf_counter() - start, 1)
        self.records.append(rec)

    @staticmethod
    def _recorded(rec: dict, what: str, meta: dict, row: dict, tiled: bool) -> None:
        if meta.get("dtype", "fp32") != row["dtype"]:
            rec["problems"].append(f"{what} records dtype {meta.get('dtype')!r} for --dtype {row['dtype']}")
        if ("vae_tiles" in meta) != tiled:
            rec["problems"].append(f"{what} records vae_tiles {meta.get('vae_tiles')!r} for --vae-tiling {row['tiling']}")

    # ---- the Python pipeline (probe EG) ------------------------------------------------------
    def check_pipeline(self, row: dict) -> None:
        """``Showo2Pipeline`` with the row's runtime options, scheduler and seeds (a list of
        generators or one seed) gives the CLI's plain run's images and records."""
        from diffusers import DPMSolverMultistepScheduler, UniPCMultistepScheduler

        from showo2_cli.options import RuntimeOptions
        from showo2_cli.pipeline import Showo2Pipeline

        self.count += 1
        rec = {"cmd": "pipeline", "row": row, "argv": repr(row), "rc": 0, "problems": []}
        start = time.perf_counter()
        try:
            pipe = Showo2Pipeline.from_pretrained(
                self.model_args[1] if self.model_args else "demo", torch_dtype=row["dtype"],
                vae=self.model_args[3] if self.model_args else None,
                runtime=RuntimeOptions(quantize=row["quantize"], offload=row["offload"], vae_tiling=row["tiling"]))
            pipe.set_progress_bar_config(disable=True)
            if row["scheduler"] == "unipc":
                pipe.scheduler = UniPCMultistepScheduler.from_config(
                    pipe.scheduler.config, prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)
            elif row["scheduler"] == "dpm++":
                pipe.scheduler = DPMSolverMultistepScheduler.from_config(
                    pipe.scheduler.config, prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0,
                    algorithm_type="dpmsolver++", solver_order=2, final_sigmas_type="zero")
            seeds = [5, 6]
            gen = [torch.Generator().manual_seed(s) for s in seeds] if row["generators"] else None
            size = {"height": 272, "width": 288} if row["size"] == "big" else {}  # --size 288x272
            got = pipe("a red circle on a white background", num_inference_steps=4, num_images_per_prompt=2,
                       batch_size=row["batch"], generator=gen, seed=None if gen else 5, **size)
        except Exception as e:  # noqa: BLE001 - the matrix records it
            rec["problems"].append(f"{type(e).__name__}: {str(e)[:300]}")
            rec["s"] = round(time.perf_counter() - start, 1)
            self.records.append(rec)
            return
        ref = dict({k: v[0] for k, v in GEN_FACTORS.items()}, dtype=row["dtype"], quantize=row["quantize"],
                   sampler=row["scheduler"], n=2, size=row["size"], tiling=row["tiling"])
        folder, ref_rc, ref_err = self.reference("t2i", ref)
        if ref_rc:
            rec["problems"].append(f"plain run failed: {ref_err}")
        else:
            refs = sorted(p for p in folder.iterdir() if p.suffix == ".png")
            worst = max(int(np.abs(np.asarray(im.convert("RGB"), dtype=np.int16) - pixels(r)).max())
                        for im, r in zip(got.images, refs, strict=True))
            rec["max_px"] = worst
            tol = (2 if row["dtype"] == "fp32" else 8) * (2 if row["quantize"] != "none" else 1)
            if worst > tol:
                rec["problems"].append(f"differs from the CLI's plain run by {worst}/255")
            for item, s in zip(got.results, seeds, strict=True):
                if (item.params.get("seed"), item.params.get("sampler"), item.params.get("quantize", "none"),
                        item.params.get("dtype", "fp32")) != (s, row["scheduler"], row["quantize"], row["dtype"]):
                    rec["problems"].append(f"records {item.params}")
        rec["s"] = round(time.perf_counter() - start, 1)
        self.records.append(rec)

    photo = None
    clip = None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--model", choices=tuple(MODELS), default="demo")
    p.add_argument("--commands", default="t2i,caption,t2v,i2v,latents,pipeline")
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
        elif cmd == "latents":
            factors = {"dtype": ["fp32", "bf16"], "tiling": ["auto", "on", "off"], "size": ["256", "288"],
                       "sample": [False, True], "media": ["image", "video"]}
            rows = pairwise(factors, seed=3)
            check = m.check_latents
        elif cmd == "pipeline":
            factors = {"dtype": ["fp32", "bf16"], "quantize": ["none", "int8wo"], "offload": ["none", "model", "sequential"],
                       "scheduler": ["euler", "unipc", "dpm++"], "generators": [False, True], "batch": [1, 2],
                       "tiling": ["auto", "on"], "size": ["default", "big"]}
            rows = pairwise(factors, seed=4)
            check = m.check_pipeline
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
