#!/usr/bin/env python3
"""Compiles kernels/*.cu to PTX with NVRTC (PyPI's nvidia-cuda-nvrtc-cu12), and checks them.

  kernels.py generate   write kernels/ptx/<name>.ptx (checked in: the build's no-nvcc path)
  kernels.py check      fail if a checked-in PTX differs from what the sources give now
  kernels.py ptxas      assemble every PTX for sm_80 and sm_90 with ptxas -v; fail on
                        spilled registers (every kernel is hot), an assembler error, or a
                        checked-in cubin that differs from what ptxas gives now
  kernels.py cubins     write kernels/cubin/<name>.sm_80.cubin and .sm_90.cubin (checked
                        in and embedded: a device of those architectures loads them
                        without a JIT; the PTX stays the fallback for newer ones)
  kernels.py sass       disassemble the checked-in cubins (nvdisasm, PyPI's
                        nvidia-cuda-nvdisasm) and fail unless every kernel of
                        SASS_VECTOR_LOADS reads shared memory with at least that many
                        vector loads (the operand reads of its hot loop), and the tensor-core
                        tiles fill it by cp.async; print every kernel's shared loads

The PTX targets compute_80, so it runs on sm_80 and newer, JIT-compiled by the driver.
NVRTC 12.0 is pinned (PTX ISA 8.0) so that every CUDA 12.x or 13.x driver can load it.
"""
import ctypes
import glob
import os
import re
import shutil
import subprocess
import tempfile
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KERNELS = os.path.join(ROOT, "kernels")
PTX_DIR = os.path.join(KERNELS, "ptx")
CUBIN_DIR = os.path.join(KERNELS, "cubin")
CUBIN_ARCHS = ("sm_80", "sm_90")
ARCH = "compute_80"
OPTIONS = [f"--gpu-architecture={ARCH}", "--std=c++17", "-lineinfo",
           "--fmad=true"]


def site_packages():
    import nvidia  # the namespace package the wheels install into
    return [p for p in nvidia.__path__]


def find(pattern):
    for base in site_packages():
        hits = sorted(glob.glob(os.path.join(base, pattern)))
        if hits:
            return hits[0]
    sys.exit(f"not found: {pattern} (pip install nvidia-cuda-nvrtc-cu12==12.0.140 nvidia-cuda-nvcc-cu12)")


def nvrtc():
    lib = ctypes.CDLL(find("cuda_nvrtc/lib/libnvrtc.so*"))
    lib.nvrtcGetErrorString.restype = ctypes.c_char_p
    return lib


def compile_ptx(lib, path):
    src = open(path, "rb").read()
    headers = sorted(glob.glob(os.path.join(KERNELS, "*.cuh")))
    hdr_src = [open(h, "rb").read() for h in headers]
    hdr_names = [os.path.basename(h).encode() for h in headers]
    prog = ctypes.c_void_p()
    n = len(headers)
    check(lib, lib.nvrtcCreateProgram(ctypes.byref(prog), src, os.path.basename(path).encode(), n,
                                      (ctypes.c_char_p * n)(*hdr_src), (ctypes.c_char_p * n)(*hdr_names)))
    opts = [o.encode() for o in OPTIONS]
    rc = lib.nvrtcCompileProgram(prog, len(opts), (ctypes.c_char_p * len(opts))(*opts))
    size = ctypes.c_size_t()
    lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
    log = ctypes.create_string_buffer(size.value)
    lib.nvrtcGetProgramLog(prog, log)
    text = log.value.decode(errors="replace").strip()
    if rc != 0:
        sys.exit(f"{path}: NVRTC failed:\n{text}")
    if text:
        print(f"{path}: {text}", file=sys.stderr)
    lib.nvrtcGetPTXSize(prog, ctypes.byref(size))
    ptx = ctypes.create_string_buffer(size.value)
    check(lib, lib.nvrtcGetPTX(prog, ptx))
    lib.nvrtcDestroyProgram(ctypes.byref(prog))
    # NVRTC writes the working directory into the line-info file names: keep only
    # kernels/<file>, so the PTX is the same from any checkout.
    return re.sub(r'(\.file\s+\d+\s+")[^"]*/([^"/]+)"', r'\1kernels/\2"', ptx.value.decode())


def check(lib, rc):
    if rc != 0:
        sys.exit("NVRTC: " + lib.nvrtcGetErrorString(rc).decode())


def sources():
    return sorted(glob.glob(os.path.join(KERNELS, "*.cu")))


def ptx_path(src):
    return os.path.join(PTX_DIR, os.path.basename(src)[:-3] + ".ptx")


def cubin_path(src, arch):
    return os.path.join(CUBIN_DIR, f"{os.path.basename(src)[:-3]}.{arch}.cubin")


# Kernels whose hot loop reads its operands from shared memory with vector loads, the
# load, and the least count of it that takes (after unrolling): the FP32 tiles read two
# LDS.128 per k of a 16-deep slice; the TF32 tiles one LDS.128 per fragment row (2 of A,
# 4 of B) for both k-steps of the slice, the FP16 and BF16 tiles one LDS.64 (two words)
# per fragment row; the memory-bound kernels read their staged queries as float4, for
# each of the 8 queries in the four-load round and the tail.
TILED_FP32 = ["hv_score_tiled", "hv_score_tiled_l2", "hv_topk_tiled", "hv_topk_tiled_l2",
              "hv_filter_tiled", "hv_filter_tiled_l2"]
# The same FP32 tiles over a corpus kept as stored in 16 bits (widened as staged).
TILED_FP32 += [f"hv_{f}_tiled_{a}_{h}" for f in ("score", "topk", "filter")
               for a in ("fp32", "l2") for h in ("f16", "bf16")]
TILED_TC = ["hv_score_tiled", "hv_topk_tiled", "hv_filter_tiled"]
SMALL_Q = ["hv_score_small_q", "hv_score_small_q_l2", "hv_topk_small_q", "hv_topk_small_q_l2",
           "hv_filter_small_q", "hv_filter_small_q_l2"]
# The tensor-core tiles also copy their operands global -> shared asynchronously (cp.async:
# LDGSTS), double-buffered: the TF32 ones both operands, the 16-bit ones the corpus rows;
# and multiply with the tensor-core instruction of their precision (HMMA, one per m16n8
# accumulator and k-step: BF16 ones must not fall back to FP16 or FP32 arithmetic).
SASS_VECTOR_LOADS = {
    **{k: [("LDS.128", 32)] for k in TILED_FP32},
    **{k + "_tf32": [("LDS.128", 6), ("LDGSTS", 2), ("HMMA.1688.F32.TF32", 8)] for k in TILED_TC},
    **{k + "_f16": [("LDS.64", 6), ("LDGSTS", 1), ("HMMA.16816.F32", 4)] for k in TILED_TC},
    **{k + "_bf16": [("LDS.64", 6), ("LDGSTS", 1), ("HMMA.16816.F32.BF16", 4)] for k in TILED_TC},
    **{k: [("LDS.128", 40)] for k in SMALL_Q},
    **{k.replace("_l2", "") + "_f16": [("LDS.128", 40)] for k in SMALL_Q if k.endswith("_l2")},
    **{k.replace("_l2", "") + "_bf16": [("LDS.128", 40)] for k in SMALL_Q if k.endswith("_l2")},
    **{k + h: [("LDS.128", 40)] for k in SMALL_Q if k.endswith("_l2") for h in ("_f16", "_bf16")},
}


def sass():
    nvdisasm = find("cu13/bin/nvdisasm")
    counts = {}  # (arch, function) -> {opcode: count}
    for src in sources():
        for arch in CUBIN_ARCHS:
            cubin = cubin_path(src, arch)
            r = subprocess.run([nvdisasm, "-c", cubin], capture_output=True, text=True)
            if r.returncode != 0:
                sys.exit(f"nvdisasm failed on {cubin}:\n{r.stderr}")
            func = None
            for line in r.stdout.splitlines():
                m = re.search(r"\.text\.(\w+)", line)
                if m:
                    func = m.group(1)
                    counts.setdefault((arch, func), {})
                m = re.search(r"\b(LDS(?:\.U?\d+)?|LDGSTS|HMMA(?:\.\w+)+)", line)
                if m and func:
                    c = counts[(arch, func)]
                    c[m.group(1)] = c.get(m.group(1), 0) + 1
    bad = []
    for (arch, func), c in sorted(counts.items()):
        loads = ", ".join(f"{n} {op}" for op, n in sorted(c.items())) or "no shared loads"
        print(f"{arch} {func}: {loads}")
        for op, least in SASS_VECTOR_LOADS.get(func, []):
            if c.get(op, 0) < least:
                bad.append(f"{func} ({arch}): {c.get(op, 0)} {op}, want at least {least}")
    missing = [f for f in SASS_VECTOR_LOADS if not any(f == fn for _, fn in counts)]
    if missing:
        sys.exit("kernels to check not found in the cubins: " + ", ".join(missing))
    if bad:
        sys.exit("hot loops without vector shared loads, async copies or their tensor-core "
                 "instruction:\n  " + "\n  ".join(bad))
    print(f"sass: the {len(SASS_VECTOR_LOADS)} kernels checked read shared memory with vector loads "
          f"(LDS.128; 16-bit tiles LDS.64), the tensor-core tiles fill it by cp.async (LDGSTS) "
          f"and multiply with their precision's HMMA, on {' and '.join(CUBIN_ARCHS)}")


def main():
    mode = sys.argv[1] if len(sys.argv) > 1 else "check"
    if mode in ("generate", "check"):
        lib = nvrtc()
        version = (ctypes.c_int(), ctypes.c_int())
        lib.nvrtcVersion(ctypes.byref(version[0]), ctypes.byref(version[1]))
        print(f"NVRTC {version[0].value}.{version[1].value}, {ARCH}")
        stale = []
        for src in sources():
            ptx = compile_ptx(lib, src)
            out = ptx_path(src)
            if mode == "generate":
                os.makedirs(PTX_DIR, exist_ok=True)
                open(out, "w").write(ptx)
                print(f"wrote {os.path.relpath(out, ROOT)}")
            elif not os.path.exists(out) or open(out).read() != ptx:
                stale.append(os.path.relpath(out, ROOT))
            else:
                print(f"{os.path.relpath(out, ROOT)} matches {os.path.relpath(src, ROOT)}")
        if stale:
            sys.exit("stale PTX (run scripts/kernels.py generate): " + ", ".join(stale))
    elif mode in ("ptxas", "cubins"):
        ptxas = find("cuda_nvcc/bin/ptxas")
        r = subprocess.run([ptxas, "--version"], capture_output=True, text=True)
        print(r.stdout.strip().splitlines()[-1])
        bad = []
        stale = []
        os.makedirs(CUBIN_DIR, exist_ok=True)
        for src in sources():
            for arch in CUBIN_ARCHS:
                cubin = cubin_path(src, arch)
                fresh = cubin + ".new"
                # In an empty directory: ptxas writes the modification time of each source
                # file the line info names when it finds one, which differs per checkout.
                with tempfile.TemporaryDirectory() as work:
                    shutil.copy(ptx_path(src), work)
                    r = subprocess.run([ptxas, "-v", f"--gpu-name={arch}", os.path.basename(ptx_path(src)),
                                        "-o", os.path.abspath(fresh)],
                                       capture_output=True, text=True, cwd=work)
                report = r.stdout + r.stderr
                if r.returncode != 0:
                    sys.exit(f"ptxas failed on {src} for {arch}:\n{report}")
                if mode == "cubins":
                    os.replace(fresh, cubin)
                    print(f"wrote {os.path.relpath(cubin, ROOT)}")
                else:
                    same = os.path.exists(cubin) and open(cubin, "rb").read() == open(fresh, "rb").read()
                    os.remove(fresh)
                    if not same:
                        stale.append(os.path.relpath(cubin, ROOT))
                func = None
                for line in report.splitlines():
                    m = re.search(r"Compiling entry function '(\w+)'", line)
                    if m:
                        func = m.group(1)
                    m = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", line)
                    if m:
                        stores, loads = int(m.group(1)), int(m.group(2))
                        if stores or loads:
                            bad.append(f"{func} ({arch}): {stores} B spill stores, {loads} B spill loads")
                    m = re.search(r"Used (\d+) registers", line)
                    if m:
                        print(f"{arch} {func}: {line.split('info    : ')[-1].strip()}")
        if bad:
            sys.exit("register spills in hot kernels:\n  " + "\n  ".join(bad))
        print("ptxas: every kernel assembles for sm_80 and sm_90 with 0 spill bytes")
        if stale:
            sys.exit("stale cubins (run scripts/kernels.py cubins): " + ", ".join(stale))
        if mode == "ptxas":
            print("the checked-in cubins match the PTX")
    elif mode == "sass":
        sass()
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
