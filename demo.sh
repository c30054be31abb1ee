#!/usr/bin/env bash
# The demo, end to end: MovieLens-100K → semantic IDs → the small model → its evaluation → the
# browser feed, served at the printed URL. `bash demo.sh --quick` trains 10 epochs instead of 20.
#
# The web tools and the feed's WebAssembly build (web/tools.sh, then `trunk build --release`) run in
# the background while the server is compiled and the model trains. On 2 cores that saves little,
# as each of them keeps both cores busy; with more cores it saves their whole length (about 5
# minutes). Steps already done (a built tool, fetched data, a trained snapshot) are skipped.
set -euo pipefail
cd "$(dirname "$0")"

epochs=20
addr=127.0.0.1:8080
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) epochs=10 ;;
    --addr) addr="$2"; shift ;;
    -h | --help) sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "demo.sh: unknown option $1 (try --help)" >&2; exit 2 ;;
  esac
  shift
done

step() { printf '\n== [%dm%02ds] %s\n' $((SECONDS / 60)) $((SECONDS % 60)) "$*"; }
logs=target/demo
mkdir -p "$logs"
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PWD/node_modules/.bin:$PATH"

step "downloading the Rust crates (cargo fetch; a minute on a fresh machine)"
cargo fetch --locked

step "web feed: tools and build start in the background (log: $logs/web.log; about 5 minutes alone)"
(bash web/tools.sh && trunk build --release) > "$logs/web.log" 2>&1 &
web=$!
trap 'kill $web 2>/dev/null || true' EXIT

# The server without wgpu: the demo decodes on the CPU, and the GPU stack would add minutes to
# the build. `cargo build --release` (or `cargo onerec …`) builds the full binary.
step "building the onerec server, CPU only (about 7 minutes on 2 cores)"
cargo build --release --locked -p onerec-server --no-default-features
onerec=target/release/onerec

step "MovieLens-100K (from the recbole 1.2.1 wheel on PyPI)"
$onerec data fetch ml-100k --dir data

if [ -f data/ml-100k.tok ]; then
  step "semantic IDs: data/ml-100k.tok exists, kept"
else
  step "semantic IDs for 1,682 films (seconds)"
  $onerec tokenize --data data/ml-100k --out data/ml-100k.tok
fi

if [ -f data/ml-100k.snap ]; then
  step "model: data/ml-100k.snap exists, kept (delete it to train again)"
else
  step "training the small model, $epochs epochs (about $((epochs * 4)) s)"
  $onerec train --data data/ml-100k --tokenizer data/ml-100k.tok --preset small --epochs "$epochs" \
    --out data/ml-100k.snap
fi

step "evaluating on the test split against popularity (seconds)"
$onerec eval --data data/ml-100k --snapshot data/ml-100k.snap

step "waiting for the web feed's build (log: $logs/web.log)"
while kill -0 $web 2>/dev/null; do
  sleep 10
  printf '   web: %s\n' "$(grep -v '^\s*$' "$logs/web.log" | tail -n 1 | cut -c 1-100)"
done
wait $web || { tail -n 30 "$logs/web.log"; echo "demo.sh: the web build failed; its log is $logs/web.log" >&2; exit 1; }
trap - EXIT

step "serving"
key=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
$onerec serve --snapshot data/ml-100k.snap --data data/ml-100k --addr "$addr" --api-key "$key" > "$logs/serve.out" &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT INT TERM
until grep -q '^onerec serving on' "$logs/serve.out"; do
  kill -0 $server 2>/dev/null || { echo "demo.sh: the server stopped; see above" >&2; exit 1; }
  sleep 0.2
done
url=$(sed -n 's/^onerec serving on \(.*\)$/\1/p' "$logs/serve.out")
cat <<EOF

== [$((SECONDS / 60))m$(printf %02d $((SECONDS % 60)))s] the feed is ready: open ${url}#key=${key}
   - pick a user, then like (l) or skip (s) films, move with j / k, undo with u;
   - "Your activity" lists what you liked and skipped, each with undo;
   - the feed re-scores on your device and keeps working offline: what you do while the server
     is away waits on the device and is sent once it is back;
   - the API: curl -H 'Authorization: Bearer ${key}' '${url}v1/feed?user=1&k=10'
   Ctrl-C stops the server.
EOF
wait $server
