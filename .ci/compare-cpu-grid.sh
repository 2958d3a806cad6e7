#!/usr/bin/env bash
# hybridvec against the best CPU peer over a grid of shapes beyond the public workloads:
# Q 1–4096, N 10k–1M, D 64–4096, k 1–1024, all in one run, with the machine's ceilings.
# Prints a markdown table: hybridvec's median, the best peer's, and their ratio (peer time /
# hybridvec time: above 1 means hybridvec is faster). numpy and faiss select a top-k;
# simsimd's cdist only scores (it is a lower bound on a peer that would also select).
# Usage: bash .ci/compare-cpu-grid.sh [REPEAT]   (not part of CI: about 2 minutes at REPEAT=3, 4 at 5)
set -euo pipefail
cd "$(dirname "$0")/.."
repeat=${1:-3}
py=$(bash ../shared/bench/setup-peers.sh | tail -n 1)
cargo build --release -q
out=$(mktemp -d)
bash scripts/cpu-ceilings.sh "$py" >"$out/ceilings.json"
# Q N D k
shapes="1 1000000 128 10
1 200000 384 10
1 200000 768 10
4 100000 768 10
12 200000 384 10
8 500000 64 10
16 100000 1024 100
32 50000 4096 10
128 100000 256 10
256 10000 768 1
512 200000 128 1000
1024 10000 64 1024
2048 50000 384 100
4096 10000 768 10
15 10000 64 1024"
while read -r q n d k; do
  # Short calls get more runs (the same for every contender): a median of a handful of
  # sub-millisecond calls measures thread wake-ups more than the work.
  reps=$(( 2000000000 / (q * n * d) ))
  reps=$(( reps > 400 ? 400 : (reps < repeat ? repeat : reps) ))
  ./target/release/hybridvec bench --queries "$q" --corpus "$n" --dim "$d" --k "$k" \
    --repeat "$reps" --json >>"$out/ours.jsonl"
  PEERS=${PEERS:-numpy,faiss,simsimd} REPS=$reps "$py" ../shared/bench/peers.py \
    "${q}x${n}x${d}k${k}" >>"$out/peers.jsonl"
done <<<"$shapes"
python3 - "$out" <<'PY'
import json, sys
d = sys.argv[1]
ceil = json.load(open(f"{d}/ceilings.json"))
key = lambda r: (r["queries"], r["corpus"], r["dim"], r["k"])
ours = {key(r): r for r in map(json.loads, open(f"{d}/ours.jsonl"))}
peers = {}
for r in map(json.loads, open(f"{d}/peers.jsonl")):
    peers.setdefault((r["q"], r["n"], r["d"], r["k"]), []).append(r)
print(f"CPU flags: {ceil['cpu_flags']}. Ceilings in this run: SGEMM {ceil['sgemm_gflops']:.0f} GFLOP/s, "
      f"read bandwidth {ceil['read_gbps_all_threads']:.1f} GB/s on {ceil['threads']} threads.")
print()
print("| Q × N × D, k | hybridvec ms | GFLOP/s (% SGEMM) | GB/s (% read BW) | best peer | peer ms | ratio |")
print("|---|---|---|---|---|---|---|")
for s, r in ours.items():
    t = r["median_secs"]
    best = min(peers.get(s, []), key=lambda p: p["secs"], default=None)
    name = best["peer"].split(" (")[0] if best else "n/a"
    ps = f"{best['secs']*1e3:.1f}" if best else "n/a"
    ratio = f"{best['secs']/t:.2f}×" if best else "n/a"
    print(f"| {s[0]}×{s[1]}×{s[2]}, k={s[3]} | {t*1e3:.1f} | {r['gflops']:.0f} "
          f"({100*r['gflops']/ceil['sgemm_gflops']:.0f}%) | {r['gbps']:.1f} "
          f"({100*r['gbps']/ceil['read_gbps_all_threads']:.0f}%) | {name} | {ps} | {ratio} |")
PY
