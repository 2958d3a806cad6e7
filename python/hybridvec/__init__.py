"""hybridvec: exact vector similarity search on CPUs and NVIDIA GPUs.

The API follows FAISS's ``search`` convention::

    import numpy as np
    import hybridvec as hv

    ex = hv.Executor()                       # device="auto": the GPU when usable
    corpus = hv.Corpus(np.random.rand(10_000, 128).astype(np.float32))
    queries = np.random.rand(5, 128).astype(np.float32)
    scores, indices = ex.search(queries, corpus, k=10)            # cosine
    scores, indices = ex.search(queries, corpus, k=10, metric="l2")

Answers are exact: the same rows, in the same order (ties to the lower index), as an f64
scan would rank them (inner product and L2 are re-scored in f64 and certified; cosine
ranks by the f32 scores).

**Arrays.** Queries are read in place (no copy) when they are C-contiguous float32;
``Corpus(array)`` copies the rows once, into the validated form that searches read.
Other inputs are converted, and only these: float64, float16 and lists become float32
(float64 values beyond float32's range become infinite and are refused as `NonFinite`),
and non-contiguous arrays are copied. Integer, boolean, complex and object arrays are
refused with `InvalidInput`. Do not modify an array from another thread while a call
reads it: calls run without the GIL.

**Errors** are exceptions under `hybridvec.Error`, one class per error of the Rust crate
(`hybridvec.DimensionMismatch`, `hybridvec.NonFinite`, ...), each also a `ValueError`,
`OSError`, ... as fits. Nothing here crashes the interpreter on bad input.

Scale-out over a Ray cluster lives in `hybridvec.ray`.
"""

from __future__ import annotations

import operator
import os
from typing import Any, Optional, Sequence, Tuple, Union

import numpy as np

from . import _native
from ._errors import *  # noqa: F401,F403  (the exception classes)
from ._errors import Error, InvalidInput, InvalidK

__version__ = _native.__version__

METRICS = ("cos", "ip", "l2")
"""The metrics' short names (``cosine``, ``inner_product``/``dot`` and ``l2sq`` are
accepted too)."""


def _check_k(k: Any) -> int:
    if isinstance(k, bool):
        raise InvalidInput(f"k must be an integer, got {k!r}")
    try:
        k = operator.index(k)
    except TypeError:
        raise InvalidInput(f"k must be an integer, got {type(k).__name__} {k!r}") from None
    if k < 1:
        raise InvalidK(f"invalid k = {k}; k must be at least 1", {"k": k})
    if k > _MAX_K:
        from ._errors import InsufficientMemory

        raise InsufficientMemory(
            f"k = {k}: its (Q, k) results could not be allocated", {"bytes": None, "available": None}
        )
    return k


# Past this, a (Q, k) result is more bytes than any machine has (and than a C size holds).
_MAX_K = 2**62 // 16


def _check_id(id: Any) -> str:
    if not isinstance(id, str):
        raise InvalidInput(f"an id must be a str, got {type(id).__name__} {id!r}")
    return id


def _as_content(c: Any, i: int) -> bytes:
    if isinstance(c, (bytes, bytearray, memoryview)):
        return bytes(c)
    raise InvalidInput(
        f"contents[{i}] must be bytes (or bytearray, memoryview), got {type(c).__name__}"
        + ("; encode text first, e.g. s.encode()" if isinstance(c, str) else "")
    )


def _check_metric(metric: Any) -> str:
    if not isinstance(metric, str):
        raise InvalidInput(f"metric must be a string (cos, ip or l2), got {metric!r}")
    return metric


def _float32_2d(array: Any, name: str) -> np.ndarray:
    """`array` as a C-contiguous float32 matrix: in place when it already is one."""
    if isinstance(array, np.ndarray):
        a = array
        if a.dtype.kind != "f" and not _is_bf16(a.dtype):
            raise InvalidInput(
                f"{name} must hold floats (float32, float16, float64 or bfloat16), "
                f"got dtype {a.dtype}"
            )
    else:
        try:
            with np.errstate(over="ignore"):
                a = np.asarray(array, dtype=np.float32)
        except (TypeError, ValueError) as e:
            raise InvalidInput(f"{name} is not a matrix of numbers: {e}") from None
    if a.ndim != 2:
        raise InvalidInput(
            f"{name} must be 2-D (rows, dim), got {a.ndim}-D shape {a.shape}"
            + ("; for one vector use x[None, :]" if a.ndim == 1 else "")
        )
    with np.errstate(over="ignore"):  # values past float32 become inf: NonFinite
        return np.ascontiguousarray(a, dtype=np.float32)


def _is_bf16(dtype: np.dtype) -> bool:
    return dtype.name == "bfloat16" and dtype.itemsize == 2


class Corpus:
    """Rows to search: validated (finite, norms in range), with their norms computed once.

    ``array`` is a 2-D array of float32 (stored as float32), float16 (kept as float16)
    or ``ml_dtypes.bfloat16`` (kept as bfloat16); float64 and lists are converted to
    float32. Scores over 16-bit rows are exact for the stored values. ``int8_tier=True``
    adds the int8 scan tier that certified top-k reads first (same answers, fewer bytes).

    The rows are copied once; the corpus is immutable and may be shared between threads
    and executors.
    """

    __slots__ = ("_native",)

    def __init__(self, array: Any, *, int8_tier: bool = False):
        a = np.asarray(array) if not isinstance(array, np.ndarray) else array
        if a.ndim == 2 and a.dtype == np.float16:
            bits = np.ascontiguousarray(a).view(np.uint16)
            self._native = _native.NativeCorpus.from_bits(bits, "f16", bool(int8_tier))
        elif a.ndim == 2 and _is_bf16(a.dtype):
            bits = np.ascontiguousarray(a).view(np.uint16)
            self._native = _native.NativeCorpus.from_bits(bits, "bf16", bool(int8_tier))
        else:
            a = _float32_2d(a, "corpus")
            self._native = _native.NativeCorpus.from_f32(a, bool(int8_tier))

    @property
    def rows(self) -> int:
        """The number of rows."""
        return self._native.rows

    @property
    def dim(self) -> int:
        """The vector dimension."""
        return self._native.dim

    @property
    def dtype(self) -> str:
        """The stored element type: ``"f32"``, ``"f16"`` or ``"bf16"``."""
        return self._native.dtype

    @property
    def shape(self) -> Tuple[int, int]:
        """``(rows, dim)``."""
        return (self.rows, self.dim)

    def row(self, i: int) -> np.ndarray:
        """Row ``i`` as float32 (widened from the stored type)."""
        return self._native.row(operator.index(i))

    def __len__(self) -> int:
        return self.rows

    def __repr__(self) -> str:
        return f"hybridvec.Corpus(rows={self.rows}, dim={self.dim}, dtype={self.dtype!r})"


def _as_corpus(corpus: Any) -> Corpus:
    return corpus if isinstance(corpus, Corpus) else Corpus(corpus)


def _normal_filter(filter: Any, n_queries: int, *, ids_allowed: bool) -> Any:
    """A filter in the native form: None, ("rows", uint64), ("ids", [str]) or
    ("per_query", [...]).

    Accepted: a boolean mask over the rows; a sequence or array of row indices; for a
    store, a sequence of ids (str); or a list with one of those per query."""
    if filter is None:
        return None
    if isinstance(filter, np.ndarray):
        return _one_filter(filter, ids_allowed)
    if isinstance(filter, (list, tuple)):
        if len(filter) > 0 and all(
            isinstance(f, (list, tuple, np.ndarray)) for f in filter
        ):
            if len(filter) != n_queries:
                raise InvalidInput(
                    f"a per-query filter needs one allow-list per query: "
                    f"{len(filter)} for {n_queries} queries"
                )
            return ("per_query", [_one_filter(f, ids_allowed) for f in filter])
        return _one_filter(filter, ids_allowed)
    raise InvalidInput(
        "filter must be a boolean mask, row indices, ids, or a list of those per query; "
        f"got {type(filter).__name__}"
    )


def _one_filter(f: Any, ids_allowed: bool) -> Any:
    if isinstance(f, (list, tuple)) and len(f) > 0 and all(isinstance(x, str) for x in f):
        if not ids_allowed:
            raise InvalidInput("a filter of ids needs a Store; a Corpus takes row indices")
        return ("ids", list(f))
    a = np.asarray(f)
    if a.ndim != 1:
        raise InvalidInput(f"a filter must be 1-D, got shape {a.shape}")
    if a.dtype == bool:
        return ("rows", np.flatnonzero(a).astype(np.uint64))
    if a.size == 0:
        return ("rows", np.zeros(0, dtype=np.uint64))
    if a.dtype.kind not in "iu":
        raise InvalidInput(f"filter rows must be integers or a boolean mask, got dtype {a.dtype}")
    if a.dtype.kind == "i" and a.min() < 0:
        raise InvalidInput(f"filter row {int(a.min())} is negative")
    return ("rows", np.ascontiguousarray(a, dtype=np.uint64))


class Executor:
    """Runs searches on the GPU or the CPU, picking per call by measured speed.

    ``device``: ``"auto"`` (the GPU when one is usable and worth it), ``"cpu"``, or
    ``"cuda"`` (fails with `CudaUnavailable` without a usable GPU). ``threads``: CPU
    worker threads (``None``: one per core).

    Build one and reuse it: it owns the thread pool and its speed measurements. It is safe
    to call from several threads at once; each call releases the GIL.
    """

    __slots__ = ("_native", "device")

    def __init__(self, device: str = "auto", threads: Optional[int] = None):
        if not isinstance(device, str):
            raise InvalidInput(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
        if threads is not None:
            try:
                threads = operator.index(threads)
            except TypeError:
                raise InvalidInput(f"threads must be an integer or None, got {threads!r}") from None
            if threads < 1 or threads > 4096:
                from ._errors import InvalidConfig

                raise InvalidConfig(f"threads must be 1 to 4096 (or None), got {threads}")
        self.device = device
        self._native = _native.NativeExecutor(device, threads)

    def search(
        self,
        queries: Any,
        corpus: Union[Corpus, Any],
        k: int,
        metric: str = "cos",
        filter: Any = None,
        report: bool = False,
    ):
        """The ``k`` best rows of ``corpus`` for each query, best first.

        Returns ``(scores, indices)``, float32 and int64 arrays of shape ``(Q, k)``:
        cosine or inner product (higher is better) or squared L2 distance (lower is
        better). Where fewer than ``k`` rows exist (or pass the filter), the rest is
        padded with NaN and -1. Ties go to the lower index. With ``report=True`` the
        call's report (a dict, see `last_report`) comes third.

        ``corpus`` is a `Corpus`, or an array (converted to one for this call).
        ``filter``: a boolean mask over the rows, an array of allowed row indices, or a
        list with one of those per query.
        """
        k = _check_k(k)
        metric = _check_metric(metric)
        q = _float32_2d(queries, "queries")
        c = _as_corpus(corpus)
        f = _normal_filter(filter, q.shape[0], ids_allowed=False)
        scores, indices = self._native.search(q, c._native, k, metric, f)
        if report:
            return scores, indices, self.last_report()
        return scores, indices

    def scores(self, queries: Any, corpus: Union[Corpus, Any], metric: str = "cos", report: bool = False):
        """The full ``(Q, N)`` float32 score matrix: cosine, inner product or squared L2
        distance of every query against every row. With ``report=True``, ``(scores,
        report)``."""
        metric = _check_metric(metric)
        q = _float32_2d(queries, "queries")
        c = _as_corpus(corpus)
        s = self._native.scores(q, c._native, metric)
        if report:
            return s, self.last_report()
        return s

    def last_report(self) -> Optional[dict]:
        """The report of this executor's last call (from any thread): ``backend``
        (``"cpu"``/``"gpu"``), ``reason``, ``chunks``, ``corpus_passes``, ``rescored``
        (rows re-scored by a certified int8 scan, or None), ``elapsed_secs`` and
        ``fallbacks``. None before the first call."""
        return self._native.last_report()

    def capabilities(self) -> dict:
        """What this executor runs on: CPU model, SIMD level, threads, CUDA status."""
        return self._native.capabilities()

    def export_tracker(self, device: str = "default") -> str:
        """The speed measurements as JSON (to start another executor warm)."""
        return self._native.export_tracker(device)

    def import_tracker(self, json: str, device: str = "default") -> int:
        """Loads measurements from `export_tracker`; returns how many were taken."""
        return self._native.import_tracker(json, device)

    def __repr__(self) -> str:
        return f"hybridvec.Executor(device={self.device!r})"


_default_executor: Optional[Executor] = None


def _shared_executor() -> Executor:
    global _default_executor
    if _default_executor is None:
        _default_executor = Executor()
    return _default_executor


class Store:
    """A crash-safe, memory-mapped embedding store on disk: records of ``(id, vector,
    content)``, searchable in place.

    Open one with `Store.create` or `Store.open`; use it as a context manager to flush
    and close it on exit. One writer per directory at a time (another gets
    `StoreLocked`); any number of read-only handles.
    """

    __slots__ = ("_native", "path", "read_only")

    def __init__(self, native: Any, path: str, read_only: bool):
        self._native = native
        self.path = path
        self.read_only = read_only

    @classmethod
    def create(cls, path: Union[str, os.PathLike], dim: int, dtype: str = "f32", int8_tier: bool = False) -> "Store":
        """Creates a store of ``dim``-dimensional vectors in the directory ``path``
        (`StoreExists` if it holds one). ``dtype``: ``"f32"``, ``"f16"`` or ``"bf16"``
        (vectors are rounded to it on put). ``int8_tier`` keeps the int8 scan tier."""
        dim = operator.index(dim)
        if dim < 1:
            from ._errors import EmptyInput

            raise EmptyInput(f"dimension {dim}: a store needs at least 1", {"what": "dim"})
        path = os.fspath(path)
        return cls(_native.NativeStore.create(path, dim, str(dtype), bool(int8_tier)), path, False)

    @classmethod
    def open(cls, path: Union[str, os.PathLike], read_only: bool = False) -> "Store":
        """Opens the store in ``path``, recovering any crash (a read-only handle takes no
        lock and writes nothing)."""
        path = os.fspath(path)
        return cls(_native.NativeStore.open(path, bool(read_only)), path, bool(read_only))

    def put_batch(self, ids: Sequence[str], array: Any, contents: Optional[Sequence[bytes]] = None) -> int:
        """Puts ``ids[i]`` with row ``i`` of ``array`` (and ``contents[i]``), in order;
        a put of an existing id replaces it. Every row is checked (dimension, finite
        values) before the first is written. Durable after `flush`. Returns the count."""
        if isinstance(ids, str):
            raise InvalidInput("ids must be a sequence of strings, not one string")
        ids = list(ids)
        if not all(isinstance(i, str) for i in ids):
            raise InvalidInput("every id must be a str")
        a = _float32_2d(array, "array")
        if contents is not None:
            contents = [_as_content(c, i) for i, c in enumerate(contents)]
        return self._native.put_batch(ids, a, contents)

    def get(self, id: str) -> Optional[np.ndarray]:
        """The vector stored under ``id`` (float32), or None."""
        r = self._native.get(_check_id(id))
        return None if r is None else r[1]

    def get_record(self, id: str) -> Optional[dict]:
        """``{"id", "row", "embedding", "content"}`` of ``id``, or None."""
        r = self._native.get(_check_id(id))
        if r is None:
            return None
        return {"id": id, "row": r[0], "embedding": r[1], "content": r[2]}

    def delete(self, id: str) -> bool:
        """Deletes ``id``; False when it held no record."""
        return self._native.delete(_check_id(id))

    def flush(self) -> int:
        """Makes every put and delete so far durable; returns the durable row count."""
        return self._native.flush()

    def build_int8_tier(self) -> None:
        """Builds (or rebuilds) the int8 scan tier of the store's rows."""
        self._native.build_int8_tier()

    def search(
        self,
        queries: Any,
        k: int,
        metric: str = "cos",
        filter: Any = None,
        executor: Optional[Executor] = None,
        report: bool = False,
    ):
        """The ``k`` best records per query: ``(scores, ids)``, a float32 array and an
        object array of id strings, both ``(Q, k)``, padded with NaN and None. ``filter``:
        ids (or a list of id lists, one per query). ``executor``: the one to run on (a
        shared one by default). With ``report=True`` the report comes third."""
        k = _check_k(k)
        metric = _check_metric(metric)
        q = _float32_2d(queries, "queries")
        ex = executor or _shared_executor()
        f = _normal_filter(filter, q.shape[0], ids_allowed=True)
        scores, ids = ex._native.search_store(q, self._native, k, metric, f)
        out = np.full((q.shape[0], k), None, dtype=object)
        for i, row in enumerate(ids):
            out[i, : len(row)] = row
        if report:
            return scores, out, ex.last_report()
        return scores, out

    def __contains__(self, id: object) -> bool:
        return isinstance(id, str) and self._native.contains(id)

    def __len__(self) -> int:
        return len(self._native)

    @property
    def dim(self) -> int:
        """The vector dimension."""
        return self._native.dim

    @property
    def dtype(self) -> str:
        """The stored element type."""
        return self._native.dtype

    @property
    def has_int8_tier(self) -> bool:
        """Whether the store keeps the int8 scan tier."""
        return self._native.has_int8_tier

    def stats(self) -> dict:
        """Counters: records, visible/reserved/durable/capacity rows, vector and content
        bytes."""
        return self._native.stats()

    def close(self) -> None:
        """Flushes (unless read-only) and closes; later calls raise `hybridvec.Error`."""
        if not self._native.closed:
            try:
                if not self.read_only:
                    self._native.flush()
            finally:
                self._native.close()

    @property
    def closed(self) -> bool:
        """Whether `close` was called."""
        return self._native.closed

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{len(self)} records"
        return f"hybridvec.Store({self.path!r}, {state})"


def merge(metric: str, k: int, parts: Sequence[Tuple[np.ndarray, np.ndarray, np.ndarray]]):
    """The global top-k of shards' answers (`Executor.search_shard`): ``parts`` holds one
    ``(rows, scores, keys)`` per shard. Returns ``(scores, rows)`` of shape ``(Q, k)``,
    ordered as one search over the concatenated corpus (ties to the lower global row)."""
    k = _check_k(k)
    norm = []
    for p in parts:
        rows, scores, keys = p
        norm.append(
            (
                np.ascontiguousarray(rows, dtype=np.int64),
                np.ascontiguousarray(scores, dtype=np.float32),
                np.ascontiguousarray(keys, dtype=np.float64),
            )
        )
    return _native.merge(_check_metric(metric), k, norm)


def _search_shard(executor: Executor, queries: Any, corpus: Corpus, k: int, metric: str, first_row: int, filter: Any = None):
    """One shard's answer for `merge`: ``(rows, scores, keys)``, rows numbered from
    ``first_row``; ``filter`` in the native form."""
    q = _float32_2d(queries, "queries")
    return executor._native.search_shard(q, corpus._native, k, metric, int(first_row), filter)


__all__ = ["Corpus", "Executor", "Store", "merge", "METRICS", "Error"] + [
    n for n in dir() if isinstance(globals().get(n), type) and issubclass(globals()[n], Error)
]
