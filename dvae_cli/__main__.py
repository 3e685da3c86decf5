"""`python -m dvae_cli`: the same as the `dvae` command. Owns nothing else."""

from .cli import run

run()
