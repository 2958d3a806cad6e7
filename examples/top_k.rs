//! The API in a few lines: build a corpus once, then search it.
use hybridvec::{data, Corpus, ExecutorConfig, HybridExecutor, MatrixRef};

fn main() -> Result<(), hybridvec::Error> {
    let dim = 384;
    let corpus = Corpus::new(data::random_matrix(20_000, dim, 1), dim)?;
    let queries = data::random_matrix(8, dim, 2);
    let exec = HybridExecutor::new(ExecutorConfig::default())?;
    let hits = exec.top_k(MatrixRef::new(&queries, 8, dim)?, &corpus, 5)?;
    for (q, hs) in hits.iter().enumerate() {
        println!(
            "query {q}: {:?}",
            hs.iter().map(|h| (h.index, h.score)).collect::<Vec<_>>()
        );
    }
    Ok(())
}
