#!/usr/bin/env bash
# The GPU verification run in one device call.
#
#   bash scripts/device-run.sh prepare   # here: build, copy the binaries into device-carry/
#   run(command="bash scripts/device-run.sh run", carry=["device-carry"])   # on the device
#   run(command="bash scripts/device-run.sh grid", carry=["device-carry"])  # the auto grid
#
# `run` executes every test binary (a SKIP line in a CUDA test fails the run), then
# `hybridvec bench --backend cuda --json` on the public GPU workloads (FP32, TF32, FP16,
# k=1024),
# the `cuda_*` groups of the criterion benches `top_k` and `cosine` (a SKIP line there
# fails the run too), then ../shared/bench/gpu_peers.py on the same shapes, all in the
# same call; logs go to $OUT.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
carry=device-carry
case "${1:-}" in
prepare)
    cargo build --release
    cargo test --release --no-run --message-format=json 2>/dev/null |
        python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]:
        print(m["executable"])' >/tmp/hv-test-bins
    cargo bench --bench top_k --bench cosine --no-run --message-format=json 2>/dev/null |
        python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] in ("top_k", "cosine"):
        print(m["target"]["name"], m["executable"])' >/tmp/hv-bench-bins
    rm -rf "$carry" && mkdir -p "$carry/tests" "$carry/benches"
    cp target/release/hybridvec "$carry/"
    while read -r bin; do cp "$bin" "$carry/tests/"; done </tmp/hv-test-bins
    while read -r name bin; do cp "$bin" "$carry/benches/$name"; done </tmp/hv-bench-bins
    strip --strip-debug "$carry"/hybridvec "$carry"/tests/* "$carry"/benches/* 2>/dev/null || true
    du -sh "$carry"
    ;;
run)
    out="${OUT:-/tmp/hv-out}"
    mkdir -p "$out"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/device.txt"
    status=0
    for t in "$carry"/tests/*; do
        name=$(basename "$t")
        if ! "$t" --test-threads=2 >"$out/test-$name.log" 2>&1; then
            echo "FAIL $name"; status=1
        fi
        if [ "${name%%-*}" = cuda ] && grep -q SKIP "$out/test-$name.log"; then
            echo "FAIL $name skipped on the device"; status=1
        fi
        tail -n 3 "$out/test-$name.log" | grep "test result" | sed "s/^/$name: /" || true
    done
    "$carry/hybridvec" info --json | tee "$out/info.json"
    for shape in "1 1000000 10 fp32" "1 1000000 10 fp16" "1 100000 10 fp32" \
        "1024 1000000 10 fp32" "1024 1000000 10 tf32" "1024 1000000 10 fp16" \
        "1024 1000000 1024 fp32"; do
        set -- $shape
        "$carry/hybridvec" bench --backend cuda --json --queries "$1" --corpus "$2" --k "$3" \
            --precision "$4" --repeat 20 | tee -a "$out/bench-cuda.jsonl"
    done
    for bench in top_k cosine; do
        # Only the cuda_ groups (the CPU ones would add minutes); each group checks that
        # its calls ran on the GPU before timing them.
        "$carry/benches/$bench" --bench cuda_ 2>&1 | tee "$out/criterion-$bench.txt" |
            grep -E "^cuda_|time:" || status=1
        if grep -q "^SKIP" "$out/criterion-$bench.txt"; then
            echo "FAIL criterion $bench skipped cuda groups on the device"; status=1
        fi
    done
    if [ -f ../shared/bench/gpu_peers.py ]; then
        python3 ../shared/bench/gpu_peers.py 2>&1 | tee "$out/gpu_peers.txt" || status=1
    elif [ -f shared/bench/gpu_peers.py ]; then
        python3 shared/bench/gpu_peers.py 2>&1 | tee "$out/gpu_peers.txt" || status=1
    else
        echo "gpu_peers.py not found" | tee "$out/gpu_peers.txt"
    fi
    exit $status
    ;;
grid)
    # The hybrid choice on the device: every cell of Q × N (D = 768, k = 10) timed under
    # auto, cpu-only and cuda-only in the same call, one JSON line each, into $OUT.
    out="${OUT:-/tmp/hv-out}"
    mkdir -p "$out"
    for n in 1000 10000 100000 1000000; do
        for q in 1 16 128 1024 4096; do
            for backend in auto cpu cuda; do
                "$carry/hybridvec" bench --json --backend "$backend" --queries "$q" \
                    --corpus "$n" --dim 768 --k 10 --repeat 5 >>"$out/grid.jsonl" ||
                    echo "{\"failed\": \"$backend Q=$q N=$n\"}" >>"$out/grid.jsonl"
            done
        done
    done
    wc -l "$out/grid.jsonl"
    ;;
*)
    echo "usage: $0 prepare|run|grid" >&2
    exit 2
    ;;
esac
