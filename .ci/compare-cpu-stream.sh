#!/usr/bin/env bash
# The streaming path (small batches) against the read bandwidth, in one run: Q = 1, 2, 4,
# 8, 12, 15 over N = 200k rows at D = 384 and 768, at the CPU's best level and with
# HYBRIDVEC_SIMD=avx2, next to the machine's ceilings (the read bandwidth measured again
# before every round and dimension) and simsimd's cdist and numpy at
# Q = 1. Rounds alternate hybridvec and the peers; the Q = 1 ratio is the median of the
# rounds' ratios, because these machines' bandwidth moves by tens of percent within minutes.
# Prints a markdown table. Usage: bash .ci/compare-cpu-stream.sh [ROUNDS]   (not part of CI)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
py=$(bash ../shared/bench/setup-peers.sh | tail -n 1)
cargo build --release -q
out=$(mktemp -d)
bash scripts/cpu-ceilings.sh "$py" >"$out/ceilings.json"
best=$(./target/release/hybridvec info --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["simd"])')
for round in $(seq "$rounds"); do
  for d in 384 768; do
    # The bandwidth of this moment, for this round's roofline: it moves within minutes.
    cargo run --release -q --example read_bandwidth -- --mib 1024 |
      python3 -c "import json,sys; r=json.load(sys.stdin); r['round']=$round; r['dim']=$d; print(json.dumps(r))" >>"$out/bw.jsonl"
    for q in 1 2 4 8 12 15; do
      for level in "$best" avx2; do
        HYBRIDVEC_SIMD=${level%%+*} ./target/release/hybridvec bench --queries "$q" \
          --corpus 200000 --dim "$d" --k 10 --repeat 15 --json |
          python3 -c "import json,sys; r=json.load(sys.stdin); r['round']=$round; r['level']='$level'; print(json.dumps(r))" >>"$out/ours.jsonl"
      done
    done
    PEERS=simsimd,numpy REPS=15 "$py" ../shared/bench/peers.py "1x200000x${d}k10" |
      python3 -c "import json,sys; [print(json.dumps({**json.loads(l), 'round': $round})) for l in sys.stdin]" >>"$out/peers.jsonl"
  done
done
python3 - "$out" "$best" <<'PY'
import json, sys, statistics as st
d, best = sys.argv[1], sys.argv[2]
ceil = json.load(open(f"{d}/ceilings.json"))
ours = [json.loads(l) for l in open(f"{d}/ours.jsonl")]
round_bw = {(b["round"], b["dim"]): b["read_gbps_all_threads"] for b in map(json.loads, open(f"{d}/bw.jsonl"))}
peers = [json.loads(l) for l in open(f"{d}/peers.jsonl")]
bw = ceil["read_gbps_all_threads"]
rbws = sorted(round_bw.values())
print(f"CPU flags: {ceil['cpu_flags']}. Ceilings in this run: read bandwidth {bw:.1f} GB/s on "
      f"{ceil['threads']} threads ({ceil['read_gbps_1_thread']:.1f} on 1) at the start, "
      f"{rbws[0]:.1f}–{rbws[-1]:.1f} GB/s before the rounds; SGEMM {ceil['sgemm_gflops']:.0f} GFLOP/s. "
      "Percentages: the median over the rounds of each round against the bandwidth measured just before it.")
print()
# The roofline: the corpus read at the read bandwidth, or the FLOPs at the SGEMM rate,
# whichever takes longer; from about Q = 8 on a fast-memory moment, the FLOPs do.
print(f"| D | Q | {best} ms | GB/s (% of read BW) | % of roofline | avx2 ms | GB/s (% of read BW) | % of roofline |")
print("|---|---|---|---|---|---|---|---|")
for dim in (384, 768):
    for q in (1, 2, 4, 8, 12, 15):
        cells = []
        for level in (best, "avx2"):
            rs = [r for r in ours if r["dim"] == dim and r["queries"] == q and r["level"] == level]
            t = st.median(r["median_secs"] for r in rs)
            gb = st.median(r["gbps"] for r in rs)
            # Each round against the bandwidth measured just before it; the median of those.
            def roof(r):
                rbw = round_bw[(r["round"], dim)]
                return max(200_000 * dim * 4 / (rbw * 1e9), 2 * q * 200_000 * dim / (ceil["sgemm_gflops"] * 1e9))
            share_bw = st.median(100 * r["gbps"] / round_bw[(r["round"], dim)] for r in rs)
            share_roof = st.median(100 * roof(r) / r["median_secs"] for r in rs)
            cells += [f"{t*1e3:.2f}", f"{gb:.1f} ({share_bw:.0f}%)", f"{share_roof:.0f}%"]
        print(f"| {dim} | {q} | " + " | ".join(cells) + " |")
print()
print("| Q × N × D | hybridvec ms | simsimd cdist ms (ratio) | numpy ms (ratio) |")
print("|---|---|---|---|")
for dim in (384, 768):
    mine = {r["round"]: r["median_secs"] for r in ours if r["dim"] == dim and r["queries"] == 1 and r["level"] == best}
    row = [f"1 × 200 000 × {dim}", f"{st.median(mine.values())*1e3:.2f}"]
    for name in ("simsimd", "numpy"):
        ps = {p["round"]: p["secs"] for p in peers if p["d"] == dim and p["peer"].startswith(name)}
        ratios = [ps[k] / mine[k] for k in ps if k in mine]
        row.append(f"{st.median(ps.values())*1e3:.2f} ({st.median(ratios):.2f}×)" if ratios else "n/a")
    print("| " + " | ".join(row) + " |")
PY
