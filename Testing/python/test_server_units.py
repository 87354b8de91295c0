"""The server's parts without HTTP: the wire format, sparse labels, API keys, the volume store, the job queues."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from server_harness import wait_until

from voxelfm.client.payloads import labels_from_sparse, sparse_labels
from voxelfm.client.wire import BITS, CODEC, RAW, Frame, compress, decode_frame, decompress
from voxelfm.errors import CancelledError, InputError
from voxelfm.imaging.volume import Volume
from voxelfm.server.auth import KeyRing
from voxelfm.server.jobs import JobManager, TooManyJobsError
from voxelfm.server.store import TooLargeError, VolumeStore

GEOMETRY = np.array([[-0.8, 0, 0, 10.0], [0, -0.8, 0, 20.0], [0, 0, 2.5, -30.0], [0, 0, 0, 1.0]])


def _ct(shape=(6, 20, 24), seed=0) -> Volume:
    rng = np.random.default_rng(seed)
    return Volume(rng.integers(-1024, 1500, size=shape).astype(np.int16), GEOMETRY.copy())


@pytest.mark.parametrize("dtype", ["uint8", "int16", "int32", "float32", "float64"])
def test_arrays_round_trip_exactly(dtype):
    arr = (np.random.default_rng(1).normal(size=(3, 5, 7)) * 100).astype(dtype)
    frame = Frame({"a": 1}, {"x": arr, "m": GEOMETRY}).encode({"m": RAW})
    back = decode_frame(frame)
    assert back.meta == {"a": 1}
    assert back.arrays["x"].dtype == arr.dtype and np.array_equal(back.arrays["x"], arr)
    assert np.array_equal(back.arrays["m"], GEOMETRY)


def test_malformed_payloads_are_refused():
    arr = np.zeros((4, 8, 8), np.int16)
    body = Frame({}, {"voxels": arr}).encode()
    with pytest.raises(InputError, match="magic"):
        decode_frame(b"XXXX" + body[4:])
    with pytest.raises(InputError, match="describes"):
        decode_frame(body[:-3])
    # a payload that decompresses to more than its declared shape (a "zip bomb") is refused, not inflated
    with pytest.raises(InputError):
        decompress(compress(np.zeros((64, 64, 64), np.int16)), "int16", (4, 8, 8), CODEC)
    with pytest.raises(InputError, match="dtype"):
        decompress(compress(arr), "object", (4, 8, 8), CODEC)


@pytest.mark.parametrize("largest", [0, 1, 2, 3, 6, 200, 255])
def test_labelmaps_travel_as_bit_planes_exactly(largest):
    """As many planes as the largest value needs: a 0/1 labelmap is 1/8 of its bytes before zstd."""
    rng = np.random.default_rng(largest)
    labels = rng.integers(0, largest + 1, size=(5, 9, 11), dtype=np.uint8)
    labels.flat[0] = largest
    payload = compress(labels, BITS)
    assert payload[0] == max(1, largest.bit_length())
    back = decode_frame(Frame({}, {"labelmap": labels}).encode({"labelmap": BITS})).arrays["labelmap"]
    assert back.dtype == np.uint8 and np.array_equal(back, labels)
    with pytest.raises(InputError, match="uint8"):
        compress(labels.astype(np.int16), BITS)
    with pytest.raises(InputError, match="bit planes"):
        decompress(b"\x09" + payload[1:], "uint8", labels.shape, BITS)
    with pytest.raises(InputError):  # more voxels than the shape declares
        decompress(payload, "uint8", (2, 9, 11), BITS)


@pytest.mark.parametrize("width", [14, 13])  # rows a multiple of 8 voxels (scanned 8 at a time) or not
def test_sparse_labels_are_a_complete_description(width):
    labels = np.full((10, 12, width), 255, np.uint8)
    labels[2] = 0
    labels[2, 3:6, 4:9] = 1
    labels[7, :, :] = 0
    labels[7, 5:8, 2:4] = 2
    vol = Volume(labels, GEOMETRY)
    sparse = sparse_labels(vol)
    assert sparse["slices"] == [2, 7]
    back = labels_from_sparse(sparse, max_voxels=10**6)
    assert np.array_equal(back.array, labels) and np.allclose(back.ijk_to_ras, GEOMETRY)
    with pytest.raises(InputError, match="limit"):
        labels_from_sparse(sparse, max_voxels=100)
    lying = {**sparse, "values": {**sparse["values"], "shape": [2, 100000, 100000]}}
    with pytest.raises(InputError, match="expected"):  # refused before anything is allocated or inflated
        labels_from_sparse(lying, max_voxels=10**6)
    sparse["slices"] = [2, 10]
    with pytest.raises(InputError, match="indices"):
        labels_from_sparse(sparse, max_voxels=10**6)


def test_keys_file_constant_time_match_and_rotation(tmp_path, monkeypatch):
    keys = tmp_path / "keys"
    keys.write_text("# department keys\nalpha-key\n\n beta-key \n")
    ring = KeyRing(keys)
    assert ring.owner("Bearer alpha-key") and ring.owner("Bearer beta-key")
    assert (
        ring.owner("Bearer alpha-ke") is None and ring.owner("alpha-key") is None and ring.owner(None) is None
    )
    assert ring.owner("Bearer alpha-key") != ring.owner("Bearer beta-key")
    monkeypatch.setattr("voxelfm.server.auth.RELOAD_SECONDS", 0.0)
    keys.write_text("gamma-key\n")  # rotation: the file changes, no restart
    assert ring.owner("Bearer gamma-key") and ring.owner("Bearer alpha-key") is None
    keys.write_text("")  # emptied by mistake: keep the keys we had
    assert ring.owner("Bearer gamma-key")


def test_store_checks_content_limits_and_evicts_least_recently_used(tmp_path):
    store = VolumeStore(tmp_path / "volumes", max_bytes=10**9, max_voxels=5000)
    a, b, c = _ct(seed=1), _ct(seed=2), _ct(seed=3)
    body = Frame({"ijk_to_ras": a.ijk_to_ras.tolist()}, {"voxels": a.array}).encode()
    with pytest.raises(InputError, match="content hash"):
        store.put(b.content_hash(), body)  # a body that is not what its address names
    assert store.uploads == 0
    stored = store.put(a.content_hash(), body)
    assert np.array_equal(stored.array, a.array) and store.has(a.content_hash())
    big = _ct(shape=(20, 20, 24))
    with pytest.raises(TooLargeError, match="limit"):
        store.put(
            big.content_hash(), Frame({"ijk_to_ras": GEOMETRY.tolist()}, {"voxels": big.array}).encode()
        )
    flat = GEOMETRY.copy()
    flat[2, 2] = 0.0
    with pytest.raises(InputError, match="spacing"):
        store.put(a.content_hash(), Frame({"ijk_to_ras": flat.tolist()}, {"voxels": a.array}).encode())
    # LRU: with room for two entries, storing a third evicts the one read least recently
    size = store.size(a.content_hash())
    store.max_bytes = 2 * size + size // 2
    for v in (b,):
        store.put(
            v.content_hash(), Frame({"ijk_to_ras": v.ijk_to_ras.tolist()}, {"voxels": v.array}).encode()
        )
    time.sleep(0.02)
    store.get(a.content_hash())  # a is now more recent than b
    store.put(c.content_hash(), Frame({"ijk_to_ras": c.ijk_to_ras.tolist()}, {"voxels": c.array}).encode())
    assert store.has(a.content_hash()) and store.has(c.content_hash()) and not store.has(b.content_hash())
    fresh = VolumeStore(
        tmp_path / "volumes", max_bytes=10**9, max_voxels=5000
    )  # another process, same folder
    assert np.array_equal(fresh.get(c.content_hash()).array, c.array)


def test_jobs_one_at_a_time_per_device_limits_cancel_and_abandon():
    running, peak, release = [0], [0], threading.Event()
    lock = threading.Lock()

    def runner(job, device):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        try:
            while not release.is_set():
                if job.cancel.is_set():
                    raise CancelledError("stopped")
                time.sleep(0.01)
            if job.request == "bad":
                raise InputError("labels have no background")
            return f"result of {job.request}".encode()
        finally:
            with lock:
                running[0] -= 1

    manager = JobManager(["cpu"], runner, max_queued_per_key=2, abandon_after_s=0.5, keep_results_s=60)
    try:
        first = manager.submit("alice", "features", "one")
        second = manager.submit("alice", "features", "two")
        with pytest.raises(TooManyJobsError):
            manager.submit("alice", "features", "three")
        other = manager.submit("bob", "features", "bad")  # another key has its own limit
        with pytest.raises(KeyError):
            manager.get("bob", first.id)  # a key sees only its own jobs
        manager.cancel("alice", second.id)
        assert second.state == "cancelled"
        # nobody polls `first`: it is cancelled as abandoned (bob keeps polling his)
        assert wait_until(lambda: manager.get("bob", other.id) and first.state == "cancelled")
        assert "abandoned" in first.error and other.state in ("queued", "running")
        release.set()
        assert wait_until(lambda: manager.get("bob", other.id).state == "failed")
        assert other.error_kind == "input" and "background" in other.error
        done = manager.submit("alice", "features", "four")
        assert wait_until(lambda: manager.get("alice", done.id).state == "done")
        assert done.result == b"result of four" and peak[0] == 1  # one job at a time on the device
    finally:
        manager.shutdown()


def test_serve_refuses_a_missing_or_empty_keys_file(tmp_path, capsys):
    from voxelfm.cli.main import main

    assert main(["serve", "--keys", str(tmp_path / "absent.txt"), "--data", str(tmp_path / "d")]) == 2
    assert "keys file" in capsys.readouterr().err
    empty = tmp_path / "keys.txt"
    empty.write_text("# no key yet\n\n")
    assert main(["serve", "--keys", str(empty), "--data", str(tmp_path / "d")]) == 2
    assert "holds no key" in capsys.readouterr().err
