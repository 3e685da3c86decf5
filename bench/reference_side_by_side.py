"""dvae's `train --preset reinmax` beside the reference implementation, run for run (not a test).

The reference is the MNIST-VAE code of the ReinMax paper (Liu et al. 2023), github.com/LiyuanLucasLiu/ReinMax,
`mnist_vae/gumbel_softmax_vae.py`. It is never part of dvae: fetch a copy and point --reference at its
root (the folder holding `mnist_vae/`). For each seed, one after the other (never two processes at
once, so that the timings are clean), the script runs

    python gumbel_softmax_vae.py --lr LR --temperature TAU --method REF --optim OPT \\
        --categorical-dim C --latent-dim L --seed S --epochs N --no-cuda
    python -m dvae_cli train --preset reinmax --method M --classes C --latent-vars L --epochs N \\
        --seed S --device cpu -o SCRATCH/dvae-seedS -q

with LR, TAU and OPT the preset's tuning of the estimator for the shape (dvae_cli.presets.TUNED: the
reference's reinmax_C_L.sh for reinmax, ReinMax_ASC's table 8 for the others), and prints one table: per epoch the training -ELBO (each side's own
forward sample, the reference's "Average loss", dvae's train_neg_elbo) and the test -ELBO (the
reference's "Test set loss", dvae's test_neg_elbo), mean +- sd over the seeds, the seconds per epoch
of each, and whether dvae's mean lies within the reference's seed range (min..max).

    PYTHONPATH=. python bench/reference_side_by_side.py --reference /path/to/ReinMax \\
        --data-dir /path/to/mnist --method reinmax --classes 10 --latent-vars 30 --epochs 5 --seeds 0,1,2

Work happens in a scratch folder (tempfile, outside the repository): a copy of the reference's
`gumbel_softmax_vae.py` and `model/`, MNIST's four files decompressed into data/MNIST/MNIST/raw (where
torchvision looks, so that it does not download), the reference's logs and dvae's run folders.

Timing: every line the reference prints is timestamped as it streams (python -u). Its epoch e takes
from its test line e-1 to its test line e (training and test pass); epoch 1 from the line the script
prints once its imports are done (its argument Namespace) to test line 1, and the time before that
(interpreter, torch and torchvision imports) is its start-up. dvae's epoch seconds are its
metrics.jsonl's (training, test pass and checkpoint writing); its start-up is the process's wall time
less their sum. Each process gets OMP_NUM_THREADS (and MKL_NUM_THREADS) = --threads; the load average
(`uptime`) at the start and the end is printed with the table, so that readers can judge the timings.
On the CPU the script also measures the fp32 GEMM rate (before the runs, --threads threads) and prints
the FLOP floor of an epoch: the network's matrix-multiply FLOPs at that rate.

`--json PATH` keeps every number (per seed, per epoch); `--render A.json [B.json ...]` prints the table
again from such records, those of one comparison run with other seeds taken together.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from dvae_cli.methods import make_method  # noqa: E402
from dvae_cli.presets import REINMAX  # noqa: E402

MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
               "t10k-labels-idx1-ubyte")
EPOCH_LINE = re.compile(r"^====> Epoch: (\d+) Average loss: (\S+)")
TEST_LINE = re.compile(r"^====> Test set loss: (\S+)")


def reference_method(method: str) -> str:
    """The reference's --method for dvae's `method` (model/categorical.py's names), with dvae's
    defaults for the settings the reference spells in the name (Gumbel-Rao's K, GST's gap)."""
    if method == "reinmax" or method == "st":
        return method
    if method == "st-gumbel":  # the reference's 'gumbel' is F.gumbel_softmax(hard=True): straight-through
        return "gumbel"
    if method == "gumbel-rao":
        return f"rao_gumbel-{make_method(method, {}).config.rao_samples}"
    if method == "gst":
        return f"gst-{make_method(method, {}).config.gst_gap:.1f}"
    if method == "gumbel":
        sys.exit("dvae's gumbel is the relaxed Gumbel-Softmax; the reference's --method gumbel is "
                 "F.gumbel_softmax(hard=True), straight-through Gumbel-Softmax: compare it with --method st-gumbel")
    sys.exit(f"the reference has no counterpart of dvae's method {method!r} "
             "(choose reinmax, st, st-gumbel, gumbel-rao or gst)")


def load_average() -> str:
    """`uptime`'s line (its load averages over 1, 5 and 15 minutes)."""
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "load average: " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def prepare(work: Path, reference: Path, data_dir: Path) -> Path:
    """The reference's script and estimators copied into `work`, MNIST decompressed where torchvision
    looks for it (data/MNIST/MNIST/raw relative to the script's working folder); returns the folder."""
    source = reference / "mnist_vae"
    if not (source / "gumbel_softmax_vae.py").is_file() or not (source / "model" / "vae.py").is_file():
        sys.exit(f"{reference} does not hold mnist_vae/gumbel_softmax_vae.py and mnist_vae/model/")
    folder = work / "reference"
    folder.mkdir()
    shutil.copy2(source / "gumbel_softmax_vae.py", folder)
    shutil.copytree(source / "model", folder / "model", ignore=shutil.ignore_patterns("__pycache__"))
    raw = folder / "data" / "MNIST" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in MNIST_FILES:
        plain, packed = data_dir / name, data_dir / f"{name}.gz"
        if plain.is_file():
            shutil.copyfile(plain, raw / name)
        elif packed.is_file():
            with gzip.open(packed, "rb") as src, open(raw / name, "wb") as dst:
                shutil.copyfileobj(src, dst)
        else:
            sys.exit(f"{data_dir} holds neither {name} nor {name}.gz")
    return folder


def environment(threads: int) -> dict:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    return env


def run_reference(python: str, folder: Path, args, tuned, ref_method: str, seed: int, log: Path) -> dict:
    """One reference run; its per-epoch losses and seconds, read from its output as it streams."""
    command = [python, "-u", "gumbel_softmax_vae.py", "--lr", repr(tuned.lr), "--temperature", repr(tuned.temperature),
               "--method", ref_method, "--optim", tuned.optimizer, "--categorical-dim", str(args.classes),
               "--latent-dim", str(args.latent_vars), "--seed", str(seed), "--epochs", str(args.epochs)]
    if args.device == "cpu":
        command.append("--no-cuda")
    train, test, test_times, imported, failed = [], [], [], None, False
    start = time.perf_counter()
    with open(log, "w") as out, subprocess.Popen(command, cwd=folder, env=environment(args.threads), text=True,
                                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, bufsize=1) as proc:
        for line in proc.stdout:
            now = time.perf_counter()
            out.write(f"{now - start:10.3f} {line}")
            if imported is None and line.startswith("Namespace("):
                imported = now
            elif m := EPOCH_LINE.match(line):
                train.append(float(m.group(2)))
            elif m := TEST_LINE.match(line):
                test.append(float(m.group(1)))
                test_times.append(now)
            elif "Error in Training" in line or "not supported" in line:
                failed = True
        code = proc.wait()
    wall = time.perf_counter() - start
    if code or failed or len(test) != args.epochs:
        sys.exit(f"the reference's run for seed {seed} failed (exit {code}, {len(test)} of {args.epochs} epochs); "
                 f"see {log}")
    imported = imported if imported is not None else start
    marks = [imported, *test_times]
    return {"command": command, "train": train, "test": test,
            "seconds": [b - a for a, b in zip(marks, marks[1:])], "startup": imported - start, "wall": wall,
            "log": str(log)}


def run_dvae(python: str, work: Path, args, seed: int) -> dict:
    """One `dvae train --preset reinmax` run; its metrics.jsonl's per-epoch values."""
    out = work / f"dvae-seed{seed}"
    command = [python, "-m", "dvae_cli", "train", "--preset", "reinmax", "--method", args.method,
               "--classes", str(args.classes), "--latent-vars", str(args.latent_vars), "--epochs", str(args.epochs),
               "--seed", str(seed), "--device", args.device, "-o", str(out), "-q", "--data-dir", str(args.data_dir.resolve())]
    start = time.perf_counter()
    proc = subprocess.run(command, cwd=work, env=environment(args.threads), capture_output=True, text=True)
    wall = time.perf_counter() - start
    (work / f"dvae-seed{seed}.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode:
        sys.exit(f"dvae's run for seed {seed} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    config = json.loads((out / "config.json").read_text())["train"]
    seconds = [m["seconds"] for m in metrics]
    return {"command": command, "train": [m["train_neg_elbo"] for m in metrics],
            "test": [m["test_neg_elbo"] for m in metrics], "seconds": seconds, "startup": wall - sum(seconds),
            "wall": wall, "lr": config["lr"], "optimizer": config["optimizer"], "hparams": config["hparams"],
            "folder": str(out)}


def spread(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values), "values": values}


def compare(reference: dict, dvae: dict, epochs: int) -> list[dict]:
    """Per epoch: each side's spread over the seeds, whether dvae's mean lies in the reference's range."""
    rows = []
    for e in range(epochs):
        row = {"epoch": e + 1}
        for key in ("train", "test", "seconds"):
            ref = spread([run[key][e] for run in reference.values()])
            ours = spread([run[key][e] for run in dvae.values()])
            row[key] = {"reference": ref, "dvae": ours}
            if key != "seconds":
                row[key]["within"] = ref["min"] <= ours["mean"] <= ref["max"]
                row[key]["difference"] = ours["mean"] - ref["mean"]
                error = math.sqrt((ref["sd"] ** 2 + ours["sd"] ** 2) / len(ref["values"]))  # equal seed counts
                row[key]["welch_t"] = row[key]["difference"] / error if error > 0 else None
        row["seconds"]["ratio"] = row["seconds"]["dvae"]["mean"] / row["seconds"]["reference"]["mean"]
        rows.append(row)
    return rows


def table(rows: list[dict]) -> str:
    def pm(s: dict) -> str:
        return f"{s['mean']:8.3f} ± {s['sd']:5.3f}"

    head = (f"{'epoch':>5}  {'ref train':>16}  {'dvae train':>16}  {'ref test':>16}  {'dvae test':>16}  "
            f"{'ref s/ep':>8}  {'dvae s/ep':>9}  {'ratio':>5}")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['epoch']:>5}  {pm(r['train']['reference'])}  {pm(r['train']['dvae'])}  "
                     f"{pm(r['test']['reference'])}  {pm(r['test']['dvae'])}  "
                     f"{r['seconds']['reference']['mean']:8.1f}  {r['seconds']['dvae']['mean']:9.1f}  "
                     f"{r['seconds']['ratio']:5.2f}")
    lines.append("")
    for r in rows:
        verdicts = []
        for key in ("train", "test"):
            ref, ours = r[key]["reference"], r[key]["dvae"]
            t = r[key]["welch_t"]
            verdicts.append(f"{key} dvae {ours['mean']:.3f} {'within' if r[key]['within'] else 'OUTSIDE'} "
                            f"reference [{ref['min']:.3f}, {ref['max']:.3f}] (difference {r[key]['difference']:+.3f}"
                            + (f", t {t:+.2f})" if t is not None else ")"))
        lines.append(f"epoch {r['epoch']}: " + "; ".join(verdicts)
                     + f"; s/epoch dvae/reference {r['seconds']['ratio']:.2f}")
    return "\n".join(lines)


def summary(rows: list[dict], reference: dict, dvae: dict) -> dict:
    later = rows[1:] or rows  # epoch 1 carries each side's one-off costs (first touches, allocator warm-up)
    ratio = (statistics.fmean(r["seconds"]["dvae"]["mean"] for r in later)
             / statistics.fmean(r["seconds"]["reference"]["mean"] for r in later))
    return {
        "train_within_every_epoch": all(r["train"]["within"] for r in rows),
        "test_within_every_epoch": all(r["test"]["within"] for r in rows),
        "train_within_epochs": sum(r["train"]["within"] for r in rows),
        "test_within_epochs": sum(r["test"]["within"] for r in rows),
        "seconds_ratio": ratio,
        "seconds_ratio_epochs": f"{later[0]['epoch']}..{later[-1]['epoch']}",
        "seconds_ratio_at_most_half": ratio <= 0.5,
        "startup_reference": statistics.fmean(run["startup"] for run in reference.values()),
        "startup_dvae": statistics.fmean(run["startup"] for run in dvae.values()),
    }


def gemm_gflops(threads: int, n: int = 1024, seconds: float = 2.0) -> float:
    """This machine's fp32 matrix-multiply rate (GFLOP/s) on an n x n x n product with `threads` threads
    (bench/epoch_time.py's probe)."""
    import torch  # noqa: PLC0415

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a, b = torch.randn(n, n), torch.randn(n, n)
        for _ in range(3):
            a @ b
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            a @ b
            count += 1
        return 2 * n**3 * count / (time.perf_counter() - start) / 1e9
    finally:
        torch.set_num_threads(before)


def epoch_flops(classes: int, latent_vars: int, train: int = 60_000, test: int = 10_000) -> float:
    """Matrix-multiply FLOPs of one epoch of the preset's network (784-512-256-(L x C) and its mirror):
    forward, backward (weight gradients of every layer, input gradients of all but the first) on the
    training images, and one forward pass on the test images."""
    sizes = (784, 512, 256, latent_vars * classes)
    layers = [a * b for a, b in zip(sizes, sizes[1:])]
    weights = 2 * sum(layers)
    return 2 * (3 * weights - layers[0]) * train + 2 * weights * test


SAME = ("method", "reference_method", "classes", "latent_vars", "lr", "temperature", "optimizer", "epochs",
        "threads", "device")


def merge(records: list[dict]) -> dict:
    """Records of one comparison run with different seeds, as one record (the first one's machine facts,
    the first start and the last end; the GEMM rate of the first that measured it)."""
    first = dict(records[0])
    for other in records[1:]:
        differ = [k for k in SAME if other.get(k) != first.get(k)]
        if differ:
            sys.exit(f"the records differ in {', '.join(differ)}: not one comparison")
        overlap = set(other["reference"]) & set(first["reference"])
        if overlap:
            sys.exit(f"seeds {', '.join(sorted(overlap))} appear in more than one record")
        first["reference"] = {**first["reference"], **other["reference"]}
        first["dvae"] = {**first["dvae"], **other["dvae"]}
        first["load_end"] = other["load_end"]
        first["gemm_gflops"] = first.get("gemm_gflops") or other.get("gemm_gflops")
    if len(records) > 1:
        first["load_start"] = " / ".join(r["load_start"] for r in records)
        first["load_end"] = " / ".join(r["load_end"] for r in records)
    return first


def report(record: dict) -> None:
    """The table, the verdicts and the timing context of a record (a fresh run's or a saved --json)."""
    reference = {int(k): v for k, v in record["reference"].items()}
    dvae = {int(k): v for k, v in record["dvae"].items()}
    seeds = sorted(reference)
    rows = compare(reference, dvae, record["epochs"])
    verdict = summary(rows, reference, dvae)
    record.update(rows=rows, verdict=verdict)
    print(f"# {record['method']} (reference --method {record['reference_method']}), {record['classes']} classes x "
          f"{record['latent_vars']} variables, lr {record['lr']:g}, temperature {record['temperature']:g}, "
          f"{record['optimizer']}, {record['epochs']} epochs, seeds {','.join(map(str, seeds))}, "
          f"OMP_NUM_THREADS={record['threads']}, device {record['device']}")
    print(f"# {record['machine']}")
    print(f"# start: {record['load_start']}")
    print(f"# end:   {record['load_end']}")
    print()
    print(f"-ELBO in nats (mean ± sd over seeds {','.join(map(str, seeds))}); s/ep = mean seconds per epoch "
          f"(training + test pass); ratio = dvae / reference; t = Welch's t of dvae's mean against the reference's")
    print(table(rows))
    print()
    n = len(rows)
    print(f"train -ELBO: dvae's mean within the reference's seed range in {verdict['train_within_epochs']} of {n} "
          f"epochs: {'yes' if verdict['train_within_every_epoch'] else 'no'}")
    print(f"test -ELBO: dvae's mean within the reference's seed range in {verdict['test_within_epochs']} of {n} "
          f"epochs: {'yes' if verdict['test_within_every_epoch'] else 'no'}")
    print(f"s/epoch dvae / reference over epochs {verdict['seconds_ratio_epochs']}: {verdict['seconds_ratio']:.2f} "
          f"(<= 0.5: {'yes' if verdict['seconds_ratio_at_most_half'] else 'no'}); start-up (imports, data) "
          f"reference {verdict['startup_reference']:.1f} s, dvae {verdict['startup_dvae']:.1f} s")
    if record.get("gemm_gflops"):
        flops = epoch_flops(record["classes"], record["latent_vars"])
        floor = flops / (record["gemm_gflops"] * 1e9)
        later = rows[1:] or rows
        ref_s = statistics.fmean(r["seconds"]["reference"]["mean"] for r in later)
        dvae_s = statistics.fmean(r["seconds"]["dvae"]["mean"] for r in later)
        print(f"FLOP floor of an epoch: {flops / 1e9:.0f} GFLOP at {record['gemm_gflops']:.1f} GFLOP/s "
              f"(fp32 1024^3 products, {record['threads']} thread(s)) = {floor:.1f} s = {floor / ref_s:.2f}x the "
              f"reference's s/epoch; reference {ref_s / floor:.2f}x the floor, dvae {dvae_s / floor:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference", type=Path, help="root of a copy of LiyuanLucasLiu/ReinMax")
    parser.add_argument("--data-dir", type=Path, default=os.environ.get("DVAE_DATA_DIR"),
                        help="folder of MNIST's four IDX files, gzipped or not (default: $DVAE_DATA_DIR)")
    parser.add_argument("--method", default="reinmax", help="dvae's method: reinmax, st, st-gumbel, gumbel-rao, gst")
    parser.add_argument("--classes", type=int, default=10, help="C, classes per variable")
    parser.add_argument("--latent-vars", type=int, default=30, help="L, categorical variables")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds, each run by both sides")
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of every process")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"),
                        help="cpu (the reference gets --no-cuda) or cuda (both on the GPU)")
    parser.add_argument("--python", default=sys.executable, help="interpreter for both sides (torch, torchvision)")
    parser.add_argument("--json", metavar="PATH", help="also write every number as JSON to PATH ('-': stdout)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder (logs, run folders)")
    parser.add_argument("--render", type=Path, nargs="+", metavar="JSON",
                        help="run nothing: print the table of the records earlier --json runs wrote (several: "
                             "of the same comparison with other seeds, taken together)")
    args = parser.parse_args()
    if args.render:
        report(merge([json.loads(path.read_text()) for path in args.render]))
        return
    if args.reference is None:
        parser.error("--reference is required")
    if args.data_dir is None:
        parser.error("--data-dir (or $DVAE_DATA_DIR) is required")
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    tuning = REINMAX.tuning(args.method, args.classes, args.latent_vars)
    if tuning is None:
        sys.exit(f"the reinmax preset has no tuning for {args.classes} classes x {args.latent_vars} variables; "
                 f"tuned shapes: {', '.join(f'{c}x{l}' for c, l in REINMAX.shapes)}")
    tuned = tuning.tuned
    ref_method = reference_method(args.method)

    import torch  # noqa: PLC0415 (for the record and the GEMM probe)

    record = {"method": args.method, "reference_method": ref_method, "classes": args.classes,
              "latent_vars": args.latent_vars, "lr": tuned.lr, "temperature": tuned.temperature,
              "optimizer": tuned.optimizer, "epochs": args.epochs, "seeds": seeds, "threads": args.threads,
              "device": args.device, "load_start": load_average(),
              "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}, python "
                         f"{platform.python_version()}, torch {torch.__version__}"}
    print(f"# {args.method} (reference --method {ref_method}), {args.epochs} epochs, seeds {args.seeds}; "
          f"start: {record['load_start']}", flush=True)
    if args.device == "cpu":
        record["gemm_gflops"] = gemm_gflops(args.threads)

    work = Path(tempfile.mkdtemp(prefix="dvae-reference-"))
    try:
        folder = prepare(work, args.reference.resolve(), args.data_dir.resolve())
        reference, dvae = {}, {}
        for seed in seeds:  # one process at a time; the two sides alternate so that both see the same load
            reference[seed] = run_reference(args.python, folder, args, tuned, ref_method, seed,
                                            work / f"reference-seed{seed}.log")
            print(f"# seed {seed} reference: {reference[seed]['wall']:.1f} s wall", flush=True)
            dvae[seed] = run_dvae(args.python, work, args, seed)
            print(f"# seed {seed} dvae: {dvae[seed]['wall']:.1f} s wall", flush=True)
        got = (dvae[seeds[0]]["lr"], dvae[seeds[0]]["optimizer"],
               sorted({dvae[seeds[0]]["hparams"][k] for k in make_method(args.method, {}).temperature}))
        if got != (tuned.lr, tuned.optimizer, [tuned.temperature]):
            print(f"# WARNING: dvae ran with lr, optimizer, temperature {got}, the reference with "
                  f"{(tuned.lr, tuned.optimizer, tuned.temperature)}", flush=True)
        record.update(load_end=load_average(), reference=reference, dvae=dvae)
        print()
        report(record)
        if args.keep:
            print(f"# scratch folder kept: {work}")
        if args.json:
            text = json.dumps(record, indent=1)
            if args.json == "-":
                print(text)
            else:
                Path(args.json).write_text(text + "\n")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
