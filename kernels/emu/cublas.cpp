// An emulated cuBLAS: the entry points hybridvec resolves (src/cuda/cublas.rs), with a
// host GEMM (hv_emu_gemm, emu.cpp) queued on the emulated driver's streams. Built by the
// tests into a library whose soname is CUDA 13's, "libcublas.so.13", and loaded after the
// emulated driver, so that the backend's search finds it by that name. Never shipped.
//
// It checks what a real cuBLAS would refuse (a handle without a stream, operations and
// types other than the ones the backend uses, leading dimensions too small), and runs the
// GEMM when the stream reaches it, so a result read before the stream's wait is garbage
// here as on a device. A workspace lent by cublasSetWorkspace is scribbled over by every
// GEMM before it computes, as a real one's split-K partial sums would: a workspace that
// overlaps a GEMM's operands or the program's other buffers corrupts the results, and
// one freed before the GEMM ran faults.

#include <dlfcn.h>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace {

typedef int (*EnqueueFn)(void* stream, int (*run)(void*), void* arg, void (*done)(void*));
typedef void (*GemmFn)(int kind, long long m, long long n, long long k, const void* a,
                       long long lda, const void* b, long long ldb, float* c, long long ldc);

enum : int {
    kOk = 0,
    kNotInitialized = 1,
    kInvalidValue = 7,
    kExecutionFailed = 13,
    kNotSupported = 15,
};

struct Handle {
    void* stream = nullptr;
    bool has_stream = false;
    void* workspace = nullptr;
    size_t workspace_bytes = 0;
};

struct Driver {
    EnqueueFn enqueue = nullptr;
    GemmFn gemm = nullptr;
};

// The emulated driver's door and GEMM, from the library already loaded as libcuda.so.1.
const Driver& driver() {
    static Driver d = [] {
        Driver out;
        void* lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_NOLOAD);
        if (lib) {
            out.enqueue = reinterpret_cast<EnqueueFn>(dlsym(lib, "hvemu_enqueue_host"));
            out.gemm = reinterpret_cast<GemmFn>(dlsym(lib, "hv_emu_gemm"));
        }
        return out;
    }();
    return d;
}

struct Job {
    GemmFn gemm;
    int kind;
    long long m, n, k;
    const void* a;
    const void* b;
    float* c;
    long long ldc;
    void* workspace;
    size_t workspace_bytes;
};

int run_job(void* p) {
    Job* j = static_cast<Job*>(p);
    if (j->workspace) memset(j->workspace, 0xA5, j->workspace_bytes);
    j->gemm(j->kind, j->m, j->n, j->k, j->a, j->k, j->b, j->k, j->c, j->ldc);
    return 0;
}

void drop_job(void* p) { delete static_cast<Job*>(p); }

std::atomic<long long> live_handles{0};
std::atomic<long long> gemms{0};
std::atomic<long long> gemms_with_workspace{0};
std::atomic<int> create_fails{0};

}  // namespace

extern "C" {

int cublasCreate_v2(void** out) {
    if (!out) return kInvalidValue;
    if (!driver().enqueue || !driver().gemm) return kNotInitialized;
    if (create_fails.load()) return kNotInitialized;
    *out = new Handle();
    live_handles.fetch_add(1);
    return kOk;
}

int cublasDestroy_v2(void* h) {
    if (!h) return kNotInitialized;
    delete static_cast<Handle*>(h);
    live_handles.fetch_sub(1);
    return kOk;
}

int cublasSetStream_v2(void* h, void* stream) {
    if (!h) return kNotInitialized;
    static_cast<Handle*>(h)->stream = stream;
    static_cast<Handle*>(h)->has_stream = true;
    return kOk;
}

// As cuBLAS: the workspace must be 256-byte aligned; a null one (or 0 bytes) makes the
// library allocate its own again.
int cublasSetWorkspace_v2(void* hp, void* workspace, size_t bytes) {
    Handle* h = static_cast<Handle*>(hp);
    if (!h) return kNotInitialized;
    if (reinterpret_cast<uintptr_t>(workspace) % 256 != 0) return kInvalidValue;
    h->workspace = bytes ? workspace : nullptr;
    h->workspace_bytes = workspace ? bytes : 0;
    return kOk;
}

int cublasGetVersion_v2(void* h, int* version) {
    if (!h || !version) return kInvalidValue;
    *version = 130000;
    return kOk;
}

// C (m × n, ldc) = op(A) · op(B) for transa = T, transb = N, FP32, FP16 or BF16 operands into
// FP32, alpha 1 and beta 0 (what the backend asks for), on the handle's stream.
int cublasGemmEx(void* hp, int transa, int transb, int m, int n, int k, const void* alpha,
                 const void* a, int atype, int lda, const void* b, int btype, int ldb,
                 const void* beta, void* c, int ctype, int ldc, int compute, int algo) {
    (void)algo;
    Handle* h = static_cast<Handle*>(hp);
    if (!h) return kNotInitialized;
    if (!h->has_stream) return kNotSupported;  // the backend always binds one
    if (transa != 1 || transb != 0) return kNotSupported;
    if (m < 0 || n < 0 || k < 0 || lda < k || ldb < k || ldc < m) return kInvalidValue;
    if (!alpha || !beta || *static_cast<const float*>(alpha) != 1.0f ||
        *static_cast<const float*>(beta) != 0.0f)
        return kNotSupported;
    if (atype != btype || ctype != 0) return kNotSupported;
    if (lda != k || ldb != k) return kNotSupported;
    int kind;
    if (atype == 0 && (compute == 68 || compute == 69))
        kind = 0;  // FP32
    else if (atype == 0 && compute == 77)
        kind = 1;  // TF32
    else if (atype == 2 && compute == 68)
        kind = 2;  // FP16
    else if (atype == 14 && compute == 68)
        kind = 3;  // BF16
    else
        return kNotSupported;
    if (m == 0 || n == 0) return kOk;
    if (!a || !b || !c) return kInvalidValue;
    Job* j = new Job{driver().gemm, kind, m, n, k, a, b, static_cast<float*>(c), ldc,
                     h->workspace, h->workspace_bytes};
    int r = driver().enqueue(h->stream, run_job, j, drop_job);
    if (r != 0) {
        delete j;
        return kExecutionFailed;
    }
    gemms.fetch_add(1);
    if (h->workspace) gemms_with_workspace.fetch_add(1);
    return kOk;
}

// For the tests: handles not yet destroyed, and GEMMs queued so far.
long long hvemu_cublas_live_handles() { return live_handles.load(); }
long long hvemu_cublas_gemms() { return gemms.load(); }
long long hvemu_cublas_gemms_with_workspace() { return gemms_with_workspace.load(); }
// Every cublasCreate fails (CUBLAS_STATUS_NOT_INITIALIZED) while `on` is non-zero.
void hvemu_cublas_fail_create(int on) { create_fails.store(on); }

}  // extern "C"
