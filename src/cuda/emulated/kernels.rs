//! Single kernels on the emulator: the emulator's own checks (barriers), the corpus's
//! norms and FP16 copy, cosine chunks, and the kernel table against what it has built.

use super::{emulator, inputs, seed, unit, with_emulator, HostBuf, Inputs};
use crate::cuda::program::{self, Kernel, Shape};
use crate::cuda::Precision;
use crate::data;
use std::ffi::{c_char, c_void, CString};

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
        corpus: None,
        inv: HostBuf::new(4, 4),
        half: HostBuf::new(4, 2),
        mask: None,
        bias: None,
        codes: None,
        code_bounds: None,
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
    let inp = inputs(emu, &[0.0; 37], &c, dim, None, Precision::Fp32);
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
fn the_16_bit_copies_are_the_unit_norm_corpus_rounded() {
    let emu = with_emulator!();
    let (n, dim) = (200, 24);
    let c = data::random_matrix(n, dim, seed());
    let want = unit(&c, dim);
    // Round to nearest: within half a unit in the last place (2^-11 relative for FP16,
    // 2^-8 for BF16, plus the f32 product's rounding), or FP16's subnormal spacing.
    type Decode = fn(u16) -> f32;
    let formats: [(Precision, Decode, f32); 2] = [
        (Precision::Fp16, f16_to_f32, 1.0 / 2048.0),
        (Precision::Bf16, bf16_to_f32, 1.0 / 256.0),
    ];
    for (precision, decode, half_ulp) in formats {
        let inp = inputs(emu, &[0.0; 24], &c, dim, None, precision);
        let copy: Vec<u16> = inp.half.get();
        for (i, (&h, &w)) in copy.iter().zip(&want).enumerate() {
            let got = decode(h);
            assert!(
                (got - w).abs() <= w.abs() * (half_ulp + 1e-6) + 6e-8,
                "{precision:?} element {i}: {got} vs {w}"
            );
        }
    }
}

/// bfloat16 bits → f32 (test-side decoding: the upper half of an f32).
fn bf16_to_f32(h: u16) -> f32 {
    f32::from_bits(u32::from(h) << 16)
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
fn cosine_chunks_match_the_reference() {
    let emu = with_emulator!();
    for (nq, precision, gemm) in [
        (3, Precision::Fp32, false),
        (70, Precision::Fp32, false),
        (70, Precision::Tf32, false),
        (3, Precision::Fp16, false),
        (70, Precision::Fp16, false),
        (3, Precision::Fp32, true),
        (70, Precision::Tf32, true),
        (5, Precision::Fp16, true),
        (3, Precision::Bf16, false),
        (70, Precision::Bf16, false),
        (70, Precision::Bf16, true),
    ] {
        let seed = seed();
        let (n, dim) = (900, 20);
        let c = data::random_matrix(n, dim, seed);
        let q = unit(&data::random_matrix(nq, dim, seed ^ 1), dim);
        let mut inp = inputs(emu, &q, &c, dim, None, precision);
        let shape = Shape {
            nq,
            n,
            dim,
            masked: false,
            precision,
            stored: None,
            metric: crate::metric::Metric::Cosine,
            sms: 2,
            gemm,
            occupancy: Default::default(),
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
                    "seed {seed} Q={nq} {precision:?} gemm {gemm}: query {qi} row {}: {g} vs {w}",
                    row0 + i
                );
            }
        }
    }
}

#[test]
fn every_kernel_is_in_the_emulator() {
    let emu = with_emulator!();
    let gemm = [
        Kernel::GemmFp32,
        Kernel::GemmTf32,
        Kernel::GemmFp16,
        Kernel::GemmBf16,
    ];
    for k in Kernel::ALL.into_iter().chain(gemm) {
        let name = CString::new(k.symbol()).unwrap();
        let mut sizes = [0usize; 32];
        // SAFETY: `sizes` has room for the 32 entries the callee may write.
        let count = unsafe { (emu.param_sizes)(name.as_ptr(), sizes.as_mut_ptr(), 32) };
        assert!(count > 0, "{k:?} is not built into the emulator");
    }
}
