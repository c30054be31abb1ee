#!/usr/bin/env bash
# Closed-loop experiment on MovieLens-100K: a model trained on the log up to the 80th percentile
# of time, served events from the 80th to the 90th, evaluated on the time cut at the 90th: the
# old model, a fine-tune of it on the served events, and a cold retrain. ONEREC picks the binary.
set -euo pipefail
B=$(realpath "${ONEREC:-target/debug/onerec}")
D=${OUT:-target/served-loop}
mkdir -p "$D"
cd $D
[ -d data/ml-100k ] || $B data fetch ml-100k --dir data
python3 - <<'PY'
import json, os
rows = open('data/ml-100k/ml-100k.inter').read().splitlines()
head, body = rows[0], [r.split('\t') for r in rows[1:]]
cols = head.split('\t')
ti = [i for i, c in enumerate(cols) if c.startswith('timestamp')][0]
ri = [i for i, c in enumerate(cols) if c.startswith('rating')][0]
ts = sorted(int(float(r[ti])) for r in body)
q80, q90 = ts[int(len(ts) * 0.8)], ts[int(len(ts) * 0.9)]
os.makedirs('base', exist_ok=True)
for ext in ('item', 'user'):
    open(f'base/base.{ext}', 'w').write(open(f'data/ml-100k/ml-100k.{ext}').read())
with open('base/base.inter', 'w') as f:
    f.write(head + '\n')
    for r in body:
        if int(float(r[ti])) < q80:
            f.write('\t'.join(r) + '\n')
with open('served.jsonl', 'w') as f:
    n = 0
    for r in body:
        t = int(float(r[ti]))
        if q80 <= t < q90:
            ev = {"event_id": f"e{n}", "item": r[1], "kind": "rating", "value": float(r[ri]), "timestamp": t}
            f.write(json.dumps({"user": r[0], "event": ev}) + '\n')
            n += 1
print("q80", q80, "q90", q90, "served", n, "days", (q90 - q80) / 86400)
PY
$B tokenize --data base --out base.tok > /dev/null
t0=$(date +%s.%N)
$B train --data base --tokenizer base.tok --preset small --epochs 30 --out base.snap --device cpu --json > base.json 2>base.err
t1=$(date +%s.%N)
$B train --data base --events served.jsonl --init-from base.snap --epochs 5 --patience 5 --lr 5e-4 --recent-days 30 --replay 0.2 --out tuned.snap --device cpu --json > tuned.json 2>tuned.err
t2=$(date +%s.%N)
$B train --data base --events served.jsonl --tokenizer base.tok --preset small --epochs 30 --out cold.snap --device cpu --json > cold.json 2>cold.err
t3=$(date +%s.%N)
echo "seconds: base $(echo "$t1-$t0"|bc) tuned $(echo "$t2-$t1"|bc) cold $(echo "$t3-$t2"|bc)"
grep "served events" tuned.err
for m in base tuned cold; do
  $B eval --data data/ml-100k --time-cut 0.9 --snapshot $m.snap --device cpu --json 2>/dev/null > eval-$m.json
  python3 -c "
import json; r = {x['stage']: x for x in json.load(open('eval-$m.json'))['ranking']}
print('$m', 'valid ndcg@10 %.4f (%d users)' % (r['valid']['metrics']['ndcg@10'], r['valid']['users']),
      'test ndcg@10 %.4f (%d users)' % (r['test']['metrics']['ndcg@10'], r['test']['users']))"
done
