//! Seeded, deterministic random data for benchmarks, demos and tests, and the exact f64
//! reference scores that tests compare against.
//!
//! Row `i` of [`random_matrix`] depends only on `(seed, i)`, never on the row count or on
//! thread scheduling, so any row can be regenerated on its own and checked bit for bit.

use rayon::prelude::*;

/// SplitMix64: turns `(seed, stream)` into well-mixed 64-bit states.
fn splitmix64(x: &mut u64) -> u64 {
    *x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A small, fast PRNG (xoshiro256++) keyed by `(seed, stream)`.
#[derive(Clone, Debug)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    /// A generator for stream `stream` of `seed`; different streams are independent.
    pub fn new(seed: u64, stream: u64) -> Self {
        let mut x = seed ^ stream.wrapping_mul(0xD1B5_4A32_D192_ED03);
        let s = [
            splitmix64(&mut x),
            splitmix64(&mut x),
            splitmix64(&mut x),
            splitmix64(&mut x),
        ];
        Self { s }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = (s[0].wrapping_add(s[3])).rotate_left(23).wrapping_add(s[0]);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in `[0, 1)` with 53 random bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// Fills `out` with standard normal values (Box–Muller, two values per draw pair).
    pub fn fill_normal(&mut self, out: &mut [f32]) {
        let mut pairs = out.chunks_exact_mut(2);
        for p in &mut pairs {
            let (a, b) = self.normal_pair();
            p[0] = a as f32;
            p[1] = b as f32;
        }
        if let [last] = pairs.into_remainder() {
            *last = self.normal_pair().0 as f32;
        }
    }

    fn normal_pair(&mut self) -> (f64, f64) {
        // 1 - u is in (0, 1], so the logarithm is finite.
        let u1 = 1.0 - self.next_f64();
        let u2 = self.next_f64();
        let r = (-2.0 * u1.ln()).sqrt();
        let t = std::f64::consts::TAU * u2;
        (r * t.cos(), r * t.sin())
    }
}

/// `len` standard normal values from stream `stream` of `seed`.
pub fn random_vec(len: usize, seed: u64, stream: u64) -> Vec<f32> {
    let mut v = vec![0.0; len];
    Rng::new(seed, stream).fill_normal(&mut v);
    v
}

/// Fills row `row` of a seeded random matrix (the same values [`random_matrix`] gives it).
pub fn fill_random_row(out: &mut [f32], seed: u64, row: u64) {
    Rng::new(seed, row).fill_normal(out);
}

/// A `rows × dim` row-major matrix of standard normal values; row `i` depends only on
/// `(seed, i)`. Generated on all cores.
///
/// # Panics
/// When `rows × dim` overflows or the memory is not available; [`try_random_matrix`]
/// returns those as errors.
pub fn random_matrix(rows: usize, dim: usize, seed: u64) -> Vec<f32> {
    try_random_matrix(rows, dim, seed).unwrap_or_else(|e| panic!("random_matrix: {e}"))
}

/// [`random_matrix`], with [`Error::InsufficientMemory`](crate::Error::InsufficientMemory)
/// when `rows × dim` values overflow or do not fit in the memory available.
pub fn try_random_matrix(rows: usize, dim: usize, seed: u64) -> crate::Result<Vec<f32>> {
    let what = format!("a {rows} × {dim} random matrix");
    let mut v = crate::mem::try_zeroed_f32(rows, dim, &what)?;
    if dim > 0 {
        v.par_chunks_mut(dim)
            .enumerate()
            .for_each(|(i, row)| fill_random_row(row, seed, i as u64));
    }
    Ok(v)
}

/// Stream that keeps record contents independent of the embedding values.
const CONTENT_STREAM: u64 = 0xC0_7E_A7;

/// Record `i` of a seeded random data set, as `hybridvec ingest --random` writes it and
/// `hybridvec verify --expect-seed` checks it: id `rec-{i}`, embedding = row `i` of
/// [`random_matrix`]`(_, dim, seed)`, content = `rec-{i}:` plus 0–63 pseudo-random bytes.
/// Everything depends only on `(seed, i)`.
pub fn random_record(seed: u64, i: u64, dim: usize) -> (String, Vec<f32>, Vec<u8>) {
    let id = format!("rec-{i}");
    let mut emb = vec![0.0; dim];
    fill_random_row(&mut emb, seed, i);
    let mut rng = Rng::new(seed ^ CONTENT_STREAM, i);
    let extra = rng.below(64) as usize;
    let mut content = format!("{id}:").into_bytes();
    content.extend((0..extra).map(|_| rng.next_u64() as u8));
    (id, emb, content)
}

/// Cosine similarity in f64 of every query (row of `queries`) against every row of
/// `corpus`, both row-major with `dim` columns: one `Vec` per query. A zero vector scores
/// 0. Exact and slow (no blocking): the reference tests compare the engines against.
pub fn cosine_reference(queries: &[f32], corpus: &[f32], dim: usize) -> Vec<Vec<f64>> {
    let norm = |v: &[f32]| v.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt();
    let corpus_norms: Vec<f64> = corpus.chunks_exact(dim).map(norm).collect();
    queries
        .par_chunks_exact(dim)
        .map(|q| {
            let nq = norm(q);
            corpus
                .chunks_exact(dim)
                .zip(&corpus_norms)
                .map(|(c, &nc)| {
                    if nq == 0.0 || nc == 0.0 {
                        0.0
                    } else {
                        let dot: f64 = q.iter().zip(c).map(|(&a, &b)| a as f64 * b as f64).sum();
                        dot / (nq * nc)
                    }
                })
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_depend_only_on_seed_and_index() {
        let a = random_matrix(10, 7, 42);
        let b = random_matrix(3, 7, 42);
        assert_eq!(&a[..21], &b[..]);
        let mut row = vec![0.0; 7];
        fill_random_row(&mut row, 42, 9);
        assert_eq!(&a[63..70], &row[..]);
        assert_ne!(random_matrix(1, 7, 43), b[..7].to_vec());
    }

    #[test]
    fn sizes_that_overflow_or_exceed_memory_are_errors_not_wraps() {
        use crate::Error;
        // rows × dim overflows usize: it used to wrap to a small (or empty) matrix.
        for (rows, dim) in [(usize::MAX, 2), (1 << 40, 1 << 40), (2, usize::MAX)] {
            match try_random_matrix(rows, dim, 1) {
                Err(Error::InsufficientMemory { bytes, .. }) => assert_eq!(bytes, u64::MAX),
                other => panic!("{rows} × {dim}: {:?}", other.map(|v| v.len())),
            }
        }
        // Fits in usize, not in memory.
        assert!(matches!(
            try_random_matrix(1 << 40, 768, 1),
            Err(Error::InsufficientMemory { .. })
        ));
        let r = std::panic::catch_unwind(|| random_matrix(usize::MAX, 2, 1));
        let msg = r.expect_err("random_matrix must not wrap");
        let msg = msg.downcast_ref::<String>().expect("a message");
        assert!(
            msg.contains("random_matrix") && msg.contains("bytes"),
            "{msg}"
        );
        assert_eq!(try_random_matrix(3, 5, 1).unwrap(), random_matrix(3, 5, 1));
    }

    #[test]
    fn normal_values_have_normal_moments() {
        let v = random_vec(200_000, 5, 0);
        let n = v.len() as f64;
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
        let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0).abs() < 0.02, "var {var}");
        assert!(v.iter().all(|x| x.is_finite()));
    }
}
