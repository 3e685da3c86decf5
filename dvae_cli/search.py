"""Nearest-neighbour search over dvae codes, on FAISS: the codes as retrieval keys.

Two scorings, both exact definitions that the FAISS indexes compute or approximate:

- **asymmetric** (an image query against stored codes): the log-probability the query's encoder
  gives the stored code, log q(code | query) = sum_d log pi_d(query)[code_d]; higher is nearer.
  It is product quantization's asymmetric distance: a FAISS `ProductQuantizer` with M = D
  sub-quantizers of dimension K whose first K centroids are the one-hot vectors e_k, searched with
  inner product against the query's log pi flattened to D*K, adds up exactly these D table entries.
- **hamming** (a code query against stored codes): the number of variables in which two codes
  differ, half the Hamming distance of their one-hot bits; lower is nearer. It is the same product
  quantizer searched with the query's one-hot code as the table: D minus the inner product.

Index kinds (`KINDS`, one class and one registry line each): `fastscan` (FAISS `IndexPQFastScan`
on 4-bit PQ codes, K <= 16) serves both scorings: approximate for image queries (8-bit tables of
log pi), exact for code queries (tables of 0 and 1 lose nothing to 8 bits), about 5x faster than
`binary` (FAISS `IndexBinaryFlat` on the one-hot bits, exact), which serves code queries for
16 < K <= 256. Exact asymmetric scoring, and every search the kinds do not cover, is a NumPy brute
force over the codes, which the tests hold the indexes to. (FAISS's exact `IndexPQ` of the same
quantizer, 8-bit for K > 16, is 2-3x faster than that brute force, but returns equal scores in
no set order; bench/search.py measures every one.)

Results are deterministic: neighbours come in order of score, equal scores in order of row
number. The fast mode re-scores its candidates exactly from the stored codes (`rerank` times k of
them), so its scores are exact and only the set can differ from the exact mode's.

    from dvae_cli import load_checkpoint
    from dvae_cli.search import SearchIndex, search
    ckpt = load_checkpoint("pretrained:best")
    index = SearchIndex.from_images(ckpt, "train-images-idx3-ubyte.gz")
    found = search(index, images, k=10, model=ckpt.model)   # Neighbours(rows, scores, scoring)
    write_index("db.dvaeidx", index); index = read_index("db.dvaeidx", fingerprint=ckpt.fingerprint)  # search_file

Owns: scoring, the index kinds and their registry, SearchIndex. Must not: read or write files
(search_file.py does) or print.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
import torch

from .checkpoint import Checkpoint
from .codes import check_codes, encode, index_dtype
from .codes.packing import check_classes
from .data import DEFAULT_DATA, DataConfig
from .errors import DVAEError
from .inputs import CHUNK, ImageSource, open_images
from .model import DiscreteVAE

ASYMMETRIC, HAMMING = "asymmetric", "hamming"
RERANK = 4  # fast mode: candidates per neighbour, re-scored exactly (recall in docs/SEARCH.md)
HAMMING_CANDIDATES = 4096  # fast-scan Hamming: candidates fetched at most before brute force
# log pi below this is clamped before fast scan, whose 8-bit tables such outliers coarsen: fast scan's
# own recall@10 (1,000 test queries, the 60k codes of pretrained:best, 2026-11-29) is 0.980 without,
# 0.985 at -30, 0.987 at -20, 0.950 at -10; the re-ranking restores exact scores either way
LOG_PI_FLOOR = -30.0
QUERY_BLOCK = 256  # queries per brute-force block
# fast scan adds D 8-bit table entries in 16-bit accumulators: its Hamming distances were exact up to
# D=2000 and wrong from D=2500 (K=10, 2026-12-05); beyond this D the binary index and NumPy serve
FASTSCAN_MAX_VARS = 1024
SCORE_BLOCK = 2**22  # scores a brute force holds at a time (32 MiB of float64)


def load_faiss():
    """FAISS, imported on first use (it is large); single-threaded unless OMP_NUM_THREADS says."""
    import faiss

    return faiss


# ---- the queries ----------------------------------------------------------------------------


def query_log_pi(model: DiscreteVAE, images: ImageSource | torch.Tensor | np.ndarray,
                 data: DataConfig = DEFAULT_DATA) -> np.ndarray:
    """log pi of each query image, (Q, D, K) float32: what asymmetric scoring weighs codes with.
    `images`: an opened source (`inputs.open_images`) or images as `dvae encode` takes them, of the
    data set the model learned (`data`)."""
    from .inputs import binarize_array, in_memory

    if isinstance(images, torch.Tensor):
        images = images.cpu().numpy()
    if isinstance(images, np.ndarray):
        images = in_memory(images, data=data)
    device = next(model.parameters()).device
    d, k = model.config.latent_vars, model.config.classes
    parts = [np.zeros((0, d, k), np.float32)]
    with torch.inference_mode():
        first = 0
        for raw in images.raw_chunks(CHUNK):
            x = binarize_array(raw, images.name, first, images.data).to(device)
            parts.append(model.encode(x).float().cpu().numpy())
            first += len(raw)
    return np.concatenate(parts)


# ---- exact scoring by brute force (the reference) -------------------------------------------


def asymmetric_scores(log_pi: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """log q(code_n | query_q) = sum_d log_pi[q, d, codes[n, d]] for every pair, (Q, N) float64."""
    log_pi = np.asarray(log_pi, np.float64)
    scores = np.zeros((len(log_pi), len(codes)))
    for d in range(codes.shape[1]):
        scores += log_pi[:, d, :][:, codes[:, d]]
    return scores


def hamming_scores(query_codes: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Variables in which query q and code n differ, for every pair, (Q, N) int64."""
    differ = np.zeros((len(query_codes), len(codes)), np.int64)
    for d in range(codes.shape[1]):
        differ += query_codes[:, d, None] != codes[None, :, d]
    return differ


def top_k(scores: np.ndarray, k: int, higher_is_nearer: bool, rows: np.ndarray | None = None
          ) -> tuple[np.ndarray, np.ndarray]:
    """The k nearest of each row of `scores` (Q, C): (rows, scores), by score, ties by row number.
    `rows` (Q, C) names the candidates (default: their column numbers, then any tie is in order)."""
    key = -scores if higher_is_nearer else scores
    if rows is not None:
        order = np.lexsort((rows, key), axis=1)[:, :k]  # the last key sorts first: score, then row
        return np.take_along_axis(rows, order, 1).astype(np.int64), np.take_along_axis(scores, order, 1)
    if k >= key.shape[1]:
        chosen = np.argsort(key, axis=1, kind="stable")[:, :k]  # stable: equal scores keep row order
        return chosen.astype(np.int64), np.take_along_axis(scores, chosen, 1)
    kth = np.partition(key, k - 1, axis=1)[:, k - 1]
    chosen = np.empty((len(key), k), np.int64)
    for q in range(len(key)):  # all codes at least as near as the k-th, then the first k in order
        candidates = np.flatnonzero(key[q] <= kth[q])
        chosen[q] = candidates[np.argsort(key[q, candidates], kind="stable")[:k]]
    return chosen, np.take_along_axis(scores, chosen, 1)


def brute_force(codes: np.ndarray, queries: np.ndarray, k: int, scoring: str) -> tuple[np.ndarray, np.ndarray]:
    """Exact top k of every query by brute force in NumPy: `queries` are log pi (Q, D, K) for
    asymmetric scoring, codes (Q, D) for hamming. Memory stays bounded: SCORE_BLOCK scores at a
    time, each database slice's own top k merged (ties still by row: slices come in row order)."""
    score = asymmetric_scores if scoring == ASYMMETRIC else hamming_scores
    higher = scoring == ASYMMETRIC
    k = min(k, len(codes))
    if k == 0:  # an empty database (or k = 0): no neighbours, whatever the queries
        return np.zeros((len(queries), 0), np.int64), np.zeros((len(queries), 0))
    rows, scores = [np.zeros((0, k), np.int64)], [np.zeros((0, k))]
    slice_size = max(k, SCORE_BLOCK // QUERY_BLOCK)
    for block in blocks(len(queries), QUERY_BLOCK):
        found = [top_k(score(queries[block], codes[part]), k, higher) + (part.start,)
                 for part in blocks(len(codes), slice_size)]
        if len(found) == 1:
            r, s = found[0][:2]
        else:
            r, s = top_k(np.concatenate([s for _, s, _ in found], 1), k, higher,
                         np.concatenate([r + start for r, _, start in found], 1))
        rows.append(r)
        scores.append(s.astype(np.float64))
    return np.concatenate(rows), np.concatenate(scores)


# ---- FAISS index kinds ----------------------------------------------------------------------


def _nbits(classes: int) -> int:
    """Bits per PQ code: 4 when K <= 16 (fast scan's size), else 8."""
    return 4 if classes <= 16 else 8


def one_hot_pq(latent_vars: int, classes: int):
    """The asymmetric scoring as FAISS product quantization: an empty inner-product `IndexPQ` of
    M = D sub-quantizers of dimension K whose centroid k is e_k (4 bits for K <= 16, else 8; the
    unused centroids k >= K repeat e_{K-1}, so fast scan's table ranges are the real ones). Its
    search is exact, but FAISS orders equal scores as it likes, so exact search here is NumPy's."""
    faiss = load_faiss()
    nbits = _nbits(classes)
    index = faiss.IndexPQ(latent_vars * classes, latent_vars, nbits, faiss.METRIC_INNER_PRODUCT)
    centroids = np.zeros((latent_vars, 2**nbits, classes), np.float32)
    centroids[:, np.arange(2**nbits), np.minimum(np.arange(2**nbits), classes - 1)] = 1
    faiss.copy_array_to_vector(centroids.ravel(), index.pq.centroids)
    index.is_trained = True
    return index


def pq_codes(codes: np.ndarray, classes: int) -> np.ndarray:
    """(N, D) class indices as FAISS PQ codes (N, ceil(D * nbits / 8)) uint8: with 4 bits,
    variable d in the low (d even) or high (d odd) half of byte d // 2; with 8 bits, byte d."""
    if _nbits(classes) == 8:
        return np.ascontiguousarray(codes, np.uint8)
    n, d = codes.shape
    padded = np.zeros((n, d + d % 2), np.uint8)
    padded[:, :d] = codes
    return padded[:, 0::2] | (padded[:, 1::2] << 4)


def one_hot_bits(codes: np.ndarray, classes: int) -> np.ndarray:
    """(N, D) class indices as packed one-hot bits, variable by variable, zero-padded to whole 8-byte
    words: (N, 8 ceil(D * K / 64)) uint8 (40 bytes for D=30, K=10: FAISS scans words faster than the
    38 bytes the bits need, 170 against 126 queries/CPU-s over 1M codes, measured 2026-11-29)."""
    n, d = codes.shape
    width = -(-d * classes // 64) * 64
    packed = np.empty((n, width // 8), np.uint8)
    for block in blocks(n, CHUNK):  # the unpacked bits of one block at a time
        bits = np.zeros((block.stop - block.start, width), np.uint8)
        bits[np.arange(len(bits))[:, None], np.arange(d) * classes + codes[block]] = 1
        packed[block] = np.packbits(bits, axis=1)
    return packed


class FastScan:
    """`IndexPQFastScan` keeps the 4-bit codes in SIMD blocks and adds 8-bit-quantized tables: of log
    pi for image queries (fast, its ranking a little off), of 0/1 for code queries (exact)."""

    binary = False  # a FAISS Index (serialize_index), not an IndexBinary

    def supports(self, latent_vars: int, classes: int) -> bool:
        return classes <= 16 and latent_vars <= FASTSCAN_MAX_VARS

    def build(self, codes: np.ndarray, classes: int):
        pq = one_hot_pq(codes.shape[1], classes)
        pq.add_sa_codes(pq_codes(codes, classes))
        return load_faiss().IndexPQFastScan(pq)

    def queries(self, log_pi: np.ndarray) -> np.ndarray:
        return np.maximum(log_pi, LOG_PI_FLOOR).reshape(len(log_pi), -1).astype(np.float32)

    def code_queries(self, codes: np.ndarray, classes: int) -> np.ndarray:
        """Query codes (Q, D) as tables: the inner product with a stored code counts equal variables."""
        tables = np.zeros((len(codes), codes.shape[1], classes), np.float32)
        tables[np.arange(len(codes))[:, None], np.arange(codes.shape[1]), codes] = 1
        return tables.reshape(len(codes), -1)


class Binary:
    """Hamming scoring, exact: `IndexBinaryFlat` over the one-hot bits (its distance is twice
    the number of differing variables)."""

    binary = True

    def supports(self, latent_vars: int, classes: int) -> bool:
        return classes <= 256

    def build(self, codes: np.ndarray, classes: int):
        bits = one_hot_bits(codes, classes)
        index = load_faiss().IndexBinaryFlat(bits.shape[1] * 8)
        index.add(bits)
        return index

    def queries(self, codes: np.ndarray, classes: int) -> np.ndarray:
        return one_hot_bits(codes, classes)


KINDS: dict[str, FastScan | Binary] = {
    "fastscan": FastScan(),
    "binary": Binary(),
}


def default_kinds(classes: int, latent_vars: int = 1) -> tuple[str, ...]:
    """The index a database of D variables of K classes needs: fast scan when it fits (both query
    types), else binary."""
    return tuple(next(([name] for name, kind in KINDS.items() if kind.supports(latent_vars, classes)), []))


def bytes_per_code(kind: str, latent_vars: int, classes: int) -> int:
    """Bytes a code takes in an index of `kind` (FAISS's code size)."""
    if KINDS[kind].binary:
        return -(-latent_vars * classes // 64) * 8
    return -(-latent_vars * _nbits(classes) // 8)


# ---- the index ------------------------------------------------------------------------------


@dataclass
class Neighbours:
    """The k nearest stored codes of each query, nearest first (equal scores: lower row first)."""

    rows: np.ndarray  # (Q, k) int64 row numbers in the database
    scores: np.ndarray  # (Q, k) float64: log q(code | query) (asymmetric) or differing variables (hamming)
    scoring: str  # ASYMMETRIC or HAMMING
    exact: bool  # False: the fast mode (exact scores of a possibly different set)


@dataclass
class SearchIndex:
    """Stored codes (N, D) of K classes and the FAISS indexes built on them (by kind name).
    Indexes a search needs and lacks are built on first use (fast: the centroids are fixed)."""

    codes: np.ndarray
    classes: int
    fingerprint: str | None = None  # of the checkpoint that made the codes
    indexes: dict = field(default_factory=dict)

    def __post_init__(self):
        self.codes = check_codes(self.codes, self.classes)
        if self.codes.shape[1] == 0:  # an empty text file: no codes, and not even their D
            raise DVAEError("the database holds no codes (an empty file?): nothing to index or search")
        check_classes(self.codes.shape[1], self.classes)
        self.codes = self.codes.astype(index_dtype(self.classes), copy=False)

    @property
    def latent_vars(self) -> int:
        return self.codes.shape[1]

    def __len__(self) -> int:
        return len(self.codes)

    @classmethod
    def build(cls, codes: np.ndarray, classes: int, fingerprint: str | None = None,
              kinds: tuple[str, ...] | None = None) -> SearchIndex:
        """An index over `codes` with the FAISS indexes `kinds` (those the D and K allow; default
        `default_kinds`) built now."""
        index = cls(codes, classes, fingerprint)
        for kind in default_kinds(classes, index.latent_vars) if kinds is None else kinds:
            if kind not in KINDS:
                raise DVAEError(f"unknown index kind {kind!r}; choose from {', '.join(KINDS)}")
            if KINDS[kind].supports(index.latent_vars, classes):
                index.indexes[kind] = KINDS[kind].build(index.codes, classes)
        return index

    @classmethod
    def from_images(cls, checkpoint: Checkpoint, images: str | os.PathLike | ImageSource,
                    kinds: tuple[str, ...] | None = None, on_chunk=None) -> SearchIndex:
        """Encode images (a path `dvae encode` reads, or an opened source) into codes and index them.
        `on_chunk(n)` is called after each chunk of n images (for progress)."""
        source = images if isinstance(images, ImageSource) else open_images(images, data=checkpoint.data)
        config = checkpoint.model.config
        parts = [np.zeros((0, config.latent_vars), np.uint8)]
        for raw in source.raw_chunks(CHUNK):
            parts.append(encode(checkpoint.model, raw, data=source.data))
            if on_chunk:
                on_chunk(len(raw))
        return cls.build(np.concatenate(parts), config.classes, checkpoint.fingerprint, kinds)

    def _index(self, kind: str):
        if kind not in self.indexes:
            self.indexes[kind] = KINDS[kind].build(self.codes, self.classes)
        return self.indexes[kind]

    def _check_queries(self, queries: np.ndarray, scoring: str) -> None:
        d, k = self.latent_vars, self.classes
        if scoring == ASYMMETRIC and (queries.ndim != 3 or queries.shape[1:] != (d, k)):
            raise DVAEError(f"the queries' log pi has shape {queries.shape}; this index holds codes of "
                            f"D={d}, K={k}: use a model of that shape")
        if scoring == HAMMING:
            check_codes(queries, k, d)

    def search_images(self, log_pi: np.ndarray, k: int = 10, exact: bool = False,
                      rerank: int = RERANK) -> Neighbours:
        """The k stored codes of highest log q(code | query) for each query's log pi (Q, D, K).
        Fast mode (K <= 16): fast scan's best `rerank * k`, re-scored exactly; `exact` (and K > 16):
        every code scored by NumPy."""
        log_pi = np.asarray(log_pi, np.float32)
        self._check_queries(log_pi, ASYMMETRIC)
        k = min(k, len(self))
        fast = not exact and KINDS["fastscan"].supports(self.latent_vars, self.classes)
        if k == 0 or len(log_pi) == 0 or not fast:
            return Neighbours(*brute_force(self.codes, log_pi, k, ASYMMETRIC), ASYMMETRIC, True)
        candidates = min(len(self), max(k, k * rerank))
        index, found = self._index("fastscan"), []
        for block in blocks(len(log_pi), CHUNK):  # memory bounded by the block, whatever Q
            _, rows = index.search(KINDS["fastscan"].queries(log_pi[block]), candidates)
            found.append(top_k(self._rescore(log_pi[block], rows), k, True, rows.astype(np.int64)))
        rows, scores = (np.concatenate(parts) for parts in zip(*found))
        return Neighbours(rows, scores, ASYMMETRIC, False)

    def _rescore(self, log_pi: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Exact float64 scores log q(code | query) of candidate rows (Q, C), from the stored codes."""
        if (rows < 0).any():
            raise DVAEError("FAISS returned fewer candidates than asked for: the index is inconsistent")
        chosen = self.codes[rows]  # (Q, C, D)
        q, d = np.arange(len(rows))[:, None, None], np.arange(self.latent_vars)[None, None, :]
        return np.asarray(log_pi, np.float64)[q, d, chosen].sum(axis=2)

    def search_codes(self, query_codes: np.ndarray, k: int = 10) -> Neighbours:
        """The k stored codes that differ from each query code (Q, D) in the fewest variables (exact)."""
        query_codes = np.asarray(query_codes)
        self._check_queries(query_codes, HAMMING)
        k = min(k, len(self))
        if k and len(query_codes) and KINDS["fastscan"].supports(self.latent_vars, self.classes):
            found = [self._fast_hamming(query_codes[block], k) for block in blocks(len(query_codes), CHUNK)]
            return Neighbours(*(np.concatenate(parts) for parts in zip(*found)), HAMMING, True)
        if k == 0 or len(query_codes) == 0 or not KINDS["binary"].supports(self.latent_vars, self.classes):
            return Neighbours(*brute_force(self.codes, query_codes, k, HAMMING), HAMMING, True)
        distances, rows = self._index("binary").search(KINDS["binary"].queries(query_codes, self.classes), k)
        rows, scores = top_k(distances.astype(np.float64) / 2, k, False, rows.astype(np.int64))
        return Neighbours(rows, scores, HAMMING, True)

    def _fast_hamming(self, query_codes: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact Hamming top k by fast scan. Its distances are exact but its order of equal ones is
        not by row, so it fetches more candidates than k: when the last is farther than the k-th,
        every code tied with the k-th is among them and sorting them by (distance, row) is exact.
        Queries whose ties reach further fetch 8x more; past HAMMING_CANDIDATES, brute force."""
        index, tables = self._index("fastscan"), KINDS["fastscan"].code_queries(query_codes, self.classes)
        rows, scores = np.empty((len(query_codes), k), np.int64), np.empty((len(query_codes), k))
        pending, candidates = np.arange(len(query_codes)), min(len(self), RERANK * k)
        while pending.size and candidates <= max(k, HAMMING_CANDIDATES):
            matches, found = index.search(tables[pending], candidates)
            distances = self.latent_vars - np.rint(matches).astype(np.float64)
            done = (distances[:, -1] > distances[:, k - 1]) | (candidates == len(self))
            rows[pending[done]], scores[pending[done]] = top_k(distances[done], k, False, found[done].astype(np.int64))
            pending, candidates = pending[~done], min(len(self), candidates * 8)
        if pending.size:
            rows[pending], scores[pending] = brute_force(self.codes, query_codes[pending], k, HAMMING)
        return rows, scores


def search(db: SearchIndex | np.ndarray, queries, k: int = 10, model: DiscreteVAE | None = None,
           classes: int | None = None, exact: bool = False, rerank: int = RERANK) -> Neighbours:
    """The k nearest stored codes of each query.

    `db`: a SearchIndex, or (N, D) codes (then `classes` or `model` gives K). With `model`, the
    queries are images (as `dvae encode` takes them) scored asymmetrically through the model's
    encoder; without, they are codes (Q, D), scored by Hamming distance."""
    if not isinstance(db, SearchIndex):
        k_classes = classes or (model.config.classes if model is not None else None)
        if k_classes is None:
            raise DVAEError("search over raw codes needs classes=K (or a model)")
        db = SearchIndex(np.asarray(db), k_classes)
    if model is None:
        return db.search_codes(np.asarray(queries), k)
    return db.search_images(query_log_pi(model, queries), k, exact, rerank)


def blocks(count: int, size: int = QUERY_BLOCK) -> Iterator[slice]:
    """Consecutive slices of at most `size` covering range(count)."""
    for start in range(0, count, size):
        yield slice(start, min(count, start + size))
