//! `hybridvec query`: top-k of given or random queries against a store or an `.npy`
//! corpus, with an optional filter read from a file, printed as text or JSON lines.

use crate::out::outln;
use crate::store;
use crate::{executor, random_queries, Backend};
use hybridvec::{input, Corpus, Error, SearchOptions};
use std::path::{Path, PathBuf};

#[allow(clippy::too_many_arguments)]
pub(crate) fn query(
    store_dir: Option<&std::path::Path>,
    corpus_path: Option<&std::path::Path>,
    random: Option<usize>,
    seed: u64,
    input_path: Option<PathBuf>,
    k: usize,
    backend: Backend,
    options: &SearchOptions,
    json: bool,
) -> Result<(), Error> {
    if k == 0 {
        return Err(Error::InvalidConfig("--k must be at least 1".into()));
    }
    // The store is opened (and its records verified) once, here.
    let (store, corpus, dim) = match (store_dir, corpus_path) {
        (Some(dir), _) => {
            let s = store::open_for_reading(dir)?;
            let dim = s.dim();
            (Some(s), None, dim)
        }
        (None, Some(p)) => {
            // A float16 file stays 16-bit: half the memory, and the same values.
            let file = input::VectorFile::open(p)?;
            let element = file.element_type();
            let m = file.read_all()?;
            let dim = m.cols();
            let corpus = Corpus::with_element_type(m.into_vec(), dim, element).map_err(|e| {
                Error::BadInputFile {
                    path: p.to_path_buf(),
                    reason: e.to_string(),
                }
            })?;
            (None, Some(corpus), dim)
        }
        (None, None) => {
            return Err(Error::InvalidConfig(
                "give --store DIR or --corpus FILE".into(),
            ))
        }
    };
    let corpus_name = match (store_dir, corpus_path) {
        (Some(d), _) => format!("the store {}", d.display()),
        (_, Some(p)) => format!("the corpus {}", p.display()),
        _ => unreachable!("one source"),
    };
    let qm = match (random, input_path) {
        (Some(q), None) => hybridvec::Matrix::new(random_queries(q, dim, seed)?, q, dim)?,
        (None, Some(p)) => {
            let m = input::read_matrix(&p)?;
            if m.cols() != dim {
                return Err(Error::BadInputFile {
                    path: p,
                    reason: format!(
                        "queries have dimension {}, but {corpus_name} has dimension {dim}",
                        m.cols()
                    ),
                });
            }
            m
        }
        _ => {
            return Err(Error::InvalidConfig(
                "give exactly one of --random Q or --input FILE".into(),
            ))
        }
    };
    let exec = executor(backend)?;
    if let Some(store) = store {
        return store::query(&exec, &store, &qm, k, options, json);
    }
    let corpus = corpus.expect("store or corpus");
    let hits = exec.search(qm.view(), &corpus, k, options)?;
    print_hits(
        hits.into_iter()
            .map(|hs| hs.into_iter().map(|h| (h.index, h.score)).collect()),
        "index",
        json,
        None,
    )
}

/// The filter of `--filter-ids` or `--filter-rows`: one id or row index per line, blank
/// lines skipped. A file that cannot be read, is not UTF-8, or holds a line that is no
/// row index is an error naming the file (and the line).
pub(crate) fn read_filter(
    ids: Option<&Path>,
    rows: Option<&Path>,
) -> Result<Option<hybridvec::Filter>, Error> {
    let read = |path: &Path| {
        let bytes = std::fs::read(path).map_err(|source| Error::FileIo {
            path: path.to_path_buf(),
            source,
        })?;
        String::from_utf8(bytes).map_err(|_| Error::BadInputFile {
            path: path.to_path_buf(),
            reason: "not UTF-8 text (one id or row index per line)".into(),
        })
    };
    let lines = |text: &str| -> Vec<(usize, String)> {
        text.lines()
            .enumerate()
            .map(|(i, l)| (i + 1, l.trim_end_matches('\r').to_string()))
            .filter(|(_, l)| !l.trim().is_empty())
            .collect()
    };
    if let Some(path) = ids {
        let text = read(path)?;
        return Ok(Some(hybridvec::Filter::Ids(
            lines(&text).into_iter().map(|(_, l)| l).collect(),
        )));
    }
    if let Some(path) = rows {
        let text = read(path)?;
        let rows = lines(&text)
            .into_iter()
            .map(|(n, l)| {
                l.trim().parse::<usize>().map_err(|_| Error::BadInputFile {
                    path: path.to_path_buf(),
                    reason: format!(
                        "line {n}: {:?} is not a row index (a whole number from 0)",
                        l.trim()
                    ),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        return Ok(Some(hybridvec::Filter::Rows(rows)));
    }
    Ok(None)
}

/// A filter's error, naming the file it came from.
pub(crate) fn name_filter_file(e: Error, ids: Option<&Path>, rows: Option<&Path>) -> Error {
    match (&e, ids.or(rows)) {
        (Error::FilterOutOfRange { .. } | Error::UnknownId { .. }, Some(path)) => {
            Error::BadInputFile {
                path: path.to_path_buf(),
                reason: e.to_string(),
            }
        }
        _ => e,
    }
}

/// One line per query: `{"query": i, "hits": [{<key>: .., "score": ..}, ...]}` with
/// `--json`, else `query i: key:score ...`.
/// Prints each query's hits: a line of `key:score` pairs, or a JSON object per line
/// (`{"query": i, "hits": [...]}`, with `"rescored"` when `rescored` has an entry per
/// query: the rows its certified search re-scored, or null when none ran).
pub(crate) fn print_hits<K: std::fmt::Display + Into<serde_json::Value>>(
    hits: impl Iterator<Item = Vec<(K, f32)>>,
    key: &str,
    json: bool,
    rescored: Option<&[Option<usize>]>,
) -> Result<(), Error> {
    for (i, hs) in hits.enumerate() {
        if json {
            let hs: Vec<_> = hs
                .into_iter()
                .map(|(id, score)| {
                    let mut o = serde_json::Map::new();
                    o.insert(key.to_string(), id.into());
                    o.insert("score".to_string(), score.into());
                    serde_json::Value::Object(o)
                })
                .collect();
            let mut line = serde_json::json!({"query": i, "hits": hs});
            if let Some(r) = rescored {
                line["rescored"] = r.get(i).copied().flatten().into();
            }
            outln!("{line}");
        } else {
            let s: Vec<String> = hs
                .iter()
                .map(|(id, score)| format!("{id}:{score:.4}"))
                .collect();
            outln!("query {i}: {}", s.join(" "));
        }
    }
    Ok(())
}
