"""dvae heatmap / recon / samples / traverse / plot: real PNGs of the right size, a terminal
heatmap that fits 80 columns, clear errors for bad input."""

import io
import json

import numpy as np
import pytest
from PIL import Image
from rich.console import Console
from typer.testing import CliRunner

from dvae_cli import figures
from dvae_cli.checkpoint import load_checkpoint
from dvae_cli.cli import app
from dvae_cli.cli.figures import heatmap_text
from dvae_cli.data import load_split
from dvae_cli.data import DEFAULT_DATA
from dvae_cli.figures import GAP, MIN_WIDTH, encode_pi, reconstruct, traversal


def run(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


def png_size(path) -> tuple[int, int]:
    with Image.open(path) as image:
        assert image.format == "PNG"
        image.verify()
        return image.size


def grid_size(rows: int, cols: int, scale: int) -> tuple[int, int]:
    """Pixel size of a grid of digits as `figures.tile` draws it."""
    cell = DEFAULT_DATA.height * scale + GAP
    return cols * cell + GAP, rows * cell + GAP


@pytest.fixture(scope="module")
def model(tiny_run):
    return load_checkpoint(tiny_run).model


@pytest.fixture(scope="module")
def valid(mnist_dir):
    return load_split("valid", mnist_dir, limit=5)


def test_heatmap_terminal_fits_80_columns(tiny_run, mnist_dir):
    for extra in ([], ["--values"]):
        result = run("heatmap", tiny_run, "--data-dir", mnist_dir, *extra)
        assert result.exit_code == 0, result.output
        lines = result.stdout.splitlines()
        assert max(map(len, lines)) <= 80
        rows = [line for line in lines if line[:8].strip().isdigit()]
        assert [int(line[:8]) for line in rows] == list(range(30))
        if extra:
            assert all(len(line.split()) == 11 for line in rows)  # label + 10 probabilities


@pytest.mark.parametrize("values", [False, True])
def test_heatmap_text_in_colour_fits_80_columns(values):
    pi = np.random.default_rng(0).dirichlet(np.ones(10), size=30)
    console = Console(width=200, record=True, color_system="truecolor", file=io.StringIO())
    console.print(heatmap_text(pi, values, color=True))
    assert max(map(len, console.export_text(clear=False).splitlines())) <= 80
    assert "\x1b[48;2;" in console.export_text(styles=True)  # true-colour cell backgrounds


def test_heatmap_json_matches_the_encoder(tiny_run, mnist_dir, model, valid):
    result = run("heatmap", tiny_run, "--data-dir", mnist_dir, "--index", 2, "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert (out["method"], out["index"], out["images"]) == ("dtp", 2, 1)
    np.testing.assert_allclose(out["pi"], encode_pi(model, valid[2:3])[0], rtol=1e-6)

    result = run("heatmap", tiny_run, "--data-dir", mnist_dir, "--mean", "--split", "test", "--json")
    out = json.loads(result.stdout)
    assert out["index"] is None and out["images"] == 300 and out["source"] == "test"
    np.testing.assert_allclose(np.sum(out["pi"], axis=1), 1, rtol=1e-5)


@pytest.mark.parametrize("suffix, magic", [(".png", b"\x89PNG"), (".svg", b"<?xml"), (".pdf", b"%PDF")])
def test_heatmap_figure_formats(tiny_run, mnist_dir, tmp_path, suffix, magic):
    out = tmp_path / f"sub/heatmap{suffix}"
    result = run("heatmap", tiny_run, "--data-dir", mnist_dir, "-o", out)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(out)
    assert out.read_bytes().startswith(magic)
    if suffix == ".png":
        (cell_w, cell_h), (left, top, right, bottom) = figures.HEATMAP_CELL, figures.HEATMAP_MARGINS
        assert png_size(out) == (left + 10 * cell_w + right, top + 30 * cell_h + bottom)


def test_recon_png_shows_the_inputs_pixel_for_pixel(tiny_run, mnist_dir, tmp_path, valid):
    out = tmp_path / "recon.png"
    result = run("recon", tiny_run, "--data-dir", mnist_dir, "-n", 5, "--index", 1, "--columns", 3,
                 "--scale", 3, "-o", out)
    assert result.exit_code == 0, result.output
    left, top, right, bottom = figures.RECON_MARGINS
    w, h = grid_size(4, 3, 3)  # two (input, reconstruction) row pairs of 3
    assert png_size(out) == (max(left + w + right, MIN_WIDTH), top + h + bottom)
    pixels = np.asarray(Image.open(out).convert("L"))
    first = pixels[top + GAP : top + GAP + 84, left + GAP : left + GAP + 84]  # image 1, no blur
    expected = 255 * (1 - valid[1].numpy().reshape(28, 28)).repeat(3, 0).repeat(3, 1)
    np.testing.assert_array_equal(first, expected)


def test_samples_png_depends_on_the_seed(tiny_run, tmp_path):
    paths = [tmp_path / f"s{i}.png" for i in range(3)]
    for path, seed in zip(paths, (0, 0, 1)):
        result = run("samples", tiny_run, "-n", 10, "--columns", 4, "--seed", seed, "-o", path)
        assert result.exit_code == 0, result.output
    left, top, right, bottom = figures.SAMPLES_MARGINS
    w, h = grid_size(3, 4, 2)
    assert png_size(paths[0]) == (max(left + w + right, MIN_WIDTH), top + h + bottom)
    assert paths[0].read_bytes() == paths[1].read_bytes() != paths[2].read_bytes()


def test_traversal_keeps_the_code_but_one_variable(model, valid):
    grid, code = traversal(model, valid[0])
    assert grid.shape == (30, 10, 784) and code.shape == (30,)
    recon = reconstruct(model, valid[:1])[0]
    for v in range(30):  # the own class of each row decodes the unchanged code
        np.testing.assert_allclose(grid[v, code[v]], recon, atol=1e-6)
    assert not np.allclose(grid[0], grid[0, :1])  # another class changes the decode


def test_traverse_png(tiny_run, mnist_dir, tmp_path):
    out = tmp_path / "traverse.png"
    result = run("traverse", tiny_run, "--data-dir", mnist_dir, "--index", 4, "--scale", 1, "-o", out)
    assert result.exit_code == 0, result.output
    left, top, right, bottom = figures.TRAVERSE_MARGINS
    side_w, _ = grid_size(2, 1, 1)
    w, h = grid_size(30, 10, 1)
    assert png_size(out) == (left + side_w + figures.TRAVERSE_SPACING + w + right, top + h + bottom)


def test_plot_png(tiny_run, tmp_path):
    out = tmp_path / "curves.png"
    result = run("plot", tiny_run, tiny_run, "-o", out)
    assert result.exit_code == 0, result.output
    assert png_size(out) == figures.CURVES_SIZE


def test_inputs_from_a_file(tiny_run, tmp_path, model, valid):
    images = tmp_path / "images.npy"
    np.save(images, (valid.numpy() * 255).astype(np.uint8).reshape(-1, 28, 28))
    result = run("heatmap", tiny_run, "--input", images, "--index", 3, "--json")
    assert result.exit_code == 0, result.output
    np.testing.assert_allclose(json.loads(result.stdout)["pi"], encode_pi(model, valid[3:4])[0], rtol=1e-6)
    assert run("recon", tiny_run, "--input", images, "-o", tmp_path / "r.png").exit_code == 0
    result = run("traverse", tiny_run, "--input", images, "--index", 5, "-o", tmp_path / "t.png")
    assert result.exit_code == 1
    assert "--index 5 is out of range: images.npy has 5 images" in " ".join(result.stderr.split())


@pytest.mark.parametrize("args, message", [
    (["heatmap", "{run}", "--index", "10000"], "--index 10000 is out of range: valid has 10000 images"),
    (["recon", "{run}", "--split", "test", "--index", "300", "-o", "{out}"], "out of range: test has 300"),
    (["traverse", "{tmp}/nowhere", "-o", "{out}"], "no such checkpoint file or run folder"),
    (["samples", "{tmp}", "-o", "{out}"], "run folder without best.safetensors or last.safetensors"),
    (["samples", "{run}", "-o", "{tmp}/figure.jpg"], "unsupported figure format '.jpg'"),
    (["heatmap", "{run}", "--mean", "--index", "3"], "--index does not apply"),
    (["heatmap", "{run}", "--input", "x.npy", "--split", "test"], "either --input or --split"),
    (["plot", "{run}", "{tmp}", "-o", "{out}"], "not a run folder"),
])
def test_bad_input_gives_a_clear_error(tiny_run, mnist_dir, tmp_path, args, message):
    out = tmp_path / "figure.png"
    args = [a.format(run=tiny_run, out=out, tmp=tmp_path) for a in args]
    result = run(*args, *(["--data-dir", mnist_dir] if args[0] in ("heatmap", "recon") else []))
    assert result.exit_code == 1
    assert message in " ".join(result.stderr.split()) and "Traceback" not in result.output
    assert not list(tmp_path.iterdir())  # nothing written


def test_missing_out_option_is_a_usage_error(tiny_run):
    result = run("samples", tiny_run)
    assert result.exit_code == 2 and "--out" in result.output
