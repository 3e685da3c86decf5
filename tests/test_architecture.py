"""The structure the code promises (docs/ARCHITECTURE.md) and the shell conventions of the CLI:
no torch for --version/--help, no import back up into the package's __init__, one registry for
formats and for command groups, one flag spelling, shared options (env vars, aliases, -q, --device)."""

from __future__ import annotations

import ast
import json
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import dvae_cli
from conftest import fake_digits, idx_bytes
from dvae_cli import data
from dvae_cli.cli import app
from dvae_cli.cli.groups import COMMAND_GROUPS
from dvae_cli.codes import FORMATS, read_codes, write_codes
from dvae_cli.codes.formats import CodeFormat, Codes, FormatWriter, format_for
from dvae_cli.commandline import train_command
from dvae_cli.distributed import resolve_device
from dvae_cli.figures import GAP, GAP_RGB
from dvae_cli.experiments.thesis import MODELS, train_flags

PACKAGE = Path(dvae_cli.__file__).parent
runner = CliRunner()


def cli(*args):
    return runner.invoke(app, [str(a) for a in args])


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("argument", ["--version", "--help"])
def test_version_and_help_import_no_torch(argument):
    code = ("import sys\nsys.argv = ['dvae', %r]\nfrom dvae_cli.cli import run\ntry:\n    run()\n"
            "except SystemExit:\n    pass\nprint('torch loaded' if 'torch' in sys.modules else 'no torch')" % argument)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("no torch")
    assert ("dvae " + dvae_cli.__version__) in result.stdout if argument == "--version" else "encode" in result.stdout


def test_no_submodule_imports_the_package_init():
    """`from . import X` (or `from .. import X` one level down) must name a submodule, never a
    name that dvae_cli/__init__.py provides; nothing imports `dvae_cli` by its absolute name."""
    for path in modules():
        if path == PACKAGE / "__init__.py":
            continue
        package = path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                assert all(a.name.split(".")[0] != "dvae_cli" for a in node.names), path
            if not isinstance(node, ast.ImportFrom):
                continue
            if node.level == 0:
                assert node.module.split(".")[0] != "dvae_cli", f"{path}: absolute import of dvae_cli"
                continue
            target = package[:len(package) - node.level + 1] + tuple((node.module or "").split(".") if node.module else ())
            if target == ("dvae_cli",):
                for alias in node.names:
                    assert (PACKAGE / f"{alias.name}.py").is_file() or (PACKAGE / alias.name).is_dir(), \
                        f"{path}: imports {alias.name} from the package's __init__"


def test_formats_are_named_only_in_their_registry():
    """A format's name appears as a string only inside codes/formats/, so adding one touches only there."""
    names = set(FORMATS)
    for path in modules():
        if path.parent == PACKAGE / "codes" / "formats":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in names:
                pytest.fail(f"{path}: names the format {node.value!r} outside codes/formats/")


def test_a_new_format_is_one_unit_and_one_registry_line(tmp_path, monkeypatch):
    """A made-up `hex` format (a line of hex digits an image), registered with one line: written,
    detected and read back by the generic code, chosen by its suffix."""

    class HexWriter(FormatWriter):
        def __init__(self, file):
            self.file = file

        def write(self, codes):
            self.file.write(b"".join(b"#" + bytes(row).hex().encode() + b"\n" for row in codes.astype(np.uint8)))

    class Hex(CodeFormat):
        name, summary, suffixes, binary = "hex", "hex digits", (".hex",), False

        def sniff(self, data):
            return data.startswith(b"#")

        def writer(self, file, latent_vars, classes, count, fingerprint, shard):
            return HexWriter(file)

        def read(self, data, name, latent_vars, classes):
            rows = [bytes.fromhex(line[1:].decode()) for line in data.splitlines()]
            return Codes(np.array([list(r) for r in rows], np.uint8), self.name, None, None)

    monkeypatch.setitem(FORMATS, "hex", Hex())  # the registry line
    codes = np.random.default_rng(0).integers(0, 10, (7, 30))
    write_codes(tmp_path / "c.hex", codes, 10, format_for(tmp_path / "c.hex"))
    back = read_codes(tmp_path / "c.hex")
    assert back.format == "hex" and np.array_equal(back.indices, codes)


def test_command_groups_register_what_their_modules_define():
    """Each COMMAND_GROUPS line names exactly the commands of its module, and the stand-ins that
    `dvae --help` lists carry the commands' own help."""
    import importlib

    import typer

    group = typer.main.get_command(app)
    for line in COMMAND_GROUPS:
        real = typer.main.get_group(importlib.import_module(line.module).app).commands
        assert tuple(real) == line.commands
        group.listing = True
        stand_ins = {name: group.get_command(None, name) for name in line.commands}
        group.listing = False
        for name in line.commands:
            assert stand_ins[name].help == real[name].help
            assert group.get_command(None, name).rich_help_panel == line.panel


def test_completion_and_env_vars_show_in_help():
    assert "--install-completion" in cli("--help").output
    assert "DVAE_DATA_DIR" in cli("train", "--help").output
    for command in ("encode", "eval", "heatmap"):
        assert "DVAE_CKPT" in cli(command, "--help").output


def test_one_flag_spelling_for_commands_people_copy():
    """results.md's `dvae train ...` lines parse with the CLI (one spelling helper for both)."""
    import typer

    train = typer.main.get_command(app).get_command(None, "train")
    assert train_command("dtp", {"dtp_inverse_loss": True, "beta_max": 0.1}) == \
        "dvae train --method dtp --dtp-inverse-loss --beta-max 0.1"
    for model in MODELS.values():
        line = train_flags({"method": model.method, "hparams": model.hparams, "train": model.train})
        ctx = train.make_context("train", shlex.split(line)[2:])
        assert ctx.params["method"].value == model.method


def test_auto_device_prefers_cuda_then_mps(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("mps")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")


def test_torchvision_layout_without_label_files(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    (raw / "train-images-idx3-ubyte").write_bytes(idx_bytes(fake_digits(10_050, 0)))
    (raw / "t10k-images-idx3-ubyte").write_bytes(idx_bytes(fake_digits(20, 1)))
    assert data.load_images("test", tmp_path).shape == (20, 28, 28)
    assert data.load_split("train", tmp_path).shape == (50, 784)


def test_eval_names_a_pretrained_checkpoint_and_is_quiet(mnist_dir):
    result = cli("eval", "--ckpt", "pretrained:dtp", "--data-dir", mnist_dir, "--iw", "0", "--limit", "20",
                 "--device", "cpu", "--json", "-q")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["checkpoint"] == "pretrained:dtp" and result.stderr == ""


def test_output_and_checkpoint_spellings(tmp_path, tiny_run):
    for i, spelling in enumerate(("-o", "--output", "--out")):
        out = tmp_path / f"s{i}.png"
        result = cli("samples", "--ckpt", tiny_run, spelling, out, "-n", "4", "--device", "cpu", "-q")
        assert result.exit_code == 0, result.output
        assert out.is_file() and result.stdout == ""
    assert cli("samples", tiny_run, "--out", tmp_path / "p.png", "-n", "4").stdout.strip() == str(tmp_path / "p.png")
    images = tmp_path / "x.npy"
    np.save(images, fake_digits(5, 2))
    for spelling in ("-o", "--output", "--out"):
        assert cli("encode", images, spelling, tmp_path / "c.bin", "--ckpt", tiny_run, "-q").exit_code == 0


def test_decode_png_is_drawn_like_every_figure(tmp_path, tiny_run):
    """Ink black on white, GAP-pixel grey lines between digits: the grid of figures.tile."""
    write_codes(tmp_path / "c.txt", np.zeros((5, 30), np.uint8), 10, format_for(tmp_path / "c.txt"))
    result = cli("decode", tmp_path / "c.txt", "-o", tmp_path / "x.png", "--ckpt", tiny_run, "-q")
    assert result.exit_code == 0, result.output
    picture = np.asarray(Image.open(tmp_path / "x.png"))
    columns, rows, cell = 3, 2, 28 + GAP  # 5 images: a 3 x 2 grid
    assert picture.shape == (rows * cell + GAP, columns * cell + GAP, 3)
    assert tuple(picture[0, 0]) == GAP_RGB and tuple(picture[-1, -1]) == GAP_RGB


def test_every_module_says_what_it_owns():
    for path in modules():
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        assert "Own" in doc, f"{path}: its opening docstring should say what it owns and must not do"


def _internal_imports() -> dict[str, set[str]]:
    """Each module of the package and the modules of the package it imports (anywhere in it, at the
    top or inside a function; `from . import x` of a submodule counts as importing x alone)."""
    root = Path(dvae_cli.__file__).parent
    names = {}
    for path in root.rglob("*.py"):
        parts = path.relative_to(root.parent).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {}
    for name, path in names.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
                submodules = {f"{target}.{a.name}" for a in node.names} & names.keys()
                deps |= submodules or ({target} & names.keys())
        graph[name] = deps - {name}
    return graph


def test_no_import_circles():
    """No module imports, directly or through others, a module that imports it back."""
    graph = _internal_imports()

    def reaches(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for dep in graph[todo.pop()]:
                if dep not in seen:
                    seen.add(dep)
                    todo.append(dep)
        return seen

    circles = sorted(name for name in graph if name in reaches(name))
    assert not circles, f"modules on an import circle: {circles}"
