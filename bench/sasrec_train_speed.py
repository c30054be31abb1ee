"""Training speed of the SASRec peer (../shared/peers/sasrec.py), measured the way
`onerec bench train` measures onerec: untimed warm-up steps, then timed steps of the peer's own
training loop (packed windows, full-softmax cross-entropy at every position, Adam), and
targets per second = targets of the timed steps / their seconds. One target is one predicted
next item. Prints one JSON object.

Usage: python3 bench/sasrec_train_speed.py [--threads 2] [--batch 128] [--steps 30] [--warmup 3]
       PEERS=<dir of sasrec.py> (default ../shared/peers)
"""
import argparse
import json
import os
import sys
import time

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.environ.get("PEERS", os.path.join(here, "..", "..", "shared", "peers")))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import sasrec  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--heads", type=int, default=2)
    ap.add_argument("--dropout", type=float, default=0.5)
    ap.add_argument("--max_len", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    rng = np.random.default_rng(a.seed)
    data = sasrec.load_split("loo")
    model = sasrec.SASRec(data["n_items"], a.hidden, 2, a.heads, a.dropout, a.max_len)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.98))
    ws = sasrec.windows(data["train"], a.max_len)
    perm = rng.permutation(len(ws))
    batches = [perm[i:i + a.batch] for i in range(0, len(ws), a.batch)]
    model.train()
    seconds, targets = [], []
    for step in range(a.warmup + a.steps):
        t0 = time.perf_counter()
        inp, tgt, pos, seg = sasrec.pack([ws[j] for j in batches[step % len(batches)]], a.max_len)
        h = model(inp, pos, seg)
        m = tgt > 0
        loss = F.cross_entropy(model.logits(h[m]), tgt[m] - 1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step >= a.warmup:
            seconds.append(time.perf_counter() - t0)
            targets.append(int(m.sum()))
    print(json.dumps({
        "model": "sasrec", "d_model": a.hidden, "heads": a.heads, "max_len": a.max_len,
        "threads": torch.get_num_threads(), "batch_size": a.batch, "steps": a.steps,
        "targets_per_second": sum(targets) / sum(seconds),
        "median_step_seconds": float(np.median(seconds)),
        "median_targets_per_step": int(np.median(targets)),
    }))


if __name__ == "__main__":
    main()
