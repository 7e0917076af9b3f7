"""Streaming input: sources against `np.load`, the shuffle, prefetch, streamed learning, resume."""

import itertools
import json
import struct

import numpy as np
import pytest

import sparsedict as sd
from sparsedict import streaming

LAM = 0.1


def signals(n=300, d=8, seed=0):
    return np.abs(np.random.default_rng(seed).standard_normal((n, d)))


def write_safetensors(path, tensors):
    """A .safetensors file written from the format's spec (8-byte header size, JSON, data)."""
    names = {np.dtype("<f8"): "F64", np.dtype("<f4"): "F32", np.dtype("<i4"): "I32"}
    header, offset, blobs = {"__metadata__": {"format": "np"}}, 0, []
    for key, array in tensors.items():
        blob = np.ascontiguousarray(array).tobytes()
        header[key] = {
            "dtype": names[array.dtype],
            "shape": list(array.shape),
            "data_offsets": [offset, offset + len(blob)],
        }
        offset += len(blob)
        blobs.append(blob)
    raw = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw + b"".join(blobs))


def shards(tmp_path, X, kind, cuts=(0, 70, 71, 200, 300)):
    """X split into shards of uneven size (one of a single row), written as `kind` files."""
    paths = []
    for i, (lo, hi) in enumerate(itertools.pairwise(cuts)):
        path = str(tmp_path / f"part{i:02d}.{kind}")
        if kind == "npz":
            np.savez(path, acts=X[lo:hi], other=np.zeros(3))
        elif kind == "npz_compressed":
            path = path.replace(".npz_compressed", ".npz")
            np.savez_compressed(path, acts=X[lo:hi])
        else:
            write_safetensors(path, {"acts": X[lo:hi], "other": np.zeros(3, np.int32)})
        paths.append(path)
    return paths


def check_rows(source, X):
    assert source.shape == X.shape and source.dtype == X.dtype
    np.testing.assert_array_equal(source.read(0, len(X)), X)
    for lo, hi in [(0, 1), (69, 72), (150, 150), (199, 300)]:
        np.testing.assert_array_equal(source.read(lo, hi), X[lo:hi])
    rows = np.random.default_rng(1).integers(0, len(X), 500)
    np.testing.assert_array_equal(source.take(rows), X[rows])


@pytest.mark.parametrize("dtype", [np.float32, np.float64, ">f8"])
def test_npy_source_reads_what_np_load_reads(tmp_path, dtype):
    X = signals().astype(dtype)
    np.save(tmp_path / "x.npy", X)
    check_rows(
        streaming.open_signals(str(tmp_path / "x.npy")),
        np.load(tmp_path / "x.npy").astype(np.dtype(dtype).newbyteorder("=")),
    )


@pytest.mark.parametrize("kind", ["npz", "npz_compressed", "safetensors"])
def test_shards_concatenate(tmp_path, kind):
    X = signals()
    paths = shards(tmp_path, X, kind)
    expected = np.concatenate([np.load(p)["acts"] for p in paths]) if kind != "safetensors" else X
    check_rows(streaming.open_signals(paths, key="acts"), expected)
    glob = str(tmp_path / ("part*." + ("safetensors" if kind == "safetensors" else "npz")))
    check_rows(streaming.open_signals(glob, key="acts"), expected)


def test_safetensors_package_files(tmp_path):
    """Files written by the safetensors package itself (a test dependency) read without it."""
    from safetensors.numpy import save_file

    X = signals().astype(np.float32)
    save_file({"acts": X[:100]}, str(tmp_path / "a.safetensors"))
    save_file({"acts": X[100:]}, str(tmp_path / "b.safetensors"))
    check_rows(streaming.open_signals(str(tmp_path / "*.safetensors")), X)


def test_reads_are_split_and_touch_only_needed_shards(tmp_path, monkeypatch):
    from sparsedict._testing import streaming_sources

    X = signals()
    paths = shards(tmp_path, X, "npz")
    source = streaming.open_signals(paths, key="acts")
    # tiny read limits (rows of 64 bytes): runs break at gaps > 3 rows and every 10 rows
    monkeypatch.setattr(streaming_sources, "_GAP_BYTES", 3 * 64)
    monkeypatch.setattr(streaming_sources, "_RUN_BYTES", 10 * 64)
    rows = np.random.default_rng(2).choice(300, 120)
    np.testing.assert_array_equal(source.take(rows), X[rows])
    for path in paths[:3]:  # rows 200:300 live in the last shard only
        (tmp_path / path).unlink()
    np.testing.assert_array_equal(source.read(200, 300), X[200:])


def test_in_memory_source():
    X = signals()
    check_rows(streaming.open_signals(X), X)


def test_bad_inputs_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.npy"):
        streaming.open_signals(str(tmp_path / "missing.npy"))
    with pytest.raises(FileNotFoundError, match="nothing"):
        streaming.open_signals(str(tmp_path / "nothing*.npy"))
    np.save(tmp_path / "vec.npy", np.ones(5))
    with pytest.raises(ValueError, match=r"vec.npy must have shape \(n, d\)"):
        streaming.open_signals(str(tmp_path / "vec.npy"))
    np.save(tmp_path / "int.npy", np.ones((5, 2), np.int64))
    with pytest.raises(TypeError, match="int.npy must hold floating-point"):
        streaming.open_signals(str(tmp_path / "int.npy"))
    np.save(tmp_path / "empty.npy", np.ones((0, 2)))
    with pytest.raises(ValueError, match="empty.npy is empty"):
        streaming.open_signals(str(tmp_path / "empty.npy"))
    np.save(tmp_path / "a.npy", np.ones((5, 2)))
    np.save(tmp_path / "b.npy", np.ones((5, 3)))
    np.save(tmp_path / "c.npy", np.ones((5, 2), np.float32))
    with pytest.raises(ValueError, match="b.npy has d = 3"):
        streaming.open_signals([str(tmp_path / "a.npy"), str(tmp_path / "b.npy")])
    with pytest.raises(ValueError, match="c.npy has dtype float32"):
        streaming.open_signals([str(tmp_path / "a.npy"), str(tmp_path / "c.npy")])
    np.savez(tmp_path / "two.npz", a=np.ones((2, 2)), b=np.ones((2, 2)))
    with pytest.raises(ValueError, match="two.npz holds several arrays"):
        streaming.open_signals(str(tmp_path / "two.npz"))
    with pytest.raises(KeyError, match="two.npz has no array 'c'"):
        streaming.open_signals(str(tmp_path / "two.npz"), key="c")
    with pytest.raises(ValueError, match="expected a .npy"):
        (tmp_path / "x.csv").write_text("1,2")
        streaming.open_signals(str(tmp_path / "x.csv"))


def test_truncated_files_are_refused_when_opened(tmp_path):
    # A file cut short after writing: refused on open (the header promises bytes that are not
    # there), naming the file, before any read.
    X = signals()
    np.save(tmp_path / "x.npy", X)
    write_safetensors(tmp_path / "x.safetensors", {"acts": X})
    for name in ("x.npy", "x.safetensors"):
        path = tmp_path / name
        streaming.open_signals(str(path))  # whole: accepted
        size = path.stat().st_size
        with open(path, "r+b") as f:
            f.truncate(size - 8)  # the last row loses a value
        for read in (streaming.open_signals, streaming.load_array):
            with pytest.raises(ValueError, match=f"{name}: .* but the file has {size - 8} bytes"):
                read(str(path))


@pytest.mark.parametrize("kind", ["npy", "npz", "safetensors"])
def test_load_array_reads_what_np_load_reads(tmp_path, kind):
    # the CLI's reader: the same for all three formats, no safetensors package needed
    X = signals(n=40, d=5).astype(np.float32)
    path = str(tmp_path / f"x.{kind}")
    if kind == "npy":
        np.save(path, X)
    elif kind == "npz":
        np.savez(path, acts=X, other=np.zeros(3))
    else:
        write_safetensors(path, {"acts": X, "other": np.zeros(3, np.int32)})
    loaded = streaming.load_array(path, key=None if kind == "npy" else "acts")
    assert loaded.dtype == X.dtype
    np.testing.assert_array_equal(loaded, X)
    assert sd.datasets.load_array is streaming.load_array


@pytest.mark.parametrize(
    "n, block_rows, window", [(300, 4096, 16), (300, 7, 3), (1000, 64, 1), (5, 2, 2)]
)
def test_shuffle_visits_every_row_once_per_epoch(n, block_rows, window):
    shuffle = streaming.Shuffle(block_rows=block_rows, window=window)
    stream = shuffle.rows(n, 3, 0, 3 * n)
    for epoch in range(3):
        np.testing.assert_array_equal(np.sort(stream[epoch * n : (epoch + 1) * n]), np.arange(n))
    assert not np.array_equal(stream[:n], stream[n : 2 * n])  # a new order every epoch
    assert not np.array_equal(stream[:n], np.arange(n))
    # any window of the stream is the same however it is asked for (a resumed run)
    for start, stop in [(n // 3, n + n // 2), (n - 1, n + 1), (2 * n + 1, 3 * n)]:
        np.testing.assert_array_equal(shuffle.rows(n, 3, start, stop), stream[start:stop])
    assert not np.array_equal(
        streaming.Shuffle(block_rows=block_rows, window=window).rows(n, 4, 0, n), stream[:n]
    )


def test_small_shuffle_is_a_uniform_permutation():
    # n <= block_rows * window: every row lands at every position with the same frequency
    counts = np.zeros((6, 6))
    for seed in range(3000):
        counts[np.arange(6), streaming.Shuffle().rows(6, seed, 0, 6)] += 1
    np.testing.assert_allclose(counts / 3000, 1 / 6, atol=0.035)  # ~5 standard deviations


def test_minibatches_are_reproducible_from_any_step():
    X = signals()
    stream = streaming.Minibatches(
        streaming.open_signals(X), 32, seed=5, shuffle=streaming.Shuffle(block_rows=10, window=4)
    )
    whole = stream.batches(0, 30)
    assert whole.shape == (30, 32, 8)
    np.testing.assert_array_equal(whole.reshape(-1, 8), X[stream.rows(0, 30).reshape(-1)])
    for step, count in [(0, 1), (7, 5), (29, 1)]:
        np.testing.assert_array_equal(stream.batches(step, count), whole[step : step + count])


@pytest.mark.parametrize("depth", [0, 1, 3])
def test_prefetch_yields_the_direct_reads(tmp_path, depth):
    X = signals()
    np.save(tmp_path / "x.npy", X)
    stream = streaming.Minibatches(streaming.open_signals(str(tmp_path / "x.npy")), 16, seed=2)
    with streaming.Prefetcher(stream, 4, depth=depth, stop=40) as prefetch:
        for step in [0, 4, 8, 12, 20, 24, 0, 36, 40]:  # in order, then jumps (a restart)
            np.testing.assert_array_equal(np.asarray(prefetch(step)), stream.batches(step, 4))


def test_nan_rows_are_named(tmp_path):
    X = signals()
    X[123, 2] = np.nan
    X[124, 0] = np.inf
    np.save(tmp_path / "x.npy", X)
    stream = streaming.Minibatches(streaming.open_signals(str(tmp_path / "x.npy")), 50, seed=0)
    message = r"x.npy contains NaN or inf in rows? 12[34] \(read for minibatches \d+ to \d+\)"
    with (
        streaming.Prefetcher(stream, 3, depth=2) as prefetch,
        pytest.raises(ValueError, match=message),
    ):
        for step in range(0, 12, 3):  # an epoch: the bad rows are read
            prefetch(step)
    kw = {"method": "online", "max_steps": 12, "chunk_size": 3, "batch_size": 50}
    with pytest.raises(ValueError, match=message):  # from the prefetch thread, through the learner
        sd.learn_dictionary(str(tmp_path / "x.npy"), 4, LAM, eval_size=50, **kw)
    with pytest.raises(
        ValueError, match=r"x.npy contains NaN or inf in rows 123-124 \(read for the evaluation"
    ):
        sd.learn_dictionary(str(tmp_path / "x.npy"), 4, LAM, eval_size=200, **kw)


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    rng = np.random.default_rng(7)
    D = rng.standard_normal((6, 12))
    D /= np.linalg.norm(D, axis=1, keepdims=True)
    X = (rng.random((300, 6)) < 0.25) * rng.uniform(
        0.5, 2.0, (300, 6)
    ) @ D + 0.01 * rng.standard_normal((300, 12))
    path = tmp_path_factory.mktemp("planted") / "x.npy"
    np.save(path, X)
    return X, str(path)


# eval_size = n: the streamed result describes the same signals as the in-memory one
KW = {
    "method": "online",
    "chunk_size": 5,
    "seed": 4,
    "stationarity_tol": 0.0,
    "batch_size": 32,
    "eval_size": 300,
}
KW["shuffle"] = streaming.Shuffle(block_rows=32, window=2)


def test_streamed_learning_equals_in_memory(planted, tmp_path):
    X, path = planted
    memory = sd.learn_dictionary(X, 6, LAM, max_steps=20, **KW)
    streamed = sd.learn_dictionary(path, 6, LAM, max_steps=20, **KW)
    np.savez(tmp_path / "a.npz", x=X[:120])
    np.savez(tmp_path / "b.npz", x=X[120:])
    sharded = sd.learn_dictionary(
        [str(tmp_path / "a.npz"), str(tmp_path / "b.npz")], 6, LAM, max_steps=20, **KW
    )
    for other in (streamed, sharded):
        np.testing.assert_allclose(other.dictionary, memory.dictionary, rtol=0, atol=1e-12)
        np.testing.assert_allclose(other.history.objective, memory.history.objective, rtol=1e-12)
        np.testing.assert_allclose(other.codes, memory.codes, atol=1e-10)
        assert other.steps == 20


def test_streamed_resume_matches_uninterrupted(planted, tmp_path):
    _, path = planted
    straight = sd.learn_dictionary(path, 6, LAM, max_steps=20, **KW)
    checkpoint = str(tmp_path / "run.npz")
    sd.learn_dictionary(
        path, 6, LAM, max_steps=10, checkpoint=checkpoint, **KW
    )  # "interrupted" after 10
    resumed = sd.learn_dictionary(path, 6, LAM, max_steps=20, checkpoint=checkpoint, **KW)
    np.testing.assert_array_equal(resumed.dictionary, straight.dictionary)
    np.testing.assert_array_equal(resumed.history.objective, straight.history.objective)


def test_streamed_sae_equals_in_memory(planted):
    X, path = planted
    kw = {
        "max_steps": 10,
        "chunk_size": 5,
        "seed": 1,
        "batch_size": 32,
        "eval_size": 100,
        "learning_rate": 3e-3,
    }
    memory = sd.train_sae(X, 6, LAM, **kw)
    streamed = sd.train_sae(path, 6, LAM, prefetch=0, **kw)
    np.testing.assert_allclose(streamed.dictionary, memory.dictionary, atol=1e-12)
    # the streamed analysis is on the first eval_size signals, recomputed here on the array
    assert streamed.codes.shape == (100, 6)
    np.testing.assert_allclose(
        streamed.codes, sd.sparse_code(X[:100], streamed.dictionary, LAM).codes, atol=1e-8
    )


def test_alternating_reads_a_path_whole(planted):
    from sparsedict._testing import read_whole  # the input step of method="alternating"

    X, path = planted
    np.testing.assert_array_equal(read_whole(path), X)
    assert read_whole(X) is X
