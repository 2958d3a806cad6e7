#!/usr/bin/env bash
# This machine's ceilings, measured now: the SGEMM rate (numpy/OpenBLAS from the peers'
# venv, 4096 x 4096 x 4096 f32, all cores) and the read bandwidth (a streaming sum over a
# 2 GiB buffer, on one thread and on all). Prints one JSON object. Run it in the same run
# as the benchmarks it is a ceiling for: these machines are shared, and their bandwidth
# in particular moves by tens of percent between runs.
# Usage: bash scripts/cpu-ceilings.sh [PYTHON]   (default: the venv of setup-peers.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
py=${1:-$(bash ../shared/bench/setup-peers.sh | tail -n 1)}
bw=$(cargo run --release -q --example read_bandwidth -- --mib 2048)
sgemm=$(env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE "$py" - <<'PY'
import time, numpy as np
n = 4096
rng = np.random.default_rng(1)
a = rng.standard_normal((n, n), dtype=np.float32)
b = rng.standard_normal((n, n), dtype=np.float32)
a @ b  # warm-up: thread pool, page faults
ts = []
for _ in range(5):
    t = time.perf_counter(); a @ b; ts.append(time.perf_counter() - t)
ts.sort()
print(f"{2 * n**3 / ts[2] / 1e9:.1f}")
PY
)
flags=$(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -E '^(avx2|fma|avx512f|avx512bw|avx512vl|avx512_vnni|avx512_bf16|avx_vnni)$' | sort | tr '\n' ',' | sed 's/,$//')
python3 - "$bw" "$sgemm" "$flags" <<'PY'
import json, sys
bw = json.loads(sys.argv[1])
bw["sgemm_gflops"] = float(sys.argv[2])
bw["cpu_flags"] = sys.argv[3]
print(json.dumps(bw))
PY
