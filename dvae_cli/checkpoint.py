"""Checkpoints (model weights + what made them) and resumable training state, as safetensors.

Never pickle: tensors go in the safetensors body, everything else in its string metadata
as JSON. Files are written atomically.

Owns: the checkpoint and training-state files. Must not: decide which file to load
(runfolder.py resolves checkpoint arguments) or spell run-folder names.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import safetensors
import safetensors.torch
import torch

from ._version import __version__
from .errors import DVAEError
from .fileio import atomic_write_bytes
from .data import DEFAULT_DATA, DataConfig
from .methods import make_method
from .model import DiscreteVAE, ModelConfig
from .pretrained import PREFIX as PRETRAINED_PREFIX, PRETRAINED
from .runfolder import resolve_checkpoint
from .terminal import MAX_LINE, shown

CHECKPOINT_FORMAT = "dvae-checkpoint"
STATE_FORMAT = "dvae-train-state"
FORMAT_VERSION = 1


@dataclass
class Checkpoint:
    """A loaded checkpoint: the ready model and the record of how it was trained."""

    model: DiscreteVAE
    method: str
    hparams: dict
    epoch: int
    metrics: dict
    path: Path
    fingerprint: str
    info: dict = field(default_factory=dict)  # the rest of the metadata (versions, train config)
    data: DataConfig = DEFAULT_DATA  # what the model learned from (its images' size and binarization)


def fingerprint(tensors: dict[str, torch.Tensor]) -> str:
    """A short hash of the weights (names, shapes, bytes): identifies the model that made codes."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()[:16]


def _weights(model: DiscreteVAE) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in model.state_dict().items()}


def save_checkpoint(
    path: str | os.PathLike,
    model: DiscreteVAE,
    method: str,
    hparams: dict,
    epoch: int,
    metrics: dict | None = None,
    info: dict | None = None,
    data: DataConfig = DEFAULT_DATA,
) -> None:
    """Write the model's weights and metadata to a safetensors file, atomically."""
    metadata = {
        "format": CHECKPOINT_FORMAT,
        "format_version": str(FORMAT_VERSION),
        "dvae_version": __version__,
        "torch_version": torch.__version__,
        "model": json.dumps(model.config.to_dict()),
        "data": json.dumps(data.to_dict()),
        "method": method,
        "hparams": json.dumps(hparams),
        "epoch": str(epoch),
        "metrics": json.dumps(metrics or {}),
        "info": json.dumps(info or {}),
    }
    atomic_write_bytes(path, safetensors.torch.save(_weights(model), metadata=metadata))


def _read(path: Path, expected_format: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a safetensors file, checking its format and version."""
    if not path.is_file():
        raise DVAEError(f"{path}: no such checkpoint file")
    try:
        with safetensors.safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # noqa: BLE001 - safetensors raises several types for bad files
        raise DVAEError(f"{path}: not a readable safetensors file ({e})") from None
    if metadata.get("format") != expected_format:
        raise DVAEError(f"{path}: not a dvae file (format {metadata.get('format')!r}, expected {expected_format!r})")
    version = metadata.get("format_version", "?")
    if version != str(FORMAT_VERSION):
        raise DVAEError(
            f"{path}: format version {version}; this dvae ({__version__}) reads version {FORMAT_VERSION}"
        )
    return tensors, metadata


def _json(metadata: dict[str, str], key: str, path: Path) -> dict:
    """A metadata field that holds a JSON object."""
    try:
        value = json.loads(metadata[key])
    except (KeyError, json.JSONDecodeError):
        value = None
    if not isinstance(value, dict):
        raise DVAEError(f"{path}: metadata field {key!r} is missing or corrupt")
    return value


def _build_model(tensors: dict[str, torch.Tensor], config: ModelConfig, path: Path, prefix: str = "") -> DiscreteVAE:
    """A model of `config` with the weights `prefix + name` from `tensors`, every shape checked."""
    with torch.device("meta"):  # shapes only: nothing is allocated before the file is known to fit
        expected = DiscreteVAE(config).state_dict()
    weights = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    missing, unexpected = set(expected) - set(weights), set(weights) - set(expected)
    if missing or unexpected:
        raise DVAEError(f"{path}: tensors do not match the model (missing {sorted(missing)}, unexpected {sorted(unexpected)})")
    for name, tensor in expected.items():
        if weights[name].shape != tensor.shape:
            raise DVAEError(f"{path}: tensor {name} has shape {tuple(weights[name].shape)}, expected {tuple(tensor.shape)}")
        if not weights[name].is_floating_point() or not torch.isfinite(weights[name]).all():
            raise DVAEError(f"{path}: tensor {name} holds non-finite (NaN or infinite) or non-float weights")
    model = DiscreteVAE(config)
    model.load_state_dict({k: v.to(torch.float32) for k, v in weights.items()})
    return model


def _model_config(metadata: dict[str, str], path: Path) -> ModelConfig:
    try:
        return ModelConfig(**_json(metadata, "model", path))
    except TypeError:
        raise DVAEError(f"{path}: corrupt model config in metadata") from None
    except DVAEError as e:
        raise DVAEError(f"{path}: corrupt model config in metadata ({e})") from None


def _data_config(metadata: dict[str, str], path: Path) -> DataConfig:
    """The checkpoint's data description; one saved before data sets were recorded learned the default (DEFAULT_DATA)."""
    if "data" not in metadata:
        return DEFAULT_DATA
    try:
        return DataConfig.from_dict(_json(metadata, "data", path))
    except TypeError:
        raise DVAEError(f"{path}: corrupt data description in metadata") from None
    except DVAEError as e:
        raise DVAEError(f"{path}: corrupt data description in metadata ({e})") from None


def _method(metadata: dict[str, str], path: Path) -> tuple[str, dict]:
    """The method and hyper-parameters a checkpoint records, checked against this dvae's methods: an
    unknown method, an unknown setting or a value out of range is refused here, once, so that no
    command echoes or acts on a name it does not know."""
    method, hparams = metadata.get("method"), _json(metadata, "hparams", path)
    if method is None:
        raise DVAEError(f"{path}: metadata field 'method' is missing")
    try:
        make_method(method, hparams)
    except (DVAEError, TypeError, ValueError) as e:
        raise DVAEError(f"{path}: metadata records a method this dvae cannot build ({shown(e, MAX_LINE)})") from None
    return method, hparams


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> Checkpoint:
    """Load a checkpoint file or run folder into a ready model (eval mode, on `device`)."""
    path = resolve_checkpoint(path)
    tensors, metadata = _read(path, CHECKPOINT_FORMAT)
    model = _build_model(tensors, _model_config(metadata, path), path)
    data = _data_config(metadata, path)
    if data.pixels != model.config.input_size:
        raise DVAEError(f"{path}: the model takes {model.config.input_size} pixels, its data set "
                        f"({data.label}) has {data.pixels}")
    method, hparams = _method(metadata, path)
    try:
        epoch = int(metadata["epoch"])
    except (KeyError, ValueError):
        raise DVAEError(f"{path}: metadata field 'epoch' is missing or corrupt") from None
    return Checkpoint(
        model=model.to(device).eval(),
        method=method,
        hparams=hparams,
        epoch=epoch,
        metrics=_json(metadata, "metrics", path),
        path=path,
        fingerprint=fingerprint(tensors),
        info={"dvae_version": metadata.get("dvae_version"), "torch_version": metadata.get("torch_version"),
              **_json(metadata, "info", path)},
        data=data,
    )


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> DiscreteVAE:
    """The ready model of a checkpoint file or run folder."""
    return load_checkpoint(path, device).model


@dataclass
class TrainState:
    """Everything `--resume` needs besides the config: weights, optimizer, RNG, progress."""

    epoch: int  # epochs completed
    model: dict[str, torch.Tensor]
    optimizer: dict  # torch optimizer state_dict
    rng: torch.Tensor  # torch.Generator state
    best: float  # best validation -ELBO so far
    run: str | None = None  # whose state: TrainConfig.identity() of the run that saved it (None: older files)


def save_state(path: str | os.PathLike, state: TrainState) -> None:
    """Write the resumable training state (no pickle: tensors plus JSON metadata), atomically."""
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in state.model.items()}
    for index, per_param in state.optimizer["state"].items():
        for key, value in per_param.items():
            tensors[f"optim.{index}.{key}"] = torch.as_tensor(value).detach().cpu().contiguous()
    tensors["rng"] = state.rng.cpu()
    metadata = {
        "format": STATE_FORMAT,
        "format_version": str(FORMAT_VERSION),
        "epoch": str(state.epoch),
        "best": repr(state.best),
        "param_groups": json.dumps(state.optimizer["param_groups"]),
        **({"run": state.run} if state.run is not None else {}),
    }
    atomic_write_bytes(path, safetensors.torch.save(tensors, metadata=metadata))


def load_state(path: str | os.PathLike) -> TrainState:
    """Read what `save_state` wrote."""
    path = Path(path)
    tensors, metadata = _read(path, STATE_FORMAT)
    optim_state: dict[int, dict] = {}
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, index, key = name.split(".", 2)
            optim_state.setdefault(int(index), {})[key] = value
    try:
        return TrainState(
            epoch=int(metadata["epoch"]),
            model={k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")},
            optimizer={"state": optim_state, "param_groups": json.loads(metadata["param_groups"])},
            rng=tensors["rng"],
            best=float(metadata["best"]),
            run=metadata.get("run"),
        )
    except (KeyError, ValueError, json.JSONDecodeError):
        raise DVAEError(f"{path}: corrupt training state") from None


def describe_pretrained() -> list[dict]:
    """One record per shipped checkpoint: name, description, method, epoch and its validation metrics."""
    rows = []
    for name, about in PRETRAINED.items():
        ckpt = load_checkpoint(PRETRAINED_PREFIX + name)
        metrics = {k: ckpt.metrics.get(k) for k in
                   ("valid_log_lik", "valid_kl", "valid_neg_elbo", "valid_classes_used", "valid_mean_max_prob")}
        rows.append({"name": PRETRAINED_PREFIX + name, "description": about, "method": ckpt.method, "epoch": ckpt.epoch,
                     "hparams": ckpt.hparams, **metrics, "fingerprint": ckpt.fingerprint})
    return rows
