"""The CUDA path: host synchronisations per epoch, --compile against eager, the gathered decode,
several runs trained together.
Skipped without a CUDA device; bench/gpu.sh runs them on a GPU machine (pytest -m cuda)."""

import warnings

import pytest
import torch
import torch.nn.functional as F

from dvae_cli.model import DiscreteVAE
from test_host_syncs import _group, _run

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (bench/gpu.sh)")]


@pytest.mark.parametrize("method, compile", [("dtp", False), ("gumbel", False), ("dtp", True)])
def test_an_epoch_synchronises_a_fixed_number_of_times(mnist_dir, method, compile):
    syncs = []
    for images in (200, 600):
        run = _run(mnist_dir, method, images, device="cuda", compile=compile)
        run.train_epoch(run.method.schedule(0))  # the first epoch compiles and warms up
        torch.cuda.synchronize()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                run.train_epoch(run.method.schedule(1))
            finally:
                torch.cuda.set_sync_debug_mode("default")
        syncs.append(len([w for w in caught if "synchroniz" in str(w.message)]))
    assert syncs[0] == syncs[1], syncs


def test_runs_trained_together_synchronise_a_fixed_number_of_times_and_equal_runs_alone(mnist_dir):
    syncs = []
    for images in (200, 600):
        group = _group(mnist_dir, "dtp", images, device="cuda")
        group.train_epoch(group.runs[0].method.schedule(0))
        torch.cuda.synchronize()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                group.train_epoch(group.runs[0].method.schedule(1))
            finally:
                torch.cuda.set_sync_debug_mode("default")
        syncs.append(len([w for w in caught if "synchroniz" in str(w.message)]))
    assert syncs[0] == syncs[1], syncs
    alone = _run(mnist_dir, "dtp", 600, device="cuda", seed=2)
    for epoch in (0, 1):
        alone.train_epoch(alone.method.schedule(epoch))
    group.unstack()
    for name, weight in alone.model.state_dict().items():  # TF32 and kernel choice differ: loose
        torch.testing.assert_close(group.runs[2].model.state_dict()[name], weight, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("method", ["gumbel"])  # tau changes every epoch
def test_compiled_training_follows_eager_without_recompiling(mnist_dir, method, monkeypatch):
    weights = []
    for compile in (False, True):
        run = _run(mnist_dir, method, 300, device="cuda", compile=compile)
        run.train_epoch(run.method.schedule(0))
        with monkeypatch.context() as patch:
            patch.setattr(torch._dynamo.config, "error_on_recompile", True)  # a new tau is an input
            sums = [run.train_epoch(run.method.schedule(epoch)) for epoch in (1, 2)]
        weights.append({k: v.float().cpu() for k, v in run.model.state_dict().items()})
    for k in weights[0]:
        torch.testing.assert_close(weights[1][k], weights[0][k], rtol=1e-3, atol=1e-4)
    assert all(v == v for s in sums for v in s.values())  # not NaN


def test_decode_indices_on_cuda_is_the_dense_decode():
    torch.manual_seed(0)
    model = DiscreteVAE().cuda()
    indices = torch.randint(0, 10, (256, 30), device="cuda")
    torch.testing.assert_close(model.decode_indices(indices), model.decode(F.one_hot(indices, 10).float()),
                               rtol=1e-4, atol=1e-4)
