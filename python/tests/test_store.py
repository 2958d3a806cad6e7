"""`hybridvec.Store` from Python: records, search by id, persistence, locking, damage."""

import os

import numpy as np
import pytest

import hybridvec as hv


def ids_of(n, prefix="r"):
    return [f"{prefix}{i}" for i in range(n)]


def test_put_get_delete_search_and_reopen(tmp_path):
    rng = np.random.default_rng(1)
    vecs = rng.standard_normal((500, 16)).astype(np.float32)
    path = tmp_path / "s"
    with hv.Store.create(path, 16) as st:
        assert st.put_batch(ids_of(500), vecs, [f"c{i}".encode() for i in range(500)]) == 500
        assert len(st) == 500 and st.dim == 16 and st.dtype == "f32"
        np.testing.assert_array_equal(st.get("r7"), vecs[7])
        rec = st.get_record("r7")
        assert rec["content"] == b"c7" and rec["row"] == 7
        assert st.get("nope") is None and "r7" in st and "nope" not in st
        assert st.delete("r3") and not st.delete("r3")
        stats = st.stats()
        assert stats["records"] == 499
    assert st.closed
    with pytest.raises(hv.Error, match="closed"):
        len(st)
    with hv.Store.open(path, read_only=True) as st:
        assert len(st) == 499
        q = vecs[[3, 10, 20]]
        ex = hv.Executor(device="cpu")
        for metric in ("cos", "ip", "l2"):
            scores, ids = st.search(q, 5, metric=metric, executor=ex)
            assert ids.shape == (3, 5) and scores.shape == (3, 5)
            # The same answer as a corpus search over the live rows, by id.
            live = np.delete(np.arange(500), 3)
            _, rows = ex.search(q, vecs[live], 5, metric=metric)
            assert ids.tolist() == [[f"r{live[r]}" for r in row] for row in rows]
            assert "r3" not in ids
        scores, ids = st.search(q, 3, filter=["r1", "r2"], executor=ex)
        assert set(ids[0, :2]) == {"r1", "r2"} and ids[0, 2] is None and np.isnan(scores[0, 2])
        with pytest.raises(hv.UnknownId) as e:
            st.search(q, 3, filter=["r1", "zzz"])
        assert e.value.details["id"] == "zzz"
        with pytest.raises(hv.ReadOnly):
            st.put_batch(["x"], vecs[:1])


def test_one_writer_at_a_time_and_create_refuses_an_existing_store(tmp_path):
    path = tmp_path / "s"
    st = hv.Store.create(path, 4)
    with pytest.raises(hv.StoreLocked):
        hv.Store.open(path)
    ro = hv.Store.open(path, read_only=True)
    ro.close()
    st.close()
    with pytest.raises(hv.StoreExists):
        hv.Store.create(path, 4)
    hv.Store.open(path).close()  # the lock went with the first handle


def test_a_bad_batch_writes_nothing(tmp_path):
    with hv.Store.create(tmp_path / "s", 4) as st:
        good = np.ones((3, 4), np.float32)
        bad = good.copy()
        bad[2, 1] = np.nan
        with pytest.raises(hv.NonFinite):
            st.put_batch(["a", "b", "c"], bad)
        with pytest.raises(hv.DimensionMismatch):
            st.put_batch(["a"], np.ones((1, 5), np.float32))
        with pytest.raises(hv.InvalidConfig):
            st.put_batch(["a", "b"], good)
        with pytest.raises(hv.InvalidInput):
            st.put_batch("abc", good)
        with pytest.raises(hv.InvalidInput):
            st.put_batch([1, 2, 3], good)
        for contents in ([5, b"", b""], ["text", b"", b""], [None, b"", b""]):
            with pytest.raises(hv.InvalidInput):  # bytes(5) would store five zero bytes
                st.put_batch(["a", "b", "c"], good, contents)
        with pytest.raises(hv.InvalidInput):
            st.get(5)
        with pytest.raises(hv.InvalidInput):
            st.delete(None)
        assert len(st) == 0
        st.put_batch(["a", "b", "c"], good)
        assert len(st) == 3


def test_16_bit_stores_and_the_int8_tier(tmp_path):
    rng = np.random.default_rng(2)
    vecs = rng.standard_normal((2000, 32)).astype(np.float32)
    with hv.Store.create(tmp_path / "h", 32, dtype="f16", int8_tier=True) as st:
        st.put_batch(ids_of(2000), vecs)
        assert st.dtype == "f16" and st.has_int8_tier
        np.testing.assert_array_equal(st.get("r5"), vecs[5].astype(np.float16).astype(np.float32))
        scores, ids, report = st.search(vecs[:2], 4, metric="ip", report=True)
        assert ids[0, 0] == "r0" or scores[0, 0] >= scores[0, 1]
        ref = vecs[:2].astype(np.float64) @ vecs.astype(np.float16).astype(np.float64).T
        want = np.argsort(-ref, axis=1, kind="stable")[:, :4]
        assert ids.tolist() == [[f"r{r}" for r in row] for row in want]
    with hv.Store.create(tmp_path / "big", 2, dtype="f16") as st:
        with pytest.raises(hv.NotRepresentable):
            st.put_batch(["x"], np.array([[1e6, 0.0]], np.float32))
    with pytest.raises(hv.InvalidConfig):
        hv.Store.create(tmp_path / "q", 4, dtype="int4")
    with pytest.raises(hv.EmptyInput):
        hv.Store.create(tmp_path / "z", 0)


def test_damaged_and_missing_stores_are_typed_errors(tmp_path):
    with pytest.raises(hv.Error) as e:
        hv.Store.open(tmp_path / "missing")
    assert "missing" in str(e.value)
    path = tmp_path / "s"
    with hv.Store.create(path, 8) as st:
        st.put_batch(ids_of(100), np.ones((100, 8), np.float32))
    # Garbage over every file's first bytes: a typed error naming the damaged file.
    for name in sorted(os.listdir(path)):
        f = path / name
        if f.is_file() and f.stat().st_size >= 64:
            with open(f, "r+b") as fh:
                fh.write(b"\xff" * 64)
    with pytest.raises(hv.CorruptStore) as e:
        hv.Store.open(path, read_only=True)
    assert "store.hv" in str(e.value) and e.value.details["offset"] == 0
    assert isinstance(e.value, OSError)


def process_state(pid):
    """What Linux says of a process and its threads: its signal masks, and where each
    thread waits (for a test that finds it hung)."""
    def read(path):
        try:
            with open(path) as f:
                return f.read().strip()
        except OSError as e:
            return f"({e})"

    status = [
        line for line in read(f"/proc/{pid}/status").splitlines()
        if line.startswith(("State", "SigPnd", "ShdPnd", "SigBlk", "SigIgn", "SigCgt"))
    ]
    tasks = []
    for tid in sorted(os.listdir(f"/proc/{pid}/task")) if os.path.isdir(f"/proc/{pid}/task") else []:
        at = f"/proc/{pid}/task/{tid}"
        tasks.append(
            f"{tid} {read(at + '/comm')} wchan={read(at + '/wchan')} "
            f"syscall={read(at + '/syscall').split(' ')[0]} stack={read(at + '/stack')!r}"
        )
    return f"{'; '.join(status)}; threads: {' | '.join(tasks)}"


def test_a_second_process_cannot_write_and_ctrl_c_keeps_flushed_records(tmp_path):
    import signal
    import subprocess
    import sys

    path = tmp_path / "s"
    writer = subprocess.Popen(
        [sys.executable, "-c", f"""
import faulthandler, signal
import numpy as np, hybridvec as hv, sys
faulthandler.register(signal.SIGUSR1, all_threads=True)  # where it waits, if it hangs
# Ctrl-C as a terminal delivers it: a shell without job control starts background jobs
# (and so this test, under such a CI) with SIGINT ignored, which Python then keeps.
signal.signal(signal.SIGINT, signal.default_int_handler)
st = hv.Store.create({str(path)!r}, 8)
rng = np.random.default_rng(0)
i = 0
while True:
    ids = [f"b{{i}}-{{j}}" for j in range(200)]
    st.put_batch(ids, rng.standard_normal((200, 8)).astype(np.float32))
    st.flush()
    print(i, flush=True)
    i += 1
"""],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    acknowledged = -1
    try:
        while acknowledged < 20:
            line = writer.stdout.readline()
            assert line, writer.stderr.read()
            acknowledged = int(line)
        # Another process: the writer's lock holds; a reader is fine.
        other = subprocess.run(
            [sys.executable, "-c", f"""
import hybridvec as hv
try:
    hv.Store.open({str(path)!r})
except hv.StoreLocked as e:
    print("locked", e.details["dir"].endswith("s"))
with hv.Store.open({str(path)!r}, read_only=True) as ro:
    print("reader", len(ro) > 0)
"""],
            capture_output=True, text=True, timeout=60,
        )
        assert other.stdout.split("\n")[:2] == ["locked True", "reader True"], other
        writer.send_signal(signal.SIGINT)
        # Reading while waiting: a writer blocked on a full pipe could not exit.
        try:
            out, err = writer.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            state = process_state(writer.pid)
            writer.send_signal(signal.SIGUSR1)
            try:
                _, err = writer.communicate(timeout=5)
            except subprocess.TimeoutExpired:
                writer.kill()
                _, err = writer.communicate()
            pytest.fail(f"the writer outlived Ctrl-C by 30 s; {state}; stderr: {err[-3000:]}")
    finally:
        writer.kill()
    # Ctrl-C: a Python exception, not a crash.
    assert writer.returncode != 0 and writer.returncode != -signal.SIGABRT
    assert "KeyboardInterrupt" in err
    for line in out.splitlines():
        acknowledged = int(line)
    with hv.Store.open(path) as st:
        for b in range(acknowledged + 1):
            assert f"b{b}-0" in st and f"b{b}-199" in st, b


def test_a_store_where_none_can_be_is_a_typed_error():
    with pytest.raises(hv.Error) as e:
        hv.Store.create("/dev/full/store", 4)
    assert isinstance(e.value, OSError) and "/dev/full" in str(e.value)
