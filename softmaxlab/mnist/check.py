"""`softmaxlab data check`: verify the four MNIST files from scratch and report one row per file (ok, or BAD
and why), then one error line that says what to do."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..errors import SoftmaxlabError
from . import data


def check(data_dir: str | os.PathLike | None = None, download: bool = False, *,
          mirrors: Sequence[str] | None = None, timeout: float = data.TIMEOUT,
          files: Mapping[str, tuple[str, int]] | None = None) -> list[dict]:
    """Verify each file from scratch (no cache): one dict per file with name, path (None if missing),
    sha256 and bytes of the decoded payload (None if unreadable), ok, error (the message, or None) and
    reason (a few words for the table: missing, truncated, wrong checksum, not IDX, ...)."""
    files = data.MNIST_FILES if files is None else files  # looked up now: tests point it at small files
    d = data.resolve_data_dir(data_dir)
    rows, offline = [], None
    for name, (sha, nbytes) in files.items():
        row = {"name": name, "path": None, "sha256": None, "bytes": None, "ok": False, "error": None,
               "reason": None, "expected_bytes": nbytes}
        try:
            src = data._find(d, name)
            if src is None and download and offline is None:
                try:
                    data.download_file(name, d, sha, nbytes, mirrors, timeout)
                except data.MirrorsUnreachable as e:
                    offline = e  # the other files would wait on the same dead mirrors: try no more
                    raise
                src = data._find(d, name)
            if src is None:
                why = f" and {offline}" if offline is not None else ""
                raise SoftmaxlabError(f"{name} not found in {d} (looked for {name} and {name}.gz){why}; {data._WHERE}")
            row["path"] = str(src)
            payload = data._decode(data._read_file(src), str(src), limit=data._cap(nbytes))
            row["sha256"], row["bytes"] = hashlib.sha256(payload).hexdigest(), len(payload)
            data._verify(payload, name, sha, nbytes, str(src))
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
    words = next((words for needle, words in _REASONS if needle in msg), None)
    if words == "truncated" and row["bytes"] is not None:
        return f"truncated ({row['bytes']:,} of {row['expected_bytes']:,} bytes)"
    return words or msg.split(";")[0]


def check_report(rows: list[dict], data_dir: Path) -> tuple[list[str], str | None]:
    """`data check`'s table, one line per file, and the error line's message (None if all are ok)."""
    shown = lambda r: Path(r["path"]).name if r["path"] else r["name"]
    lines = [f"ok  {shown(r):<26} {r['bytes']:>10,} bytes  sha256 {r['sha256']}" if r["ok"]
             else f"BAD {shown(r):<26} {r['reason']}" for r in rows]
    bad = [r for r in rows if not r["ok"]]
    if not bad:
        return lines, None
    absent = all(r["path"] is None for r in bad)
    if any(r["reason"] == "the data dir is a file" for r in bad):
        fix = f"{data_dir} is a file: {data._WHERE}"
    elif absent and len(bad) == len(rows):
        fix = (f"put the four files (raw or .gz) in {data_dir}, or set {data.ENV_DATA} (or --data-dir) to the folder "
               f"that holds them")
    else:
        it, copies = ("it", "a good copy") if len(bad) == 1 else ("them", "good copies")
        fix = f"replace {it} in {data_dir} with {copies} (or delete {it} and run softmaxlab data check --download)"
    return lines, f"{len(bad)} of the {len(rows)} MNIST files failed verification (see above): {fix}, then re-run " \
                  f"softmaxlab data check"
