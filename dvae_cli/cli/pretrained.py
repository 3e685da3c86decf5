"""`dvae pretrained`: the checkpoints shipped inside the package, one line each (offline).

Owns: the listing's format. Must not: know which files ship (pretrained.py does).
"""

from __future__ import annotations

import json

import typer

from .common import JSON, stdout, user_errors

app = typer.Typer()


@app.command()
def pretrained(json_out: bool = JSON) -> None:
    """List the shipped checkpoints (usable wherever a checkpoint is asked for as pretrained:NAME)."""
    from ..checkpoint import describe_pretrained

    with user_errors():
        rows = describe_pretrained()
    if json_out:
        for row in rows:
            print(json.dumps(row))
        return
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        codes = "" if r["valid_classes_used"] is None else (
            f", {r['valid_classes_used']:.1f} classes, max pi {r['valid_mean_max_prob']:.2f}")
        stdout.print(f"{r['name']:<{width}}  {r['description']} ({r['method']}, epoch {r['epoch']}: valid "
                     f"log p(x|y) {r['valid_log_lik']:.2f}, -ELBO {r['valid_neg_elbo']:.2f}{codes})",
                     highlight=False, soft_wrap=True)
