"""The Python package against a numpy f64 reference: search, scores, filters, padding,
16-bit corpora, the shard merge, and the errors of bad input."""

import threading
import time

import numpy as np
import pytest

import hybridvec as hv


def clustered(rng, n, d, centres=8, spread=1e-3):
    c = rng.standard_normal((centres, d))
    return (c[rng.integers(0, centres, n)] + spread * rng.standard_normal((n, d))).astype(np.float32)


def reference(queries, corpus, metric):
    """f64 scores (higher is better for cos and ip; l2 is a distance)."""
    q = queries.astype(np.float64)
    c = corpus.astype(np.float64)
    if metric == "cos":
        qn = np.linalg.norm(q, axis=1, keepdims=True)
        cn = np.linalg.norm(c, axis=1, keepdims=True)
        return (q / np.where(qn == 0, 1, qn)) @ (c / np.where(cn == 0, 1, cn)).T
    if metric == "ip":
        return q @ c.T
    return ((q[:, None, :] - c[None, :, :]) ** 2).sum(axis=2)


def reference_top_k(ref, k, metric):
    """Indices best first, ties to the lower index (a stable sort)."""
    key = ref if metric == "l2" else -ref
    return np.argsort(key, axis=1, kind="stable")[:, :k]


def check_against_reference(ex, queries, corpus, k, metric, rows=None):
    scores, idx = ex.search(queries, hv.Corpus(corpus), k, metric=metric)
    ref = reference(queries, corpus, metric)
    kk = min(k, corpus.shape[0])
    assert scores.shape == (queries.shape[0], k) and idx.shape == (queries.shape[0], k)
    assert scores.dtype == np.float32 and idx.dtype == np.int64
    want = reference_top_k(ref, kk, metric)
    for i in range(queries.shape[0]):
        got = idx[i, :kk]
        if metric == "cos":
            # Cosine ranks by f32 scores: equal to the reference except where two f64
            # scores are closer than f32 rounding can tell apart.
            kth = ref[i, want[i, -1]]
            assert np.all(ref[i, got] >= kth - 1e-6), (i, got, want[i])
            assert np.all(np.diff(ref[i, got]) <= 1e-6)
        else:
            np.testing.assert_array_equal(got, want[i], err_msg=f"{metric} query {i}")
        np.testing.assert_allclose(scores[i, :kk], ref[i, got], rtol=1e-5, atol=1e-5)
        assert np.all(idx[i, kk:] == -1) and np.all(np.isnan(scores[i, kk:]))


@pytest.fixture(scope="module")
def ex():
    return hv.Executor(device="cpu")


@pytest.mark.parametrize("metric", ["cos", "ip", "l2"])
@pytest.mark.parametrize("kind", ["random", "clustered"])
def test_search_matches_the_f64_reference(ex, metric, kind):
    rng = np.random.default_rng(7)
    for n, d in [(1000, 32), (777, 37), (50, 1)]:
        corpus = rng.standard_normal((n, d)).astype(np.float32) if kind == "random" else clustered(rng, n, d)
        queries = rng.standard_normal((9, d)).astype(np.float32)
        queries[0] = corpus[3]
        for k in (1, 10, n + 5):
            check_against_reference(ex, queries, corpus, k, metric)


def test_ties_go_to_the_lower_index(ex):
    corpus = np.tile(np.array([[1.0, 2.0, 3.0]], dtype=np.float32), (6, 1))
    for metric in ("cos", "ip", "l2"):
        _, idx = ex.search(np.array([[1.0, 0.0, 0.0]], np.float32), corpus, 4, metric=metric)
        assert idx.tolist() == [[0, 1, 2, 3]]


@pytest.mark.parametrize("metric", ["cos", "ip", "l2"])
def test_scores_is_the_full_matrix(ex, metric):
    rng = np.random.default_rng(3)
    corpus = rng.standard_normal((300, 24)).astype(np.float32)
    queries = rng.standard_normal((5, 24)).astype(np.float32)
    s = ex.scores(queries, corpus, metric=metric)
    assert s.shape == (5, 300) and s.dtype == np.float32
    np.testing.assert_allclose(s, reference(queries, corpus, metric), rtol=1e-4, atol=1e-4)


def test_filters_mask_rows_and_per_query(ex):
    rng = np.random.default_rng(4)
    corpus = rng.standard_normal((400, 16)).astype(np.float32)
    queries = rng.standard_normal((3, 16)).astype(np.float32)
    ref = reference(queries, corpus, "ip")
    mask = rng.random(400) < 0.3
    allowed = np.flatnonzero(mask)
    for f in (mask, allowed, allowed.tolist(), allowed.astype(np.uint32)):
        _, idx = ex.search(queries, corpus, 7, metric="ip", filter=f)
        for i in range(3):
            want = allowed[np.argsort(-ref[i, allowed], kind="stable")[:7]]
            np.testing.assert_array_equal(idx[i], want)
    per_query = [[5, 9, 11], np.array([], dtype=np.int64), np.arange(0, 400, 2)]
    s, idx = ex.search(queries, corpus, 4, metric="ip", filter=per_query)
    assert set(idx[0, :3].tolist()) == {5, 9, 11} and idx[0, 3] == -1 and np.isnan(s[0, 3])
    assert np.all(idx[1] == -1)
    assert np.all(idx[2] % 2 == 0)
    with pytest.raises(hv.FilterOutOfRange) as e:
        ex.search(queries, corpus, 3, filter=[400])
    assert e.value.details["index"] == 400
    with pytest.raises(hv.InvalidInput):
        ex.search(queries, corpus, 3, filter=[-1])
    with pytest.raises(hv.InvalidInput):
        ex.search(queries, corpus, 3, filter=[[1], [2]])  # 2 lists for 3 queries
    with pytest.raises(hv.InvalidInput):
        ex.search(queries, corpus, 3, filter=["a", "b"])  # ids need a store


def test_16_bit_corpora_score_the_stored_values(ex):
    rng = np.random.default_rng(5)
    corpus = rng.standard_normal((500, 40)).astype(np.float16)
    queries = rng.standard_normal((4, 40)).astype(np.float32)
    c = hv.Corpus(corpus)
    assert c.dtype == "f16" and c.shape == (500, 40)
    np.testing.assert_array_equal(c.row(3), corpus[3].astype(np.float32))
    for metric in ("ip", "l2"):
        _, idx = ex.search(queries, c, 10, metric=metric)
        want = reference_top_k(reference(queries, corpus.astype(np.float32), metric), 10, metric)
        np.testing.assert_array_equal(idx, want)


def test_int8_tier_gives_the_same_answer(ex):
    rng = np.random.default_rng(6)
    corpus = rng.standard_normal((3000, 64)).astype(np.float32)
    queries = rng.standard_normal((2, 64)).astype(np.float32)
    for rows in (corpus, corpus.astype(np.float16)):
        plain = ex.search(queries, hv.Corpus(rows), 10, metric="ip", report=True)
        tiered_corpus = hv.Corpus(rows, int8_tier=True)
        tiered = ex.search(queries, tiered_corpus, 10, metric="ip", report=True)
        np.testing.assert_array_equal(plain[1], tiered[1])
        np.testing.assert_array_equal(plain[0], tiered[0])
        assert set(tiered[2]) >= {"backend", "reason", "rescored", "elapsed_secs", "fallbacks"}
        # The tier was built and read: only the rows it could not rule out were re-scored.
        assert plain[2]["rescored"] is None
        assert 10 <= tiered[2]["rescored"] < len(rows)


def test_inputs_are_converted_only_as_documented(ex):
    rng = np.random.default_rng(8)
    corpus = rng.standard_normal((200, 12)).astype(np.float32)
    q = rng.standard_normal((12, 6)).astype(np.float32).T  # non-contiguous (6, 12)
    assert not q.flags.c_contiguous
    want = ex.search(np.ascontiguousarray(q), corpus, 5)
    for variant in (q, q.astype(np.float64), q.tolist()):
        got = ex.search(variant, corpus, 5)
        np.testing.assert_array_equal(got[1], want[1])
    for bad in (q.astype(np.int32), q.astype(bool), q.astype(np.complex64), np.array([["a"] * 12])):
        with pytest.raises(hv.InvalidInput):
            ex.search(bad, corpus, 5)
    with pytest.raises(hv.InvalidInput, match="x\\[None, :\\]"):
        ex.search(q[0], corpus, 5)
    with pytest.raises(hv.InvalidInput):
        ex.search(q[None], corpus, 5)


def test_bad_input_raises_typed_errors(ex):
    rng = np.random.default_rng(9)
    corpus = rng.standard_normal((100, 8)).astype(np.float32)
    q = rng.standard_normal((2, 8)).astype(np.float32)
    with pytest.raises(hv.DimensionMismatch) as e:
        ex.search(q[:, :5], corpus, 3)
    assert e.value.details == {"expected": 8, "got": 5}
    assert isinstance(e.value, ValueError) and isinstance(e.value, hv.Error)
    nan = q.copy()
    nan[1, 2] = np.nan
    with pytest.raises(hv.NonFinite) as e:
        ex.search(nan, corpus, 3)
    assert e.value.details == {"row": 1, "col": 2}
    bad_corpus = corpus.copy()
    bad_corpus[7, 1] = np.inf
    with pytest.raises(hv.NonFinite):
        hv.Corpus(bad_corpus)
    with pytest.raises(hv.NonFinite):
        hv.Corpus(np.full((2, 2), 1e300))  # float64 past float32's range
    for k in (0, -3):
        with pytest.raises(hv.InvalidK):
            ex.search(q, corpus, k)
    for k in ("3", 2.5, None, True):
        with pytest.raises(hv.InvalidInput):
            ex.search(q, corpus, k)
    for k in (10**15, 2**70):
        with pytest.raises(hv.InsufficientMemory):
            ex.search(q, corpus, k)
    with pytest.raises(hv.InvalidConfig):
        ex.search(q, corpus, 3, metric="cosinus")
    with pytest.raises(hv.EmptyInput):
        hv.Corpus(np.zeros((0, 8), np.float32))
    with pytest.raises(hv.EmptyInput):
        hv.Corpus(np.zeros((3, 0), np.float32))
    with pytest.raises(hv.InvalidConfig):
        hv.Executor(device="tpu")
    for threads in (0, 10**6, 2**70):
        with pytest.raises(hv.InvalidConfig):
            hv.Executor(device="cpu", threads=threads)
    with pytest.raises(hv.InvalidInput):
        hv.Executor(device="cpu", threads="two")


def test_cuda_without_a_gpu_is_a_clear_error():
    try:
        ex = hv.Executor(device="cuda")
    except hv.CudaUnavailable as e:
        assert "CUDA" in str(e) or "cuda" in str(e).lower()
    else:  # a machine with a usable GPU
        assert ex.capabilities()["accelerator"] is not None


def test_the_gil_is_released_while_computing():
    ex = hv.Executor(device="cpu", threads=1)
    rng = np.random.default_rng(10)
    corpus = hv.Corpus(rng.standard_normal((200_000, 64)).astype(np.float32))
    q = rng.standard_normal((256, 64)).astype(np.float32)
    call = {}

    def worker():
        call["start"] = time.perf_counter()
        ex.search(q, corpus, 10, metric="l2")
        call["end"] = time.perf_counter()

    t = threading.Thread(target=worker)
    ticks = []
    t.start()
    while t.is_alive():
        ticks.append(time.perf_counter())
    t.join()
    start, end = call["start"], call["end"]
    inside = [start] + [x for x in ticks if start < x < end] + [end]
    longest_stall = max(b - a for a, b in zip(inside, inside[1:]))
    # Holding the GIL would stall this thread for the whole call.
    assert end - start > 0.02, "the call is too short to tell"
    assert longest_stall < 0.5 * (end - start), (longest_stall, end - start)


def test_concurrent_calls_from_threads_agree(ex):
    rng = np.random.default_rng(11)
    corpus = hv.Corpus(rng.standard_normal((5000, 32)).astype(np.float32))
    q = rng.standard_normal((8, 32)).astype(np.float32)
    want = ex.search(q, corpus, 10, metric="ip")
    results = []

    def run():
        results.append(ex.search(q, corpus, 10, metric="ip"))

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 4
    for s, i in results:
        np.testing.assert_array_equal(i, want[1])
        np.testing.assert_array_equal(s, want[0])


@pytest.mark.parametrize("metric", ["cos", "ip", "l2"])
def test_shards_merged_equal_one_search(ex, metric):
    rng = np.random.default_rng(12)
    corpus = clustered(rng, 2000, 20, spread=1e-2)
    corpus[1500:1510] = corpus[10:20]  # duplicates across shards: exact ties
    queries = rng.standard_normal((6, 20)).astype(np.float32)
    queries[0] = corpus[10]
    whole = ex.search(queries, corpus, 25, metric=metric)
    bounds = [0, 300, 1100, 1700, 2000]
    parts = [
        hv._search_shard(ex, queries, hv.Corpus(corpus[lo:hi]), 25, metric, lo)
        for lo, hi in zip(bounds, bounds[1:])
    ]
    scores, rows = hv.merge(metric, 25, parts)
    np.testing.assert_array_equal(rows, whole[1])
    np.testing.assert_array_equal(scores, whole[0])
    with pytest.raises(hv.ChunkResultMismatch):
        hv.merge(metric, 25, [parts[0], tuple(p[:3] for p in parts[1])])
    with pytest.raises(hv.InvalidConfig):  # overlapping shards
        hv.merge(metric, 25, [parts[0], parts[0]])
