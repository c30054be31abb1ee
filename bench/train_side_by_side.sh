#!/usr/bin/env bash
# Training speed side by side in one run: `onerec bench train` and the SASRec peer
# (bench/sasrec_train_speed.py over ../shared/peers/sasrec.py), both at d_model 64 on all cores,
# alternating ROUNDS times so that drift in the machine's load hits both alike. Prints each run's
# targets per second, then the medians and their ratio onerec / SASRec.
#
# Settings (environment): ROUNDS=3 ONEREC=target/release/onerec DATA=data/ml-100k
#   TOKENIZER=data/ml-100k.tok PRESET=small ONEREC_BATCH=32 SASREC_BATCH=128 STEPS=30
#   FORCE=1 to run although the load average is above 1.5.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
ONEREC=${ONEREC:-target/release/onerec}
DATA=${DATA:-data/ml-100k}
TOKENIZER=${TOKENIZER:-data/ml-100k.tok}
PRESET=${PRESET:-small}
ONEREC_BATCH=${ONEREC_BATCH:-32}
SASREC_BATCH=${SASREC_BATCH:-128}
STEPS=${STEPS:-30}
load() { cut -d' ' -f1 /proc/loadavg; }
if [[ -z "${FORCE:-}" ]] && awk -v l="$(load)" 'BEGIN { exit !(l > 1.5) }'; then
  echo "load average $(load) > 1.5: the timings would be noise; set FORCE=1 to run anyway" >&2
  exit 2
fi
echo "date: $(date -Is); host: $(nproc) cpus,$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-)"
ours=() peer=()
for round in $(seq "$ROUNDS"); do
  o=$("$ONEREC" bench train --data "$DATA" --tokenizer "$TOKENIZER" --preset "$PRESET" \
    --batch-size "$ONEREC_BATCH" --steps "$STEPS" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["targets_per_second"])')
  p=$(python3 bench/sasrec_train_speed.py --batch "$SASREC_BATCH" --steps "$STEPS" | python3 -c 'import json,sys; print(json.load(sys.stdin)["targets_per_second"])')
  printf 'round %d: onerec %.0f targets/s, sasrec %.0f targets/s\n' "$round" "$o" "$p"
  ours+=("$o") peer+=("$p")
done
python3 - "${ours[*]}" "${peer[*]}" <<'PY'
import statistics, sys
o = statistics.median(map(float, sys.argv[1].split()))
p = statistics.median(map(float, sys.argv[2].split()))
print(f"median: onerec {o:.0f} targets/s, sasrec {p:.0f} targets/s, ratio onerec/sasrec {o / p:.2f}")
PY
