//! Certified top-k on the device through the corpus's resident int8 tier: the tier proves
//! which rows may be in a query's top-k, and the FP32 kernels score only those (see
//! `program::int8` and [`crate::quant::tier`]).

use super::CudaBackend;
use crate::backend::BackendError;
use crate::corpus::CorpusView;
use crate::cuda::error::launch_failed;
use crate::cuda::program;
use crate::hit::Hit;
use crate::matrix::MatrixRef;
use crate::metric::Metric;
use std::sync::OnceLock;

impl CudaBackend {
    /// Top-k through the corpus's int8 tier, where it has one and the call is one the
    /// certificate serves (up to [`program::SMALL_Q`] queries; see `program::int8`): the
    /// tier, resident on the device, proves which rows may be in some query's top-k, and
    /// the FP32 kernels score only those: a masked top-k of the resident rows, or, where
    /// the rows do not fit beside the tier, the candidates alone, gathered and uploaded.
    /// The answer is the full scan's (each row's score depends on nothing else). `None`:
    /// scan in full.
    pub(super) fn certified_top_k(
        &self,
        queries: MatrixRef<'_>,
        corpus: CorpusView<'_>,
        k: usize,
    ) -> Result<Option<Vec<Vec<Hit>>>, BackendError> {
        let Some(tier) = corpus.int8_tier() else {
            return Ok(None);
        };
        let (nq, n, dim) = (queries.rows(), corpus.rows(), corpus.dim());
        if nq > program::SMALL_Q || tier.rows() != n {
            return Ok(None);
        }
        let live = corpus.live_mask();
        let shape = program::Int8Shape {
            nq,
            n,
            dim,
            masked: live.is_some(),
            metric: corpus.metric(),
        };
        let Some(prog) = program::int8_candidates(&shape, k) else {
            return Ok(None);
        };
        let bits = {
            let stream = self.streams.take()?;
            self.ctx.bind_to_thread().map_err(launch_failed)?;
            let copy = self.int8.get(&self.ctx, corpus, tier, &stream)?;
            let bias = match corpus.metric() {
                Metric::L2 => Some(copy.bias(corpus, &stream)?),
                Metric::Cosine | Metric::InnerProduct => None,
            };
            let _done = stream.done_guard();
            let words = program::int8_queries(queries.as_slice(), dim);
            let shared = copy.bound(bias.as_deref());
            let layout = self.queue(&stream, &prog, shared, Some((&words, live)))?;
            stream.finish()?;
            let range = layout
                .temp_range(prog.scores(), n.div_ceil(32), 4)
                .expect("the candidate mask is scratch");
            let bits: Vec<u32> = stream.scratch().results(range);
            bits
        };
        if bits.len() != n.div_ceil(32) {
            return Err(BackendError::LaunchFailed {
                reason: format!("read back {} mask words for {n} rows", bits.len()),
            });
        }
        let rows: Vec<usize> = (0..n)
            .filter(|&r| bits[r / 32] >> (r % 32) & 1 == 1)
            .collect();
        crate::quant::note_rescored(rows.len());
        match self.top_k_device(queries, corpus, k, Some(&bits)) {
            Err(BackendError::OutOfMemory { .. } | BackendError::CorpusTooLarge { .. }) => {
                tracing::debug!(
                    rows = rows.len(),
                    "the rows do not fit beside the int8 tier; scoring the candidates alone"
                );
                self.top_k_gathered(queries, corpus, k, &rows).map(Some)
            }
            other => other.map(Some),
        }
    }

    /// Top-k among `rows` of `corpus` (ascending), scored alone: the rows copied out as
    /// stored (f32 or 16-bit, so the same kernels score them) with their factors into a
    /// corpus of their own, kept on the device for this call.
    fn top_k_gathered(
        &self,
        queries: MatrixRef<'_>,
        corpus: CorpusView<'_>,
        k: usize,
        rows: &[usize],
    ) -> Result<Vec<Vec<Hit>>, BackendError> {
        if rows.is_empty() {
            return Ok(vec![Vec::new(); queries.rows()]);
        }
        let d = corpus.dim();
        let scale: Vec<f32> = rows.iter().map(|&r| corpus.inv_norms()[r]).collect();
        let bias: Option<Vec<f32>> = corpus
            .row_bias()
            .map(|b| rows.iter().map(|&r| b[r]).collect());
        let (mut data, mut bits, widened) = (Vec::new(), Vec::new(), OnceLock::new());
        let view = match corpus.half_bits() {
            Some((_, all)) => {
                for &r in rows {
                    bits.extend_from_slice(&all[r * d..(r + 1) * d]);
                }
                corpus
                    .gathered_half((&bits, &widened), &scale, bias.as_deref())
                    .expect("a 16-bit view")
            }
            None => {
                data.reserve(rows.len() * d);
                for &r in rows {
                    corpus.push_row_f32(r, &mut data);
                }
                corpus.gathered(&data, &scale, bias.as_deref())
            }
        }
        .detached();
        let hits = self.top_k_device(queries, view, k.min(rows.len()), None)?;
        Ok(hits
            .into_iter()
            .map(|h| {
                h.into_iter()
                    .map(|h| Hit {
                        index: rows[h.index],
                        ..h
                    })
                    .collect()
            })
            .collect())
    }
}
