#!/usr/bin/env bash
# Few-shot evidence (docs/benchmarks.md, "Few-shot"): PT and ADePT from scratch against ADePT started from a
# source adapter trained on a mixture of other local tasks (CoLA, WiC, COPA), k examples per class on RTE,
# MRPC and SST-2, three seeds each; every cell is an `adept sweep` over the seeds, the table `adept report`.
#   bash bench/few_shot.sh [OUT] [K ...]        # default OUT=fewshot, K=16 32
set -euo pipefail
out="${1:-fewshot}"; shift || true
ks=("${@:-16 32}"); [ "$#" -gt 0 ] || ks=(16 32)
recipe=recipes/cpu/smollm2-fewshot.yaml
[ -f "$out/source/results.json" ] || adept train --recipe "$recipe" --task cola,wic,copa steps=120 eval_every=60 max_length=128 \
  train_limit=4000 -o "$out/source" --resume auto
for k in "${ks[@]}"; do
  for task in sst2 mrpc rte; do
    adept sweep --recipe "$recipe" --task "$task" --method pt prompt_len=10 k_shot="$k" --seeds 1,2,3 -o "$out/$task-$k-pt"
    adept sweep --recipe "$recipe" --task "$task" k_shot="$k" --seeds 1,2,3 -o "$out/$task-$k-adept"
    adept sweep --recipe "$recipe" --task "$task" k_shot="$k" init_from="$out/source" --seeds 1,2,3 \
      -o "$out/$task-$k-adept-init"
  done
  adept report "$out"/*-"$k"-* -o "$out/table-$k.md" --json > "bench/results/few_shot_k$k.json"
done
