//! The certified int8 scan's program on the emulator: every pair's bounds equal the CPU
//! tier's intervals rounded outward to f32 (so the device proves what the CPU proves),
//! and the candidate mask holds every row the CPU's scan keeps and every row of the f64
//! reference's top-k, on random, clustered and near-duplicate rows, every metric, with
//! deleted rows and fewer live rows than k.

use super::{emulator, seed, unit, with_emulator, HostBuf, Inputs};
use crate::cuda::program::{int8_candidates, int8_queries, Buf, Int8Shape};
use crate::data;
use crate::metric::Metric;
use crate::quant::tier::Int8Tier;
use crate::quant::ScanLevel;

/// `v` rounded down (`up` false) or up to an f32.
fn outward(v: f64, up: bool) -> f32 {
    let f = v as f32;
    match (up, (f as f64).partial_cmp(&v)) {
        (false, Some(std::cmp::Ordering::Greater)) => f.next_down(),
        (true, Some(std::cmp::Ordering::Less)) => f.next_up(),
        _ => f,
    }
}

#[derive(Clone, Copy)]
enum Rows {
    Random,
    /// Four centres with small noise.
    Clustered,
    /// One row plus noise far below its quantisation step: every interval overlaps.
    NearDuplicates,
}

fn rows(kind: Rows, n: usize, dim: usize, seed: u64) -> Vec<f32> {
    let noise = data::random_matrix(n, dim, seed);
    match kind {
        Rows::Random => noise,
        Rows::Clustered => {
            let centres = data::random_matrix(4, dim, seed ^ 7);
            (0..n * dim)
                .map(|i| centres[(i / dim) % 4 * dim + i % dim] + 0.05 * noise[i])
                .collect()
        }
        Rows::NearDuplicates => (0..n * dim)
            .map(|i| noise[i % dim] + 1e-4 * noise[i])
            .collect(),
    }
}

fn check(nq: usize, n: usize, dim: usize, k: usize, metric: Metric, kind: Rows, delete: usize) {
    let emu = with_emulator!();
    let seed = seed();
    let c = rows(kind, n, dim, seed);
    let q = unit(&data::random_matrix(nq, dim, seed ^ 1), dim);
    let tier = Int8Tier::build(&c, dim);
    let t = tier.view();
    let live: Vec<bool> = (0..n).map(|r| delete == 0 || r % delete != 1).collect();
    let norm = |r: usize| {
        c[r * dim..(r + 1) * dim]
            .iter()
            .map(|&x| x as f64 * x as f64)
            .sum::<f64>()
    };
    let inv: Vec<f32> = (0..n)
        .map(|r| crate::matrix::inverse_norm(norm(r).sqrt()))
        .collect();
    let bias: Vec<f32> = (0..n).map(|r| (-0.5 * norm(r)) as f32).collect();
    // The CPU tier's metric: its scale (NaN for a row not live) and bias.
    let scale: Vec<f32> = (0..n)
        .map(|r| match (live[r], metric) {
            (false, _) => f32::NAN,
            (true, Metric::Cosine) => inv[r],
            (true, _) => 1.0,
        })
        .collect();
    let cpu_bias = (metric == Metric::L2).then_some(&bias[..]);
    let cpu = t.candidates(&q, &scale, cpu_bias, k, ScanLevel::Portable);
    let masked = delete != 0;
    let mut inp = Inputs {
        queries: HostBuf::from(&int8_queries(&q, dim)),
        corpus: None,
        inv: HostBuf::from(&inv),
        half: HostBuf::from(&[0u16]),
        mask: masked.then(|| super::mask_bits(&live)),
        bias: (metric == Metric::L2).then(|| HostBuf::from(&bias)),
        codes: Some(HostBuf::from(t.codes())),
        code_bounds: Some(HostBuf::from(&t.bounds_f32())),
    };
    let shape = Int8Shape {
        nq,
        n,
        dim,
        masked,
        metric,
    };
    let p = int8_candidates(&shape, k).expect("a certified shape");
    let emu_ = emulator().expect("built above");
    let temps = emu_.run(&p, &mut inp, seed);
    let _ = emu;
    let ctx = format!("seed {seed} Q={nq} N={n} D={dim} k={k} {metric} delete {delete}");
    // The bounds: temps 0 and 1, query-major.
    let (lo, hi) = (temps[0].get::<f32>(), temps[1].get::<f32>());
    for j in 0..nq {
        let qj = &q[j * dim..(j + 1) * dim];
        for r in 0..n {
            let (l, h) = (lo[j * n + r], hi[j * n + r]);
            if !live[r] {
                assert!(l.is_nan() && h.is_nan(), "{ctx}: row {r} not live: {l} {h}");
                continue;
            }
            let b = if metric == Metric::L2 { bias[r] } else { 0.0 };
            let (cl, ch) = t.interval_of(qj, r, scale[r], b);
            assert_eq!(
                (l, h),
                (outward(cl, false), outward(ch, true)),
                "{ctx}: query {j} row {r}: the CPU proves [{cl:e}, {ch:e}]"
            );
        }
    }
    let Buf::Temp(m) = p.scores() else {
        unreachable!("the mask is scratch")
    };
    let words = temps[m].get::<u32>();
    let set = |r: usize| words[r / 32] >> (r % 32) & 1 == 1;
    let count = (0..n).filter(|&r| set(r)).count();
    let mut union: Vec<usize> = cpu.iter().flatten().copied().collect();
    union.sort_unstable();
    union.dedup();
    for &r in &union {
        assert!(set(r), "{ctx}: the CPU keeps row {r}, the device does not");
    }
    assert!(
        (0..n).all(|r| live[r] || !set(r)),
        "{ctx}: a row not live is a candidate"
    );
    // f32 rounding of the bounds may add a row at the edge, no more.
    assert!(
        count <= union.len() + 2 * nq,
        "{ctx}: {count} candidates, the CPU {}",
        union.len()
    );
    // The f64 reference's top-k are candidates (up to ties at the k-th score).
    for (j, qj) in q.chunks(dim).enumerate() {
        let score = |r: usize| {
            let dot: f64 = c[r * dim..(r + 1) * dim]
                .iter()
                .zip(qj)
                .map(|(&x, &y)| x as f64 * y as f64)
                .sum();
            match metric {
                Metric::Cosine => dot * inv[r] as f64,
                Metric::InnerProduct => dot,
                Metric::L2 => dot + bias[r] as f64,
            }
        };
        let mut order: Vec<usize> = (0..n).filter(|&r| live[r]).collect();
        order.sort_by(|&a, &b| score(b).total_cmp(&score(a)));
        if let Some(&kth) = order.get(k.min(order.len()) - 1) {
            let floor = score(kth) + 1e-5 * score(kth).abs().max(1.0);
            for &r in order.iter().take_while(|&&r| score(r) > floor) {
                assert!(set(r), "{ctx}: query {j}: reference top-k row {r} left out");
            }
        }
    }
    // Rows are filtered at all on data that quantises well.
    if matches!(kind, Rows::Random) && delete == 0 && n >= 2000 {
        assert!(count < n / 4, "{ctx}: {count} of {n} rows are candidates");
    }
}

#[test]
fn int8_bounds_are_the_cpu_tiers_and_the_mask_keeps_every_candidate() {
    for metric in [Metric::Cosine, Metric::InnerProduct, Metric::L2] {
        check(1, 3000, 64, 10, metric, Rows::Random, 0);
        check(5, 2500, 33, 7, metric, Rows::Clustered, 0);
        check(3, 700, 24, 40, metric, Rows::NearDuplicates, 0);
    }
    // Two bounds launches (8 + 2 queries), a k-th over several select segments, deleted
    // rows, and fewer live rows than k (every live row is then a candidate).
    check(10, 9000, 16, 50, Metric::Cosine, Rows::Random, 3);
    check(2, 60, 8, 50, Metric::L2, Rows::Clustered, 2);
}
