//! This machine's read bandwidth: a streaming sum over a 2 GiB buffer (or `--mib N`), on
//! one thread and on all of them, median of 5 passes after one warm-up pass. Prints one
//! JSON object. `scripts/cpu-ceilings.sh` runs it beside the SGEMM rate, so benchmark
//! figures can be given as a fraction of what the machine can do.
//!
//! ```sh
//! cargo run --release --example read_bandwidth -- --mib 2048
//! ```

use rayon::prelude::*;
use std::hint::black_box;
use std::time::Instant;

/// Sum of `v` with 16 independent accumulators, so the loop is bound by loads, not by
/// the latency of one addition chain (the compiler vectorises it, with AVX2 where the
/// CPU has it, so that the loads and not the adds are the limit).
fn sum(v: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 was just detected.
        return unsafe { sum_avx2(v) };
    }
    sum_portable(v)
}

/// [`sum_portable`] compiled for AVX2.
///
/// # Safety
/// The CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn sum_avx2(v: &[f32]) -> f32 {
    sum_portable(v)
}

#[inline(always)]
fn sum_portable(v: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let mut chunks = v.chunks_exact(16);
    for c in &mut chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a += x;
        }
    }
    acc.iter().sum::<f32>() + chunks.remainder().iter().sum::<f32>()
}

/// Median seconds of 5 passes of `f` after a warm-up pass.
fn median(mut f: impl FnMut() -> f32) -> f64 {
    black_box(f());
    let mut t: Vec<f64> = (0..5)
        .map(|_| {
            let start = Instant::now();
            black_box(f());
            start.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[2]
}

/// `MemAvailable` of `/proc/meminfo`, in MiB (Linux only).
fn available_mib() -> Option<usize> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: usize = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

/// Asks for transparent huge pages on the (still untouched) buffer, as hybridvec does for
/// its corpora and numpy for its arrays: the ceiling is measured on the same kind of pages.
#[cfg(target_os = "linux")]
fn advise_huge_pages(v: &Vec<f32>) {
    const HUGE: usize = 2 << 20;
    let start = (v.as_ptr() as usize).next_multiple_of(HUGE);
    let end = (v.as_ptr() as usize + v.capacity() * 4) / HUGE * HUGE;
    if end > start {
        // SAFETY: `[start, end)` lies inside the allocation of `v`; MADV_HUGEPAGE changes
        // only how the kernel backs it, and a failure is harmless (ignored).
        unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE) };
    }
}

#[cfg(not(target_os = "linux"))]
fn advise_huge_pages(_: &Vec<f32>) {}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mib: usize = match args.iter().position(|a| a == "--mib") {
        Some(i) => match args.get(i + 1).and_then(|v| v.parse().ok()) {
            Some(m) if m > 0 => m,
            _ => {
                eprintln!("error: --mib takes a positive number of MiB");
                std::process::exit(2);
            }
        },
        None => 2048,
    };
    let Some(len) = mib.checked_mul(1 << 20).map(|b| b / 4) else {
        eprintln!("error: --mib {mib} is too large for this platform");
        std::process::exit(2);
    };
    // Overcommit would let a reservation past the memory succeed and the fill be killed.
    if let Some(avail) = available_mib() {
        if mib >= avail {
            eprintln!("error: --mib {mib}: only {avail} MiB of memory is available");
            std::process::exit(2);
        }
    }
    let mut data: Vec<f32> = Vec::new();
    if data.try_reserve_exact(len).is_err() {
        eprintln!("error: --mib {mib}: cannot allocate the buffer");
        std::process::exit(2);
    }
    advise_huge_pages(&data);
    data.extend((0..len).map(|i| (i % 7) as f32));
    let bytes = (len * 4) as f64;
    let one = median(|| sum(&data));
    let threads = rayon::current_num_threads();
    let per = len.div_ceil(threads);
    let all = median(|| data.par_chunks(per).map(sum).sum());
    let line = format!(
        "{{\"buffer_mib\": {mib}, \"threads\": {threads}, \"read_gbps_1_thread\": {:.1}, \"read_gbps_all_threads\": {:.1}}}",
        bytes / one / 1e9,
        bytes / all / 1e9
    );
    use std::io::Write;
    if let Err(e) = writeln!(std::io::stdout().lock(), "{line}") {
        eprintln!("error: standard output: {e}");
        std::process::exit(2);
    }
}
