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
//!
//! This file holds the emulator and its host buffers; [`kernels`] tests single kernels
//! and the emulator itself, [`top_k`] runs every top-k path against the reference.

mod build_key;
mod int8;
mod kernels;
mod top_k;

use super::program::{self, Arg, Buf, Launch, Program};
use super::{Half, Precision};
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

/// The emulator, built once for these sources (into a file of its own, then renamed, so
/// that test processes running at once never load a half-written one).
fn build() -> Result<PathBuf, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Path::new(env!("OUT_DIR")).join("emu");
    std::fs::create_dir_all(&out).map_err(|e| e.to_string())?;
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".into());
    let lib = out.join(format!(
        "libhvemu-{:016x}.so",
        build_key::sources_key(&cxx, "emu.cpp")
    ));
    if lib.is_file() {
        return Ok(lib);
    }
    let partial = lib.with_extension(format!("{}.partial", std::process::id()));
    let status = Command::new(&cxx)
        .args([
            "-std=c++17",
            "-O2",
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
        .arg(&partial)
        .arg(root.join("kernels/emu/emu.cpp"))
        .status()
        .map_err(|e| format!("{cxx}: {e}"))?;
    if !status.success() {
        panic!("the kernel emulator failed to compile ({cxx}: {status}); see the output above");
    }
    std::fs::rename(&partial, &lib).map_err(|e| format!("{}: {e}", lib.display()))?;
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
    /// The f32 corpus; `None` for a corpus kept as stored in 16 bits (`half`), so that a
    /// program reading an f32 copy fails.
    corpus: Option<HostBuf>,
    inv: HostBuf,
    half: HostBuf,
    mask: Option<HostBuf>,
    bias: Option<HostBuf>,
    /// The int8 tier's codes (i8) and row bounds (four f32 a row), for its programs.
    codes: Option<HostBuf>,
    code_bounds: Option<HostBuf>,
}

impl Inputs {
    fn buf<'a>(&'a mut self, b: Buf, temps: &'a mut [HostBuf]) -> &'a mut HostBuf {
        match b {
            Buf::Queries => &mut self.queries,
            Buf::Corpus => self
                .corpus
                .as_mut()
                .expect("the program reads an f32 corpus, and a 16-bit one keeps none"),
            Buf::InvNorms => &mut self.inv,
            Buf::CorpusHalf => &mut self.half,
            Buf::Mask => self.mask.as_mut().expect("a masked program without a mask"),
            Buf::Bias => self.bias.as_mut().expect("an L2 program without biases"),
            Buf::Codes => self.codes.as_mut().expect("an int8 program without codes"),
            Buf::CodeBounds => self
                .code_bounds
                .as_mut()
                .expect("an int8 program without row bounds"),
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
        let name = CString::new(l.kernel().symbol()).unwrap();
        // The kernel's parameters, by size, must be the program's arguments.
        let mut sizes = [0usize; 32];
        // SAFETY: `sizes` has room for 32 entries and the callee writes at most that many.
        let count = unsafe { (self.param_sizes)(name.as_ptr(), sizes.as_mut_ptr(), 32) };
        let want: Vec<usize> = l
            .args()
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
            l.kernel()
        );
        let mut values: Vec<u64> = l
            .args()
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
        let (grid, block) = (l.grid(), [l.block(), 1, 1]);
        // SAFETY: every pointer argument addresses a live HostBuf (the emulator reads and
        // writes through it, bounded by the guard check below), `params` holds one pointer
        // to an 8-byte little-endian value per parameter (a 4-byte int reads the low half),
        // and `err` has the stated length.
        let rc = unsafe {
            (self.launch)(
                name.as_ptr(),
                grid.as_ptr(),
                block.as_ptr(),
                l.smem(),
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
                l.kernel()
            );
        }
        for (name, b) in [
            ("queries", Some(&inputs.queries)),
            ("corpus", inputs.corpus.as_ref()),
            ("norms", Some(&inputs.inv)),
            ("16-bit copy", Some(&inputs.half)),
        ] {
            let Some(b) = b else { continue };
            assert!(
                b.guards_intact(),
                "seed {seed}: {:?} wrote outside {name}",
                l.kernel()
            );
        }
    }

    fn run(&self, p: &Program, inputs: &mut Inputs, seed: u64) -> Vec<HostBuf> {
        // As on the device, the bound buffers must cover what the program reaches.
        let need = p.extents();
        let len = |b: Option<&HostBuf>| b.map_or(0, |b| b.bytes / b.elem);
        assert!(
            len(Some(&inputs.queries)) >= need.queries
                && len(inputs.corpus.as_ref()) >= need.corpus
                && len(Some(&inputs.inv)) >= need.inv_norms
                && len(Some(&inputs.half)) >= need.corpus_half
                && len(inputs.mask.as_ref()) >= need.mask
                && len(inputs.bias.as_ref()) >= need.bias
                && len(inputs.codes.as_ref()) >= need.codes
                && len(inputs.code_bounds.as_ref()) >= need.code_bounds,
            "{need:?} reaches past the bound buffers"
        );
        // Scratch starts as garbage, as uninitialised device memory does, and attractive
        // garbage: 0x7F7F7F7F is the f32 3.4e38, which would outscore every real candidate,
        // so a launch that reads an element no earlier launch wrote fails the check.
        let mut temps: Vec<HostBuf> = p
            .temps()
            .iter()
            .map(|t| {
                let mut b = HostBuf::new(t.len() * t.elem().size(), t.elem().size());
                b.data_mut().fill(if t.zeroed() { 0 } else { 0x7F });
                b
            })
            .collect();
        for (i, l) in p.launches().iter().enumerate() {
            self.launch(l, inputs, &mut temps, seed.wrapping_add(i as u64));
        }
        temps
    }
}

/// A corpus on the emulated device: uploaded, with its norms from `hv_row_inv_norms` (in
/// two launches, as a store delta would be) and its 16-bit copy (in the format `precision`
/// reads, FP16 where it reads none) from `hv_rows_to_half`.
fn inputs(
    emu: &Emulator,
    q: &[f32],
    c: &[f32],
    dim: usize,
    live: Option<&[bool]>,
    precision: Precision,
) -> Inputs {
    let n = c.len() / dim;
    let mut inputs = Inputs {
        queries: HostBuf::from(q),
        corpus: Some(HostBuf::from(c)),
        inv: HostBuf::from(&vec![0f32; n]),
        half: HostBuf::from(&vec![0u16; n * dim]),
        mask: live.map(mask_bits),
        bias: None,
        codes: None,
        code_bounds: None,
    };
    let first = n / 3;
    for (row0, rows) in [(0, first), (first, n - first)] {
        if rows > 0 {
            emu.run(&program::inv_norms(row0, rows, dim), &mut inputs, 1);
        }
    }
    let half = precision.half().unwrap_or(Half::Fp16);
    emu.run(&program::rows_to_half(n, dim, half), &mut inputs, 2);
    inputs
}

/// The live mask of rows `live`, one bit each.
fn mask_bits(live: &[bool]) -> HostBuf {
    let mut bits = vec![0u32; live.len().div_ceil(32)];
    for (i, _) in live.iter().enumerate().filter(|(_, &on)| on) {
        bits[i / 32] |= 1 << (i % 32);
    }
    HostBuf::from(&bits)
}

/// A corpus kept on the emulated device as stored in `half`, as the backend keeps a 16-bit
/// store: its bits, the host's inverse norms of the stored values, and no f32 copy.
/// Returns the inputs and the stored values widened (what the scores must be exact for).
fn stored_inputs(
    q: &[f32],
    c: &[f32],
    dim: usize,
    live: Option<&[bool]>,
    half: crate::elem::Half,
) -> (Inputs, Vec<f32>) {
    let bits: Vec<u16> = c.iter().map(|&v| half.round(v)).collect();
    let wide: Vec<f32> = bits.iter().map(|&b| half.to_f32(b)).collect();
    let inv = crate::matrix::MatrixRef::new(&wide, c.len() / dim, dim)
        .and_then(crate::matrix::inverse_norms)
        .expect("norms of finite rows");
    let inputs = Inputs {
        queries: HostBuf::from(q),
        corpus: None,
        inv: HostBuf::from(&inv),
        half: HostBuf::from(&bits),
        mask: live.map(mask_bits),
        bias: None,
        codes: None,
        code_bounds: None,
    };
    (inputs, wide)
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

/// The emulator, or return from the test (after the skip line) when it cannot be built.
macro_rules! with_emulator {
    () => {
        match emulator() {
            Some(e) => e,
            None => return,
        }
    };
}
use with_emulator;
