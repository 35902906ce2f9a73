#!/usr/bin/env bash
# The generation, understanding and file commands once (info, t2i, caption, t2v, i2v, encode,
# decode, models; chat, serve, pull, convert, init and train have their own README sections).
# MODEL defaults to the bundled demo; OUT to a fresh folder.
set -euo pipefail
case "${1:-}" in -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0;; esac
MODEL=${MODEL:-demo}
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
STEPS=${STEPS:-}
steps=${STEPS:+--steps $STEPS}
showo2 info "$MODEL"
showo2 t2i "a red circle on a white background" --model "$MODEL" -o "$OUT/circle.png" --seed 1 $steps
showo2 caption "$OUT/circle.png" --model "$MODEL" -q "What color is the shape?" -q "Describe the image." --max-new-tokens 32
showo2 t2v "a blue square moving left on a black background" --model "$MODEL" -o "$OUT/square.mp4" --frames 17 --seed 2 $steps
showo2 i2v "$OUT/circle.png" "a red circle moving up on a white background" --model "$MODEL" -o "$OUT/up.gif" --seed 3 $steps
showo2 encode "$OUT/square.mp4" --model "$MODEL" -o "$OUT/square.latents.safetensors"
showo2 decode "$OUT/square.latents.safetensors" --model "$MODEL" -o "$OUT/square-decoded.mp4"
printf 'a green triangle on a gray background\na yellow square on a black background\n' > "$OUT/prompts.txt"
showo2 t2i --prompts-file "$OUT/prompts.txt" --model "$MODEL" -o "$OUT/batch.png" -n 2 --batch-size 4 --seed 4 $steps --json
showo2 models
echo "outputs in $OUT"
