"""The exceptions of hybridvec: one class per error of the Rust crate, under `Error`.

Every class carries the message as its first argument and a ``details`` dict with the
error's fields (for example ``expected`` and ``got`` of `DimensionMismatch`). Errors of
bad arguments also derive from the matching built-in class (`ValueError`, `TypeError`,
`MemoryError`, `OSError`, `KeyError`, `IndexError`), so code that catches those keeps
working.
"""

from __future__ import annotations


class Error(Exception):
    """The base of every hybridvec error."""

    details: dict

    def __init__(self, message: str = "", details: dict | None = None):
        super().__init__(message)
        self.details = dict(details or {})


class InvalidInput(Error, TypeError):
    """An argument of the wrong type, dtype or number of dimensions (raised by the Python
    layer before anything runs)."""


class DimensionMismatch(Error, ValueError):
    """The queries' width differs from the corpus's (``details``: expected, got)."""


class InvalidShape(Error, ValueError):
    """The values do not make ``rows × cols`` (``details``: rows, cols, len)."""


class EmptyInput(Error, ValueError):
    """No rows, no queries, or dimension 0 (``details``: what)."""


class InvalidK(Error, ValueError):
    """``k`` below 1 (``details``: k, rows)."""


class NonFinite(Error, ValueError):
    """NaN or infinity in an input (``details``: row, col)."""


class NotRepresentable(Error, ValueError):
    """A value out of the stored element type's range (``details``: row, col)."""


class NormOutOfRange(Error, ValueError):
    """A row's norm outside [1e-30, 1e30] (``details``: row, norm)."""


class CudaUnavailable(Error, RuntimeError):
    """``device="cuda"`` without a usable GPU; the message says why."""


class DeviceOutOfMemory(Error, MemoryError):
    """The GPU ran out of memory at the smallest chunk (``details``: requested)."""


class BackendFailed(Error, RuntimeError):
    """A backend failed and no fallback could answer."""


class ChunkResultMismatch(Error, RuntimeError):
    """A chunk or shard returned another number of results than asked (``details``:
    chunk, expected, got). Nothing is returned as if it were complete."""


class BadInputFile(Error, ValueError):
    """An input file that cannot be read as vectors (``details``: path)."""


class CorruptStore(Error, OSError):
    """A damaged store file (``details``: file, offset)."""


class UnsupportedVersion(Error, OSError):
    """A store written by another format version (``details``: found, supported)."""


class StoreExists(Error, FileExistsError):
    """``Store.create`` on a directory that already holds a store (``details``: dir)."""


class StoreReplaced(Error, OSError):
    """A store file was replaced under an open writer (``details``: file)."""


class StoreLocked(Error, OSError):
    """Another writer holds the store (``details``: dir)."""


class StorePoisoned(Error, RuntimeError):
    """An earlier failure poisoned this handle; reopen the store."""


class NoSuchRow(Error, IndexError):
    """A row that holds no record (``details``: row)."""


class ReadOnly(Error, PermissionError):
    """A write to a store opened read-only."""


class InsufficientMemory(Error, MemoryError):
    """The call needs more memory than is available (``details``: bytes, available)."""


class ScoreOutOfRange(Error, ValueError):
    """Scores that would not fit float32 (``details``: metric)."""


class FilterOutOfRange(Error, IndexError):
    """A filter names a row past the corpus (``details``: index, rows)."""


class UnknownId(Error, KeyError):
    """A filter names an id that is not in the store (``details``: id)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return Exception.__str__(self)


class Io(Error, OSError):
    """An I/O error (``details``: errno)."""


class FileIo(Error, OSError):
    """An I/O error on a named file (``details``: path, errno)."""


class InvalidConfig(Error, ValueError):
    """A setting or argument value that is not valid; the message names it."""


class ShardFailed(Error, RuntimeError):
    """A shard of a sharded search died or failed; no partial answer is returned
    (``details``: shard, cause)."""


__all__ = [name for name, value in dict(globals()).items()
           if isinstance(value, type) and issubclass(value, Error)]
