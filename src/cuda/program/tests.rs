//! The program builders' own checks: grid limits, buffer names, memory held, paths.

use super::top_k::Sample;
use super::*;

fn shape(nq: usize, n: usize, dim: usize) -> Shape {
    Shape {
        nq,
        n,
        dim,
        masked: false,
        precision: Precision::Fp32,
        stored: None,
        metric: crate::metric::Metric::Cosine,
        sms: 132,
        gemm: false,
        occupancy: Default::default(),
    }
}

#[test]
fn every_launch_fits_the_grid_limits_and_names_existing_buffers() {
    for (nq, n, dim, k) in [
        (1, 1_000_000, 768, 10),
        (1024, 1_000_000, 768, 10),
        (1024, 1_000_000, 768, 1024),
        (4096, 100_000, 64, 32),
        (3, 17, 5, 1),
        (65535, 4097, 8, 33),
    ] {
        let s = shape(nq, n, dim);
        let p = top_k(&s, k, 1 << 16);
        for l in &p.launches {
            assert!(l.grid.iter().all(|&g| g >= 1) && l.grid[1] as usize <= MAX_GRID_Y);
            assert!(l.smem as usize <= SMALL_Q_SMEM, "{l:?}");
            for a in &l.args {
                if let Arg::Ptr(Buf::Temp(i), off) = a {
                    assert!(*i < p.temps.len() && *off < p.temps[*i].len, "{l:?}");
                }
            }
        }
        assert_eq!(p.launches.last().unwrap().kernel, Kernel::SortTopK);
    }
}

#[test]
fn fused_top_k_holds_candidates_not_scores() {
    // 1024 × 1M scores would be 4 GB; the fused program holds candidates only.
    let p = top_k(&shape(1024, 1_000_000, 768), 10, 1 << 20);
    assert!(p.launches.iter().all(|l| l.kernel != Kernel::ScoreTiled));
    assert!(p.device_bytes() < 200 << 20, "{}", p.device_bytes());
    // Larger k over a large corpus: filtered, and its sample is fused too.
    let p = top_k(&shape(1024, 1_000_000, 768), 100, 1 << 16);
    assert!(p.counts.is_some());
    assert!(p.launches.iter().all(|l| l.kernel != Kernel::ScoreTiled));
    // Over a small corpus, larger k scores a chunk of rows into memory.
    let p = top_k(&shape(1024, 20_000, 64), 1024, 1 << 13);
    assert!(p.launches.iter().any(|l| l.kernel == Kernel::ScoreTiled));
    assert!(p.temps.iter().any(|t| t.len == 1024 << 13));
}

#[test]
fn the_sample_is_distinct_rows_spread_to_both_ends() {
    for (n, k) in [
        (20_000, 40),
        (100_000, 1000),
        (1_000_000, 1024),
        (1_000_003, 33),
    ] {
        let rows = sampled_rows(n, k).expect("filtered");
        assert_eq!(rows.len(), Sample::STRETCHES);
        assert_eq!((rows[0].start, rows[rows.len() - 1].end), (0, n));
        assert!(rows.windows(2).all(|w| w[0].end < w[1].start), "{rows:?}");
        let sampled: usize = rows.iter().map(|r| r.len()).sum();
        assert!(sampled >= (n / 8).max(4 * k) && 4 * sampled <= n);
    }
    // Too few rows per k to pay, or k small enough for the warp lists.
    assert!(sampled_rows(20_000, 1024).is_none() && sampled_rows(1_000_000, 32).is_none());
}

#[test]
fn large_k_over_a_large_corpus_is_filtered_and_holds_far_less() {
    let s = shape(1024, 1_000_000, 768);
    let filtered = top_k(&s, 1024, 1 << 20);
    let chunked = top_k_chunked(&s, 1024, 1 << 20);
    assert!(filtered.counts.is_some() && chunked.counts.is_none());
    assert!(filtered
        .launches
        .iter()
        .any(|l| l.kernel == Kernel::FilterTiled));
    assert!(
        filtered.device_bytes() * 3 < chunked.device_bytes(),
        "{} vs {}",
        filtered.device_bytes(),
        chunked.device_bytes()
    );
    // Too small a corpus for a sample to pay: chunked from the start.
    assert!(top_k(&shape(64, 20_000, 64), 1024, 1 << 20)
        .counts
        .is_none());
    // No overflow at the capacity, an overflow past it.
    assert!(!overflowed(&[0, 4096], 4096) && overflowed(&[4097, 0], 4096));
}

#[test]
fn a_layout_places_every_buffer_apart_inputs_first_and_results_last() {
    use super::layout::ALIGN;
    for masked in [false, true] {
        let mut s = shape(100, 50_000, 32);
        s.masked = masked;
        let programs = [
            top_k(&s, 10, 8192),
            top_k(&s, 100, 8192),
            top_k_chunked(&s, 100, 8192),
            cosine_chunk(&s, 0, 8192),
        ];
        for p in programs {
            let l = p.layout();
            let inputs = 100 * 32 * 4;
            let mask = if masked {
                50_000usize.div_ceil(32) * 4
            } else {
                0
            };
            // (start, end) of every buffer: the inputs, then each scratch buffer.
            let mut spans = vec![(l.queries, l.queries + inputs)];
            if masked {
                spans.push((l.mask, l.mask + mask));
            }
            assert_eq!(l.inputs_end, spans.last().unwrap().1);
            for (t, &at) in p.temps.iter().zip(&l.temps) {
                spans.push((at, at + t.len * t.elem.size()));
            }
            for &(a, b) in &spans {
                assert_eq!(a % ALIGN, 0, "{l:?}");
                assert!(b <= l.total, "{l:?}");
                assert!(a >= l.inputs_end || b <= l.inputs_end, "{l:?}");
            }
            let mut sorted = spans.clone();
            sorted.sort();
            for w in sorted.windows(2) {
                assert!(w[0].1 <= w[1].0, "overlap in {l:?}");
            }
            // The results are adjacent, in order, and last.
            let results = p.result_temps();
            assert_eq!(
                results[0],
                match p.scores() {
                    Buf::Temp(i) => i,
                    _ => unreachable!(),
                }
            );
            let result_spans: Vec<_> = results
                .iter()
                .map(|&i| spans[i + 1 + masked as usize])
                .collect();
            assert_eq!(l.results.start, result_spans[0].0);
            assert_eq!(l.results.end, result_spans.last().unwrap().1);
            for w in result_spans.windows(2) {
                assert_eq!(w[1].0, w[0].1.div_ceil(ALIGN) * ALIGN);
            }
            for (i, span) in spans.iter().enumerate().skip(1 + masked as usize) {
                if !results.contains(&(i - 1 - masked as usize)) {
                    assert!(span.1 <= l.results.start, "{l:?}");
                }
            }
            // Nothing wasted but alignment.
            let used: usize = spans.iter().map(|(a, b)| b - a).sum();
            assert!(l.total >= used && l.total < used + ALIGN * spans.len() + ALIGN);
            assert_eq!(p.device_bytes(), l.total as u64);
        }
    }
}

#[test]
fn tf32_changes_only_the_tiled_kernels() {
    let mut s = shape(256, 10_000, 64);
    let fp32 = top_k(&s, 10, 4096);
    s.precision = Precision::Tf32;
    let tf32 = top_k(&s, 10, 4096);
    let kernels = |p: &Program| p.launches.iter().map(|l| l.kernel).collect::<Vec<_>>();
    assert_eq!(kernels(&fp32)[0], Kernel::TopKTiled);
    assert_eq!(kernels(&tf32)[0], Kernel::TopKTiledTf32);
    assert_eq!(kernels(&fp32)[1..], kernels(&tf32)[1..]);
    // The memory-bound path has no TF32 variant (it is bandwidth-bound).
    let small = top_k(&shape(1, 10_000, 64), 10, 4096);
    assert_eq!(small.launches[0].kernel, Kernel::TopKSmallQ);
    let mut s = shape(1, 10_000, 64);
    s.precision = Precision::Tf32;
    assert_eq!(top_k(&s, 10, 4096).launches[0].kernel, Kernel::TopKSmallQ);
}

#[test]
fn fp16_and_bf16_read_the_half_copy_without_norms_in_every_path() {
    let cases = [
        (Precision::Fp16, 1, Kernel::TopKSmallQF16),
        (Precision::Fp16, 256, Kernel::TopKTiledF16),
        (Precision::Bf16, 1, Kernel::TopKSmallQBf16),
        (Precision::Bf16, 256, Kernel::TopKTiledBf16),
    ];
    for (precision, nq, first) in cases {
        let mut s = shape(nq, 10_000, 64);
        s.precision = precision;
        let l = &top_k(&s, 10, 4096).launches[0];
        assert_eq!(l.kernel, first);
        assert_eq!(l.args[3..5], [Arg::Ptr(Buf::CorpusHalf, 0), Arg::Null]);
        // The GEMM path: the queries' 16-bit copy in the same format, then the GEMM of
        // that format over the corpus's copy.
        s.gemm = true;
        let p = top_k(&s, 10, 4096);
        let (convert, gemm) = (&p.launches[0], &p.launches[1]);
        assert_eq!(convert.kernel, Kernel::QueriesToHalf);
        let bf16 = i32::from(precision == Precision::Bf16);
        assert_eq!(convert.args[2], Arg::I32(bf16), "{precision:?}");
        let want = [Kernel::GemmFp16, Kernel::GemmBf16][bf16 as usize];
        assert_eq!(gemm.kernel, want);
        assert_eq!(gemm.args[0], Arg::Ptr(Buf::CorpusHalf, 0));
        assert!(p
            .launches
            .iter()
            .all(|l| !l.args.contains(&Arg::Ptr(Buf::InvNorms, 0))
                && !l.args.contains(&Arg::Ptr(Buf::Corpus, 0))));
    }
}

#[test]
fn a_gemm_program_lends_cublas_a_workspace_of_its_own_arena() {
    use super::cosine::GEMM_WORKSPACE_MAX;
    // A large call: the most cuBLAS would allocate for itself on Hopper.
    let large = Shape {
        gemm: true,
        ..shape(1024, 1_000_000, 768)
    };
    for (k, chunk) in [(10, 1_000_000), (1000, 1 << 16)] {
        let p = top_k(&large, k, chunk);
        let (buf, bytes) = p.gemm_workspace().expect("a GEMM program has a workspace");
        assert_eq!(bytes, GEMM_WORKSPACE_MAX);
        let Buf::Temp(i) = buf else {
            panic!("the workspace is {buf:?}, not scratch")
        };
        // In the arena's layout, so the memory plan counts it, and apart from the
        // results (which the read-back copies).
        let layout = p.layout();
        assert!(layout.temps[i] + bytes <= layout.total);
        assert!(p.temps()[i].len() * p.temps()[i].elem().size() >= bytes);
        let (at, end) = (layout.temps[i], layout.temps[i] + bytes);
        assert!(end <= layout.results.start || at >= layout.results.end);
    }
    // A small call: at least 1 MiB, less than the most.
    let small = top_k(
        &Shape {
            gemm: true,
            ..shape(9, 1000, 16)
        },
        10,
        4096,
    );
    assert_eq!(small.gemm_workspace().map(|w| w.1), Some(1 << 20));
    // The cosine matrix by GEMM too; the own kernels lend none.
    let cos = cosine_chunk(
        &Shape {
            gemm: true,
            ..shape(64, 50_000, 128)
        },
        0,
        50_000,
    );
    // One more copy of its scores: 64 × 50 000 f32.
    assert_eq!(cos.gemm_workspace().map(|w| w.1), Some(4 * 64 * 50_000));
    assert!(top_k(&shape(1024, 100_000, 768), 10, 4096)
        .gemm_workspace()
        .is_none());
}

/// The expected-figure table of the README (issue 18): for each public GPU workload and
/// precision, what our program moves and computes, and its least time at the H200's
/// ceilings, beside a GEMM into a score matrix and a top-k over it (torch's way). The
/// model is read off the launches, so it also checks the builders: a fused top-k scores
/// every row once per query (FLOPs exactly `2·Q·N·D`), and every scan reads the corpus
/// at least once from DRAM.
#[test]
fn expected_figures_at_the_h200_ceilings() {
    use super::cost::{gemm_then_select, program_cost, program_secs, torch_secs, H200};
    println!("| workload | k | precision | own kernels: bytes | FLOPs | bound | cuBLAS path: bytes | bound | torch's way: bytes | bound | own / torch | cuBLAS path / torch |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for (name, nq, n, k) in [
        ("single", 1, 100_000, 10),
        ("small-batch", 64, 100_000, 10),
        ("large-batch", 1024, 100_000, 10),
        ("gpu-large", 1024, 1_000_000, 10),
        ("large-batch", 1024, 100_000, 1024),
    ] {
        for precision in [
            Precision::Fp32,
            Precision::Tf32,
            Precision::Fp16,
            Precision::Bf16,
        ] {
            let s = Shape {
                precision,
                ..shape(nq, n, 768)
            };
            if s.small() && precision == Precision::Tf32 {
                continue; // the memory-bound kernels have no TF32 variant
            }
            // One chunk of all rows: what an H200's memory plans for these shapes (the
            // fused and filtered paths ignore the chunk size anyway).
            let p = top_k(&s, k, n);
            assert!(p.device_bytes() < 100_000_000_000, "{name} fits an H200");
            let ours = program_cost(&p);
            let elem = if precision.half().is_some() { 2 } else { 4 };
            let min_flops = 2.0 * (nq * n * 768) as f64;
            let corpus = (n * 768 * elem) as f64;
            if s.fused(k) {
                assert_eq!(ours.flops, min_flops, "{name} {precision:?}");
                // One pass from DRAM: the tiled grids share each part's rows through L2.
                assert!(ours.bytes >= corpus, "{name} {precision:?}");
            } else {
                // The filtered path also scores its sample.
                assert!(ours.flops >= min_flops && ours.flops <= 1.5 * min_flops);
                assert!(ours.bytes >= corpus);
            }
            let secs = program_secs(&p, &H200, precision);
            let torch = gemm_then_select(nq, n, 768, k, elem);
            let torch_bytes = torch[0].bytes + torch[1].bytes;
            let gemm_secs = torch_secs(torch, &H200, precision);
            // The cuBLAS path (batches over 8 queries): GEMM steps, then the selection
            // with the rows' factors fused, in one chunk of all rows.
            let cublas = (!s.small()).then(|| {
                let p = top_k(&Shape { gemm: true, ..s }, k, n);
                let c = program_cost(&p);
                assert_eq!(c.flops, min_flops, "{name} {precision:?}: one GEMM");
                (c, program_secs(&p, &H200, precision))
            });
            let (cb_bytes, cb_bound, cb_ratio) = match cublas {
                Some((c, t)) => (
                    format!("{:.2} GB", c.bytes / 1e9),
                    format!("{:.3} ms", t * 1e3),
                    format!("{:.2}×", t / gemm_secs),
                ),
                None => ("—".into(), "—".into(), "—".into()),
            };
            println!(
                "| {name} | {k} | {precision:?} | {:.2} GB | {:.3} TFLOP | {:.3} ms | {cb_bytes} | {cb_bound} | {:.2} GB | {:.3} ms | {:.2}× | {cb_ratio} |",
                ours.bytes / 1e9,
                ours.flops / 1e12,
                secs * 1e3,
                torch_bytes / 1e9,
                gemm_secs * 1e3,
                secs / gemm_secs
            );
        }
    }
}

#[test]
fn grids_fill_the_waves_the_occupancy_allows() {
    use super::Occupancy;
    let blocks = |p: &Program| -> u32 { p.launches[0].grid.iter().product() };
    // Memory-bound: one wave of occupancy.small blocks per SM over a large corpus.
    let mut s = shape(1, 10_000_000, 64);
    for small in [1, 3, 6] {
        s.occupancy = Occupancy { small, tiled: 2 };
        assert_eq!(blocks(&top_k(&s, 10, 4096)) as usize, small * 132);
    }
    // Tiled: segments long enough for about one wave of blocks.
    let mut s = shape(256, 100_000, 64);
    let mut last = 0;
    for tiled in [1, 2, 4, 8] {
        s.occupancy = Occupancy { small: 3, tiled };
        let b = blocks(&top_k(&s, 10, 4096)) as usize;
        assert!(
            b >= tiled * 132 && b <= 2 * tiled * 132 + 4,
            "{tiled}: {b} blocks"
        );
        assert!(b > last);
        last = b;
    }
}

#[test]
fn a_corpus_stored_in_16_bits_is_read_as_stored_with_no_f32_copy() {
    let (n, dim) = (20_000, 32);
    for stored in [Half::Fp16, Half::Bf16] {
        let suffix = match stored {
            Half::Fp16 => "_f16",
            Half::Bf16 => "_bf16",
        };
        for metric in [Metric::Cosine, Metric::InnerProduct, Metric::L2] {
            for precision in [
                Precision::Fp32,
                Precision::Tf32,
                Precision::Fp16,
                Precision::Bf16,
            ] {
                // Tensor cores (and cuBLAS) only for cosine in the corpus's own format.
                let own = precision.half() == Some(stored) && metric == Metric::Cosine;
                for (nq, k) in [(3, 10), (3, 100), (70, 10), (70, 100)] {
                    let s = Shape {
                        stored: Some(stored),
                        precision,
                        metric,
                        masked: true,
                        ..shape(nq, n, dim)
                    };
                    let ctx = format!("{stored:?} {metric} {precision:?} Q={nq} k={k}");
                    assert_eq!(s.can_gemm(), own, "{ctx}");
                    assert_eq!(
                        s.arithmetic(),
                        if own { precision } else { Precision::Fp32 }
                    );
                    for p in [top_k(&s, k, 4096), top_k_chunked(&s, k, 4096)] {
                        let e = p.extents();
                        assert_eq!((e.corpus, e.corpus_half), (0, n * dim), "{ctx}");
                        assert_eq!(e.inv_norms, if metric == Metric::Cosine { n } else { 0 });
                        for l in p.launches() {
                            let reads_rows = l.args().contains(&Arg::Ptr(Buf::CorpusHalf, 0));
                            if reads_rows {
                                assert!(l.kernel().symbol().ends_with(suffix), "{ctx}: {l:?}");
                            }
                            assert!(!l
                                .args()
                                .iter()
                                .any(|a| matches!(a, Arg::Ptr(Buf::Corpus, _))));
                        }
                    }
                }
            }
        }
    }
}
