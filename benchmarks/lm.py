"""Sampled softmax on real text: Bengio et al.'s (2003) fixed-window neural language model on the King James
Bible, trained with the full softmax and with softmaxlab's sampled losses, measured by exact test perplexity.

    python benchmarks/lm.py                      # the table and figure of benchmarks/README.md (~15 min, 2 cores)
    python benchmarks/lm.py --quick --text F     # a smoke run on any text file (seconds)

Needs the corpus: apt-get install bible-kjv (Debian's King James Bible and its `bible` reader), else it says so
in one line and exits 2. Model: 4 context words -> embeddings (64) -> concatenated (256) -> tanh hidden layer
(256) -> output layer over the whole vocabulary (11,123 types), which is where the cost is. Every run starts
from the same initial weights, sees the same batches in the same order (one generator for the positions),
and trains for the same number of Adam steps; its sampled negatives come from a second generator with the
same seed. Perplexity is exact (softmaxlab.metrics.exact_metrics, all classes, in chunks): on the first
`valid_tokens` of the valid split during training (the figure), on the whole test split at the end.
ms/step is the median wall time of a training step (forward, backward, Adam), without the evaluations.
"in-batch+unigram" rows (issue 18): mixed negatives, the batch's other labels plus the K unigram draws
(softmaxlab.mixed.mixed_sampled_values), with the label marginal pi estimated as the run goes by a
FrequencyEstimator (exact counts of the batches seen so far, add-one; uniform at the first step).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from common import machine, table  # noqa: E402

from softmaxlab.corpus import build, kjv_text, windows  # noqa: E402
from softmaxlab.errors import SoftmaxlabError  # noqa: E402
from softmaxlab.metrics import exact_metrics  # noqa: E402
from softmaxlab.mixed import FrequencyEstimator, mixed_sampled_values  # noqa: E402
from softmaxlab.sampled import NCELoss, SampledSoftmaxLoss  # noqa: E402
from softmaxlab.samplers import KernelSampler, LogUniformSampler, UnigramSampler  # noqa: E402


@dataclass(frozen=True)
class LMConfig:
    """One benchmark run."""

    context: int = 4
    """n - 1 context words."""
    emb: int = 64
    """Embedding size."""
    hidden: int = 256
    """tanh hidden units."""
    batch: int = 256
    """Windows per step."""
    steps: int = 3000
    """Adam steps of every run (about one epoch of the training split)."""
    lr: float = 2e-3
    """Adam's learning rate, every run."""
    Ks: tuple[int, ...] = (64, 512, 2048)
    """Numbers of sampled classes."""
    evals: int = 5
    """Valid-perplexity points per run (the figure)."""
    valid_tokens: int = 10000
    """Windows of the valid split those points use."""
    seed: int = 0
    """Initial weights, batch order, sampled negatives."""
    kernel_rank: int = 32
    """The kernel sampler's projection rank r (its cost per tree level is r^2 per draw)."""
    kernel_every: int = 100
    """Steps between the kernel sampler's rebuilds from the output layer (the rebuild counts in ms/step)."""


def method_list(cfg: LMConfig) -> list[tuple[str, str | None, str | None, int | None]]:
    """(name, loss, sampler, K)."""
    out = [("full", "full", None, None)]
    for K in cfg.Ks:
        for sampler in ("loguniform", "unigram"):
            for est in ("logq", "importance"):
                out.append((f"{est} {sampler} K={K}", est, sampler, K))
    out += [(f"nce loguniform K={K}", "nce", "loguniform", K) for K in cfg.Ks[-2:]]
    out += [(f"{est} in-batch+unigram K={K}", est, "mixed", K) for K in cfg.Ks for est in ("logq", "importance")]
    out += [(f"{est} kernel K={cfg.Ks[0]}", est, "kernel", cfg.Ks[0]) for est in ("logq", "importance")]
    return out


class Body(nn.Module):
    """Context ids (B, n-1) -> hidden (B, hidden)."""

    def __init__(self, V: int, cfg: LMConfig):
        super().__init__()
        self.emb = nn.Embedding(V, cfg.emb)
        self.fc = nn.Linear(cfg.context * cfg.emb, cfg.hidden)

    def forward(self, ctx):
        return torch.tanh(self.fc(self.emb(ctx).flatten(1)))


def make_head(loss, sampler, K, V, cfg, counts, weight, bias):
    if loss == "full":
        head = nn.Linear(cfg.hidden, V)
    elif sampler == "kernel":  # the sampled values come from KernelSampler each step (train)
        head = SampledSoftmaxLoss(V, cfg.hidden, K, estimator=loss)
    else:
        # "mixed": the same unigram proposal, plus the batch's labels (train)
        q = LogUniformSampler(V) if sampler == "loguniform" else UnigramSampler(counts + 1, power=0.75)
        cls = NCELoss if loss == "nce" else SampledSoftmaxLoss
        head = cls(V, cfg.hidden, K, sampler=q, **({} if loss == "nce" else {"estimator": loss}))
    with torch.no_grad():
        head.weight.copy_(weight)
        head.bias.copy_(bias)
    return head


def evaluate(body, head, ctx, tgt, rows=4096) -> dict:
    """exact_metrics over blocks of `rows` windows (so each class chunk is a wide GEMM), weighted by block size."""
    total = {}
    with torch.no_grad():
        for i in range(0, len(ctx), rows):
            m = exact_metrics(body(ctx[i:i + rows]), head.weight, head.bias, tgt[i:i + rows], topk=(1, 5, 10))
            for k, v in m.items():
                total[k] = total.get(k, 0.0) + v * len(tgt[i:i + rows])
    out = {k: v / len(tgt) for k, v in total.items()}
    out["perplexity"] = math.exp(out["loss"])  # of the mean loss, not the mean of the blocks' perplexities
    return out


def train(name, loss, sampler, K, cfg: LMConfig, data, steps: int) -> dict:
    """One run; returns its record (curve of valid perplexity against training wall time included)."""
    (tr_x, tr_y), (va_x, va_y), (te_x, te_y), counts = data
    V = counts.numel()
    torch.manual_seed(cfg.seed)
    body = Body(V, cfg)
    init = nn.Linear(cfg.hidden, V)  # the same initial output layer for every method
    head = make_head(loss, sampler, K, V, cfg, counts, init.weight, init.bias)
    opt = torch.optim.Adam([*body.parameters(), *head.parameters()], lr=cfg.lr)
    order = torch.Generator().manual_seed(cfg.seed)  # batch positions: the same for every run
    draws = torch.Generator().manual_seed(cfg.seed + 1)
    marks = {round(steps * (i + 1) / cfg.evals) for i in range(cfg.evals)}
    freq = FrequencyEstimator(V) if sampler == "mixed" else None  # pi of the in-batch source, streaming
    step_s, curve, wall = [], [], 0.0
    for step in range(1, steps + 1):
        idx = torch.randint(0, len(tr_y), (cfg.batch,), generator=order)
        t0 = time.perf_counter()
        h = body(tr_x[idx])
        if loss == "full":
            out = F.cross_entropy(head(h), tr_y[idx])
        elif sampler == "kernel":
            if (step - 1) % cfg.kernel_every == 0:  # a snapshot of the output layer, rebuilt every N steps
                ks = KernelSampler(head.weight, head.bias, bucket=64, rank=cfg.kernel_rank, seed=cfg.seed)
            sv = ks.sampled_values(h, tr_y[idx], K, generator=draws)
            out = head(h, tr_y[idx], sampled_values=sv)
        elif freq is not None:
            sv = mixed_sampled_values(tr_y[idx], K, head.sampler, freq.probs(), generator=draws)
            out = head(h, tr_y[idx], sampled_values=sv)
            freq.update(tr_y[idx])  # after the step: pi comes from the batches before it
        else:
            out = head(h, tr_y[idx], generator=draws)
        opt.zero_grad()
        out.backward()
        opt.step()
        step_s.append(time.perf_counter() - t0)
        wall += step_s[-1]
        if step in marks:
            curve.append((step, wall, evaluate(body, head, va_x, va_y)["perplexity"]))
    test = evaluate(body, head, te_x, te_y)
    return dict(method=name, loss=loss, sampler=sampler, K=K, steps=steps, ms_per_step=1e3 * statistics.median(step_s),
                train_s=wall, test=test, curve=curve)


def report(recs: list[dict]) -> str:
    full = next(r for r in recs if r["method"] == "full")
    rows = []
    for r in recs:
        gap = r["test"]["perplexity"] / full["test"]["perplexity"] - 1
        rows.append([r["method"], r["steps"], f"{r['curve'][-1][2]:.1f}", f"{r['test']['perplexity']:.1f}",
                     f"{100 * gap:+.1f}%",
                     f"{100 * r['test']['top1']:.1f}", f"{100 * r['test']['top10']:.1f}", f"{r['ms_per_step']:.2f}",
                     f"{full['ms_per_step'] / r['ms_per_step']:.1f}x", f"{r['train_s']:.0f}"])
    return table(["method", "steps", "valid ppl", "test ppl", "test gap to full", "top-1 %", "top-10 %",
                  "train ms/step", "speed-up", "train s"], rows)


def plot(recs, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5.5))
    colors = {None: "black", 64: "tab:blue", 512: "tab:orange", 2048: "tab:green", 8: "tab:blue", 32: "tab:orange"}
    styles = {"full": "-", "logq": "-", "importance": "--", "nce": ":"}
    for r in recs:
        if r["curve"]:
            _, t, p = zip(*r["curve"])
            ax.plot(t, p, marker={"unigram": "s", "mixed": "^"}.get(r["sampler"], "o"), ms=3, ls=styles[r["loss"]],
                    color=colors.get(r["K"], "gray"), lw=2.5 if r["loss"] == "full" else 1.2, label=r["method"])
    full = recs[0]["curve"]
    top = 3 * full[0][2] if full else None  # NCE's first points are off the scale: the axis follows full softmax
    ax.set(xscale="log", yscale="log", xlabel="training wall time, s (evaluations excluded)",
           ylabel="valid perplexity (exact)", title="Bengio LM on the King James Bible: color K, line estimator",
           ylim=(None, top))
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny model, few steps: checks the harness")
    ap.add_argument("--text", help="a text file instead of the King James Bible")
    ap.add_argument("--steps", type=int)
    ap.add_argument("--json", default="benchmarks/lm.json")
    ap.add_argument("--plot", default="benchmarks/lm.png", help="figure path, or 'none'")
    ap.add_argument("--table", metavar="JSON", help="print the table of an earlier run's results file and exit")
    a = ap.parse_args(argv)
    if a.table:
        res = json.loads(Path(a.table).read_text())
        print(f"{res['command'].strip()}: {res['wall_s'] / 60:.1f} min on {res['machine']}\n" + report(res["records"]))
        if a.plot != "none":
            plot(res["records"], a.plot)
        return 0
    cfg = LMConfig()
    if a.quick:
        cfg = replace(cfg, emb=8, hidden=16, batch=32, steps=40, Ks=(8, 32), evals=2, valid_tokens=500)
    if a.steps:
        cfg = replace(cfg, steps=a.steps)
    try:
        text = Path(a.text).read_text() if a.text else kjv_text()
        corpus = build(text)
    except (OSError, SoftmaxlabError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    tr, va, te = (windows(s, cfg.context) for s in (corpus.train, corpus.valid, corpus.test))
    va = (va[0][: cfg.valid_tokens], va[1][: cfg.valid_tokens])
    data = (tr, va, te, corpus.counts)
    print(f"machine: {machine()}; load average {os.getloadavg()[0]:.1f}\ncorpus: {len(corpus.vocab)} types, "
          f"{corpus.train.numel()} / {corpus.valid.numel()} / {corpus.test.numel()} tokens", flush=True)
    t_start, recs = time.perf_counter(), []
    for name, loss, sampler, K in method_list(cfg):
        recs.append(train(name, loss, sampler, K, cfg, data, cfg.steps))
        r = recs[-1]
        print(f"  {name}: test ppl {r['test']['perplexity']:.1f}, {r['ms_per_step']:.2f} ms/step", flush=True)
    full = recs[0]
    best = min(recs[1:], key=lambda r: r["test"]["perplexity"])
    equal = max(1, int(best["train_s"] / (full["ms_per_step"] / 1e3)))  # full softmax's steps in best's time
    r = train("full", "full", None, None, cfg, data, min(equal, cfg.steps))
    recs.append(dict(r, method=f"full, equal time to {best['method']}"))
    out = dict(config=asdict(cfg), machine=machine(), torch=torch.__version__, vocab=len(corpus.vocab),
               tokens=[corpus.train.numel(), corpus.valid.numel(), corpus.test.numel()],
               wall_s=time.perf_counter() - t_start, load_end=os.getloadavg(), records=recs,
               command="python benchmarks/lm.py " + " ".join(sys.argv[1:] if argv is None else argv))
    path = ROOT / a.json if not os.path.isabs(a.json) else Path(a.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(out, f, indent=1)
    os.replace(tmp, path)
    print(f"\n{out['command'].strip()}: {out['wall_s'] / 60:.1f} min\n" + report(recs))
    if a.plot != "none":
        plot(recs, ROOT / a.plot if not os.path.isabs(a.plot) else a.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
