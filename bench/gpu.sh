#!/usr/bin/env bash
# GPU decoding, measured on a machine with a GPU (issue 16). It lists the adapters wgpu sees,
# builds the release binary (wgpu is in the default build), runs `onerec bench decode` on the GPU
# at beams 64, 256 and 512 for `small` and `base` over synthetic catalogues of 100k and 1M items,
# and on the CPU at beam 256 for the same settings, then prints one table: latency, throughput,
# achieved GFLOP/s and MFU on the GPU, and GPU over CPU throughput at beam 256.
#
#   bash bench/gpu.sh                 # PEAK_TFLOPS=67 to set the peak the MFU is quoted against
#
# Settings (environment): ONEREC (a built binary: skips the build), OUT (target/gpu-bench), PRESETS ("small base"), ITEMS (100000,1000000),
# BEAMS (64,256,512), REQUESTS (20), BATCH (16), PEAK_TFLOPS (else the known-devices table).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-target/gpu-bench}
PRESETS=${PRESETS:-small base}
ITEMS=${ITEMS:-100000,1000000}
BEAMS=${BEAMS:-64,256,512}
REQUESTS=${REQUESTS:-20}
BATCH=${BATCH:-16}
mkdir -p "$OUT"
echo "date: $(date -Is); host: $(nproc) cpus,$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-)" | tee "$OUT/meta.txt"

if [[ -z "${ONEREC:-}" ]]; then
  echo "== build (release, default features: wgpu)"
  start=$SECONDS
  cargo build --release --locked -p onerec-server 2>&1 | tail -2
  [[ ${PIPESTATUS[0]} -eq 0 ]] || { echo "the build failed"; exit 1; }
  echo "build: $((SECONDS - start)) s" | tee -a "$OUT/meta.txt"
  ONEREC=target/release/onerec
fi

echo "== adapters wgpu sees"
"$ONEREC" devices 2>&1 | grep -v XDG_RUNTIME_DIR | tee "$OUT/devices.txt"
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee -a "$OUT/meta.txt"
  if ! grep -qi nvidia "$OUT/devices.txt"; then
    # The usual cause is a driver installed without its Vulkan ICD: try the distribution's packages.
    echo "wgpu sees no NVIDIA adapter although nvidia-smi sees a GPU; trying to install the NVIDIA Vulkan ICD"
    major=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader | head -1 | cut -d. -f1)
    for pkg in "libnvidia-gl-$major" nvidia-vulkan-icd; do
      if DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$pkg" >"$OUT/apt-$pkg.log" 2>&1; then
        echo "installed $pkg"
        break
      fi
      echo "apt-get install $pkg failed: $(tail -1 "$OUT/apt-$pkg.log")"
    done
    "$ONEREC" devices 2>&1 | grep -v XDG_RUNTIME_DIR | tee "$OUT/devices.txt"
  fi
fi

peak=()
[[ -n "${PEAK_TFLOPS:-}" ]] && peak=(--peak-tflops "$PEAK_TFLOPS")
for preset in $PRESETS; do
  for device in gpu cpu; do
    beams=$([[ $device == gpu ]] && echo "$BEAMS" || echo 256)
    echo "== $preset on the $device: items $ITEMS, beams $beams"
    start=$SECONDS
    if "$ONEREC" bench decode --device "$device" --preset "$preset" --items "$ITEMS" --beams "$beams" \
      --requests "$REQUESTS" --batch "$BATCH" --json "${peak[@]}" >"$OUT/${device}_$preset.json" 2>"$OUT/${device}_$preset.err"; then
      echo "$((SECONDS - start)) s"
    else
      echo "failed: $(grep -v XDG_RUNTIME_DIR "$OUT/${device}_$preset.err" | tail -2)"
      rm -f "$OUT/${device}_$preset.json"
    fi
  done
done

python3 - "$OUT" $PRESETS <<'PY' | tee "$OUT/table.txt"
import json, os, sys
out, presets = sys.argv[1], sys.argv[2:]
load = lambda name: json.load(open(f"{out}/{name}.json")) if os.path.exists(f"{out}/{name}.json") else None
header = (f"{'preset':<6} {'items':>8} {'beam':>4} | {'p50 ms':>7} {'p99 ms':>7} {'req/s':>7} {'batch req/s':>11}"
          f" {'GFLOP/s':>8} {'MFU':>7} | {'cpu batch req/s':>15} {'gpu/cpu':>7}")
print(header)
print("-" * len(header))
for preset in presets:
    gpu, cpu = load(f"gpu_{preset}"), load(f"cpu_{preset}")
    if gpu is None:
        print(f"{preset:<6} no GPU run (see {out}/gpu_{preset}.err)")
        continue
    cpu_rows = {(r["items"], r["beam"]): r for r in (cpu or {"rows": []})["rows"] if r["method"] == "onerec"}
    for r in (r for r in gpu["rows"] if r["method"] == "onerec"):
        c = cpu_rows.get((r["items"], r["beam"]))
        mfu = "-" if r["mfu"] is None else f"{100 * r['mfu']:.2f}%"
        cpu_cells = (f"{c['batched_requests_per_s']:>15.1f} {r['batched_requests_per_s'] / c['batched_requests_per_s']:>6.1f}x"
                     if c else f"{'-':>15} {'-':>7}")
        print(f"{preset:<6} {r['items']:>8} {r['beam']:>4} | {r['p50_ms']:>7.2f} {r['p99_ms']:>7.2f}"
              f" {r['requests_per_s']:>7.1f} {r['batched_requests_per_s']:>11.1f} {r['batched_gflops_per_s']:>8.1f}"
              f" {mfu:>7} | {cpu_cells}")
devices = [load(f"{d}_{p}") for d in ("gpu", "cpu") for p in presets]
for d in {d["device"] for d in devices if d}:
    print("device:", d)
peaks = {d["peak_tflops"] for d in devices if d and d["peak_tflops"]}
print("MFU: batched GFLOP/s (analytic count) over a peak of", ", ".join(f"{p} TFLOP/s" for p in peaks) or "none known (set PEAK_TFLOPS)")
PY
