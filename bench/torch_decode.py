#!/usr/bin/env python3
"""PyTorch *eager* replica of `onerec bench decode` for the current generator: the decoder-only
stream with routed MoE blocks, the code-by-code ID head stepped by a trie-constrained beam search,
and the final order by `log pi(ID) + score(item)`. It replaces ../shared/peers/bench_torch_decode.py,
which replicates the first generator (encoder, cross-attending decoder, KV cache), for the side by
side of issue "CPU decode throughput" (bench/decode_side_by_side.sh). The synthetic catalogue,
its RQ-KMeans semantic IDs, the trie and the exclusions are that script's, imported unchanged.

What is replicated, with the Rust it mirrors (paths from the project root):
  sizes ............... ModelConfig::preset, core/src/generator/model/mod.rs (PRESETS below)
  request ............. bench_decode, server/src/commands/bench.rs: 50 random rated events an
                        hour apart, feature "age=30", history excluded, asked an hour after the last
  context ............. context_at, core/src/generator/context.rs (recent, positives, lifelong
                        groups, feedback/gap buckets, each query's moment: away bucket and trend)
  trend ............... TrendIndex over the requests' own events, core/src/generator/trend.rs
  layout .............. Batch::layout, core/src/generator/model/batch.rs (segments packed into rows
                        of stream_len slots, prefix + causal recent part, logical positions)
  stream .............. OneRec::stream, model/mod.rs (token sums, pre-norm blocks, RmsNorm 1e-5)
  MoE ................. MoeFfn::forward, model/moe.rs (top-k by biased scores, softmax gates over
                        the chosen, each expert on its routed rows only)
  ID head ............. IdHead::logits / follow, model/head.rs
  beam search ......... beam_search_batch, core/src/decode.rs, all users' beams as one tensor
  final order ......... Recommender::rank, core/src/generator/recommend.rs

No torch.compile, no TorchScript: plain modules under torch.inference_mode(). Timing protocol as
the Rust bench's: one warm-up request per beam, --requests single requests each timed including
building the request, then 5 timed batches of --batch prebuilt requests.

Usage: python3 bench/torch_decode.py [--items 10000,1000000] [--beams 16,64,256] [--threads 1]
       PEERS=<dir of bench_torch_decode.py> (default ../shared/peers)
Prints one JSON object on stdout (progress on stderr).
"""

import argparse
import json
import math
import os
import sys
import time

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.environ.get("PEERS", os.path.join(here, "..", "..", "shared", "peers")))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import bench_torch_decode as peer  # noqa: E402
from bench_torch_decode import build_catalogue, latency_row, log  # noqa: E402

# (d_model, heads, layers, d_ff, experts, top_k, short_len, positive_len, lifelong): ModelConfig::preset
PRESETS = {
    "tiny": (32, 2, 2, 64, 2, 1, 8, 8, 4),
    "small": (64, 2, 2, 128, 4, 1, 50, 20, 16),
    "base": (512, 8, 4, 1024, 8, 2, 200, 256, 32),
}
FEATURE_BUCKETS, FEEDBACK_BUCKETS, GAP_BUCKETS, AWAY_BUCKETS = 1024, 12, 28, 8  # context.rs
SEMANTIC_LEVELS, EMB_DIM = 3, 64  # bench.rs: ModelConfig::preset(.., 3, tokenizer.embeddings.dim)
TREND_WINDOW, TREND_ITEMS, HOUR = 30 * 86_400, 32, 3_600  # TrendConfig::default
POSITIVE_RATING = 4.0  # Feedback::is_positive for ratings
EPS = 1e-5  # burn's RmsNorm


class Config:
    def __init__(self, preset, items, level_sizes):
        (self.d_model, self.heads, self.layers, self.d_ff, self.experts, self.top_k, self.short_len,
         self.positive_len, self.lifelong_tokens) = PRESETS[preset]
        self.top_k = max(1, min(self.top_k, self.experts))
        self.items, self.level_sizes = items, list(level_sizes)
        self.feature_buckets = FEATURE_BUCKETS

    @property
    def stream_len(self):
        return 1 + self.short_len + self.positive_len + self.lifelong_tokens

    def parameter_count(self):  # ModelConfig::parameter_count
        d, f = self.d_model, self.d_ff
        emb = (FEATURE_BUCKETS + 1 + self.items + 1 + FEEDBACK_BUCKETS + GAP_BUCKETS + AWAY_BUCKETS
               + self.stream_len) * d + sum(self.level_sizes) * d
        moe = self.experts * 3 * d * f + (d * self.experts + self.experts if self.experts > 1 else 0)
        blocks = self.layers * (2 * d + 4 * d * d + moe) + d
        head = sum(2 * d + 3 * d * f + v for v in self.level_sizes)
        return emb + (EMB_DIM + 1) * d + d + blocks + head + d + d * d

    def shapes(self):
        return {k: getattr(self, k) for k in ("d_model", "heads", "layers", "d_ff", "experts", "top_k", "short_len",
                                              "positive_len", "lifelong_tokens", "level_sizes")}


# ----------------------------------------------------------------------------- model

def rms_norm(d):
    return nn.RMSNorm(d, eps=EPS)


class ReGlu(nn.Module):
    def __init__(self, d, f):
        super().__init__()
        self.gate, self.up, self.down = nn.Linear(d, f, bias=False), nn.Linear(d, f, bias=False), nn.Linear(f, d, bias=False)

    def forward(self, x):
        return self.down(F.relu(self.gate(x)) * self.up(x))


class MoeFfn(nn.Module):
    def __init__(self, d, f, experts, top_k):
        super().__init__()
        self.experts = nn.ModuleList(ReGlu(d, f) for _ in range(experts))
        self.router = nn.Linear(d, experts, bias=False) if experts > 1 else None
        self.register_buffer("balance_bias", torch.zeros(experts) if experts > 1 else torch.zeros(0))
        self.top_k = top_k

    def forward(self, x):  # [N, d], real tokens only
        if self.router is None:
            return self.experts[0](x)
        scores = self.router(x)
        chosen = (scores + self.balance_bias).topk(self.top_k, 1).indices  # [N, k]
        mask = torch.zeros_like(scores, dtype=torch.bool).scatter_(1, chosen, True)
        gates = torch.softmax(scores.masked_fill(~mask, -1e9), 1)
        out = torch.zeros_like(x)
        for e, expert in enumerate(self.experts):
            rows = mask[:, e].nonzero(as_tuple=True)[0]
            if rows.numel():
                out.index_add_(0, rows, expert(x[rows]) * gates[rows, e:e + 1])
        return out


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        d = c.d_model
        self.attention_norm, self.ffn_norm = rms_norm(d), rms_norm(d)
        self.qkv, self.output = nn.Linear(d, 3 * d, bias=False), nn.Linear(d, d, bias=False)
        self.ffn = MoeFfn(d, c.d_ff, c.experts, c.top_k)
        self.heads = c.heads

    def forward(self, x, visible, real):  # x [B, S, d]; visible [B, 1, S, S]; real [B*S] bool
        b, s, d = x.shape
        h = self.heads
        q, k, v = self.qkv(self.attention_norm(x)).view(b, s, 3, h, d // h).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=visible)
        x = x + self.output(a.transpose(1, 2).reshape(b, s, d))
        flat = x.reshape(b * s, d)
        y = torch.zeros_like(flat)
        y[real] = self.ffn(self.ffn_norm(flat[real]))
        return x + y.view(b, s, d)


class Level(nn.Module):
    def __init__(self, d, f, v):
        super().__init__()
        self.norm, self.out_norm = rms_norm(d), rms_norm(d)
        self.ffn = ReGlu(d, f)
        self.bias = nn.Parameter(torch.zeros(v))


class OneRec(nn.Module):
    def __init__(self, c):
        super().__init__()
        d = c.d_model
        emb = lambda n: nn.Embedding(n, d)  # noqa: E731
        self.feature_embedding, self.item_embedding = emb(FEATURE_BUCKETS + 1), emb(c.items + 1)
        self.feedback_embedding, self.gap_embedding = emb(FEEDBACK_BUCKETS), emb(GAP_BUCKETS)
        self.away_embedding, self.positions = emb(AWAY_BUCKETS), emb(c.stream_len)
        for m in (self.feature_embedding, self.item_embedding, self.feedback_embedding, self.gap_embedding,
                  self.away_embedding, self.positions):
            nn.init.normal_(m.weight, std=0.1)
        self.lifelong_projection = nn.Linear(EMB_DIM + 1, d)
        self.trend_projection = nn.Linear(d, d, bias=False)
        self.blocks = nn.ModuleList(Block(c) for _ in range(c.layers))
        self.norm, self.item_norm = rms_norm(d), rms_norm(d)
        self.codes = nn.ModuleList(emb(v) for v in c.level_sizes)
        for m in self.codes:
            nn.init.normal_(m.weight, std=1 / math.sqrt(d))
        self.levels = nn.ModuleList(Level(d, c.d_ff, v) for v in c.level_sizes)

    def states(self, b):  # OneRec::encode: the state of each query slot, [queries, d]
        d = self.positions.weight.shape[1]
        moments = self.away_embedding(b["moment_away"])
        mixed = (self.item_embedding(b["trend_items"]) * b["trend_shares"].unsqueeze(2)).sum(1)
        moments = moments + self.trend_projection(mixed)[b["trend_of"]]
        n, e = b["features"].shape[0], b["event_items"].shape[0]
        static = (self.feature_embedding(b["features"]) * b["feature_weights"].unsqueeze(2)).sum(1)
        events = self.item_embedding(b["event_items"]) + self.feedback_embedding(b["event_feedback"]) \
            + self.gap_embedding(b["event_gaps"])
        for table, level in zip(self.codes, b["event_codes"]):
            events = events + table(level)
        tokens = [static + moments[:n], events + moments[n:n + e]]
        if b["lifelong_codes"].numel():
            tokens.append(self.lifelong_projection(b["lifelong"]) + self.codes[0](b["lifelong_codes"]))
        tokens.append(torch.zeros(1, d))
        rows, length = b["positions"].shape
        x = torch.cat(tokens)[b["slots"]].view(rows, length, d) + self.positions(b["positions"])
        for block in self.blocks:
            x = block(x, b["visible"], b["real"])
        return self.norm(x).reshape(rows * length, d)[b["queries"]]

    def logits(self, level, u):  # IdHead::logits
        head = self.levels[level]
        g = u + head.ffn(head.norm(u))
        return head.out_norm(g) @ self.codes[level].weight.T + head.bias

    def item_score(self, states, rows, items):  # OneRec::item_score
        return (self.item_norm(states)[rows] * self.item_embedding.weight[items + 1]).sum(1)


# ----------------------------------------------------------------------------- requests

def trend_lists(histories, k=TREND_ITEMS):
    """TrendIndex::at for the bench's log (every request's events, one an hour from hour 0): at
    bucket `h`, the `k` items most interacted with over the window before it, as shares of their
    sum, count first and then the smaller item. All the bench's events lie within one window."""
    hours = len(histories[0][0])
    out = [(np.zeros(0, np.int64), np.zeros(0, np.float32))]
    counts = np.zeros(1 + max(int(x[0].max()) for x in histories), np.int64)
    for h in range(hours):
        np.add.at(counts, [x[0][h] for x in histories], 1)
        seen = np.flatnonzero(counts)
        top = seen[np.lexsort((seen, -counts[seen]))[:k]]
        out.append((top, (counts[top] / counts[top].sum()).astype(np.float32)))
    return out


def away_bucket(seconds):  # context.rs
    if seconds is None:
        return 1
    return 2 + sum(seconds >= s for s in (3_600, 86_400, 7 * 86_400, 30 * 86_400, 90 * 86_400))


def gap_bucket(seconds):  # context.rs
    if seconds is None:
        return 1
    return 2 if seconds <= 1 else min(2 + int(seconds).bit_length() - 1, GAP_BUCKETS - 1)


class Recommender(peer.Recommender):
    """The old replica's recommender for its trie tables, static feature and legal-children
    gather; the request, context, layout and decode are this model's."""

    def __init__(self, model, cfg, emb, codes, trie, trends):
        super().__init__(model, cfg, emb, codes, trie)
        self.trends = trends

    def request(self, items, ratings, beam):
        """Recommender::request with exclude_history, asked an hour after the last event."""
        return {"context": self.context(items, ratings, len(items) * HOUR), "beam": beam,
                "excluded": self.trie.exclusion(items)}

    def context(self, items, ratings, now):  # context_at
        c = self.cfg
        times = np.arange(len(items)) * HOUR
        split = max(len(items) - c.short_len, 0)

        def token(i):
            gap = None if i == 0 else int(times[i] - times[i - 1])
            return int(items[i]), int(np.clip(np.rint(ratings[i]), 1, 5)), gap_bucket(gap)

        recent = [token(i) for i in range(split, len(items))]
        positive = [token(i) for i in range(split - 1, -1, -1) if ratings[i] >= POSITIVE_RATING][:c.positive_len]
        lifelong = []
        if split and c.lifelong_tokens:
            older = items[:split]
            first = self.codes[older, 0]
            events, recency = {}, {}
            for i, code in enumerate(first.tolist()):
                events[code] = events.get(code, 0) + 1
                recency[code] = i + 1
            kept = sorted(events, key=lambda k: (events[k], recency[k]), reverse=True)[:c.lifelong_tokens]
            lifelong = [(code, events[code], self.emb[older[first == code]].mean(0)) for code in kept]
        moments = []
        for v in range(len(recent) + 1):
            asked = times[split + v] if split + v < len(items) else now
            last = split + v - 1
            away = away_bucket(None if last < 0 else int(asked - times[last]))
            moments.append((away, min(int(asked // HOUR), len(self.trends) - 1)))
        return {"static": self.static, "recent": recent, "positive": positive, "lifelong": lifelong,
                "moments": moments}

    def batch(self, contexts):  # Batch::new, one query per context that sees all of it
        c = self.cfg
        n = len(contexts)
        width = max(1, max(len(x["static"]) for x in contexts))
        features = np.zeros((n, width), np.int64)
        feature_weights = np.zeros((n, width), np.float32)
        ev_items, ev_feedback, ev_gaps, life, life_codes = [], [], [], [], []
        static_moments, event_moments, lists, list_index, segments = [], [], [None], {}, []

        def moment(m):  # (away bucket, index of its trend list; 0 is the empty list)
            away, hour = m
            if len(self.trends[hour][0]) == 0:
                return away, 0
            if hour not in list_index:
                list_index[hour] = len(lists)
                lists.append(hour)
            return away, list_index[hour]

        for i, x in enumerate(contexts):
            features[i, :len(x["static"])] = np.asarray(x["static"]) + 1
            feature_weights[i, :len(x["static"])] = 1
            first_event = len(ev_items)
            for item, fb, gap in x["positive"] + x["recent"]:
                ev_items.append(item + 1)
                ev_feedback.append(fb)
                ev_gaps.append(gap)
            positives, recent = len(x["positive"]), len(x["recent"])
            static_moments.append(moment(x["moments"][0]))
            event_moments += [(0, 0)] * positives + [moment(m) for m in x["moments"][1:recent + 1]]
            first_group = len(life_codes)
            for code, count, mean in x["lifelong"][:c.lifelong_tokens]:
                life.append(np.append(mean, math.log(1 + count)))
                life_codes.append(code)
            slots = [(0, ("s", i))] + [(1 + k, ("e", first_event + k)) for k in range(positives)]
            slots += [(1 + c.positive_len + k, ("g", first_group + k)) for k in range(len(x["lifelong"]))]
            prefix = len(slots)
            recent_at = 1 + c.positive_len + c.lifelong_tokens
            slots += [(recent_at + k, ("e", first_event + positives + k)) for k in range(recent)]
            segments.append((slots, prefix, recent))
        events, groups = len(ev_items), len(life_codes)
        base = {"s": 0, "e": n, "g": n + events}
        zero = n + events + groups
        used, placed = [], [None] * n
        for i in sorted(range(n), key=lambda i: -len(segments[i][0])):
            size = len(segments[i][0])
            row = next((r for r, u in enumerate(used) if u + size <= c.stream_len), None)
            if row is None:
                used.append(0)
                row = len(used) - 1
            placed[i] = (row, used[row])
            used[row] += size
        length, rows = max(1, max(used, default=1)), max(1, len(used))
        slot_tokens = np.full(rows * length, zero, np.int64)
        positions = np.zeros(rows * length, np.int64)
        visible = np.zeros((rows * length, length), bool)
        real = np.zeros(rows * length, bool)
        queries = []
        for (slots, prefix, recent), (row, offset) in zip(segments, placed):
            at = row * length + offset
            for k, (position, (kind, j)) in enumerate(slots):
                slot_tokens[at + k] = base[kind] + j
                positions[at + k] = position
                real[at + k] = True
            visible[at:at + prefix, offset:offset + prefix] = True
            for r in range(recent):
                visible[at + prefix + r, offset:offset + prefix + r + 1] = True
            queries.append(at + (prefix + recent - 1 if recent else 0))
        visible[~real, np.flatnonzero(~real) % length] = True
        k = max(1, max((len(self.trends[h][0]) for h in lists[1:]), default=1))
        trend_items = np.zeros((len(lists), k), np.int64)
        trend_shares = np.zeros((len(lists), k), np.float32)
        for r, hour in enumerate(lists[1:], 1):
            top, shares = self.trends[hour]
            trend_items[r, :len(top)] = top + 1
            trend_shares[r, :len(top)] = shares
        away, trend_of = zip(*(static_moments + event_moments))
        t = torch.from_numpy
        return {"features": t(features), "feature_weights": t(feature_weights),
                "event_items": torch.tensor(ev_items, dtype=torch.long),
                "event_feedback": torch.tensor(ev_feedback, dtype=torch.long),
                "event_gaps": torch.tensor(ev_gaps, dtype=torch.long),
                "event_codes": [t(self.codes[np.asarray(ev_items, np.int64) - 1, l]) for l in range(SEMANTIC_LEVELS)],
                "lifelong": t(np.asarray(life, np.float32).reshape(groups, EMB_DIM + 1)),
                "lifelong_codes": torch.tensor(life_codes, dtype=torch.long),
                "trend_items": t(trend_items), "trend_shares": t(trend_shares),
                "moment_away": torch.tensor(away, dtype=torch.long), "trend_of": torch.tensor(trend_of, dtype=torch.long),
                "slots": t(slot_tokens), "positions": t(positions).view(rows, length),
                "visible": t(visible).view(rows, 1, length, length), "real": t(real),
                "queries": torch.tensor(queries, dtype=torch.long)}

    def recommend_batch(self, requests):
        """Recommender::recommend_batch: one stream pass, the constrained beam over the ID head
        with every user's beams as one tensor, then each user's items by log pi(ID) + score(item)."""
        model = self.model
        u = len(requests)
        beam = max(r["beam"] for r in requests)  # the bench gives every request the same beam
        states = model.states(self.batch([r["context"] for r in requests]))
        state_u = states  # [U * W, d] running states, W = 1 at the start
        log_probs = torch.log_softmax(model.logits(0, state_u), 1)
        nodes = torch.zeros(u, 1, dtype=torch.long)
        lp = torch.zeros(u, 1)
        ninf = float("-inf")
        depth = self.trie.depth
        for level in range(depth):
            v = self.cfg.level_sizes[level]
            w = nodes.shape[1]
            child = self.legal_children(level, nodes)
            scores = (lp.unsqueeze(-1) + log_probs.view(u, w, v)).masked_fill(child < 0, ninf)
            uu, pp, cc = [], [], []
            for g, r in enumerate(requests):  # children with only excluded items below
                p, code = r["excluded"][level]
                if len(p):
                    uu.append(np.full(len(p), g))
                    pp.append(p)
                    cc.append(code)
            if uu:
                uu, pp, cc = (torch.from_numpy(np.concatenate(a)) for a in (uu, pp, cc))
                hit_m, hit_w = (nodes[uu] == pp.unsqueeze(1)).nonzero(as_tuple=True)
                scores[uu[hit_m], hit_w, cc[hit_m]] = ninf
            k = min(beam, w * v)
            lp, top = scores.view(u, w * v).topk(k, 1)
            parents = torch.div(top, v, rounding_mode="floor")
            codes = top - parents * v
            nodes = child.view(u, w * v).gather(1, top).long().clamp_min_(0)
            if level + 1 < depth:  # IdHead::follow, then the next level's logits
                rows = (parents + torch.arange(u).unsqueeze(1) * w).reshape(-1)
                state_u = state_u[rows] + model.codes[level].weight[codes.reshape(-1)]
                log_probs = torch.log_softmax(model.logits(level + 1, state_u), 1)
        found = torch.isfinite(lp)
        items = self.leaf_item[nodes]
        users = torch.arange(u).unsqueeze(1).expand_as(items)
        score = lp + model.item_score(states, users.reshape(-1), items.reshape(-1)).view(u, -1)
        score = score.masked_fill(~found, ninf)
        order = score.argsort(dim=1, descending=True, stable=True)
        items, score, lp = items.gather(1, order), score.gather(1, order), lp.gather(1, order)
        out = []
        for g in range(u):
            n = min(int(found[g].sum()), requests[g]["beam"])
            out.append((items[g, :n].numpy(), lp[g, :n].numpy(), score[g, :n].numpy()))
        return out


# ----------------------------------------------------------------------------- bench

def sanity(rec, histories, beam, n_users=3):
    """Each user gets `beam` distinct legal items, none from the history, ordered by score, with
    log pi(ID) equal to a teacher-forced pass of the head; a batch gives each user what it gets alone."""
    model, trie = rec.model, rec.trie
    reqs = [rec.request(h[0], h[1], beam) for h in histories[:n_users]]
    alone = [rec.recommend_batch([r])[0] for r in reqs]
    together = rec.recommend_batch(reqs)
    report = {"beam": beam, "users": n_users, "returned": [], "ok": True, "problems": []}

    def bad(msg):
        report["ok"] = False
        report["problems"].append(msg)

    max_err = 0.0
    for g, (items, lps, scores) in enumerate(alone):
        report["returned"].append(int(len(items)))
        if len(items) != min(beam, len(trie.leaf_item) - len(np.unique(histories[g][0]))):
            bad(f"user {g}: {len(items)} items")
        if len(np.unique(items)) != len(items) or np.isin(items, histories[g][0]).any():
            bad(f"user {g}: a duplicate or a history item")
        if np.any(np.diff(scores) > 1e-6):
            bad(f"user {g}: not best-first")
        ti, _, _ = together[g]
        if len(np.intersect1d(ti, items)) < 0.99 * len(items):
            bad(f"user {g}: batch differs from alone")
        state = model.states(rec.batch([reqs[g]["context"]])).expand(len(items), -1)
        ids = torch.from_numpy(rec.codes[items])
        teacher = torch.zeros(len(items))
        for level in range(trie.depth):
            teacher += torch.log_softmax(model.logits(level, state), 1).gather(1, ids[:, level:level + 1]).squeeze(1)
            state = state + model.codes[level].weight[ids[:, level]]
        max_err = max(max_err, float((teacher - torch.from_numpy(lps)).abs().max()) if len(items) else 0.0)
    report["max_abs_logprob_err_vs_teacher_forced"] = max_err
    if max_err > 1e-3:
        bad(f"beam log-probs differ from teacher forcing by {max_err}")
    return report


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--items", default="10000,100000,1000000", help="catalogue sizes, comma-separated")
    ap.add_argument("--beams", default="16,64,256", help="beam widths, comma-separated")
    ap.add_argument("--preset", default="small", choices=sorted(PRESETS))
    ap.add_argument("--requests", type=int, default=100, help="single requests timed per setting")
    ap.add_argument("--batch", type=int, default=16, help="requests decoded together for throughput")
    ap.add_argument("--batch-runs", type=int, default=5)
    ap.add_argument("--history", type=int, default=50, help="events per synthetic user")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    ap.add_argument("--cache-dir", default=os.path.join(os.environ.get("TMPDIR", "/tmp"), "onerec_torch_ids"),
                    help="cache of semantic IDs ('' = none)")
    ap.add_argument("--no-check", action="store_true", help="skip the sanity check")
    args = ap.parse_args()
    if args.requests < 1 or args.batch < 1:
        ap.error("--requests and --batch must be at least 1")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    result = {"impl": "pytorch-eager", "torch": torch.__version__, "threads": torch.get_num_threads(),
              "preset": args.preset, "batch": args.batch, "requests": args.requests, "config": None,
              "parameters": [], "rows": [], "sanity": []}
    with torch.inference_mode():
        for items in [int(x) for x in args.items.split(",") if x]:
            emb, codes, trie, info = build_catalogue(items, args.seed, args.cache_dir or None)
            cfg = Config(args.preset, items, info["level_sizes"])
            model = OneRec(cfg).eval()
            n_params = sum(p.numel() for p in model.parameters()) + sum(b.numel() for b in model.buffers())
            assert n_params == cfg.parameter_count(), (n_params, cfg.parameter_count())
            result["parameters"].append([items, n_params])
            result["config"] = cfg.shapes()
            rng = np.random.default_rng(args.seed)
            histories = [(rng.integers(0, items, args.history), rng.integers(1, 6, args.history).astype(np.float32))
                         for _ in range(max(args.requests, args.batch))]
            rec = Recommender(model, cfg, emb, codes, trie, trend_lists(histories))
            for beam in [int(x) for x in args.beams.split(",") if x]:
                rec.recommend_batch([rec.request(*histories[0], beam)])
                lat = []
                for h in histories[:args.requests]:
                    t0 = time.perf_counter()
                    rec.recommend_batch([rec.request(h[0], h[1], beam)])
                    lat.append(time.perf_counter() - t0)
                batch = [rec.request(h[0], h[1], beam) for h in histories[:args.batch]]
                bt = []
                for _ in range(args.batch_runs):
                    t0 = time.perf_counter()
                    rec.recommend_batch(batch)
                    bt.append(time.perf_counter() - t0)
                row = latency_row(items, beam, lat)
                row["batched_requests_per_s"] = args.batch / sorted(bt)[len(bt) // 2]
                result["rows"].append(row)
                log(f"[torch] {items} items, beam {beam}: p50 {row['p50_ms']:.2f} ms, p99 {row['p99_ms']:.2f} ms, "
                    f"batched {row['batched_requests_per_s']:.0f} req/s")
                if not args.no_check:
                    s = sanity(rec, histories, beam)
                    s["items"] = items
                    result["sanity"].append(s)
                    log(f"[torch]   sanity: ok={s['ok']} {s['problems']}")
    print(json.dumps(result))
    if not all(s["ok"] for s in result["sanity"]):
        sys.exit(1)


if __name__ == "__main__":
    main()
