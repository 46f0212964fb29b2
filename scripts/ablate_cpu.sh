#!/usr/bin/env bash
# Same-budget CPU ablations for issue 9 (160 px, the bulk-stage recipe of scripts/train_cpu.sh):
# where the encoder starts (shipped weights / seed donor / DeepLab donor) and what the new data adds.
#   bash scripts/ablate_cpu.sh SECONDS_EACH [NAMES...]
# Each run keeps best.pt by val loss on ccp_person/val + voc_person/val + eg1800/val; evaluate with
#   portraitseg eval checkpoints/abl_*/best.pt --data ../shared/data/eg1800 ...
set -euo pipefail
budget=${1:-480}
shift || true
names=("$@")
[ ${#names[@]} -gt 0 ] || names=(shipped seed deeplab)
mix=(source_weights.eg1800=2.5 source_weights.pseudo_portrait=2.5 source_weights.voc_person=1.5
     background_weights.scenes=0.6 background_weights.textures=0.4
     augment.composite_p=0.35 augment.composite_texture_frac=0.6 augment.portrait_crop_p=0.2)
common=(--config configs/default.yaml --backgrounds .carry/bg224.npz --device cpu --workers 2
        --channels-last true --compile false --progress false --batch-size 64 --ema-decay 0.998
        --input-size 160 --warmup-epochs 0.5 --epochs 100 --time-budget-s "$budget")
anchors=${PORTRAITSEG_ANCHORS:-../shared/anchors}
for name in "${names[@]}"; do
  case $name in
    shipped) extra=(--init-weights src/portraitseg/weights/default.pt --lr 0.001 --set "${mix[@]}") ;;
    seed) extra=(--init-encoder "$anchors/seed_munet_bilinear_128_uint8.tflite" --lr 0.003 --set "${mix[@]}") ;;
    deeplab) extra=(--init-encoder "$anchors/deeplab_mnv2_dm05_aiseg_513.onnx" --lr 0.003
                    --set "${mix[@]}" model_overrides.divisor=4) ;;
    old_mix) extra=(--init-weights src/portraitseg/weights/default.pt --lr 0.001
                    --train-cache .carry/train224_old.npz --backgrounds .carry/bg224_textures.npz
                    --set augment.composite_p=0.25 augment.portrait_crop_p=0.2) ;;
    *) echo "unknown ablation $name" >&2; exit 2 ;;
  esac
  portraitseg train "${common[@]}" --run "abl_$name" "${extra[@]}"
done
