"""MNIST data layer: IDX parsing and its errors, checksums, cache, download from a local server, the split."""

import gzip
import hashlib
import http.server
import os
import socket
import tempfile
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from softmaxlab.errors import SoftmaxlabError
from softmaxlab.mnist import data, records
from softmaxlab.mnist.check import check
from softmaxlab.mnist.data import (
    TEST_IMAGES,
    TEST_LABELS,
    TRAIN_IMAGES,
    TRAIN_LABELS,
    Mnist,
    load_mnist,
    mnist_split,
    parse_idx,
    read_idx,
    resolve_data_dir,
    split_indices,
    to_float,
)

NAMES = (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS)


def idx_bytes(arr: np.ndarray) -> bytes:
    """uint8 array -> IDX payload (big-endian header, then the bytes)."""
    head = bytes([0, 0, 8, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    return head + arr.astype(np.uint8).tobytes()


def small_mnist(n_train: int = 20, n_test: int = 10, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        TRAIN_IMAGES: rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        TRAIN_LABELS: rng.integers(0, 10, n_train, dtype=np.uint8),
        TEST_IMAGES: rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        TEST_LABELS: rng.integers(0, 10, n_test, dtype=np.uint8),
    }


def table(arrays: dict[str, np.ndarray]) -> dict[str, tuple[str, int]]:
    payloads = {n: idx_bytes(a) for n, a in arrays.items()}
    return {n: (hashlib.sha256(p).hexdigest(), len(p)) for n, p in payloads.items()}


def write_dir(d: Path, arrays: dict[str, np.ndarray], gz: bool | set = False) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    for n, a in arrays.items():
        zipped = gz is True or (isinstance(gz, set) and n in gz)
        p = idx_bytes(a)
        (d / (n + ".gz" if zipped else n)).write_bytes(gzip.compress(p, mtime=0) if zipped else p)
    return d


def assert_same(m: Mnist, arrays: dict[str, np.ndarray]) -> None:
    got = dict(zip(NAMES, (m.train_images, m.train_labels, m.test_images, m.test_labels), strict=True))
    for n in NAMES:
        assert got[n].dtype == torch.uint8
        assert torch.equal(got[n], torch.from_numpy(arrays[n])), n


def one_line_error(excinfo, *needles: str) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg and ";" in msg, msg  # one line: problem; fix
    for s in needles:
        assert s in msg, (s, msg)
    return msg


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """Cache in tmp, and any accidental download goes to a dead local port, never the network."""
    monkeypatch.setenv("SOFTMAXLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("SOFTMAXLAB_MNIST_MIRRORS", "http://127.0.0.1:9/")


@pytest.fixture
def small(tmp_path):
    arrays = small_mnist()
    return arrays, table(arrays), write_dir(tmp_path / "data", arrays, gz={TRAIN_IMAGES, TEST_LABELS})


# ---------------------------------------------------------------------------------------------------------
# Parsing and verification


def test_raw_and_gz_both_read(tmp_path):
    arrays = small_mnist()
    kw = dict(download=False, files=table(arrays), cache=False)
    raw = load_mnist(write_dir(tmp_path / "raw", arrays), **kw)
    gz = load_mnist(write_dir(tmp_path / "gz", arrays, gz=True), **kw)
    assert_same(raw, arrays)
    assert_same(gz, arrays)
    for n in NAMES:
        assert torch.equal(read_idx(tmp_path / "raw" / n), read_idx(tmp_path / "gz" / f"{n}.gz"))
    assert raw.train_images.shape == (20, 28, 28) and raw.train_labels.shape == (20,)


def test_gzip_sniffed_not_trusted_by_extension(tmp_path):
    """A .gz that is really raw (a server that decompressed on the fly) is still read."""
    arrays = small_mnist()
    d = write_dir(tmp_path / "d", arrays)
    os.rename(d / TRAIN_IMAGES, d / f"{TRAIN_IMAGES}.gz")
    assert_same(load_mnist(d, download=False, files=table(arrays), cache=False), arrays)


def _set_count(p: bytes, n: int) -> bytes:
    return p[:4] + n.to_bytes(4, "big") + p[8:]


CORRUPTIONS = {
    "truncated": (lambda p: p[:-5], "truncated"),
    "header_only": (lambda p: p[:10], "truncated IDX header"),
    "tiny": (lambda p: p[:3], "not an IDX file"),
    "wrong_magic": (lambda p: bytes([0, 0, 8, 1]) + p[4:], "wrong magic number 0x00000801"),
    "not_ubyte": (lambda p: bytes([0, 0, 0x0D, 3]) + p[4:], "wrong magic number 0x00000d03"),
    "wrong_count": (lambda p: _set_count(p, 19)[: 16 + 19 * 784], "header says 19 items, expected 20"),
    "trailing": (lambda p: p + b"\0", "trailing bytes"),
    "wrong_size": (lambda p: p[:8] + (27).to_bytes(4, "big") + p[12:], "trailing bytes"),
    "checksum": (lambda p: p[:100] + bytes([p[100] ^ 1]) + p[101:], "sha256 of the decoded data"),
}


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
def test_bad_file_is_one_clear_error_naming_it(small, kind, gz):
    arrays, files, d = small
    for f in d.glob(f"{TRAIN_IMAGES}*"):
        f.unlink()
    mutate, needle = CORRUPTIONS[kind]
    p = mutate(idx_bytes(arrays[TRAIN_IMAGES]))
    path = d / (f"{TRAIN_IMAGES}.gz" if gz else TRAIN_IMAGES)
    path.write_bytes(gzip.compress(p) if gz else p)
    with pytest.raises(SoftmaxlabError) as e:
        load_mnist(d, download=False, files=files)
    one_line_error(e, str(path), needle)
    assert not (d.parent / "cache" / data.cache_key(files[TRAIN_IMAGES][0])).exists()  # nothing cached


def test_wrong_item_size_and_count_with_consistent_length(small):
    arrays, files, d = small
    wide = np.zeros((20, 28, 29), np.uint8)  # a consistent IDX file, just not 28 x 28
    (d / f"{TRAIN_IMAGES}.gz").write_bytes(gzip.compress(idx_bytes(wide)))
    with pytest.raises(SoftmaxlabError) as e:
        load_mnist(d, download=False, files=files)
    one_line_error(e, f"{TRAIN_IMAGES}.gz", "items are (28, 29), expected (28, 28)")


@pytest.mark.parametrize("how", ["flipped", "cut"])
def test_corrupt_gzip(small, how):
    arrays, files, d = small
    path = d / f"{TRAIN_IMAGES}.gz"
    z = path.read_bytes()
    z = z[:-20] if how == "cut" else z[:200] + bytes(b ^ 0xFF for b in z[200:260]) + z[260:]
    path.write_bytes(z)
    with pytest.raises(SoftmaxlabError) as e:
        load_mnist(d, download=False, files=files)
    one_line_error(e, str(path), "corrupt gzip")


def test_missing_file_without_download(small):
    arrays, files, d = small
    (d / TRAIN_LABELS).unlink()
    with pytest.raises(SoftmaxlabError) as e:
        load_mnist(d, download=False, files=files)
    one_line_error(e, TRAIN_LABELS, str(d), "SOFTMAXLAB_DATA", "--data-dir")


def test_images_labels_count_mismatch(tmp_path):
    arrays = small_mnist()
    arrays[TRAIN_LABELS] = arrays[TRAIN_LABELS][:19]
    d = write_dir(tmp_path / "d", arrays)
    with pytest.raises(SoftmaxlabError) as e:
        load_mnist(d, download=False, files=table(arrays))
    one_line_error(e, "20 items", "19")


def test_check_reports_each_file(small):
    arrays, files, d = small
    rows = check(d, files=files)
    assert [r["name"] for r in rows] == list(files)
    for r in rows:
        assert r["ok"] and r["error"] is None and Path(r["path"]).is_file()
        assert (r["sha256"], r["bytes"]) == files[r["name"]]
    (d / TEST_IMAGES).write_bytes(idx_bytes(arrays[TEST_IMAGES] ^ 1))
    (d / TRAIN_LABELS).unlink()
    rows = {r["name"]: r for r in check(d, files=files)}
    assert rows[TRAIN_IMAGES]["ok"] and rows[TEST_LABELS]["ok"]
    assert not rows[TEST_IMAGES]["ok"] and "sha256" in rows[TEST_IMAGES]["error"]
    assert rows[TEST_IMAGES]["sha256"] != files[TEST_IMAGES][0] and rows[TEST_IMAGES]["bytes"] == 7856
    assert not rows[TRAIN_LABELS]["ok"] and rows[TRAIN_LABELS]["path"] is None


def test_resolve_data_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("SOFTMAXLAB_DATA", str(tmp_path / "env"))
    assert resolve_data_dir(tmp_path / "arg") == tmp_path / "arg"
    assert resolve_data_dir() == tmp_path / "env"
    monkeypatch.delenv("SOFTMAXLAB_DATA")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert resolve_data_dir() == tmp_path / "home" / ".cache" / "softmaxlab" / "mnist"


# ---------------------------------------------------------------------------------------------------------
# Cache


def test_second_load_comes_from_cache(small, monkeypatch, tmp_path):
    arrays, files, d = small
    first = load_mnist(d, download=False, files=files)
    cached = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert cached == sorted(data.cache_key(sha) for sha, _ in files.values())

    def no_decoding(*a, **k):
        raise AssertionError("decoded again instead of using the cache")

    monkeypatch.setattr(data, "_verify", no_decoding)
    second = load_mnist(d, download=False, files=files)
    assert_same(second, arrays)
    for a, b in zip(vars(first).values(), vars(second).values(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("damage", ["short", "garbage", "empty", "wrong_shape"])
def test_bad_cache_file_is_silently_rebuilt(small, tmp_path, damage):
    arrays, files, d = small
    load_mnist(d, download=False, files=files)
    p = tmp_path / "cache" / data.cache_key(files[TRAIN_IMAGES][0])
    if damage == "wrong_shape":
        np.save(p, np.zeros((3, 28, 28), np.uint8))
    else:
        p.write_bytes({"short": p.read_bytes()[:500], "garbage": b"\x93NUMPY nonsense", "empty": b""}[damage])
    assert_same(load_mnist(d, download=False, files=files), arrays)
    assert np.array_equal(np.load(p), arrays[TRAIN_IMAGES])  # rebuilt in place


def test_cache_beside_data_or_in_home_when_data_dir_read_only(small, monkeypatch, tmp_path):
    arrays, files, d = small
    monkeypatch.delenv("SOFTMAXLAB_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    keys = sorted(data.cache_key(sha) for sha, _ in files.values())
    load_mnist(d, download=False, files=files)
    assert sorted(p.name for p in d.glob("*.npy")) == keys
    for p in d.glob("*.npy"):
        p.unlink()
    d.chmod(0o555)  # no write bits: read-only, even for root
    try:
        assert_same(load_mnist(d, download=False, files=files), arrays)
        assert not list(d.glob("*.npy"))
        home_cache = tmp_path / "home" / ".cache" / "softmaxlab" / "decoded"
        assert sorted(p.name for p in home_cache.iterdir()) == keys
    finally:
        d.chmod(0o755)


def test_cache_off_writes_nothing(small, tmp_path):
    arrays, files, d = small
    before = sorted(d.iterdir())
    assert_same(load_mnist(d, download=False, files=files, cache=False), arrays)
    assert sorted(d.iterdir()) == before and not (tmp_path / "cache").exists()


# ---------------------------------------------------------------------------------------------------------
# Download from a local server


class _Handler(http.server.BaseHTTPRequestHandler):
    routes: dict[str, bytes] = {}
    hits: list[str] = []

    def do_GET(self):  # noqa: N802 (http.server's name)
        self.hits.append(self.path)
        body = self.routes.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        short = self.path.startswith("/short/")  # hangs up half way
        self.wfile.write(body[: len(body) // 2] if short else body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    _Handler.routes, _Handler.hits = {}, []
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}", _Handler
    srv.shutdown()
    srv.server_close()


def dead_url() -> str:
    with socket.socket() as s:  # a port that was free a moment ago: connection refused
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/mnist/"


def test_download_skips_dead_and_corrupt_mirrors(server, tmp_path, monkeypatch):
    base, handler = server
    arrays = small_mnist()
    files = table(arrays)
    for i, n in enumerate(NAMES):
        good = idx_bytes(arrays[n])
        bad = good[:-1] + bytes([good[-1] ^ 1]) if i % 2 else b"\x1f\x8b not gzip at all"
        handler.routes[f"/good/{n}.gz"] = gzip.compress(good)
        handler.routes[f"/corrupt/{n}.gz"] = gzip.compress(bad) if i % 2 else bad
        handler.routes[f"/short/{n}.gz"] = gzip.compress(good)
    replaced = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (replaced.append((Path(a), Path(b))), real_replace(a, b)))
    d = tmp_path / "new" / "data"  # created on demand
    mirrors = [dead_url(), f"{base}/missing/", f"{base}/short/", f"{base}/corrupt/", f"{base}/good"]
    m = load_mnist(d, mirrors=mirrors, timeout=5, files=files)
    assert_same(m, arrays)
    assert sorted(p.name for p in d.iterdir()) == sorted(f"{n}.gz" for n in NAMES)  # no temp files left
    for n in NAMES:
        assert (d / f"{n}.gz").read_bytes() == handler.routes[f"/good/{n}.gz"]
        assert handler.hits.index(f"/corrupt/{n}.gz") < handler.hits.index(f"/good/{n}.gz")
    landed = [(a, b) for a, b in replaced if b.parent == d]
    assert [b.name for _, b in landed] == [f"{n}.gz" for n in NAMES]
    assert all(a.parent == d and records._TEMP.search(a.name) for a, _ in landed)  # records' temp, same dir
    assert_same(load_mnist(d, mirrors=[dead_url()], files=files), arrays)  # now local, no download


def test_download_uses_env_mirrors(server, tmp_path, monkeypatch):
    base, handler = server
    arrays = small_mnist()
    for n in NAMES:
        handler.routes[f"/m/{n}.gz"] = gzip.compress(idx_bytes(arrays[n]))
    monkeypatch.setenv("SOFTMAXLAB_MNIST_MIRRORS", f"{dead_url()}, {base}/m")
    assert_same(load_mnist(tmp_path / "d", files=table(arrays), timeout=5), arrays)


def test_download_all_mirrors_dead_is_one_clear_error(server, tmp_path):
    base, handler = server
    arrays = small_mnist()
    handler.routes[f"/corrupt/{TRAIN_IMAGES}.gz"] = b"garbage"
    handler.routes[f"/short/{TRAIN_IMAGES}.gz"] = gzip.compress(idx_bytes(arrays[TRAIN_IMAGES]))
    d = tmp_path / "data"
    with pytest.raises(SoftmaxlabError) as e:
        load_mnist(d, mirrors=[dead_url(), f"{base}/corrupt/", f"{base}/short/"], timeout=5, files=table(arrays))
    one_line_error(e, "could not download", str(d), "SOFTMAXLAB_DATA", "--data-dir", *NAMES)
    one_line_error(e, "refused", "wrong magic", "incomplete download")  # why each mirror failed
    assert list(d.iterdir()) == []  # no partial files


def test_unwritable_data_dir(tmp_path):
    arrays = small_mnist()
    blocker = tmp_path / "file"
    blocker.write_text("not a dir")
    with pytest.raises(SoftmaxlabError) as e:
        load_mnist(blocker / "mnist", files=table(arrays), mirrors=[dead_url()])
    one_line_error(e, "cannot create the data dir", "SOFTMAXLAB_DATA", "--data-dir")
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o555)
    try:
        with pytest.raises(SoftmaxlabError) as e:
            load_mnist(ro, files=table(arrays), mirrors=[dead_url()])
        one_line_error(e, str(ro), "not writable", "SOFTMAXLAB_DATA")
    finally:
        ro.chmod(0o755)


# ---------------------------------------------------------------------------------------------------------
# Fuzz: whatever the bytes, the parser says SoftmaxlabError or returns the right thing


_FIXTURE_OK = [HealthCheck.function_scoped_fixture]  # the autouse env fixture is the same for every example


def _parse_file_bytes(raw: bytes, ndim: int):
    try:
        arr = parse_idx(data._decode(raw, "fuzz"), ndim, "fuzz")
    except SoftmaxlabError as e:
        assert "\n" not in str(e)
        return None
    assert arr.dtype == np.uint8 and arr.ndim == ndim
    return arr


@settings(max_examples=300, deadline=None, suppress_health_check=_FIXTURE_OK)
@given(st.binary(max_size=300), st.sampled_from([1, 3]))
def test_fuzz_random_bytes(raw, ndim):
    _parse_file_bytes(raw, ndim)
    _parse_file_bytes(b"\x1f\x8b" + raw, ndim)  # looks like gzip
    _parse_file_bytes(bytes([0, 0, 8, ndim]) + raw, ndim)  # looks like IDX


@settings(max_examples=200, deadline=None, suppress_health_check=_FIXTURE_OK)
@given(st.lists(st.integers(0, 5), min_size=3, max_size=3), st.integers(-3, 3), st.booleans())
def test_fuzz_headers_and_lengths(dims, extra, gz):
    body = bytes(int(np.prod(dims)) + max(extra, -int(np.prod(dims))))
    head = bytes([0, 0, 8, 3]) + b"".join(d.to_bytes(4, "big") for d in dims)
    arr = _parse_file_bytes(gzip.compress(head + body) if gz else head + body, 3)
    assert (arr is not None) == (len(body) == np.prod(dims))
    if arr is not None:
        assert arr.shape == tuple(dims)


_GOOD = small_mnist(n_train=4, n_test=2)
_GOOD_GZ = gzip.compress(idx_bytes(_GOOD[TRAIN_IMAGES]))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, *_FIXTURE_OK])
@given(st.lists(st.tuples(st.integers(0, len(_GOOD_GZ) - 1), st.integers(1, 255)), min_size=1, max_size=4))
def test_fuzz_damaged_gzip_file(flips):
    """Flipped bytes in a real .gz: a clear error, or (flips in the header's free fields) the same data."""
    z = bytearray(_GOOD_GZ)
    for i, x in flips:
        z[i] ^= x
    with tempfile.TemporaryDirectory() as t:
        d = write_dir(Path(t), _GOOD)
        (d / TRAIN_IMAGES).unlink()
        (d / f"{TRAIN_IMAGES}.gz").write_bytes(bytes(z))
        try:
            m = load_mnist(d, download=False, files=table(_GOOD), cache=False)
        except SoftmaxlabError as e:
            assert "\n" not in str(e) and TRAIN_IMAGES in str(e)
        else:
            assert_same(m, _GOOD)


# ---------------------------------------------------------------------------------------------------------
# Split and conversion


SPLITS = [(60000, 10000, 0), (60000, 10000, 1), (1000, 7, 3), (10, 0, 5), (10, 10, 2), (1, 1, 0)]


@pytest.mark.filterwarnings("ignore:Length of split at index")  # random_split's own warning for empty splits
@pytest.mark.parametrize("n_total,n_val,seed", SPLITS)
def test_split_indices_match_random_split(n_total, n_val, seed):
    train, val = torch.utils.data.random_split(
        range(n_total), [n_total - n_val, n_val], torch.Generator().manual_seed(seed)
    )
    t, v = split_indices(n_total, n_val, seed)
    assert t.dtype == v.dtype == torch.int64
    assert t.tolist() == list(train.indices) and v.tolist() == list(val.indices)


@pytest.mark.parametrize("bad", [(10, 11), (10, -1), (10, 2.5)])
def test_split_indices_bad(bad):
    with pytest.raises(SoftmaxlabError, match="n_val"):
        split_indices(*bad)


def test_mnist_split_selects_rows(small):
    arrays, files, d = small
    m = load_mnist(d, download=False, files=files)
    s = mnist_split(m, n_val=5, seed=3)
    t, v = split_indices(20, 5, 3)
    flat = lambda x: x.reshape(len(x), 784)
    assert torch.equal(s.train.x, flat(m.train_images[t])) and torch.equal(s.train.y, m.train_labels[t].long())
    assert torch.equal(s.val.x, flat(m.train_images[v])) and torch.equal(s.val.y, m.train_labels[v].long())
    assert torch.equal(s.test.x, flat(m.test_images)) and s.test.y.dtype == torch.int64
    assert s.train.x.dtype == torch.uint8 and s.train.x.is_contiguous()  # the trainer's shape


def test_to_float():
    x = torch.arange(2 * 784, dtype=torch.int64).remainder(256).to(torch.uint8).reshape(2, 28, 28)
    f = to_float(x)
    assert f.dtype == torch.float32 and f.shape == (2, 784)
    assert torch.equal(f, x.reshape(2, 784).float() / 255)
    assert torch.equal(to_float(x.reshape(2, 784)), f)
    assert torch.equal(to_float(x, normalize=True), (f - data.MEAN) / data.STD)
    for bad in (x.float(), x[:, :, :27], x[0]):
        with pytest.raises(SoftmaxlabError):
            to_float(bad)


# ---------------------------------------------------------------------------------------------------------
# The real MNIST (skipped without SOFTMAXLAB_DATA)


@pytest.fixture(scope="module")
def real(mnist_dir, tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SOFTMAXLAB_CACHE", str(tmp_path_factory.mktemp("cache")))
        cold = load_mnist(mnist_dir, download=False)
        warm = load_mnist(mnist_dir, download=False)
    return cold, warm


def test_real_mnist(real):
    m, warm = real
    assert m.train_images.shape == (60000, 28, 28) and m.train_labels.shape == (60000,)
    assert m.test_images.shape == (10000, 28, 28) and m.test_labels.shape == (10000,)
    assert m.train_labels.bincount().tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert m.test_labels.bincount().tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    x = to_float(m.train_images)
    assert abs(x.mean().item() - data.MEAN) < 5e-5 and abs(x.std().item() - data.STD) < 5e-5
    z = to_float(m.train_images, normalize=True)
    assert abs(z.mean().item()) < 1e-3 and abs(z.std().item() - 1) < 1e-3
    for a, b in zip(vars(m).values(), vars(warm).values(), strict=True):
        assert torch.equal(a, b)


def test_real_split(real):
    m, _ = real
    s = mnist_split(m)
    assert [len(split.x) for split in (s.train, s.val, s.test)] == [50000, 10000, 10000]
    t, v = split_indices()
    assert torch.cat([t, v]).sort().values.equal(torch.arange(60000))
    assert torch.equal(s.val.y, m.train_labels[v].long())
