import json

import pytest
import safetensors.torch
import torch

from dvae_cli.checkpoint import FORMAT_VERSION, load_checkpoint, load_model, save_checkpoint
from dvae_cli.errors import DVAEError
from dvae_cli.model import DiscreteVAE, ModelConfig

SMALL = ModelConfig(latent_vars=4, classes=3, hidden=9)


@pytest.fixture
def ckpt(tmp_path):
    torch.manual_seed(0)
    model = DiscreteVAE(SMALL)
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, model, "gumbel", {"tau0": 1.0}, epoch=7, metrics={"valid_neg_elbo": 99.5})
    return path, model


def test_round_trip(ckpt):
    path, model = ckpt
    loaded = load_checkpoint(path)
    assert loaded.model.config == SMALL and loaded.method == "gumbel" and loaded.epoch == 7
    assert loaded.hparams == {"tau0": 1.0} and loaded.metrics == {"valid_neg_elbo": 99.5}
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.model.state_dict().items()):
        assert torch.equal(a, b), name
    assert len(loaded.fingerprint) == 16 and loaded.info["dvae_version"]
    assert not loaded.model.training


def test_run_folder_resolves_to_best(tiny_run):
    loaded = load_checkpoint(tiny_run)
    assert loaded.path.name == "best.safetensors"
    assert isinstance(load_model(tiny_run / "last.safetensors"), DiscreteVAE)


def test_metadata_records_everything(ckpt):
    path, _ = ckpt
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    assert meta["format"] == "dvae-checkpoint" and meta["format_version"] == str(FORMAT_VERSION)
    assert json.loads(meta["model"]) == SMALL.to_dict()
    assert {"dvae_version", "torch_version", "method", "hparams", "epoch", "metrics"} <= set(meta)


@pytest.mark.parametrize("damage, message", [
    (lambda b: b[: len(b) // 2], "not a readable safetensors"),
    (lambda b: b"garbage" * 10, "not a readable safetensors"),
    (lambda b: b"", "not a readable safetensors"),
])
def test_corrupt_files(ckpt, damage, message):
    path, _ = ckpt
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(DVAEError, match=message):
        load_checkpoint(path)


def test_foreign_and_future_files(tmp_path, ckpt):
    other = tmp_path / "other.safetensors"
    safetensors.torch.save_file({"w": torch.zeros(2)}, str(other))
    with pytest.raises(DVAEError, match="not a dvae file"):
        load_checkpoint(other)
    path, model = ckpt
    tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = dict(f.metadata())
    safetensors.torch.save_file(tensors, str(other), metadata={**meta, "format_version": "99"})
    with pytest.raises(DVAEError, match="format version 99"):
        load_checkpoint(other)
    safetensors.torch.save_file(tensors, str(other), metadata={**meta, "model": json.dumps({**SMALL.to_dict(), "hidden": 10})})
    with pytest.raises(DVAEError, match="has shape"):
        load_checkpoint(other)
    del tensors["decoder.2.bias"]
    safetensors.torch.save_file(tensors, str(other), metadata=meta)
    with pytest.raises(DVAEError, match="missing"):
        load_checkpoint(other)


def test_missing_paths(tmp_path):
    with pytest.raises(DVAEError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "nope.safetensors")
    with pytest.raises(DVAEError, match="run folder without"):
        load_checkpoint(tmp_path)


def test_atomic_write_leaves_no_partial_file(tmp_path, monkeypatch):
    path = tmp_path / "m.safetensors"

    def interrupted_rename(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr("os.replace", interrupted_rename)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, DiscreteVAE(SMALL), "dtp", {}, 1)
    assert list(tmp_path.iterdir()) == []


def _rewrite(path, metadata_changes=None, tensor_changes=None):
    tensors = safetensors.torch.load_file(str(path))
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        metadata = f.metadata()
    metadata.update(metadata_changes or {})
    tensors.update(tensor_changes or {})
    path.write_bytes(safetensors.torch.save(tensors, metadata=metadata))


@pytest.mark.parametrize("model, message", [
    ({**SMALL.to_dict(), "hidden": -9}, "hidden must be a positive integer"),
    ({**SMALL.to_dict(), "hidden": "9"}, "hidden must be a positive integer"),
    ({**SMALL.to_dict(), "hidden": 10**9}, "over dvae's ceiling"),
    ({**SMALL.to_dict(), "classes": 1}, "classes must be at least 2"),
    ({**SMALL.to_dict(), "extra": 1}, "corrupt model config"),
])
def test_bad_model_metadata_is_refused_before_allocating(ckpt, model, message, monkeypatch):
    path, _ = ckpt
    _rewrite(path, {"model": json.dumps(model)})
    monkeypatch.setattr(DiscreteVAE, "__init__", lambda *a, **k: pytest.fail("allocated a model"))
    with pytest.raises(DVAEError, match=message):
        load_checkpoint(path)


def test_non_finite_weights_are_refused(ckpt):
    path, model = ckpt
    bad = model.state_dict()["decoder.0.weight"].clone()
    bad[0, 0] = float("nan")
    _rewrite(path, tensor_changes={"decoder.0.weight": bad})
    with pytest.raises(DVAEError, match="non-finite"):
        load_checkpoint(path)
