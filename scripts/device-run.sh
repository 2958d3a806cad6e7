#!/usr/bin/env bash
# The GPU verification run, in stages that each keep to their share of a lent device's
# time, and its rehearsal on the emulated driver.
#
#   bash scripts/device-run.sh prepare    # here: build, pack the binaries into device-carry/
#   run(command="bash scripts/device-run.sh run", carry=["device-carry"], timeout_s=560)
#   bash scripts/device-run.sh rehearse   # here: `run` on the emulated driver, from a copy
#   run(command="bash scripts/device-run.sh grid", carry=["device-carry"])   # the auto grid
#
# `run` goes in five stages, each under `timeout`, about 8 minutes in all (HV_STAGE_SCALE
# multiplies every limit). Each stage writes to $OUT as it goes, so a run cut short still
# returns what it measured; summary.jsonl gets one line per stage as it ends (ok, failed,
# timed_out) with its seconds.
#   1. device     20 s  nvidia-smi, `hybridvec info --json`      device.txt, info.json
#   2. tests     150 s  every carried test binary, `cuda` first  test-<name>.log, tests.jsonl
#   3. bench     160 s  `hybridvec bench --backend cuda --json`   bench-cuda.jsonl
#                       (batches: --gemm cublas and --gemm own)
#   4. criterion 100 s  the `cuda_` groups of benches top_k, cosine   criterion-<bench>.txt
#   5. peers      60 s  ../shared/bench/gpu_peers.py              gpu_peers.txt
# A SKIP line in the `cuda` tests or a skipped `cuda_` criterion group fails its stage:
# on the device they must run. (`cuda_emulated*` are not carried: they test the emulator,
# which CI runs.)
#
# `rehearse` runs `prepare`, builds the emulated driver (kernels/emu), copies the tree
# (tracked and untracked files, as the device gets them) and device-carry/ into a fresh
# directory, and runs `run` there with the driver preloaded (HV_PRELOAD), the emulated
# cuBLAS named by HYBRIDVEC_CUBLAS, and
# HV_REHEARSAL=1: small bench shapes, only the small `cuda` tests, the criterion groups
# listed but not timed, no peers (the emulator runs every GPU thread as a fiber on the
# CPU). It proves the paths, the stages, the limits and the outputs, not GPU speed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
carry=device-carry
scale=${HV_STAGE_SCALE:-1}
rehearsal=${HV_REHEARSAL:-}

# Runs "$@" under `timeout` for $1 seconds, with the emulated driver preloaded when
# HV_PRELOAD names it; returns the command's status (124 when cut, or at once when no
# time is left).
limited() {
    local secs=$1
    shift
    if [ "$secs" -le 0 ]; then return 124; fi
    if [ -n "${HV_PRELOAD:-}" ]; then
        timeout --kill-after=5 "$secs" env LD_PRELOAD="$HV_PRELOAD" "$@"
    else
        timeout --kill-after=5 "$secs" "$@"
    fi
}

# Appends one stage's line to summary.jsonl.
# Unpacks the binaries `prepare` packed into $carry/bundle.tar.xz, in place. Python's
# tarfile reads xz wherever python3 runs (the device may lack the xz tool).
unpack_carry() {
    [ -f "$carry/bundle.tar.xz" ] || { echo "no $carry/bundle.tar.xz: run 'prepare' and carry $carry" >&2; exit 2; }
    python3 -c 'import sys, tarfile
kw = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
tarfile.open(sys.argv[1]).extractall(sys.argv[2], **kw)' \
        "$carry/bundle.tar.xz" "$carry"
    [ -x "$carry/hybridvec" ] || { echo "the bundle holds no hybridvec" >&2; exit 2; }
}

stage_done() { # name status started
    printf '{"stage": "%s", "status": "%s", "secs": %d}\n' "$1" "$2" $((SECONDS - $3)) |
        tee -a "$out/summary.jsonl"
}

status_of() { # exit code -> ok | timed_out | failed
    case "$1" in 0) echo ok ;; 124 | 137) echo timed_out ;; *) echo failed ;; esac
}

stage_device() {
    local t0=$SECONDS st=ok
    if command -v nvidia-smi >/dev/null; then
        limited $((10 * scale)) nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv \
            >"$out/device.txt" 2>&1 || st=failed
    else
        echo "nvidia-smi: not found" >"$out/device.txt"
    fi
    cat "$out/device.txt"
    limited $((10 * scale)) "$carry/hybridvec" info --json >"$out/info.json" 2>"$out/info.err" || st=failed
    cat "$out/info.json"
    # cuBLAS: when the backend's own search finds none, the one PyTorch brings (its wheels'
    # nvidia/*/lib, or torch/lib), named by HYBRIDVEC_CUBLAS for every later stage.
    if [ -z "${HYBRIDVEC_CUBLAS:-}" ] && ! grep -q 'GEMM: cuBLAS' "$out/info.json" &&
        command -v python3 >/dev/null; then
        local found
        found=$(python3 -c 'import glob, os, sys
hits = [h for p in sys.path for pat in ("nvidia/*/lib/libcublas.so*", "torch/lib/libcublas.so*")
        for h in sorted(glob.glob(os.path.join(p, pat)))]
print(hits[0] if hits else "")' 2>/dev/null || true)
        if [ -n "$found" ]; then
            export HYBRIDVEC_CUBLAS=$found
            echo "HYBRIDVEC_CUBLAS=$found" | tee -a "$out/device.txt"
            limited $((10 * scale)) "$carry/hybridvec" info --json >"$out/info.json" 2>>"$out/info.err" || st=failed
            cat "$out/info.json"
        fi
    fi
    stage_done device "$st" "$t0"
}

stage_tests() {
    local t0=$SECONDS limit=$((150 * scale)) st=ok
    local bins=("$carry/tests/cuda" "$carry/tests/dispatch" "$carry/tests/cli" "$carry/tests/api")
    for t in "$carry"/tests/*; do
        case " ${bins[*]} " in *" $t "*) ;; *) bins+=("$t") ;; esac
    done
    for t in "${bins[@]}"; do
        [ -x "$t" ] || continue
        local name left args=() rc=0 t1=$SECONDS
        name=$(basename "$t")
        left=$((limit - (SECONDS - t0)))
        if [ -n "$rehearsal" ]; then
            # The emulator runs the small tests only; the rest are sized for a GPU.
            case "$name" in
            cuda) args=(cosine_matches_the_f64_reference deleted_store_rows_are_skipped) ;;
            cli) args=(--skip demo_runs_the_four_workloads) ;;
            esac
        fi
        limited "$left" "$t" "${args[@]}" >"$out/test-$name.log" 2>&1 || rc=$?
        local s
        s=$(status_of "$rc")
        if [ "$name" = cuda ] && grep -q SKIP "$out/test-$name.log"; then
            s=skipped_on_device
        fi
        local result
        result=$(grep -h "^test result" "$out/test-$name.log" | tail -n 1 | tr -d '"' || true)
        printf '{"binary": "%s", "status": "%s", "secs": %d, "result": "%s"}\n' \
            "$name" "$s" $((SECONDS - t1)) "$result" | tee -a "$out/tests.jsonl"
        [ "$s" = ok ] || st=failed
        if [ "$s" = timed_out ]; then st=timed_out && break; fi
    done
    stage_done tests "$st" "$t0"
}

stage_bench() {
    local t0=$SECONDS limit=$((160 * scale)) st=ok shapes repeat=20
    # Batches of more than 8 queries run both ways: cuBLAS's GEMM and the own kernels.
    if [ -n "$rehearsal" ]; then
        # The emulator takes seconds a call: a few small calls.
        shapes=("1 4000 32 10 fp32 measured" "4 2000 32 10 fp16 measured" "40 1000 32 10 tf32 own"
            "40 1000 32 10 tf32 cublas" "40 1000 32 10 bf16 cublas" "2 1500 32 1024 fp32 measured")
        repeat=2
    else
        shapes=("1 1000000 768 10 fp32 measured" "1 1000000 768 10 fp16 measured"
            "1 100000 768 10 fp32 measured"
            "1024 1000000 768 10 fp32 cublas" "1024 1000000 768 10 fp32 own"
            "1024 1000000 768 10 tf32 cublas" "1024 1000000 768 10 tf32 own"
            "1024 1000000 768 10 fp16 cublas" "1024 1000000 768 10 fp16 own"
            "1024 1000000 768 10 bf16 cublas" "1024 1000000 768 10 bf16 own"
            "1024 1000000 768 1024 fp32 cublas" "1024 1000000 768 1024 fp32 own")
    fi
    for shape in "${shapes[@]}"; do
        local q n d k p g rc=0
        read -r q n d k p g <<<"$shape"
        limited $((limit - (SECONDS - t0))) "$carry/hybridvec" bench --backend cuda --json \
            --queries "$q" --corpus "$n" --dim "$d" --k "$k" --precision "$p" --gemm "$g" \
            --repeat "$repeat" \
            >>"$out/bench-cuda.jsonl" 2>>"$out/bench-cuda.err" || rc=$?
        tail -n 1 "$out/bench-cuda.jsonl"
        if [ "$rc" -ne 0 ]; then
            st=$(status_of "$rc")
            printf '{"failed": "%s", "status": "%s"}\n' "$shape" "$st" >>"$out/bench-cuda.jsonl"
            [ "$st" = timed_out ] && break
        fi
    done
    stage_done bench "$st" "$t0"
}

stage_criterion() {
    local t0=$SECONDS limit=$((100 * scale)) st=ok
    for bench in top_k cosine; do
        local rc=0 log="$out/criterion-$bench.txt"
        if [ -n "$rehearsal" ]; then
            # Listed, not timed: on the emulator a measurement would take hours.
            limited $((30 * scale)) "$carry/benches/$bench" --bench --list cuda_ >"$log" 2>&1 || rc=$?
            grep -q "^cuda_" "$log" || rc=1
        else
            # Shorter than criterion's 3 s + 5 s per benchmark, so both files fit.
            limited $((limit - (SECONDS - t0))) "$carry/benches/$bench" --bench cuda_ \
                --warm-up-time 1 --measurement-time 3 \
                >"$log" 2>&1 || rc=$?
            grep -q "^SKIP" "$log" && rc=1
        fi
        grep -E "^cuda_|time:" "$log" || true
        [ "$rc" -eq 0 ] || st=$(status_of "$rc")
        [ "$st" = timed_out ] && break
    done
    stage_done criterion "$st" "$t0"
}

stage_peers() {
    local t0=$SECONDS st=ok peers=""
    for p in ../shared/bench/gpu_peers.py shared/bench/gpu_peers.py; do
        [ -f "$p" ] && peers=$p && break
    done
    if [ -n "$rehearsal" ]; then
        echo "rehearsal: gpu_peers.py needs torch on a GPU; not run" | tee "$out/gpu_peers.txt"
    elif [ -z "$peers" ]; then
        echo "gpu_peers.py not found" | tee "$out/gpu_peers.txt"
        st=failed
    else
        local rc=0
        limited $((60 * scale)) python3 "$peers" >"$out/gpu_peers.txt" 2>&1 || rc=$?
        # The BF16 row, which gpu_peers.py leaves out, the same way.
        [ "$rc" -eq 0 ] && { limited $((30 * scale)) python3 scripts/torch_bf16.py "$(dirname "$peers")" \
            >>"$out/gpu_peers.txt" 2>&1 || rc=$?; }
        cat "$out/gpu_peers.txt"
        st=$(status_of "$rc")
    fi
    stage_done peers "$st" "$t0"
}

case "${1:-}" in
prepare)
    cargo build --release
    cargo test --release --no-run --message-format=json 2>/dev/null |
        python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"] \
            and m["target"]["kind"] == ["test"] and not m["target"]["name"].startswith("cuda_emulated"):
        print(m["target"]["name"], m["executable"])' >target/hv-test-bins
    cargo bench --bench top_k --bench cosine --no-run --message-format=json 2>/dev/null |
        python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] in ("top_k", "cosine"):
        print(m["target"]["name"], m["executable"])' >target/hv-bench-bins
    # Every binary embeds the kernel images (about 9 MB), so the unpacked set is about
    # 160 MB, far over the 64 MiB a device call carries with the tree: it travels as one
    # xz tarball (about 20 MB) that `run` unpacks in place.
    bundle=target/device-bundle
    rm -rf "$bundle" "$carry" && mkdir -p "$bundle/tests" "$bundle/benches" "$carry"
    cp target/release/hybridvec "$bundle/"
    while read -r name bin; do cp "$bin" "$bundle/tests/$name"; done <target/hv-test-bins
    while read -r name bin; do cp "$bin" "$bundle/benches/$name"; done <target/hv-bench-bins
    strip -s "$bundle"/hybridvec "$bundle"/tests/* "$bundle"/benches/*
    tar -C "$bundle" -cf - . | xz -T0 -6 >"$carry/bundle.tar.xz"
    tree=$(git ls-files -co --exclude-standard -z | xargs -0 du -cb | tail -n 1 | cut -f1)
    packed=$(stat -c %s "$carry/bundle.tar.xz")
    echo "device-carry/bundle.tar.xz: $((packed >> 20)) MiB ($(du -sh "$bundle" | cut -f1) unpacked); tree $((tree >> 20)) MiB"
    if [ $((packed + tree)) -gt $((60 << 20)) ]; then
        echo "the tree and the bundle exceed the 64 MiB a device call carries" >&2
        exit 1
    fi
    ;;
run)
    out="${OUT:-/tmp/hv-out}"
    mkdir -p "$out"
    unpack_carry
    stage_device
    stage_tests
    stage_bench
    stage_criterion
    stage_peers
    ! grep -qv '"status": "ok"' "$out/summary.jsonl"
    ;;
rehearse)
    bash "$0" prepare
    mkdir -p target/emulated-driver
    driver=$PWD/target/emulated-driver/libcuda.so.1
    "${CXX:-c++}" -std=c++17 -O2 -shared -fPIC -pthread -U_FORTIFY_SOURCE \
        -Wl,-soname,libcuda.so.1 -o "$driver" kernels/emu/emu.cpp kernels/emu/driver.cpp
    # The emulated cuBLAS, named as a device run would name PyTorch's.
    cublas=$PWD/target/emulated-driver/libcublas.so.13
    "${CXX:-c++}" -std=c++17 -O2 -shared -fPIC -pthread -Wl,-soname,libcublas.so.13 \
        -o "$cublas" kernels/emu/cublas.cpp -ldl
    dir=$(mktemp -d "${TMPDIR:-/tmp}/hv-rehearsal.XXXXXX")
    git ls-files -co --exclude-standard -z | tar --null -T - -cf - | tar -xf - -C "$dir"
    cp -r "$carry" "$dir/"
    echo "rehearsal in $dir (outputs in $dir/out)"
    rc=0
    (cd "$dir" && OUT="$dir/out" HV_REHEARSAL=1 HV_PRELOAD="$driver" HYBRIDVEC_CUBLAS="$cublas" \
        HV_STAGE_SCALE="${HV_STAGE_SCALE:-3}" bash scripts/device-run.sh run) || rc=$?
    echo "rehearsal: exit $rc; outputs in $dir/out"
    exit "$rc"
    ;;
grid)
    # The hybrid choice on the device: every cell of Q × N (D = 768, k = 10) timed under
    # auto, cpu-only and cuda-only in the same call, one JSON line each, into $OUT.
    out="${OUT:-/tmp/hv-out}"
    mkdir -p "$out"
    unpack_carry
    for n in 1000 10000 100000 1000000; do
        for q in 1 16 128 1024 4096; do
            for backend in auto cpu cuda; do
                limited 60 "$carry/hybridvec" bench --json --backend "$backend" --queries "$q" \
                    --corpus "$n" --dim 768 --k 10 --repeat 5 >>"$out/grid.jsonl" ||
                    echo "{\"failed\": \"$backend Q=$q N=$n\"}" >>"$out/grid.jsonl"
            done
        done
    done
    wc -l "$out/grid.jsonl"
    ;;
*)
    echo "usage: $0 prepare|run|rehearse|grid" >&2
    exit 2
    ;;
esac
