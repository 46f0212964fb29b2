#!/usr/bin/env bash
# Issue-9 ablations (MODEL_CARD.md, "Data-mix and donor ablations"): 540 s each at 160 px on this CPU,
# from the stage-3 weights (the model before the portrait data), stage-4 recipe unless the arm says
# otherwise; it ran as OMP_NUM_THREADS=1 bash scripts/ablate_issue9.sh. Results: checkpoints/abl/*.eval.md
set -uo pipefail
cd "$(dirname "$0")/.."

B=${B:-540}
mkdir -p checkpoints/abl
[ -f checkpoints/abl/stage3.pt ] || git show 322e8f5:src/portraitseg/weights/default.pt > checkpoints/abl/stage3.pt
# The recipe is configs/cpu_finetune.yaml, as in scripts/train_cpu.sh; the arms change only size,
# length, output folder, head and what each arm tests.
common=(--config configs/default.yaml --config configs/cpu_finetune.yaml
  --input-size 160 --time-budget-s "$B" --out-dir checkpoints/abl)
mix=(model_overrides.head_kernel=3)  # the stage-1..4 head these arms ran with
arm() {  # name, extra args...
  local name=$1; shift
  [ -f checkpoints/abl/$name/best.pt ] && return 0
  echo "=== $name $(date +%T)"
  python -m portraitseg train "${common[@]}" --run "$name" "$@" > checkpoints/abl/$name.log 2>&1
  portraitseg eval checkpoints/abl/$name/best.pt --data ../shared/data/eg1800 --data ../shared/data/vikram_val \
    --data ../shared/data/ccp_person --data ../shared/data/voc_person --threads 1 --quiet > checkpoints/abl/$name.eval.md 2>&1
  tail -1 checkpoints/abl/$name.eval.md
}
S3=(--init-weights checkpoints/abl/stage3.pt --lr 0.0004)
arm full "${S3[@]}" --set "${mix[@]}"
arm no_portrait_data "${S3[@]}" --set "${mix[@]}" source_weights.eg1800=0 source_weights.pseudo_portrait=0
arm no_scenes "${S3[@]}" --set "${mix[@]}" background_weights.scenes=0 background_weights.textures=1.0
arm donor_seed --init-encoder ../shared/anchors/seed_munet_bilinear_128_uint8.tflite --lr 0.002 --set "${mix[@]}"
arm donor_deeplab --init-encoder ../shared/anchors/deeplab_mnv2_dm05_aiseg_513.onnx --lr 0.002 --set "${mix[@]}" model_overrides.divisor=4
arm donor_seed_frozen_bn --init-encoder ../shared/anchors/seed_munet_bilinear_128_uint8.tflite --lr 0.002 --freeze-encoder-bn-epochs 100 --set "${mix[@]}"
arm no_portrait_crops "${S3[@]}" --set "${mix[@]}" augment.portrait_crop_p=0
echo "=== done $(date +%T)"
