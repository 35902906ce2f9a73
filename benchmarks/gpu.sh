#!/usr/bin/env bash
# GPU figures for showo2 (issue 12 item 5): the 1.5B-shaped network at full depth in bf16 (t2i
# 432x432 50 steps s/image at batch 1 and 4, caption tokens/s, peak memory), sdpa vs flex vs
# torch.compile, and the 7B-shaped network's peak memory for t2i, in bf16 and with --quantize nf4.
# Random weights built on the GPU (no downloads, no files). Each section runs in its own process
# under its own time limit (8 minutes in all), so one that crashes or hangs loses nothing else.
#
#   bash benchmarks/gpu.sh            # writes $OUT/gpu.json (or benchmarks/results/gpu-<date>.json)
#   bash benchmarks/gpu.sh --smoke    # CPU: the tiny spec, a few steps (checks the script runs;
#                                     # skips flex and compile: flex aborts natively on CPU, compile takes minutes)
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
parts=()
# seconds per section: t2i (2 x 50 steps + warm-up) caption attn x3 (10 steps each, compile warm-up) 7b
sections="t2i:150 caption:45 attn-sdpa:35 attn-flex:60 attn-compile:100 7b:45 7b-nf4:45"
[ "${1:-}" != "--smoke" ] || sections="t2i:60 caption:60 attn-sdpa:60 7b:60 7b-nf4:60"
for pair in $sections; do
  section="${pair%%:*}"; limit="${pair##*:}"
  part="$out_dir/gpu-part-$section.json"
  rm -f "$part"
  timeout "$limit" "$py" "$here/bench_gpu.py" --section "$section" --out "$part" "$@"
  rc=$?
  [ -f "$part" ] || printf '{"section": "%s", "error": "exited %s (124 = over its %s s limit)"}\n' "$section" "$rc" "$limit" > "$part"
  parts+=("$part")
done
"$py" - "$out" "${parts[@]}" <<'PY'
import json, sys
out, parts = sys.argv[1], sys.argv[2:]
merged = {json.load(open(p))["section"]: json.load(open(p)) for p in parts}
json.dump(merged, open(out, "w"), indent=1)
PY
rm -f "${parts[@]}"
echo "wrote $out"
