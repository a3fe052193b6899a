"""The `softmaxlab` command. Options of train/sweep/reproduce are generated from their config dataclasses.

Every user error ends as one line `error: ...` and exit code 2; Ctrl-C keeps every finished epoch.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import json
import sys
import textwrap
import typing
from pathlib import Path
from typing import Optional

import typer

from .errors import SoftmaxlabError

# typer >= 0.20 vendors its own click; its exception classes are reachable through typer's public ones.
UsageError = typer.BadParameter.__bases__[0]
ClickException = UsageError.__bases__[0]

app = typer.Typer(add_completion=True, no_args_is_help=True, pretty_exceptions_enable=False,
                  rich_markup_mode=None, help="Softmax maths and the linear-vs-MLP MNIST study, done right.")
data_app = typer.Typer(no_args_is_help=True, help="The MNIST files.")
sampled_app = typer.Typer(no_args_is_help=True, help="Problem 1: sampled softmax checks and bias study.")
app.add_typer(data_app, name="data")
app.add_typer(sampled_app, name="sampled")

DataDir = typer.Option(None, "--data-dir", help="Folder with the MNIST IDX files (else $SOFTMAXLAB_DATA, "
                                                 "else ~/.cache/softmaxlab/mnist).")


# ---- options generated from a config dataclass -----------------------------------------------------------


def field_docs(cls) -> dict[str, str]:
    """The docstring under each field of a dataclass (read from its source, as Sphinx does)."""
    body = ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0].body
    return {a.target.id: " ".join(b.value.value.split()) for a, b in zip(body, body[1:])
            if isinstance(a, ast.AnnAssign) and isinstance(b, ast.Expr) and isinstance(b.value, ast.Constant)}


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


def config_command(cls, skip: tuple[str, ...] = ()):
    """Decorate `fn(cfg, **rest)` into a command whose options are `rest` plus every field of `cls`."""
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)

    def deco(fn):
        own = [p for name, p in inspect.signature(fn).parameters.items() if name != "cfg"]
        fields, parsers = [], {}
        for f in dataclasses.fields(cls):
            if f.name in skip:
                continue
            tp, default = hints[f.name], f.default
            if tp == Optional[int]:  # int | None: 'auto' on the command line means None
                tp, parsers[f.name] = str, _auto_int(f.name)
                default = "auto" if default is None else str(default)
            fields.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, annotation=tp,
                                            default=typer.Option(default, help=docs.get(f.name, ""))))

        # --config FILE: its values replace defaults, never options given on the command line
        own_types = {k: v for k, v in typing.get_type_hints(fn).items() if k != "cfg" and k != "return"}
        file_types = {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.name not in skip}
        file_types.update({p.name: own_types[p.name] for p in own if p.name in own_types})
        extra = [inspect.Parameter("config_file", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[Path],
                                   default=typer.Option(None, "--config", help="TOML file of option values "
                                                        "(keys as the options; options given here win).")),
                 inspect.Parameter("_ctx", inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context)]

        @functools.wraps(fn)
        def wrapper(**kw):
            ctx, path, given = kw.pop("_ctx"), kw.pop("config_file"), set()
            if path is not None:
                from .config import load_config

                for name, v in load_config(path, file_types).items():
                    src = ctx.get_parameter_source(name)
                    if src is None or src.name in ("DEFAULT", "DEFAULT_MAP"):
                        kw[name] = v
                        given.add(name)
            vals = {f.name: kw.pop(f.name) for f in dataclasses.fields(cls) if f.name in kw}
            for name, parse in parsers.items():
                if name not in given:
                    vals[name] = parse(vals[name])
            return fn(cls(**vals), **kw)

        wrapper.__signature__ = inspect.Signature(own + fields + extra)
        return wrapper

    return deco


# ---- commands -----------------------------------------------------------------------------------------


def _version(value: bool):
    if value:
        from . import __version__

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
    from .data import check, check_report, resolve_data_dir

    lines, error = check_report(check(data_dir, download=download), resolve_data_dir(data_dir))
    print("\n".join(lines))
    if error:
        raise SoftmaxlabError(error)


@app.command()
def params(budget: int = typer.Option(814_090, help="Parameter budget to meet."),
           layers: str = typer.Option("1-8", help="Hidden-layer counts, e.g. 1-8 or 1,2,4."),
           json_out: bool = typer.Option(False, "--json", help="Machine-readable output.")):
    """Q3: the width k(L) that keeps L equal hidden layers at the parameter budget."""
    from .models import width_table
    from .study import parse_range

    rows = width_table(parse_range(layers, "layers", 1), budget)
    if json_out:
        print(json.dumps(rows, indent=2))
        return
    print(f"budget {budget:,} parameters; params(L, k) = (L-1)k^2 + (L+794)k + 10")
    print(f"{'L':>3} {'exact root':>12} {'width':>6} {'params':>10} {'deviation':>10} {'dev %':>8}")
    for r in rows:
        print(f"{r['layers']:>3} {r['root']:>12.3f} {r['width']:>6} {r['params']:>10,} {r['deviation']:>+10,} "
              f"{r['deviation_pct']:>+8.3f}")


def _train_config():
    from .train import TrainConfig

    return TrainConfig


@app.command()
@config_command(_train_config())
def train(cfg, data_dir: Optional[Path] = DataDir,
          out: Optional[str] = typer.Option(None, help="Record the run under this folder (resumable)."),
          json_out: bool = typer.Option(False, "--json", help="Print the result as JSON.")):
    """Train one model under the assignment's protocol and print its metrics."""
    from . import runs
    from .study import load_data, run_name
    from .train import train as train_run

    cfg.validate()
    _precision_note(cfg)
    data = load_data(data_dir)
    tty = sys.stderr.isatty() and not json_out
    if out is not None:
        from .study import execute

        res = execute([cfg], out, data, progress=tty, log=(lambda s: None) if json_out else print)[0]
    else:
        res = train_run(cfg, data, progress=tty)
        res.update(name=run_name(cfg, res["width"]), seed=cfg.seed, config=dataclasses.asdict(cfg),
                   **runs.provenance())
    if json_out:
        print(json.dumps({k: v for k, v in res.items() if k != "test_errors"}, indent=2))
        return
    for h in res["history"]:
        print(f"epoch {h['epoch']}: train_loss={h['train_loss']:.4f} val_loss={h['val_loss']:.4f} "
              f"val_acc={h['val_acc']:.4f} ({h['epoch_time_s']:.2f}s)")
    if res["status"] == "ok":
        print(f"{res['name']}: params={res['params']:,} test_acc={res['test_acc']:.4f} "
              f"test_loss={res['test_loss']:.4f} train_time={res['train_time_s']:.1f}s device={res['device']}")
    else:
        at = res["diverged_at"]
        print(f"{res['name']}: DIVERGED at epoch {at['epoch']} step {at['step']} (non-finite loss)")


def _precision_note(cfg) -> None:
    from .train import precision_note

    note = precision_note(cfg)
    if note:
        print(note, file=sys.stderr)


def _sweep_config():
    from .study import SweepConfig

    return SweepConfig


@app.command()
@config_command(_sweep_config())
def sweep(cfg, data_dir: Optional[Path] = DataDir,
          lr: float = typer.Option(0.01, help="SGD learning rate."),
          batch_size: int = typer.Option(64, help="Examples per SGD step."),
          epochs: int = typer.Option(5, help="Passes over the training set."),
          init: str = typer.Option("glorot", help="glorot (Keras default, as the assignment) or torch."),
          precision: str = typer.Option("fp32", help="fp32 or bf16."),
          train_subset: Optional[int] = typer.Option(None, help="Train on the first N examples only."),
          eval_subset: Optional[int] = typer.Option(None, help="Evaluate on the first N examples only."),
          device: str = typer.Option("auto", help="auto, cpu or cuda."),
          threads: Optional[int] = typer.Option(None, help="torch intra-op threads.")):
    """Train MLPs over hidden-layer counts and seeds; records under --out, re-running resumes."""
    from .study import check_study, check_workers, execute, load_data, protocol, summarize
    from .train import TrainConfig

    base = TrainConfig(lr=lr, batch_size=batch_size, epochs=epochs, init=init, precision=precision,
                       train_subset=train_subset, eval_subset=eval_subset, device=device, threads=threads)
    base.validate()
    _precision_note(base)
    plan = cfg.plan(base)
    for c in plan:
        c.validate()
    from . import runs
    from .executors import EXECUTORS, require_ray
    from .tracking import make_tracker

    if cfg.executor not in EXECUTORS:
        raise SoftmaxlabError(f"--executor {cfg.executor!r} is unknown: use {' or '.join(EXECUTORS)}")
    check_workers(cfg.workers)
    if cfg.workers is not None and cfg.executor == "ray":
        raise SoftmaxlabError("--workers is for the local executor (Ray schedules its own): drop --workers")
    if cfg.address is not None and cfg.executor != "ray":
        raise SoftmaxlabError("--address is for --executor ray: add --executor ray or drop --address")
    if cfg.executor == "ray":
        require_ray()  # not installed: say so before loading anything
    tracker = make_tracker(cfg.track, Path(cfg.out))
    try:
        out = runs.ensure_dir(cfg.out)
        check_study(out, "sweep", protocol(base))
        data = load_data(data_dir)
        if cfg.executor == "ray":
            from .executors import execute_ray

            results = execute_ray(plan, out, data, address=cfg.address, tracker=tracker)
        else:
            results = execute(plan, out, data, tracker=tracker, batch_seeds=cfg.batch_seeds, workers=cfg.workers)
        from .runs import results_csv, write_json

        runs.atomic_write(out / "results.csv", results_csv(results))
        rows = summarize(results)
        write_json(out / "summary.json", dict(rows=rows, provenance=runs.provenance()))
        if tracker is not None:
            for name in ("results.csv", "summary.json"):
                tracker.log_artifact(out / name)
    finally:
        if tracker is not None:
            tracker.close()
    for r in rows:
        ci = "" if r["n"] < 2 else f" +/- {r['test_acc_ci']:.4f}"
        print(f"{r['name']:<16} params={r['params']:>9,} test_acc={r['test_acc_mean']:.4f}{ci} "
              f"(n={r['n']}, diverged={r['diverged']})")


def _reproduce_config():
    from .study import ReproduceConfig

    return ReproduceConfig


@app.command()
@config_command(_reproduce_config())
def reproduce(cfg, data_dir: Optional[Path] = DataDir,
              json_out: bool = typer.Option(False, "--json", help="Print the answers as JSON (no progress).")):
    """The main job: answer Problem 1 and Q1-Q4 with figures, CIs and provenance in --out/report.html."""
    from .progress import should_show
    from .study import reproduce as run

    summary = run(cfg, data_dir, log=(lambda s: None) if json_out else print, progress=should_show(json_out=json_out))
    if json_out:
        keep = ("q1", "q2", "q3", "q4", "wall_time_s")
        print(json.dumps(dict({k: summary[k] for k in keep}, report=str(Path(cfg.out) / "report.html")), indent=2))
        return
    q1, q2 = summary["q1"], summary["q2"]
    print(f"Q1 linear:        test_acc {_acc(q1)}")
    print(f"Q2 784-1024-10:   test_acc {_acc(q2)}")
    for r in summary["q4"]["equal"]:
        print(f"Q4 L={r['layers']} k={r['width']:<5} test_acc {_acc(r)}  params={r['params']:,}")
    print(f"report: {Path(cfg.out) / 'report.html'}")


def _acc(row: dict) -> str:
    ci = row["test_acc_ci"]
    return f"{row['test_acc_mean']:.4f}" + ("" if ci != ci else f" +/- {ci:.4f} (95% CI, n={row['n']})")


@sampled_app.command("check")
def sampled_check(seed: int = typer.Option(0, help="Seed of the random problems.")):
    """Check every closed-form gradient against torch.autograd in float64; print the max abs errors."""
    from .gradcheck import run_checks

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
                 sampler: str = typer.Option("uniform", help="uniform, loguniform or unigram."),
                 seed: int = typer.Option(0, help="Seed."),
                 plot: Optional[Path] = typer.Option(None, help="Write the bias-vs-K plot here (PNG or SVG)."),
                 mnist: bool = typer.Option(False, help="Use the logits of a linear model trained on MNIST "
                                                        "(C = 10) instead of random ones."),
                 data_dir: Optional[Path] = DataDir):
    """The sampled-softmax bias study: loss bias, error of D and gradient cosine, per estimator and K."""
    from .bias import bias_study, format_table, plot_bias
    from .study import parse_range

    _check_seed(seed)
    ks = parse_range(samples, "samples", 1)
    logits = None
    if mnist:
        from .study import mnist_logits

        logits = mnist_logits(data_dir=data_dir)
        classes = logits[0].shape[1]
    rows = bias_study(classes=classes, samples=tuple(ks), sampler=sampler, logits=logits, seed=seed)
    print(f"C = {classes}, proposal {sampler}, {'MNIST-trained' if mnist else 'random'} logits; Z = full "
          f"normaliser, D = its estimate")
    print(format_table(rows))
    if plot is not None:
        try:
            plot_bias(rows, plot)
        except OSError as e:  # a folder, inside a file, read-only, the disk full
            raise SoftmaxlabError(f"cannot write the plot {plot} ({e.strerror or type(e).__name__}): pass a "
                                  f"writable file path ending in .png or .svg") from None
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
        print("interrupted: finished epochs and runs are saved; re-run the same command to resume",
              file=sys.stderr)
        return _exit(130)
    except typer.Exit as e:
        return _exit(e.exit_code)
    return _exit(rv if isinstance(rv, int) else 0)


def _exit(code: int) -> int:
    sys.stdout.flush()
    raise SystemExit(code)


if __name__ == "__main__":
    main()
