"""MNIST: find, download, verify, decode and cache the four IDX files; the assignment's train/val split.

Everything is held in memory as uint8 tensors (60000 x 28 x 28 is 47 MB); the trainer converts each batch
with `to_float`. The source of truth is the sha256 of the *decoded* IDX payload, so a recompressed .gz (or
a raw file) is as good as the original. Every problem raises SoftmaxlabError with a one-line message that
names the file and the fix.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import io
import os
import re
import socket
import tempfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from softmaxlab.errors import SoftmaxlabError

TRAIN_IMAGES = "train-images-idx3-ubyte"
TRAIN_LABELS = "train-labels-idx1-ubyte"
TEST_IMAGES = "t10k-images-idx3-ubyte"
TEST_LABELS = "t10k-labels-idx1-ubyte"

# name -> (sha256 of the decoded IDX payload, its length in bytes)
MNIST_FILES: dict[str, tuple[str, int]] = {
    TRAIN_IMAGES: ("ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db", 47_040_016),
    TRAIN_LABELS: ("65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5", 60_008),
    TEST_IMAGES: ("0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7", 7_840_016),
    TEST_LABELS: ("ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2", 10_008),
}

# Each serves `<name>.gz`; tried in this order.
MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)

MEAN = 0.1307  # train pixel mean / 255
STD = 0.3081  # train pixel std / 255
ROWS = COLS = 28
PIXELS = ROWS * COLS

ENV_DATA = "SOFTMAXLAB_DATA"
ENV_CACHE = "SOFTMAXLAB_CACHE"
ENV_MIRRORS = "SOFTMAXLAB_MNIST_MIRRORS"

_REFETCH = "delete it (it is downloaded again) or replace it with a good copy"
_RENAME = "check that the right file has this name"
_WHERE = f"point --data-dir or {ENV_DATA} at a folder holding the four MNIST IDX files (raw or .gz)"


# ----------------------------------------------------------------------------------------------------------
# IDX parsing


def _ndim_of(name: str) -> int:
    """IDX rank from a name such as 'train-images-idx3-ubyte' (idx3 -> 3)."""
    m = re.search(r"idx(\d)", name)
    if m is None:
        raise SoftmaxlabError(f"cannot tell the IDX rank from the name {name!r}; name it like '*-idx3-ubyte'")
    return int(m.group(1))


def parse_idx(payload: bytes, ndim: int, source: str = "<bytes>") -> np.ndarray:
    """Decoded IDX bytes -> uint8 array shaped as the header says. Only unsigned-byte IDX is accepted.

    Header: 2 zero bytes, type code 0x08 (ubyte), rank, then `rank` big-endian uint32 dims; then the
    data, exactly prod(dims) bytes.
    """
    want = 0x0800 | ndim
    if len(payload) < 4:
        raise SoftmaxlabError(f"{source}: only {len(payload)} bytes, not an IDX file; {_REFETCH}")
    magic = int.from_bytes(payload[:4], "big")
    if magic != want:
        raise SoftmaxlabError(
            f"{source}: wrong magic number 0x{magic:08x} (expected 0x{want:08x}, a {ndim}-d ubyte IDX file); "
            f"{_RENAME}"
        )
    head = 4 + 4 * ndim
    if len(payload) < head:
        raise SoftmaxlabError(f"{source}: truncated IDX header ({len(payload)} bytes); {_REFETCH}")
    dims = tuple(int.from_bytes(payload[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    need = head + int(np.prod(dims, dtype=object))
    if len(payload) < need:
        raise SoftmaxlabError(
            f"{source}: truncated ({len(payload)} bytes, header {dims} needs {need}); {_REFETCH}"
        )
    if len(payload) > need:
        raise SoftmaxlabError(
            f"{source}: {len(payload) - need} trailing bytes after the {dims} data; {_REFETCH}"
        )
    return np.frombuffer(payload, dtype=np.uint8, offset=head).reshape(dims)


def _gunzip(raw: bytes, source: str, limit: int | None) -> bytes:
    """Decompress gzip bytes; more than `limit` decoded bytes is an error (no gzip bomb fills memory)."""
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(raw)) as f:
            out = f.read() if limit is None else f.read(limit + 1)
    except (OSError, EOFError, zlib.error, ValueError) as e:
        msg = " ".join(str(e).split()) or type(e).__name__
        raise SoftmaxlabError(
            f"{source}: corrupt gzip ({msg}); {_REFETCH}"
        ) from None
    if limit is not None and len(out) > limit:
        raise SoftmaxlabError(
            f"{source}: decodes to over {limit} bytes, far more than expected (wrong file?); {_REFETCH}"
        )
    return out


def _decode(raw: bytes, source: str, limit: int | None = None) -> bytes:
    """File bytes -> IDX payload. Sniffs the gzip magic instead of trusting the extension."""
    return _gunzip(raw, source, limit) if raw[:2] == b"\x1f\x8b" else raw


def _cap(nbytes: int) -> int:
    """Decoded-size cap: generous, so a slightly wrong file still gets the parser's precise message."""
    return 2 * nbytes + (1 << 20)


def _read_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise SoftmaxlabError(f"{path}: cannot read ({e.strerror or e}); check its permissions") from None


def read_idx(path: str | os.PathLike, ndim: int | None = None) -> torch.Tensor:
    """Read one IDX file (raw or gzip) into a uint8 tensor. `ndim` defaults to the 'idxN' in the file name."""
    path = Path(path)
    ndim = _ndim_of(path.name) if ndim is None else ndim
    arr = parse_idx(_decode(_read_file(path), str(path)), ndim, str(path))
    return torch.from_numpy(arr.copy())


def _expected_shape(name: str, nbytes: int) -> tuple[int, ...]:
    """MNIST shapes follow from the payload length: images (N, 28, 28), labels (N,)."""
    ndim = _ndim_of(name)
    if ndim == 3 and (nbytes - 16) % PIXELS == 0 and nbytes >= 16:
        return ((nbytes - 16) // PIXELS, ROWS, COLS)
    if ndim == 1 and nbytes >= 8:
        return (nbytes - 8,)
    raise SoftmaxlabError(f"{name}: length {nbytes} fits no MNIST image or label file; fix the files table")


def _verify(payload: bytes, name: str, sha256: str, nbytes: int, source: str) -> np.ndarray:
    """Parse, check shape and count against the table, then the sha256 of the payload."""
    arr = parse_idx(payload, _ndim_of(name), source)
    shape = _expected_shape(name, nbytes)
    if arr.shape[1:] != shape[1:]:
        raise SoftmaxlabError(
            f"{source}: items are {arr.shape[1:]}, expected {shape[1:]}; {_RENAME}"
        )
    if arr.shape[0] != shape[0]:
        raise SoftmaxlabError(
            f"{source}: header says {arr.shape[0]} items, expected {shape[0]}; {_RENAME}"
        )
    got = hashlib.sha256(payload).hexdigest()
    if got != sha256:
        raise SoftmaxlabError(
            f"{source}: sha256 of the decoded data is {got[:16]}..., expected {sha256[:16]}... "
            f"(corrupt or not MNIST); {_REFETCH}"
        )
    return arr


# ----------------------------------------------------------------------------------------------------------
# Where things live


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """Explicit argument (the CLI's --data-dir), else $SOFTMAXLAB_DATA, else ~/.cache/softmaxlab/mnist."""
    if data_dir is not None and str(data_dir) != "":
        return Path(data_dir).expanduser()
    env = os.environ.get(ENV_DATA, "")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "softmaxlab" / "mnist"


def _writable(d: Path) -> bool:
    """A dir we may write to. A dir with no write bits counts as read-only even for root (it says so)."""
    try:
        return d.is_dir() and os.access(d, os.W_OK) and bool(d.stat().st_mode & 0o222)
    except OSError:
        return False


def _cache_dirs(data_dir: Path) -> list[Path]:
    """Where decoded arrays are looked for, in order: $SOFTMAXLAB_CACHE alone if set, else beside the data
    then ~/.cache/softmaxlab/decoded (used when the data dir is read-only)."""
    env = os.environ.get(ENV_CACHE, "")
    if env:
        return [Path(env).expanduser()]
    return [data_dir, Path.home() / ".cache" / "softmaxlab" / "decoded"]


def _find(data_dir: Path, name: str) -> Path | None:
    """`name` or `name.gz` in data_dir; the raw file wins (no decompression). A data dir that is a file, or a
    folder under a file's name, is an error: downloading over it could not help."""
    if data_dir.exists() and not data_dir.is_dir():
        raise SoftmaxlabError(f"the data dir {data_dir} is a file, not a folder; {_WHERE}")
    for p in (data_dir / name, data_dir / f"{name}.gz"):
        if p.is_file():
            return p
    for p in (data_dir / name, data_dir / f"{name}.gz"):
        if p.exists():
            raise SoftmaxlabError(f"{p} is a folder, not the IDX file; remove it and put the file {name} "
                                  f"(raw or .gz) there")
    return None


def _atomic_write(d: Path, final: str, write) -> Path:
    """write(fileobj) into a temp file in d, fsync, chmod 644, os.replace to d/final: never partial."""
    fd, tmp = tempfile.mkstemp(dir=d, prefix=f".{final}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, d / final)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return d / final


# ----------------------------------------------------------------------------------------------------------
# Cache of decoded arrays, keyed by the payload's sha256


def cache_key(sha256: str) -> str:
    return f"{sha256[:16]}.npy"


def _cache_get(dirs: Sequence[Path], sha256: str, shape: tuple[int, ...]) -> np.ndarray | None:
    """The cached array, or None. Files only appear via os.replace, so a complete file with the right shape
    and dtype holds the verified payload; anything unreadable is ignored (and rebuilt by the caller)."""
    for d in dirs:
        p = d / cache_key(sha256)
        if not p.is_file():
            continue
        try:
            arr = np.load(p, allow_pickle=False)
        except (OSError, ValueError, EOFError):
            continue
        if arr.dtype == np.uint8 and arr.shape == shape and arr.flags.c_contiguous:
            return arr
    return None


def _cache_put(dirs: Sequence[Path], sha256: str, arr: np.ndarray) -> Path | None:
    """Write to the first writable cache dir; the cache is an optimisation, so failure is not an error."""
    for d in dirs:
        try:
            d.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if not _writable(d):
            continue
        try:
            return _atomic_write(d, cache_key(sha256), lambda f: np.save(f, arr, allow_pickle=False))
        except OSError:
            continue
    return None


# ----------------------------------------------------------------------------------------------------------
# Download


def _mirrors(mirrors: Sequence[str] | None) -> list[str]:
    if mirrors is None:
        env = os.environ.get(ENV_MIRRORS, "")
        mirrors = [m.strip() for m in env.split(",") if m.strip()] if env else MIRRORS
    return [m if m.endswith("/") else m + "/" for m in mirrors]


def _ensure_writable_dir(data_dir: Path) -> None:
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SoftmaxlabError(
            f"cannot create the data dir {data_dir} ({e.strerror or e}); {_WHERE}, or a writable one"
        ) from None
    if not _writable(data_dir):
        raise SoftmaxlabError(
            f"data dir {data_dir} is not writable, cannot download MNIST into it; {_WHERE}, or a writable one"
        )


TIMEOUT = 5.0  # seconds per socket operation with a mirror: short, so an offline machine hears so quickly


class MirrorsUnreachable(SoftmaxlabError):
    """No mirror answered at all (no network, DNS, refused, timed out): load_mnist says so once."""


def _unreachable(e: BaseException) -> bool:
    """A failure to reach the server (not an answer from it, such as a 404 or bad bytes)."""
    if isinstance(e, urllib.error.HTTPError):
        return False
    return isinstance(e, (urllib.error.URLError, TimeoutError, ConnectionError, socket.gaierror))


def _fetch(url: str, timeout: float, limit: int) -> bytes:
    """GET url; more than `limit` bytes is an error (a wrong URL can serve anything)."""
    req = urllib.request.Request(url, headers={"User-Agent": "softmaxlab"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        size = r.headers.get("Content-Length", "")
        body = r.read(limit + 1)
    if len(body) > limit:
        raise ValueError(f"more than {limit} bytes")
    if size.isdigit() and int(size) != len(body):  # http.client returns a cut-off body without complaint
        raise ValueError(f"incomplete download, {len(body)} of {size} bytes")
    return body


def download_file(
    name: str,
    data_dir: Path,
    sha256: str,
    nbytes: int,
    mirrors: Sequence[str] | None = None,
    timeout: float = TIMEOUT,
) -> np.ndarray:
    """Fetch `<mirror><name>.gz` from each mirror in turn, verify the decoded payload, then place it as
    data_dir/<name>.gz with an atomic rename. Returns the decoded array. MirrorsUnreachable if none answered."""
    _ensure_writable_dir(data_dir)
    failures, reached = [], False
    urls = [f"{mirror}{name}.gz" for mirror in _mirrors(mirrors)]
    for url in urls:
        try:
            raw = _fetch(url, timeout, limit=_cap(nbytes))
            arr = _verify(_decode(raw, url, limit=_cap(nbytes)), name, sha256, nbytes, url)
        except SoftmaxlabError as e:
            failures.append(" ".join(str(e).split(";")[0].split()))
            reached = True
            continue
        except (OSError, http.client.HTTPException, ValueError) as e:
            failures.append(f"{url}: {' '.join(str(e).split()) or type(e).__name__}")
            reached = reached or not _unreachable(e)
            continue
        try:
            _atomic_write(data_dir, f"{name}.gz", lambda f, raw=raw: f.write(raw))
        except OSError as e:
            raise SoftmaxlabError(
                f"cannot write {data_dir / (name + '.gz')} ({e.strerror or e}); {_WHERE}, or a writable one"
            ) from None
        return arr
    names = ", ".join(MNIST_FILES)
    if urls and not reached:
        raise MirrorsUnreachable(f"no MNIST mirror answered ({len(urls)} tried, {timeout:g} s time-out)")
    raise SoftmaxlabError(
        f"could not download {name} ({' | '.join(failures) or 'no mirrors given'}); put the four files "
        f"{names} (raw or .gz) in {data_dir}, or {_WHERE}"
    )


# ----------------------------------------------------------------------------------------------------------
# Loading


@dataclass(frozen=True, eq=False)
class Mnist:
    """The four MNIST arrays as uint8 tensors, pixels 0..255, labels 0..9."""

    train_images: torch.Tensor
    """(60000, 28, 28) uint8."""
    train_labels: torch.Tensor
    """(60000,) uint8."""
    test_images: torch.Tensor
    """(10000, 28, 28) uint8."""
    test_labels: torch.Tensor
    """(10000,) uint8."""

    def split(self, n_val: int = 10000, seed: int = 0) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """See `mnist_split`."""
        return mnist_split(self, n_val=n_val, seed=seed)


def _load_one(
    data_dir: Path,
    name: str,
    sha256: str,
    nbytes: int,
    download_ok: bool,
    mirrors: Sequence[str] | None,
    timeout: float,
    cache: bool,
) -> np.ndarray:
    shape = _expected_shape(name, nbytes)
    dirs = _cache_dirs(data_dir)
    src = _find(data_dir, name)
    if src is None:
        if not download_ok:
            raise SoftmaxlabError(
                f"{name} not found in {data_dir} (looked for {name} and {name}.gz); {_WHERE}, or download"
            )
        arr = download_file(name, data_dir, sha256, nbytes, mirrors, timeout)
    else:
        arr = _cache_get(dirs, sha256, shape) if cache else None
        if arr is not None:
            return arr
        arr = _verify(_decode(_read_file(src), str(src), limit=_cap(nbytes)), name, sha256, nbytes, str(src))
    arr = arr.copy()  # frombuffer over bytes is read-only; torch wants writable memory
    if cache:
        _cache_put(dirs, sha256, arr)
    return arr


def load_mnist(
    data_dir: str | os.PathLike | None = None,
    *,
    download: bool = True,
    mirrors: Sequence[str] | None = None,
    timeout: float = TIMEOUT,
    files: Mapping[str, tuple[str, int]] | None = None,
    cache: bool = True,
) -> Mnist:
    """Load (downloading what is missing, if allowed) and verify the four files; see the module docstring.

    `files` maps each of the four MNIST names to (sha256 of decoded payload, its length); it defaults to
    MNIST_FILES and exists so tests can use small files. `mirrors` defaults to $SOFTMAXLAB_MNIST_MIRRORS
    (comma-separated) or MIRRORS. `timeout` is seconds per socket operation.
    """
    files = MNIST_FILES if files is None else files
    if set(files) != set(MNIST_FILES):
        raise SoftmaxlabError(f"files must name exactly {sorted(MNIST_FILES)}; got {sorted(files)}")
    d = resolve_data_dir(data_dir)
    try:
        t = {
            name: torch.from_numpy(_load_one(d, name, sha, n, download, mirrors, timeout, cache))
            for name, (sha, n) in files.items()
        }
    except MirrorsUnreachable as e:  # offline: one message, not one per mirror and file
        missing = [name for name in files if _find(d, name) is None]
        what = ("MNIST is" if len(missing) == len(files)
                else f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'}")
        raise SoftmaxlabError(
            f"{what} not in {d} and {e}: put the four files {', '.join(files)} (raw or .gz) in {d}, or set "
            f"{ENV_DATA} (or --data-dir) to the folder that holds them; then verify them with: softmaxlab data check"
        ) from None
    for images, labels in ((TRAIN_IMAGES, TRAIN_LABELS), (TEST_IMAGES, TEST_LABELS)):
        if len(t[images]) != len(t[labels]):
            raise SoftmaxlabError(
                f"{d}: {images} has {len(t[images])} items, {labels} {len(t[labels])}; fix the files table"
            )
    return Mnist(t[TRAIN_IMAGES], t[TRAIN_LABELS], t[TEST_IMAGES], t[TEST_LABELS])


def check(
    data_dir: str | os.PathLike | None = None,
    download: bool = False,
    *,
    mirrors: Sequence[str] | None = None,
    timeout: float = TIMEOUT,
    files: Mapping[str, tuple[str, int]] | None = None,
) -> list[dict]:
    """Verify each file from scratch (no cache): one dict per file with name, path (None if missing),
    sha256 and bytes of the decoded payload (None if unreadable), ok, error (the message, or None) and
    reason (a few words for the table: missing, truncated, wrong checksum, not IDX, ...)."""
    files = MNIST_FILES if files is None else files
    d = resolve_data_dir(data_dir)
    rows, offline = [], None
    for name, (sha, nbytes) in files.items():
        row = {"name": name, "path": None, "sha256": None, "bytes": None, "ok": False, "error": None,
               "reason": None, "expected_bytes": nbytes}
        try:
            src = _find(d, name)
            if src is None and download and offline is None:
                try:
                    download_file(name, d, sha, nbytes, mirrors, timeout)
                except MirrorsUnreachable as e:
                    offline = e  # the other files would wait on the same dead mirrors: try no more
                    raise
                src = _find(d, name)
            if src is None:
                why = f" and {offline}" if offline is not None else ""
                raise SoftmaxlabError(f"{name} not found in {d} (looked for {name} and {name}.gz){why}; {_WHERE}")
            row["path"] = str(src)
            payload = _decode(_read_file(src), str(src), limit=_cap(nbytes))
            row["sha256"], row["bytes"] = hashlib.sha256(payload).hexdigest(), len(payload)
            _verify(payload, name, sha, nbytes, str(src))
            row["ok"] = True
        except SoftmaxlabError as e:
            row["error"], row["reason"] = str(e), _reason(str(e), row)
        rows.append(row)
    return rows


# (what the message says, the table's words), first match wins; the messages are this module's own
_REASONS = (
    ("is a file, not a folder", "the data dir is a file"),
    ("is a folder, not the IDX file", "a folder, not a file"),
    ("not found in", "missing"),
    ("no MNIST mirror answered", "missing (no mirror answered)"),
    ("could not download", "missing (download failed)"),
    ("cannot read", "unreadable"),
    (": only 0 bytes", "empty"),
    ("not an IDX file", "not IDX (too short)"),
    ("wrong magic number", "not IDX (wrong magic number: another file?)"),
    ("truncated", "truncated"),
    ("corrupt gzip", "corrupt gzip (truncated or damaged)"),
    ("decodes to over", "too large (wrong file?)"),
    ("trailing bytes", "trailing bytes after the data"),
    ("items are", "wrong item shape"),
    ("header says", "wrong item count"),
    ("sha256", "wrong checksum"),
)


def _reason(msg: str, row: dict) -> str:
    for needle, words in _REASONS:
        if needle in msg:
            if words == "truncated" and row["bytes"] is not None:
                return f"truncated ({row['bytes']:,} of {row['expected_bytes']:,} bytes)"
            return words
    return msg.split(";")[0]


def check_report(rows: list[dict], data_dir: Path) -> tuple[list[str], str | None]:
    """`data check`'s table, one line per file, and the error line's message (None if all are ok)."""
    lines = []
    for r in rows:
        shown = Path(r["path"]).name if r["path"] else r["name"]
        if r["ok"]:
            lines.append(f"ok  {shown:<26} {r['bytes']:>10,} bytes  sha256 {r['sha256']}")
        else:
            lines.append(f"BAD {shown:<26} {r['reason']}")
    bad = [r for r in rows if not r["ok"]]
    if not bad:
        return lines, None
    absent = all(r["path"] is None for r in bad)
    if any(r["reason"] == "the data dir is a file" for r in bad):
        fix = f"{data_dir} is a file: {_WHERE}"
    elif absent and len(bad) == len(rows):
        fix = (f"put the four files (raw or .gz) in {data_dir}, or set {ENV_DATA} (or --data-dir) to the folder "
               f"that holds them")
    else:
        it, copies = ("it", "a good copy") if len(bad) == 1 else ("them", "good copies")
        fix = f"replace {it} in {data_dir} with {copies} (or delete {it} and run softmaxlab data check --download)"
    return lines, f"{len(bad)} of the {len(rows)} MNIST files failed verification (see above): {fix}, then re-run " \
                  f"softmaxlab data check"


# ----------------------------------------------------------------------------------------------------------
# Split and conversion


def split_indices(
    n_total: int = 60000, n_val: int = 10000, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """The indices of random_split(range(n_total), [n_total - n_val, n_val], Generator().manual_seed(seed)):
    torch draws randperm(n_total) with that generator and slices it in order, train first."""
    if not (isinstance(n_total, int) and isinstance(n_val, int) and 0 <= n_val <= n_total):
        raise SoftmaxlabError(f"bad split n_val={n_val!r} of n_total={n_total!r}; need 0 <= n_val <= n_total")
    perm = torch.randperm(n_total, generator=torch.Generator().manual_seed(seed))  # int64
    n_train = n_total - n_val
    return perm[:n_train].clone(), perm[n_train:].clone()


def mnist_split(m: Mnist, n_val: int = 10000, seed: int = 0) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{'train', 'val', 'test'} -> (images uint8 (N, 28, 28), labels uint8 (N,)); train/val as the
    assignment's random_split(train_all, [50000, 10000], torch.Generator().manual_seed(0))."""
    train_idx, val_idx = split_indices(len(m.train_images), n_val, seed)
    return {
        "train": (m.train_images[train_idx], m.train_labels[train_idx]),
        "val": (m.train_images[val_idx], m.train_labels[val_idx]),
        "test": (m.test_images, m.test_labels),
    }


def to_float(images: torch.Tensor, normalize: bool = False) -> torch.Tensor:
    """uint8 (N, 28, 28) or (N, 784) -> float32 (N, 784): pixels / 255 (as ToTensor), then optionally
    (x - MEAN) / STD (as Normalize((0.1307,), (0.3081,)))."""
    if images.dtype != torch.uint8 or images.dim() not in (2, 3) or images.shape[1:].numel() != PIXELS:
        raise SoftmaxlabError(
            f"to_float wants uint8 images of {PIXELS} pixels each, got {images.dtype} {tuple(images.shape)}; "
            "pass the uint8 tensors from load_mnist"
        )
    x = images.reshape(len(images), PIXELS).to(torch.float32).div(255)
    return x.sub(MEAN).div(STD) if normalize else x

