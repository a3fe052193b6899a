"""The whole assignment-protocol study, timed against its peers, in one run.

    python benchmarks/study.py [--epochs 5] [--seeds 1] [--no-keras] [--no-baseline] [--data-dir DIR]

The study is the nine models of Q1, Q2 and Q4 (linear; 784-1024-10, which is Q4's L = 1; the equal-budget
MLPs L = 2..8), SGD lr 0.01, batch 64, 5 epochs, validation every epoch, then the test set. Each contender
trains all nine in its own child process (so its peak RSS and threads are its own), one after the other:

  softmaxlab fp32 / bf16   study.execute on the reproduce plan: the real path, with run records and a
                           checkpoint every epoch; by default one training process per core, one thread
                           each (workers.py); the "1 process" rows are one process on all cores
  PyTorch, idiomatic       a per-sample Dataset + DataLoader(shuffle) + nn.Sequential + optim.SGD, with
                           loss.item() per step and a DataLoader for evaluation, as tutorials write it
  Keras (peer)             benchmarks/peers/keras_study.py, the assignment's own Keras code; only where
                           tensorflow is importable (pip install tensorflow-cpu: the extra `keras-peer`)

Reported: study time (all nine models' training and evaluation, without interpreter start, imports and data
load; the process wall time beside it), ratios, per-model seconds per epoch and achieved GFLOP/s
(6 x params x 50,000 / s) against a large-matmul peak measured in this run on the same cores (the roofline
fraction: for a model trained by one of two single-thread processes, the peak of one thread while another
process also multiplies; for one process, the all-core peak), test accuracy (bf16 vs fp32 for the same
seeds), and peak RSS (for several processes: the parent's peak plus each helper's, an upper bound). --seeds 3 adds
softmaxlab's 3-seed study (what `softmaxlab reproduce` runs).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


# ---- children: each trains the nine models and prints one JSON line --------------------------------------------


def child_softmaxlab(args) -> dict:
    import torch  # noqa: F401

    from softmaxlab.mnist import records as runs
    from softmaxlab.mnist import runner as workers
    from softmaxlab.mnist.configs import ReproduceConfig
    from softmaxlab.mnist.runner import execute
    from softmaxlab.mnist.study import load_data

    data = load_data(args.data_dir)
    plan = ReproduceConfig(seeds=args.seeds, epochs=args.epochs, precision=args.precision,
                           device=args.device).plan()
    unique = list({runs.run_id(c.identity()): c for cs in plan.values() for c in cs}.values())
    t0 = time.perf_counter()
    res = execute(unique, args.out, data, progress=False, log=lambda s: None, workers=args.workers or None)
    study_s = time.perf_counter() - t0
    import resource

    # this process's peak plus its helpers' (the largest one's, times their number): all resident at once
    helpers = workers.resolve(args.workers or None, unique) - 1
    rss_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
              + helpers * resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024
    models = [dict(layers=r["layers"], width=r["width"], params=r["params"], seed=r["seed"],
                   train_s=r["train_time_s"], wall_s=r["wall_time_s"], test_acc=r.get("test_acc"),
                   status=r["status"], threads=r["threads"]) for r in res]
    return dict(study_s=study_s, models=models, rss_all_mb=rss_mb, processes=helpers + 1)


def child_torch_idiomatic(args) -> dict:
    """The tutorial loop: nothing here is tuned, on purpose."""
    import torch
    import torch.nn.functional as F
    from torch.utils.data import DataLoader, Dataset

    from softmaxlab.mnist.configs import TrainConfig
    from softmaxlab.mnist.models import width_for_budget
    from softmaxlab.mnist.study import load_data
    from softmaxlab.mnist.train import init_model

    class MNIST(Dataset):
        def __init__(self, split):
            self.x, self.y = split.x, split.y

        def __len__(self):
            return len(self.y)

        def __getitem__(self, i):  # one image at a time, as ToTensor() does
            return self.x[i].float() / 255.0, self.y[i]

    data = load_data(args.data_dir)
    specs = [("linear", 1)] + [("mlp", L) for L in range(1, 9)]
    models = []
    t_study = time.perf_counter()
    for kind, L in specs:
        t0 = time.perf_counter()
        model, width = init_model(TrainConfig(model=kind, layers=L, width=None if kind == "linear"
                                              else width_for_budget(L), seed=0))
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        train_loader = DataLoader(MNIST(data.train), batch_size=64, shuffle=True)
        val_loader = DataLoader(MNIST(data.val), batch_size=1000)
        test_loader = DataLoader(MNIST(data.test), batch_size=1000)
        train_s = 0.0
        for _ in range(args.epochs):
            te = time.perf_counter()
            model.train()
            running = 0.0
            for xb, yb in train_loader:
                opt.zero_grad()
                loss = F.cross_entropy(model(xb), yb)
                loss.backward()
                opt.step()
                running += loss.item()
            train_s += time.perf_counter() - te
            model.eval()
            correct = 0
            with torch.no_grad():
                for xb, yb in val_loader:
                    correct += (model(xb).argmax(1) == yb).sum().item()
        correct = 0
        with torch.no_grad():
            for xb, yb in test_loader:
                correct += (model(xb).argmax(1) == yb).sum().item()
        models.append(dict(layers=0 if kind == "linear" else L, width=width, train_s=train_s,
                           wall_s=time.perf_counter() - t0, test_acc=correct / len(data.test.y)))
    return dict(study_s=time.perf_counter() - t_study, models=models)


def child_main(argv) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--child", required=True)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--workers", type=int, default=0, help="0: softmaxlab's default (one process per core)")
    ap.add_argument("--out", default=None)
    ap.add_argument("--data-dir", default=None)
    args = ap.parse_args(argv)
    fn = dict(softmaxlab=child_softmaxlab, torch_idiomatic=child_torch_idiomatic)[args.child]
    print("RESULT " + json.dumps(fn(args)), flush=True)


# ---- the parent ---------------------------------------------------------------------------------------------------


def run_child(cmd: list[str]) -> dict:
    """Run a child to completion; its JSON lines, process wall time and peak RSS (MB, from wait4)."""
    with tempfile.TemporaryFile("w+") as fo, tempfile.TemporaryFile("w+") as fe:
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=fo, stderr=fe, text=True)
        _, status, ru = os.wait4(p.pid, 0)  # reaps the child: its own rusage, peak RSS included
        wall = time.perf_counter() - t0
        p.returncode = code = os.waitstatus_to_exitcode(status)
        fo.seek(0)
        fe.seek(0)
        out, err = fo.read(), fe.read()
    if code != 0:
        raise SystemExit(f"child failed ({code}): {' '.join(cmd)}\n{err[-3000:]}")
    return dict(lines=out.splitlines(), wall_s=wall, rss_mb=ru.ru_maxrss / 1024)


def softmaxlab_child(args, tmp: Path, precision: str, seeds: int = 1, device: str = "cpu", workers: int = 0) -> dict:
    print(f"... softmaxlab {device} {precision}, {seeds} seed(s), workers {workers or 'default'}", file=sys.stderr,
          flush=True)
    out = tmp / f"runs-{device}-{precision}-{seeds}-{workers}"
    cmd = [sys.executable, __file__, "--child", "softmaxlab", "--epochs", str(args.epochs), "--seeds",
           str(seeds), "--precision", precision, "--out", str(out),
           "--device", device, "--workers", str(workers)]
    if args.data_dir:
        cmd += ["--data-dir", args.data_dir]
    r = run_child(cmd)
    return {**json.loads(next(ln for ln in r["lines"] if ln.startswith("RESULT "))[7:]), **r}


def keras_child(args, tmp: Path, specs: list[tuple[int, int]]) -> dict:
    import numpy as np

    from softmaxlab.mnist.study import load_data

    data = load_data(args.data_dir)
    npz = tmp / "split.npz"
    np.savez(npz, **{f"x_{k}": getattr(data, k).x.numpy() for k in ("train", "val", "test")},
             **{f"y_{k}": getattr(data, k).y.numpy() for k in ("train", "val", "test")})
    models = ",".join("linear" if L == 0 else f"{L}x{k}" for L, k in specs)
    r = run_child([sys.executable, str(HERE / "peers" / "keras_study.py"), "--data", str(npz), "--models", models,
                   "--epochs", str(args.epochs)])
    rows = [json.loads(ln) for ln in r["lines"] if ln.startswith("{")]
    for row in rows:
        row["train_s"] = row["fit_s"]  # Keras's fit includes its validation passes
    return dict(study_s=sum(row["wall_s"] for row in rows), models=rows, tensorflow=rows[0]["tensorflow"], **r)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=5, help="epochs per model (the assignment: 5)")
    ap.add_argument("--seeds", type=int, default=1, help="3 adds the 3-seed study")
    ap.add_argument("--no-keras", action="store_true", help="skip the Keras peer")
    ap.add_argument("--no-baseline", action="store_true", help="skip the idiomatic PyTorch loop")
    ap.add_argument("--gpu-only", action="store_true",
                    help="only the CUDA contenders and the CPU fp32 study they are compared with")
    ap.add_argument("--data-dir", default=None)
    args = ap.parse_args(argv)

    import torch
    from common import machine, matmul_peak, matmul_peak_concurrent, table, train_flops

    from softmaxlab.mnist.engine import bf16_gemm
    from softmaxlab.mnist.models import width_for_budget
    from softmaxlab.mnist.runner import cpu_count

    specs = [(0, 0)] + [(L, width_for_budget(L)) for L in range(1, 9)]
    cores = cpu_count()
    procs = min(cores, len(specs))  # softmaxlab's default: one training process per core
    per_proc_threads = max(1, cores // procs)

    gemm16 = bf16_gemm("cpu")  # emulated: softmaxlab's bf16 runs fp32 GEMMs, so the fp32 peak is its roofline

    def peaks() -> dict:
        """fp32 / bf16 GFLOP/s of one process on every core, and of each of `procs` processes at once."""
        one32 = matmul_peak(torch.float32)
        each32 = matmul_peak_concurrent(procs, per_proc_threads, "torch.float32")
        if gemm16 == "native":
            one16 = matmul_peak(torch.bfloat16)
            each16 = matmul_peak_concurrent(procs, per_proc_threads, "torch.bfloat16")
        else:  # torch's bf16 fallback here is ~0.3 GFLOP/s at 2048^3: minutes per timing, and nothing uses it
            one16, each16 = one32, each32
        return dict(one32=one32, one16=one16, each32=sum(each32) / procs, each16=sum(each16) / procs,
                    all32=sum(each32), all16=sum(each16))

    pk = peaks()
    have_tf = importlib.util.find_spec("tensorflow") is not None and not args.no_keras
    res: dict[str, dict] = {}
    if args.gpu_only and not torch.cuda.is_available():
        raise SystemExit("--gpu-only: no CUDA device here")
    with tempfile.TemporaryDirectory(prefix="softmaxlab-bench-") as tmp:
        tmp = Path(tmp)
        res["softmaxlab fp32"] = softmaxlab_child(args, tmp, "fp32")
        if not args.gpu_only:
            res["softmaxlab bf16"] = softmaxlab_child(args, tmp, "bf16")
            res["softmaxlab fp32, 1 process"] = softmaxlab_child(args, tmp, "fp32", workers=1)
            res["softmaxlab bf16, 1 process"] = softmaxlab_child(args, tmp, "bf16", workers=1)
        if not args.no_baseline and not args.gpu_only:
            cmd = [sys.executable, __file__, "--child", "torch_idiomatic", "--epochs", str(args.epochs)]
            r = run_child(cmd + (["--data-dir", args.data_dir] if args.data_dir else []))
            res["PyTorch idiomatic (DataLoader)"] = {
                **json.loads(next(ln for ln in r["lines"] if ln.startswith("RESULT "))[7:]), **r}
        if have_tf and not args.gpu_only:
            res["Keras peer (TF CPU)"] = keras_child(args, tmp, specs)
        if args.seeds > 1 and not args.gpu_only:
            res[f"softmaxlab fp32, {args.seeds} seeds"] = softmaxlab_child(args, tmp, "fp32", args.seeds)
        if torch.cuda.is_available():  # the GPU path: same study, data resident, one CUDA graph per step
            for prec in ("fp32", "bf16"):
                res[f"softmaxlab CUDA {prec}"] = softmaxlab_child(args, tmp, prec, device="cuda")
                if args.seeds > 1:
                    res[f"softmaxlab CUDA {prec}, {args.seeds} seeds"] = softmaxlab_child(
                        args, tmp, prec, args.seeds, device="cuda")
    again = peaks()  # before and after the contenders: the better of the two, so no fraction is flattered
    pk = {k: max(v, again[k]) for k, v in pk.items()}

    keras = res.get("Keras peer (TF CPU)")
    idio = res.get("PyTorch idiomatic (DataLoader)")
    print(f"machine: {machine()}" + (f", tensorflow {keras['tensorflow']}" if keras else ""))
    print(f"command: python benchmarks/study.py --epochs {args.epochs} --seeds {args.seeds}"
          + (" --no-keras" if args.no_keras else "") + (" --no-baseline" if args.no_baseline else ""))
    b16 = (f"bf16 {pk['one16']:.0f}" if gemm16 == "native" else
           "bf16 not timed (no bf16 matmul units: softmaxlab emulates bf16 with fp32 GEMMs, so its bf16 rows are "
           "compared with the fp32 peak)")
    print(f"large matmul (2048^3), one process on all {cores} cores: fp32 {pk['one32']:.0f} GFLOP/s, {b16}; "
          f"each of {procs} processes x {per_proc_threads} thread(s) at once: fp32 "
          f"{pk['each32']:.0f} (sum {pk['all32']:.0f})"
          + (f", bf16 {pk['each16']:.0f} (sum {pk['all16']:.0f})" if gemm16 == "native" else "")
          + (f"; CUDA fp32 {matmul_peak(torch.float32, 8192, device='cuda'):.0f}, bf16 "
             f"{matmul_peak(torch.bfloat16, 8192, device='cuda'):.0f}" if torch.cuda.is_available() else "")
          + ("" if have_tf else "; Keras peer skipped" if args.no_keras else "; tensorflow not installed: "
             "no Keras peer") + "\n")

    def acc(r):
        a = [m["test_acc"] for m in r["models"] if m.get("test_acc") is not None]
        return sum(a) / len(a)

    def layout(r):
        if "processes" not in r:
            return "-"
        return f"{r['processes']} x {r['models'][0]['threads']}"

    rows = []
    for name, r in res.items():
        rows.append([name, layout(r), f"{r['study_s']:.1f}", f"{r['wall_s']:.1f}",
                     f"{keras['study_s'] / r['study_s']:.2f}x" if keras else "-",
                     f"{idio['study_s'] / r['study_s']:.2f}x" if idio else "-",
                     f"{r.get('rss_all_mb', r['rss_mb']):.0f}", f"{acc(r):.4f}"])
    print(table(["contender", "processes x threads", "study s", "process wall s", "vs Keras",
                 "vs idiomatic PyTorch", "peak RSS MB (all processes)", "mean test acc"], rows))

    def by_layers(r):
        return {m["layers"]: m for m in r["models"] if m.get("seed", 0) == 0}

    if args.gpu_only:
        return gpu_table(res, specs, args, by_layers(res["softmaxlab fp32"]), by_layers, table)
    f32, b16 = by_layers(res["softmaxlab fp32"]), by_layers(res["softmaxlab bf16"])
    o32, o16 = by_layers(res["softmaxlab fp32, 1 process"]), by_layers(res["softmaxlab bf16, 1 process"])
    kr, ir = (by_layers(keras) if keras else {}), (by_layers(idio) if idio else {})
    peak16 = "bf16" if gemm16 == "native" else "fp32"
    rows, fl_tot, fr32, fr16, fro32 = [], 0.0, [], [], []
    for L, k in specs:
        fl = train_flops(L) * args.epochs
        fl_tot += fl
        t32, t16, to32, to16 = f32[L]["train_s"], b16[L]["train_s"], o32[L]["train_s"], o16[L]["train_s"]
        g32, g16, go32 = fl / t32 / 1e9, fl / t16 / 1e9, fl / to32 / 1e9
        fr32.append(g32 / pk["each32"])
        fr16.append(g16 / pk["each16"])
        fro32.append(go32 / pk["one32"])
        rows.append([("linear" if L == 0 else f"L={L} k={k}"), f"{f32[L]['params']:,}",
                     f"{t32 / args.epochs:.3f}", f"{g32:.0f}", f"{100 * fr32[-1]:.0f}%",
                     f"{t16 / args.epochs:.3f}", f"{g16:.0f}", f"{100 * fr16[-1]:.0f}%",
                     f"{to32 / args.epochs:.3f}", f"{100 * fro32[-1]:.0f}%", f"{to16 / args.epochs:.3f}",
                     f"{kr[L]['wall_s'] / f32[L]['wall_s']:.1f}x" if kr else "-",
                     f"{ir[L]['wall_s'] / f32[L]['wall_s']:.1f}x" if ir else "-",
                     f"{f32[L]['test_acc']:.4f}", f"{b16[L]['test_acc']:.4f}",
                     f"{100 * (b16[L]['test_acc'] - f32[L]['test_acc']):+.2f}",
                     f"{kr[L]['test_acc']:.4f}" if kr else "-"])
    print()
    print(table(["model", "params", "fp32 s/epoch", "fp32 GFLOP/s", "of its cores' fp32 peak", "bf16 s/epoch",
                 "bf16 GFLOP/s", f"of its cores' {peak16} peak", "1-process fp32 s/epoch", "of all-core fp32 peak",
                 "1-process bf16 s/epoch", "Keras/fp32 model wall", "idiomatic/fp32 model wall", "fp32 test acc",
                 "bf16 test acc", "bf16-fp32 pp", "Keras test acc"], rows))
    mean = lambda xs: 100 * sum(xs) / len(xs)  # noqa: E731
    s32, s16 = res["softmaxlab fp32"]["study_s"], res["softmaxlab bf16"]["study_s"]
    print(f"\nroofline, mean of the nine models: fp32 {mean(fr32):.0f}% of the fp32 peak of the cores each trained "
          f"on ({procs} processes x {per_proc_threads} thread(s), the default); one process on all cores "
          f"{mean(fro32):.0f}%; bf16 ({gemm16} GEMMs) {mean(fr16):.0f}% of the {peak16} peak.")
    print(f"whole machine, whole study (training FLOPs over the study's wall time, evaluation and records "
          f"included): fp32 {fl_tot / s32 / 1e9:.0f} GFLOP/s = {100 * fl_tot / s32 / 1e9 / pk['all32']:.0f}% of "
          f"the {procs}-process fp32 peak; bf16 {fl_tot / s16 / 1e9:.0f} GFLOP/s = "
          f"{100 * fl_tot / s16 / 1e9 / pk['all16']:.0f}% of the {peak16} peak.")
    print("s/epoch and GFLOP/s count training steps only (6 x params x 50,000 per epoch); the model-wall ratios "
          "include each side's validation and test passes (and Keras's graph tracing).")

    gpu_table(res, specs, args, f32, by_layers, table)


def gpu_table(res, specs, args, f32, by_layers, table) -> None:
    if "softmaxlab CUDA fp32" in res:
        c32, c16 = by_layers(res["softmaxlab CUDA fp32"]), by_layers(res["softmaxlab CUDA bf16"])
        rows = [[("linear" if L == 0 else f"L={L} k={k}"), f"{c32[L]['train_s'] / args.epochs:.3f}",
                 f"{c16[L]['train_s'] / args.epochs:.3f}", f"{f32[L]['train_s'] / c32[L]['train_s']:.1f}x",
                 f"{c32[L]['test_acc']:.4f}", f"{c16[L]['test_acc']:.4f}",
                 f"{100 * (c32[L]['test_acc'] - f32[L]['test_acc']):+.2f}"] for L, k in specs]
        print("\nGPU path (data on the device, one CUDA-graph replay per step):")
        print(table(["model", "CUDA fp32 s/epoch", "CUDA bf16 s/epoch", "CPU fp32 / CUDA fp32",
                     "CUDA fp32 test acc", "CUDA bf16 test acc", "CUDA-CPU fp32 pp"], rows))


if __name__ == "__main__":
    if "--child" in sys.argv:
        child_main(sys.argv[1:])
    else:
        main()
