"""Retrieval quality of search keys against digit labels: precision@k and mean average precision.

A stored image is relevant to a query when their labels match. A key is a way of scoring every
stored image for every query: the codes under asymmetric or Hamming scoring (`search`'s
definitions), and two baselines, the binarized pixels under Hamming distance and the encoder's
float pi under Euclidean distance (FAISS `IndexFlatL2`'s metric). Each query ranks the whole
database by score, equal scores by row number (the order `search` returns); AP is the mean of
the precision at each relevant image's rank, mAP its mean over queries.

Owns: the retrieval metrics and the pixel and float-pi baselines. Must not: build indexes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from .codes import pack
from .data import DEFAULT_DATA, DataConfig
from .errors import DVAEError
from .model import DiscreteVAE
from .progress import Reporter
from .search import (KINDS, QUERY_BLOCK, SearchIndex, asymmetric_scores, blocks, bytes_per_code, default_kinds,
                     hamming_scores, query_log_pi)

KS = (1, 10, 100)


@dataclass
class Key:
    """A retrieval key: `scores(block)` gives every stored image's score for a block of queries."""

    name: str
    bytes: float  # stored per image
    higher_is_nearer: bool
    scores: Callable[[slice], np.ndarray]  # (queries in block, N)


def asymmetric_key(index: SearchIndex, log_pi: np.ndarray, name: str = "code, asymmetric") -> Key:
    """The codes scored by log q(code | query); stored as fast scan's 4-bit PQ codes (or K bits)."""
    stored = bytes_per_code("fastscan", index.latent_vars, index.classes) if index.classes <= 16 else index.codes.shape[1]
    return Key(name, stored, True, lambda block: asymmetric_scores(log_pi[block], index.codes))


def hamming_key(index: SearchIndex, query_codes: np.ndarray, name: str = "code, Hamming") -> Key:
    """The codes scored by differing variables against the query's own code; stored as the index
    that serves it holds them (fast scan's 4-bit codes for K <= 16, else one-hot bits, else indices)."""
    kinds = default_kinds(index.classes, index.latent_vars)
    stored = bytes_per_code(kinds[0], index.latent_vars, index.classes) if kinds else index.codes.shape[1]
    return Key(name, stored, False, lambda block: hamming_scores(query_codes[block], index.codes))


def _inner(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b.T in float32 (exact for the 0/1 vectors of the pixel key: counts below 2**24)."""
    return (torch.from_numpy(np.ascontiguousarray(a, np.float32)) @
            torch.from_numpy(np.ascontiguousarray(b, np.float32)).T).numpy()


def pixel_key(db_pixels: np.ndarray, query_pixels: np.ndarray) -> Key:
    """Binarized pixels (N, P) of 0/1 under Hamming distance, |a| + |b| - 2 a.b; P / 8 bytes packed."""
    db_ones = db_pixels.sum(1)
    return Key("binarized pixels, Hamming", db_pixels.shape[1] / 8, False,
               lambda block: query_pixels[block].sum(1)[:, None] + db_ones[None] - 2 * _inner(query_pixels[block], db_pixels))


def pi_key(db_pi: np.ndarray, query_pi: np.ndarray) -> Key:
    """The encoder's float32 pi (N, D*K) under squared Euclidean distance (FAISS IndexFlatL2's)."""
    db_norms = (db_pi.astype(np.float32) ** 2).sum(1)
    return Key("float pi, L2 (IndexFlatL2)", db_pi.shape[1] * 4, False,
               lambda block: (query_pi[block] ** 2).sum(1)[:, None] + db_norms[None] - 2 * _inner(query_pi[block], db_pi))


def _check_labels(db_labels: np.ndarray, query_labels: np.ndarray, stored: int, queries: int) -> None:
    if len(db_labels) != stored or len(query_labels) != queries:
        raise DVAEError(f"labels do not match: {len(db_labels)} database labels for {stored} stored images, "
                        f"{len(query_labels)} query labels for {queries} queries")


def precision(rows: np.ndarray, db_labels: np.ndarray, query_labels: np.ndarray, ks=KS) -> dict[str, float]:
    """Precision@k of given neighbour rows (Q, >= max k), nearest first."""
    relevant = db_labels[rows] == query_labels[:, None]
    return {f"P@{k}": float(relevant[:, :k].mean()) for k in ks if k <= rows.shape[1]}


def evaluate_key(key: Key, db_labels: np.ndarray, query_labels: np.ndarray, ks=KS,
                 on_block: Callable[[int], None] | None = None) -> dict[str, float | str]:
    """P@k and mAP of `key` over the queries, each ranking the whole database."""
    stored, queries = len(db_labels), len(query_labels)
    totals = dict.fromkeys([f"P@{k}" for k in ks if k <= stored], 0.0)
    ap_sum = 0.0
    positions = np.arange(1, stored + 1)
    for block in blocks(queries, QUERY_BLOCK):
        scores = key.scores(block)
        _check_labels(db_labels, query_labels, scores.shape[1], queries)
        order = np.argsort(-scores if key.higher_is_nearer else scores, axis=1, kind="stable")
        relevant = db_labels[order] == query_labels[block, None]
        for k in ks:
            if k <= stored:
                totals[f"P@{k}"] += relevant[:, :k].mean(1).sum()
        hits = np.cumsum(relevant, axis=1)
        ap_sum += ((hits / positions * relevant).sum(1) / np.maximum(relevant.sum(1), 1)).sum()
        if on_block:
            on_block(block.stop - block.start)
    result = {"key": key.name, "bytes": key.bytes}
    result.update({name: total / max(queries, 1) for name, total in totals.items()})
    result["mAP"] = ap_sum / max(queries, 1)
    return result


def evaluate_retrieval(index: SearchIndex, db_labels: np.ndarray, query_labels: np.ndarray, query_codes: np.ndarray,
             log_pi: np.ndarray | None = None, db_pixels: np.ndarray | None = None,
             query_pixels: np.ndarray | None = None, model: DiscreteVAE | None = None, rerank: int = 4,
             reporter: Reporter = Reporter(), ks=KS, data: DataConfig = DEFAULT_DATA) -> list[dict]:
    """P@k and mAP of every key the inputs allow: with the queries' `log_pi`, the asymmetric
    scoring, exact and in the fast mode (P@k only: it ranks `max(ks)`, not the whole database);
    the Hamming scoring of `query_codes`; with the pixels (bool (N, pixels)) of both sides and the
    `model` (of data set `data`), the pixel and float-pi baselines."""
    keys = []
    if log_pi is not None:
        keys.append(asymmetric_key(index, log_pi, "code, asymmetric (exact)"))
    keys.append(hamming_key(index, query_codes))
    if db_pixels is not None and query_pixels is not None and model is not None and log_pi is not None:
        keys.append(pixel_key(db_pixels, query_pixels))
        db_pi = np.exp(query_log_pi(model, db_pixels, data)).reshape(len(db_pixels), -1)
        keys.append(pi_key(db_pi, np.exp(log_pi).reshape(len(log_pi), -1)))
    results = []
    for key in keys:
        reporter.task("eval", f"ranking: {key.name}", len(query_labels))
        results.append(evaluate_key(key, db_labels, query_labels, ks, lambda n: reporter.advance("eval", n)))
    if log_pi is not None and KINDS["fastscan"].supports(index.latent_vars, index.classes):
        found = index.search_images(log_pi, max(ks), rerank=rerank)
        results.insert(1, {"key": f"code, asymmetric (fast scan, rerank {rerank})",
                           "bytes": bytes_per_code("fastscan", index.latent_vars, index.classes),
                           **precision(found.rows, db_labels, query_labels, ks), "mAP": None})
    packed = len(pack(index.codes[:1], index.classes)[0]) if len(index) else 0
    for result in results:
        if result["key"].startswith("code"):
            result["packed_bytes"] = packed  # the same codes in dvae's packed format
    return results
