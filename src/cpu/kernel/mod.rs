//! Register-blocked kernels for score tiles: `MR` corpus rows × `NR` queries per call, one
//! kernel per instruction-set level (`avx2`: 6 × 16; `avx512`: 12 × 32; `neon`: 6 × 16 on
//! aarch64).
//!
//! A general-purpose GEMM repacks both operands on every call. Here the
//! queries are fixed for the whole call while the corpus streams past, so we pack the
//! queries once ([`PackedQueries`]: panels of `NR`, `d`-major) and read the corpus rows in
//! place, `MR` streams at once: the kernel broadcasts one corpus value per row and
//! multiplies it with the vectors of the query panel (two on AVX2 and AVX-512F, four on
//! NEON), `2 · MR` or `4 · MR` FMAs per depth step on as many accumulators.

use crate::simd::SimdLevel;

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
#[cfg(target_arch = "aarch64")]
mod neon;

/// The tile shape of a level's kernel: corpus rows per call and queries per panel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Geometry {
    /// Corpus rows per kernel call.
    pub(crate) mr: usize,
    /// Queries per panel.
    pub(crate) nr: usize,
}

impl Geometry {
    /// The kernel of `level`, or `None` when it has no tile kernel (scalar).
    pub(crate) fn of(level: SimdLevel) -> Option<Self> {
        match level {
            #[cfg(target_arch = "x86_64")]
            SimdLevel::Avx2Fma => Some(Self {
                mr: avx2::MR,
                nr: avx2::NR,
            }),
            #[cfg(target_arch = "x86_64")]
            SimdLevel::Avx512 => Some(Self {
                mr: avx512::MR,
                nr: avx512::NR,
            }),
            #[cfg(target_arch = "aarch64")]
            SimdLevel::Neon => Some(Self {
                mr: neon::MR,
                nr: neon::NR,
            }),
            _ => None,
        }
    }
}

/// Unit-norm queries packed as panels of `nr` queries for one level's kernel: element
/// `(q, p)` lives at `(q / nr) * d * nr + p * nr + q % nr`. Missing queries of the last
/// panel are zero.
pub(crate) struct PackedQueries {
    buf: AlignedBuf,
    queries: usize,
    level: SimdLevel,
    nr: usize,
    panels: usize,
    d: usize,
}

impl PackedQueries {
    /// Packs `q` queries of `d` values for the kernel of `level` (or of a lower level
    /// when that one pads less), or `None` when the level has no tile kernel (or the CPU
    /// lacks it).
    pub(crate) fn new(level: SimdLevel, queries: &[f32], q: usize, d: usize) -> Option<Self> {
        Geometry::of(level).filter(|_| level.is_supported())?;
        // Up to 16 queries, the 32-wide AVX-512 panel would be half padding: the 16-wide
        // AVX2 kernel does the same work in half the lanes.
        let level = if level == SimdLevel::Avx512 && q <= 16 {
            SimdLevel::Avx2Fma
        } else {
            level
        };
        let nr = Geometry::of(level)?.nr;
        let panels = q.div_ceil(nr);
        let mut buf = AlignedBuf::zeroed(panels * d * nr);
        let dst = buf.as_mut_slice();
        for qi in 0..q {
            let (panel, lane) = (qi / nr, qi % nr);
            let base = panel * d * nr + lane;
            for (p, &v) in queries[qi * d..(qi + 1) * d].iter().enumerate() {
                dst[base + p * nr] = v;
            }
        }
        Some(Self {
            buf,
            queries: q,
            level,
            nr,
            panels,
            d,
        })
    }

    /// Queries packed (without the padding).
    pub(crate) fn queries(&self) -> usize {
        self.queries
    }

    /// Query panels (each `nr` queries wide, padded with zero queries).
    pub(crate) fn panels(&self) -> usize {
        self.panels
    }

    /// Queries per panel.
    pub(crate) fn nr(&self) -> usize {
        self.nr
    }

    /// Queries in the tile, padding included.
    pub(crate) fn padded(&self) -> usize {
        self.panels * self.nr
    }

    fn panel(&self, i: usize) -> &[f32] {
        let len = self.d * self.nr;
        &self.buf.as_slice()[i * len..(i + 1) * len]
    }
}

/// Depth block. With D ≤ 768 one pass covers the whole dot product, so the tile is written
/// once instead of read and rewritten per block; measured best on Zen 3 for D = 768.
const KC: usize = 768;

/// Scores the corpus rows `rows` (row-major, `d` values each, `rows.len() / d` of them)
/// against every packed query: `tile[r * ldt + q] = rows[r] · query[q]` for
/// `q < queries.padded()`.
///
/// `ldt` must be at least `queries.padded()` and `tile` must hold `nrows * ldt` values.
pub(crate) fn score_tile(
    rows: &[f32],
    d: usize,
    queries: &PackedQueries,
    tile: &mut [f32],
    ldt: usize,
    prefetch: &[u8],
) {
    let nrows = rows.len() / d;
    assert_eq!(rows.len(), nrows * d);
    assert_eq!(queries.d, d);
    assert!(
        ldt >= queries.padded() && tile.len() >= nrows * ldt,
        "tile too small"
    );
    // `PackedQueries::new` made it for a supported level with a kernel.
    let Geometry { mr, nr } = Geometry::of(queries.level).expect("a level with a kernel");
    // The kernel reads each group of `mr` rows in place, one stream per row (measured
    // faster than interleaving them first at every batch size tried, 16 to 1024 queries).
    let groups = nrows.div_ceil(mr);
    // `prefetch` (the rows the caller reads next) is hinted into L2 a slice per kernel
    // call (AVX-512 and AVX2), so the caller's next read of them waits less on memory.
    let calls = d.div_ceil(KC) * queries.panels() * groups;
    let per_call = prefetch.len().div_ceil(64).div_ceil(calls.max(1)) * 64;
    let mut call = 0;
    for k0 in (0..d).step_by(KC) {
        let kc = KC.min(d - k0);
        for pi in 0..queries.panels() {
            let b = &queries.panel(pi)[k0 * nr..(k0 + kc) * nr];
            for g in 0..groups {
                let m = mr.min(nrows - g * mr);
                let a = &rows[g * mr * d + k0..(g * mr + m - 1) * d + k0 + kc];
                let c = &mut tile[g * mr * ldt + pi * nr..];
                let pf = prefetch
                    .get(call * per_call..((call + 1) * per_call).min(prefetch.len()))
                    .unwrap_or(&[]);
                call += 1;
                // SAFETY: the level is supported (`PackedQueries::new` checked). `a` holds
                // element `i * d + p` for `i < m`, `p < kc` (rows `g·mr ..` from depth
                // `k0`), and `b` holds `kc × nr`. `c` is written at `i * ldt + [0, nr)` for
                // `i < m`, inside `tile` because `pi * nr + nr <= padded <= ldt` and row
                // `g * mr + i < nrows`. `pf` is a live slice (only hinted).
                unsafe { dispatch(queries.level, m, kc, (a, (d, 1)), b, c, ldt, k0 > 0, pf) };
            }
        }
    }
}

/// For each 8-bit mask, the positions of its set bits, in increasing order (the rest 0):
/// the vector scans compress a vector's passing lanes through it.
#[cfg(target_arch = "x86_64")]
static COMPRESS: [[u32; 8]; 256] = compress_table();

#[cfg(target_arch = "x86_64")]
const fn compress_table() -> [[u32; 8]; 256] {
    let mut t = [[0u32; 8]; 256];
    let mut m = 0;
    while m < 256 {
        let (mut j, mut c) = (0, 0);
        while j < 8 {
            if (m >> j) & 1 == 1 {
                t[m][c] = j as u32;
                c += 1;
            }
            j += 1;
        }
        m += 1;
    }
    t
}

/// Extra room [`scan_row`] needs in its `lanes` beyond one entry per threshold.
pub(crate) const SCAN_SLACK: usize = 16;

/// Scans one tile row: writes to `lanes` (from 0), in increasing order, every query
/// `q < thresholds.len()` whose score `row[q] * w` reaches `thresholds[q]`, and returns
/// how many. `lanes` must hold at least `thresholds.len() + SCAN_SLACK` entries and
/// `row` at least `thresholds.len()`, or this panics; every `q` must fit in a `u32`.
///
/// Almost every score misses, so a vector of lanes is compared at once and the passing
/// lanes are compressed into `lanes` without a branch. The caller offers them after the
/// scan: lanes are distinct queries, so each compare against the threshold before any of
/// this row's offers is exact.
pub(crate) fn scan_row(
    level: SimdLevel,
    row: &[f32],
    w: f32,
    thresholds: &[f32],
    lanes: &mut [u32],
) -> usize {
    let len = thresholds.len();
    assert!(row.len() >= len && lanes.len() >= len + SCAN_SLACK);
    let (mut start, mut count) = (0, 0);
    #[cfg(target_arch = "x86_64")]
    if level == SimdLevel::Avx512 && level.is_supported() {
        // SAFETY: AVX-512F was just checked; lengths are asserted above.
        (start, count) = unsafe { avx512::scan_row(row, w, thresholds, lanes) };
    } else if matches!(level, SimdLevel::Avx2Fma | SimdLevel::Avx512)
        && SimdLevel::Avx2Fma.is_supported()
    {
        // SAFETY: AVX2 was just checked; lengths are asserted above.
        (start, count) = unsafe { avx2::scan_row(row, w, thresholds, lanes) };
    }
    #[cfg(target_arch = "aarch64")]
    if level == SimdLevel::Neon && level.is_supported() {
        // SAFETY: NEON was just checked; lengths are asserted above.
        (start, count) = unsafe { neon::scan_row(row, w, thresholds, lanes) };
    }
    let _ = level;
    for q in start..len {
        // The same product as a vector lane, so the pass/fail decision agrees.
        if row[q] * w >= thresholds[q] {
            lanes[count] = q as u32;
            count += 1;
        }
    }
    count
}

/// Runs `level`'s kernel on `m` rows.
///
/// # Safety
/// The CPU supports `level`, which has a kernel; slice bounds as stated at the call in
/// [`score_tile`].
#[allow(clippy::too_many_arguments)]
unsafe fn dispatch(
    level: SimdLevel,
    m: usize,
    kc: usize,
    (a, sa): (&[f32], (usize, usize)),
    b: &[f32],
    c: &mut [f32],
    ldc: usize,
    acc: bool,
    pf: &[u8],
) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: forwarded from the caller; `m` is at most the level's `MR`.
    unsafe {
        let (a, b, c) = (a.as_ptr(), b.as_ptr(), c.as_mut_ptr());
        let pf = (pf.as_ptr(), pf.len().div_ceil(64));
        match (level, m) {
            (SimdLevel::Avx512, 12) => avx512::kernel::<12>(kc, a, sa, b, c, ldc, acc, pf),
            (SimdLevel::Avx512, 11) => avx512::kernel::<11>(kc, a, sa, b, c, ldc, acc, pf),
            (SimdLevel::Avx512, 10) => avx512::kernel::<10>(kc, a, sa, b, c, ldc, acc, pf),
            (SimdLevel::Avx512, 9) => avx512::kernel::<9>(kc, a, sa, b, c, ldc, acc, pf),
            (SimdLevel::Avx512, 8) => avx512::kernel::<8>(kc, a, sa, b, c, ldc, acc, pf),
            (SimdLevel::Avx512, 7) => avx512::kernel::<7>(kc, a, sa, b, c, ldc, acc, pf),
            (SimdLevel::Avx512, 6) => avx512::kernel::<6>(kc, a, sa, b, c, ldc, acc, pf),
            (SimdLevel::Avx512, 5) => avx512::kernel::<5>(kc, a, sa, b, c, ldc, acc, pf),
            (SimdLevel::Avx512, 4) => avx512::kernel::<4>(kc, a, sa, b, c, ldc, acc, pf),
            (SimdLevel::Avx512, 3) => avx512::kernel::<3>(kc, a, sa, b, c, ldc, acc, pf),
            (SimdLevel::Avx512, 2) => avx512::kernel::<2>(kc, a, sa, b, c, ldc, acc, pf),
            (SimdLevel::Avx512, _) => avx512::kernel::<1>(kc, a, sa, b, c, ldc, acc, pf),
            (_, 6) => avx2::kernel::<6>(kc, a, sa, b, c, ldc, acc, pf),
            (_, 5) => avx2::kernel::<5>(kc, a, sa, b, c, ldc, acc, pf),
            (_, 4) => avx2::kernel::<4>(kc, a, sa, b, c, ldc, acc, pf),
            (_, 3) => avx2::kernel::<3>(kc, a, sa, b, c, ldc, acc, pf),
            (_, 2) => avx2::kernel::<2>(kc, a, sa, b, c, ldc, acc, pf),
            (_, _) => avx2::kernel::<1>(kc, a, sa, b, c, ldc, acc, pf),
        }
    }
    #[cfg(target_arch = "aarch64")]
    // SAFETY: forwarded from the caller; NEON is the one level with a kernel here, and `m`
    // is at most its `MR`.
    unsafe {
        debug_assert_eq!(level, SimdLevel::Neon);
        let _ = pf;
        let (a, b, c) = (a.as_ptr(), b.as_ptr(), c.as_mut_ptr());
        match m {
            6 => neon::kernel::<6>(kc, a, sa, b, c, ldc, acc),
            5 => neon::kernel::<5>(kc, a, sa, b, c, ldc, acc),
            4 => neon::kernel::<4>(kc, a, sa, b, c, ldc, acc),
            3 => neon::kernel::<3>(kc, a, sa, b, c, ldc, acc),
            2 => neon::kernel::<2>(kc, a, sa, b, c, ldc, acc),
            _ => neon::kernel::<1>(kc, a, sa, b, c, ldc, acc),
        }
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        let _ = (level, m, kc, a, sa, b, c, ldc, acc, pf);
        unreachable!("no tile kernel on this architecture");
    }
}

/// A zeroed `f32` buffer whose first element is 64-byte aligned, so the kernels' 16- to
/// 64-byte loads never straddle a cache line.
pub(crate) struct AlignedBuf {
    raw: Vec<f32>,
    offset: usize,
    len: usize,
}

impl AlignedBuf {
    pub(crate) fn zeroed(len: usize) -> Self {
        let raw = crate::mem::zeroed_f32(len + 16);
        let offset = raw.as_ptr().align_offset(64).min(16);
        Self { raw, offset, len }
    }

    pub(crate) fn as_slice(&self) -> &[f32] {
        &self.raw[self.offset..self.offset + self.len]
    }

    pub(crate) fn as_mut_slice(&mut self) -> &mut [f32] {
        &mut self.raw[self.offset..self.offset + self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tile_matches_f64_for_every_row_and_panel_remainder() {
        for level in SimdLevel::ALL {
            if Geometry::of(level).is_none() {
                continue; // no tile kernel at this level
            }
            if !level.is_supported() {
                eprintln!("skip {}: this CPU lacks it", level.name());
                continue;
            }
            tile_matches_f64(level);
        }
    }

    fn tile_matches_f64(level: SimdLevel) {
        for (nrows, q, d) in [
            (1, 1, 1),
            (7, 17, 3),
            (13, 33, 300),
            (6, 16, 257),
            (25, 65, 129),
            (20, 5, 700),
            (24, 32, 800),
        ] {
            let rows = crate::data::random_vec(nrows * d, 11, 0);
            let qs = crate::data::random_vec(q * d, 12, 0);
            let packed = PackedQueries::new(level, &qs, q, d).expect("a supported level");
            let ldt = packed.padded() + 3;
            let mut tile = vec![f32::NAN; nrows * ldt];
            score_tile(&rows, d, &packed, &mut tile, ldt, &[]);
            for r in 0..nrows {
                for j in 0..q {
                    let exact: f64 = (0..d)
                        .map(|p| rows[r * d + p] as f64 * qs[j * d + p] as f64)
                        .sum();
                    let got = tile[r * ldt + j] as f64;
                    assert!(
                        (got - exact).abs() <= 1e-4 * (d as f64).sqrt(),
                        "{level:?} r={r} q={j} d={d}"
                    );
                }
                for j in q..packed.padded() {
                    assert_eq!(tile[r * ldt + j], 0.0, "padding queries score 0");
                }
            }
        }
    }

    #[test]
    fn scan_row_finds_exactly_the_scores_at_or_above_their_threshold() {
        for level in SimdLevel::ALL.into_iter().filter(|l| l.is_supported()) {
            for n in [0usize, 1, 7, 8, 15, 16, 17, 33, 64, 100, 1000] {
                let row = crate::data::random_vec(n + 3, 5, n as u64);
                let mut thresholds = crate::data::random_vec(n, 6, n as u64);
                // A NaN score never passes, not even a -inf threshold.
                if n > 20 {
                    thresholds[3] = f32::NEG_INFINITY;
                    thresholds[19] = f32::NEG_INFINITY;
                }
                let mut row = row;
                if n > 20 {
                    row[19] = f32::NAN;
                }
                let mut lanes = vec![u32::MAX; n + SCAN_SLACK];
                let count = scan_row(level, &row, 0.5, &thresholds, &mut lanes);
                let want: Vec<u32> = (0..n)
                    .filter(|&q| row[q] * 0.5 >= thresholds[q])
                    .map(|q| q as u32)
                    .collect();
                assert_eq!(lanes[..count], want[..], "{level:?} n={n}");
                if n > 20 {
                    assert!(want.contains(&3) && !want.contains(&19));
                }
            }
        }
    }
}
