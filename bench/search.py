"""Benchmark of `dvae search` (not a test): queries/s of every search mode over 60k, 1M and 10M codes.

The 60k database is the real codes of the 60,000 MNIST training images; larger ones repeat real
codes with `--changed` variables of each set to random classes, so neighbours stay realistic.
Queries are the first `--queries` test images (log pi for asymmetric scoring, their argmax codes
for Hamming). For each size, in one run: FAISS fast scan alone and re-ranked (dvae's default),
FAISS's exact IndexPQ of the same quantizer, the NumPy brute force (dvae's exact mode); for
Hamming, dvae's fast scan search (exact), FAISS's IndexBinaryFlat and a NumPy brute force;
recall@10 of each mode against the exact top 10 (NumPy, ties by row: an exact mode that orders
ties otherwise shows below 1), and the memory of each index. Run it on one thread:

    OMP_NUM_THREADS=1 DVAE_DATA_DIR=/path/to/mnist python bench/search.py [--ckpt pretrained:best]
        [--sizes 60000,1000000,10000000] [--queries 1000] [--json out.json]

Queries/s are given per CPU second of this process (`time.process_time`), the measure that
holds on a shared machine, and per wall-clock second.
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import numpy as np

from dvae_cli.checkpoint import load_checkpoint
from dvae_cli.data import MNIST, resolve_data_dir
from dvae_cli.search import (ASYMMETRIC, HAMMING, KINDS, SearchIndex, brute_force, bytes_per_code, load_faiss,
                             one_hot_pq, pq_codes, query_log_pi)

K_NEAREST = 10


def timed(run):
    """(result, CPU seconds, wall seconds) of run()."""
    cpu, wall = time.process_time(), time.perf_counter()
    result = run()
    return result, time.process_time() - cpu, time.perf_counter() - wall


def recall(found: np.ndarray, exact: np.ndarray) -> float:
    """Mean fraction of the exact top k that `found` (same queries, k columns) contains."""
    return float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(found, exact)]))


def database(real: np.ndarray, size: int, changed: int, classes: int, seed: int = 0) -> np.ndarray:
    """`size` codes: the real ones, then copies of random real codes with `changed` variables redrawn."""
    if size <= len(real):
        return real[:size]
    rng = np.random.default_rng(seed)
    codes = real[rng.integers(0, len(real), size)]
    codes[:len(real)] = real
    rows = np.arange(len(real), size)
    for _ in range(changed):
        codes[rows, rng.integers(0, codes.shape[1], len(rows))] = rng.integers(0, classes, len(rows))
    return codes


def measure(name: str, queries: int, run, exact: np.ndarray | None = None, memory: int | None = None,
            found: list | None = None) -> dict:
    """Time run() (returning (rows, scores)); `found` receives its rows."""
    (rows, _), cpu, wall = timed(run)
    if found is not None:
        found.append(rows)
    row = {"mode": name, "queries": queries, "q_per_cpu_s": queries / cpu, "q_per_wall_s": queries / wall,
           "recall@10": recall(rows[:len(exact)], exact) if exact is not None else None,
           "index_bytes": memory}
    print(f"  {name:44s} {row['q_per_cpu_s']:9.1f} q/CPU-s {row['q_per_wall_s']:9.1f} q/s wall"
          + (f"  recall@10 {row['recall@10']:.4f}" if exact is not None else "")
          + (f"  {memory / 2**20:8.1f} MiB" if memory else ""), flush=True)
    return row


def bench_size(codes: np.ndarray, classes: int, log_pi: np.ndarray, query_codes: np.ndarray,
               exact_queries: int) -> list[dict]:
    n, d = codes.shape
    index, build_cpu, _ = timed(lambda: SearchIndex.build(codes, classes))
    print(f"{n:,} codes: fast scan index built in {build_cpu:.2f} CPU-s", flush=True)
    rows: list[dict] = []
    q = len(log_pi)
    sub = slice(0, exact_queries)
    exact: list[np.ndarray] = []
    rows.append(measure("NumPy brute force, asymmetric (dvae --exact)", exact_queries,
                        lambda: brute_force(index.codes, log_pi[sub], K_NEAREST, ASYMMETRIC), None, n * d, exact))
    truth = exact[0]
    fast = index.indexes["fastscan"]
    fast_bytes = bytes_per_code("fastscan", d, classes) * n
    queries32 = KINDS["fastscan"].queries(log_pi)
    rows.append(measure("FAISS IndexPQFastScan alone", q,
                        lambda: fast.search(queries32, K_NEAREST)[::-1], truth, fast_bytes))
    for rerank in (1, 4):
        rows.append(measure(f"fast scan, re-ranked x{rerank}" + (" (dvae default)" if rerank == 4 else ""), q,
                            lambda: (index.search_images(log_pi, K_NEAREST, rerank=rerank).rows, None),
                            truth, fast_bytes + n * d))
    pq = one_hot_pq(d, classes)
    pq.add_sa_codes(pq_codes(index.codes, classes))
    pq_sub = slice(0, max(1, exact_queries // 4))
    rows.append(measure("FAISS IndexPQ (exact scores, ties unordered)", pq_sub.stop,
                        lambda: pq.search(np.ascontiguousarray(log_pi[pq_sub].reshape(pq_sub.stop, -1)),
                                          K_NEAREST)[::-1], truth, pq.code_size * n))
    exact = []
    rows.append(measure("NumPy brute force, Hamming", exact_queries,
                        lambda: brute_force(index.codes, query_codes[sub], K_NEAREST, HAMMING), None, n * d, exact))
    ham_truth = exact[0]
    rows.append(measure("fast scan, Hamming, ties completed (dvae)", q,
                        lambda: (index.search_codes(query_codes, K_NEAREST).rows, None), ham_truth, fast_bytes))
    binary = KINDS["binary"].build(index.codes, classes)
    binary_queries = KINDS["binary"].queries(query_codes, classes)
    rows.append(measure("FAISS IndexBinaryFlat, Hamming (K > 16)", q,
                        lambda: binary.search(binary_queries, K_NEAREST)[::-1], ham_truth,
                        bytes_per_code("binary", d, classes) * n))
    for row in rows:
        row["codes"] = n
    print(f"  peak resident memory so far {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB",
          flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", default="pretrained:best")
    parser.add_argument("--sizes", default="60000,1000000,10000000")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--exact-queries", default="1000,200,20",
                        help="queries the slow exact modes run, per size (comma list, the last repeats)")
    parser.add_argument("--changed", type=int, default=3, help="variables redrawn in each synthetic code")
    parser.add_argument("--json", help="write the rows to this file")
    args = parser.parse_args()

    faiss = load_faiss()
    print(f"FAISS {faiss.__version__}, {faiss.omp_get_max_threads()} thread(s)")
    ckpt = load_checkpoint(args.ckpt)
    folder = resolve_data_dir()
    files = {stem: next(folder.glob(f"{stem}*")) for stem in (MNIST.files["train"], MNIST.files["test"])}
    real = SearchIndex.from_images(ckpt, files[MNIST.files["train"]], kinds=()).codes
    from dvae_cli.inputs import open_images

    test = open_images(files[MNIST.files["test"]])
    log_pi = query_log_pi(ckpt.model, next(test.raw_chunks(args.queries))[:args.queries])
    query_codes = log_pi.argmax(axis=2)
    classes = ckpt.model.config.classes
    print(f"{ckpt.path}: {len(real):,} real codes, {len(log_pi)} test queries, k = {K_NEAREST}")
    sizes = [int(s) for s in args.sizes.split(",")]
    exact = [int(s) for s in args.exact_queries.split(",")]
    rows = []
    for i, size in enumerate(sizes):
        codes = database(real, size, args.changed, classes)
        rows += bench_size(codes, classes, log_pi, query_codes, min(exact[min(i, len(exact) - 1)], len(log_pi)))
        del codes
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
