"""The top-level `dvae` app: the version flag and the commands of COMMAND_GROUPS, each group's
module imported on first use.

Owns: the top-level typer app. Must not: list commands (cli/__init__.py does) or hold their logic.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
from pathlib import Path

import typer
from typer.core import TyperCommand, TyperGroup

from .groups import COMMAND_GROUPS, version_line


def _docstrings(module: str) -> dict[str, str]:
    """{command: docstring} of a command module, read from its source without importing it."""
    tree = ast.parse(Path(importlib.util.find_spec(module).origin).read_text())
    docs = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            names = [d.args[0].value for d in node.decorator_list  # @app.command("name")
                     if isinstance(d, ast.Call) and d.args and isinstance(d.args[0], ast.Constant)]
            docs[names[0] if names else node.name.replace("_", "-")] = ast.get_docstring(node) or ""
    return docs


class LazyCommands(TyperGroup):
    """The top-level group: commands come from COMMAND_GROUPS, each module imported on first use.
    Listing them (help, shell completion) shows stand-ins made from the sources instead."""

    listing = False

    def list_commands(self, ctx) -> list[str]:
        return [name for group in COMMAND_GROUPS for name in group.commands]

    def get_command(self, ctx, name: str):
        group = next((g for g in COMMAND_GROUPS if name in g.commands), None)
        if group is None:
            return None
        if name not in self.commands:
            if self.listing:
                return TyperCommand(name, help=_docstrings(group.module)[name], rich_help_panel=group.panel)
            commands = typer.main.get_group(importlib.import_module(group.module).app).commands
            for command_name in group.commands:
                commands[command_name].rich_help_panel = group.panel
                self.commands[command_name] = commands[command_name]
        return self.commands[name]

    def format_help(self, ctx, formatter) -> None:
        self.listing = True
        try:
            return super().format_help(ctx, formatter)
        finally:
            self.listing = False

    def shell_complete(self, ctx, incomplete: str):
        self.listing = True
        try:
            return super().shell_complete(ctx, incomplete)
        finally:
            self.listing = False


app = typer.Typer(
    cls=LazyCommands,
    help="Variational autoencoders with a discrete (one-hot categorical) latent space on binarized "
    "images (MNIST by default): train with difference target propagation or Gumbel-Softmax, evaluate, use the codes.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


def version_callback(value: bool) -> None:
    if value:
        print(version_line())
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(False, "--version", callback=version_callback, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """dvae: discrete-latent VAEs."""
