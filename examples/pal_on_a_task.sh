#!/usr/bin/env bash
# PAL on a verifiable task: expert traces -> train -> exact match on longer problems than trained on.
# State mode (M(s_t) -> a_t, the task's executor renders the next state) is the mode that generalizes in
# our addition results (README, docs/RESULTS.md); MODE=history trains on the chain of thought instead.
#
#   bash examples/pal_on_a_task.sh                                   # addition, ~5 min on 2 cores
#   TASK=grid TRAIN_SIZES=3-4 TEST_SIZES="4 6" bash examples/pal_on_a_task.sh
set -euo pipefail
TASK=${TASK:-addition}                # addition, grid, logic, word_problems
MODE=${MODE:-state}                   # state, history (outcome: train on the same data with --mode outcome)
TRAIN_SIZES=${TRAIN_SIZES:-1-3}       # digits, grid side, chain length or operations
TEST_SIZES=${TEST_SIZES:-3 5 10}
COUNT=${COUNT:-2000}                  # training problems
TEST_COUNT=${TEST_COUNT:-100}
STEPS=${STEPS:-500}
OUT=${OUT:-runs/pal-$TASK-$MODE}      # a new folder: trainers refuse to overwrite a finished run
EXTRA=${EXTRA:-}                      # more train fields, e.g. "--batch_size 16 --progress false"
if [ -z "${MODEL:-}" ]; then
  MODEL=$OUT/tiny-llama
  procsup init-model "$MODEL" --hidden-size 64 --num-layers 2 --num-heads 4
fi

procsup make-data "$TASK" --mode "$MODE" --size "$TRAIN_SIZES" --count "$COUNT" -o "$OUT/train.jsonl"
procsup train --model "$MODEL" --train_file "$OUT/train.jsonl" --output_dir "$OUT/pal" --mode "$MODE" \
  --max_steps "$STEPS" $EXTRA
for size in $TEST_SIZES; do
  procsup evaluate "$TASK" "$OUT/pal/checkpoint-$STEPS" --size "$size" --count "$TEST_COUNT"
done
