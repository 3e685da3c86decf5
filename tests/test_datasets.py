"""Data sets of another image size and name through every command; networks, binarizations and
optimizers described once and recorded; old records read as they were."""

from __future__ import annotations

import gzip
import io
import json
import re
import tokenize
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from conftest import REPO, idx_bytes
from dvae_cli import data
from dvae_cli.checkpoint import load_checkpoint
from dvae_cli.cli import app
from dvae_cli.errors import DVAEError
from dvae_cli.model import DiscreteVAE, ModelConfig
from dvae_cli.train import TrainConfig

HEIGHT, WIDTH = 20, 18  # not square, so that height and width cannot be swapped unnoticed
runner = CliRunner()


def cli(*args):
    return runner.invoke(app, [str(a) for a in args])


def small_images(n: int, seed: int) -> np.ndarray:
    """n HEIGHT x WIDTH uint8 images: a bright bar at a random place on black, grey at its edges."""
    rng = np.random.default_rng(seed)
    images = np.zeros((n, HEIGHT, WIDTH), np.uint8)
    rows, cols = rng.integers(2, HEIGHT - 4, n), rng.integers(2, WIDTH - 4, n)
    for i in range(n):
        images[i, rows[i] : rows[i] + 3, cols[i] : cols[i] + 2] = 255
        images[i, rows[i] - 1, cols[i] : cols[i] + 2] = 90
    return images


def write_set(folder: Path, train_n: int = 10_300, test_n: int = 60) -> Path:
    """A data set in MNIST's file names (the other sets use the same names) of HEIGHT x WIDTH images."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(small_images(train_n, 0)), 1))
    (folder / "t10k-images-idx3-ubyte").write_bytes(idx_bytes(small_images(test_n, 1)))
    return folder


@pytest.fixture(scope="module")
def sets(tmp_path_factory) -> dict[str, Path]:
    """'mnist': files in the folder itself; 'fashion-mnist': torchvision's FashionMNIST/raw layout."""
    root = tmp_path_factory.mktemp("sets")
    return {"mnist": write_set(root / "mnist"), "fashion-mnist": write_set(root / "fashion" / "FashionMNIST" / "raw").parents[1]}


def test_describe_reads_the_size_from_the_files(sets):
    described = data.describe("fashion-mnist", sets["fashion-mnist"], "dynamic")
    assert (described.name, described.shape, described.binarize, described.pixels) == (
        "fashion-mnist", (HEIGHT, WIDTH), "dynamic", HEIGHT * WIDTH)
    with pytest.raises(DVAEError, match="(?s)KMNIST not found.*data_dir DIR"):
        data.describe("kmnist", sets["mnist"] / "nowhere")
    with pytest.raises(DVAEError, match="Fashion-MNIST not found"):
        data.describe("fashion-mnist", sets["mnist"] / "nowhere")  # each set's own message


def test_a_description_of_another_size_is_refused_when_loading(sets):
    with pytest.raises(DVAEError, match=f"are {HEIGHT}x{WIDTH}, but the model learned MNIST 28x28"):
        data.load_split("valid", sets["mnist"])


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_every_command_on_a_data_set_of_another_size(tmp_path, sets, name):
    folder = sets[name]
    common = ("--data-dir", folder, "--device", "cpu")
    run = tmp_path / "run"
    result = cli("train", "--dataset", name, "--epochs", 2, "--train-limit", 200, "--latent-vars", 4,
                 "--classes", 3, "--hidden", 32, "-o", run, "-q", *common)
    assert result.exit_code == 0, result.output
    ckpt = load_checkpoint(run)
    assert (ckpt.data.name, ckpt.data.shape, ckpt.model.config.input_size) == (name, (HEIGHT, WIDTH), HEIGHT * WIDTH)
    assert json.loads((run / "config.json").read_text())["train"]["data"]["height"] == HEIGHT

    result = cli("eval", run, "--split", "test", "--iw", 5, "--json", "-q", *common)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["images"] == 60 and json.loads(result.stdout)["data"]["name"] == name

    images = small_images(7, 2)
    np.save(tmp_path / "imgs.npy", images)
    assert cli("encode", tmp_path / "imgs.npy", "-o", tmp_path / "codes.bin", "--ckpt", run, "-q").exit_code == 0
    result = cli("decode", tmp_path / "codes.bin", "-o", tmp_path / "back.npy", "--ckpt", run, "-q")
    assert result.exit_code == 0, result.output
    assert np.load(tmp_path / "back.npy").shape == (7, HEIGHT, WIDTH)
    result = cli("decode", tmp_path / "codes.bin", "-o", tmp_path / "back.png", "--ckpt", run, "-q")
    assert result.exit_code == 0, result.output
    with Image.open(tmp_path / "back.png") as picture:  # 3 x 3 grid, 2-pixel gaps, scale 1
        assert picture.size == (3 * (WIDTH + 2) + 2, 3 * (HEIGHT + 2) + 2)
    np.save(tmp_path / "wrong.npy", np.zeros((2, 28, 28), np.uint8))
    result = cli("encode", tmp_path / "wrong.npy", "-o", tmp_path / "w.bin", "--ckpt", run)
    assert result.exit_code == 1 and f"(N, {HEIGHT}, {WIDTH})" in result.stderr

    result = cli("heatmap", run, "--json", *common)
    assert result.exit_code == 0, result.output
    assert np.array(json.loads(result.stdout)["pi"]).shape == (4, 3)
    for command, extra in (("recon", ("-n", 4)), ("samples", ("-n", 4)), ("traverse", ())):
        figure = tmp_path / f"{command}.png"
        args = (command, run, "-o", figure, "-q", *extra)
        result = cli(*args, *(common if command != "samples" else ("--device", "cpu")))
        assert result.exit_code == 0, result.output
        with Image.open(figure) as picture:
            assert picture.format == "PNG"

    assert cli("index", tmp_path / "imgs.npy", "-o", tmp_path / "db.idx", "--ckpt", run, "-q").exit_code == 0
    result = cli("search", tmp_path / "db.idx", tmp_path / "imgs.npy", "-k", 2, "--ckpt", run, "--json",
                 "--figure", tmp_path / "search.png")
    assert result.exit_code == 0, result.output
    found = json.loads(result.stdout)["results"]
    assert len(found) == 7 and all(0 <= row < 7 for q in found for row in q["rows"])

    result = cli("gradients", run, "--methods", "st", "--batch", 4, "--reference-samples", 40, "--repeats", 2,
                 "--json", *common)
    assert result.exit_code == 0, result.output

    out = tmp_path / "reproduce"
    result = cli("reproduce", "--dataset", name, "--methods", "st", "--seeds", "0", "--epochs", 1,
                 "--train-limit", 100, "--iw", 2, "-o", out, "--json", "-q", *common)
    assert result.exit_code == 0, result.output
    assert load_checkpoint(out / "st-seed0").data.shape == (HEIGHT, WIDTH)


def test_reproduce_never_reuses_a_run_of_another_binarization(tmp_path, sets):
    common = ("--methods", "st", "--seeds", "0", "--epochs", 1, "--train-limit", 100, "--iw", 2, "-o", tmp_path,
              "--data-dir", sets["mnist"], "--device", "cpu", "-q")
    assert cli("reproduce", *common).exit_code == 0
    result = cli("reproduce", *common, "--binarize", "none")
    assert result.exit_code == 1 and "other settings (data)" in result.stderr


def test_old_records_read_as_mnist_softplus_adam():
    record = {"method": "dtp", "hparams": {}, "model": {"latent_vars": 30, "classes": 10, "hidden": 500,
                                                        "input_size": 784}}
    config = TrainConfig.from_dict(record)
    assert config.data == data.DEFAULT_DATA and config.optimizer == "adam"
    assert config.model.activation == "softplus" and config.model.widths == (500,)
    assert config.hparams["diversity"] == 0.0  # what runs recorded before the option did
    ckpt = load_checkpoint("pretrained:dtp")
    assert ckpt.data == data.DEFAULT_DATA and ckpt.model.config.widths == (500,)


def test_deeper_relu_network_mirrors_its_layers():
    config = ModelConfig(hidden=(512, 256), activation="relu")
    model = DiscreteVAE(config)
    sizes = [layer.weight.shape[::-1] for layer in model.encoder if hasattr(layer, "weight")]
    assert sizes == [(784, 512), (512, 256), (256, 300)]
    assert [layer.weight.shape[::-1] for layer in model.decoder if hasattr(layer, "weight")] == [
        (300, 256), (256, 512), (512, 784)]
    assert all(isinstance(m, torch.nn.ReLU) for m in model.encoder[1::2])
    assert config.parameter_count() == sum(p.numel() for p in model.parameters())
    assert ModelConfig(**config.to_dict()) == config
    x = torch.rand(3, 784)
    codes = torch.randint(10, (3, 30))
    one_hot = torch.nn.functional.one_hot(codes, 10).float()
    assert torch.allclose(model.decode_indices(codes), model.decode(one_hot), atol=1e-5)
    assert model.encode(x).shape == (3, 30, 10)


@pytest.mark.parametrize("settings, message", [
    ({"optimizer": "sgd"}, "optimizer must be one of adam, radam"),
    ({"save_every": -1}, "save_every must be an integer >= 0"),
    ({"seed": 2**63}, "seed must be an integer from 0 to 2^63 - 1"),
    ({"lr": float("nan")}, "lr must be a finite number > 0"),
    ({"model": ModelConfig(input_size=100)}, "input_size is 100, but the data set's images have 784 pixels"),
])
def test_settings_are_checked_where_they_are_built(settings, message):
    with pytest.raises(DVAEError, match=message.replace("^", r"\^")):
        TrainConfig(**settings)
    with pytest.raises(DVAEError, match="binarize must be one of threshold, dynamic, none"):
        data.DataConfig(binarize="otsu")


def test_model_settings_name_the_setting():
    with pytest.raises(DVAEError, match="activation must be one of softplus, relu, leakyrelu"):
        ModelConfig(activation="tanh")
    with pytest.raises(DVAEError, match="hidden must be a positive integer"):
        ModelConfig(hidden=(512, 0))


def test_the_callers_settings_are_left_alone():
    hparams = {"tau_min": 0.5}
    config = TrainConfig(method="gumbel", hparams=hparams)
    assert hparams == {"tau_min": 0.5} and config.hparams["tau_min"] == 0.5 and "tau0" in config.hparams


def test_dynamic_binarization_draws_anew_each_epoch_and_evaluates_on_one_draw(tmp_path, sets):
    grey = data.load_split("train", sets["mnist"], 50, data=data.describe("mnist", sets["mnist"], "dynamic"),
                           training=True)
    assert ((grey > 0) & (grey < 1)).any()  # the grey edges are kept for training to draw from
    described = data.describe("mnist", sets["mnist"], "dynamic")
    first = data.load_split("valid", sets["mnist"], 30, data=described)
    again = data.load_split("valid", sets["mnist"], 60, data=described)[:30]
    assert set(first.unique().tolist()) == {0.0, 1.0} and torch.equal(first, again)  # one fixed draw
    generator = torch.Generator().manual_seed(0)
    draws = [data.draw_binary(grey, generator) for _ in range(2)]
    assert not torch.equal(draws[0], draws[1]) and torch.equal(draws[0][grey == 1], grey[grey == 1])


def test_grey_targets_label_the_elbo_and_withhold_the_iw_bound(tmp_path, sets):
    folder = sets["mnist"]
    run = tmp_path / "run"
    result = cli("train", "--binarize", "none", "--hidden", "16,8", "--activation", "relu", "--optimizer", "radam",
                 "--epochs", 1, "--train-limit", 100, "--latent-vars", 3, "--classes", 4, "-o", run,
                 "--data-dir", folder, "--device", "cpu", "-q")
    assert result.exit_code == 0, result.output
    result = cli("eval", run, "--limit", 20, "--data-dir", folder, "--device", "cpu", "-q")
    assert result.exit_code == 0, result.output
    assert "not a bound" in result.stdout and "(IW," not in result.stdout
    config = json.loads((run / "config.json").read_text())["train"]
    assert (config["optimizer"], config["model"]["hidden"], config["data"]["binarize"]) == ("radam", [16, 8], "none")
    np.save(tmp_path / "imgs.npy", small_images(5, 3))
    result = cli("encode", tmp_path / "imgs.npy", "-o", tmp_path / "c.txt", "--ckpt", run, "-q")
    assert result.exit_code == 0, result.output
    assert len((tmp_path / "c.txt").read_text().split()) == 5


def _code_tokens(path: Path):
    """(type, string) of every token of a module but its docstrings and comments."""
    tokens = list(tokenize.generate_tokens(io.StringIO(path.read_text()).readline))
    previous = None
    for token in tokens:
        docstring = token.type == tokenize.STRING and previous in (None, tokenize.INDENT, tokenize.NEWLINE,
                                                                   tokenize.DEDENT)
        if token.type not in (tokenize.NL, tokenize.COMMENT):
            previous = token.type
        if not docstring:
            yield token.type, token.string


def test_no_module_but_data_knows_the_default_image_size_or_names_mnist():
    offenders = []
    for path in sorted((REPO / "dvae_cli").rglob("*.py")):
        if path.name == "data.py":
            continue
        for kind, text in _code_tokens(path):
            if (kind == tokenize.NUMBER and text == "784" or kind == tokenize.NAME and text in ("SIDE", "PIXELS", "MNIST")
                    or kind == tokenize.STRING and ("28x28" in text or "(28, 28)" in text or "784" in text)):
                offenders.append(f"{path.relative_to(REPO)}: {text[:40]}")
    assert not offenders, offenders


def test_library_modules_spell_no_flags():
    """Only the CLI (and commandline.py, the owner of flag spellings) writes `--flag`: the library
    names settings (errors.Setting), so a Python user reads `save_every`, a shell user `--save-every`."""
    offenders = []
    for path in sorted((REPO / "dvae_cli").rglob("*.py")):
        if "cli" in path.relative_to(REPO / "dvae_cli").parts[:1] or path.name == "commandline.py":
            continue
        for kind, text in _code_tokens(path):
            if kind in (tokenize.STRING, getattr(tokenize, "FSTRING_MIDDLE", -1)) and re.search(r"(^|[\s'\"(])--[a-z]", text):
                offenders.append(f"{path.relative_to(REPO)}: {text[:60]}")
    assert not offenders, offenders


def test_a_setting_error_names_the_setting_in_the_library_and_the_flag_on_the_command_line(tmp_path, sets):
    with pytest.raises(DVAEError, match="^save_every must be an integer >= 0"):
        TrainConfig(save_every=-1)
    result = cli("train", "--data-dir", sets["mnist"] / "nowhere", "--device", "cpu", "-o", tmp_path / "r")
    assert result.exit_code == 1 and "Pass the folder with --data-dir DIR" in " ".join(result.stderr.split())


def test_a_pair_of_npy_arrays_is_a_data_set(tmp_path):
    folder = tmp_path / "npy"
    folder.mkdir()
    np.save(folder / "train.npy", small_images(300, 4))
    np.save(folder / "test.npy", small_images(40, 5))
    described = data.describe("npy", folder)
    assert (described.shape, described.valid_size) == ((HEIGHT, WIDTH), 0)
    common = ("--data-dir", folder, "--device", "cpu", "-q")
    run = tmp_path / "run"
    result = cli("train", "--dataset", "npy", "--epochs", 1, "--latent-vars", 3, "--classes", 4, "--hidden", 16,
                 "-o", run, *common)
    assert result.exit_code == 0, result.output
    assert "test_neg_elbo" in json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])  # no validation split
    held = tmp_path / "held"
    result = cli("train", "--dataset", "npy", "--valid-size", 50, "--epochs", 1, "--latent-vars", 3, "--classes", 4,
                 "--hidden", 16, "-o", held, *common)
    assert result.exit_code == 0, result.output
    result = cli("eval", held, "--iw", 0, "--json", *common)
    assert result.exit_code == 0 and json.loads(result.stdout)["images"] == 50
    np.save(folder / "test.npy", np.zeros((4, 5), np.float32))
    assert cli("eval", held, "--split", "test", *common).exit_code == 1
    result = cli("train", "--dataset", "npy", "--data-dir", tmp_path / "nowhere")
    assert result.exit_code == 1 and "train.npy and test.npy: uint8 arrays" in " ".join(result.stderr.split())
