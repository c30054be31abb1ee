#!/usr/bin/env bash
# CPU decode side by side: `onerec bench decode` and its PyTorch eager replica (bench/torch_decode.py)
# on the same settings, at each thread count, alternating ROUNDS times so that drift in the
# machine's load hits both alike. Prints one table of medians over the rounds with
# t/r = torch time / rust time per row (> 1: torch is slower), and writes the raw JSON to $OUT.
#
# Threads: the Rust bench runs on rayon's global pool (RAYON_NUM_THREADS=T), torch with
# torch.set_num_threads(T) and OMP/MKL_NUM_THREADS=T.
#
# Settings (environment): ITEMS=10000,1000000 BEAMS=16,64,256 REQUESTS=100 BATCH=16 THREADS="1 2"
#   ROUNDS=1 PRESET=small ONEREC=target/release/onerec OUT=target/peers/decode-<date>
#   FORCE=1 to run although the load average is above 1.5.
set -euo pipefail
cd "$(dirname "$0")/.."
ITEMS=${ITEMS:-10000,1000000}
BEAMS=${BEAMS:-16,64,256}
REQUESTS=${REQUESTS:-100}
BATCH=${BATCH:-16}
THREADS=${THREADS:-"1 2"}
ROUNDS=${ROUNDS:-1}
PRESET=${PRESET:-small}
ONEREC=${ONEREC:-target/release/onerec}
OUT=${OUT:-target/peers/decode-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
load() { cut -d' ' -f1 /proc/loadavg; }
if [[ -z "${FORCE:-}" ]] && awk -v l="$(load)" 'BEGIN { exit !(l > 1.5) }'; then
  echo "load average $(load) > 1.5: the timings would be noise; set FORCE=1 to run anyway" >&2
  exit 2
fi
[[ -x "$ONEREC" ]] || { echo "no binary at $ONEREC (cargo build --release)" >&2; exit 2; }
echo "date: $(date -Is); host: $(nproc) cpus,$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-)" | tee "$OUT/meta.txt"
echo "settings: preset=$PRESET items=$ITEMS beams=$BEAMS requests=$REQUESTS batch=$BATCH threads=[$THREADS] rounds=$ROUNDS" \
  | tee -a "$OUT/meta.txt"
for round in $(seq "$ROUNDS"); do
  for t in $THREADS; do
    echo "round $round, $t thread(s): rust (load $(load))" >&2
    RAYON_NUM_THREADS=$t "$ONEREC" bench decode --preset "$PRESET" --items "$ITEMS" --beams "$BEAMS" \
      --requests "$REQUESTS" --batch "$BATCH" --json > "$OUT/rust_t${t}_r$round.json"
    echo "round $round, $t thread(s): torch (load $(load))" >&2
    OMP_NUM_THREADS=$t MKL_NUM_THREADS=$t python3 bench/torch_decode.py --preset "$PRESET" --items "$ITEMS" \
      --beams "$BEAMS" --requests "$REQUESTS" --batch "$BATCH" --threads "$t" \
      $([[ $round -gt 1 ]] && echo --no-check) > "$OUT/torch_t${t}_r$round.json"
  done
done
python3 - "$OUT" "$ROUNDS" $THREADS <<'PY' | tee "$OUT/table.txt"
import json, statistics, sys
out, rounds, threads = sys.argv[1], int(sys.argv[2]), [int(t) for t in sys.argv[3:]]
load = lambda who, t, r: json.load(open(f"{out}/{who}_t{t}_r{r}.json"))
t0 = load("torch", threads[0], 1)
r0 = load("rust", threads[0], 1)
print("shapes:", t0["config"])
# The two RQ-KMeans ports (Rust, and ../shared/peers' numpy one) may resolve collisions into a
# different number of disambiguation codes; each code is d + 1 parameters of the ID head (its
# embedding and its bias). Any other difference means the replica no longer matches the model.
d = t0["config"]["d_model"]
for (items, p_rust), (_, p_torch) in zip(r0["parameters"], t0["parameters"]):
    extra, rest = divmod(p_torch - p_rust, d + 1)
    note = ("same" if p_torch == p_rust else f"{extra:+d} disambiguation codes in torch" if rest == 0
            else "DIFFERENT: the replica no longer matches the model")
    print(f"{items} items: parameters rust {p_rust}, torch {p_torch} ({note})")
bad = [s for s in t0["sanity"] if not s["ok"]]
print("torch sanity checks:", "all ok" if not bad else f"FAILED {bad}")
keys = ("p50_ms", "p99_ms", "ms_per_request", "batched_ms_per_request")
def cells(row):
    return {"p50_ms": row["p50_ms"], "p99_ms": row["p99_ms"], "ms_per_request": 1000 / row["requests_per_s"],
            "batched_ms_per_request": 1000 / row["batched_requests_per_s"]}
print(f"\n{'items':>8} {'beam':>4} {'thr':>3} |" + "".join(f" {k:^22} |" for k in keys))
print(f"{'':>8} {'':>4} {'':>3} |" + f" {'rust':>6} {'torch':>7} {'t/r':>6} |" * len(keys))
rows = []
for t in threads:
    rust = [{(r["items"], r["beam"]): cells(r) for r in load("rust", t, k)["rows"] if r["method"] == "onerec"}
            for k in range(1, rounds + 1)]
    torch = [{(r["items"], r["beam"]): cells(r) for r in load("torch", t, k)["rows"]} for k in range(1, rounds + 1)]
    for key in torch[0]:
        med = lambda runs, k: statistics.median(run[key][k] for run in runs)
        line = {k: (med(rust, k), med(torch, k)) for k in keys}
        print(f"{key[0]:>8} {key[1]:>4} {t:>3} |" + "".join(f" {a:>6.2f} {b:>7.2f} {b / a:>6.2f} |" for a, b in line.values()))
        rows.append({"items": key[0], "beam": key[1], "threads": t, **{k: {"rust": a, "torch": b} for k, (a, b) in line.items()}})
print(f"\nmedians over {rounds} round(s); ms per request = 1000 / requests per second, one at a time or in batches")
json.dump(rows, open(f"{out}/combined.json", "w"), indent=1)
PY
