#!/usr/bin/env bash
# CPU recipe for the bundled default (no GPU lent): fine-tune the shipped weights on the portrait
# data mix at the deployment size (224 px). The recipe is configs/cpu_finetune.yaml (why each setting
# is there is written in it); best.pt is kept by validation loss on ccp_person/val + voc_person/val +
# eg1800/val (vikram_val is never used). Caches: see configs/default.yaml.
#   bash scripts/train_cpu.sh RUN SECONDS [TRAIN FLAG ...]
# Flags after SECONDS override the recipe (later wins), e.g. --init-weights other.pt, --lr 0.0002,
# --set augment.composite_p=0.15 (MODEL_CARD.md lists each stage's flags).
set -euo pipefail
run=${1:-cpu}
budget=${2:-3300}
shift $(( $# < 2 ? $# : 2 ))
python -m portraitseg train --config configs/default.yaml --config configs/cpu_finetune.yaml \
  --run "$run" --time-budget-s "$budget" --init-weights src/portraitseg/weights/default.pt "$@"
