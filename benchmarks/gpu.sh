#!/usr/bin/env bash
# GPU figures for showo2 (issue 12 item 5): the 1.5B-shaped network at full depth in bf16 (t2i
# 432x432 50 steps s/image at batch 1 and 4, caption tokens/s, peak memory: torch's
# max_memory_allocated and max_memory_reserved of each timed run), sdpa vs flex vs torch.compile,
# and the 7B-shaped network's weights and peak memory for t2i, in bf16 and with --quantize nf4.
# Random weights built on the GPU in bf16 (no downloads, no files). Each section runs in its own
# process under its own time limit (8.25 minutes in all), so one that crashes or hangs loses
# nothing else; each writes its record after every stage, so one stopped by its limit keeps what
# it measured (gpu.json notes its exit status).
#
#   bash benchmarks/gpu.sh            # writes $OUT/gpu.json (or benchmarks/results/gpu-<date>.json)
#   bash benchmarks/gpu.sh --smoke    # CPU: the tiny spec, a few steps (checks the script runs;
#                                     # skips flex and compile: both compile for minutes on a CPU)
#
# On the lent GPU machine, whose image lacks diffusers and bitsandbytes and reaches no registry:
# first, here, `python benchmarks/gpu_wheels.py` (fills .whl/), then one device call:
#   run(command="bash benchmarks/gpu.sh", carry=[".whl"], timeout_s=560)
# Wheels found in .whl/ are unpacked into a temporary folder put first on the path.
set -uo pipefail
case "${1:-}" in -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0;; esac
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
py="${PYTHON:-python3}"
if compgen -G "$root/.whl/*.whl" > /dev/null; then
  site="$(mktemp -d)"
  trap 'rm -rf "$site"' EXIT  # (the unpacked wheels: 38 MB left in /tmp by every run)
  "$py" -c 'import sys, zipfile
for w in sys.argv[2:]:
    zipfile.ZipFile(w).extractall(sys.argv[1])
    print("unpacked", w.rsplit("/", 1)[-1])' "$site" "$root"/.whl/*.whl || exit 2
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
out_dir="${OUT:-$root/benchmarks/results}"
mkdir -p "$out_dir"
out="$out_dir/gpu.json"
[ -n "${OUT:-}" ] || out="$out_dir/gpu-$(date +%Y%m%d-%H%M).json"
if [ "${1:-}" != "--smoke" ]; then
  "$py" -c "import torch; assert torch.cuda.is_available()" 2>/dev/null || { echo "error: no CUDA device (use --smoke on CPU)" >&2; exit 2; }
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
fi
export PYTHONPATH="$root/src${PYTHONPATH:+:$PYTHONPATH}"
# nothing here needs the network (the device reaches none): a library that tried would fail at once
# instead of waiting on a connection; output unbuffered, so a section's line shows even if killed
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 PYTHONUNBUFFERED=1
parts=()
# seconds per section (each includes its ~10-15 s of imports and CUDA start). By torch's FLOP count
# (bench_gpu.run_flops, probe GF) a guided 432x432 step of the 1.5B is 6.2 TFLOP at batch 1 and 24.9
# at batch 4 (the 7B's: 21.5); at 35-50% of an H100's measured 790 bf16 TFLOP/s plus ~10 ms of
# launches, 25-35 ms and 65-90 ms a step: t2i's 2 x (2 + 50) calls about 7 s (~30 s with its start,
# of 70), caption's 128 launch-bound tokens 2-4 s (~20 s of 45), attn-sdpa ~15 s of 35, 7b and 7b-nf4
# ~20-25 s of 45 (the 7B's 17 GB built and quantized on the GPU). flex and compile are compile-bound
# (below), not FLOP-bound. t2i (2 x 50 steps + warm-up), caption, attn x3 (10 steps each after
# a warm-up that compiles: flex's kernels; for --compile 7 graphs, three of them the 28-layer LLM's
# (its prompt, its first step, the next ones): 200 s for the 2-layer tiny spec on this project's
# 2-core CPU machine, where inductor compiles C++), 7b (bf16 and nf4)
sections="t2i:70 caption:45 attn-sdpa:35 attn-flex:75 attn-compile:180 7b:45 7b-nf4:45"
[ "${1:-}" != "--smoke" ] || sections="t2i:60 caption:60 attn-sdpa:60 7b:60 7b-nf4:60"
for pair in $sections; do
  section="${pair%%:*}"; limit="${pair##*:}"
  part="$out_dir/gpu-part-$section.json"
  rm -f "$part" "$part.tmp"
  timeout --kill-after=5 "$limit" "$py" "$here/bench_gpu.py" --section "$section" --out "$part" "$@"
  parts+=("$section" "$?" "$limit" "$part")
done
# One file of every section: a section that crashed or ran out of time keeps what it had written
# (bench_gpu.py writes its record after each stage) with the exit status beside it.
"$py" - "$out" "${parts[@]}" <<'PY' || exit 2
import json, sys
out, rest = sys.argv[1], sys.argv[2:]
merged = {}
for section, rc, limit, part in zip(*[iter(rest)] * 4):
    try:
        with open(part) as fh:
            record = json.load(fh)
    except (OSError, ValueError) as e:
        record = {"section": section, "error": f"no record ({type(e).__name__})"}
    if rc != "0":
        record["exit"] = f"exited {rc}" + (f" (over its {limit} s limit)" if rc in ("124", "137") else "")
    merged[section] = record
with open(out, "w") as fh:
    json.dump(merged, fh, indent=1)
PY
for ((i = 3; i < ${#parts[@]}; i += 4)); do rm -f "${parts[i]}" "${parts[i]}.tmp"; done
echo "wrote $out"
