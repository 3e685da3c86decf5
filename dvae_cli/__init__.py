"""dvae: variational autoencoders with a discrete (one-hot categorical) latent space.

Python API (the `dvae` command is a thin layer over it)::

    from dvae_cli import TrainConfig, train, load_checkpoint, load_split, evaluate
    run_dir = train(TrainConfig(method="dtp", epochs=1, train_limit=2000))
    ckpt = load_checkpoint(run_dir)            # a file or a run folder (its best checkpoint)
    print(evaluate(ckpt.model, load_split("valid")))
    codes = encode(ckpt.model, read_images("digits.npy"))   # (N, 30) class indices
    write_codes("codes.bin", codes, classes=10)              # 13 bytes per image
"""

__version__ = "0.1.0"

from .codes import decode, encode, pack, read_codes, unpack, write_codes  # noqa: E402
from .checkpoint import Checkpoint, load_checkpoint, load_model, save_checkpoint  # noqa: E402
from .data import binarize, load_images, load_split, read_idx  # noqa: E402
from .errors import DVAEError  # noqa: E402
from .inputs import read_images  # noqa: E402
from .evaluate import evaluate  # noqa: E402
from .methods import METHODS, Method, make_method  # noqa: E402
from .model import DiscreteVAE, ModelConfig  # noqa: E402
from .train import TrainConfig, resume, train  # noqa: E402

__all__ = [
    "Checkpoint", "DVAEError", "DiscreteVAE", "METHODS", "Method", "ModelConfig", "TrainConfig",
    "binarize", "decode", "encode", "evaluate", "pack", "read_codes", "read_images", "unpack", "write_codes", "load_checkpoint", "load_images", "load_model", "load_split",
    "make_method", "read_idx", "resume", "save_checkpoint", "train",
]
