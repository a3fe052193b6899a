"""The `softmaxlab` command. Options of train/sweep/reproduce are generated from their frozen config dataclasses
(mnist/configs.py: each field's type, default and help); `reproduce` runs the study, then the report.

Every user error ends as one line `error: ...` and exit code 2; Ctrl-C keeps every finished epoch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import json
import math
import re
import sys
import time
import typing
from pathlib import Path
from typing import Optional

import typer

from . import __version__
from .bias import bias_study, format_table
from .config import load_config
from .errors import SoftmaxlabError
from .extras.tracking import make_tracker
from .gradcheck import run_checks
from .kernel_bias import PROPOSALS, kernel_bias_study
from .mnist import records, study
from .mnist.check import check, check_report
from .mnist.configs import ReproduceConfig, SweepConfig, TrainConfig, parse_range, protocol
from .mnist.data import resolve_data_dir
from .mnist.engine import precision_note
from .mnist.models import width_table
from .mnist.progress import should_show
from .mnist.runner import execute
from .mnist.summary import Arch, BiasStudy, summarize
from .mnist.train import train as train_run
from .report import write_report
from .report.figures import plot_bias

# typer >= 0.20 vendors its own click; its exception classes are reachable through typer's public ones.
UsageError = typer.BadParameter.__bases__[0]
ClickException = UsageError.__bases__[0]
PDF_HELP = "Also write report.pdf, printed by headless Chromium (vector figures; provenance as the appendix)."

app = typer.Typer(add_completion=True, no_args_is_help=True, pretty_exceptions_enable=False,
                  rich_markup_mode=None, help="Softmax maths and the linear-vs-MLP MNIST study, done right.")
data_app = typer.Typer(no_args_is_help=True, help="The MNIST files.")
sampled_app = typer.Typer(no_args_is_help=True, help="Problem 1: sampled softmax checks and bias study.")
app.add_typer(data_app, name="data")
app.add_typer(sampled_app, name="sampled")

DataDir = typer.Option(None, "--data-dir", help="Folder with the MNIST IDX files (else $SOFTMAXLAB_DATA, "
                                                 "else ~/.cache/softmaxlab/mnist).")


# ---- options generated from config dataclasses ------------------------------------------------------------


def _auto_int(name: str):
    def parse(v: str):
        if v in ("auto", "none", "all"):
            return None
        try:
            return int(v)
        except ValueError:
            raise SoftmaxlabError(f"--{name.replace('_', '-')} {v!r} is not an integer: pass an integer or "
                                  f"auto") from None
    return parse


def config_command(*classes, skip: tuple[str, ...] = ()):
    """Decorate `fn(cfg_1, ..., cfg_n, **rest)` into a command whose options are `rest` plus the fields of each
    class (a name taken by an earlier class, or in `skip`, is left out of the later ones) and --config FILE."""
    hints = {cls: typing.get_type_hints(cls) for cls in classes}
    owner: dict[str, type] = {}
    for cls in classes:
        for f in dataclasses.fields(cls):
            if f.name not in skip:
                owner.setdefault(f.name, cls)

    def deco(fn):
        own = list(inspect.signature(fn).parameters.values())[len(classes):]
        fields, parsers, types = [], {}, {}
        for name, cls in owner.items():
            f = {f.name: f for f in dataclasses.fields(cls)}[name]
            tp = types[name] = hints[cls][name]
            default, help = f.default, f.metadata["help"]
            if tp == Optional[int]:  # int | None: 'auto' on the command line means None
                tp, parsers[name] = str, _auto_int(name)
                default = "auto" if default is None else str(default)
                help = re.sub(r"\bNone\b", "auto", help)  # the docstring speaks Python, the option says auto
            fields.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=tp,
                                            default=typer.Option(default, help=help)))
        types.update({k: v for k, v in typing.get_type_hints(fn).items() if k in {p.name for p in own}})
        extra = [inspect.Parameter("config_file", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[Path],
                                   default=typer.Option(None, "--config", help="TOML file of option values "
                                                        "(keys as the options; options given here win).")),
                 inspect.Parameter("_ctx", inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context)]

        @functools.wraps(fn)
        def wrapper(**kw):
            ctx, path, given = kw.pop("_ctx"), kw.pop("config_file"), set()
            if path is not None:  # its values replace defaults, never options given on the command line
                for name, v in load_config(path, types).items():
                    src = ctx.get_parameter_source(name)
                    if src is None or src.name in ("DEFAULT", "DEFAULT_MAP"):
                        kw[name] = v
                        given.add(name)
            for name, parse in parsers.items():
                if name not in given:
                    kw[name] = parse(kw[name])
            cfgs = [cls(**{n: kw.pop(n) for n, c in owner.items() if c is cls}) for cls in classes]
            return fn(*cfgs, **kw)

        wrapper.__signature__ = inspect.Signature(own + fields + extra)
        return wrapper

    return deco


# ---- commands -----------------------------------------------------------------------------------------


def _version(value: bool):
    if value:
        print(f"softmaxlab {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")):
    pass


@data_app.command("check")
def data_check(data_dir: Optional[Path] = DataDir, download: bool = typer.Option(
        False, help="Download missing files from the public mirrors first.")):
    """Verify the four MNIST files (sha256 of the decoded payload) and print their checksums."""
    lines, error = check_report(check(data_dir, download=download), resolve_data_dir(data_dir))
    print("\n".join(lines))
    if error:
        raise SoftmaxlabError(error)


@app.command()
def params(budget: int = typer.Option(814_090, help="Parameter budget to meet."),
           layers: str = typer.Option("1-8", help="Hidden-layer counts, e.g. 1-8 or 1,2,4."),
           json_out: bool = typer.Option(False, "--json", help="Machine-readable output.")):
    """Q3: the width k(L) that keeps L equal hidden layers at the parameter budget."""
    rows = width_table(parse_range(layers, "layers", 1), budget)
    if json_out:
        print(json.dumps(rows, indent=2))
        return
    print(f"budget {budget:,} parameters; params(L, k) = (L-1)k^2 + (L+794)k + 10")
    print(f"{'L':>3} {'exact root':>12} {'width':>6} {'params':>10} {'deviation':>10} {'dev %':>8}")
    for r in rows:
        print(f"{r['layers']:>3} {r['root']:>12.3f} {r['width']:>6} {r['params']:>10,} {r['deviation']:>+10,} "
              f"{r['deviation_pct']:>+8.3f}")


def _note(cfg: TrainConfig) -> None:
    note = precision_note(cfg)
    if note:
        print(note, file=sys.stderr)


@app.command()
@config_command(TrainConfig)
def train(cfg: TrainConfig, data_dir: Optional[Path] = DataDir,
          out: Optional[str] = typer.Option(None, help="Record the run under this folder (resumable)."),
          json_out: bool = typer.Option(False, "--json", help="Print the result as JSON.")):
    """Train one model under the assignment's protocol and print its metrics."""
    cfg.validate()
    _note(cfg)
    data = study.load_data(data_dir)
    tty = sys.stderr.isatty() and not json_out
    if out is not None:
        res = execute([cfg], out, data, progress=tty, log=(lambda s: None) if json_out else print)[0]
    else:
        res = train_run(cfg, data, progress=tty)
        res.update(name=records.run_name(cfg.model, cfg.layers, res["width"]), seed=cfg.seed,
                   config=dataclasses.asdict(cfg), **records.provenance())
    if json_out:
        print(json.dumps({k: v for k, v in res.items() if k != "test_errors"}, indent=2))
        return
    for h in res["history"]:
        print(f"epoch {h['epoch']}: train_loss={h['train_loss']:.4f} val_loss={h['val_loss']:.4f} "
              f"val_acc={h['val_acc']:.4f} ({h['epoch_time_s']:.2f}s)")
    print(f"{res['name']}: {records.outcome(res)}")


@contextlib.contextmanager
def _tracking(kind: str, out: str):
    """--track's tracker for the study under `out` (None for none), closed however the command ends."""
    tracker = make_tracker(kind, Path(out))  # MLflow / TensorBoard are imported only when chosen
    try:
        yield tracker
    finally:
        if tracker is not None:
            tracker.close()


@app.command()
@config_command(SweepConfig, TrainConfig, skip=("seed",))  # the sweep plans model, layers, width, seed
def sweep(cfg: SweepConfig, base: TrainConfig, data_dir: Optional[Path] = DataDir):
    """Train MLPs over hidden-layer counts and seeds; records under --out, re-running resumes."""
    base.validate()
    _note(base)
    plan = [c.validate() for c in cfg.plan(base)]
    if cfg.executor == "ray":
        from .extras.ray import execute_ray, require_ray

        require_ray()  # not installed: say so before loading anything
    with _tracking(cfg.track, cfg.out) as tracker:
        out = records.ensure_dir(cfg.out)
        study.check_study(out, "sweep", protocol(base))
        data = study.load_data(data_dir)
        if cfg.executor == "ray":
            results = execute_ray(plan, out, data, address=cfg.address, tracker=tracker)
        else:
            results = execute(plan, out, data, tracker=tracker, workers=cfg.workers)
        records.atomic_write(out / "results.csv", records.results_csv(results))
        rows = summarize(results)
        records.write_json(out / "summary.json", dict(rows=rows, provenance=records.provenance()))
        if tracker is not None:
            for name in ("results.csv", "summary.json"):
                tracker.log_artifact(out / name)
    for r in rows:
        ci = "" if r.n < 2 else f" +/- {r.test_acc_ci:.4f}"
        print(f"{r.name:<16} params={r.params:>9,} test_acc={r.test_acc_mean:.4f}{ci} "
              f"(n={r.n}, diverged={r.diverged})")


@app.command()
@config_command(ReproduceConfig)
def reproduce(cfg: ReproduceConfig, data_dir: Optional[Path] = DataDir,
              json_out: bool = typer.Option(False, "--json", help="Print the answers as JSON (no progress)."),
              pdf: bool = typer.Option(False, "--pdf", help=PDF_HELP)):
    """The main job: answer Problem 1 and Q1-Q4 with figures, CIs and provenance in --out/report.html."""
    t0 = time.perf_counter()
    cfg.resolved().plan()  # a bad option: say so before anything is written
    with _tracking(cfg.track, cfg.out) as tracker:
        summary, data = study.reproduce(cfg, data_dir, log=(lambda s: None) if json_out else print,
                                        tracker=tracker, progress=should_show(json_out=json_out))
        out = Path(cfg.out)
        written = write_report(out, summary, data.test.x, pdf=pdf)
        if tracker is not None:
            for path in [out / "summary.json", out / "results.csv", *written.values()]:
                tracker.log_artifact(path, subdir=path.parent.relative_to(out).as_posix())
    if json_out:
        answers = {k: dataclasses.asdict(summary)[k] for k in ("q1", "q2", "q3", "q4", "wall_time_s")}
        print(json.dumps(dict(answers, report=str(out / "report.html")), indent=2, default=str))
        return
    print(f"report: {out / 'report.html'} (compute {summary.wall_time_s:.0f}s; this invocation "
          f"{time.perf_counter() - t0:.0f}s)")
    print(f"Q1 linear:        test_acc {_acc(summary.q1)}")
    print(f"Q2 784-1024-10:   test_acc {_acc(summary.q2)}")
    for a in summary.q4:
        print(f"Q4 L={a.layers} k={a.width:<5} test_acc {_acc(a)}  params={a.params:,}")
    print(f"report: {out / 'report.html'}" + (f" and {out / 'report.pdf'}" if pdf else ""))


@app.command("report")
def report_cmd(out: str = typer.Option("results", help="The --out folder of a finished `softmaxlab reproduce`."),
               pdf: bool = typer.Option(False, "--pdf", help=PDF_HELP), data_dir: Optional[Path] = DataDir):
    """Rewrite a finished study's report (report.html, report.md, figures; --pdf: report.pdf) from its records."""
    summary = study.finished(out)  # trains nothing and writes nothing but the report
    written = write_report(out, summary, study.load_data(data_dir).test.x, pdf=pdf)
    print("\n".join(f"report: {written[k]}" for k in ("report.html", "report.md", "report.pdf") if k in written))


def _acc(a: Arch) -> str:
    return f"{a.test_acc_mean:.4f}" + ("" if math.isnan(a.test_acc_ci) else f" +/- {a.test_acc_ci:.4f} (95% CI, "
                                                                              f"n={a.n})")


@sampled_app.command("check")
def sampled_check(seed: int = typer.Option(0, help="Seed of the random problems.")):
    """Check every closed-form gradient against torch.autograd in float64; print the max abs errors."""
    _check_seed(seed)
    rows = run_checks(seed=seed)
    for r in rows:
        print(f"{'ok  ' if r['ok'] else 'FAIL'} {r['name']:<56} max_abs_err={r['max_abs_err']:.3e} "
              f"(tol {r['tol']:.0e})")
    if not all(r["ok"] for r in rows):
        print("error: some gradient checks failed", file=sys.stderr)
        raise typer.Exit(1)


@sampled_app.command("bias")
def sampled_bias(classes: int = typer.Option(10, help="Number of classes C (random logits)."),
                 samples: str = typer.Option("8,64,512", help="Sample sizes K, comma-separated."),
                 sampler: str = typer.Option("uniform", help="uniform, loguniform, unigram, or kernel (the "
                                             "adaptive KernelSampler beside loguniform and unigram, on low-rank "
                                             "logits)."),
                 seed: int = typer.Option(0, help="Seed."),
                 plot: Optional[Path] = typer.Option(None, help="Write the bias-vs-K plot here (PNG or SVG)."),
                 mnist: bool = typer.Option(False, help="Use the logits of a linear model trained on MNIST "
                                                        "(C = 10) instead of random ones."),
                 mixed: bool = typer.Option(False, help="Add the mixed rows: in-batch negatives (a batch of the N "
                                                        "examples) plus the K draws (mixed_importance, mixed_logq)."),
                 data_dir: Optional[Path] = DataDir):
    """The sampled-softmax bias study: loss bias, error of D and gradient cosine, per estimator and K."""
    _check_seed(seed)
    ks = parse_range(samples, "samples", 1)
    logits = None
    if plot is not None and plot.suffix.lower() not in (".png", ".svg"):
        raise SoftmaxlabError(f"plot path must end in .png or .svg, got {str(plot)!r}")
    if plot is not None and not plot.parent.is_dir():  # say so before the study, not after it
        raise SoftmaxlabError(f"cannot write the plot {plot}: {plot.parent} is not an existing folder; pick a writable "
                              f"--plot path")
    if sampler == "kernel" and mnist:
        raise SoftmaxlabError("--sampler kernel draws from the logits' factors, which --mnist does not have: "
                              "drop --mnist (it uses low-rank random logits)")
    if sampler == "kernel" and mixed:
        raise SoftmaxlabError("--mixed is a row of the fixed-proposal study: drop --mixed or --sampler kernel")
    if mnist:
        logits = study.mnist_logits(data_dir=data_dir)
        classes = logits[0].shape[1]
    if sampler == "kernel":  # per-example draws: low-rank logits, the kernel beside the fixed proposals
        rows = kernel_bias_study(classes=classes, samples=tuple(ks), seed=seed)
        title = "low-rank random logits (d = 32)"
        print(f"C = {classes}, {title}; Z = full normaliser, D = its estimate")
        for name in PROPOSALS:
            mine = [r for r in rows if r["sampler"] == name]
            cost = ", ".join(f"K = {r['num_sampled']}: {r['draw_ms']:.3g} ms" for r in mine[::2])
            print(f"\nproposal {name}" + (" (alpha = 100, per example)" if name == "kernel" else "")
                  + f"; draw cost per example (K draws): {cost}")
            print(format_table(mine))
    else:
        rows = bias_study(classes=classes, samples=tuple(ks), sampler=sampler, logits=logits, seed=seed,
                          mixed=mixed)
        title = "MNIST-trained logits" if mnist else "random logits"
        print(f"C = {classes}, proposal {sampler}, {title}; Z = full normaliser, D = its estimate")
        print(format_table(rows))
    if plot is not None:
        plot_bias(BiasStudy(title, classes, sampler, tuple(rows)), plot)  # read-only, disk full: its error
        print(f"plot: {plot}")


def _check_seed(seed: int) -> None:
    if seed < 0:
        raise SoftmaxlabError(f"--seed {seed} is negative: pass a seed >= 0")


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app, turn every expected failure into one line and exit code 2."""
    cmd = typer.main.get_command(app)
    try:
        rv = cmd.main(args=argv, prog_name="softmaxlab", standalone_mode=False)
    except SoftmaxlabError as e:
        print(f"error: {e}", file=sys.stderr)
        return _exit(2)
    except UsageError as e:
        if type(e).__name__ == "NoArgsIsHelpError":  # bare `softmaxlab` or `softmaxlab data`: show help
            print(e.ctx.get_help())
            return _exit(0)
        path = e.ctx.command_path if e.ctx is not None else "softmaxlab"
        msg = " ".join(e.format_message().split())
        print(f"error: {msg}; see {path} --help", file=sys.stderr)
        return _exit(2)
    except ClickException as e:
        print(f"error: {' '.join(e.format_message().split())}", file=sys.stderr)
        return _exit(2)
    except (KeyboardInterrupt, typer.Abort):
        rv = 130
    except typer.Exit as e:
        return _exit(e.exit_code)
    if rv == 130:  # Ctrl-C: typer returns one inside a command as exit code 130, not as KeyboardInterrupt
        print(_interrupted(sys.argv[1:] if argv is None else argv), file=sys.stderr)
    return _exit(rv if isinstance(rv, int) else 0)


def _interrupted(args: list[str]) -> str:
    """What Ctrl-C left: only reproduce, sweep and train --out keep records to resume from."""
    out = any(a == "--out" or a.startswith("--out=") for a in args)
    if args[:1] in (["reproduce"], ["sweep"]) or (args[:1] == ["train"] and out):
        return "interrupted: finished epochs and runs are saved; re-run the same command to resume"
    if args[:1] == ["train"]:
        return "interrupted: nothing was recorded; pass --out DIR to make a run resumable"
    return "interrupted"


def _exit(code: int) -> int:
    sys.stdout.flush()
    raise SystemExit(code)


if __name__ == "__main__":
    main()
