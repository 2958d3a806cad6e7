use super::*;
use proptest::prelude::*;

/// `Σ aᵢ·bᵢ` in f64 and a bound on its distance from the exact sum: each product of two
/// f32 is exact in f64, and `n` additions err by at most `n·u·Σ|aᵢ·bᵢ|`.
fn dot_f64(a: &[f32], b: &[f32]) -> (f64, f64) {
    let (mut s, mut abs) = (0.0f64, 0.0f64);
    for (&x, &y) in a.iter().zip(b) {
        let p = x as f64 * y as f64;
        s += p;
        abs += p.abs();
    }
    (s, a.len() as f64 * U64 * abs)
}

/// Checks that the interval of `query · row` holds the exact value.
fn check_contains(query: &[f32], row: &[f32]) -> Result<(), String> {
    let q = Int8Query::new(query);
    let mut codes = vec![0i8; row.len()];
    let r = quantise(row, &mut codes);
    let (lo, hi) = q.interval(dot_i8(&q.codes, &codes), &r);
    let (exact, err) = dot_f64(query, row);
    if lo - err <= exact && exact <= hi + err {
        Ok(())
    } else {
        Err(format!("{exact} (± {err}) outside [{lo}, {hi}]"))
    }
}

/// A vector of `dim` values, each a uniform draw in [−1, 1) times 10^e, e drawn per value
/// from `exps` (a narrow range: one magnitude; a wide one: values of very different sizes).
fn vector(dim: usize, exps: std::ops::Range<i32>) -> impl Strategy<Value = Vec<f32>> {
    prop::collection::vec((-1.0f32..1.0, exps), dim).prop_map(|v| {
        v.into_iter()
            .map(|(m, e)| (m as f64 * 10f64.powi(e)) as f32)
            .collect()
    })
}

fn pair() -> impl Strategy<Value = (Vec<f32>, Vec<f32>)> {
    (1usize..=4096, -44i32..38, 0i32..12).prop_flat_map(|(dim, e, spread)| {
        let exps = e..(e + 1 + spread).min(39);
        (vector(dim, exps.clone()), vector(dim, exps))
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// The interval holds the exact dot product for every row: dimensions 1 to 4096,
    /// magnitudes from f32's subnormals to near its largest, rows of one magnitude and rows
    /// whose values span up to 12 orders of magnitude.
    #[test]
    fn the_interval_contains_the_exact_dot_product((q, x) in pair()) {
        check_contains(&q, &x).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn the_simd_dots_equal_the_scalar_one(
        a in prop::collection::vec(any::<i8>(), 0..600),
        seed in any::<u64>(),
    ) {
        let b: Vec<i8> = crate::data::random_matrix(1, a.len().max(1), seed)
            .iter()
            .take(a.len())
            .map(|v| (v * 127.0).round() as i8)
            .collect();
        prop_assert_eq!(dot_i8(&a, &b), dot_i8_scalar(&a, &b) as i64);
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: AVX2 is present (checked just above).
            prop_assert_eq!(unsafe { dot_i8_avx2(&a, &b) }, dot_i8_scalar(&a, &b));
        }
    }
}

/// The AVX2 quantiser gives the portable one's codes and bounds, bit for bit, for rows
/// of every length around its 4- and 8-value steps, of one magnitude and of very
/// different ones (subnormals to near f32's largest), with values on the rounding's ties
/// (`k + ½` times the scale), signed zeros, and rows of zeros.
#[cfg(target_arch = "x86_64")]
#[test]
fn the_avx2_quantiser_gives_the_portable_bits() {
    if !std::is_x86_feature_detected!("avx2") {
        eprintln!("skipped: no AVX2");
        return;
    }
    let check = |x: &[f32], what: &str| {
        let (mut a, mut b) = (vec![0i8; x.len()], vec![0i8; x.len()]);
        // SAFETY: the CPU has AVX2 (checked above).
        let fast = unsafe { quantise_avx2(x, &mut a) };
        let slow = quantise_portable(x, &mut b);
        assert_eq!(a, b, "{what}: codes");
        let bits = |q: Quantised| [q.scale, q.residual, q.norm, q.coded_norm].map(f32::to_bits);
        assert_eq!(bits(fast), bits(slow), "{what}: {fast:?} against {slow:?}");
    };
    let mut seed = 11u64;
    for len in (0..=40).chain([63, 64, 65, 767, 768, 769, 4099]) {
        for e in [-45, -40, -20, 0, 5, 30, 37] {
            let row = crate::data::random_matrix(1, len.max(1), seed);
            seed += 1;
            let scaled: Vec<f32> = row[..len]
                .iter()
                .map(|&v| (v as f64 * 10f64.powi(e)) as f32)
                .collect();
            assert!(scaled.iter().all(|v| v.is_finite()), "finite inputs");
            check(&scaled, &format!("len {len}, 1e{e}"));
            // Spread over 12 orders of magnitude.
            let spread: Vec<f32> = scaled
                .iter()
                .enumerate()
                .map(|(i, &v)| v * 10f32.powi(-((i % 13) as i32)))
                .collect();
            check(&spread, &format!("len {len}, 1e{e}, spread"));
        }
        // Ties: the largest value 127, the others k + ½ (exact in f32), ±0 among them.
        let ties: Vec<f32> = (0..len)
            .map(|i| match i % 5 {
                0 => 127.0,
                1 => -0.0,
                2 => 0.0,
                3 => (i % 127) as f32 + 0.5,
                _ => -((i % 126) as f32) - 0.5,
            })
            .collect();
        check(&ties, &format!("len {len}, ties"));
        check(&vec![0.0; len], &format!("len {len}, zeros"));
        check(&vec![-0.0; len], &format!("len {len}, negative zeros"));
    }
}

/// The bound is reached: a query whose codes are exactly its values (no residual of its
/// own) and point along a row's residual makes `query · residual` at least 99 % of the
/// bound `‖query‖·e`. So shrinking the interval's radius by 1 % leaves this exact value
/// outside (checked by hand: `radius * 0.99` in `interval` fails here).
#[test]
fn a_query_along_the_residual_reaches_the_bound() {
    for (dim, seed) in [(8, 1), (32, 2), (768, 3)] {
        let x = crate::data::random_matrix(1, dim, seed);
        let mut codes = vec![0i8; dim];
        let r = quantise(&x, &mut codes);
        let residual: Vec<f64> = x
            .iter()
            .zip(&codes)
            .map(|(&v, &c)| v as f64 - r.scale as f64 * c as f64)
            .collect();
        let top = residual.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let query: Vec<f32> = residual
            .iter()
            .map(|v| (127.0 * v / top).round() as f32)
            .collect();
        let q = Int8Query::new(&query);
        assert_eq!(q.q.residual, 0.0, "integer values up to 127 code exactly");
        let (lo, hi) = q.interval(dot_i8(&q.codes, &codes), &r);
        let (exact, _) = dot_f64(&query, &x);
        let (centre, radius) = ((lo + hi) / 2.0, (hi - lo) / 2.0);
        assert!(
            (exact - centre).abs() >= 0.99 * radius,
            "D = {dim}: {exact} is {} from the centre, radius {radius}",
            (exact - centre).abs()
        );
        check_contains(&query, &x).unwrap();
    }
}

#[test]
fn quantising_keeps_codes_in_range_and_bounds_the_residual() {
    let rows: [Vec<f32>; 6] = [
        vec![0.0; 5],
        vec![f32::from_bits(1), -f32::from_bits(3), 0.0],
        vec![f32::MAX, -f32::MAX, 1.0, 0.0],
        vec![1e-30, 2.5e-31, -7e-30],
        vec![3.0, -1.0, 0.5, 127.0],
        crate::data::random_matrix(1, 4096, 9),
    ];
    for x in rows {
        let mut codes = vec![0i8; x.len()];
        let r = quantise(&x, &mut codes);
        assert!(codes.iter().all(|&c| c != i8::MIN), "{codes:?}");
        let (mut rr, mut xx) = (0.0f64, 0.0f64);
        for (&v, &c) in x.iter().zip(&codes) {
            let d = v as f64 - r.scale as f64 * c as f64;
            rr += d * d;
            xx += v as f64 * v as f64;
        }
        assert!(
            rr.sqrt() <= r.residual as f64,
            "{x:?}: {} > {}",
            rr.sqrt(),
            r.residual
        );
        assert!(xx.sqrt() <= r.norm as f64, "{x:?}");
        // The norm of f32::MAX values overflows f32: the bound is infinite, not wrong.
        if x.iter().all(|v| v.abs() < 1e30) {
            assert!(r.norm.is_finite());
        }
        for (i, q) in [x.clone(), vec![1.0; x.len()], vec![0.0; x.len()]]
            .iter()
            .enumerate()
        {
            check_contains(q, &x).unwrap_or_else(|e| panic!("{x:?} query {i}: {e}"));
        }
    }
}

/// Past 133 143 codes an i32 sum overflows; the dot product stays exact.
#[test]
fn long_dot_products_do_not_overflow() {
    let n = 300_001;
    let a: Vec<i8> = (0..n)
        .map(|i| if i % 7 == 0 { -127 } else { 127 })
        .collect();
    let b = vec![127i8; n];
    let want: i64 = a.iter().map(|&x| x as i64 * 127).sum();
    assert!(want > i32::MAX as i64);
    assert_eq!(dot_i8(&a, &b), want);
}
