//! The instruction-set levels of the CPU kernels, detected at run time, and the streaming
//! dot products and norms: AVX-512F and AVX2+FMA kernels on x86-64, NEON kernels on
//! aarch64, and a portable scalar path that the tests force so it is exercised on machines
//! that have the others too. The score-tile kernels of each level are in `cpu/kernel/`.
//!
//! Every level is chosen at run time (one binary for every CPU of its architecture), and
//! this is the one place that detects them: a kernel for a new instruction set (VNNI, BF16,
//! SVE) gets its [`SimdLevel`] here and its dispatch beside the others.

/// Which instruction set the CPU kernels use.
///
/// Levels are ordered within one architecture: each one's CPUs also run every lower level of
/// the same architecture, and [`Scalar`](SimdLevel::Scalar), which every CPU runs, is the
/// lowest of all. The order between levels of different architectures (NEON and the x86-64
/// levels) means nothing: no CPU supports both, and a cap that names another architecture's
/// level is an error ([`CpuConfig::simd`](crate::CpuConfig::simd)), never a comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum SimdLevel {
    /// Portable Rust; the compiler may still vectorise it for the baseline target.
    Scalar,
    /// x86-64 AVX2 with fused multiply-add.
    Avx2Fma,
    /// x86-64 AVX-512 Foundation (which includes fused multiply-add), with AVX2.
    Avx512,
    /// aarch64 Advanced SIMD (NEON, 128-bit, with fused multiply-add); every aarch64 CPU has
    /// it.
    Neon,
}

impl SimdLevel {
    /// Every level, lowest first within each architecture (scalar, then the x86-64 levels,
    /// then the aarch64 one).
    pub const ALL: [SimdLevel; 4] = [
        SimdLevel::Scalar,
        SimdLevel::Avx2Fma,
        SimdLevel::Avx512,
        SimdLevel::Neon,
    ];

    /// The best level this CPU supports.
    pub fn detect() -> Self {
        Self::ALL
            .into_iter()
            .rev()
            .find(|l| l.is_supported())
            .unwrap_or(SimdLevel::Scalar)
    }

    /// Whether this CPU runs this level's kernels. Always false for a level of another
    /// architecture than the one this library was built for.
    pub fn is_supported(self) -> bool {
        match self {
            SimdLevel::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            SimdLevel::Avx2Fma => {
                std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
            }
            #[cfg(target_arch = "x86_64")]
            SimdLevel::Avx512 => {
                SimdLevel::Avx2Fma.is_supported() && std::is_x86_feature_detected!("avx512f")
            }
            #[cfg(target_arch = "aarch64")]
            SimdLevel::Neon => std::arch::is_aarch64_feature_detected!("neon"),
            // The levels of other architectures.
            _ => false,
        }
    }

    /// The architecture whose CPUs may run this level (as `std::env::consts::ARCH` names
    /// it), or `None` for the portable scalar level, which every CPU runs.
    pub(crate) fn arch(self) -> Option<&'static str> {
        match self {
            SimdLevel::Scalar => None,
            SimdLevel::Avx2Fma | SimdLevel::Avx512 => Some("x86_64"),
            SimdLevel::Neon => Some("aarch64"),
        }
    }

    /// Whether this level belongs to the architecture this library was built for (or is
    /// scalar): the levels a cap may name.
    pub(crate) fn is_native_arch(self) -> bool {
        self.arch()
            .is_none_or(|arch| arch == std::env::consts::ARCH)
    }

    /// A short name for reports: `scalar`, `avx2+fma`, `avx512f`, `neon`.
    pub fn name(self) -> &'static str {
        match self {
            SimdLevel::Scalar => "scalar",
            SimdLevel::Avx2Fma => "avx2+fma",
            SimdLevel::Avx512 => "avx512f",
            SimdLevel::Neon => "neon",
        }
    }

    /// The kernels this level runs, for reports: the streaming kernel's rows × queries
    /// per step and the score tile's rows × queries.
    pub fn kernels(self) -> &'static str {
        match self {
            SimdLevel::Scalar => "scalar: streaming 1 row x 1 query; no score tiles",
            SimdLevel::Avx2Fma => "avx2+fma: streaming 1 row x 4 queries; tiles 6 x 16",
            SimdLevel::Avx512 => {
                "avx512f: streaming 1 row x 1-5, 4 x 6 or 3 x 8 queries; tiles 12 x 32"
            }
            SimdLevel::Neon => "neon: streaming 1 row x 4 queries; tiles 6 x 16",
        }
    }

    /// The level named `name` (as [`name`](Self::name) writes it, or `avx2` and `avx512` for
    /// short), of any architecture.
    pub fn from_name(name: &str) -> Option<Self> {
        match name.trim().to_ascii_lowercase().as_str() {
            "scalar" => Some(SimdLevel::Scalar),
            "avx2" | "avx2+fma" => Some(SimdLevel::Avx2Fma),
            "avx512" | "avx512f" => Some(SimdLevel::Avx512),
            "neon" => Some(SimdLevel::Neon),
            _ => None,
        }
    }
}

/// Instruction-set extensions this CPU has beyond its [`SimdLevel`], detected once here for
/// the kernels that will need them: int8 dot products (AVX-512 VNNI, AVX-VNNI, NEON
/// `dotprod`) and bf16 ones (AVX-512 BF16, NEON `bf16`) for the compressed tiers, and
/// f16 conversion (F16C). The batched int8 scan uses AVX-512 VNNI (`quant::batch`);
/// `hybridvec info` lists them all.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct CpuFeatures {
    /// AVX-512 Byte and Word instructions.
    pub avx512bw: bool,
    /// AVX-512 Vector Length extensions (the AVX-512 forms on 128- and 256-bit registers).
    pub avx512vl: bool,
    /// AVX-512 VNNI: `vpdpbusd`, int8 dot products accumulated in int32.
    pub avx512vnni: bool,
    /// AVX-512 BF16: `vdpbf16ps`, bf16 dot products accumulated in f32.
    pub avx512bf16: bool,
    /// AVX-VNNI: the VEX (256-bit) form of VNNI.
    pub avxvnni: bool,
    /// F16C: conversions between f16 and f32.
    pub f16c: bool,
    /// NEON `sdot`/`udot`: int8 dot products (aarch64).
    pub dotprod: bool,
    /// NEON `bfdot`/`bfmmla`: bf16 dot products (aarch64).
    pub bf16: bool,
}

impl CpuFeatures {
    /// The extensions of this CPU.
    pub fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            Self {
                avx512bw: std::is_x86_feature_detected!("avx512bw"),
                avx512vl: std::is_x86_feature_detected!("avx512vl"),
                avx512vnni: std::is_x86_feature_detected!("avx512vnni"),
                avx512bf16: std::is_x86_feature_detected!("avx512bf16"),
                avxvnni: std::is_x86_feature_detected!("avxvnni"),
                f16c: std::is_x86_feature_detected!("f16c"),
                ..Self::default()
            }
        }
        #[cfg(target_arch = "aarch64")]
        {
            Self {
                dotprod: std::arch::is_aarch64_feature_detected!("dotprod"),
                bf16: std::arch::is_aarch64_feature_detected!("bf16"),
                ..Self::default()
            }
        }
        #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
        Self::default()
    }

    /// The names of the extensions present, as `/proc/cpuinfo` spells them where it can.
    pub fn names(&self) -> Vec<&'static str> {
        [
            (self.avx512bw, "avx512bw"),
            (self.avx512vl, "avx512vl"),
            (self.avx512vnni, "avx512_vnni"),
            (self.avx512bf16, "avx512_bf16"),
            (self.avxvnni, "avx_vnni"),
            (self.f16c, "f16c"),
            (self.dotprod, "asimddp"),
            (self.bf16, "bf16"),
        ]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect()
    }
}

/// Sum of squares accumulated in f64 (used once per corpus row, so precision wins over speed).
pub(crate) fn sum_squares_f64(v: &[f32]) -> f64 {
    let mut acc = [0.0f64; 4];
    let mut chunks = v.chunks_exact(4);
    for c in &mut chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a += (x as f64) * (x as f64);
        }
    }
    let tail: f64 = chunks
        .remainder()
        .iter()
        .map(|&x| (x as f64) * (x as f64))
        .sum();
    acc.iter().sum::<f64>() + tail
}

/// One dot product `a · b` (equal lengths), for scoring rows one at a time where
/// [`dots_rows`]'s blocking would cost more than the row.
pub(crate) fn dot(level: SimdLevel, a: &[f32], b: &[f32]) -> f32 {
    match level {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: callers pass the CPU backend's level, which it checked is supported; both
        // vector levels include AVX2 and FMA.
        SimdLevel::Avx2Fma | SimdLevel::Avx512 => unsafe { avx2::dot1(a, b) },
        _ => dot_scalar(a, b),
    }
}

/// Scaled dot products of a block of rows with every query, query-major:
/// `out[q * n + r] = (rows[r] · queries[q]) * scale[r]` for the `n = scale.len()` rows of
/// `rows` (row-major, `d` values each) and the `nq = queries.len() / d` queries.
///
/// `scale` carries the rows' inverse norms, so the outputs are cosines. Query-major output
/// puts each query's scores for the block side by side: the top-k scan compares them with
/// one threshold several at a time, and the cosine matrix copies them as a run.
///
/// # Panics
/// When the lengths disagree.
pub(crate) fn dots_rows(
    level: SimdLevel,
    rows: &[f32],
    d: usize,
    queries: &[f32],
    scale: &[f32],
    out: &mut [f32],
) {
    if checked_empty(rows.len(), d, queries, scale, out) {
        return;
    }
    let n = scale.len();
    match level {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: callers pass the CPU backend's level, which it checked is supported
        // (`CpuBackend::new`); the lengths agree (asserted above).
        SimdLevel::Avx2Fma => unsafe { avx2::dots_rows(rows, d, queries, scale, out) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above; the AVX-512 level includes AVX2 and FMA.
        SimdLevel::Avx512 => unsafe { avx512::dots_rows(rows, d, queries, scale, out) },
        #[cfg(target_arch = "aarch64")]
        // SAFETY: as above: the backend checked that the CPU has NEON.
        SimdLevel::Neon => unsafe { neon::dots_rows(rows, d, queries, scale, out) },
        _ => {
            for (r, (row, &w)) in rows.chunks_exact(d).zip(scale).enumerate() {
                for (q, query) in queries.chunks_exact(d).enumerate() {
                    out[q * n + r] = dot_scalar(row, query) * w;
                }
            }
        }
    }
}

/// Checks the lengths of a `dots_rows` call (`rows_len` values of rows), and answers a
/// call of dimension 0 (all scores 0): `true` when nothing is left to do.
///
/// # Panics
/// When the lengths disagree.
fn checked_empty(
    rows_len: usize,
    d: usize,
    queries: &[f32],
    scale: &[f32],
    out: &mut [f32],
) -> bool {
    let n = scale.len();
    // With `d == 0` the queries have no values; the output says how many there are.
    let nq = queries.len().checked_div(d).unwrap_or(out.len() / n.max(1));
    assert!(
        rows_len == n * d && queries.len() == nq * d && out.len() == n * nq,
        "rows, queries, scale and output do not agree"
    );
    if d == 0 {
        out.fill(0.0);
    }
    d == 0
}

/// Eight independent partial sums so the loop is not one long dependency chain.
fn dot_scalar(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let mut ca = a.chunks_exact(8);
    let mut cb = b.chunks_exact(8);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for i in 0..8 {
            acc[i] = x[i].mul_add(y[i], acc[i]);
        }
    }
    let mut s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (x, y) in ca.remainder().iter().zip(cb.remainder()) {
        s = x.mul_add(*y, s);
    }
    s
}

mod widen;
#[cfg(target_arch = "x86_64")]
mod widen_x86;
pub(crate) use widen::{dots_rows_half, Half};

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
#[cfg(target_arch = "aarch64")]
mod neon;

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(a: &[f32], b: &[f32]) -> f64 {
        a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum()
    }

    /// Every supported level's `dots_rows` against the f64 reference, on random data.
    fn check_levels(d: usize, n: usize, nq: usize) {
        let rows = crate::data::random_vec(d * n, 1, (d * n) as u64);
        let qs = crate::data::random_vec(d * nq, 2, (d * nq) as u64);
        let scale = crate::data::random_vec(n, 3, n as u64);
        check_slices(&rows, &qs, &scale, d);
    }

    /// Every supported level's `dots_rows` on these rows, queries and row scales against
    /// the f64 reference.
    fn check_slices(rows: &[f32], qs: &[f32], scale: &[f32], d: usize) {
        let (n, nq) = (scale.len(), qs.len() / d);
        for level in SimdLevel::ALL.into_iter().filter(|l| l.is_supported()) {
            let mut out = vec![f32::NAN; n * nq];
            dots_rows(level, rows, d, qs, scale, &mut out);
            for r in 0..n {
                let row = &rows[r * d..(r + 1) * d];
                for q in 0..nq {
                    let query = &qs[q * d..(q + 1) * d];
                    let want = reference(row, query) * scale[r] as f64;
                    let tol = 1e-6
                        * (sum_squares_f64(row) * sum_squares_f64(query)).sqrt()
                        * (scale[r].abs() as f64);
                    let got = out[q * n + r] as f64;
                    assert!(
                        (got - want).abs() <= tol,
                        "{level:?} d={d} n={n} nq={nq} r={r} q={q}: {got} vs {want}"
                    );
                }
            }
        }
    }

    /// Rows and queries at every offset from a cache line, the same or not: the kernels
    /// that align their loads to the rows' lines (rows of whole vectors) take a masked
    /// head and copy the queries to the rows' offset.
    #[test]
    fn every_level_matches_f64_at_every_cache_line_offset() {
        let buf = crate::data::random_vec(16_000, 4, 7);
        let scale = crate::data::random_vec(9, 5, 9);
        for d in [16usize, 48, 64, 768, 17] {
            for row_at in 0..16 {
                for query_at in [0, 3, row_at, 15] {
                    for nq in [1usize, 4, 6, 8, 9] {
                        let n = (6 * 64 / d).clamp(1, 9);
                        let rows = &buf[row_at..row_at + n * d];
                        let qs = &buf[8000 + query_at..8000 + query_at + nq * d];
                        check_slices(rows, qs, &scale[..n], d);
                    }
                }
            }
        }
    }

    #[test]
    fn every_level_matches_f64_on_awkward_lengths() {
        for d in [1usize, 3, 7, 8, 9, 15, 16, 17, 31, 33, 100, 257, 768, 1001] {
            for n in [1usize, 2, 3, 4, 5, 9, 13, 29] {
                for nq in 1..=17 {
                    check_levels(d, n, nq);
                }
            }
        }
    }

    /// Enough rows for several sub-blocks, whose query groups take turns (AVX-512 with
    /// more than eight queries), with row counts that leave tails.
    #[test]
    fn every_level_matches_f64_across_sub_blocks() {
        // The last two take L2-sized sub-blocks on AVX-512 (their queries fill L1), and
        // span several.
        for (d, n) in [
            (3usize, 5003),
            (17, 2501),
            (100, 331),
            (768, 41),
            (768, 131),
            (2048, 37),
        ] {
            for nq in [7usize, 9, 12, 16, 17, 23] {
                check_levels(d, n, nq);
            }
        }
    }

    #[test]
    fn zero_dimension_gives_zero_scores() {
        for level in SimdLevel::ALL.into_iter().filter(|l| l.is_supported()) {
            let mut out = vec![f32::NAN; 6];
            dots_rows(level, &[], 0, &[], &[1.0, 2.0, 3.0], &mut out);
            assert_eq!(out, [0.0; 6], "{level:?}");
        }
    }

    /// The L1 data cache size from CPUID is one that Linux reports for some CPU (hybrid
    /// CPUs have cores with different L1 caches, and the test may run on any of them).
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    #[test]
    fn l1d_size_agrees_with_sysfs() {
        let got = avx512::l1d_bytes();
        assert!((16 << 10..=1 << 20).contains(&got), "{got}");
        let mut listed = Vec::new();
        for cpu in 0..1024 {
            let dir = format!("/sys/devices/system/cpu/cpu{cpu}/cache");
            if !std::path::Path::new(&dir).exists() {
                break;
            }
            for index in 0..8 {
                let read = |f: &str| std::fs::read_to_string(format!("{dir}/index{index}/{f}"));
                if let (Ok(level), Ok(kind), Ok(size)) = (read("level"), read("type"), read("size"))
                {
                    if level.trim() == "1" && kind.trim() == "Data" {
                        let kib: usize = size.trim().trim_end_matches('K').parse().expect("size");
                        listed.push(kib * 1024);
                    }
                }
            }
        }
        if listed.is_empty() {
            eprintln!("skip: no L1 data cache listed in /sys/devices/system/cpu/cpu*/cache");
            return;
        }
        assert!(
            listed.contains(&got),
            "CPUID says {got} bytes; sysfs lists {listed:?}"
        );
    }

    /// The extensions detected are the ones the kernel reports in `/proc/cpuinfo`.
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    #[test]
    fn cpu_features_agree_with_proc_cpuinfo() {
        let Ok(info) = std::fs::read_to_string("/proc/cpuinfo") else {
            eprintln!("skip: no /proc/cpuinfo");
            return;
        };
        let flags: Vec<&str> = info
            .lines()
            .find(|l| l.starts_with("flags"))
            .map(|l| l.split_whitespace().collect())
            .unwrap_or_default();
        let got = CpuFeatures::detect().names();
        for name in [
            "avx512bw",
            "avx512vl",
            "avx512_vnni",
            "avx512_bf16",
            "avx_vnni",
            "f16c",
        ] {
            assert_eq!(
                got.contains(&name),
                flags.contains(&name),
                "{name}: detected {got:?}, cpuinfo says otherwise"
            );
        }
    }
}
