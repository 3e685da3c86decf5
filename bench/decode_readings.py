"""How a checkpoint's reconstruction log-likelihood depends on what the decoder is given (not a test).

Table 5.1 reports log p(x|y) without saying which y. This prints, per checkpoint and split, the
per-image mean of log p(x|y) for y = one exact one-hot Gumbel-max sample of q(y|x) (dvae's
metric), y = the argmax one-hot code, y = the probabilities pi(x) themselves, and, for
Gumbel-Softmax checkpoints, y = the relaxed sample at the checkpoint's temperature; plus the
classes each variable effectively uses (perplexity of the mean pi over the split).

    DVAE_DATA_DIR=/path/to/mnist python bench/decode_readings.py RUN_OR_FILE [...] [--splits train,valid]
"""

from __future__ import annotations

import argparse

import torch

from dvae_cli.checkpoint import load_checkpoint
from dvae_cli.data import load_split
from dvae_cli.evaluate import code_statistics, elbo_terms, relaxed_log_lik
from dvae_cli.model import log_likelihood, one_hot_argmax

BATCH = 1000


@torch.no_grad()
def readings(model: torch.nn.Module, images: torch.Tensor, seed: int = 0) -> dict[str, float]:
    """Mean log p(x|y) per image for the sample (dvae's evaluation), argmax and pi readings of y."""
    totals = {"argmax": 0.0, "pi": 0.0}
    for start in range(0, len(images), BATCH):
        x = images[start:start + BATCH]
        log_pi = model.encode(x)
        for name, y in (("argmax", one_hot_argmax(log_pi)), ("pi", log_pi.exp())):
            totals[name] += log_likelihood(model.decode(y), x).sum().item()
    sample = elbo_terms(model, images, torch.Generator().manual_seed(seed))["log_lik"]
    return {"sample": sample, **{name: total / len(images) for name, total in totals.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("--splits", default="train,valid")
    args = parser.parse_args()
    print(f"{'checkpoint':45} {'split':6} {'sample':>9} {'argmax':>9} {'pi':>9} {'relaxed':>9} {'classes':>8}")
    for path in args.checkpoints:
        ckpt = load_checkpoint(path)
        for split in args.splits.split(","):
            images = load_split(split)
            r = readings(ckpt.model, images)
            relaxed = ""
            if "tau" in ckpt.metrics:
                generator = torch.Generator().manual_seed(0)
                relaxed = f"{relaxed_log_lik(ckpt.model, images, ckpt.metrics['tau'], generator):9.2f}"
            classes = code_statistics(ckpt.model, images)["perplexity_mean"]
            print(f"{str(path):45} {split:6} {r['sample']:9.2f} {r['argmax']:9.2f} {r['pi']:9.2f} "
                  f"{relaxed:>9} {classes:8.2f}")


if __name__ == "__main__":
    main()
