"""Sampled softmax against full softmax, adaptive softmax and TensorFlow: time and peak memory of one
forward+backward step of the output layer (logits from x (B, d) and a class table W (C, d), b (C,)).

    python benchmarks/sampled.py                 # headline config + the default grid (~10-15 min, 2 cores)
    python benchmarks/sampled.py --quick         # tiny sizes, a smoke run of the harness (seconds)
    python benchmarks/sampled.py --no-grid       # headline only: C=1e6, d=128, B=1024, K=4096
    python benchmarks/sampled.py --threads 1     # torch and TF thread count (default: each library's own)

Methods (every step builds the loss and its gradients for W, b and x; labels are log-uniform (Zipf) draws):
  full          F.cross_entropy(x @ W.T + b, y), eager                     dense (C, d) gradient
  full_compile  the same under torch.compile (compile time excluded)     dense
  adaptive      nn.AdaptiveLogSoftmaxWithLoss, cutoffs C/50, C/5, div 4   dense
  naive         a typical gather-based port (W[ids], -log Q, masked hits, cross-entropy, autograd), headline only
  sl_default    SampledSoftmaxLoss(C, d, K) as a user gets it: importance, log-uniform with replacement, dense
                .grad (the module's reused buffer), zero_grad() (set_to_none=True) before every step
  sl_sparse     SampledSoftmaxLoss(C, d, K, sparse=True): sparse COO .grad, what IndexedSlices are to TF
  sl_logq       functional sampled_softmax_loss, estimator='logq', log-uniform unique: TF's algorithm,
                sparse=True, headline only
  sl_logq_dense the same with a fresh dense (C, d) gradient per step (the functional default), headline only
  sl_default_sgd / sl_default_adam  sl_default plus optimizer.step() of SGD (lr 0.1) / Adam, headline only
  tf            tf.nn.sampled_softmax_loss (its default log-uniform unique sampler) in a tf.function; TF returns
                IndexedSlices for W and b, which is what sparse=True is to softmaxlab
Time: each (C, d, B) group runs in a fresh worker process; the methods are interleaved in rounds
(A B C A B C ...), every burst starts with untimed steps, at least one and for at least SWITCH_S = 50 ms
(they absorb a method switch: TF's threads go on spinning after its steps, cold caches), and the table
reports the median per-step time over all rounds (min alongside).
Cells slower than 1 s per step are timed once (after compilation for full_compile). Ratios come from one
run. Threads: by default each library keeps its own default (torch: one per core; TF: its own pools), as a
user gets them; --threads N sets torch.set_num_threads and TF's intra/inter-op pools to N for every method.
--passive runs the workers with OMP_WAIT_POLICY=PASSIVE: on a busy machine, spinning idle OpenMP threads
made torch's steps up to 8x slower; on a quiet one PASSIVE costs torch a thread wake-up per op (2x at
B = K = 256), so the default leaves the policy as the user has it.
Memory: a second worker per group with glibc's mmap threshold at 64 KiB (freed blocks go back to the OS, so
the resident set follows live memory) resets the high-water mark (/proc/self/clear_refs) before each
measured step; "step MB" is peak RSS minus RSS before the step: everything the step allocates, gradients
included, beyond the persistent W, b, x (whose size is reported as "state MB"). TensorFlow keeps freed
memory in its own pool (RSS would hide it), so its step MB is the peak of TF's CPU allocator statistics
(tf.config.experimental.get_memory_info) over the step. Cells slower than 1 s per
step (the big full softmaxes) are not run again there: their peak comes from the timing run's own
high-water mark, exact for them since all their big buffers are mmapped (above glibc's 32 MB ceiling).
Full softmax and adaptive softmax do not depend on K; they are measured once per (C, d, B) and skipped
when the estimated logits + gradients exceed --budget-gb (or the headline's --headline-budget-gb, checked
against MemAvailable).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from common import machine, table  # noqa: E402

from softmaxlab.sampled import SampledSoftmaxLoss, sampled_softmax_loss  # noqa: E402
from softmaxlab.samplers import LogUniformSampler  # noqa: E402

HEADLINE = (10**6, 128, 1024, 4096)  # C, d, B, K of the targets
GRID_METHODS = ("full", "full_compile", "adaptive", "sl_default", "sl_sparse", "tf")
HEADLINE_METHODS = ("full", "full_compile", "adaptive", "naive", "sl_default", "sl_sparse", "sl_logq",
                    "sl_logq_dense", "tf", "sl_default_sgd", "sl_default_adam")
PER_GROUP = {"full", "full_compile", "adaptive"}  # K-independent: measured once per (C, d, B)
SLOW_S = 1.0  # a burst whose warm-up step took longer is timed once per round, in at most 2 rounds
SWITCH_S = 0.05  # untimed warm-up per burst: one step, or more until this long (TF's threads spin on after a step)


@dataclass(frozen=True)
class BenchConfig:
    """One benchmark run."""

    Cs: tuple[int, ...] = (10**4, 10**5, 10**6)
    """Class counts of the grid."""
    ds: tuple[int, ...] = (128, 512)
    """Feature dimensions of the grid."""
    Bs: tuple[int, ...] = (256, 2048)
    """Batch sizes of the grid."""
    Ks: tuple[int, ...] = (256, 2048, 8192)
    """Numbers of sampled classes of the grid."""
    headline: tuple[int, int, int, int] | None = HEADLINE
    """(C, d, B, K) measured with every method, or None."""
    grid: bool = True
    """Run the grid."""
    threads: int | None = None
    """torch and TensorFlow threads in every worker; None: each library's default."""
    passive: bool = False
    """OMP_WAIT_POLICY=PASSIVE in the workers (for a busy machine)."""
    rounds: int = 3
    """Interleaved rounds per group."""
    steps: int = 3
    """Timed steps per burst (fewer for slow methods)."""
    budget_gb: float = 6.0
    """Skip full/compiled softmax when logits + gradients are estimated above this (grid)."""
    headline_budget_gb: float = 14.0
    """The same for the headline config (also needs that much MemAvailable + 2 GB)."""
    tf: bool = True
    """Include TensorFlow when it is installed."""
    compile: bool = True
    """Include torch.compile of the full softmax."""
    memory: bool = True
    """Run the memory workers."""
    seed: int = 0
    """Seed of W, x and the labels."""
    json_path: str = "benchmarks/sampled.json"
    """Where the raw results go (atomic write)."""
    plot_path: str | None = "benchmarks/sampled.png"
    """Figure, or None."""


# ----------------------------------------------------------------------------------------------------------
# problems and methods
# ----------------------------------------------------------------------------------------------------------


@dataclass
class Problem:
    C: int
    d: int
    B: int
    W: nn.Parameter
    b: nn.Parameter
    x: torch.Tensor
    y: torch.Tensor
    tf_vars: dict = field(default_factory=dict)
    heads: dict = field(default_factory=dict)


def make_problem(C: int, d: int, B: int, seed: int) -> Problem:
    g = torch.Generator().manual_seed(seed)
    W = nn.Parameter(torch.randn(C, d, generator=g) * d**-0.5)
    b = nn.Parameter(torch.zeros(C))
    x = torch.randn(B, d, generator=g).requires_grad_()
    y = LogUniformSampler(C).sample(B, generator=g).ids  # Zipfian labels, class 0 the most frequent
    return Problem(C, d, B, W, b, x, y)


def full_softmax_bytes(C: int, d: int, B: int) -> int:
    """Logits, log-softmax and the logits' gradient (B, C), plus the dense (C, d) gradient, in float32."""
    return 4 * (3 * B * C + C * d)


def _zero(p: Problem):
    p.W.grad = p.b.grad = p.x.grad = None


def _full_loss(x, W, b, y):
    return F.cross_entropy(x @ W.T + b, y)


_COMPILED = None


def build(method: str, p: Problem, K: int, seed: int):
    """A step() doing one forward+backward of `method`; gradients are reset first (they count as the step's)."""
    g = torch.Generator().manual_seed(seed + 1)
    sampler = LogUniformSampler(p.C)
    if method in ("full", "full_compile"):
        global _COMPILED
        if method == "full_compile" and _COMPILED is None:
            _COMPILED = torch.compile(_full_loss)
        f = _full_loss if method == "full" else _COMPILED

        def step():
            _zero(p)
            f(p.x, p.W, p.b, p.y).backward()
        return step
    if method == "adaptive":
        cut = sorted({max(1, p.C // 50), max(2, p.C // 5)})
        torch.manual_seed(seed)
        m = nn.AdaptiveLogSoftmaxWithLoss(p.d, p.C, cut, div_value=4.0)

        def step():
            m.zero_grad(set_to_none=True)
            p.x.grad = None
            m(p.x, p.y).loss.backward()
        return step
    if method.startswith("sl_default") or method == "sl_sparse":
        if method not in p.heads:  # one head per method for every K: one reused (C, d) gradient buffer
            head = p.heads[method] = SampledSoftmaxLoss(p.C, p.d, K, sparse=method == "sl_sparse")
            head.weight.data, head.bias.data = p.W.data, p.b.data  # share the class table: no second copy
        head = p.heads[method]
        opt = None
        if method == "sl_default_sgd":
            opt = torch.optim.SGD(head.parameters(), lr=0.1)
        elif method == "sl_default_adam":
            opt = torch.optim.Adam(head.parameters(), lr=1e-3)

        def step():
            head.num_sampled = K
            head.zero_grad()  # set_to_none=True, PyTorch's default
            p.x.grad = None
            head(p.x, p.y, generator=g).backward()
            if opt is not None:
                opt.step()
        return step
    if method.startswith("sl_logq"):
        sparse = not method.endswith("_dense")

        def step():
            _zero(p)
            sampled_softmax_loss(p.x, p.W, p.b, p.y, K, sampler=sampler, estimator="logq", unique=True,
                                 sparse=sparse, generator=g).backward()
        return step
    if method == "naive":
        def step():  # what the public ports do: autograd through W[ids] (dense (C, d) gradient)
            _zero(p)
            ids = sampler.sample(K, generator=g).ids
            logq_s = torch.log(K * sampler.probs(ids)).float()
            logq_t = torch.log(K * sampler.probs(p.y)).float()
            true = (p.x * p.W[p.y]).sum(1) + p.b[p.y] - logq_t  # (B,)
            samp = p.x @ p.W[ids].T + p.b[ids] - logq_s  # (B, K)
            samp = samp.masked_fill(ids[None, :] == p.y[:, None], torch.finfo(torch.float32).min)
            logits = torch.cat([true[:, None], samp], 1)
            F.cross_entropy(logits, torch.zeros(p.B, dtype=torch.long)).backward()
        return step
    if method == "tf":
        import tensorflow as tf

        v = p.tf_vars
        if not v:
            v.update(W=tf.Variable(p.W.detach().numpy()), b=tf.Variable(p.b.detach().numpy()),
                     x=tf.constant(p.x.detach().numpy()), y=tf.constant(p.y.numpy()[:, None]))
        tf.random.set_seed(seed)

        @tf.function
        def tf_step():
            with tf.GradientTape() as tape:
                tape.watch(v["x"])
                loss = tf.reduce_mean(tf.nn.sampled_softmax_loss(v["W"], v["b"], v["y"], v["x"], K, p.C))
            gW, gb, gx = tape.gradient(loss, [v["W"], v["b"], v["x"]])  # IndexedSlices for W and b
            return loss, gW.values, gW.indices, gb.values, gx

        return tf_step  # eager call on CPU: returns computed tensors
    raise ValueError(method)


def _setup_threads(threads: int | None, use_tf: bool):
    if threads is None:
        return
    torch.set_num_threads(threads)
    if use_tf:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)


def tf_available() -> bool:
    return importlib.util.find_spec("tensorflow") is not None


def _tf_version() -> str:
    for dist in ("tensorflow-cpu", "tensorflow"):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    return "unknown"


def _ratio(a, b) -> str:
    """a / b as '123x', '1.23x' or '0.0012x'; '-' when either is missing."""
    if not a or not b:
        return "-"
    r = a / b
    return f"{r:.0f}x" if r >= 10 else f"{r:.2f}x" if r >= 0.1 else f"{r:.2g}x"


# ----------------------------------------------------------------------------------------------------------
# workers (one process per group and kind)
# ----------------------------------------------------------------------------------------------------------


def _cells(methods, Ks):
    """(method, K) cells of a group; K-independent methods once (K = None)."""
    out = [(m, None) for m in methods if m in PER_GROUP]
    out += [(m, K) for K in Ks for m in methods if m not in PER_GROUP]
    return out


def _reset_peak() -> float:
    """Reset the peak RSS (VmHWM) to the current RSS and return the current RSS in MB."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return _rss_mb("VmRSS")


def _rss_mb(key: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(key)


def worker_time(C, d, B, Ks, methods, rounds, steps, seed):
    """Interleaved timing of every cell. A cell slower than SLOW_S per step is timed once (after its first,
    compiling or tracing call for full_compile / tf; eager methods have no warm-up to absorb, their first
    step is the timed one). The peak RSS of each timed step is recorded too (used for the slow cells, whose
    allocations are far above glibc's 32 MB mmap ceiling and so show up exactly in the RSS)."""
    p = make_problem(C, d, B, seed)
    cells = _cells(methods, Ks)
    fns, times, peaks, slow = {}, {c: [] for c in cells}, {c: [] for c in cells}, set()

    def timed(c):
        before = _reset_peak()
        t0 = time.perf_counter()
        fns[c]()
        times[c].append(time.perf_counter() - t0)
        peaks[c].append(_rss_mb("VmHWM") - before)

    for _ in range(rounds):
        for c in cells:
            m, K = c
            if c in slow and times[c]:
                continue
            if c not in fns:
                fns[c] = build(m, p, K or 0, seed)
                if m in ("full_compile", "tf"):
                    t0 = time.perf_counter()
                    fns[c]()  # compilation / tracing
                    if time.perf_counter() - t0 > SLOW_S and m == "full_compile":
                        slow.add(c)
                else:
                    timed(c)  # the first eager step, timed: if it is slow it is the only one
                    if times[c][-1] > SLOW_S:
                        slow.add(c)
                        continue
            if c in slow:
                timed(c)
                continue
            t_end = time.perf_counter() + SWITCH_S
            while True:  # untimed: absorbs the switch from the previous method (TF's threads spin for a while)
                t0 = time.perf_counter()
                fns[c]()
                warm = time.perf_counter() - t0
                if t0 + warm >= t_end or warm > SLOW_S:
                    break
            if warm > SLOW_S:
                slow.add(c)
            n = 1 if warm > SLOW_S else max(1, min(steps, int(1.0 / max(warm, 1e-6))))
            for _ in range(n):
                timed(c)
    return [dict(method=m, C=C, d=d, B=B, K=K, times=t, median_s=statistics.median(t), min_s=min(t),
                 step_mb_inproc=max(peaks[(m, K)]), slow=(m, K) in slow)
            for (m, K), t in times.items()]


def _tf_allocator_peak_mb(step) -> float | None:
    """TensorFlow's own CPU allocator statistics around one step (its pool keeps freed memory, so RSS would
    hide a step's reuse of it); None where this TF build keeps no CPU statistics."""
    import tensorflow as tf

    try:
        tf.config.experimental.reset_memory_stats("CPU:0")
        before = tf.config.experimental.get_memory_info("CPU:0")["current"]
    except (ValueError, RuntimeError):
        return None
    step()
    return (tf.config.experimental.get_memory_info("CPU:0")["peak"] - before) / 2**20


def worker_memory(C, d, B, cells, seed):
    """Peak memory of one step per cell: RSS with glibc's mmap threshold at 64 KiB (set by the parent), or
    TensorFlow's allocator statistics for TF."""
    p = make_problem(C, d, B, seed)
    out = []
    for m, K in cells:
        step = build(m, p, K or 0, seed)
        if m != "full":  # one-time state (compiled code, traced graph, a module) is not the step's
            step()
        _zero(p)
        peak = _tf_allocator_peak_mb(step) if m == "tf" else None
        source = "TF allocator" if peak is not None else "RSS"
        if peak is None:
            before = _reset_peak()
            step()
            peak = _rss_mb("VmHWM") - before
        out.append(dict(method=m, C=C, d=d, B=B, K=K, step_mb=peak, mem_source=source))
        del step
        _zero(p)
    return out


def run_worker(kind: str, group, Ks, methods, cfg: BenchConfig, cells=None) -> list[dict]:
    """Run one worker in a fresh python process and return its records."""
    # PASSIVE: idle OpenMP threads sleep at once instead of spinning; with > 1 thread on a shared machine the
    # spinning workers starve torch's own main thread (8x slower steps here); TF's Eigen pool is not OpenMP
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    if cfg.passive:  # idle OpenMP threads sleep at once: steadier on a busy machine, slower on a quiet one
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if cfg.threads is not None:
        env["OMP_NUM_THREADS"] = str(cfg.threads)
    if kind == "memory":
        env.update(MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.json"
        spec = dict(kind=kind, group=group, Ks=list(Ks), methods=list(methods), rounds=cfg.rounds,
                    steps=cfg.steps, seed=cfg.seed, threads=cfg.threads, out=str(out), cells=cells)
        proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)], env=env,
                              capture_output=True, text=True)
        if proc.returncode != 0 or not out.exists():
            tail = (proc.stderr or proc.stdout)[-2000:]
            print(f"  worker {kind} {group} failed (rc {proc.returncode}):\n{tail}", file=sys.stderr)
            return []
        return json.loads(out.read_text())


def _worker_main(spec_json: str):
    s = json.loads(spec_json)
    _setup_threads(s["threads"], "tf" in s["methods"])
    C, d, B = s["group"]
    if s["kind"] == "time":
        res = worker_time(C, d, B, s["Ks"], s["methods"], s["rounds"], s["steps"], s["seed"])
    else:
        res = worker_memory(C, d, B, [tuple(c) for c in s["cells"]], s["seed"])
    Path(s["out"]).write_text(json.dumps(res))


# ----------------------------------------------------------------------------------------------------------
# orchestration and report
# ----------------------------------------------------------------------------------------------------------


def _mem_available_gb() -> float:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 2**20
    return float("inf")


def group_methods(methods, C, d, B, budget_gb, check_available=False) -> tuple[list[str], list[str]]:
    """Methods to run for a group and notes on the ones skipped for memory."""
    need = full_softmax_bytes(C, d, B) / 2**30
    keep, notes = [], []
    for m in methods:
        if m in ("full", "full_compile"):
            if need > budget_gb:
                notes.append(f"{m} skipped at C={C}, d={d}, B={B}: needs ~{need:.1f} GB > {budget_gb:g} GB")
                continue
            if check_available and _mem_available_gb() < need + 2:
                notes.append(f"{m} skipped at C={C}, d={d}, B={B}: needs ~{need:.1f} GB, only "
                             f"{_mem_available_gb():.1f} GB available")
                continue
        keep.append(m)
    return keep, notes


def run_group(tag, C, d, B, Ks, methods, cfg: BenchConfig, budget, log) -> tuple[list[dict], list[str]]:
    ms, notes = group_methods(methods, C, d, B, budget, check_available=tag == "headline")
    t0, la0 = time.perf_counter(), os.getloadavg()[0]
    recs = run_worker("time", (C, d, B), Ks, ms, cfg)
    # every cell but the slow full softmaxes gets the memory worker (see the module docstring)
    fast = [(r["method"], r["K"]) for r in recs if not (r["slow"] and r["method"] in ("full", "full_compile"))]
    mem = {}
    if cfg.memory and fast:
        mem = {(r["method"], r["K"]): r for r in run_worker("memory", (C, d, B), Ks, ms, cfg, cells=fast)}
    la1 = os.getloadavg()[0]
    state_mb = 4 * (C * d + C + B * d) / 2**20
    for r in recs:
        m = mem.get((r["method"], r["K"]))
        r.update(tag=tag, load=(la0, la1), state_mb=state_mb,
                 step_mb=m["step_mb"] if m else r["step_mb_inproc"],
                 mem_source=f"memory worker, {m['mem_source']}" if m else "timing run, RSS")
    log(f"  {tag} C={C} d={d} B={B}: {len(recs)} cells in {time.perf_counter() - t0:.0f} s, load {la0:.1f}->{la1:.1f}")
    return recs, notes


def _fmt_ms(s):
    return "-" if s is None else (f"{s * 1e3:.0f}" if s >= 0.1 else f"{s * 1e3:.1f}" if s >= 0.01 else f"{s * 1e3:.2f}")


def _fmt_mb(mb):
    return "-" if mb is None else f"{mb:.0f}" if mb >= 10 else f"{mb:.1f}"


def _find(recs, tag, method, C, d, B, K=None):
    for r in recs:
        if r["tag"] == tag and r["method"] == method and (r["C"], r["d"], r["B"]) == (C, d, B) and \
                (r["K"] == K or r["method"] in PER_GROUP):
            return r
    return None


def headline_report(recs, cfg: BenchConfig) -> tuple[str, dict]:
    C, d, B, K = cfg.headline
    rows, by = [], {}
    full = _find(recs, "headline", "full", C, d, B)
    tf_r = _find(recs, "headline", "tf", C, d, B, K)
    for m in HEADLINE_METHODS:
        r = _find(recs, "headline", m, C, d, B, K)
        if r is None:
            continue
        by[m] = r
        vs_full = _ratio(full and full["median_s"], r["median_s"])
        mem_full = _ratio(full and full.get("step_mb"), r.get("step_mb"))
        vs_tf = _ratio(tf_r and tf_r["median_s"], r["median_s"])
        rows.append([m, _fmt_ms(r["median_s"]), _fmt_ms(r["min_s"]), len(r["times"]), _fmt_mb(r.get("step_mb")),
                     _fmt_mb((r.get("step_mb") or 0) + r["state_mb"]) if r.get("state_mb") else "-",
                     vs_full, mem_full, vs_tf])
    hdr = ["method", "median ms", "min ms", "steps", "step MB", "step+state MB", "faster than full",
           "less step memory than full", "speed vs TF"]
    return table(hdr, rows), by


def grid_report(recs) -> str:
    rows = []
    groups = sorted({(r["C"], r["d"], r["B"]) for r in recs if r["tag"] == "grid"})
    for C, d, B in groups:
        Ks = sorted({r["K"] for r in recs if r["tag"] == "grid" and (r["C"], r["d"], r["B"]) == (C, d, B) and r["K"]})
        for K in Ks:
            get = {m: _find(recs, "grid", m, C, d, B, K) for m in GRID_METHODS}
            t = {m: (r["median_s"] if r else None) for m, r in get.items()}
            mem = {m: (r.get("step_mb") if r else None) for m, r in get.items()}
            rows.append([f"{C:.0e}".replace("+0", ""), d, B, K] + [_fmt_ms(t[m]) for m in GRID_METHODS] +
                        [_ratio(t["full"], t["sl_default"]), _ratio(t["tf"], t["sl_default"]),
                         _ratio(t["tf"], t["sl_sparse"]),
                         _fmt_mb(mem["full"]), _fmt_mb(mem["sl_default"]), _fmt_mb(mem["tf"])])
    hdr = ["C", "d", "B", "K"] + [f"{m} ms" for m in GRID_METHODS] + [
        "full / sl_default", "tf / sl_default", "tf / sl_sparse", "full MB", "sl_default MB", "tf MB"]
    return table(hdr, rows)


def plot(recs, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    grid = [r for r in recs if r["tag"] == "grid"]
    ds, Bs = sorted({r["d"] for r in grid}), sorted({r["B"] for r in grid})
    Ks = sorted({r["K"] for r in grid if r["K"]})
    if not grid:
        plt.close(fig)
        return
    d, B, K = ds[0], Bs[0], Ks[len(Ks) // 2]
    for m in GRID_METHODS:
        pts = sorted((r["C"], r["median_s"]) for r in grid if r["method"] == m and r["d"] == d and r["B"] == B
                     and (r["K"] == K or m in PER_GROUP))
        if pts:
            axes[0].plot(*zip(*pts), marker="o", label=m)
    axes[0].set(xscale="log", yscale="log", xlabel="classes C", ylabel="seconds per forward+backward",
                title=f"d={d}, B={B}, K={K}")
    axes[0].legend(fontsize=8)
    for sl in ("sl_default", "sl_sparse"):
        xs, ys = [], []
        for r in grid:
            if r["method"] != sl:
                continue
            tf_r = _find(recs, "grid", "tf", r["C"], r["d"], r["B"], r["K"])
            if tf_r:
                xs.append(r["B"] * r["K"] * r["d"])
                ys.append(tf_r["median_s"] / r["median_s"])
        axes[1].scatter(xs, ys, label=sl, alpha=0.7)
    axes[1].axhline(1, color="k", lw=0.5)
    axes[1].axhline(2, color="k", lw=0.5, ls="--")
    axes[1].set(xscale="log", xlabel="B K d (multiply-adds of one logit matmul)", ylabel="TF time / softmaxlab time",
                title="speed-up over tf.nn.sampled_softmax_loss, every grid cell")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _atomic_write(path: Path, text: str):
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes, 1 round: checks the harness, not speed")
    ap.add_argument("--no-grid", action="store_true")
    ap.add_argument("--no-headline", action="store_true")
    ap.add_argument("--no-tf", action="store_true")
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--threads", type=int, default=None, help="default: each library's own")
    ap.add_argument("--passive", action="store_true", help="OMP_WAIT_POLICY=PASSIVE (a busy machine)")
    ap.add_argument("--rounds", type=int)
    ap.add_argument("--steps", type=int)
    ap.add_argument("--budget-gb", type=float, default=6.0)
    ap.add_argument("--headline-budget-gb", type=float, default=14.0)
    ap.add_argument("--json", default=None, help="results file (default benchmarks/sampled.json)")
    ap.add_argument("--plot", default=None, help="figure (default benchmarks/sampled.png; 'none' to skip)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.worker:
        return _worker_main(a.worker)
    kw = dict(threads=a.threads, passive=a.passive, budget_gb=a.budget_gb, headline_budget_gb=a.headline_budget_gb,
              tf=not a.no_tf and tf_available(), compile=not a.no_compile, memory=not a.no_memory,
              grid=not a.no_grid)
    if a.quick:
        kw.update(Cs=(2000,), ds=(16,), Bs=(32,), Ks=(16, 64), headline=(5000, 16, 64, 32), rounds=1, steps=2,
                  json_path=os.path.join(tempfile.gettempdir(), "softmaxlab_sampled_quick.json"), plot_path=None)
    if a.rounds:
        kw["rounds"] = a.rounds
    if a.steps:
        kw["steps"] = a.steps
    if a.no_headline:
        kw["headline"] = None
    if a.json:
        kw["json_path"] = a.json
    if a.plot:
        kw["plot_path"] = None if a.plot == "none" else a.plot
    cfg = BenchConfig(**kw)
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)  # for the machine line; every worker sets its own
    drop = set() if cfg.tf else {"tf"}
    drop |= set() if cfg.compile else {"full_compile"}
    t_start, load_start = time.perf_counter(), os.getloadavg()
    recs, notes = [], []
    print(f"machine: {machine()}; load average {load_start[0]:.1f} {load_start[1]:.1f} {load_start[2]:.1f}",
          flush=True)

    def log(s):
        print(s, flush=True)

    if cfg.headline:
        C, d, B, K = cfg.headline
        r, n = run_group("headline", C, d, B, [K], [m for m in HEADLINE_METHODS if m not in drop], cfg,
                         cfg.headline_budget_gb, log)
        recs += r
        notes += n
    if cfg.grid:
        for C in cfg.Cs:
            for d in cfg.ds:
                for B in cfg.Bs:
                    r, n = run_group("grid", C, d, B, cfg.Ks, [m for m in GRID_METHODS if m not in drop], cfg,
                                     cfg.budget_gb, log)
                    recs += r
                    notes += n
    wall = time.perf_counter() - t_start
    load_end = os.getloadavg()
    cmd = "python benchmarks/sampled.py " + " ".join(sys.argv[1:] if argv is None else argv)
    out = dict(config=asdict(cfg), machine=machine(), command=cmd.strip(), torch=torch.__version__,
               load_start=load_start, load_end=load_end, wall_s=wall, notes=notes, records=recs)
    if cfg.tf:
        out["tensorflow"] = _tf_version()
    _atomic_write(ROOT / cfg.json_path, json.dumps(out, indent=1))
    threads = "each library's default" if cfg.threads is None else f"{cfg.threads} (torch and TF)"
    print(f"\ncommand: {cmd.strip()}\nthreads: {threads}; torch {torch.get_num_threads()}; wall {wall / 60:.1f} min; "
          f"load average {load_start[0]:.1f} at start, {load_end[0]:.1f} at end")
    if cfg.headline:
        txt, by = headline_report(recs, cfg)
        print(f"\nheadline C={cfg.headline[0]}, d={cfg.headline[1]}, B={cfg.headline[2]}, K={cfg.headline[3]}\n"
              + txt)
    if cfg.grid:
        print("\ngrid (median ms per forward+backward; memory = step MB)\n" + grid_report(recs))
    for n in notes:
        print("note:", n)
    if cfg.plot_path and cfg.grid:
        plot(recs, ROOT / cfg.plot_path)
        print(f"figure: {cfg.plot_path}")
    return out


if __name__ == "__main__":
    main()
