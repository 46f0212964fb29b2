#!/usr/bin/env bash
# CPU recipe for the bundled default (no GPU lent): fine-tune the shipped weights on the portrait
# data mix, the bulk of the steps at 160 px (3.5x the img/s of 224 px on this 2-core CPU), then a
# short 224-px stage at the deployment size. Each stage keeps best.pt by validation loss on
# ccp_person/val + voc_person/val + eg1800/val (vikram_val is never used).
#   bash scripts/train_cpu.sh RUN_PREFIX STAGE_A_SECONDS STAGE_B_SECONDS [INIT_WEIGHTS]
set -euo pipefail
prefix=${1:-cpu}
budget_a=${2:-3300}
budget_b=${3:-1800}
init=${4:-src/portraitseg/weights/default.pt}
mix=(source_weights.eg1800=2.5 source_weights.pseudo_portrait=2.5 source_weights.voc_person=1.5
     background_weights.scenes=0.6 background_weights.textures=0.4
     augment.composite_p=0.35 augment.composite_texture_frac=0.6 augment.portrait_crop_p=0.2)
common=(--config configs/default.yaml --backgrounds .carry/bg224.npz --device cpu --workers 2
        --channels-last true --compile false --progress false --batch-size 64 --ema-decay 0.998)
portraitseg train "${common[@]}" --run "${prefix}_a160" --init-weights "$init" --input-size 160 \
  --lr 0.0007 --warmup-epochs 1 --epochs 100 --time-budget-s "$budget_a" --set "${mix[@]}"
portraitseg train "${common[@]}" --run "${prefix}_b224" --init-weights "checkpoints/${prefix}_a160/best.pt" \
  --input-size 224 --lr 0.0003 --warmup-epochs 0.5 --epochs 100 --time-budget-s "$budget_b" --set "${mix[@]}"
