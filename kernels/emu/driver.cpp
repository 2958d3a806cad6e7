// An emulated CUDA driver: the entry points of libcuda that hybridvec (through cudarc)
// resolves, over host memory, with the kernels of emu.cpp. Built by the tests into one
// shared library whose soname is the driver's, "libcuda.so.1", so that once a test has
// loaded it (or LD_PRELOAD has), the driver guard (kernels/guard), which needs that
// name, forwards to it instead of a driver. Never shipped and never loaded unless asked
// for.
//
// It behaves like a GPU where bugs hide:
// - Device memory is host memory between PROT_NONE guard pages, its end against the
//   trailing guard (to the 256-byte allocation granularity), so an out-of-bounds access
//   faults. Fresh memory is filled with 0xFF bytes (NaN as f32, -1 as integers). Freed
//   memory is made PROT_NONE and kept mapped for a while (up to 256 MiB), so a use after
//   free faults. Pinned host memory is treated the same way.
// - Streams are asynchronous: each is a worker thread that runs its copies, memsets and
//   launches later, each after a seeded random delay. Events and stream waits order them
//   as the driver would. As on the driver, an async copy between the device and pinned
//   host memory (cuMemHostAlloc) runs when the stream reaches it: a pinned source freed
//   before then faults, and one refilled gives wrong answers. Copies from pageable memory
//   are staged at the call, and copies into it return when done, as the driver's are.
// - cuMemGetInfo reports a total set by the test (HVEMU_TOTAL_MIB, or hvemu_configure)
//   less the live allocations; an allocation past it is CUDA_ERROR_OUT_OF_MEMORY. As in the
//   driver's stream-ordered pool, cuMemAllocAsync may reuse the bytes of frees queued
//   earlier on the same stream.
// - Faults on request: OOM at the n-th allocation; a sticky error at the n-th launch
//   after which every call fails with it, as on a device whose context is lost; an error
//   at the n-th copy (not sticky); CUDA_ERROR_INVALID_PTX with a JIT log from the n-th
//   module load on.
// - Modules must name their kernels (".entry" in PTX, ".text.<name>" sections in a cubin), and
//   a launch runs the emulated kernel of that name with its parameters copied by their
//   declared sizes, at launch time, as the driver does. A cubin loads only on the compute
//   capability it runs on (set by the test; 9.0 by default).
// - Counters of live allocations, live bytes, driver calls and launches, for the tests.
// - Several devices on request (hvemu_set_device_count, or HVEMU_DEVICES; one by default),
//   each with its own primary context and its own memory of the same total, accounted
//   apart. Memory belongs to the device whose context (or stream) allocated it, and a
//   copy or launch on one device's stream that touches another device's memory fails:
//   CUDA_ERROR_INVALID_VALUE for a copy (stricter than the driver, which would copy
//   between devices under unified addressing), CUDA_ERROR_ILLEGAL_ADDRESS for a launch,
//   as a kernel reading unmapped peer memory would. The sticky error is one for all
//   devices, as the backend treats a lost device.
//
// Not emulated: timing (events measure host time), the legacy default stream's implicit
// synchronisation, graphs, peer copies, managed memory, and concurrency between kernels
// (launches run one at a time).

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

extern "C" int hv_emu_launch(const char* name, const unsigned int* grid, const unsigned int* block,
                             unsigned int smem, void** params, unsigned long long seed, char* err,
                             size_t err_len);
extern "C" int hv_emu_param_sizes(const char* name, size_t* out, size_t cap);

namespace {

typedef int CUresult;
typedef int CUdevice;
typedef unsigned long long CUdeviceptr;

enum : int {
    kSuccess = 0,
    kInvalidValue = 1,
    kOutOfMemory = 2,
    kNotInitialized = 3,
    kInvalidDevice = 101,
    kInvalidImage = 200,
    kNoBinaryForGpu = 209,
    kInvalidPtx = 218,
    kInvalidContext = 201,
    kInvalidHandle = 400,
    kNotFound = 500,
    kNotReady = 600,
    kIllegalAddress = 700,
    kLaunchFailed = 719,
    kNotSupported = 801,
    kUnknown = 999,
};

constexpr size_t kPage = 4096;
constexpr size_t kGranule = 256;
constexpr size_t kQuarantineBytes = size_t(256) << 20;
constexpr int kMaxDevices = 8;

double now_ms() {
    using namespace std::chrono;
    return duration<double, std::milli>(steady_clock::now().time_since_epoch()).count();
}

size_t round_up(size_t x, size_t to) { return (x + to - 1) / to * to; }

struct Region {
    char* map = nullptr;  // the whole mapping, guards included
    size_t map_len = 0;
    size_t bytes = 0;    // as asked
    size_t charged = 0;  // counted against the device's memory
    bool host = false;
    int device = 0;  // whose memory (device allocations)
};

struct Event {
    std::mutex mu;
    std::condition_variable cv;
    uint64_t recorded = 0;   // generation of the last cuEventRecord
    uint64_t completed = 0;  // the latest generation the stream reached
    double at_ms = 0;
    unsigned flags = 0;
};

// One queued piece of work. `marker` work (event records) still runs after a sticky
// error, so that nobody waits forever on an event of a dead context.
struct Op {
    std::function<int()> run;
    bool marker = false;
};

struct Stream {
    std::mutex mu;
    std::condition_variable cv;
    std::deque<Op> queue;
    uint64_t queued = 0, done = 0;
    bool closing = false;
    std::mt19937_64 rng;
    // Bytes of frees queued on this stream and not yet run (guarded by Driver::mu): as
    // in the driver's stream-ordered pool, an allocation on the same stream may reuse
    // them at once.
    size_t pending_free = 0;
    int device = 0;  // the device of the context it was created in
};

struct Module {
    std::set<std::string> entries;
};

struct Function {
    std::string name;
    std::vector<size_t> param_sizes;
};

struct Ctx {
    int device = 0;
};

struct Driver {
    std::mutex mu;
    bool initialized = false;
    size_t total = size_t(4) << 30;
    size_t live_bytes = 0, live_allocs = 0, live_host_allocs = 0;
    int device_count = 1, env_device_count = 1;
    size_t device_live[kMaxDevices] = {};  // live bytes of each device
    std::map<uintptr_t, Region> regions;  // by the pointer handed out
    std::deque<Region> quarantine;
    size_t quarantined = 0;
    std::atomic<int> sticky{0};
    std::atomic<unsigned long long> calls{0}, launches{0};
    long long allocations = 0;
    long long oom_at = -1;    // fail the allocation with this number
    long long fault_at = -1;  // fail the launch with this number
    int fault_code = kIllegalAddress;
    long long copies = 0;
    unsigned long long htod_bytes = 0;  // bytes copied from the host to any device
    long long copy_fail_at = -1;  // fail the copy with this number (not sticky)
    int copy_fail_code = kInvalidValue;
    long long module_loads = 0;
    long long module_fail_at = -1;  // fail the module load with this number
    std::atomic<int> cc_major{9}, cc_minor{0};  // the compute capability reported
    unsigned long long seed = 1;
    unsigned max_delay_us = 50;
    std::map<Stream*, std::shared_ptr<Stream>> streams;
    // Destroyed streams whose queued work may still run (drain_all waits for it).
    std::vector<std::shared_ptr<Stream>> retired;
    std::map<Event*, std::shared_ptr<Event>> events;
    std::map<Module*, std::unique_ptr<Module>> modules;
    std::map<Function*, std::unique_ptr<Function>> functions;
    std::shared_ptr<Stream> null_streams[kMaxDevices];  // one per device, as per context
    Ctx ctxs[kMaxDevices];
    Driver() {
        for (int i = 0; i < kMaxDevices; ++i) ctxs[i].device = i;
    }
};

// Leaked on purpose: stream workers may still run while the process exits.
Driver& drv() {
    static Driver* d = new Driver;
    return *d;
}

thread_local Ctx* current_ctx = nullptr;

// The device of the calling thread's context (0 with none bound).
int current_device() { return current_ctx ? current_ctx->device : 0; }

unsigned long long env_u64(const char* name, unsigned long long fallback) {
    const char* v = getenv(name);
    if (!v || !*v) return fallback;
    char* end = nullptr;
    unsigned long long x = strtoull(v, &end, 10);
    return (end && *end == 0) ? x : fallback;
}

// HVEMU_TRACE_CALLS=1 prints each entry point as it is called.
static bool trace_calls() {
    static const bool on = getenv("HVEMU_TRACE_CALLS") != nullptr;
    return on;
}

// Every entry point starts here: counts the call, and refuses before cuInit and after a
// sticky error.
#define ENTER()                                                  \
    Driver& d = drv();                                           \
    d.calls.fetch_add(1, std::memory_order_relaxed);             \
    if (trace_calls()) fprintf(stderr, "hvemu call: %s\n", __func__); \
    if (!d.initialized) return kNotInitialized;                  \
    if (int s = d.sticky.load(std::memory_order_acquire)) return s

void worker(std::shared_ptr<Stream> s) {
    for (;;) {
        Op op;
        {
            std::unique_lock<std::mutex> l(s->mu);
            s->cv.wait(l, [&] { return !s->queue.empty() || s->closing; });
            if (s->queue.empty()) return;  // closing, and drained
            op = std::move(s->queue.front());
            s->queue.pop_front();
        }
        unsigned max = drv().max_delay_us;
        if (max) {
            unsigned us;
            {
                std::lock_guard<std::mutex> l(s->mu);
                us = static_cast<unsigned>(s->rng() % (max + 1));
            }
            std::this_thread::sleep_for(std::chrono::microseconds(us));
        }
        if (op.marker || drv().sticky.load(std::memory_order_acquire) == 0) {
            int r = op.run();
            if (r != 0) {
                int expected = 0;
                drv().sticky.compare_exchange_strong(expected, r);
            }
        }
        {
            std::lock_guard<std::mutex> l(s->mu);
            s->done += 1;
        }
        s->cv.notify_all();
    }
}

std::shared_ptr<Stream> new_stream() {
    auto s = std::make_shared<Stream>();
    s->device = current_device();
    {
        std::lock_guard<std::mutex> l(drv().mu);
        s->rng.seed(drv().seed * 0x9E3779B97F4A7C15ull + drv().streams.size() + 1);
    }
    std::thread(worker, s).detach();
    return s;
}

std::shared_ptr<Stream> stream_of(void* h) {
    Driver& d = drv();
    std::lock_guard<std::mutex> l(d.mu);
    if (!h) return d.null_streams[current_device()];
    auto it = d.streams.find(static_cast<Stream*>(h));
    return it == d.streams.end() ? nullptr : it->second;
}

std::shared_ptr<Event> event_of(void* h) {
    Driver& d = drv();
    std::lock_guard<std::mutex> l(d.mu);
    auto it = d.events.find(static_cast<Event*>(h));
    return it == d.events.end() ? nullptr : it->second;
}

void enqueue(const std::shared_ptr<Stream>& s, Op op) {
    {
        std::lock_guard<std::mutex> l(s->mu);
        s->queue.push_back(std::move(op));
        s->queued += 1;
    }
    s->cv.notify_all();
}

void drain(const std::shared_ptr<Stream>& s) {
    std::unique_lock<std::mutex> l(s->mu);
    uint64_t target = s->queued;
    s->cv.wait(l, [&] { return s->done >= target; });
}

void drain_all() {
    std::vector<std::shared_ptr<Stream>> all;
    {
        std::lock_guard<std::mutex> l(drv().mu);
        for (auto& kv : drv().streams) all.push_back(kv.second);
        for (auto& s : drv().null_streams)
            if (s) all.push_back(s);
        all.insert(all.end(), drv().retired.begin(), drv().retired.end());
        drv().retired.clear();
    }
    for (auto& s : all) drain(s);
}

// Maps `bytes` between guard pages, its end against the trailing guard; a device
// allocation (on `device`) may count `reusable` bytes of queued frees as free. Caller
// holds mu.
CUresult map_region(size_t bytes, bool host, char** out, size_t reusable = 0, int device = 0) {
    Driver& d = drv();
    if (bytes == 0) return kInvalidValue;
    size_t charged = round_up(bytes, kGranule);
    if (!host) {
        d.allocations += 1;
        bool fail = d.allocations == d.oom_at ||
                    d.device_live[device] + charged > d.total + reusable;
        if (getenv("HVEMU_TRACE"))
            fprintf(stderr, "emulated driver: allocation %lld: %zu bytes, %zu of %zu live%s\n",
                    d.allocations, bytes, d.live_bytes, d.total, fail ? ": OUT OF MEMORY" : "");
        if (fail) return kOutOfMemory;
    }
    size_t body = round_up(charged, kPage);
    size_t len = body + 2 * kPage;
    void* m = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) return kOutOfMemory;
    char* base = static_cast<char*>(m);
    mprotect(base, kPage, PROT_NONE);
    mprotect(base + kPage + body, kPage, PROT_NONE);
    char* p = base + kPage + (body - charged);
    memset(p, 0xFF, charged);
    Region r{base, len, bytes, charged, host, host ? 0 : device};
    d.regions[reinterpret_cast<uintptr_t>(p)] = r;
    if (host) {
        d.live_host_allocs += 1;
    } else {
        d.live_bytes += charged;
        d.device_live[device] += charged;
        d.live_allocs += 1;
    }
    *out = p;
    return kSuccess;
}

// Poisons and quarantines the region handed out at `p`. Caller holds mu.
CUresult unmap_region(uintptr_t p, bool host) {
    Driver& d = drv();
    auto it = d.regions.find(p);
    if (it == d.regions.end() || it->second.host != host) return kInvalidValue;
    Region r = it->second;
    d.regions.erase(it);
    if (host) {
        d.live_host_allocs -= 1;
    } else {
        d.live_bytes -= r.charged;
        d.device_live[r.device] -= r.charged;
        d.live_allocs -= 1;
    }
    mprotect(r.map, r.map_len, PROT_NONE);
    d.quarantine.push_back(r);
    d.quarantined += r.map_len;
    while (d.quarantined > kQuarantineBytes && !d.quarantine.empty()) {
        Region old = d.quarantine.front();
        d.quarantine.pop_front();
        d.quarantined -= old.map_len;
        munmap(old.map, old.map_len);
    }
    return kSuccess;
}

// The live device allocation holding byte `p`, or null. Caller holds mu.
const Region* device_region(uintptr_t p, uintptr_t* start) {
    Driver& d = drv();
    auto it = d.regions.upper_bound(p);
    if (it == d.regions.begin()) return nullptr;
    --it;
    if (it->second.host || p < it->first || p >= it->first + it->second.bytes) return nullptr;
    *start = it->first;
    return &it->second;
}

// Whether [p, p + n) lies inside one live allocation of `device`.
bool device_range(CUdeviceptr p, size_t n, int device) {
    Driver& d = drv();
    std::lock_guard<std::mutex> l(d.mu);
    uintptr_t start = 0;
    const Region* r = device_region(static_cast<uintptr_t>(p), &start);
    return r && r->device == device && p + n <= start + r->bytes;
}

// Counts a copy, and says whether the test asked this one to fail (and with what).
int injected_copy_fault() {
    Driver& d = drv();
    std::lock_guard<std::mutex> l(d.mu);
    d.copies += 1;
    return d.copies == d.copy_fail_at ? d.copy_fail_code : 0;
}

// Whether [p, p + n) lies inside one live pinned host allocation.
bool pinned_range(const void* ptr, size_t n) {
    Driver& d = drv();
    uintptr_t p = reinterpret_cast<uintptr_t>(ptr);
    std::lock_guard<std::mutex> l(d.mu);
    auto it = d.regions.upper_bound(p);
    if (it == d.regions.begin()) return false;
    --it;
    return it->second.host && p >= it->first && p + n <= it->first + it->second.bytes;
}

template <typename T>
T read_at(const char* p, size_t at) {
    T v;
    memcpy(&v, p + at, sizeof v);
    return v;
}

// A cubin's kernels: the names of its ".text.<kernel>" sections (ELF64, little-endian).
// Sets `sm` to the architecture in its flags (sm_90: 90); an image that is not a CUDA
// ELF gives no kernels.
std::vector<std::string> cubin_entries(const char* elf, int* sm) {
    std::vector<std::string> found;
    if (elf[4] != 2 || elf[5] != 1 || read_at<uint16_t>(elf, 0x12) != 190) return found;
    *sm = static_cast<int>(read_at<uint32_t>(elf, 0x30) & 0xff);
    uint64_t shoff = read_at<uint64_t>(elf, 0x28);
    uint16_t shentsize = read_at<uint16_t>(elf, 0x3a), shnum = read_at<uint16_t>(elf, 0x3c),
             shstrndx = read_at<uint16_t>(elf, 0x3e);
    if (shentsize < 64 || shstrndx >= shnum) return found;
    const char* names = elf + read_at<uint64_t>(elf, shoff + shstrndx * shentsize + 0x18);
    for (uint16_t i = 0; i < shnum; ++i) {
        const char* name = names + read_at<uint32_t>(elf, shoff + i * shentsize);
        if (strncmp(name, ".text.", 6) == 0 && name[6]) found.emplace_back(name + 6);
    }
    return found;
}

// The kernels an image names: ".entry" lines of PTX, or a cubin's text sections (`sm`:
// the cubin's architecture; 0 for PTX).
std::vector<std::string> entries_of(const void* image, int* sm) {
    std::vector<std::string> found;
    const char* text = static_cast<const char*>(image);
    static const char kElf[] = {0x7f, 'E', 'L', 'F'};
    *sm = 0;
    if (memcmp(text, kElf, 4) == 0) return cubin_entries(text, sm);
    const char* p = text;
    while ((p = strstr(p, ".entry")) != nullptr) {
        p += 6;
        while (*p == ' ' || *p == '\t') ++p;
        const char* start = p;
        while (*p && *p != '(' && *p != ' ' && *p != '\n' && *p != '\t') ++p;
        if (p > start) found.emplace_back(start, p);
    }
    return found;
}

}  // namespace

extern "C" {

// ---- the test's controls ----

// Sets the device's total memory, the streams' largest delay (µs) and the seed. Zero
// leaves a value as it is.
void hvemu_configure(unsigned long long total_bytes, unsigned max_delay_us,
                     unsigned long long seed) {
    Driver& d = drv();
    std::lock_guard<std::mutex> l(d.mu);
    if (total_bytes) d.total = total_bytes;
    d.max_delay_us = max_delay_us;
    if (seed) d.seed = seed;
}

// The n-th device allocation from now (1: the next) fails with CUDA_ERROR_OUT_OF_MEMORY.
void hvemu_fail_allocation(long long n) {
    Driver& d = drv();
    std::lock_guard<std::mutex> l(d.mu);
    d.oom_at = n > 0 ? d.allocations + n : -1;
}

// The n-th launch from now fails with `code`, which then sticks to every call.
void hvemu_fail_launch(long long n, int code) {
    Driver& d = drv();
    std::lock_guard<std::mutex> l(d.mu);
    d.fault_at = n > 0 ? static_cast<long long>(d.launches.load()) + n : -1;
    d.fault_code = code;
}

// The n-th copy (host to device, device to host or device to device) from now fails
// with `code` and queues nothing; the error does not stick, as a bad argument's would not.
void hvemu_fail_copy(long long n, int code) {
    Driver& d = drv();
    std::lock_guard<std::mutex> l(d.mu);
    d.copy_fail_at = n > 0 ? d.copies + n : -1;
    d.copy_fail_code = code;
}

// Module loads from the n-th from now on fail (as a bad image always would) with
// CUDA_ERROR_INVALID_PTX, writing a JIT error log ("ptxas fatal : emulated JIT failure
// ...") when the caller gave a log buffer.
void hvemu_fail_module_load(long long n) {
    Driver& d = drv();
    std::lock_guard<std::mutex> l(d.mu);
    d.module_fail_at = n > 0 ? d.module_loads + n : -1;
}

// The compute capability the device reports (default 9.0): a cubin for another
// architecture then fails to load with CUDA_ERROR_NO_BINARY_FOR_GPU, as on a GPU.
void hvemu_set_compute_capability(int major, int minor) {
    drv().cc_major.store(major);
    drv().cc_minor.store(minor);
}

// Clears a sticky error and the injected faults, as a new process would start.
void hvemu_recover() {
    drain_all();
    Driver& d = drv();
    std::lock_guard<std::mutex> l(d.mu);
    d.sticky.store(0);
    d.oom_at = -1;
    d.fault_at = -1;
    d.copy_fail_at = -1;
    d.module_fail_at = -1;
    d.cc_major.store(9);
    d.cc_minor.store(0);
    d.device_count = d.env_device_count;
}

// How many devices the driver reports (1 to 8; others are ignored). Set before a backend
// starts: a started one keeps the devices it opened.
void hvemu_set_device_count(int n) {
    Driver& d = drv();
    std::lock_guard<std::mutex> l(d.mu);
    if (n >= 1 && n <= kMaxDevices) d.device_count = n;
}

// Bytes copied from the host to any device so far.
unsigned long long hvemu_htod_bytes() {
    Driver& d = drv();
    std::lock_guard<std::mutex> l(d.mu);
    return d.htod_bytes;
}

// Live device bytes on `device` (as charged against its memory), once every stream has
// run what it was given; 0 for a device that does not exist.
unsigned long long hvemu_device_live_bytes(int device) {
    drain_all();
    Driver& d = drv();
    std::lock_guard<std::mutex> l(d.mu);
    return device >= 0 && device < kMaxDevices ? d.device_live[device] : 0;
}

// Live device allocations, their bytes, live pinned host allocations, driver calls and
// launches so far, into out[0..5), once every stream has run what it was given (frees
// queued on a stream land only then).
void hvemu_counters(unsigned long long* out) {
    drain_all();
    Driver& d = drv();
    std::lock_guard<std::mutex> l(d.mu);
    out[0] = d.live_allocs;
    out[1] = d.live_bytes;
    out[2] = d.live_host_allocs;
    out[3] = d.calls.load();
    out[4] = d.launches.load();
}

// ---- the driver API ----

CUresult cuInit(unsigned flags) {
    Driver& d = drv();
    d.calls.fetch_add(1);
    if (flags != 0) return kInvalidValue;
    std::lock_guard<std::mutex> l(d.mu);
    if (!d.initialized) {
        unsigned long long mib = env_u64("HVEMU_TOTAL_MIB", 0);
        if (mib) d.total = static_cast<size_t>(mib) << 20;
        d.max_delay_us = static_cast<unsigned>(env_u64("HVEMU_DELAY_US", d.max_delay_us));
        d.seed = env_u64("HVEMU_SEED", d.seed);
        // Only where set: a count the test set before the first cuInit stands.
        unsigned long long devices = env_u64("HVEMU_DEVICES", 0);
        if (devices >= 1 && devices <= kMaxDevices) {
            d.env_device_count = static_cast<int>(devices);
            d.device_count = d.env_device_count;
        }
        d.initialized = true;
    }
    for (int i = 0; i < kMaxDevices; ++i) {
        if (d.null_streams[i]) continue;
        auto s = std::make_shared<Stream>();
        s->rng.seed(d.seed + i);
        s->device = i;
        std::thread(worker, s).detach();
        d.null_streams[i] = s;
    }
    return kSuccess;
}

// Whether `dev` is an ordinal the driver reports.
static bool valid_device(int dev) {
    Driver& d = drv();
    std::lock_guard<std::mutex> l(d.mu);
    return dev >= 0 && dev < d.device_count;
}

CUresult cuDriverGetVersion(int* v) {
    if (!v) return kInvalidValue;
    *v = 12080;
    return kSuccess;
}

CUresult cuDeviceGetCount(int* n) {
    ENTER();
    if (!n) return kInvalidValue;
    std::lock_guard<std::mutex> l(d.mu);
    *n = d.device_count;
    return kSuccess;
}

CUresult cuDeviceGet(CUdevice* dev, int ordinal) {
    ENTER();
    if (!dev) return kInvalidValue;
    if (!valid_device(ordinal)) return kInvalidDevice;
    *dev = ordinal;
    return kSuccess;
}

CUresult cuDeviceGetName(char* name, int len, CUdevice dev) {
    ENTER();
    if (!valid_device(dev)) return kInvalidDevice;
    if (!name || len <= 0) return kInvalidValue;
    snprintf(name, static_cast<size_t>(len), "hybridvec emulated CUDA device (CPU)");
    return kSuccess;
}

CUresult cuDeviceTotalMem_v2(size_t* bytes, CUdevice dev) {
    ENTER();
    if (!valid_device(dev)) return kInvalidDevice;
    if (!bytes) return kInvalidValue;
    std::lock_guard<std::mutex> l(d.mu);
    *bytes = d.total;
    return kSuccess;
}

CUresult cuDeviceGetAttribute(int* v, int attr, CUdevice dev) {
    ENTER();
    if (!valid_device(dev)) return kInvalidDevice;
    if (!v) return kInvalidValue;
    switch (attr) {
        case 1: *v = 1024; break;           // max threads per block
        case 8: *v = 48 * 1024; break;      // shared memory per block
        case 10: *v = 32; break;            // warp size
        case 13: *v = 1980000; break;       // clock, kHz
        case 16: *v = 4; break;             // multiprocessors (small: small grids)
        case 36: *v = 2619000; break;       // memory clock, kHz
        case 37: *v = 5120; break;          // bus width, bits
        case 75: *v = d.cc_major.load(); break;  // compute capability
        case 76: *v = d.cc_minor.load(); break;
        case 97: *v = 48 * 1024; break;     // opt-in shared memory: the emulator's limit
        case 115: *v = 1; break;            // memory pools (async allocation)
        default: *v = 0; break;
    }
    return kSuccess;
}

CUresult cuDevicePrimaryCtxRetain(void** ctx, CUdevice dev) {
    ENTER();
    if (!valid_device(dev)) return kInvalidDevice;
    if (!ctx) return kInvalidValue;
    *ctx = &d.ctxs[dev];
    return kSuccess;
}

CUresult cuDevicePrimaryCtxRelease_v2(CUdevice dev) {
    ENTER();
    return valid_device(dev) ? kSuccess : kInvalidDevice;
}

CUresult cuCtxSetCurrent(void* ctx) {
    ENTER();
    if (ctx && (ctx < static_cast<void*>(&d.ctxs[0]) ||
                ctx >= static_cast<void*>(&d.ctxs[kMaxDevices])))
        return kInvalidContext;
    current_ctx = static_cast<Ctx*>(ctx);
    return kSuccess;
}

CUresult cuCtxGetCurrent(void** ctx) {
    ENTER();
    if (!ctx) return kInvalidValue;
    *ctx = current_ctx;
    return kSuccess;
}

CUresult cuCtxGetDevice(CUdevice* dev) {
    ENTER();
    if (!dev) return kInvalidValue;
    *dev = current_device();
    return kSuccess;
}

CUresult cuCtxSynchronize() {
    ENTER();
    drain_all();
    return d.sticky.load();
}

CUresult cuMemGetInfo_v2(size_t* free_bytes, size_t* total) {
    ENTER();
    if (!free_bytes || !total) return kInvalidValue;
    std::lock_guard<std::mutex> l(d.mu);
    size_t live = d.device_live[current_device()];
    *total = d.total;
    *free_bytes = d.total > live ? d.total - live : 0;
    return kSuccess;
}

// ---- streams and events ----

CUresult cuStreamCreate(void** out, unsigned flags) {
    ENTER();
    (void)flags;
    if (!out) return kInvalidValue;
    auto s = new_stream();
    std::lock_guard<std::mutex> l(d.mu);
    d.streams[s.get()] = s;
    *out = s.get();
    return kSuccess;
}

CUresult cuStreamDestroy_v2(void* h) {
    ENTER();
    std::shared_ptr<Stream> s;
    {
        std::lock_guard<std::mutex> l(d.mu);
        auto it = d.streams.find(static_cast<Stream*>(h));
        if (it == d.streams.end()) return kInvalidHandle;
        s = it->second;
        d.streams.erase(it);
        d.retired.push_back(s);
    }
    // As on the driver: queued work still runs; the worker ends when it has.
    {
        std::lock_guard<std::mutex> l(s->mu);
        s->closing = true;
    }
    s->cv.notify_all();
    return kSuccess;
}

CUresult cuStreamSynchronize(void* h) {
    ENTER();
    auto s = stream_of(h);
    if (!s) return kInvalidHandle;
    drain(s);
    return d.sticky.load();
}

CUresult cuStreamQuery(void* h) {
    ENTER();
    auto s = stream_of(h);
    if (!s) return kInvalidHandle;
    std::lock_guard<std::mutex> l(s->mu);
    return s->done >= s->queued ? kSuccess : kNotReady;
}

CUresult cuEventCreate(void** out, unsigned flags) {
    ENTER();
    if (!out) return kInvalidValue;
    auto e = std::make_shared<Event>();
    e->flags = flags;
    std::lock_guard<std::mutex> l(d.mu);
    d.events[e.get()] = e;
    *out = e.get();
    return kSuccess;
}

CUresult cuEventDestroy_v2(void* h) {
    ENTER();
    std::lock_guard<std::mutex> l(d.mu);
    return d.events.erase(static_cast<Event*>(h)) ? kSuccess : kInvalidHandle;
}

CUresult cuEventRecord(void* h, void* stream) {
    ENTER();
    auto e = event_of(h);
    auto s = stream_of(stream);
    if (!e || !s) return kInvalidHandle;
    uint64_t gen;
    {
        std::lock_guard<std::mutex> l(e->mu);
        gen = ++e->recorded;
    }
    enqueue(s, Op{[e, gen] {
                      {
                          std::lock_guard<std::mutex> l(e->mu);
                          if (gen > e->completed) {
                              e->completed = gen;
                              e->at_ms = now_ms();
                          }
                      }
                      e->cv.notify_all();
                      return 0;
                  },
                  true});
    return kSuccess;
}

CUresult cuEventQuery(void* h) {
    ENTER();
    auto e = event_of(h);
    if (!e) return kInvalidHandle;
    std::lock_guard<std::mutex> l(e->mu);
    return e->completed >= e->recorded ? kSuccess : kNotReady;
}

CUresult cuEventSynchronize(void* h) {
    ENTER();
    auto e = event_of(h);
    if (!e) return kInvalidHandle;
    std::unique_lock<std::mutex> l(e->mu);
    uint64_t gen = e->recorded;
    e->cv.wait(l, [&] { return e->completed >= gen; });
    return d.sticky.load();
}

static CUresult elapsed(float* ms, void* a, void* b) {
    ENTER();
    if (!ms) return kInvalidValue;
    auto ea = event_of(a), eb = event_of(b);
    if (!ea || !eb) return kInvalidHandle;
    if ((ea->flags | eb->flags) & 2) return kInvalidHandle;  // CU_EVENT_DISABLE_TIMING
    std::lock_guard<std::mutex> la(ea->mu);
    std::lock_guard<std::mutex> lb(eb->mu);
    if (ea->recorded == 0 || eb->recorded == 0) return kInvalidHandle;
    if (ea->completed < ea->recorded || eb->completed < eb->recorded) return kNotReady;
    *ms = static_cast<float>(eb->at_ms - ea->at_ms);
    return kSuccess;
}

CUresult cuEventElapsedTime(float* ms, void* a, void* b) { return elapsed(ms, a, b); }
CUresult cuEventElapsedTime_v2(float* ms, void* a, void* b) { return elapsed(ms, a, b); }

CUresult cuStreamWaitEvent(void* stream, void* h, unsigned flags) {
    ENTER();
    (void)flags;
    auto s = stream_of(stream);
    auto e = event_of(h);
    if (!s || !e) return kInvalidHandle;
    uint64_t gen;
    {
        std::lock_guard<std::mutex> l(e->mu);
        gen = e->recorded;
    }
    if (gen == 0) return kSuccess;
    enqueue(s, Op{[e, gen] {
                      std::unique_lock<std::mutex> l(e->mu);
                      e->cv.wait(l, [&] { return e->completed >= gen; });
                      return 0;
                  },
                  true});
    return kSuccess;
}

// ---- memory ----

CUresult cuMemAlloc_v2(CUdeviceptr* out, size_t bytes) {
    ENTER();
    if (!out) return kInvalidValue;
    std::lock_guard<std::mutex> l(d.mu);
    char* p = nullptr;
    CUresult r = map_region(bytes, false, &p, 0, current_device());
    if (r == kSuccess) *out = reinterpret_cast<CUdeviceptr>(p);
    return r;
}

CUresult cuMemAllocAsync(CUdeviceptr* out, size_t bytes, void* stream) {
    ENTER();
    auto s = stream_of(stream);
    if (!s) return kInvalidHandle;
    if (!out) return kInvalidValue;
    std::lock_guard<std::mutex> l(d.mu);
    char* p = nullptr;
    CUresult r = map_region(bytes, false, &p, s->pending_free, s->device);
    if (r == kSuccess) *out = reinterpret_cast<CUdeviceptr>(p);
    return r;
}

CUresult cuMemFree_v2(CUdeviceptr p) {
    ENTER();
    drain_all();
    std::lock_guard<std::mutex> l(d.mu);
    return unmap_region(static_cast<uintptr_t>(p), false);
}

CUresult cuMemFreeAsync(CUdeviceptr p, void* stream) {
    ENTER();
    auto s = stream_of(stream);
    if (!s) return kInvalidHandle;
    size_t charged;
    {
        std::lock_guard<std::mutex> l(d.mu);
        auto it = d.regions.find(static_cast<uintptr_t>(p));
        if (it == d.regions.end() || it->second.host) return kInvalidValue;
        charged = it->second.charged;
        s->pending_free += charged;
    }
    // Freed when the stream reaches it, even after a sticky error (a marker), so that
    // memory is given back as a real context's teardown would.
    Stream* raw = s.get();
    enqueue(s, Op{[p, charged, raw] {
                      std::lock_guard<std::mutex> l(drv().mu);
                      unmap_region(static_cast<uintptr_t>(p), false);
                      raw->pending_free -= charged;
                      return 0;
                  },
                  true});
    return kSuccess;
}

CUresult cuMemHostAlloc(void** out, size_t bytes, unsigned flags) {
    ENTER();
    (void)flags;
    if (!out) return kInvalidValue;
    std::lock_guard<std::mutex> l(d.mu);
    char* p = nullptr;
    CUresult r = map_region(bytes, true, &p);
    if (r == kSuccess) *out = p;
    return r;
}

CUresult cuMemAllocHost_v2(void** out, size_t bytes) { return cuMemHostAlloc(out, bytes, 0); }

CUresult cuMemFreeHost(void* p) {
    ENTER();
    std::lock_guard<std::mutex> l(d.mu);
    return unmap_region(reinterpret_cast<uintptr_t>(p), true);
}

CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr dst, const void* src, size_t n, void* stream) {
    ENTER();
    auto s = stream_of(stream);
    if (!s) return kInvalidHandle;
    if (n == 0) return kSuccess;
    if (int code = injected_copy_fault()) return code;
    if (!src || !device_range(dst, n, s->device)) return kInvalidValue;
    {
        std::lock_guard<std::mutex> l(d.mu);
        d.htod_bytes += n;
    }
    if (!pinned_range(src, n)) {
        // From pageable memory the driver stages the source before it returns, so the
        // caller may reuse it at once; only pinned sources are read when the copy runs.
        auto staged = std::make_shared<std::vector<char>>(static_cast<const char*>(src),
                                                          static_cast<const char*>(src) + n);
        enqueue(s, Op{[dst, staged] {
                          memcpy(reinterpret_cast<void*>(dst), staged->data(), staged->size());
                          return 0;
                      },
                      false});
        return kSuccess;
    }
    enqueue(s, Op{[dst, src, n] {
                      memcpy(reinterpret_cast<void*>(dst), src, n);
                      return 0;
                  },
                  false});
    return kSuccess;
}

CUresult cuMemcpyDtoHAsync_v2(void* dst, CUdeviceptr src, size_t n, void* stream) {
    ENTER();
    auto s = stream_of(stream);
    if (!s) return kInvalidHandle;
    if (n == 0) return kSuccess;
    if (int code = injected_copy_fault()) return code;
    if (!dst || !device_range(src, n, s->device)) return kInvalidValue;
    enqueue(s, Op{[dst, src, n] {
                      memcpy(dst, reinterpret_cast<const void*>(src), n);
                      return 0;
                  },
                  false});
    // Into pageable memory the driver returns only when the copy is done; into pinned
    // memory the copy lands whenever the stream reaches it.
    if (!pinned_range(dst, n)) {
        drain(s);
        return d.sticky.load();
    }
    return kSuccess;
}

CUresult cuMemcpyDtoDAsync_v2(CUdeviceptr dst, CUdeviceptr src, size_t n, void* stream) {
    ENTER();
    auto s = stream_of(stream);
    if (!s) return kInvalidHandle;
    if (n == 0) return kSuccess;
    if (int code = injected_copy_fault()) return code;
    if (!device_range(dst, n, s->device) || !device_range(src, n, s->device))
        return kInvalidValue;
    enqueue(s, Op{[dst, src, n] {
                      memmove(reinterpret_cast<void*>(dst), reinterpret_cast<const void*>(src), n);
                      return 0;
                  },
                  false});
    return kSuccess;
}

CUresult cuMemsetD8Async(CUdeviceptr dst, unsigned char v, size_t n, void* stream) {
    ENTER();
    auto s = stream_of(stream);
    if (!s) return kInvalidHandle;
    if (n == 0) return kSuccess;
    if (!device_range(dst, n, s->device)) return kInvalidValue;
    enqueue(s, Op{[dst, v, n] {
                      memset(reinterpret_cast<void*>(dst), v, n);
                      return 0;
                  },
                  false});
    return kSuccess;
}

// The synchronous forms: queued on the null stream and waited for.
CUresult cuMemcpyHtoD_v2(CUdeviceptr dst, const void* src, size_t n) {
    CUresult r = cuMemcpyHtoDAsync_v2(dst, src, n, nullptr);
    return r ? r : cuStreamSynchronize(nullptr);
}
CUresult cuMemcpyDtoH_v2(void* dst, CUdeviceptr src, size_t n) {
    CUresult r = cuMemcpyDtoHAsync_v2(dst, src, n, nullptr);
    return r ? r : cuStreamSynchronize(nullptr);
}
CUresult cuMemcpyDtoD_v2(CUdeviceptr dst, CUdeviceptr src, size_t n) {
    CUresult r = cuMemcpyDtoDAsync_v2(dst, src, n, nullptr);
    return r ? r : cuStreamSynchronize(nullptr);
}
CUresult cuMemsetD8_v2(CUdeviceptr dst, unsigned char v, size_t n) {
    CUresult r = cuMemsetD8Async(dst, v, n, nullptr);
    return r ? r : cuStreamSynchronize(nullptr);
}

// ---- modules and launches ----

static CUresult load_module(void** out, const void* image, char* log, size_t log_len) {
    ENTER();
    if (!out || !image) return kInvalidValue;
    {
        std::lock_guard<std::mutex> l(d.mu);
        d.module_loads += 1;
        if (d.module_fail_at > 0 && d.module_loads >= d.module_fail_at) {
            if (log && log_len)
                snprintf(log, log_len,
                         "ptxas fatal : emulated JIT failure (hvemu_fail_module_load)");
            return kInvalidPtx;
        }
    }
    auto m = std::make_unique<Module>();
    int sm = 0;
    std::vector<std::string> entries = entries_of(image, &sm);
    if (sm) {
        // Machine code runs within its major version, from its minor up, as on a GPU.
        int major = d.cc_major.load(), minor = d.cc_minor.load();
        if (sm / 10 != major || sm % 10 > minor) {
            if (log && log_len)
                snprintf(log, log_len, "emulated driver: an sm_%d cubin on a %d.%d device", sm,
                         major, minor);
            return kNoBinaryForGpu;
        }
    }
    for (auto& name : entries) {
        if (hv_emu_param_sizes(name.c_str(), nullptr, 0) < 0) {
            if (log && log_len)
                snprintf(log, log_len, "emulated driver: no emulated kernel named %s",
                         name.c_str());
            return kInvalidImage;
        }
        m->entries.insert(name);
    }
    if (m->entries.empty()) {
        if (log && log_len) snprintf(log, log_len, "emulated driver: the image names no kernel");
        return kInvalidImage;
    }
    std::lock_guard<std::mutex> l(d.mu);
    Module* h = m.get();
    d.modules[h] = std::move(m);
    *out = h;
    return kSuccess;
}

CUresult cuModuleLoadData(void** out, const void* image) {
    return load_module(out, image, nullptr, 0);
}

// Options: the error log buffer (5) and its size (6) are honoured; the rest ignored.
CUresult cuModuleLoadDataEx(void** out, const void* image, unsigned n, int* options,
                            void** values) {
    char* log = nullptr;
    size_t log_len = 0;
    for (unsigned i = 0; options && values && i < n; ++i) {
        if (options[i] == 5) log = static_cast<char*>(values[i]);
        if (options[i] == 6) log_len = reinterpret_cast<uintptr_t>(values[i]);
    }
    return load_module(out, image, log, log_len);
}

CUresult cuModuleUnload(void* h) {
    ENTER();
    std::lock_guard<std::mutex> l(d.mu);
    return d.modules.erase(static_cast<Module*>(h)) ? kSuccess : kInvalidHandle;
}

CUresult cuModuleGetFunction(void** out, void* module, const char* name) {
    ENTER();
    if (!out || !name) return kInvalidValue;
    std::lock_guard<std::mutex> l(d.mu);
    auto it = d.modules.find(static_cast<Module*>(module));
    if (it == d.modules.end()) return kInvalidHandle;
    if (!it->second->entries.count(name)) return kNotFound;
    auto f = std::make_unique<Function>();
    f->name = name;
    size_t sizes[64];
    int count = hv_emu_param_sizes(name, sizes, 64);
    if (count < 0 || count > 64) return kNotFound;
    f->param_sizes.assign(sizes, sizes + count);
    Function* h = f.get();
    d.functions[h] = std::move(f);
    *out = h;
    return kSuccess;
}

CUresult cuFuncSetAttribute(void* f, int attr, int value) {
    ENTER();
    (void)attr;
    (void)value;
    std::lock_guard<std::mutex> l(d.mu);
    return d.functions.count(static_cast<Function*>(f)) ? kSuccess : kInvalidHandle;
}

CUresult cuFuncGetAttribute(int* v, int attr, void* f) {
    ENTER();
    (void)attr;
    if (!v) return kInvalidValue;
    std::lock_guard<std::mutex> l(d.mu);
    if (!d.functions.count(static_cast<Function*>(f))) return kInvalidHandle;
    *v = 0;
    return kSuccess;
}

CUresult cuLaunchKernel(void* fh, unsigned gx, unsigned gy, unsigned gz, unsigned bx,
                        unsigned by, unsigned bz, unsigned smem, void* stream, void** params,
                        void** extra) {
    ENTER();
    if (extra) return kNotSupported;
    auto s = stream_of(stream);
    if (!s) return kInvalidHandle;
    std::string name;
    std::vector<size_t> sizes;
    {
        std::lock_guard<std::mutex> l(d.mu);
        auto it = d.functions.find(static_cast<Function*>(fh));
        if (it == d.functions.end()) return kInvalidHandle;
        name = it->second->name;
        sizes = it->second->param_sizes;
    }
    if (gx == 0 || gy == 0 || gz == 0 || gy > 65535 || gz > 65535) return kInvalidValue;
    if (!sizes.empty() && !params) return kInvalidValue;
    // The arguments are copied now, by their declared sizes, as the driver does.
    std::vector<char> args;
    std::vector<size_t> offsets;
    for (size_t i = 0; i < sizes.size(); ++i) {
        size_t at = round_up(args.size(), 16);
        args.resize(at + sizes[i]);
        memcpy(args.data() + at, params[i], sizes[i]);
        offsets.push_back(at);
    }
    unsigned long long number = d.launches.fetch_add(1) + 1;
    int fault = 0;
    unsigned long long seed;
    {
        std::lock_guard<std::mutex> l(d.mu);
        if (static_cast<long long>(number) == d.fault_at) fault = d.fault_code;
        seed = d.seed ^ (number * 0x9E3779B97F4A7C15ull);
        // A pointer argument into another device's memory: the kernel would fault there.
        for (size_t i = 0; i < sizes.size() && !fault; ++i) {
            if (sizes[i] != sizeof(CUdeviceptr)) continue;
            CUdeviceptr p;
            memcpy(&p, args.data() + offsets[i], sizeof p);
            uintptr_t start = 0;
            const Region* r = device_region(static_cast<uintptr_t>(p), &start);
            if (r && r->device != s->device) {
                fprintf(stderr,
                        "emulated driver: launch %llu (%s) on device %d reads device %d's "
                        "memory (argument %zu)\n",
                        number, name.c_str(), s->device, r->device, i);
                fault = kIllegalAddress;
            }
        }
    }
    unsigned grid[3] = {gx, gy, gz}, block[3] = {bx, by, bz};
    if (getenv("HVEMU_TRACE"))
        fprintf(stderr, "emulated driver: launch %llu: %s grid %u,%u,%u block %u,%u,%u smem %u\n",
                number, name.c_str(), gx, gy, gz, bx, by, bz, smem);
    enqueue(s, Op{[name, args = std::move(args), offsets, grid, block, smem, seed, fault]() mutable {
                      if (fault) return fault;
                      std::vector<void*> ptrs;
                      for (size_t at : offsets) ptrs.push_back(args.data() + at);
                      char err[512] = {0};
                      if (hv_emu_launch(name.c_str(), grid, block, smem, ptrs.data(), seed, err,
                                        sizeof err) != 0) {
                          fprintf(stderr, "emulated driver: launch failed: %s\n", err);
                          return static_cast<int>(kLaunchFailed);
                      }
                      return 0;
                  },
                  false});
    return kSuccess;
}

// ---- occupancy ----

// Blocks of `block` threads with `smem` dynamic shared bytes that fit on an SM: by the
// threads (2 048 per SM) and the shared memory (227 KiB per SM); the emulator knows no
// register counts.
CUresult cuOccupancyMaxActiveBlocksPerMultiprocessorWithFlags(int* out, void* fh, int block,
                                                              size_t smem, unsigned flags) {
    ENTER();
    (void)flags;
    if (!out || block <= 0 || block > 1024) return kInvalidValue;
    {
        std::lock_guard<std::mutex> l(d.mu);
        if (d.functions.find(static_cast<Function*>(fh)) == d.functions.end())
            return kInvalidHandle;
    }
    int blocks = 2048 / block;
    if (smem > 0) blocks = std::min<int>(blocks, static_cast<int>((227u << 10) / smem));
    *out = blocks;
    return kSuccess;
}

CUresult cuOccupancyMaxActiveBlocksPerMultiprocessor(int* out, void* fh, int block, size_t smem) {
    return cuOccupancyMaxActiveBlocksPerMultiprocessorWithFlags(out, fh, block, smem, 0);
}

// ---- the emulated cuBLAS's door (cublas.cpp) ----

// Queues run(arg) on a stream as one launch (counted, and failed by an injected launch
// fault like a kernel), then done(arg). What cuBLAS's GEMM is to the driver: kernels
// queued on the handle's stream.
CUresult hvemu_enqueue_host(void* stream, int (*run)(void*), void* arg, void (*done)(void*)) {
    ENTER();
    auto s = stream_of(stream);
    if (!s) return kInvalidHandle;
    unsigned long long number = d.launches.fetch_add(1) + 1;
    int fault = 0;
    {
        std::lock_guard<std::mutex> l(d.mu);
        if (static_cast<long long>(number) == d.fault_at) fault = d.fault_code;
    }
    enqueue(s, Op{[run, arg, done, fault] {
                      int r = fault ? fault : (run(arg) == 0 ? 0 : static_cast<int>(kLaunchFailed));
                      done(arg);
                      return r;
                  },
                  false});
    return kSuccess;
}

// ---- errors ----

CUresult cuGetErrorName(CUresult e, const char** out) {
    if (!out) return kInvalidValue;
    switch (e) {
        case kSuccess: *out = "CUDA_SUCCESS"; break;
        case kInvalidValue: *out = "CUDA_ERROR_INVALID_VALUE"; break;
        case kOutOfMemory: *out = "CUDA_ERROR_OUT_OF_MEMORY"; break;
        case kNotInitialized: *out = "CUDA_ERROR_NOT_INITIALIZED"; break;
        case kInvalidImage: *out = "CUDA_ERROR_INVALID_IMAGE"; break;
        case kInvalidPtx: *out = "CUDA_ERROR_INVALID_PTX"; break;
        case kNoBinaryForGpu: *out = "CUDA_ERROR_NO_BINARY_FOR_GPU"; break;
        case kInvalidContext: *out = "CUDA_ERROR_INVALID_CONTEXT"; break;
        case kInvalidDevice: *out = "CUDA_ERROR_INVALID_DEVICE"; break;
        case kNotSupported: *out = "CUDA_ERROR_NOT_SUPPORTED"; break;
        case kUnknown: *out = "CUDA_ERROR_UNKNOWN"; break;
        case kInvalidHandle: *out = "CUDA_ERROR_INVALID_HANDLE"; break;
        case kNotFound: *out = "CUDA_ERROR_NOT_FOUND"; break;
        case kNotReady: *out = "CUDA_ERROR_NOT_READY"; break;
        case kIllegalAddress: *out = "CUDA_ERROR_ILLEGAL_ADDRESS"; break;
        case kLaunchFailed: *out = "CUDA_ERROR_LAUNCH_FAILED"; break;
        default: *out = nullptr; return kInvalidValue;
    }
    return kSuccess;
}

CUresult cuGetErrorString(CUresult e, const char** out) {
    if (!out) return kInvalidValue;
    const char* name = nullptr;
    if (cuGetErrorName(e, &name) != kSuccess) {
        *out = nullptr;
        return kInvalidValue;
    }
    *out = name;
    return kSuccess;
}

}  // extern "C"
