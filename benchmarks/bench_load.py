"""Load time and peak RAM: an official ``pytorch_model.bin`` folder vs the ``showo2 convert`` output.

Steps, each in a fresh process so that the numbers do not mix:

1. ``showo2 convert DIR -o DIR-converted --dtype bf16`` (wall time, peak RSS);
2. ``showo2 info DIR`` and ``showo2 info DIR-converted`` (wall time, peak RSS, parameter counts);
3. ``showo2_cli.loading.load(path, dtype=torch.bfloat16, need=())`` for the official folder and the
   converted one, alternating (bin, safetensors, bin, safetensors, ...). In the first round the weight
   files are evicted from the page cache first (``posix_fadvise(DONTNEED)``, checked with
   ``fincore`` where it exists), later rounds run with a warm cache. Each load reports its wall
   time, peak RSS (``ru_maxrss``), RSS right after the load (``VmRSS``, split into anonymous and
   file-backed pages), then the time to read every parameter once (a full checksum, which pages in
   memory-mapped weights) and the RSS after that. The checksums of the two formats must agree.

    python benchmarks/make_official_checkpoint.py \
        --shapes ../shared/parity/reference/real_showo2_1.5B_state_dict_shapes.json \
        --out /tmp/showo2-bench/official-1.5B
    python benchmarks/bench_load.py --dir /tmp/showo2-bench/official-1.5B

Writes ``benchmarks/results/load-1.5B.md`` and ``.json`` (``--results`` to change).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_SHAPES = Path(__file__).resolve().parents[2] / "shared" / "parity" / "reference" / "real_showo2_1.5B_state_dict_shapes.json"
GROUPS = {"llm": ("showo.",), "semantic": ("image_embedder_und.", "position_embedding.", "und_trans."),
          "projector+fusion": ("image_embedder_gen.", "fusion_proj."), "time": ("time_embed.", "time_embed_proj."),
          "flow_head": ("diff_proj.", "diffusion_head_a.", "diffusion_head_b.")}

# Runs in a fresh interpreter: argv[1] = model folder. Prints one JSON line.
CHILD = r'''
import json, os, resource, sys, time
t_start = time.perf_counter()

def status():
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem"):
                out[key] = int(rest.split()[0])  # KiB
    out["ru_maxrss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return out

import torch
from showo2_cli.loading import load
imported = status()
t_imported = time.perf_counter()
m = load(sys.argv[1], dtype=torch.bfloat16, need=())
t_loaded = time.perf_counter()
after_load = status()

net = m.network
emb = net.get_parameter("showo.model.embed_tokens.weight")
head = net.get_parameter("diffusion_head_b.linear.weight")
down = net.get_parameter("showo.model.layers.27.mlp.down_proj.weight")
lm = net.showo.lm_head.weight
checks = {
    "embed_tokens[:4].sum": float(emb[:4].double().sum()),
    "embed_tokens[0,:4]": [float(x) for x in emb[0, :4].float()],
    "diffusion_head_b.linear.weight.sum": float(head.double().sum()),
    "diffusion_head_b.linear.weight[0,:4]": [float(x) for x in head[0, :4].float()],
    "layers.27.down_proj[-2:].sum": float(down[-2:].double().sum()),
    "lm_head_is_embed": lm.data_ptr() == emb.data_ptr(),
}
dtypes = sorted({str(p.dtype).replace("torch.", "") for p in net.parameters()})
counts = m.parameter_counts()
n_state = len(net.state_dict())

# Read every parameter once: a full checksum (pages in memory-mapped weights).
t_touch = time.perf_counter()
total, seen = 0.0, set()
with torch.no_grad():
    for name, p in net.named_parameters():
        flat = p.detach().reshape(-1)
        step = 1 << 24
        for i in range(0, flat.numel(), step):
            total += float(flat[i:i + step].sum(dtype=torch.float64))
t_touched = time.perf_counter()
after_touch = status()
print(json.dumps({
    "import_s": t_imported - t_start, "load_s": t_loaded - t_imported, "load_seconds_reported": m.load_seconds,
    "touch_s": t_touched - t_touch, "rss_after_import": imported, "rss_after_load": after_load,
    "rss_after_touch": after_touch, "checks": checks, "checksum_all_params": total, "dtypes": dtypes,
    "parameter_counts": counts, "state_dict_keys": n_state, "format": m.files.format if m.files else None,
    "spec": {k: getattr(m.spec, k) for k in ("name", "hidden_size", "num_layers", "num_heads", "num_kv_heads",
             "vocab_size", "tie_word_embeddings", "semantic_layers", "semantic_heads", "head_layers",
             "head_hidden", "resolution", "max_seq_len")},
}))
'''


def kib_to_gib(k: int | None) -> float | None:
    return None if k is None else k / 1024 / 1024


def run_measured(cmd: list[str], log_dir: Path, label: str, env: dict | None = None) -> dict:
    """Run a command in a child process; wall time and the child's own peak RSS (wait4)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    out_path, err_path = log_dir / f"{label}.stdout", log_dir / f"{label}.stderr"
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env)
        _, wstatus, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(wstatus)
    stdout, stderr = out_path.read_text(errors="replace"), err_path.read_text(errors="replace")
    return {"cmd": cmd, "rc": proc.returncode, "wall_s": wall, "maxrss_kib": usage.ru_maxrss,
            "user_s": usage.ru_utime, "sys_s": usage.ru_stime, "majflt": usage.ru_majflt,
            "stdout": stdout, "stderr": stderr}


def last_json(text: str):
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                continue
    return None


def weight_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in (".bin", ".safetensors", ".pth"))


def resident_bytes(path: Path) -> int | None:
    if shutil.which("fincore") is None:
        return None
    try:
        out = subprocess.run(["fincore", "--bytes", "--noheadings", "--output", "RES", str(path)],
                             capture_output=True, text=True, check=True).stdout.split()
        return int(out[0])
    except (subprocess.CalledProcessError, ValueError, IndexError):
        return None


def evict(paths: list[Path]) -> None:
    """Drop these files' clean pages from the page cache (no root needed, affects only them)."""
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def expected_counts(shapes_path: Path) -> dict | None:
    if not shapes_path.exists():
        return None
    data = json.loads(shapes_path.read_text())
    shapes = data.get("shapes", data)
    emb, lm = shapes.get("showo.model.embed_tokens.weight"), shapes.get("showo.lm_head.weight")
    tied = emb is not None and emb == lm
    counts = dict.fromkeys(GROUPS, 0)
    for k, s in shapes.items():
        if tied and k == "showo.lm_head.weight":
            continue
        for g, prefixes in GROUPS.items():
            if k.startswith(prefixes):
                counts[g] += math.prod(s)
    counts["total"] = sum(counts.values())
    return {"counts_tied_once": counts, "keys": len(shapes), "tied": tied,
            "listed_values_incl_lm_head": sum(math.prod(s) for s in shapes.values())}


def machine() -> dict:
    import torch

    mem = {}
    with open("/proc/meminfo") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("MemTotal", "MemAvailable", "SwapTotal"):
                mem[k] = int(v.split()[0])
    cpu = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    try:
        import safetensors
        st_version = safetensors.__version__
    except ImportError:
        st_version = None
    return {"cpus": os.cpu_count(), "sched_affinity": len(os.sched_getaffinity(0)), "cpu": cpu,
            "mem_total_gib": mem.get("MemTotal", 0) / 1024 / 1024,
            "mem_available_gib_at_start": mem.get("MemAvailable", 0) / 1024 / 1024,
            "swap_gib": mem.get("SwapTotal", 0) / 1024 / 1024, "python": platform.python_version(),
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(), "safetensors": st_version,
            "kernel": platform.release()}


def sizes(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.stat().st_size for p in sorted(folder.rglob("*")) if p.is_file()}


def debug_rerun(cmd: list[str], log_dir: Path, label: str) -> str:
    """Re-run a failed CLI command with --debug and return its stderr tail (the traceback)."""
    dbg = [cmd[0], "--debug", *cmd[1:]]
    res = run_measured(dbg, log_dir, label + "-debug")
    return (res["stderr"] or res["stdout"])[-6000:]


def fmt(x, digits=2, unit=""):
    if x is None:
        return "n/a"
    return f"{x:.{digits}f}{unit}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", type=Path, required=True, help="official checkpoint folder (pytorch_model.bin)")
    ap.add_argument("--converted", type=Path, default=None, help="where to convert to (default DIR-converted)")
    ap.add_argument("--skip-convert", action="store_true", help="reuse an existing converted folder")
    ap.add_argument("--rounds", type=int, default=2, help="loads of each format (first round: cold cache)")
    ap.add_argument("--no-evict", action="store_true", help="do not evict the files before the first round")
    ap.add_argument("--shapes", type=Path, default=DEFAULT_SHAPES, help="key->shape listing for expected counts")
    ap.add_argument("--results", type=Path, default=HERE / "results" / "load-1.5B.md")
    ap.add_argument("--logs", type=Path, default=None, help="folder for child stdout/stderr (default: a temp dir)")
    args = ap.parse_args(argv)

    src = args.dir.resolve()
    dst = (args.converted or src.with_name(src.name + "-converted")).resolve()
    logs = args.logs or Path(tempfile.mkdtemp(prefix="showo2-bench-logs-"))
    showo2 = shutil.which("showo2", path=str(Path(sys.executable).parent)) or shutil.which("showo2")
    cli = [showo2] if showo2 else [sys.executable, "-m", "showo2_cli.cli"]
    problems: list[str] = []
    results: dict = {"machine": machine(), "official_dir": str(src), "converted_dir": str(dst),
                     "expected": expected_counts(args.shapes), "commands": [], "problems": problems}
    print(f"machine: {results['machine']}", flush=True)

    def record(label: str, res: dict) -> dict:
        res = dict(res)
        res["label"] = label
        res["cmd_str"] = shlex.join(res["cmd"])
        res["stdout_tail"], res["stderr_tail"] = res.pop("stdout")[-4000:], res.pop("stderr")[-4000:]
        results["commands"].append(res)
        print(f"[{label}] rc={res['rc']} wall={res['wall_s']:.1f}s maxrss={kib_to_gib(res['maxrss_kib']):.2f} GiB",
              flush=True)
        return res

    # 1. convert
    if not args.skip_convert:
        if dst.exists():
            shutil.rmtree(dst)
        cmd = [*cli, "convert", str(src), "-o", str(dst), "--dtype", "bf16", "--json"]
        res = run_measured(cmd, logs, "convert")
        conv = record("convert", res)
        conv["parsed"] = last_json(res["stdout"])
        if res["rc"] != 0:
            conv["traceback"] = debug_rerun(cmd, logs, "convert")
            problems.append(f"convert failed (rc {res['rc']}): {res['stderr'].strip()[-1000:]}")
            print(conv["traceback"], file=sys.stderr)
    results["sizes"] = {"official": sizes(src), "converted": sizes(dst) if dst.exists() else {}}

    # 2. info
    for label, folder in (("info-official", src), ("info-converted", dst)):
        if not folder.exists():
            continue
        cmd = [*cli, "info", str(folder), "--json"]
        res = run_measured(cmd, logs, label)
        rec = record(label, res)
        rec["parsed"] = last_json(res["stdout"])
        if res["rc"] != 0:
            rec["traceback"] = debug_rerun(cmd, logs, label)
            problems.append(f"{label} failed (rc {res['rc']}): {res['stderr'].strip()[-1000:]}")
        elif rec["parsed"] and results["expected"]:
            got = rec["parsed"].get("parameters", {})
            want = results["expected"]["counts_tied_once"]
            if {k: got.get(k) for k in want} != want:
                problems.append(f"{label}: parameter counts {got} differ from the shapes listing's {want}")

    # 3. loads, alternating
    loads = []
    targets = [("official .bin", src)] + ([("converted safetensors", dst)] if dst.exists() else [])
    for rnd in range(1, args.rounds + 1):
        cold = rnd == 1 and not args.no_evict
        for fmt_label, folder in targets:
            if cold:  # only this load's files: the other format's stay cached for the warm round
                evict(weight_files(folder))
            resident = {p.name: resident_bytes(p) for p in weight_files(folder)}
            cmd = [sys.executable, "-c", CHILD, str(folder)]
            label = f"load-{'bin' if folder == src else 'st'}-{rnd}"
            res = run_measured(cmd, logs, label)
            rec = record(label, res)
            rec["cmd_str"] = f"{shlex.quote(sys.executable)} -c <CHILD> {shlex.quote(str(folder))}"
            rec.update(format_label=fmt_label, round=rnd, cache="cold (evicted)" if cold else "warm",
                       resident_before=resident, child=last_json(res["stdout"]))
            if res["rc"] != 0 or rec["child"] is None:
                problems.append(f"{label} failed (rc {res['rc']}): {res['stderr'].strip()[-3000:]}")
                print(res["stderr"][-3000:], file=sys.stderr)
            loads.append(rec)
    results["loads"] = [r["label"] for r in loads]

    # agreement between the formats
    ok = [r for r in loads if r.get("child")]
    by_fmt: dict[str, list[dict]] = {}
    for r in ok:
        by_fmt.setdefault(r["format_label"], []).append(r["child"])
    agreement = None
    if len(by_fmt) == 2:
        a, b = (v[0] for v in by_fmt.values())
        agreement = {"checks_equal": a["checks"] == b["checks"],
                     "checksum_equal": a["checksum_all_params"] == b["checksum_all_params"],
                     "counts_equal": a["parameter_counts"] == b["parameter_counts"],
                     "spec_equal": a["spec"] == b["spec"]}
        for k, v in agreement.items():
            if not v:
                problems.append(f"the two formats disagree: {k} is False "
                                f"({a.get(k.split('_')[0]) if k != 'checksum_equal' else (a['checksum_all_params'], b['checksum_all_params'])})")
    results["agreement"] = agreement
    if results["expected"]:
        want = results["expected"]["counts_tied_once"]
        for r in ok:
            got = {k: r["child"]["parameter_counts"].get(k) for k in want}
            if got != want:
                problems.append(f"{r['label']}: Showo2.parameter_counts() {got} != shapes listing {want}")
                break

    # ---- report ----
    md = render(results, loads, args, cli)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(md)
    args.results.with_suffix(".json").write_text(json.dumps(
        {**results, "load_runs": loads}, indent=1, default=str) + "\n")
    print(md)
    print(f"wrote {args.results} and {args.results.with_suffix('.json')}; child logs in {logs}")
    return 0 if not problems else 1


def render(results: dict, loads: list[dict], args, cli: list[str]) -> str:
    m = results["machine"]
    L = ["# Load time and peak RAM: official `pytorch_model.bin` vs `showo2 convert` safetensors (1.5B shapes)", ""]
    L.append(f"Generated by `benchmarks/bench_load.py` on {time.strftime('%Y-%m-%d %H:%M %Z')}. Weights are random "
             "(`benchmarks/make_official_checkpoint.py`), with the real Show-o2 1.5B key set and shapes, bf16, "
             "tied `lm_head` stored once as in the official save.")
    L.append("")
    L.append(f"Machine: {m['cpus']} CPUs ({m['cpu']}), {m['mem_total_gib']:.1f} GiB RAM, swap {m['swap_gib']:.1f} GiB, "
             f"Linux {m['kernel']}; Python {m['python']}, torch {m['torch']} ({m['torch_threads']} threads), "
             f"safetensors {m['safetensors']}.")
    L.append("")
    L.append("## Files")
    L.append("")
    L.append("| folder | file | bytes | GB |")
    L.append("|---|---|---:|---:|")
    for key, folder in (("official", results["official_dir"]), ("converted", results["converted_dir"])):
        for name, size in results["sizes"].get(key, {}).items():
            L.append(f"| `{folder}` | `{name}` | {size:,} | {size / 1e9:.3f} |")
    L.append("")
    L.append("## Loads: `load(path, dtype=torch.bfloat16, need=())` in a fresh process each")
    L.append("")
    L.append("Alternating official/converted. In round 1 the loaded folder's weight file is evicted from the page "
             "cache first (`posix_fadvise(DONTNEED)`), later rounds run warm; *resident* is how much of the weight "
             "file `fincore` saw in the page cache just before the load. "
             "*load s* is the `load()` call alone (imports excluded); *peak RSS* is the child's `ru_maxrss` "
             "(whole process, including its imports and the checksum pass after the load); *RSS after load* "
             "is `VmRSS` right after `load()` returned, split into anonymous / file-backed pages; *read-all s* "
             "is one pass over every parameter (a full checksum), which pages in memory-mapped weights; "
             "*RSS after read-all* is `VmRSS` after it.")
    L.append("")
    L.append("| run | format | cache (resident before) | load s | peak RSS after load GiB | RSS after load GiB (anon / file) "
             "| read-all s | RSS after read-all GiB (anon / file) | peak RSS GiB (whole process) | process wall s |")
    L.append("|---|---|---|---:|---:|---|---:|---|---:|---:|")
    for r in loads:
        c = r.get("child")
        res_b = sum(v or 0 for v in r["resident_before"].values())
        resident = f"{r['cache']} ({res_b / 1e9:.2f} GB)" if None not in r["resident_before"].values() else r["cache"]
        if not c:
            L.append(f"| {r['label']} | {r['format_label']} | {resident} | FAILED rc {r['rc']} | | | | | "
                     f"{kib_to_gib(r['maxrss_kib']):.2f} | {r['wall_s']:.1f} |")
            continue
        al, at = c["rss_after_load"], c["rss_after_touch"]
        L.append(f"| {r['label']} | {r['format_label']} | {resident} | {c['load_s']:.2f} | "
                 f"{kib_to_gib(al['ru_maxrss']):.2f} | "
                 f"{kib_to_gib(al['VmRSS']):.2f} ({kib_to_gib(al['RssAnon']):.2f} / {kib_to_gib(al['RssFile']):.2f}) | "
                 f"{c['touch_s']:.2f} | {kib_to_gib(at['VmRSS']):.2f} ({kib_to_gib(at['RssAnon']):.2f} / "
                 f"{kib_to_gib(at['RssFile']):.2f}) | {kib_to_gib(r['maxrss_kib']):.2f} | {r['wall_s']:.1f} |")
    L.append("")
    first = next((r["child"] for r in loads if r.get("child")), None)
    if first:
        L.append(f"RSS after `import torch, showo2_cli.loading` (before the load): "
                 f"{kib_to_gib(first['rss_after_import']['VmRSS']):.2f} GiB.")
        L.append("")
    L.append("## CLI commands")
    L.append("")
    L.append("| command | rc | wall s | peak RSS GiB | user s | sys s | result |")
    L.append("|---|---:|---:|---:|---:|---:|---|")
    for r in results["commands"]:
        if not r["label"].startswith(("convert", "info")):
            continue
        p = r.get("parsed") or {}
        if r["label"] == "convert":
            note = f"{p.get('bytes', 0) / 1e9:.2f} GB written, own timer {p.get('seconds')} s" if p else ""
        else:
            par = p.get("parameters") or {}
            note = (f"total {par.get('total', 0):,} params; check_seconds {p.get('check_seconds')}" if p else "")
        L.append(f"| `{r['cmd_str']}` | {r['rc']} | {r['wall_s']:.1f} | {kib_to_gib(r['maxrss_kib']):.2f} | "
                 f"{r['user_s']:.1f} | {r['sys_s']:.1f} | {note} |")
    L.append("")
    L.append("## Checks")
    L.append("")
    exp = results.get("expected")
    if exp:
        L.append(f"Shapes listing: {exp['keys']} keys, {exp['listed_values_incl_lm_head']:,} values with lm_head "
                 f"counted twice; tied-once counts {exp['counts_tied_once']}.")
        L.append("")
    for r in results["commands"]:
        if r["label"].startswith("info") and r.get("parsed"):
            L.append(f"- `{r['label']}` parameters: {r['parsed'].get('parameters')}")
    if first:
        L.append(f"- `Showo2.parameter_counts()` after load: {first['parameter_counts']}; dtypes {first['dtypes']}; "
                 f"spec {first['spec']}")
    for r in loads:
        if r.get("child"):
            c = r["child"]
            L.append(f"- {r['label']}: checks {c['checks']}, full checksum {c['checksum_all_params']!r}")
    L.append(f"- agreement between formats: {results.get('agreement')}")
    L.append("")
    if results["problems"]:
        L.append("## Problems")
        L.append("")
        for p in results["problems"]:
            L.append(f"- {p}")
        L.append("")
        for r in results["commands"]:
            if r.get("traceback"):
                L.append(f"`{r['label']}` with `--debug`:")
                L.append("")
                L.append("```")
                L.append(r["traceback"].rstrip())
                L.append("```")
                L.append("")
    L.append("## Commands")
    L.append("")
    L.append("```sh")
    L.append(f"{shlex.quote(sys.executable)} benchmarks/make_official_checkpoint.py --shapes {args.shapes} "
             f"--out {results['official_dir']} --dtype bf16 --seed 0")
    L.append(f"{shlex.quote(sys.executable)} benchmarks/bench_load.py --dir {results['official_dir']}")
    L.append("# which runs:")
    for r in results["commands"]:
        if r["label"].startswith(("convert", "info")):
            L.append(r["cmd_str"])
    L.append(f"# and, per load, {shlex.quote(sys.executable)} -c <CHILD> FOLDER, where CHILD imports "
             "showo2_cli.loading.load and calls load(FOLDER, dtype=torch.bfloat16, need=())")
    L.append("```")
    L.append("")
    return "\n".join(L)


if __name__ == "__main__":
    sys.exit(main())
