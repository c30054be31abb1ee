"""New films on MovieLens-100K without retraining (issue "The closed loop").

Holds out the 10% of films whose first rating comes latest, trains `small` on every rating before
the first of them (time T), adds them with `onerec items add`, and serves both snapshots with the
users' histories as of T. A week later, a popularity slot knows which new films were rated most
in that week (before T no new film had a rating). Each user's targets are the films they rate
from T + 7 days on. Reports, for each kind of slate of 10:
- hit@10: the share of users whose slate holds a film they rate later;
- new-film hit@10: the same, over users who rate a new film later, counting new films only;
- the share of slate positions that new films take.
Slates: the model without the new films (it cannot name them), the model with them added, either's
top 9 plus the popularity slot, and the server's own fresh slot: the films posted to a running
server (`POST /admin/items`), which keeps 1 of 10 positions (`--fresh-share 0.1`) for the new
film users chose most since it was added, then the one its model ranks highest for the user:
right after the films are added, and after the week's ratings of new films are posted to it as
events (what the popularity slot knows).

Usage: python3 bench/new_items.py [ONEREC binary] [work dir]
"""
import json, os, shutil, subprocess, sys, time, urllib.request
from collections import Counter

B = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "target/debug/onerec")
D = sys.argv[2] if len(sys.argv) > 2 else "target/new-items"
os.makedirs(D, exist_ok=True)
os.chdir(D)
run = lambda *a: subprocess.run([B, *a], check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE).stdout
if not os.path.isdir("data/ml-100k"):
    run("data", "fetch", "ml-100k", "--dir", "data")
lines = open("data/ml-100k/ml-100k.inter").read().splitlines()
head, rows = lines[0], [l.split("\t") for l in lines[1:]]
events = [(r[0], r[1], int(float(r[3]))) for r in rows]
rating = {(r[0], r[1]): float(r[2]) for r in rows}
first = {}
for u, i, t in events:
    first[i] = min(first.get(i, t), t)
films = sorted(first, key=lambda i: first[i])
new = set(films[-len(films) // 10:])
T = min(first[i] for i in new)
item_lines = open("data/ml-100k/ml-100k.item").read().splitlines()
old_items = [l for l in item_lines[1:] if l.split("\t")[0] not in new]
new_items = [l for l in item_lines[1:] if l.split("\t")[0] in new]
before = [l for l, (u, i, t) in zip(lines[1:], events) if t < T]
for name, items in (("old", old_items), ("grown", old_items + new_items)):
    os.makedirs(name, exist_ok=True)
    open(f"{name}/{name}.item", "w").write("\n".join([item_lines[0]] + items) + "\n")
    open(f"{name}/{name}.inter", "w").write("\n".join([head] + before) + "\n")
    open(f"{name}/{name}.user", "w").write(open("data/ml-100k/ml-100k.user").read())
WEEK = 7 * 86400
known = {u for u, i, t in events if t < T}
targets = {}
for u, i, t in events:
    if t >= T + WEEK and u in known:
        targets.setdefault(u, set()).add(i)
week = Counter(i for u, i, t in events if T <= t < T + WEEK and i in new)
slot = week.most_common(1)[0][0]
print(f"{len(new)} new films from {time.strftime('%Y-%m-%d', time.gmtime(T))}; {len(before)} ratings before; "
      f"{len(targets)} users with a history rate again from a week later, {sum(bool(ts & new) for ts in targets.values())} of them "
      f"new films; the popularity slot is film {slot} ({week[slot]} ratings in the week)", flush=True)

if not os.path.exists("old.snap"):
    run("tokenize", "--data", "old", "--out", "old.tok")
    started = time.time()
    run("train", "--data", "old", "--tokenizer", "old.tok", "--preset", "small", "--epochs", "30", "--out", "old.snap", "--device", "cpu")
    print(f"trained in {time.time() - started:.0f} s", flush=True)
report = json.loads(run("items", "add", "--snapshot", "old.snap", "--data", "grown", "--out", "grown.snap", "--json"))
print(f"added {len(report['items'])} films; neighbours per film: median "
      f"{sorted(i['neighbours'] for i in report['items'])[len(report['items']) // 2]}", flush=True)

def rows(lines):
    """Catalogue rows as `POST /admin/items` takes them, with the tags the RecBole loader reads."""
    out = []
    for line in lines:
        item, title, year, classes = line.split("\t")
        out.append({"id": item, "title": title, "tags": [f"release_year={year}"] * bool(year) + classes.split()})
    return out

def post(port, path, body, token):
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=json.dumps(body).encode(),
                                     headers={"authorization": f"Bearer {token}", "content-type": "application/json"})
    return json.load(urllib.request.urlopen(request))

def slates(snapshot, data, port, fresh_share="0", add=None, served=()):
    shutil.rmtree(f"serve-{port}", ignore_errors=True)
    server = subprocess.Popen([B, "serve", "--snapshot", snapshot, "--data", data, "--data-dir", f"serve-{port}",
                               "--addr", f"127.0.0.1:{port}", "--device", "cpu", "--api-key", "k",
                               "--admin-token", "a", "--fresh-share", fresh_share],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    server.stdout.readline()
    if add:
        started = time.time()
        added = post(port, "/admin/items", {"items": add}, "a")["added"]
        print(f"posted {len(added)} films to a running server in {time.time() - started:.1f} s", flush=True)
    for at in range(0, len(served), 500):
        post(port, "/v1/events", {"events": served[at:at + 500]}, "k")
    out = {}
    for u in targets:
        request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/feed?user={u}&k=10&beam=100",
                                         headers={"authorization": "Bearer k"})
        out[u] = [i["id"] for i in json.load(urllib.request.urlopen(request))["items"]]
    server.terminate()
    server.wait()
    return out

def score(name, slate_of):
    hits = [bool(targets[u] & set(s)) for u, s in slate_of.items()]
    new_hits = [bool(targets[u] & new & set(s)) for u, s in slate_of.items() if targets[u] & new]
    share = sum(i in new for s in slate_of.values() for i in s) / sum(len(s) for s in slate_of.values())
    print(f"| {name} | {sum(hits) / len(hits):.4f} | {sum(new_hits) / len(new_hits):.4f} | {share:.3f} |", flush=True)

with_slot = lambda slates: {u: s[:9] + ([slot] if slot not in s[:9] else s[9:10]) for u, s in slates.items()}
old, grown = slates("old.snap", "old", 18181), slates("grown.snap", "grown", 18182)
live = slates("old.snap", "old", 18183, fresh_share="0.1", add=rows(new_items))
week_events = [{"event_id": f"w{n}", "user": u, "item": i, "kind": "rating", "value": rating[(u, i)], "timestamp": t}
               for n, (u, i, t) in enumerate(events) if T <= t < T + WEEK and i in new]
live_week = slates("old.snap", "old", 18184, fresh_share="0.1", add=rows(new_items), served=week_events)
print("| slate | hit@10 | new-film hit@10 | new films' share of slots |")
print("|---|---|---|---|")
score("model without the new films", old)
score("model with the new films added", grown)
score("model without them, top 9 + popularity slot", with_slot(old))
score("model with them, top 9 + popularity slot", with_slot(grown))
score("films posted live, top 9 + the server's fresh slot", live)
score(f"the same, after the week's {len(week_events)} ratings of new films were posted as events", live_week)
