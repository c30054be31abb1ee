"""The SASRec peer (../shared/peers/sasrec.py, its own model and training loop, unchanged) on onerec's
time-cut split, which the peer has no mode for. The split is `onerec eval --time-cut Q`'s
(`SplitRule::TimeCut` in core/src/data/mod.rs):
- one cut for everyone, the timestamp at position floor(n * Q) of all n events sorted;
- a user's input is their events before the cut, in (timestamp, file row) order;
- validation: the input's last event is the target, the events before it the input (users with at
  least two events before the cut);
- test: the first event at or after the cut is the target, the whole input the input (users with at
  least one event before the cut and one after);
- the model trains on each user's input minus its last event; nothing after the cut is trained on.
Full ranking, input items excluded, ties pessimistic (the peer's `evaluate`). Selection on validation
only (the peer's early stopping).

Usage: python3 bench/sasrec_time_cut.py [--quantile 0.9] [--seed 0] [--out FILE] [sasrec.py options]
       PEERS=<dir of sasrec.py> (default ../shared/peers)
"""
import argparse
import json
import os
import sys

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.environ.get("PEERS", os.path.join(here, "..", "..", "shared", "peers")))

import numpy as np  # noqa: E402

import sasrec  # noqa: E402
from common import Log, short, time_order  # noqa: E402


def time_cut_split(log, quantile):
    times = np.sort(log.ts)
    cut = times[min(int(len(times) * quantile), len(times) - 1)]
    order = time_order(log)
    train, valid_in, valid_t, test_in, test_t = [], [], [], [], []
    for rows in log.sequences(order):
        before = log.item[rows[log.ts[rows] < cut]]
        after = log.item[rows[log.ts[rows] >= cut]]
        train.append(before[:-1] if len(before) >= 2 else before)
        if len(before) >= 2:
            valid_in.append(before[:-1])
            valid_t.append(before[-1])
        if len(before) >= 1 and len(after) >= 1:
            test_in.append(before)
            test_t.append(after[0])
    return dict(n_items=log.n_items, train=train, valid_in=valid_in, valid_t=np.array(valid_t),
                test_in=test_in, test_t=np.array(test_t), cut=float(cut))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quantile", type=float, default=0.9)
    ap.add_argument("--out", default=None)
    for k, v in sasrec.DEFAULT.items():
        ap.add_argument(f"--{k}", type=type(v), default=v)
    a = ap.parse_args()
    cfg = {k: getattr(a, k) for k in sasrec.DEFAULT}
    data = time_cut_split(Log(), a.quantile)
    print(f"cut {data['cut']:.0f}: {len(data['valid_t'])} validation users, {len(data['test_t'])} test users",
          flush=True)
    r = sasrec.run(cfg, data)
    r["split"] = f"time-cut {a.quantile}"
    print("best epoch", r["best_epoch"], "valid", short(r["valid"]), "test", short(r["test"]))
    if a.out:
        os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
        with open(a.out, "w") as f:
            json.dump({k: v for k, v in r.items() if k != "history"}, f, indent=1)


if __name__ == "__main__":
    main()
