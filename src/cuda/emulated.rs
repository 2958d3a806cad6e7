//! The kernels and launch programs of the CUDA backend, run on the CPU emulator of
//! `kernels/emu` against an f64 reference. This is how the device code is tested on
//! machines without a GPU: the emulator runs the real kernel sources (every CUDA thread a
//! fiber, barriers and warp collectives enforced), and the programs are the ones the
//! backend launches. Device timing, the driver and real memory are out of its reach;
//! `tests/cuda.rs` covers those on a GPU.
//!
//! The emulator is built with the system C++ compiler (`$CXX`, else `c++`). Without one
//! these tests print a skip line, unless `HYBRIDVEC_REQUIRE_EMULATOR` is set (CI sets
//! it), which makes a missing compiler a failure.

use super::program::{self, Arg, Buf, Kernel, Launch, Program, Shape};
use super::Precision;
use crate::data;
use std::ffi::{c_char, c_int, c_void, CString};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

type LaunchFn = unsafe extern "C" fn(
    *const c_char,
    *const u32,
    *const u32,
    u32,
    *mut *mut c_void,
    u64,
    *mut c_char,
    usize,
) -> c_int;
type ParamSizesFn = unsafe extern "C" fn(*const c_char, *mut usize, usize) -> c_int;

struct Emulator {
    _lib: libloading::Library,
    launch: LaunchFn,
    param_sizes: ParamSizesFn,
}

fn build() -> Result<PathBuf, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Path::new(env!("OUT_DIR")).join("emu");
    std::fs::create_dir_all(&out).map_err(|e| e.to_string())?;
    let lib = out.join(format!("libhvemu-{}.so", std::process::id()));
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".into());
    let status = Command::new(&cxx)
        .args([
            "-std=c++17",
            "-O1",
            "-shared",
            "-fPIC",
            "-Wall",
            "-Wextra",
            "-Werror",
        ])
        .args(["-Wno-unknown-pragmas", "-Wno-unused-parameter"])
        // Fibers switch stacks with _longjmp, which the fortified variant refuses.
        .arg("-U_FORTIFY_SOURCE")
        .arg("-o")
        .arg(&lib)
        .arg(root.join("kernels/emu/emu.cpp"))
        .status()
        .map_err(|e| format!("{cxx}: {e}"))?;
    if !status.success() {
        panic!("the kernel emulator failed to compile ({cxx}: {status}); see the output above");
    }
    Ok(lib)
}

fn emulator() -> Option<&'static Emulator> {
    static EMU: OnceLock<Option<Emulator>> = OnceLock::new();
    EMU.get_or_init(|| {
        let path = match build() {
            Ok(p) => p,
            Err(e) if std::env::var_os("HYBRIDVEC_REQUIRE_EMULATOR").is_some() => {
                panic!("no C++ compiler for the kernel emulator: {e}")
            }
            Err(e) => {
                eprintln!("SKIP (no C++ compiler for the kernel emulator): {e}");
                return None;
            }
        };
        // SAFETY: the library was just built from kernels/emu/emu.cpp; loading it runs no
        // initialisers beyond the C++ runtime's.
        let lib = unsafe { libloading::Library::new(&path) }.expect("load the emulator");
        let _ = std::fs::remove_file(&path);
        // SAFETY: emu.cpp defines both symbols with exactly these C signatures.
        let (launch, param_sizes) = unsafe {
            (
                *lib.get::<LaunchFn>(b"hv_emu_launch\0")
                    .expect("hv_emu_launch"),
                *lib.get::<ParamSizesFn>(b"hv_emu_param_sizes\0")
                    .expect("hv_emu_param_sizes"),
            )
        };
        Some(Emulator {
            _lib: lib,
            launch,
            param_sizes,
        })
    })
    .as_ref()
}

/// Guard bytes on each side of every buffer, checked after every launch.
const GUARD: usize = 256;
const CANARY: u8 = 0xA5;

/// Host memory standing in for a device buffer: 16-byte aligned, between guard zones.
struct HostBuf {
    words: Vec<u128>,
    bytes: usize,
    elem: usize,
}

impl HostBuf {
    fn new(bytes: usize, elem: usize) -> Self {
        let mut words = vec![0u128; (2 * GUARD + bytes).div_ceil(16)];
        let all: &mut [u8] = bytemuck::cast_slice_mut(&mut words);
        all[..GUARD].fill(CANARY);
        all[GUARD + bytes..].fill(CANARY);
        Self { words, bytes, elem }
    }

    fn from<T: bytemuck::Pod>(v: &[T]) -> Self {
        let mut b = Self::new(std::mem::size_of_val(v), std::mem::size_of::<T>());
        b.data_mut().copy_from_slice(bytemuck::cast_slice(v));
        b
    }

    fn data_mut(&mut self) -> &mut [u8] {
        let bytes = self.bytes;
        &mut bytemuck::cast_slice_mut::<u128, u8>(&mut self.words)[GUARD..GUARD + bytes]
    }

    fn data(&self) -> &[u8] {
        &bytemuck::cast_slice::<u128, u8>(&self.words)[GUARD..GUARD + self.bytes]
    }

    fn get<T: bytemuck::Pod>(&self) -> Vec<T> {
        let mut v = vec![T::zeroed(); self.bytes / std::mem::size_of::<T>()];
        bytemuck::cast_slice_mut::<T, u8>(&mut v).copy_from_slice(self.data());
        v
    }

    fn address(&mut self, offset: usize) -> u64 {
        assert!(
            offset * self.elem < self.bytes.max(1),
            "offset past the buffer"
        );
        let base = bytemuck::cast_slice_mut::<u128, u8>(&mut self.words).as_mut_ptr();
        base as u64 + (GUARD + offset * self.elem) as u64
    }

    fn guards_intact(&self) -> bool {
        let all: &[u8] = bytemuck::cast_slice(&self.words);
        all[..GUARD].iter().all(|&b| b == CANARY)
            && all[GUARD + self.bytes..].iter().all(|&b| b == CANARY)
    }
}

/// Inputs of a program, as the device would hold them.
struct Inputs {
    queries: HostBuf,
    corpus: HostBuf,
    inv: HostBuf,
    half: HostBuf,
    mask: Option<HostBuf>,
}

impl Inputs {
    fn buf<'a>(&'a mut self, b: Buf, temps: &'a mut [HostBuf]) -> &'a mut HostBuf {
        match b {
            Buf::Queries => &mut self.queries,
            Buf::Corpus => &mut self.corpus,
            Buf::InvNorms => &mut self.inv,
            Buf::CorpusF16 => &mut self.half,
            Buf::Mask => self.mask.as_mut().expect("a masked program without a mask"),
            Buf::Temp(i) => &mut temps[i],
        }
    }
}

fn seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    t.as_nanos() as u64 ^ 0x9e37_79b9_7f4a_7c15
}

impl Emulator {
    fn launch(&self, l: &Launch, inputs: &mut Inputs, temps: &mut [HostBuf], seed: u64) {
        let name = CString::new(l.kernel.symbol()).unwrap();
        // The kernel's parameters, by size, must be the program's arguments.
        let mut sizes = [0usize; 32];
        // SAFETY: `sizes` has room for 32 entries and the callee writes at most that many.
        let count = unsafe { (self.param_sizes)(name.as_ptr(), sizes.as_mut_ptr(), 32) };
        let want: Vec<usize> = l
            .args
            .iter()
            .map(|a| match a {
                Arg::I32(_) => 4,
                _ => 8,
            })
            .collect();
        assert_eq!(
            &sizes[..count as usize],
            &want[..],
            "{:?} parameters",
            l.kernel
        );
        let mut values: Vec<u64> = l
            .args
            .iter()
            .map(|a| match *a {
                Arg::Ptr(b, off) => inputs.buf(b, temps).address(off),
                Arg::Null => 0,
                Arg::I32(v) => v as u32 as u64,
                Arg::I64(v) => v as u64,
            })
            .collect();
        let mut params: Vec<*mut c_void> = values
            .iter_mut()
            .map(|v| v as *mut u64 as *mut c_void)
            .collect();
        let mut err = vec![0 as c_char; 512];
        let block = [l.block, 1, 1];
        // SAFETY: every pointer argument addresses a live HostBuf (the emulator reads and
        // writes through it, bounded by the guard check below), `params` holds one pointer
        // to an 8-byte little-endian value per parameter (a 4-byte int reads the low half),
        // and `err` has the stated length.
        let rc = unsafe {
            (self.launch)(
                name.as_ptr(),
                l.grid.as_ptr(),
                block.as_ptr(),
                l.smem,
                params.as_mut_ptr(),
                seed,
                err.as_mut_ptr(),
                err.len(),
            )
        };
        // SAFETY: the emulator writes a NUL-terminated message into `err`.
        let msg = unsafe { std::ffi::CStr::from_ptr(err.as_ptr()) };
        assert_eq!(rc, 0, "seed {seed}: {}", msg.to_string_lossy());
        for (i, t) in temps.iter().enumerate() {
            assert!(
                t.guards_intact(),
                "seed {seed}: {:?} wrote outside Temp({i})",
                l.kernel
            );
        }
        for (name, b) in [
            ("queries", &inputs.queries),
            ("corpus", &inputs.corpus),
            ("norms", &inputs.inv),
            ("fp16 copy", &inputs.half),
        ] {
            assert!(
                b.guards_intact(),
                "seed {seed}: {:?} wrote outside {name}",
                l.kernel
            );
        }
    }

    fn run(&self, p: &Program, inputs: &mut Inputs, seed: u64) -> Vec<HostBuf> {
        // Scratch starts as garbage, as uninitialised device memory does, and attractive
        // garbage: 0x7F7F7F7F is the f32 3.4e38, which would outscore every real candidate,
        // so a launch that reads an element no earlier launch wrote fails the check.
        let mut temps: Vec<HostBuf> = p
            .temps
            .iter()
            .map(|t| {
                let mut b = HostBuf::new(t.len * t.elem.size(), t.elem.size());
                b.data_mut().fill(if t.zeroed { 0 } else { 0x7F });
                b
            })
            .collect();
        for (i, l) in p.launches.iter().enumerate() {
            self.launch(l, inputs, &mut temps, seed.wrapping_add(i as u64));
        }
        temps
    }
}

/// A corpus on the emulated device: uploaded, with its norms from `hv_row_inv_norms` (in
/// two launches, as a store delta would be) and its FP16 copy from `hv_rows_to_half`.
fn inputs(emu: &Emulator, q: &[f32], c: &[f32], dim: usize, live: Option<&[bool]>) -> Inputs {
    let n = c.len() / dim;
    let mut inputs = Inputs {
        queries: HostBuf::from(q),
        corpus: HostBuf::from(c),
        inv: HostBuf::from(&vec![0f32; n]),
        half: HostBuf::from(&vec![0u16; n * dim]),
        mask: live.map(|l| {
            let mut bits = vec![0u32; n.div_ceil(32)];
            for (i, _) in l.iter().enumerate().filter(|(_, &on)| on) {
                bits[i / 32] |= 1 << (i % 32);
            }
            HostBuf::from(&bits)
        }),
    };
    let first = n / 3;
    for (row0, rows) in [(0, first), (first, n - first)] {
        if rows > 0 {
            emu.launch(
                &program::inv_norms(row0, rows, dim),
                &mut inputs,
                &mut [],
                1,
            );
        }
    }
    emu.launch(&program::rows_to_half(n, dim), &mut inputs, &mut [], 2);
    inputs
}

fn unit(v: &[f32], dim: usize) -> Vec<f32> {
    v.chunks(dim)
        .flat_map(|r| {
            let n = r.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt();
            r.iter()
                .map(move |&x| if n > 0.0 { (x as f64 / n) as f32 } else { 0.0 })
        })
        .collect()
}

struct Case {
    nq: usize,
    n: usize,
    dim: usize,
    k: usize,
    precision: Precision,
    /// Rows per chunk of the unfused path.
    chunk: usize,
    /// Every `delete`-th row deleted (0: none).
    delete: usize,
    /// The path the program must take, when the case is about one.
    expect: Option<Taken>,
    /// Every row 7i + 3 a copy of row 3, and query 0 its direction, to make exact ties.
    duplicates: bool,
    /// Every row the filtered path samples pointing away from query 0, so that its
    /// floor lets every row through.
    adversarial: bool,
    /// The rows in ascending order of their score for query 0 (the best last).
    sorted: bool,
}

impl Case {
    fn new(nq: usize, n: usize, dim: usize, k: usize) -> Self {
        Self {
            nq,
            n,
            dim,
            k,
            precision: Precision::Fp32,
            chunk: 4096,
            delete: 0,
            duplicates: false,
            adversarial: false,
            sorted: false,
            expect: None,
        }
    }
}

/// Which way an emulated top-k went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Taken {
    /// Fused, or chunked from the start.
    Direct,
    /// Filtered by a sampled floor, within the lists' capacity.
    Filtered,
    /// Filtered, overflowed, and redone in chunks (as the backend does).
    FellBack,
}

/// The backend's top-k on the emulator, as `CudaBackend::top_k_device` runs it: the
/// program for the shape, and the chunked one when a filtered program overflows.
fn emulated_top_k(
    emu: &Emulator,
    shape: &Shape,
    k: usize,
    chunk: usize,
    inputs: &mut Inputs,
    seed: u64,
) -> (Vec<f32>, Vec<i64>, Taken) {
    let read = |p: &Program, temps: &[HostBuf]| {
        let (Buf::Temp(si), Buf::Temp(ii)) = (p.scores, p.indices) else {
            unreachable!("top-k results are scratch")
        };
        (temps[si].get::<f32>(), temps[ii].get::<i64>())
    };
    let p = program::top_k(shape, k, chunk);
    let temps = emu.run(&p, inputs, seed);
    let Some((Buf::Temp(ci), cap)) = p.counts else {
        let (s, i) = read(&p, &temps);
        return (s, i, Taken::Direct);
    };
    if !program::overflowed(&temps[ci].get::<u32>(), cap) {
        let (s, i) = read(&p, &temps);
        return (s, i, Taken::Filtered);
    }
    let p = program::top_k_chunked(shape, k, chunk);
    let temps = emu.run(&p, inputs, seed);
    let (s, i) = read(&p, &temps);
    (s, i, Taken::FellBack)
}

/// Runs the backend's top-k program for `case` on the emulator and checks it against the
/// f64 reference: the right count, scores within the precision's tolerance, best first
/// with ties by lower row, and no row left out that beats a returned one by more than
/// the tolerance.
fn check_top_k(emu: &Emulator, case: &Case) {
    let seed = seed();
    let Case { nq, n, dim, k, .. } = *case;
    let mut c = data::random_matrix(n, dim, seed);
    if case.duplicates {
        // Every row 7i + 3 is row 3, and so is query 0: its best score is held by
        // ~n/7 rows, more than k, so only the lowest of them may be returned. Other
        // queries meet the tie at random places.
        for r in (10..n).step_by(7) {
            c.copy_within(3 * dim..4 * dim, r * dim);
        }
    }
    let mut q = unit(&data::random_matrix(nq, dim, seed ^ 1), dim);
    if case.duplicates {
        q[..dim].copy_from_slice(&unit(&c[3 * dim..4 * dim], dim));
    }
    if case.adversarial {
        let sampled = program::sampled_rows(n, k).expect("an adversarial case is filtered");
        for r in sampled.into_iter().flatten() {
            for (x, &qv) in c[r * dim..(r + 1) * dim].iter_mut().zip(&q[..dim]) {
                *x = -qv;
            }
        }
    }
    if case.sorted {
        let dot = |r: usize| -> f64 {
            let row = &c[r * dim..(r + 1) * dim];
            let norm = row.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt();
            row.iter()
                .zip(&q[..dim])
                .map(|(&x, &y)| x as f64 * y as f64)
                .sum::<f64>()
                / norm
        };
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| dot(a).total_cmp(&dot(b)));
        c = order
            .iter()
            .flat_map(|&r| c[r * dim..(r + 1) * dim].to_vec())
            .collect();
    }
    let live: Vec<bool> = (0..n)
        .map(|r| case.delete == 0 || r % case.delete != 1)
        .collect();
    let masked = case.delete != 0;
    let mut inp = inputs(emu, &q, &c, dim, masked.then_some(&live[..]));
    let shape = Shape {
        nq,
        n,
        dim,
        masked,
        precision: case.precision,
        sms: 2,
    };
    let (scores, idx, path) = emulated_top_k(emu, &shape, k, case.chunk, &mut inp, seed);
    if let Some(want) = case.expect {
        assert_eq!(path, want, "seed {seed}: the path taken");
    }
    let want = data::cosine_reference(&q, &c, dim);
    let tol = case.precision.score_tolerance() as f64;
    let ctx = format!(
        "seed {seed}, Q={nq} N={n} D={dim} k={k} {:?} chunk {} delete {} dup {}",
        case.precision, case.chunk, case.delete, case.duplicates
    );
    let live_rows = live.iter().filter(|&&l| l).count();
    for qi in 0..nq {
        let w = &want[qi];
        let got: Vec<(usize, f32)> = (0..k)
            .filter(|&j| idx[qi * k + j] >= 0)
            .map(|j| (idx[qi * k + j] as usize, scores[qi * k + j]))
            .collect();
        assert_eq!(got.len(), k.min(live_rows), "{ctx} query {qi}: hit count");
        assert!(
            (0..k).all(|j| (idx[qi * k + j] >= 0) == (j < got.len())),
            "{ctx}: absent slots must come last"
        );
        let mut seen = vec![false; n];
        for (j, &(row, s)) in got.iter().enumerate() {
            assert!(
                row < n && live[row],
                "{ctx} query {qi}: row {row} is not live"
            );
            assert!(!seen[row], "{ctx} query {qi}: row {row} twice");
            seen[row] = true;
            assert!(
                (s as f64 - w[row]).abs() <= tol,
                "{ctx} query {qi} rank {j}: score {s} vs exact {}",
                w[row]
            );
            if j > 0 {
                let (prev_row, prev) = got[j - 1];
                assert!(
                    prev > s || (prev == s && prev_row < row),
                    "{ctx} query {qi}: rank {j} out of order ({prev_row}: {prev}, {row}: {s})"
                );
            }
        }
        // Nothing left out beats the last hit by more than twice the tolerance.
        let last = got.last().map_or(f64::NEG_INFINITY, |&(r, _)| w[r]);
        for r in (0..n).filter(|&r| live[r] && !seen[r]) {
            assert!(
                w[r] <= last + 2.0 * tol,
                "{ctx} query {qi}: row {r} ({}) missing, last hit {last}",
                w[r]
            );
        }
        if case.duplicates {
            // Equal rows score bit-equal: the lower ones must win the tie.
            let copies: Vec<usize> = (3..n).step_by(7).filter(|&r| live[r]).collect();
            for &(row, _) in &got {
                if let Some(at) = copies.iter().position(|&c| c == row) {
                    let skipped = copies[..at].iter().find(|&&c| !seen[c]);
                    assert!(
                        skipped.is_none(),
                        "{ctx} query {qi}: row {row} kept over {skipped:?}"
                    );
                }
            }
            if qi == 0 {
                let first = &copies[..copies.len().min(k)];
                let rows: Vec<usize> = got.iter().map(|&(r, _)| r).collect();
                assert_eq!(rows[..first.len()], first[..], "{ctx}: query 0");
            }
        }
    }
}

macro_rules! with_emulator {
    () => {
        match emulator() {
            Some(e) => e,
            None => return,
        }
    };
}

#[test]
fn the_emulator_catches_a_barrier_that_not_every_thread_reaches() {
    let emu = with_emulator!();
    let name = CString::new("hv_emu_selftest_divergent_barrier").unwrap();
    let mut err = vec![0 as c_char; 256];
    // SAFETY: the self-test kernel takes no parameters; `err` has the stated length.
    let rc = unsafe {
        (emu.launch)(
            name.as_ptr(),
            [1, 1, 1].as_ptr(),
            [64, 1, 1].as_ptr(),
            0,
            std::ptr::null_mut(),
            seed(),
            err.as_mut_ptr(),
            err.len(),
        )
    };
    // SAFETY: the emulator writes a NUL-terminated message.
    let msg = unsafe { std::ffi::CStr::from_ptr(err.as_ptr()) }.to_string_lossy();
    assert_eq!(rc, 1);
    assert!(msg.contains("deadlock"), "{msg}");
}

#[test]
fn the_emulator_exposes_a_missing_barrier() {
    let emu = with_emulator!();
    // Thread i writes slot i of shared memory and reads slot i + 1 with no barrier in
    // between: under a random schedule some thread reads before its neighbour wrote.
    let out = HostBuf::new(256 * 4, 4);
    let mut inputs = Inputs {
        queries: out,
        corpus: HostBuf::new(4, 4),
        inv: HostBuf::new(4, 4),
        half: HostBuf::new(4, 2),
        mask: None,
    };
    let base = (seed() % 1000) as f32;
    let mut ptr = inputs.queries.address(0);
    let mut base_value = base;
    let mut params = [
        &mut ptr as *mut u64 as *mut c_void,
        &mut base_value as *mut f32 as *mut c_void,
    ];
    let name = CString::new("hv_emu_selftest_race").unwrap();
    let mut err = vec![0 as c_char; 256];
    // SAFETY: the self-test kernel takes a pointer to 256 floats, which `ptr` is, and a
    // float, which `base_value` is.
    let rc = unsafe {
        (emu.launch)(
            name.as_ptr(),
            [1, 1, 1].as_ptr(),
            [256, 1, 1].as_ptr(),
            0,
            params.as_mut_ptr(),
            seed(),
            err.as_mut_ptr(),
            err.len(),
        )
    };
    assert_eq!(rc, 0);
    let got: Vec<f32> = inputs.queries.get();
    let wrong = (0..256)
        .filter(|&i| got[i] != ((i + 1) % 256) as f32)
        .count();
    assert!(
        wrong > 0,
        "every thread saw its neighbour's write without a barrier"
    );
}

#[test]
fn row_norms_match_f64_across_a_delta_upload() {
    let emu = with_emulator!();
    let (n, dim) = (301, 37);
    let mut c = data::random_matrix(n, dim, seed());
    c[5 * dim..6 * dim].fill(0.0);
    let inp = inputs(emu, &[0.0; 37], &c, dim, None);
    let inv: Vec<f32> = inp.inv.get();
    for (r, row) in c.chunks(dim).enumerate() {
        let norm = row.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt();
        let want = if norm > 0.0 { 1.0 / norm } else { 0.0 };
        assert!(
            (inv[r] as f64 - want).abs() <= 1e-6 * want,
            "row {r}: {} vs {want}",
            inv[r]
        );
    }
}

#[test]
fn fused_small_batch_top_k_matches_the_reference() {
    let emu = with_emulator!();
    for (nq, dim, k) in [(1, 16, 10), (3, 17, 1), (8, 12, 32)] {
        check_top_k(emu, &Case::new(nq, 5000, dim, k));
    }
}

#[test]
fn fused_tiled_top_k_matches_the_reference() {
    let emu = with_emulator!();
    for (nq, n, dim, k) in [(70, 3000, 24, 10), (9, 700, 8, 32), (64, 200, 33, 1)] {
        check_top_k(emu, &Case::new(nq, n, dim, k));
    }
}

#[test]
fn tf32_and_fp16_top_k_are_within_their_documented_tolerance() {
    let emu = with_emulator!();
    for precision in [Precision::Tf32, Precision::Fp16] {
        // Tiled (fused), small-batch (fused; FP16 reads the half copy), unfused.
        for (nq, n, dim, k) in [(70, 3000, 24, 10), (9, 700, 40, 32), (3, 2000, 16, 10)] {
            check_top_k(
                emu,
                &Case {
                    precision,
                    ..Case::new(nq, n, dim, k)
                },
            );
        }
        check_top_k(
            emu,
            &Case {
                precision,
                delete: 5,
                ..Case::new(20, 5000, 8, 50)
            },
        );
    }
}

#[test]
fn the_fp16_copy_is_the_unit_norm_corpus_rounded() {
    let emu = with_emulator!();
    let (n, dim) = (200, 24);
    let c = data::random_matrix(n, dim, seed());
    let inp = inputs(emu, &[0.0; 24], &c, dim, None);
    let half: Vec<u16> = inp.half.get();
    let want = unit(&c, dim);
    for (i, (&h, &w)) in half.iter().zip(&want).enumerate() {
        // Round to nearest: within half a unit in the last place (2^-11 relative), or the
        // subnormal spacing.
        let got = f16_to_f32(h);
        assert!(
            (got - w).abs() <= w.abs() * (1.0 / 2048.0) + 6e-8,
            "element {i}: {got} vs {w}"
        );
    }
}

/// IEEE binary16 bits → f32 (test-side decoding, independent of the emulator's).
fn f16_to_f32(h: u16) -> f32 {
    let sign = if h & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exp = ((h >> 10) & 0x1f) as i32;
    let frac = (h & 0x3ff) as f32;
    match exp {
        0 => sign * frac * 2f32.powi(-24),
        31 => sign * f32::INFINITY,
        _ => sign * (1.0 + frac / 1024.0) * 2f32.powi(exp - 15),
    }
}

#[test]
fn unfused_top_k_over_several_chunks_matches_the_reference() {
    let emu = with_emulator!();
    // k above the fused limit: scores in chunks of 4096 rows, then merge passes.
    check_top_k(emu, &Case::new(9, 9000, 16, 100));
    // Chunks of two segments, the last one short: its missing segment must read as empty.
    check_top_k(
        emu,
        &Case {
            chunk: 8192,
            ..Case::new(9, 9000, 16, 100)
        },
    );
    check_top_k(emu, &Case::new(2, 5000, 8, 1000));
    // More k than rows: every row, in order.
    check_top_k(emu, &Case::new(3, 700, 8, 1024));
}

#[test]
fn large_k_filtered_by_a_sampled_floor_matches_the_reference() {
    let emu = with_emulator!();
    for (nq, k, precision) in [
        (2, 40, Precision::Fp32),
        (70, 100, Precision::Fp32),
        (9, 64, Precision::Tf32),
        (3, 50, Precision::Fp16),
    ] {
        check_top_k(
            emu,
            &Case {
                precision,
                expect: Some(Taken::Filtered),
                ..Case::new(nq, 20_000, 8, k)
            },
        );
    }
    // With deletes and exact ties at the floor.
    check_top_k(
        emu,
        &Case {
            delete: 3,
            duplicates: true,
            expect: Some(Taken::Filtered),
            ..Case::new(2, 20_000, 8, 40)
        },
    );
}

#[test]
fn a_corpus_in_score_order_is_still_filtered() {
    // A sample of the first rows would see only query 0's worst rows and let every row
    // through; stretches spread to the last row see its best.
    let emu = with_emulator!();
    for nq in [1, 9] {
        check_top_k(
            emu,
            &Case {
                sorted: true,
                expect: Some(Taken::Filtered),
                ..Case::new(nq, 20_000, 8, 40)
            },
        );
    }
}

#[test]
fn a_floor_that_lets_too_much_through_falls_back_to_chunks() {
    let emu = with_emulator!();
    for nq in [1, 9] {
        check_top_k(
            emu,
            &Case {
                adversarial: true,
                expect: Some(Taken::FellBack),
                ..Case::new(nq, 20_000, 8, 40)
            },
        );
    }
}

#[test]
fn deleted_rows_are_never_returned() {
    let emu = with_emulator!();
    for (nq, k) in [(2, 10), (20, 10), (2, 64)] {
        check_top_k(
            emu,
            &Case {
                delete: 4,
                ..Case::new(nq, 3000, 16, k)
            },
        );
    }
}

#[test]
fn exact_ties_keep_the_lower_row() {
    let emu = with_emulator!();
    for (nq, k, precision) in [
        (1, 20, Precision::Fp32),
        (16, 20, Precision::Fp32),
        (70, 20, Precision::Tf32),
        (70, 20, Precision::Fp16),
        (2, 20, Precision::Fp16),
        (2, 200, Precision::Fp32),
    ] {
        check_top_k(
            emu,
            &Case {
                duplicates: true,
                precision,
                ..Case::new(nq, 3000, 16, k)
            },
        );
    }
}

#[test]
fn cosine_chunks_match_the_reference() {
    let emu = with_emulator!();
    for (nq, precision) in [
        (3, Precision::Fp32),
        (70, Precision::Fp32),
        (70, Precision::Tf32),
        (3, Precision::Fp16),
        (70, Precision::Fp16),
    ] {
        let seed = seed();
        let (n, dim) = (900, 20);
        let c = data::random_matrix(n, dim, seed);
        let q = unit(&data::random_matrix(nq, dim, seed ^ 1), dim);
        let mut inp = inputs(emu, &q, &c, dim, None);
        let shape = Shape {
            nq,
            n,
            dim,
            masked: false,
            precision,
            sms: 2,
        };
        let want = data::cosine_reference(&q, &c, dim);
        let tol = precision.score_tolerance() as f64;
        let (row0, rows) = (130, 700);
        let p = program::cosine_chunk(&shape, row0, rows);
        let got: Vec<f32> = emu.run(&p, &mut inp, seed)[0].get();
        for qi in 0..nq {
            for i in 0..rows {
                let (g, w) = (got[qi * rows + i] as f64, want[qi][row0 + i]);
                assert!(
                    (g - w).abs() <= tol,
                    "seed {seed} Q={nq} {precision:?}: query {qi} row {}: {g} vs {w}",
                    row0 + i
                );
            }
        }
    }
}

#[test]
fn every_kernel_is_in_the_emulator() {
    let emu = with_emulator!();
    for k in Kernel::ALL {
        let name = CString::new(k.symbol()).unwrap();
        let mut sizes = [0usize; 32];
        // SAFETY: `sizes` has room for the 32 entries the callee may write.
        let count = unsafe { (emu.param_sizes)(name.as_ptr(), sizes.as_mut_ptr(), 32) };
        assert!(count > 0, "{k:?} is not built into the emulator");
    }
}
