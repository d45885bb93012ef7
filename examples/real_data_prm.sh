#!/usr/bin/env bash
# A process reward model on real data in 4 commands, no glue code:
#   Math-Shepherd (step labels from rollouts)  -> convert -> train-prm -> score ProcessBench -> evaluate-prm
# ProcessBench's F1 takes its threshold from a seeded random half of the problems and is reported on the other
# half, beside uniform random scores run through the same threshold search, "always no error" and "always the
# first step wrong". The data is the copy under /work/shared/data (see its README for sources and licenses).
#
#   bash examples/real_data_prm.sh                       # MODEL: any local HF causal LM directory
#   MODEL=path/to/qwen STEPS=1000 OUT=runs/ms-prm bash examples/real_data_prm.sh
#
# Without MODEL a tiny random character-level llama is made first (a smoke test of the path, not a PRM
# worth anything: expect numbers at the level of the random rows).
set -euo pipefail
DATA=${DATA:-/work/shared/data}
TRAIN=${TRAIN:-$DATA/openr_prm_samples/samples_math-shepherd.jsonl}    # Math-Shepherd JSONL
EVAL=${EVAL:-$DATA/processbench/gsm8k.json}                            # a ProcessBench subset
OUT=${OUT:-runs/real-data-prm}    # a new folder: trainers refuse to overwrite a finished run
STEPS=${STEPS:-300}
EXTRA=${EXTRA:-}                  # more train-prm fields, e.g. "--batch_size 4 --progress false"
EVAL_FLAGS=${EVAL_FLAGS:-}        # e.g. "--threshold 0.5" for a file too small to split
if [ -z "${MODEL:-}" ]; then
  MODEL=$OUT/tiny-llama
  procsup init-model "$MODEL" --hidden-size 64 --num-layers 2 --num-heads 4 --max-positions 4096
fi

procsup convert --from math-shepherd "$TRAIN" "$OUT/train.jsonl"
procsup train-prm --model "$MODEL" --train_file "$OUT/train.jsonl" --output_dir "$OUT/prm" --max_steps "$STEPS" $EXTRA
procsup score "$OUT/prm/checkpoint-$STEPS" "$EVAL" "$OUT/scored.jsonl" --from processbench
procsup evaluate-prm "$OUT/scored.jsonl" --json "$OUT/report.json" $EVAL_FLAGS
