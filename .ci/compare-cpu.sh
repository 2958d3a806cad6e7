#!/usr/bin/env bash
# Measures hybridvec against the CPU peers (numpy/OpenBLAS, faiss-cpu, simsimd, usearch) on
# the public workloads, in one run on the same machine, and prints a markdown table of
# medians and ratios (peer time / hybridvec time: above 1 means hybridvec is faster).
# Peers and hybridvec each draw seeded standard-normal data of the same shapes.
# Usage: bash .ci/compare-cpu.sh [REPEAT]   (not part of CI: it takes a few minutes)
set -euo pipefail
cd "$(dirname "$0")/.."
repeat=${1:-7}
py=$(bash ../shared/bench/setup-peers.sh | tail -n 1)
cargo build --release -q
out=$(mktemp -d)
# The machine's ceilings, in the same run (scripts/cpu-ceilings.sh).
bash scripts/cpu-ceilings.sh "$py" >"$out/ceilings.json"
for q in 1 64 1024; do
  ./target/release/hybridvec bench --queries "$q" --corpus 100000 --dim 768 --k 10 \
    --repeat "$repeat" --json >>"$out/ours.jsonl"
  REPS=$repeat "$py" ../shared/bench/peers.py "${q}x100000x768k10" >>"$out/peers.jsonl"
done
python3 - "$out" <<'PY'
import json, sys
d = sys.argv[1]
ours = {r["queries"]: r for r in map(json.loads, open(f"{d}/ours.jsonl"))}
peers = {}
for r in map(json.loads, open(f"{d}/peers.jsonl")):
    peers.setdefault(r["q"], {})[r["peer"].split()[0]] = r["secs"]
names = {1: "single", 64: "small-batch", 1024: "large-batch"}
cols = ["numpy-openblas", "faiss-cpu", "simsimd", "usearch"]
ceil = json.load(open(f"{d}/ceilings.json"))
print(f"CPU flags: {ceil['cpu_flags']}. Ceilings measured in this run: SGEMM (numpy, 4096³) "
      f"{ceil['sgemm_gflops']:.0f} GFLOP/s; read bandwidth {ceil['read_gbps_1_thread']:.1f} GB/s "
      f"on 1 thread, {ceil['read_gbps_all_threads']:.1f} GB/s on {ceil['threads']}.")
print()
print("| workload | hybridvec ms | GFLOP/s (% of SGEMM) | GB/s (% of read bandwidth) | peak RSS MiB | "
      + " | ".join(f"{c} ms (ratio)" for c in cols) + " |")
print("|---" * (5 + len(cols)) + "|")
for q, r in sorted(ours.items()):
    t = r["median_secs"]
    cells = []
    for c in cols:
        s = peers.get(q, {}).get(c)
        cells.append("n/a" if s is None else f"{s*1e3:.1f} ({s/t:.2f}×)")
    rss = (r.get("peak_rss_bytes") or 0) / 2**20
    gf = f"{r['gflops']:.0f} ({100 * r['gflops'] / ceil['sgemm_gflops']:.0f}%)"
    bw = f"{r['gbps']:.1f} ({100 * r['gbps'] / ceil['read_gbps_all_threads']:.0f}%)"
    print(f"| {names[q]} {q}×100k×768 | {t*1e3:.1f} | {gf} | {bw} | {rss:.0f} | " + " | ".join(cells) + " |")
PY
