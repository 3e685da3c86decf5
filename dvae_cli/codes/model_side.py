"""Codes from a model and back: the argmax (or a Gumbel-max sample) of the encoder's pi for
images, and the decoder's Bernoulli means for codes.

Owns: running the model over chunks of images or codes. Must not: read or write files (files.py
and the format units do) or choose a checkpoint (runfolder.py does).
"""

from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np
import torch

from .. import distributed
from ..data import DEFAULT_DATA, DataConfig
from ..inputs import CHUNK, ImageSource, binarize_array, in_memory
from ..model import DiscreteVAE, draw_gumbel
from .packing import check_codes, index_dtype
from ..seeds import check_seed


def encode_block(model: DiscreteVAE, images: ImageSource, start: int, stop: int, batch_size: int = CHUNK,
                 sample: bool = False, seed: int = 0) -> Iterator[np.ndarray]:
    """Class indices (n, D) of images[start:stop], chunk by chunk: the argmax of pi, or with `sample`
    a Gumbel-max sample (one generator seeded with `seed` runs through all chunks).

    Every chunk of `batch_size` images is encoded whole and draws its noise whatever the block, so
    blocks encoded apart join into the file that encoding everything gives, byte for byte. The
    images before `start` are read but not encoded (with `sample`, their noise is drawn)."""
    device = next(model.parameters()).device
    generator = torch.Generator(device).manual_seed(check_seed(seed))
    dtype = index_dtype(model.config.classes)
    shape = (model.config.latent_vars, model.config.classes)
    first = 0
    for raw in images.raw_chunks(batch_size):
        if first >= stop:
            break
        lo, hi = max(start, first) - first, min(stop, first + len(raw)) - first
        with torch.inference_mode():  # per chunk: held across `yield`, it would leak into the caller
            noise = draw_gumbel(generator, (len(raw), *shape)) if sample else None  # drawn for every chunk
            if lo < hi:  # encode the whole chunk and keep the block's rows
                # the encoder's logits: log pi less a constant per variable, which neither the
                # argmax nor Gumbel-max depends on (so the log-softmax of `model.encode` is skipped)
                scores = model.encoder(binarize_array(raw, images.name, first, images.data).to(device)).view(len(raw), *shape)
                if sample:
                    scores = scores + noise
                codes = scores[lo:hi].argmax(dim=-1).cpu().numpy().astype(dtype)
        if lo < hi:
            yield codes
        first += len(raw)


def encode(model: DiscreteVAE, images: np.ndarray | torch.Tensor, sample: bool = False,
           seed: int = 0, data: DataConfig = DEFAULT_DATA) -> np.ndarray:
    """Codes (N, D) of images (uint8 0-255, float in [0, 1] or bool; (N, height, width) or (N, pixels)
    of the data set the model learned, `data`), made its targets as in training; see `encode_block`."""
    array = images.cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    empty = np.zeros((0, model.config.latent_vars), index_dtype(model.config.classes))
    return np.concatenate([empty, *encode_block(model, in_memory(array, data=data), 0, len(array), CHUNK, sample, seed)])


def decode_chunks(model: DiscreteVAE, chunks: Iterable[np.ndarray],
                  shape: tuple[int, int] = DEFAULT_DATA.shape) -> Iterator[np.ndarray]:
    """Bernoulli means (n, height, width) float32 for each chunk of codes (n, D); `shape` is the
    images' (DataConfig.shape of the data set the model learned)."""
    device = next(model.parameters()).device
    d, k = model.config.latent_vars, model.config.classes
    for codes in chunks:
        with torch.inference_mode():  # per chunk: held across `yield`, it would leak into the caller
            index = torch.from_numpy(check_codes(codes, k, d).astype(np.int64)).to(device)
            means = torch.sigmoid(model.decode_indices(index)).view(len(index), *shape).cpu().numpy()
        yield means


def decode(model: DiscreteVAE, codes: np.ndarray, shape: tuple[int, int] = DEFAULT_DATA.shape) -> np.ndarray:
    """Bernoulli means (N, height, width) float32 of the images that codes (N, D) stand for."""
    codes = np.asarray(codes)
    chunks = (codes[i:i + CHUNK] for i in range(0, len(codes), CHUNK))
    return np.concatenate([np.zeros((0, *shape), np.float32), *decode_chunks(model, chunks, shape)])


def encode_shared(model: DiscreteVAE, images: ImageSource, block: slice, batch_size: int = CHUNK,
                  sample: bool = False, seed: int = 0) -> Iterable[np.ndarray]:
    """The codes of images[block] in order, chunk by chunk. Under torchrun each process encodes its
    part of the block and rank 0 gets all parts (held in memory: D bytes an image); the others none."""
    if distributed.world_size() == 1:
        return encode_block(model, images, block.start, block.stop, batch_size, sample, seed)
    mine = distributed.shard(block.stop - block.start)
    codes = encode_block(model, images, block.start + mine.start, block.start + mine.stop, batch_size, sample, seed)
    empty = np.zeros((0, model.config.latent_vars), index_dtype(model.config.classes))
    return distributed.gather_to_main(np.concatenate([empty, *codes])) or []
