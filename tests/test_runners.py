"""The suite's runners (dvae_cli.experiments): local workers and a Ray cluster give the numbers of
one run after another, survive a killed worker, never train a run twice, stop on Ctrl-C keeping
every run's last epoch, report a failed run and go on; --dry-run's plan; the published records."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dvae_cli.errors import DVAEError
from dvae_cli.experiments import Sequential, Workers, run_plan
from dvae_cli.experiments.reinmax import agreement, load_records, plan_suite, record_beside
from dvae_cli.experiments.runners import import_ray
from dvae_cli.model import ModelConfig
from dvae_cli.runfolder import read_metrics
from dvae_cli.train import TrainConfig

EPOCHS = 6
METRICS = ("train_neg_elbo", "test_neg_elbo", "train_neg_elbo_onehot")


def suite_args(mnist_dir: Path, out: Path, *extra) -> list[str]:
    return [sys.executable, "-m", "dvae_cli", "reproduce", "--suite", "reinmax", "--shapes", "8x4", "--methods",
            "reinmax,st", "--seeds", "0,1", "--epochs", str(EPOCHS), "--train-limit", "1000", "--threads", "1",
            "--data-dir", str(mnist_dir), "--device", "cpu", "-o", str(out), "--json", *map(str, extra)]


def numbers(results: dict) -> dict:
    return {(row["method"], run["seed"]): [run["metrics"][k] for k in METRICS]
            for row in results["rows"] for run in row["runs"]}


@pytest.fixture(scope="session")
def sequential(tmp_path_factory, mnist_dir) -> dict:
    """The suite run one run after another in one process: the numbers every runner must give."""
    out = tmp_path_factory.mktemp("sequential")
    done = subprocess.run(suite_args(mnist_dir, out), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return numbers(json.loads(done.stdout))


def same(got: dict, want: dict) -> bool:
    return got.keys() == want.keys() and all(
        abs(a - b) <= 1e-5 * abs(b) for key in want for a, b in zip(got[key], want[key]))


def kill_one_worker(out: Path, driver: subprocess.Popen) -> str:
    """SIGKILL the process training a run of `out` once it has completed an epoch (and not its last);
    the folder's lock names it. Returns the run's folder name."""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and driver.poll() is None:
        for run in sorted(out.glob("8x4-*")):
            try:
                epochs = len(read_metrics(run))
                pid = json.loads((run / ".lock").read_text())["pid"]
            except (OSError, ValueError, KeyError):
                continue
            if 1 <= epochs < EPOCHS - 1 and pid != driver.pid:
                os.kill(pid, signal.SIGKILL)
                return run.name
        time.sleep(0.01)
    raise AssertionError("no worker was caught mid-run")


def events(stderr: str) -> list[dict]:
    return [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]


def test_workers_give_the_sequential_numbers_and_survive_a_killed_worker(tmp_path, mnist_dir, sequential):
    out = tmp_path / "workers"
    driver = subprocess.Popen(suite_args(mnist_dir, out, "--workers", 2), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    killed = kill_one_worker(out, driver)
    stdout, stderr = driver.communicate(timeout=300)
    assert driver.returncode == 0, stderr
    retried = [e for e in events(stderr) if e["event"] == "retry"]
    assert [e["folder"] for e in retried] == [str(out / killed)] and "SIGKILL" in retried[0]["message"]
    assert same(numbers(json.loads(stdout)), sequential)
    assert [m["epoch"] for m in read_metrics(out / killed)] == list(range(1, EPOCHS + 1))


def test_a_ray_cluster_gives_the_same_numbers_and_survives_a_killed_worker(tmp_path, mnist_dir, sequential):
    pytest.importorskip("ray")
    ray = shutil.which("ray", path=str(Path(sys.executable).parent)) or shutil.which("ray")
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    temp = Path("/tmp") / f"ray-test-{os.getpid()}"  # short: Ray's socket paths must fit 107 bytes
    started = subprocess.run([ray, "start", "--head", "--num-cpus", "2", "--include-dashboard", "false",
                              "--temp-dir", str(temp), "--disable-usage-stats"], capture_output=True, text=True,
                             env=env, timeout=120)
    assert started.returncode == 0, started.stderr
    try:
        out = tmp_path / "ray"
        driver = subprocess.Popen(suite_args(mnist_dir, out, "--ray", "auto"), stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, env=env)
        killed = kill_one_worker(out, driver)
        stdout, stderr = driver.communicate(timeout=300)
        assert driver.returncode == 0, stderr
        assert [e["folder"] for e in events(stderr) if e["event"] == "retry"] == [str(out / killed)]
        assert same(numbers(json.loads(stdout)), sequential)
    finally:
        subprocess.run([ray, "stop", "--force"], capture_output=True, env=env, timeout=120)
        shutil.rmtree(temp, ignore_errors=True)


def test_two_drivers_on_one_folder_train_each_run_once(tmp_path, mnist_dir, sequential):
    out = tmp_path / "shared"
    drivers = [subprocess.Popen(suite_args(mnist_dir, out, "--workers", 2), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for _ in range(2)]
    finished = [driver.communicate(timeout=400) for driver in drivers]
    assert all(driver.returncode == 0 for driver in drivers), [err for _, err in finished]
    trained = [e["folder"] for _, err in finished for e in events(err)
               if e["event"] == "done" and e["status"] in ("trained", "resumed")]
    assert sorted(trained) == sorted(str(p) for p in out.glob("8x4-*"))  # each run by exactly one driver
    for stdout, _ in finished:
        assert same(numbers(json.loads(stdout)), sequential)


def test_ctrl_c_stops_every_worker_keeping_their_epochs_and_a_rerun_finishes(tmp_path, mnist_dir, sequential):
    out = tmp_path / "stopped"
    driver = subprocess.Popen(suite_args(mnist_dir, out, "--workers", 2), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not any(len(read_metrics(run)) >= 1 for run in out.glob("8x4-*") if (run / "metrics.jsonl").exists()):
        assert time.monotonic() < deadline and driver.poll() is None
        time.sleep(0.01)
    driver.send_signal(signal.SIGINT)  # the driver alone: it stops its workers
    _, stderr = driver.communicate(timeout=120)
    assert driver.returncode == 130, stderr
    assert not list(out.glob("8x4-*/.lock"))  # every worker gone, its lock released
    for run in out.glob("8x4-*"):
        epochs = [m["epoch"] for m in read_metrics(run)]
        assert epochs == list(range(1, len(epochs) + 1))
    again = subprocess.run(suite_args(mnist_dir, out, "--workers", 2), capture_output=True, text=True,
                           timeout=300)
    assert again.returncode == 0, again.stderr
    assert same(numbers(json.loads(again.stdout)), sequential)


def test_a_failed_run_is_reported_and_the_others_go_on(tmp_path, mnist_dir):
    base = TrainConfig(epochs=1, train_limit=200, data_dir=str(mnist_dir), device="cpu",
                       model=ModelConfig(latent_vars=3, classes=4, hidden=16))
    plan = plan_suite([(4, 3)], ["st"], [0, 1], tmp_path, base)
    plan[0] = dataclasses.replace(plan[0], config=dataclasses.replace(plan[0].config, lr=1e30))  # diverges
    for runner in (Sequential(threads=1), Workers(2, threads=1)):
        outcomes = run_plan(plan, runner)
        failed = outcomes[plan[0].folder]
        assert failed.status == "failed" and "not finite" in failed.message
        assert outcomes[plan[1].folder].ok
        for run in plan:
            shutil.rmtree(run.folder, ignore_errors=True)


def test_dry_run_prints_the_plan_and_its_cpu_hours(mnist_dir):
    from typer.testing import CliRunner
    from dvae_cli.cli import app

    result = CliRunner().invoke(app, ["reproduce", "--suite", "reinmax", "--shapes", "8x4,4x24", "--methods",
                                      "st,reinmax", "--seeds", "0,1,2", "--data-dir", str(mnist_dir), "--device",
                                      "cpu", "--dry-run", "--json", "-o", "/nonexistent/never-made"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert len(report["plan"]) == 12 and all(run["epochs_left"] == 160 and run["seconds"] > 0 for run in report["plan"])
    assert report["estimate"]["cpu_hours"] > 0 and report["estimate"]["gpu"] == "unmeasured"
    assert not Path("/nonexistent/never-made").exists()


def test_an_empty_list_is_refused_not_taken_as_all():
    from typer.testing import CliRunner
    from dvae_cli.cli import app

    for flag in ("--shapes", "--methods"):
        result = CliRunner().invoke(app, ["reproduce", "--suite", "reinmax", flag, "", "--dry-run"])
        assert result.exit_code == 1 and "is empty" in result.output


def test_without_ray_the_error_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(DVAEError, match=r"pip install 'dvae\[ray\]'"):
        import_ray()


def test_the_published_records_carry_their_source_and_sit_beside_rows():
    records = load_records()
    assert records and all(r["source"].get("commit") or r["source"].get("paper") for r in records)
    cv = record_beside(records, "reinmax", "10x30", "reinmax-cv")
    assert cv["n_seeds"] == 10 and round(cv["train_neg_elbo"], 2) == 98.07 and round(cv["test_neg_elbo"], 2) == 100.49
    row = {"epochs": 160, "record": cv, "mean": {"train_neg_elbo": 98.1, "test_neg_elbo": 100.5}}
    assert agreement(row) == "agrees"
    assert agreement({**row, "mean": {"train_neg_elbo": 110.0, "test_neg_elbo": 100.5}}) == "disagrees (train)"
    assert agreement({**row, "epochs": 20}) == "record at 160 epochs"


def test_report_reads_partial_runs_at_their_epoch_and_trains_nothing(tmp_path, mnist_dir):
    from typer.testing import CliRunner
    from dvae_cli.cli import app

    args = ["reproduce", "--suite", "reinmax", "--shapes", "4x3", "--methods", "st", "--train-limit", "200",
            "--data-dir", str(mnist_dir), "--device", "cpu", "-o", str(tmp_path), "-q", "--json"]
    first = CliRunner().invoke(app, [*args, "--seeds", "0", "--epochs", "1"])
    assert first.exit_code == 0, first.output
    report = CliRunner().invoke(app, [*args, "--seeds", "0,1", "--epochs", "3", "--report"])
    assert report.exit_code == 0, report.output
    (row,) = json.loads(report.stdout)["rows"]
    assert row["epochs_run"] == [1] and [r["status"] for r in row["runs"]] == ["partial"]
    assert not (tmp_path / "4x3-st-seed1").exists() and len(read_metrics(tmp_path / "4x3-st-seed0")) == 1


def test_a_ray_task_refuses_a_folder_the_driver_does_not_share(tmp_path):
    from dvae_cli.experiments.runners import TOKEN, ray_train

    job = {"config": TrainConfig().to_dict(), "folder": str(tmp_path / "run"), "threads": 1}
    kind, message = ray_train(job, "the-drivers-token")  # no token in this node's folder: not the driver's
    assert kind == "failed" and "shares" in message and not (tmp_path / "run").exists()
    (tmp_path / TOKEN).write_text("another-drivers-token\n")
    assert ray_train(job, "the-drivers-token")[0] == "failed"
