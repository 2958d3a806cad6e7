"""Sharded exact search on Ray: hybridvec as the engine of each shard, one global merge.

A corpus (an array, or a set of stores) is spread over Ray actors, one shard each. Each
actor keeps its shard and a warm `hybridvec.Executor` for its life. A search puts the
query batch in Ray's object store once, asks every shard for its top-k, and merges them
with `hybridvec.merge`, which orders exactly as one search over the concatenated corpus
does: the same rows, the same order, ties to the lower global row.

    import ray, numpy as np
    from hybridvec.ray import ShardedSearch

    ray.init()
    corpus = np.random.rand(1_000_000, 768).astype(np.float32)
    index = ShardedSearch.from_array(corpus, shards=4)
    scores, rows = index.search(queries, k=10, metric="ip")   # rows of `corpus`

**Failure.** A shard that dies or fails during a search makes that search raise
`hybridvec.ShardFailed` naming the shard; no partial answer is ever returned, and the
search is not retried behind your back (it may have been half done). Ray restarts the
dead actor (``max_restarts=1`` unless ``actor_options`` says otherwise), so a later search
can succeed; `wait_ready` waits for every shard to answer again.

**When not to use it.** Sharding adds a round trip per batch (milliseconds on one node,
more over a network) and a merge, and buys nothing while the corpus fits one machine's
memory (or one GPU's): one `Executor` is then as fast, or faster. See the README section
"Scaling out" for the cost model.
"""

from __future__ import annotations

import os
import time
from typing import Any, List, Optional, Sequence

import numpy as np

try:
    import ray
except ImportError as e:  # pragma: no cover - exercised only without Ray
    raise ImportError(
        "hybridvec.ray needs Ray: pip install 'ray>=2.9' (or the package's [ray] extra)"
    ) from e

from . import (
    Corpus,
    Executor,
    Store,
    _check_k,
    _check_metric,
    _float32_2d,
    _normal_filter,
    merge,
)
from . import _errors
from ._errors import Error, FilterOutOfRange, InvalidInput, ShardFailed, UnknownId

# Global rows of store shards: shard `s`'s row `r` is `s << STORE_ROW_BITS | r`, which
# orders as the concatenation of the stores (a store holds fewer than 2^40 rows).
STORE_ROW_BITS = 40


class _Shard:
    """One shard: its rows (a Corpus, or a Store opened read-only) and an executor."""

    def __init__(self, kind: str, source: Any, first_row: int, device: str,
                 threads: Optional[int], tracker: Optional[str]):
        self.executor = Executor(device, threads)
        if tracker:
            self.executor.import_tracker(tracker)
        self.first_row = first_row
        self.kind = kind
        if kind == "array":
            self.corpus = Corpus(source)
            self.store = None
        else:
            self.corpus = None
            self.store = Store.open(source, read_only=True)

    def info(self) -> dict:
        if self.corpus is not None:
            return {"rows": self.corpus.rows, "dim": self.corpus.dim, "pid": os.getpid()}
        return {"rows": len(self.store), "dim": self.store.dim, "pid": os.getpid()}

    def known(self, ids: Sequence[str]) -> List[bool]:
        return [i in self.store for i in ids]

    def search(self, queries: np.ndarray, k: int, metric: str, filter: Any, delay: float = 0.0):
        """``("ok", rows, scores, keys, ids)`` or ``("error", class name, message,
        details)``: hybridvec errors travel as values, whatever Ray does with classes."""
        if delay:
            time.sleep(delay)
        try:
            if self.corpus is not None:
                rows, scores, keys = self.executor._native.search_shard(
                    queries, self.corpus._native, k, metric, self.first_row, filter)
                return ("ok", rows, scores, keys, None)
            if filter is not None:
                filter = self._known_only(filter)
            rows, scores, keys, ids = self.executor._native.search_store_shard(
                queries, self.store._native, k, metric, self.first_row, filter)
            return ("ok", rows, scores, keys, ids)
        except Error as e:
            return ("error", type(e).__name__, str(e), e.details)

    def _known_only(self, filter: Any) -> Any:
        """An ids filter cut to the ids this shard holds (the driver checks that every id
        is held somewhere)."""
        kind, payload = filter
        if kind == "ids":
            return ("ids", [i for i in payload if i in self.store])
        if kind == "per_query":
            return ("per_query", [self._known_only(f) for f in payload])
        return filter


_ShardActor = ray.remote(_Shard)


class ShardedSearch:
    """A corpus spread over Ray actors, searched as one (see the module docs).

    Build it with `from_array` or `from_stores`; `search` then answers as a single
    `Executor.search` (or `Store.search`) over the concatenation would.
    """

    def __init__(self, actors: list, first_rows: List[int], rows: List[int], dim: int, kind: str):
        self.actors = actors
        self.first_rows = first_rows
        self.rows = rows
        self.dim = dim
        self.kind = kind
        self._parts: list = []

    @classmethod
    def from_array(cls, array: Any, shards: int = 4, *, device: str = "auto",
                   threads: Optional[int] = None, tracker: Optional[str] = None,
                   actor_options: Optional[dict] = None) -> "ShardedSearch":
        """Splits ``array`` (rows) into ``shards`` consecutive parts, one actor each.
        Results index rows of ``array``. ``tracker``: an `Executor.export_tracker` JSON
        every shard starts from. ``actor_options`` go to Ray's ``.options()``: one dict
        for every shard (``{"num_gpus": 1}`` puts one shard per GPU), or a list with one
        per shard (a ``scheduling_strategy`` pinning each to its node)."""
        a = _float32_2d(array, "array") if not _is_16_bit(array) else np.asarray(array)
        shards = _check_shards(shards, a.shape[0])
        bounds = np.linspace(0, a.shape[0], shards + 1).astype(np.int64)
        opts = _options_per_shard(actor_options, shards)
        actors, first_rows, parts = [], [], []
        for s in range(shards):
            lo, hi = int(bounds[s]), int(bounds[s + 1])
            # Held for the index's life: a restarted actor reads its shard from it again.
            parts.append(ray.put(np.ascontiguousarray(a[lo:hi])))
            actors.append(_ShardActor.options(**opts[s]).remote("array", parts[-1], lo, device, threads, tracker))
            first_rows.append(lo)
        infos = _gather([a_.info.remote() for a_ in actors], None)
        index = cls(actors, first_rows, [i["rows"] for i in infos], int(a.shape[1]), "array")
        index._parts = parts
        return index

    @classmethod
    def from_stores(cls, paths: Sequence[Any], *, device: str = "auto",
                    threads: Optional[int] = None, tracker: Optional[str] = None,
                    actor_options: Optional[dict] = None) -> "ShardedSearch":
        """One actor per store directory, each opened read-only. Results are ids; ties go
        to the earlier store in ``paths``, then the lower row."""
        paths = [os.fspath(p) for p in paths]
        if not paths:
            raise InvalidInput("from_stores needs at least one store path")
        opts = _options_per_shard(actor_options, len(paths))
        actors = [
            _ShardActor.options(**opts[s]).remote("store", p, s << STORE_ROW_BITS, device, threads, tracker)
            for s, p in enumerate(paths)
        ]
        infos = _gather([a.info.remote() for a in actors], None)
        dims = {i["dim"] for i in infos}
        if len(dims) != 1:
            raise _errors.DimensionMismatch(
                f"the stores' dimensions differ: {sorted(dims)}",
                {"expected": infos[0]["dim"], "got": sorted(dims)[-1]})
        return cls(actors, [s << STORE_ROW_BITS for s in range(len(paths))],
                   [i["rows"] for i in infos], infos[0]["dim"], "store")

    @property
    def total_rows(self) -> int:
        """Rows over all shards (for stores: rows at open, deleted ones included)."""
        return sum(self.rows)

    def search(self, queries: Any, k: int, metric: str = "cos", filter: Any = None,
               timeout: Optional[float] = None, _delay: float = 0.0):
        """The ``k`` best rows per query over every shard: ``(scores, rows)`` for an array
        (rows of the whole array), ``(scores, ids)`` for stores, shaped ``(Q, k)`` and
        padded as `Executor.search` pads. ``filter`` as there, in global rows (or ids).
        ``timeout`` (seconds) bounds the wait for the shards. ``_delay`` holds each shard
        that long before it searches (for failure tests).

        Raises `ShardFailed` when any shard dies, fails or times out."""
        k = _check_k(k)
        metric = _check_metric(metric)
        q = _float32_2d(queries, "queries")
        if q.shape[1] != self.dim:
            raise _errors.DimensionMismatch(
                f"dimension mismatch: expected {self.dim}, got {q.shape[1]}",
                {"expected": self.dim, "got": q.shape[1]})
        norm = _normal_filter(filter, q.shape[0], ids_allowed=self.kind == "store")
        per_shard = self._split_filter(norm)
        qref = ray.put(q)
        refs = [a.search.remote(qref, k, metric, f, _delay) for a, f in zip(self.actors, per_shard)]
        answers = _gather(refs, timeout)
        parts, ids = [], {}
        for s, ans in enumerate(answers):
            if ans[0] == "error":
                _, name, message, details = ans
                cls = getattr(_errors, name, Error)
                raise cls(f"shard {s}: {message}", details)
            _, rows, scores, keys, shard_ids = ans
            if rows.shape != (q.shape[0], k):
                raise _errors.ChunkResultMismatch(
                    f"shard {s} answered {rows.shape[0]} queries, expected {q.shape[0]}",
                    {"chunk": s, "expected": q.shape[0], "got": rows.shape[0]})
            parts.append((rows, scores, keys))
            if shard_ids is not None:
                for i, row_ids in enumerate(shard_ids):
                    for j, id_ in enumerate(row_ids):
                        ids[int(rows[i, j])] = id_
        if norm is not None and self.kind == "store":
            self._check_ids_known(norm)
        scores, rows = merge(metric, k, parts)
        if self.kind == "array":
            return scores, rows
        out = np.full(rows.shape, None, dtype=object)
        for (i, j), r in np.ndenumerate(rows):
            if r >= 0:
                out[i, j] = ids[int(r)]
        return scores, out

    def _split_filter(self, norm: Any) -> List[Any]:
        """The filter of each shard: global rows cut to the shard's range and made
        local; ids go to every shard (each keeps those it holds)."""
        n = len(self.actors)
        if norm is None or self.kind == "store":
            return [norm] * n
        total = self.total_rows

        def cut(f, s):
            kind, payload = f
            if kind == "per_query":
                return ("per_query", [cut(g, s) for g in payload])
            lo, hi = self.first_rows[s], self.first_rows[s] + self.rows[s]
            local = payload[(payload >= lo) & (payload < hi)] - np.uint64(lo)
            return ("rows", np.ascontiguousarray(local, dtype=np.uint64))

        def check(f):
            kind, payload = f
            if kind == "per_query":
                for g in payload:
                    check(g)
            elif payload.size and int(payload.max()) >= total:
                bad = int(payload.max())
                raise FilterOutOfRange(
                    f"filter names row {bad}, but the corpus has {total} rows",
                    {"index": bad, "rows": total})

        check(norm)
        return [cut(norm, s) for s in range(n)]

    def _check_ids_known(self, norm: Any) -> None:
        """`UnknownId` for an id that no shard holds (as one store would say)."""
        wanted = set()

        def collect(f):
            kind, payload = f
            if kind == "per_query":
                for g in payload:
                    collect(g)
            elif kind == "ids":
                wanted.update(payload)

        collect(norm)
        if not wanted:
            return
        order = sorted(wanted)
        held = np.zeros(len(order), dtype=bool)
        for known in _gather([a.known.remote(order) for a in self.actors], None):
            held |= np.asarray(known, dtype=bool)
        if not held.all():
            missing = order[int(np.flatnonzero(~held)[0])]
            raise UnknownId(f"filter names id {missing!r}, which is not in any shard", {"id": missing})

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Waits until every shard answers (after a restart, for one); `ShardFailed` if
        one does not within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                _gather([a.info.remote() for a in self.actors], max(0.1, deadline - time.monotonic()))
                return
            except ShardFailed:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.2)

    def close(self) -> None:
        """Ends the shards' actors."""
        for a in self.actors:
            ray.kill(a, no_restart=True)
        self.actors = []
        self._parts = []

    def __enter__(self) -> "ShardedSearch":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _is_16_bit(array: Any) -> bool:
    return isinstance(array, np.ndarray) and array.ndim == 2 and (
        array.dtype == np.float16 or (array.dtype.name == "bfloat16" and array.dtype.itemsize == 2))


def _options_per_shard(actor_options: Any, shards: int) -> List[dict]:
    """Ray options for each shard's actor: restarted once if it dies, never retried
    mid-task (a retry could not tell a half-done search from a fresh one)."""
    base = {"max_restarts": 1, "max_task_retries": 0}
    if actor_options is None or isinstance(actor_options, dict):
        return [{**base, **(actor_options or {})} for _ in range(shards)]
    per = list(actor_options)
    if len(per) != shards or not all(isinstance(o, dict) for o in per):
        raise InvalidInput(f"actor_options must be a dict or a list of {shards} dicts (one per shard)")
    return [{**base, **o} for o in per]


def _check_shards(shards: Any, rows: int) -> int:
    import operator

    try:
        shards = operator.index(shards)
    except TypeError:
        raise InvalidInput(f"shards must be an integer, got {shards!r}") from None
    if shards < 1:
        raise InvalidInput(f"shards must be at least 1, got {shards}")
    if shards > rows:
        raise InvalidInput(f"{shards} shards for {rows} rows: every shard needs a row")
    return shards


def _gather(refs: list, timeout: Optional[float]) -> list:
    """Every shard's answer, in order; `ShardFailed` naming the first that died, failed
    or did not answer in time. Never a partial list."""
    try:
        ready, pending = ray.wait(refs, num_returns=len(refs), timeout=timeout)
    except Exception as e:  # pragma: no cover - ray.wait itself failing
        raise ShardFailed(f"waiting for the shards failed: {e}", {"cause": repr(e)}) from e
    if pending:
        s = refs.index(pending[0])
        for r in pending:
            ray.cancel(r, force=False)
        raise ShardFailed(f"shard {s} did not answer within {timeout} s",
                          {"shard": s, "cause": "timeout"})
    out = []
    for s, r in enumerate(refs):
        try:
            out.append(ray.get(r))
        except Exception as e:
            raise ShardFailed(f"shard {s} failed: {type(e).__name__}: {e}",
                              {"shard": s, "cause": repr(e)}) from e
    return out


__all__ = ["ShardedSearch", "STORE_ROW_BITS"]
