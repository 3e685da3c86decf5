"""How settings are spelled on the `dvae` command line: the one place that turns a setting's name
into its flag, used by the CLI (to make the flags) and by the library where it writes a command
for people to run (results.md's `dvae train ...` lines).

Owns: flag spelling. Must not: parse anything (the CLI does)."""

from __future__ import annotations


def flag(name: str) -> str:
    """The flag of a setting: tau_min -> --tau-min."""
    return "--" + name.replace("_", "-")


def negative_flag(name: str) -> str:
    """The flag that turns a yes/no setting off: dtp_inverse_loss -> --no-dtp-inverse-loss."""
    return "--no-" + name.replace("_", "-")


def setting_flags(settings: dict) -> list[str]:
    """['--tau-min 0.1', '--dtp-inverse-loss', ...] for settings {name: value}."""
    return [flag(k) if v is True else negative_flag(k) if v is False else f"{flag(k)} {v}"
            for k, v in settings.items()]


def suite_command(suite: str) -> str:
    """The `dvae reproduce` command of a benchmark suite."""
    return f"dvae reproduce {flag('suite')} {suite}"


def train_command(method: str, settings: dict) -> str:
    """The `dvae train` command line of a method with settings (beyond the defaults)."""
    return " ".join(["dvae train", f"{flag('method')} {method}", *setting_flags(settings)])
