#!/usr/bin/env bash
# The whole twinplume story on the simulated bench, with the real commands:
# simulate paired maps -> train -> evaluate -> export -> live mapping with live transfer.
# Run by `make demo` (which puts .venv/bin on PATH); usable by hand: bash docs/demo.sh OUT_DIR
set -euo pipefail

OUT=${1:-demo-out}
CONFIG=${DEMO_CONFIG:-$(dirname "$0")/demo-config.toml}
# Worker ports: the stream spec's defaults unless the caller picks others.
INPUT=${DEMO_INPUT:-tcp://127.0.0.1:5557}
OUTPUT=${DEMO_OUTPUT:-tcp://127.0.0.1:5558}
CONTROL=${DEMO_CONTROL:-tcp://127.0.0.1:5559}
VIEW_PORT=${DEMO_VIEW_PORT:-8050}
mkdir -p "$OUT"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "1/6 simulate paired maps: train and validation (day 0), test (day 1, another region)"
libs-sim generate --shape 80x80 --step-um 40 --day 0 --seed 1 --origin-um 0,0 --out "$OUT/train.h5" --overwrite
libs-sim generate --shape 40x80 --step-um 40 --day 0 --seed 1 --origin-um 0,4000 --out "$OUT/val.h5" --overwrite
libs-sim generate --shape 60x60 --step-um 20 --day 1 --seed 1 --origin-um 6000,6000 --out "$OUT/test.h5" --overwrite

step "2/6 train the VAE + MLP, the one-step MLP and the baselines, and weigh their blend (config: $CONFIG)"
libs-transfer train "$OUT/train.h5" --val "$OUT/val.h5" --out "$OUT/model" --config "$CONFIG"

step "3/6 evaluate every model on the test map (causal protocol)"
libs-transfer evaluate "$OUT/model" "$OUT/test.h5" --out "$OUT/report"

step "4/6 export the live pipeline to ONNX"
libs-transfer export "$OUT/model" --out "$OUT/model.onnx"

step "5/6 start the live-transfer worker"
libs-stream serve --model "$OUT/model.onnx" --input "$INPUT" --output "$OUTPUT" --control "$CONTROL" \
    > "$OUT/worker.log" 2>&1 &
WORKER=$!
trap 'kill -TERM $WORKER 2>/dev/null || true; wait $WORKER 2>/dev/null || true' EXIT
libs-stream control ping --control "$CONTROL" --timeout 60 > /dev/null
echo "worker ready (pid $WORKER, log $OUT/worker.log)"

step "6/6 acquire a new paired map on the simulated bench with live transfer (open the live view's URL)"
# real time at 100 shots/s, so that the map builds up in the browser for 16 s
libs-acquire map --sim --day 1 --seed 1 --shape 40x40 --step-um 20 --origin-um 7500,6500 \
    --realtime --rate 100 --out "$OUT/live_map.h5" --overwrite \
    --live "$INPUT" --live-results "$OUTPUT" --live-control "$CONTROL" --view --view-port "$VIEW_PORT"

step "done"
cat <<EOT
  training maps      $OUT/train.h5  $OUT/val.h5
  test map           $OUT/test.h5
  model bundle       $OUT/model/
  evaluation report  $OUT/report/report.md  (figures: $OUT/report/*.png)
  live model         $OUT/model.onnx
  live map           $OUT/live_map.h5   (/entry/transferred holds the live results)
EOT
