"""MNIST's four IDX files: their names and checksums, and the decoder from file bytes to a uint8 array.

The source of truth is the sha256 of the *decoded* IDX payload, so a recompressed .gz (or a raw file) is as
good as the original. Every problem raises SoftmaxlabError with a one-line message naming the file and the fix.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import re
import zlib
from pathlib import Path

import numpy as np
import torch

from ..errors import SoftmaxlabError

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

ROWS = COLS = 28
PIXELS = ROWS * COLS

_REFETCH = "delete it (it is downloaded again) or replace it with a good copy"
_RENAME = "check that the right file has this name"


def _bad(source: str, what: str, fix: str = _REFETCH) -> SoftmaxlabError:
    """The one-line error about a file: what is wrong with it, then the fix."""
    return SoftmaxlabError(f"{source}: {what}; {fix}")


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
        raise _bad(source, f"only {len(payload)} bytes, not an IDX file")
    magic = int.from_bytes(payload[:4], "big")
    if magic != want:
        raise _bad(source, f"wrong magic number 0x{magic:08x} (expected 0x{want:08x}, a {ndim}-d ubyte IDX file)",
                   _RENAME)
    head = 4 + 4 * ndim
    if len(payload) < head:
        raise _bad(source, f"truncated IDX header ({len(payload)} bytes)")
    dims = tuple(int.from_bytes(payload[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    need = head + int(np.prod(dims, dtype=object))
    if len(payload) < need:
        raise _bad(source, f"truncated ({len(payload)} bytes, header {dims} needs {need})")
    if len(payload) > need:
        raise _bad(source, f"{len(payload) - need} trailing bytes after the {dims} data")
    return np.frombuffer(payload, dtype=np.uint8, offset=head).reshape(dims)


def _gunzip(raw: bytes, source: str, limit: int | None) -> bytes:
    """Decompress gzip bytes; more than `limit` decoded bytes is an error (no gzip bomb fills memory)."""
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(raw)) as f:
            out = f.read(-1 if limit is None else limit + 1)
    except (OSError, EOFError, zlib.error, ValueError) as e:
        raise _bad(source, f"corrupt gzip ({' '.join(str(e).split()) or type(e).__name__})") from None
    if limit is not None and len(out) > limit:
        raise _bad(source, f"decodes to over {limit} bytes, far more than expected (wrong file?)")
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
        raise _bad(source, f"items are {arr.shape[1:]}, expected {shape[1:]}", _RENAME)
    if arr.shape[0] != shape[0]:
        raise _bad(source, f"header says {arr.shape[0]} items, expected {shape[0]}", _RENAME)
    got = hashlib.sha256(payload).hexdigest()
    if got != sha256:
        raise _bad(source, f"sha256 of the decoded data is {got[:16]}..., expected {sha256[:16]}... "
                           "(corrupt or not MNIST)")
    return arr

