#!/usr/bin/env bash
# Train several recipes side by side on one GPU (each run is small enough to share it), then
# pack each run's outputs. Used for the bundled default weights; see MODEL_CARD.md.
#   usage: scripts/train_runs.sh OUTDIR "NAME:ARGS" ["NAME:ARGS" ...]
set -u
out=$1; shift
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
train() {  # the CLI imports only the command it runs
  python3 -m portraitseg train "$@"
}
pids=()
for spec in "$@"; do
  name=${spec%%:*}; args=${spec#*:}
  # shellcheck disable=SC2086
  train --config configs/default.yaml --run "$name" --progress false $args > "$out/$name.log" 2>&1 &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done
for spec in "$@"; do
  name=${spec%%:*}
  tar -C checkpoints -czf "$out/$name.tgz" --exclude='mobile-unet-*' "$name" 2>/dev/null
done
