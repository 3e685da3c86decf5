"""The optimizers a run can use (`--optimizer`), each element-wise, so that runs trained together
(multirun.py) stack their states along a leading dimension and stay each run's own.

`radam` is RAdam (Liu et al., ICLR 2020, "On the Variance of the Adaptive Learning Rate and Beyond")
as torch.optim.RAdam computes it, run on Adam's fused kernel: torch's RAdam has no fused form, and its
per-tensor loop took about a quarter of a step of the reinmax preset's network on one CPU thread.

Owns: the optimizer registry and `make_optimizer`. Must not: know about runs or files.
"""

from __future__ import annotations

import math

import torch


class RAdam(torch.optim.Adam):
    """RAdam on the fused Adam kernel, the same steps as torch.optim.RAdam (no weight decay).

    With rho_inf = 2 / (1 - beta2) - 1 and rho_t = rho_inf - 2 t beta2^t / (1 - beta2^t): while
    rho_t <= 5 (the first 5 steps) a step moves by lr times the bias-corrected first moment alone;
    after, by lr r_t m_hat sqrt(1 - beta2^t) / (sqrt(v) + eps), r_t the rectification. That is Adam's
    step with lr r_t and eps / sqrt(1 - beta2^t) (Adam adds eps after the bias correction, RAdam
    before). The step count is kept in the parameter group (`radam_step`), so that computing r_t
    reads nothing back from the device, and the state has Adam's keys (step, exp_avg, exp_avg_sq).
    """

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 fused: bool | None = None):
        super().__init__(params, lr=lr, betas=betas, eps=eps, fused=fused)
        for group in self.param_groups:
            group.setdefault("radam_step", 0)

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            if "radam_step" not in group:  # a state saved by torch.optim.RAdam: its count, read once
                steps = [self.state[p]["step"] for p in group["params"] if self.state[p]]
                group["radam_step"] = int(steps[0]) if steps else 0
            t = group["radam_step"] = group["radam_step"] + 1
            rho_inf = 2 / (1 - beta2) - 1
            rho_t = rho_inf - 2 * t * beta2**t / (1 - beta2**t)
            lr, eps = group["lr"], group["eps"]
            if rho_t > 5:
                rect = math.sqrt((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t))
                group["lr"], group["eps"] = lr * rect, eps / math.sqrt(1 - beta2**t)
                try:
                    super().step()
                finally:
                    group["lr"], group["eps"] = lr, eps
                continue
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                state["exp_avg"].lerp_(p.grad, 1 - beta1)
                state["exp_avg_sq"].mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
                p.add_(state["exp_avg"], alpha=-lr / (1 - beta1**t))
        return None


OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {"adam": torch.optim.Adam, "radam": RAdam}


def make_optimizer(name: str, params, lr: float, device: torch.device) -> torch.optim.Optimizer:
    """The run's optimizer over `params`, on the fused kernel where torch has one for the device."""
    fused = {"fused": True} if device.type in ("cpu", "cuda") else {}
    return OPTIMIZERS[name](params, lr=lr, **fused)
