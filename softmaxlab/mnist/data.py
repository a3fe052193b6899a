"""MNIST: find, download, verify and cache the four IDX files (idx.py decodes them); the assignment's split.

Everything is held in memory as uint8 tensors (60000 x 28 x 28 is 47 MB): the IDX reader gives `Mnist`, the
split gives `Data` (three `Split`s of x uint8 (N, 784) and y int64 (N,)), the one shape the trainer takes; it
converts each batch with `to_float`. Every problem raises SoftmaxlabError with a one-line message that names
the file and the fix.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import os
import socket
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import SoftmaxlabError
from .idx import (  # noqa: F401  (the file names are part of this module's API)
    MNIST_FILES,
    PIXELS,
    TEST_IMAGES,
    TEST_LABELS,
    TRAIN_IMAGES,
    TRAIN_LABELS,
    _cap,
    _decode,
    _expected_shape,
    _read_file,
    _verify,
    parse_idx,
    read_idx,
)
from .records import atomic_write

# Each serves `<name>.gz`; tried in this order.
MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)

MEAN = 0.1307  # train pixel mean / 255
STD = 0.3081  # train pixel std / 255

ENV_DATA = "SOFTMAXLAB_DATA"
ENV_CACHE = "SOFTMAXLAB_CACHE"
ENV_MIRRORS = "SOFTMAXLAB_MNIST_MIRRORS"

_WHERE = f"point --data-dir or {ENV_DATA} at a folder holding the four MNIST IDX files (raw or .gz)"
_WRITABLE = f"{_WHERE}, or a writable one"


# ----------------------------------------------------------------------------------------------------------
# Where things live


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """Explicit argument (the CLI's --data-dir), else $SOFTMAXLAB_DATA, else ~/.cache/softmaxlab/mnist."""
    d = (os.fspath(data_dir) if data_dir is not None else "") or os.environ.get(ENV_DATA, "")
    return Path(d).expanduser() if d else Path.home() / ".cache" / "softmaxlab" / "mnist"


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
    return [Path(env).expanduser()] if env else [data_dir, Path.home() / ".cache" / "softmaxlab" / "decoded"]


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


# ----------------------------------------------------------------------------------------------------------
# Cache of decoded arrays, keyed by the payload's sha256


def cache_key(sha256: str) -> str:
    return f"{sha256[:16]}.npy"


def _cache_get(dirs: Sequence[Path], sha256: str, shape: tuple[int, ...]) -> np.ndarray | None:
    """The cached array, or None. Files only appear via os.replace, so a complete file with the right shape
    and dtype holds the verified payload; anything unreadable is ignored (and rebuilt by the caller)."""
    for d in dirs:
        try:
            arr = np.load(d / cache_key(sha256), allow_pickle=False)
        except (OSError, ValueError, EOFError):  # absent, a folder, or not a .npy
            continue
        if arr.dtype == np.uint8 and arr.shape == shape and arr.flags.c_contiguous:
            return arr
    return None


def _cache_put(dirs: Sequence[Path], sha256: str, arr: np.ndarray) -> Path | None:
    """Write to the first writable cache dir; the cache is an optimisation, so failure is not an error."""
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    for d in dirs:
        with contextlib.suppress(OSError, SoftmaxlabError):
            d.mkdir(parents=True, exist_ok=True)
            if _writable(d):
                atomic_write(d / cache_key(sha256), buf.getvalue())
                return d / cache_key(sha256)
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
        raise SoftmaxlabError(f"cannot create the data dir {data_dir} ({e.strerror or e}); {_WRITABLE}") from None
    if not _writable(data_dir):
        raise SoftmaxlabError(f"data dir {data_dir} is not writable, cannot download MNIST into it; {_WRITABLE}")


TIMEOUT = 5.0  # seconds per socket operation with a mirror: short, so an offline machine hears so quickly


class MirrorsUnreachable(SoftmaxlabError):
    """No mirror answered at all (no network, DNS, refused, timed out): load_mnist says so once."""


def _unreachable(e: BaseException) -> bool:
    """A failure to reach the server (not an answer from it, such as a 404 or bad bytes)."""
    reach = (urllib.error.URLError, TimeoutError, ConnectionError, socket.gaierror)
    return isinstance(e, reach) and not isinstance(e, urllib.error.HTTPError)


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
        except (OSError, http.client.HTTPException, ValueError) as e:
            failures.append(f"{url}: {' '.join(str(e).split()) or type(e).__name__}")
            reached = reached or not _unreachable(e)
        else:
            atomic_write(data_dir / f"{name}.gz", raw, fix=_WRITABLE)
            return arr
    if urls and not reached:
        raise MirrorsUnreachable(f"no MNIST mirror answered ({len(urls)} tried, {timeout:g} s time-out)")
    raise SoftmaxlabError(
        f"could not download {name} ({' | '.join(failures) or 'no mirrors given'}); put the four files "
        f"{', '.join(MNIST_FILES)} (raw or .gz) in {data_dir}, or {_WHERE}"
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


@dataclass(frozen=True, eq=False)
class Split:
    """One split held in memory: x uint8 (N, 784) pixels 0..255, y int64 (N,) labels 0..9."""

    x: torch.Tensor
    y: torch.Tensor

    def to(self, device) -> Split:
        return Split(self.x.to(device), self.y.to(device))

    def head(self, n: int | None) -> Split:
        return self if n is None else Split(self.x[:n], self.y[:n])


@dataclass(frozen=True, eq=False)
class Data:
    """What the trainer takes: the assignment's training, validation and test splits."""

    train: Split
    val: Split
    test: Split


def load_mnist(data_dir: str | os.PathLike | None = None, *, download: bool = True,
               mirrors: Sequence[str] | None = None, timeout: float = TIMEOUT,
               files: Mapping[str, tuple[str, int]] | None = None, cache: bool = True) -> Mnist:
    """Load (downloading what is missing, if allowed) and verify the four files; see the module docstring.

    `files` maps each of the four MNIST names to (sha256 of decoded payload, its length); it defaults to
    MNIST_FILES and exists so tests can use small files. `mirrors` defaults to $SOFTMAXLAB_MNIST_MIRRORS
    (comma-separated) or MIRRORS. `timeout` is seconds per socket operation.
    """
    files = MNIST_FILES if files is None else files
    if set(files) != set(MNIST_FILES):
        raise SoftmaxlabError(f"files must name exactly {sorted(MNIST_FILES)}; got {sorted(files)}")
    d = resolve_data_dir(data_dir)
    dirs = _cache_dirs(d)

    def load_one(name: str, sha256: str, nbytes: int) -> np.ndarray:
        shape = _expected_shape(name, nbytes)
        src = _find(d, name)
        if src is None:
            if not download:
                raise SoftmaxlabError(
                    f"{name} not found in {d} (looked for {name} and {name}.gz); {_WHERE}, or download"
                )
            arr = download_file(name, d, sha256, nbytes, mirrors, timeout)
        else:
            arr = _cache_get(dirs, sha256, shape) if cache else None
            if arr is not None:
                return arr
            arr = _verify(_decode(_read_file(src), str(src), limit=_cap(nbytes)), name, sha256, nbytes, str(src))
        arr = arr.copy()  # frombuffer over bytes is read-only; torch wants writable memory
        if cache:
            _cache_put(dirs, sha256, arr)
        return arr

    try:
        t = {name: torch.from_numpy(load_one(name, sha, n)) for name, (sha, n) in files.items()}
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


def mnist_split(m: Mnist, n_val: int = 10000, seed: int = 0) -> Data:
    """Train/val as the assignment's random_split(train_all, [50000, 10000], torch.Generator().manual_seed(0)),
    and the test set; images flattened to (N, 784) (a view), labels as int64."""
    train_idx, val_idx = split_indices(len(m.train_images), n_val, seed)
    flat = lambda x: x.reshape(len(x), PIXELS)
    return Data(Split(flat(m.train_images[train_idx]), m.train_labels[train_idx].long()),
                Split(flat(m.train_images[val_idx]), m.train_labels[val_idx].long()),
                Split(flat(m.test_images), m.test_labels.long()))


def load_data(data_dir=None) -> Data:
    """The assignment's three splits of the verified MNIST files (see load_mnist)."""
    return mnist_split(load_mnist(data_dir))


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
