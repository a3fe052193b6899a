"""Every figure: the report's seven, from the Summary, and the bias plot `sampled bias --plot` shares with it.

Each figure comes back as (PNG, SVG) bytes without timestamps or version strings: same data, same bytes.
"""

from __future__ import annotations

import io
import math

import numpy as np

from ..bias import ESTIMATORS
from ..errors import SoftmaxlabError
from ..mnist.models import mlp_param_count
from ..mnist.records import atomic_write
from ..mnist.summary import FAIL_GAP, Arch, BiasStudy, Summary
from .document import acc_text, fmt_int

FIGURES = ("accuracy_vs_layers", "params_vs_layers", "learning_curves", "bias_vs_k", "misclassified", "loss_curves",
           "deep_diagnostics")
NEEDS_DIAGNOSTICS = ("loss_curves", "deep_diagnostics")  # drawn when the study has diagnostic runs
MISCLASSIFIED_GRID = (2, 12)  # rows x columns of digits per model
RC = {
    "svg.hashsalt": "softmaxlab",  # fixed ids in the SVG: same figure, same bytes
    "svg.fonttype": "path",
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "legend.frameon": False,
    "figure.dpi": 100,
}
C_LINEAR, C_EQUAL, C_FIXED = "#6e7781", "#0969da", "#d1242f"
C_TUNED = "#8250df"
C_ESTIMATOR = dict(zip(ESTIMATORS, ("#d1242f", "#0969da", "#1a7f37")))


def _plt():
    """pyplot on the file-only Agg backend (imported on first use: most commands draw nothing)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig) -> tuple[bytes, bytes]:
    png, svg = io.BytesIO(), io.BytesIO()
    fig.canvas.draw()  # lay out once (constrained layout is most of the cost), then save both formats as drawn
    fig.set_layout_engine("none")
    fig.savefig(png, format="png", dpi=150, metadata={"Software": None})
    fig.savefig(svg, format="svg", metadata={"Date": None, "Creator": None})
    _plt().close(fig)
    return png.getvalue(), svg.getvalue()


def make_figures(s: Summary, test_images) -> dict[str, tuple[bytes, bytes]]:
    """name -> (PNG, SVG) of every figure; test_images: uint8 (N, 784), the split test_errors index into."""
    plt = _plt()
    makers = dict(accuracy_vs_layers=lambda: accuracy_vs_layers(s), params_vs_layers=lambda: params_vs_layers(s),
                  learning_curves=lambda: learning_curves(s), bias_vs_k=lambda: bias_vs_k(s.problem1.bias),
                  misclassified=lambda: misclassified(s, test_images), loss_curves=lambda: loss_curves(s),
                  deep_diagnostics=lambda: deep_diagnostics(s))
    skip = {*(() if s.misclassified else ("misclassified",)), *(() if s.loss_curves else NEEDS_DIAGNOSTICS)}
    with plt.rc_context(RC):
        return {name: _save(makers[name]()) for name in FIGURES if name not in skip}


def plot_bias(study: BiasStudy, path) -> None:
    """`softmaxlab sampled bias --plot`: the report's bias figure of one study, PNG or SVG by the suffix."""
    suffix = str(path).rpartition(".")[2].lower()
    if suffix not in ("png", "svg"):
        raise SoftmaxlabError(f"plot path must end in .png or .svg, got {str(path)!r}")
    with _plt().rc_context(RC):
        png, svg = _save(bias_vs_k([study]))
    atomic_write(path, png if suffix == "png" else svg, fix="pick a writable --plot path")


def _column(archs: list[Arch], attr: str, scale: float = 1.0):
    return np.array([getattr(a, attr) * scale for a in archs], dtype=float)


def _seed_accs(s: Summary, a: Arch) -> np.ndarray:
    """Test accuracies (%) of an architecture's protocol runs that finished."""
    return np.array([100 * r.test_acc for r in s.runs_of(a.name) if r.test_acc is not None], dtype=float)


def accuracy_vs_layers(s: Summary):
    """Every seed a jittered point, the mean with its 95% t interval, the median; the extension's and the
    fixed-width curves labelled."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 4.6), layout="constrained")
    q1 = s.q1
    if not math.isnan(q1.test_acc_mean):
        if not math.isnan(q1.test_acc_ci):
            ax.axhspan(100 * (q1.test_acc_mean - q1.test_acc_ci), 100 * (q1.test_acc_mean + q1.test_acc_ci),
                       color=C_LINEAR, alpha=0.18, lw=0)
        ax.axhline(100 * q1.test_acc_mean, color=C_LINEAR, lw=1.2, ls="--", label=f"linear (Q1): {acc_text(q1)}")
    curves = [("equal parameters (Q4): mean, 95% CI", s.q4, C_EQUAL, "o", 0.0)]
    if s.q4_fixed:
        curves.append(("width 1024 for every L", s.q4_fixed, C_FIXED, "s", 0.12))
    jitter = np.random.default_rng(0)  # fixed: same figure, same bytes
    for label, archs, color, marker, dx in curves:
        archs = sorted(archs, key=lambda a: a.layers)
        x = _column(archs, "layers") + dx
        ax.errorbar(x, _column(archs, "test_acc_mean", 100), yerr=np.nan_to_num(_column(archs, "test_acc_ci", 100)),
                    color=color, marker=marker, ms=5, lw=1.6, capsize=3, label=label)
        for xi, a in zip(x, archs):
            ys = _seed_accs(s, a)
            ax.plot(xi + jitter.uniform(-0.09, 0.09, len(ys)), ys, ls="none", marker=".", ms=4, alpha=0.45,
                    color=color)
            if len(ys):
                ax.plot([xi - 0.14, xi + 0.14], [np.median(ys)] * 2, color=color, lw=2.2, solid_capstyle="butt")
    tuned = sorted((t for t in s.tuned if t.test is not None and not math.isnan(t.test.test_acc_mean)),
                   key=lambda t: t.layers)
    if tuned:
        x = np.array([t.layers for t in tuned], dtype=float) - 0.12
        ax.errorbar(x, [100 * t.test.test_acc_mean for t in tuned], yerr=np.nan_to_num(
            [100 * t.test.test_acc_ci for t in tuned]), color=C_TUNED, marker="D", ms=4.5, lw=1.4, ls=":",
            capsize=3, label="extension (not the protocol): lr chosen on validation")
    ax.plot([], [], ls="none", marker=".", color=C_LINEAR, label="one seed")
    ax.plot([], [], lw=2.2, color=C_LINEAR, label="median")
    ax.set(xlabel="hidden layers L", ylabel="test accuracy, %")
    if ax.get_ylim()[1] > 100:  # a wide CI (few seeds) must not suggest accuracies over 100%
        ax.set_ylim(top=100.5)
    ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
    ns = sorted({a.n for a in s.archs()} - {0})
    if not ns or ns[-1] < 2:
        ax.set_title("Test accuracy vs depth (one seed: no confidence interval)")
    else:
        n = f"n = {ns[0]}" if len(ns) == 1 else f"n = {ns[0]}..{ns[-1]}"
        ax.set_title(f"Test accuracy vs depth (points: seeds; mean, {n}, with 95% t CI; median)")
    fig.legend(loc="outside lower center", ncol=2, fontsize=8.5)
    return fig


def _seed_curves(s: Summary, layers: int) -> list:
    """(curve, colour) of each diagnostic run at one depth: failing seeds red."""
    fate = {d.seed: d.failing for d in s.seed_diags if d.layers == layers}
    return [(c, C_FIXED if fate.get(c.seed) else C_EQUAL) for c in s.loss_curves if c.layers == layers]


def loss_curves(s: Summary):
    """Training loss (window means of diagnostics.DIAG_EVERY steps) against step, every seed, a panel per depth."""
    plt = _plt()
    depths = sorted({c.layers for c in s.loss_curves})
    fig, axes = plt.subplots(1, len(depths), figsize=(4.2 * len(depths) + 0.6, 3.9), squeeze=False,
                             layout="constrained", sharey=True)
    for ax, L in zip(axes[0], depths):
        curves = _seed_curves(s, L)
        for c, color in curves:
            ax.plot(c.steps, c.losses, lw=1.1, alpha=0.85, color=color)
        ax.axhline(math.log(10), color=C_LINEAR, ls="--", lw=1)  # chance level: the plateau
        ax.set(title=f"L = {L} (k = {curves[0][0].width})", xlabel="step")
    axes[0][0].set_ylabel("training loss, nats (window mean)")
    fail = f"failing seed (test acc. > {100 * FAIL_GAP:g} pp below the best)"
    for color, label in ((C_EQUAL, "seed"), (C_FIXED, fail), (C_LINEAR, "ln 10: chance")):
        axes[0][0].plot([], [], color=color, ls="--" if color == C_LINEAR else "-", label=label)
    fig.legend(loc="outside lower center", ncol=3, fontsize=8.5)
    fig.suptitle("Training loss against step, every seed (init seed = data seed)")
    return fig


def deep_diagnostics(s: Summary):
    """At the deepest diagnostic depth: dead-ReLU fraction (mean over hidden layers) and the first layer's
    weight-gradient norm against step, failing seeds apart from good ones."""
    plt = _plt()
    L = max(c.layers for c in s.loss_curves)
    fig, axes = plt.subplots(1, 2, figsize=(9.6, 3.9), squeeze=False, layout="constrained")
    for c, color in _seed_curves(s, L):
        axes[0][0].plot(c.steps, [100 * float(np.mean(p.dead)) for p in c.points], color=color, lw=1.1)
        axes[0][1].plot(c.steps, [p.grad_norm[0] for p in c.points], color=color, lw=1.1)
    axes[0][0].set(ylabel="dead ReLUs, % (mean over hidden layers)", xlabel="step")
    axes[0][1].set(ylabel="||dL/dW|| of the first layer", yscale="log", xlabel="step")
    for color, label in ((C_EQUAL, "good seed"), (C_FIXED, "failing seed")):
        axes[0][0].plot([], [], color=color, label=label)
    axes[0][0].legend(fontsize=8.5)
    fig.suptitle(f"L = {L}: dead units and gradient norm against step")
    return fig


def params_vs_layers(s: Summary):
    plt = _plt()
    layers = [r.layers for r in s.q3]
    fixed = {a.layers: a.params for a in s.q4_fixed or ()}
    fig, ax = plt.subplots(figsize=(7.5, 4.0), layout="constrained")
    ax.plot(layers, [r.params for r in s.q3], color=C_EQUAL, marker="o", label="equal parameters (Q3 widths)")
    ax.plot(layers, [fixed.get(L) or mlp_param_count(L, 1024) for L in layers], color=C_FIXED, marker="s",
            label="width 1024 for every L")
    for r in s.q3:
        ax.annotate(f"k={r.width}", (r.layers, r.params), textcoords="offset points", xytext=(0, -14),
                    ha="center", fontsize=8, color=C_EQUAL)
    ax.axhline(s.q1.params, color=C_LINEAR, ls="--", lw=1.2, label=f"linear (Q1): {s.q1.params:,}")
    ax.set(yscale="log", xlabel="hidden layers L", ylabel="parameters")
    ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
    ax.set_title("Parameters vs depth")
    fig.legend(loc="outside lower center", ncol=3, fontsize=9)
    return fig


def _curve_means(runs, key: str):
    """Per epoch, the mean of `key` over the runs that finished (all have the same epochs)."""
    ok = [r for r in runs if r.status == "ok" and r.history]
    if not ok:
        return None, None
    n = min(len(r.history) for r in ok)
    ys = np.array([[h[key] for h in r.history[:n]] for r in ok], dtype=float)
    return np.arange(1, n + 1), ys.mean(axis=0)


def learning_curves(s: Summary):
    plt = _plt()
    groups = [("equal parameters", list({a.name: a for a in (s.q1, s.q2, *s.q4)}.values()))]
    if s.q4_fixed:
        groups.append(("width 1024 for every L", [s.q1, *s.q4_fixed]))
    max_l = max(a.layers for _, archs in groups for a in archs) or 1
    epochs = max([1, *(len(r.history) for r in s.runs)])
    cmap = plt.get_cmap("viridis")
    fig, axes = plt.subplots(2, len(groups), figsize=(5.2 * len(groups) + 0.8, 6.6), squeeze=False,
                             layout="constrained", sharex=True)
    for j, (title, archs) in enumerate(groups):
        for i, (key, ylabel, scale) in enumerate((("val_acc", "validation accuracy, %", 100),
                                                  ("train_loss", "training loss (epoch mean)", 1))):
            ax = axes[i][j]
            for a in archs:
                x, y = _curve_means(s.runs_of(a.name), key)
                if x is None:
                    continue
                lin = a.model == "linear"
                color = C_LINEAR if lin else cmap(0.9 * (a.layers - 1) / max(1, max_l - 1))
                label = "linear" if lin else f"L={a.layers} (k={a.width})"
                ax.plot(x, y * scale, color=color, ls="--" if lin else "-", marker="o", ms=3, lw=1.5, label=label)
            if key == "train_loss":
                ax.set_xlabel("epoch")
            else:
                ax.set_title(title)
            ax.set_ylabel(ylabel)
            ax.set_xlim(0.6, epochs + 0.4)  # whole epochs, with room either side
            if epochs <= 12:
                ax.set_xticks(range(1, epochs + 1))
            else:
                ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
        handles, names = axes[0][j].get_legend_handles_labels()  # below the panels: never over a curve
        axes[1][j].legend(handles, names, fontsize=8.5, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.16))
    return fig


def bias_vs_k(studies):
    """|loss bias| against K, log-log, one panel per study; the marker says the sign (filled: the sampled
    loss is below the full loss, open: above). Biases span orders of magnitude, hence |bias| on a log axis."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(studies), figsize=(5.4 * len(studies), 4.2), squeeze=False,
                             layout="constrained")
    for ax, study in zip(axes[0], studies):
        for est in [e for e in ESTIMATORS if any(r["estimator"] == e for r in study.rows)]:
            rs = sorted((r for r in study.rows if r["estimator"] == est), key=lambda r: r["num_sampled"])
            x = np.array([r["num_sampled"] for r in rs], dtype=float)
            y = np.array([r["loss_bias"] for r in rs], dtype=float)
            line, = ax.plot(x, np.abs(y), lw=1.6, color=C_ESTIMATOR[est], label=est)
            ax.plot(x[y < 0], -y[y < 0], ls="none", marker="o", ms=5, color=line.get_color())
            ax.plot(x[y > 0], y[y > 0], ls="none", marker="o", ms=5, mfc="white", color=line.get_color())
        ax.set(xscale="log", yscale="log", ylabel="|loss bias| (log)", xlabel="sampled classes K (log)",
               title=f"{study.title}, C = {fmt_int(study.classes)}, {study.sampler} sampler")
        ax.legend(fontsize=9)
        ax.set_xticks(sorted({r["num_sampled"] for r in study.rows}))
        ax.xaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{int(v):,}"))
        ax.xaxis.set_minor_locator(plt.NullLocator())
    fig.suptitle("Sampled-softmax loss bias vs K")
    return fig


def misclassified(s: Summary, test_images):
    """Per chosen model (best, worst): its first misclassified test digits, titled true -> predicted.

    Each model's digits are one tiled image on one axes (96 small axes would take seconds to lay out).
    """
    plt = _plt()
    nr, nc = MISCLASSIFIED_GRID
    cell, top = 34, 14  # pixels per digit cell (28 + margin) and the label strip above each row
    imgs = np.asarray(test_images.cpu()).reshape(-1, 28, 28)
    w = nc * 0.78  # inches; each block's height follows the mosaic's aspect, plus its title
    chosen = s.misclassified
    fig, axes = plt.subplots(len(chosen), 1, figsize=(w, len(chosen) * (w * nr * (cell + top) / (nc * cell) + 0.35)),
                             squeeze=False, layout="constrained")
    for ax, m in zip(axes[:, 0], chosen):
        mosaic = np.zeros((nr * (cell + top), nc * cell), dtype=np.uint8)
        for k, (i, true, pred) in enumerate(m.errors[: nr * nc]):
            r, c = divmod(k, nc)
            y0, x0 = r * (cell + top) + top, c * cell
            mosaic[y0 + 3:y0 + 31, x0 + 3:x0 + 31] = imgs[i]
            ax.text(x0 + cell / 2, y0 - 1, f"{true}→{pred}", ha="center", va="bottom", fontsize=8.5, color="#1f2328")
        ax.imshow(mosaic, cmap="gray_r", vmin=0, vmax=255, interpolation="nearest", aspect="equal")
        ax.set_axis_off()
        ax.set_title(f"{m.label}: {m.arch.name} ({acc_text(m.arch)}), seed {m.seed} run {m.run_id}, "
                     f"{m.n_errors:,} test errors", fontsize=9.5, loc="left")
    return fig
