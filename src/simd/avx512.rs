//! AVX-512F streaming dot products: one corpus row × up to five queries per step, or
//! four rows × six queries, or three rows × eight.
//!
//! With six or more queries per group, each 16-float piece of a step's rows is loaded
//! once and multiplied into 24 accumulators (4 rows × 6 queries, or 3 × 8), so a step
//! issues ten or eleven loads per twenty-four FMAs and the FMA units, not the load ports,
//! set the pace. With fewer, the FMAs are few and the memory sets the pace: one row at a
//! time streams best (the hardware prefetcher follows one stream better than four
//! interleaved ones; Q = 2–5 ran 15–25 % faster than on four rows, and Q = 1 faster than
//! the AVX2 kernel).
//!
//! From six queries on, the queries take turns in groups (at least two, of at most eight)
//! over a sub-block of rows small enough to stay in L1, so the corpus is still read from
//! memory once while the later groups compute from L1. Six to eight queries in one group
//! measured 10–20 % slower than two groups. Wider steps (2 rows × 12 queries, 1 × 16) were
//! tried and lost: a row then meets many query streams, whose loads outnumber the row's
//! and spill out of L1.
//!
//! Prefetch keeps the memory busy where the hardware prefetcher cannot. With one group (up
//! to five queries) the rows are one sequential stream and there is no software prefetch:
//! hints eight rows ahead, which an earlier machine needed, cost 30 % at Q = 1 on a Zen-class
//! EPYC with the corpus on huge pages (1M × 768, 2 cores, interleaved: 46–48 ms without
//! hints, 66–69 with; D = 384 and 1536 and Q = 2–5 no worse without), the hints competing
//! with the demand loads for the line-fill buffers. With several groups, every group's pass
//! prefetches the next sub-block, so the memory streams while the later groups compute
//! from L1; when only the first group prefetched, the passes over a sub-block ran one after
//! the other with the memory idle (Q = 12–15 at 58–79 % of the read bandwidth). There the
//! masked head and tail prefetch too: their lines are no other load's, and every row's
//! first load waited on memory without it.
//!
//! Loads are aligned to cache lines where the rows allow it. A large allocation starts
//! 16 bytes past a page, so every 64-byte load of a row straddled two lines and cost two;
//! when a row is whole vectors long (every row then starts at the same offset), its first
//! values come by a masked load, the rest line by line, and the queries are copied to the
//! same offset (Q = 4, D = 768: 13 % faster; Q = 12, D = 384: 15 %).
//!
//! The dimension's tail is a masked load, so no scalar loop runs, and the sums leave the
//! accumulators eight at a time through one transposed reduction, which matters at small D.

use std::arch::x86_64::*;

/// Queries per step, at most. A step takes 1 row for up to 5 queries, 4 for 6 and 3 for 7
/// or 8: at most 24 accumulators, the row pieces and a query piece fit the 32 zmm
/// registers.
const G: usize = 8;
/// The least query count taken in two groups or more. Six to eight queries in one group
/// read at 75–85 % of the pace of two groups over L1-resident sub-blocks, which overlap
/// the memory with the second group's FMAs (200k rows, D = 384 and 768).
const SPLIT_FROM: usize = 6;
/// Rows of one sub-block, in bytes, at most (but one step's rows): the queries' groups take
/// turns over it while it is in L1, beside the group's queries and the next sub-block's
/// prefetched lines. 16 KiB measured 5–10 % faster than 32 KiB at Q = 8–12 (D = 384 and
/// 768).
const SUB_BLOCK_BYTES: usize = 16 << 10;
/// Rows of one sub-block, in bytes, at most, when all the queries and an L1 sub-block do
/// not fit L1 together: each group then reads its queries from L1 over a sub-block of rows
/// in L2. Q = 15, D = 768 (45 KiB of queries, 48 KiB L1): 23.0 ms with 16 KiB sub-blocks,
/// 17.4 with 128 KiB, 16.5 with 256 KiB; Q = 8, D = 2048: 17.2 → 14.4 ms (2 cores, 200k
/// and 50k rows). 128 KiB leaves room for the next sub-block in the smaller L2 caches.
const L2_SUB_BLOCK_BYTES: usize = 128 << 10;

/// The rows per step of a group of `g` queries (see [`Block::run`]).
fn rows_per_step(g: usize) -> usize {
    match g {
        0..=5 => 1,
        6 => 4,
        _ => 3,
    }
}

/// The least common multiple of two of the step row counts (1, 3 or 4).
fn lcm(a: usize, b: usize) -> usize {
    let gcd = |mut x: usize, mut y: usize| {
        while y != 0 {
            (x, y) = (y, x % y);
        }
        x
    };
    a / gcd(a, b) * b
}

/// `out[q * n + r] = (rows[r] · queries[q]) * scale[r]` for the `n = scale.len()` rows
/// (`d > 0` values each) and every query.
///
/// # Safety
/// The CPU must support AVX-512F, AVX2 and FMA.
#[target_feature(enable = "avx512f,avx2,fma")]
pub(super) unsafe fn dots_rows(
    rows: &[f32],
    d: usize,
    queries: &[f32],
    scale: &[f32],
    out: &mut [f32],
) {
    let n = scale.len();
    let nq = queries.len() / d;
    assert!(
        d > 0 && rows.len() == n * d && queries.len() == nq * d && out.len() == n * nq,
        "rows, queries, scale and output do not agree"
    );
    // Queries in even groups of at most `G` (at least two groups from `SPLIT_FROM` on), so
    // no step runs with one or two when more are waiting.
    let groups = if nq >= SPLIT_FROM {
        nq.div_ceil(G).max(2)
    } else {
        1
    };
    let per_group = nq.div_ceil(groups);
    // Whole steps of every group in a sub-block, so that only the corpus's last rows take
    // single-row steps: the groups hold `per_group` queries and, the last, maybe fewer.
    let last = nq - (nq - 1) / per_group * per_group;
    let step_rows = lcm(rows_per_step(per_group), rows_per_step(last));
    let in_steps = |bytes: usize| (bytes / (4 * d)).max(step_rows) / step_rows * step_rows;
    let mut sub = in_steps(SUB_BLOCK_BYTES);
    if groups > 1 && (nq + sub) * d * 4 > l1d_bytes() {
        // The groups' turns would evict each other's queries from L1 at every sub-block.
        sub = in_steps(L2_SUB_BLOCK_BYTES);
    }
    // In floats: the next sub-block for several groups; none (0) for one (see the module
    // docs).
    let ahead = if groups > 1 { sub * d } else { 0 };
    // Rows whose length is whole vectors all start at the same offset in a cache line; a
    // vector load from there straddles two lines and costs two loads. Such rows take their
    // first `head` values by a masked load, and the rest line by line, with the queries
    // copied (when they are not already) to the same offset, so their loads line up too.
    let (head, copy) = line_offset(rows, d, queries);
    let queries = match &copy {
        Some((buf, start)) => &buf[*start..*start + nq * d],
        None => queries,
    };
    let mut r0 = 0;
    while r0 < n {
        let r1 = (r0 + sub).min(n);
        let mut q = 0;
        while q < nq {
            let g = (nq - q).min(per_group);
            let block = Block {
                ahead,
                head,
                rows: &rows[r0 * d..r1 * d],
                scale: &scale[r0..r1],
                queries: &queries[q * d..(q + g) * d],
                d,
            };
            let at = Out {
                n,
                row: r0,
                query: q,
            };
            // SAFETY: this function's target features are the callee's; `Block` and `Out`
            // check their own bounds.
            unsafe { block.run(g, at, out) };
            q += g;
        }
        r0 = r1;
    }
}

/// The L1 data cache of one core, in bytes: from CPUID, or 32 KiB (the smallest among
/// CPUs with AVX-512F) where it does not say.
pub(super) fn l1d_bytes() -> usize {
    static L1D: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *L1D.get_or_init(|| cpuid_l1d_bytes().unwrap_or(32 << 10))
}

/// The L1 data cache size CPUID reports: AMD's leaf `0x8000_0005` (KiB in ECX bits
/// 24–31), else the first level-1 data cache of the deterministic cache leaf 4 (Intel).
#[allow(unused_unsafe)] // `__cpuid` is safe on newer toolchains
fn cpuid_l1d_bytes() -> Option<usize> {
    // SAFETY: CPUID exists on every x86-64 CPU; reading a leaf has no side effects, and a
    // leaf past the maximum returns data that the checks below reject.
    let (max_ext, amd) = unsafe { (__cpuid(0x8000_0000).eax, __cpuid(0x8000_0005).ecx) };
    if max_ext >= 0x8000_0005 && amd >> 24 != 0 {
        return Some((amd >> 24) as usize * 1024);
    }
    // SAFETY: as above.
    if unsafe { __cpuid(0).eax } < 4 {
        return None;
    }
    for sub in 0..16 {
        // SAFETY: as above; leaf 4 exists (checked), and its subleaves end with type 0.
        let r = unsafe { __cpuid_count(4, sub) };
        let (kind, level) = (r.eax & 0x1F, (r.eax >> 5) & 0x7);
        if kind == 0 {
            break;
        }
        if kind == 1 && level == 1 {
            let ways = (r.ebx >> 22) as usize + 1;
            let partitions = ((r.ebx >> 12) & 0x3FF) as usize + 1;
            let line = (r.ebx & 0xFFF) as usize + 1;
            let sets = r.ecx as usize + 1;
            return Some(ways * partitions * line * sets);
        }
    }
    None
}

/// For rows of `d` values at `rows`: how many values precede the first cache-line boundary
/// of every row (0 unless `d` is a multiple of 16, where all rows share it), and, when that
/// is not 0 and the queries start at another offset, a copy of the queries and the index
/// in it where they start at the rows' offset.
fn line_offset(rows: &[f32], d: usize, queries: &[f32]) -> (usize, Option<(Vec<f32>, usize)>) {
    const LINE: usize = 64;
    let at = |p: *const f32| p as usize % LINE / 4;
    let offset = at(rows.as_ptr());
    if !d.is_multiple_of(16) || offset == 0 {
        return (0, None);
    }
    let head = 16 - offset;
    if at(queries.as_ptr()) == offset {
        return (head, None);
    }
    let mut buf = vec![0.0f32; queries.len() + 16];
    let start = (offset + 16 - at(buf.as_ptr())) % 16;
    buf[start..start + queries.len()].copy_from_slice(queries);
    (head, Some((buf, start)))
}

/// Rows and a group of queries for one run of [`Block::run`].
struct Block<'a> {
    /// Whole rows of `d` values.
    rows: &'a [f32],
    /// One multiplier per row.
    scale: &'a [f32],
    /// `1..=G` whole query rows of `d` values.
    queries: &'a [f32],
    d: usize,
    /// How far ahead of a row's loads its prefetches go, in floats; 0 for no prefetch.
    ahead: usize,
    /// Values of each row (and query) before its first cache-line boundary, taken by a
    /// masked load; 0 for none.
    head: usize,
}

/// Where a block's scores go: `out[(query + j) * n + row + i]` for block row `i`, query `j`.
#[derive(Clone, Copy)]
struct Out {
    n: usize,
    row: usize,
    query: usize,
}

impl Block<'_> {
    /// Scores every row of the block against its `g` queries.
    ///
    /// # Safety
    /// The CPU supports AVX-512F, AVX2 and FMA; `g == queries.len() / d`, `1 <= g <= G`.
    #[inline]
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn run(&self, g: usize, at: Out, out: &mut [f32]) {
        // SAFETY: the caller's contract, with `NQ = g` and `RR × NQ <= 24`. (`RR` is
        // `rows_per_step(g)`.)
        unsafe {
            match g {
                1 => self.steps::<1, 1>(at, out),
                2 => self.steps::<1, 2>(at, out),
                3 => self.steps::<1, 3>(at, out),
                4 => self.steps::<1, 4>(at, out),
                5 => self.steps::<1, 5>(at, out),
                6 => self.steps::<4, 6>(at, out),
                7 => self.steps::<3, 7>(at, out),
                _ => self.steps::<3, 8>(at, out),
            }
        }
    }

    /// [`run`](Self::run) with the rows per step and the query count as constants, so
    /// every accumulator is a register.
    ///
    /// # Safety
    /// The CPU supports AVX-512F, AVX2 and FMA; the block holds `NQ` queries;
    /// `RR * NQ <= 32`.
    // Not inlined: each instance gets the register allocator to itself, which keeps all
    // `RR × NQ` accumulators in registers (inlined into the dispatch, some were spilled).
    #[inline(never)]
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn steps<const RR: usize, const NQ: usize>(&self, at: Out, out: &mut [f32]) {
        let d = self.d;
        let n = self.scale.len();
        assert!(
            self.rows.len() == n * d && self.queries.len() == NQ * d,
            "block shape"
        );
        // `dots_rows` sizes sub-blocks in whole steps by `rows_per_step`; `run` must agree.
        assert_eq!(RR, rows_per_step(NQ), "step shape of {NQ} queries");
        assert!(
            (at.query + NQ - 1) * at.n + at.row + n <= out.len(),
            "block outside the output"
        );
        let mut r = 0;
        while r < n {
            let mut sums = [0.0f32; 32];
            let rows = &self.rows[r * d..];
            let qs = self.queries.as_ptr();
            let taken = if n - r >= RR {
                // SAFETY: `rows` holds `RR` rows from `r`, `qs` holds `NQ` queries.
                unsafe { step::<RR, NQ>(rows.as_ptr(), qs, d, self.head, self.ahead, &mut sums) };
                RR
            } else {
                // SAFETY: `rows` holds one row from `r`, `qs` holds `NQ` queries.
                unsafe { step::<1, NQ>(rows.as_ptr(), qs, d, self.head, self.ahead, &mut sums) };
                1
            };
            // Query-major sums: a query's `RR` rows are one run, stored as one.
            for j in 0..NQ {
                let o = (at.query + j) * at.n + at.row + r;
                if taken == RR {
                    let (dst, w) = (&mut out[o..o + RR], &self.scale[r..r + RR]);
                    for i in 0..RR {
                        dst[i] = sums[j * RR + i] * w[i];
                    }
                } else {
                    out[o] = sums[j] * self.scale[r];
                }
            }
            r += taken;
        }
    }
}

/// The dot products of `RR` consecutive rows at `row` with `NQ` consecutive queries at `qs`
/// (both `d` values apart), into `sums[j * RR + i]` for row `i`, query `j`, prefetching
/// each row `ahead` floats beyond its loads (none when `ahead` is 0).
///
/// # Safety
/// * The CPU supports AVX-512F, AVX2 and FMA.
/// * `row` is valid for reads of `RR * d` floats and `qs` of `NQ * d` floats;
///   `RR * NQ <= 32`.
#[inline]
#[target_feature(enable = "avx512f,avx2,fma")]
#[allow(clippy::needless_range_loop)] // `acc[r][j]` by index reads as the math does
unsafe fn step<const RR: usize, const NQ: usize>(
    row: *const f32,
    qs: *const f32,
    d: usize,
    head: usize,
    ahead: usize,
    sums: &mut [f32; 32],
) {
    let mut acc = [[_mm512_setzero_ps(); NQ]; RR];
    let head = head.min(d);
    if head > 0 {
        // SAFETY: `head <= d`; the caller's pointers.
        unsafe { masked::<RR, NQ>(row, qs, d, 0, head, ahead, &mut acc) };
    }
    let mut i = head;
    while i + 16 <= d {
        if ahead != 0 {
            for r in 0..RR {
                // A hint that never faults; `wrapping_add` makes no claim about bounds.
                _mm_prefetch::<_MM_HINT_T0>(row.wrapping_add(r * d + i + ahead) as *const i8);
            }
        }
        // SAFETY: `i + 16 <= d`, so every load reads inside row `r < RR` and query `j < NQ`.
        unsafe {
            let mut rv = [_mm512_setzero_ps(); RR];
            for (r, v) in rv.iter_mut().enumerate() {
                *v = _mm512_loadu_ps(row.add(r * d + i));
            }
            for j in 0..NQ {
                let qv = _mm512_loadu_ps(qs.add(j * d + i));
                for r in 0..RR {
                    acc[r][j] = _mm512_fmadd_ps(rv[r], qv, acc[r][j]);
                }
            }
        }
        i += 16;
    }
    if i < d {
        // SAFETY: `i < d`; the caller's pointers.
        unsafe { masked::<RR, NQ>(row, qs, d, i, d - i, ahead, &mut acc) };
    }
    // Eight sums per reduction: the `RR × NQ` accumulators query by query, so a query's
    // rows come out side by side.
    let total = RR * NQ;
    let mut k = 0;
    while k < total {
        let mut eight = [_mm512_setzero_ps(); 8];
        for (t, e) in eight.iter_mut().enumerate() {
            if k + t < total {
                *e = acc[(k + t) % RR][(k + t) / RR];
            }
        }
        // SAFETY: `k + 8 <= 32`: `total <= 32` and `k` steps by 8 below `total`, and
        // `sums` holds 32 floats; `storeu` has no alignment need.
        unsafe { _mm256_storeu_ps(sums.as_mut_ptr().add(k), reduce8(&eight)) };
        k += 8;
    }
}

/// Adds the products of values `[i, i + len)` (`len <= 16`) of `RR` rows and `NQ`
/// queries to `acc`, by masked loads, prefetching the rows `ahead` floats on. (The lines
/// of a row's head and tail are prefetched here or by nothing: without it, every row's
/// first load waited on memory.)
///
/// # Safety
/// The CPU supports AVX-512F; `i + len <= d`; `row` is valid for reads of `RR * d` floats
/// and `qs` of `NQ * d` floats.
#[inline]
#[target_feature(enable = "avx512f,avx2,fma")]
#[allow(clippy::needless_range_loop)] // `acc[r][j]` by index reads as the math does
unsafe fn masked<const RR: usize, const NQ: usize>(
    row: *const f32,
    qs: *const f32,
    d: usize,
    i: usize,
    len: usize,
    ahead: usize,
    acc: &mut [[__m512; NQ]; RR],
) {
    if ahead != 0 {
        for r in 0..RR {
            // A hint that never faults; `wrapping_add` makes no claim about bounds.
            _mm_prefetch::<_MM_HINT_T0>(row.wrapping_add(r * d + i + ahead) as *const i8);
        }
    }
    let mask: __mmask16 = (1u32 << len).wrapping_sub(1) as u16;
    // SAFETY: the mask enables lanes `[i, i + len)` only, inside every row and query (the
    // caller's contract); masked-off lanes are not read (a masked load does not access, or
    // fault on, disabled elements).
    unsafe {
        let mut rv = [_mm512_setzero_ps(); RR];
        for (r, v) in rv.iter_mut().enumerate() {
            *v = _mm512_maskz_loadu_ps(mask, row.add(r * d + i));
        }
        for j in 0..NQ {
            let qv = _mm512_maskz_loadu_ps(mask, qs.add(j * d + i));
            for r in 0..RR {
                acc[r][j] = _mm512_fmadd_ps(rv[r], qv, acc[r][j]);
            }
        }
    }
}

/// The sums of each of eight vectors, as one vector: `out[j] = Σ lanes of acc[j]`.
///
/// A transposed reduction in AVX-512 instructions only: the AVX `hadd` has no EVEX form,
/// and feeding it the accumulators confined them to the 16 VEX registers, which spilled.
#[inline]
#[target_feature(enable = "avx512f,avx2,fma")]
fn reduce8(a: &[__m512; 8]) -> __m256 {
    // Per 128-bit lane, pairs (x, y) → [x, y, x, y] partial sums.
    let pair =
        |x: __m512, y: __m512| _mm512_add_ps(_mm512_unpacklo_ps(x, y), _mm512_unpackhi_ps(x, y));
    // Per 128-bit lane, [x, y, x, y] and [z, w, z, w] → [x, y, z, w].
    let quad = |p: __m512, q: __m512| {
        let (p, q) = (_mm512_castps_pd(p), _mm512_castps_pd(q));
        _mm512_add_ps(
            _mm512_castpd_ps(_mm512_unpacklo_pd(p, q)),
            _mm512_castpd_ps(_mm512_unpackhi_pd(p, q)),
        )
    };
    let c0 = quad(pair(a[0], a[1]), pair(a[2], a[3])); // sums 0..4, per lane
    let c1 = quad(pair(a[4], a[5]), pair(a[6], a[7])); // sums 4..8, per lane
                                                       // Add the four 128-bit lanes: [c0.0 + c0.2, c0.1 + c0.3, c1.0 + c1.2, c1.1 + c1.3] ...
    let z = _mm512_add_ps(
        _mm512_shuffle_f32x4::<0x44>(c0, c1),
        _mm512_shuffle_f32x4::<0xEE>(c0, c1),
    );
    // ... then [c0 total, c1 total, ..].
    let t = _mm512_add_ps(
        _mm512_shuffle_f32x4::<0x88>(z, z),
        _mm512_shuffle_f32x4::<0xDD>(z, z),
    );
    _mm512_castps512_ps256(t)
}
