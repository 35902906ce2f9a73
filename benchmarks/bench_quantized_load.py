"""Peak RAM of a quantized load (``--quantize int8wo`` / ``nf4``), stage by stage.

Where does the peak of ``loading.load(..., runtime=RuntimeOptions(quantize=...))`` come from? A
1.5B-wide folder (the registry's ``1.5B`` spec at full width, hidden 1536, vocabulary 151669, flow
head 2048 wide, with ``--llm-layers`` LLM layers, ``--head-layers`` flow-head blocks,
``--semantic-layers`` semantic layers and an untied ``lm_head`` so that it is quantized as the
7B's is) is written once as ``model.safetensors`` in float32 and in bfloat16 (random weights,
seed 0; no tokenizer, no VAE: loaded with ``need=()``). Each variant then loads it in a fresh
process, and the process's peak RSS (``VmHWM``) is read after each stage of the load and reset
before the next one (``/proc/self/clear_refs``):

* ``read``: ``weights.read_state_dict`` (the file memory-mapped);
* ``build``: ``loading.build_network`` (the tensors assigned to the network, converted to the
  load's dtype where the file's differs);
* ``place``: ``Showo2.to(device)`` (on the CPU: nothing moves);
* ``quantize``: ``acceleration.apply`` (``quantize_network``: each linear layer quantized, then the
  tensors left unquantized copied out of the mapping).

Since probe BK a quantized load places the network group by group instead (``placement.place``:
each layer read with memory of its own, converted, merged, moved and quantized in turn), the stage
``place+quantize``; ``build`` then only checks the file and builds on 'meta', and ``place`` and
``quantize`` (the VAE, the other options) have nothing left to do. ``--code LABEL=SRC ...`` runs every
variant under each source folder in turn (the code before and after a change, side by side and
interleaved, each row labelled).

and the RSS after the load (its file-backed part, ``RssFile``, and the proportional set size, ``Pss``,
after it). Variants are ``FILE->LOAD:METHOD``, e.g. ``bf16->fp32:int8wo`` (a bf16 file, as the
official releases ship, loaded in float32, the CPU's default, then quantized); a FILE ending in
``.bin`` (``bf16.bin->fp32:none``) is the same weights pickled (``pytorch_model.bin``, ``torch.save``),
read with ``torch.load(weights_only=True, mmap=True)``.

    OMP_NUM_THREADS=1 python benchmarks/bench_quantized_load.py   # -> benchmarks/results/quantized-load.json
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

from proc_memory import pss, reset_peak, status  # noqa: E402

VARIANTS = ("fp32->fp32:none", "fp32->fp32:int8wo", "fp32->fp32:nf4", "bf16->bf16:none", "bf16->bf16:int8wo",
            "bf16->bf16:nf4", "bf16->fp32:int8wo", "bf16->fp32:nf4")




def make_folders(args) -> dict:
    import torch

    from showo2_cli.loading import build_network, save_folder
    from showo2_cli.specs import get_spec

    spec = get_spec("1.5B").replace(num_layers=args.llm_layers, head_layers=args.head_layers,
                                    semantic_layers=args.semantic_layers, tie_word_embeddings=False)
    folders = {}
    net = None
    for label, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        dst = args.work / f"wide-{label}"
        folders[label] = str(dst)
        if dst.exists():
            continue
        if net is None:
            torch.manual_seed(0)
            net = build_network(spec, None, torch.float32)
            g = torch.Generator().manual_seed(1)
            with torch.no_grad():  # random everywhere (the training init zeroes some layers)
                for p in net.parameters():
                    if p.dim() >= 2:
                        p.copy_(torch.randn(p.shape, generator=g) * 0.02)
        save_folder(dst, spec, net.state_dict(), dtype=dtype)
    for label in ("fp32", "bf16"):  # the same weights pickled, as older checkpoints ship
        dst = args.work / f"wide-{label}-bin"
        folders[f"{label}.bin"] = str(dst)
        if dst.exists():
            continue
        from safetensors.torch import load_file

        tmp = args.work / f"wide-{label}-bin.part"
        tmp.mkdir(exist_ok=True)
        (tmp / "config.json").write_text((Path(folders[label]) / "config.json").read_text())
        torch.save(load_file(str(Path(folders[label]) / "model.safetensors")), tmp / "pytorch_model.bin")
        tmp.rename(dst)
    return folders


def child(variant: str, folder: str, out_path: Path) -> None:
    import torch

    torch.set_num_threads(1)
    import showo2_cli.acceleration as acceleration
    import showo2_cli.loading as loading
    from showo2_cli.acceleration import weight_bytes
    from showo2_cli.options import RuntimeOptions

    stages: dict[str, dict] = {}

    def timed(name, fn):
        def wrapper(*a, **kw):
            reset_peak()
            before = status()
            result = fn(*a, **kw)
            after = status()
            stages[name] = {"rss_before": before["VmRSS"], "peak": after["VmHWM"], "rss_after": after["VmRSS"]}
            return result
        return wrapper

    loading.read_state_dict = timed("read", loading.read_state_dict)
    loading.build_network = timed("build", loading.build_network)
    loading.Showo2.to = timed("place", loading.Showo2.to)
    acceleration.apply = timed("quantize", acceleration.apply)
    try:  # since probe BK a quantized load places and quantizes the network layer by layer here
        import showo2_cli.placement as placement
    except ImportError:  # (the code before it, measured side by side)
        placement = None
    if placement is not None:
        placement.place = timed("place+quantize", placement.place)
    _, _, method = variant.partition(":")
    load_dtype = variant.split("->")[1].split(":")[0]
    start = status()
    began = time.perf_counter()
    model = loading.load(folder, need=(), dtype={"fp32": torch.float32, "bf16": torch.bfloat16}[load_dtype],
                         runtime=RuntimeOptions(quantize=method))
    seconds = time.perf_counter() - began
    end = status()
    result = {"variant": variant, "seconds": seconds, "rss_start": start["VmRSS"], "rss_after_load": end["VmRSS"],
              "rss_file_after_load": end.get("RssFile"), "pss_after_load": pss(), "peak_overall": max(s["peak"] for s in stages.values()),
              "weight_bytes": weight_bytes(model.network), "stages": stages,
              "file_bytes": sum(p.stat().st_size for p in Path(folder).iterdir() if p.suffix in (".safetensors", ".bin"))}
    out_path.write_text(json.dumps(result))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/showo2-bench/quantized-load"))
    ap.add_argument("--llm-layers", type=int, default=2)
    ap.add_argument("--head-layers", type=int, default=2)
    ap.add_argument("--semantic-layers", type=int, default=1)
    ap.add_argument("--variants", nargs="*", default=list(VARIANTS))
    ap.add_argument("--results", type=Path, default=HERE / "results" / "quantized-load.json")
    ap.add_argument("--code", nargs="*", default=[],
                    help="LABEL=SRC: run each variant with each of these source folders in turn (side by side)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--folder", help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.folder, args.out)
        return
    args.work.mkdir(parents=True, exist_ok=True)
    folders = make_folders(args)
    rows = []
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    codes = [c.partition("=")[::2] for c in args.code] or [("this", None)]
    for variant in args.variants:
        for label, src in codes:  # interleaved: each variant under each code, one after the other
            out = args.work / "result.json"
            out.unlink(missing_ok=True)
            folder = folders[variant.split("->")[0]]
            child_env = {**env, "PYTHONPATH": src} if src else env
            subprocess.run([sys.executable, __file__, "--child", variant, "--folder", folder, "--out", str(out)],
                           check=True, env=child_env)
            row = {"code": label, **json.loads(out.read_text())}
            rows.append(row)
            gb = {k: round(v / 1e9, 2) for k, v in row.items() if isinstance(v, int)}
            per_stage = {k: round(s["peak"] / 1e9, 2) for k, s in row["stages"].items()}
            print(label, variant, gb, f"{row['seconds']:.2f} s", "stage peaks GB:", per_stage, flush=True)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps({"machine": platform.platform(), "python": sys.version.split()[0],
                                        "layers": [args.llm_layers, args.head_layers, args.semantic_layers],
                                        "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
