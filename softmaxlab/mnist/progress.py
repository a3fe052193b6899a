"""`reproduce`'s overall progress line on a terminal: runs done of N, time elapsed, an ETA from the runs finished.

Progress is read from the records, not from the processes: a run is done when its result.json exists, whoever
(this process, a helper worker, another sweep on the same --out) trained it. The ETA counts only runs finished
by this invocation (a resumed study's old runs took no time now): elapsed / finished * left, which already
includes the parallelism of the workers. Quiet unless stderr is a terminal, and in CI and with --json.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from pathlib import Path


def should_show(stream=None, json_out: bool = False, env=None) -> bool:
    """On a terminal only: not piped, not in CI (CI=true), not when the output is JSON."""
    stream = sys.stderr if stream is None else stream
    env = os.environ if env is None else env
    ci = env.get("CI", "").strip().lower() in ("1", "true", "yes")
    return not json_out and not ci and bool(getattr(stream, "isatty", lambda: False)())


def hms(seconds: float) -> str:
    """7 -> '7s', 125 -> '2m05s', 3725 -> '1h02m'."""
    s = int(round(max(seconds, 0)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def line(done: int, total: int, elapsed_s: float, finished_here: int) -> str:
    """'runs 5/27 done, 3m10s elapsed, ETA 11m40s'; the ETA waits for the first run this invocation finishes."""
    left = total - done
    if left <= 0:
        eta = "all runs done"
    elif finished_here <= 0:
        eta = "ETA after the first run"
    else:
        eta = f"ETA {hms(elapsed_s / finished_here * left)}"
    return f"runs {done}/{total} done, {hms(elapsed_s)} elapsed, {eta}"


@contextlib.contextmanager
def study_progress(out: Path, run_ids: list[str], show: bool, stream=None, every_s: float = 1.0):
    """While the block runs, redraw the line every `every_s` s on `stream` (stderr) if `show`.

    The line is drawn then the cursor goes back to its start ('\\r'), so any output printed meanwhile (the
    `done ...` lines of the workers) overwrites it instead of running on after it; it is redrawn next tick."""
    if not show:
        yield
        return
    stream = sys.stderr if stream is None else stream
    paths = [Path(out) / "runs" / rid / "result.json" for rid in dict.fromkeys(run_ids)]
    before = sum(p.exists() for p in paths)
    t0, stop = time.monotonic(), threading.Event()

    def draw():
        done = sum(p.exists() for p in paths)
        stream.write(f"\x1b[K{line(done, len(paths), time.monotonic() - t0, done - before)}\r")
        stream.flush()

    def tick():
        while not stop.wait(every_s):
            draw()

    draw()
    thread = threading.Thread(target=tick, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        draw()
        stream.write("\n")
        stream.flush()
