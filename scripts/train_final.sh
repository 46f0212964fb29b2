#!/usr/bin/env bash
# One GPU training run: profile the step variants, then train with torch.compile (falling back
# to eager if compilation fails) within a wall-clock budget. Used for the bundled weights.
#   usage: scripts/train_final.sh OUTDIR BUDGET_S [extra `portraitseg train` args...]
set -u
out=$1; budget=$2; shift 2
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
start=$(date +%s)
"${PY:-python3}" scripts/profile_step.py --cache .carry/val224.npz --bg .carry/bg224.npz 2>&1 | grep -v 'img/s]' | tee "$out/profile.log"
cl=$(sed -n 's/^BEST_CHANNELS_LAST=//p' "$out/profile.log"); cl=${cl:-true}
train() {  # the CLI imports only the command it runs
  "${PY:-python3}" -m portraitseg train --config configs/default.yaml --run final \
    --progress false --channels-last "$cl" "$@"
}
left=$(( budget - ($(date +%s) - start) ))
if ! train --compile true --time-budget-s "$left" "$@" > "$out/train.log" 2>&1; then
  tail -n 30 "$out/train.log"
  rm -rf checkpoints/final
  left=$(( budget - ($(date +%s) - start) ))
  echo "compiled run failed; eager run with ${left}s" | tee -a "$out/profile.log"
  train --compile false --time-budget-s "$left" "$@" > "$out/train_eager.log" 2>&1
fi
"${PY:-python3}" - "$out" <<'PY'
import sys, shutil, torch
from portraitseg.checkpoint import load_model, save_weights
out = sys.argv[1]
d = torch.load("checkpoints/final/best.pt", map_location="cpu", weights_only=False)
save_weights(load_model("checkpoints/final/best.pt"), f"{out}/final.pt", extra={"epoch": d["epoch"], "history": d["history"], "train_config": d["train_config"]})
shutil.copy("checkpoints/final/metrics.csv", f"{out}/final.csv")
PY
