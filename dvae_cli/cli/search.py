"""`dvae index` and `dvae search`: the codes as a nearest-neighbour index (the library is dvae_cli.search).

A database or query argument is recognised by its content (sources.py): a search index file (`dvae
index`), images (a .npy of shape (N, height, width) or (N, pixels), an IDX file, a PNG or a folder of
PNGs), or else codes in any format of docs/CODES.md.

Owns: the commands' options and printing results. Must not: score or index (search.py does) or
tell a file's kind (sources.py does).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import numpy as np
import typer
from rich.table import Table

from ..checkpoint import Checkpoint, load_checkpoint
from ..codes import decode
from ..errors import DVAEError
from ..inputs import ImageSource
from ..progress import for_terminal
from ..retrieval import KS
from ..runfolder import default_checkpoint
from ..search import ASYMMETRIC, RERANK, Neighbours, SearchIndex, query_log_pi
from ..search_file import write_index
from ..sources import Opened, open_source
from .common import CKPT, DEVICE, JSON, QUIET, check_output, output_option, stdout, user_errors

app = typer.Typer()
DB_HELP = ("Database: a search index (dvae index), codes in any format, or images (encoded with --ckpt).")


class LazyCheckpoint:
    """The --ckpt checkpoint, loaded on `device` when first needed (Hamming search over codes needs none)."""

    def __init__(self, ckpt: Optional[str], device: str = "cpu"):
        self.ckpt, self.device, self._loaded = ckpt, device, None

    def get(self) -> Checkpoint:
        if self._loaded is None:
            from ..distributed import resolve_device

            self._loaded = load_checkpoint(self.ckpt or default_checkpoint(), resolve_device(self.device))
        return self._loaded


def _check_model(index: SearchIndex, loaded: Checkpoint, name: str, force: bool) -> None:
    """Image queries and decoded neighbours need the model that made the codes."""
    config = loaded.model.config
    if (index.latent_vars, index.classes) != (config.latent_vars, config.classes):
        raise DVAEError(f"{name}: codes of D={index.latent_vars}, K={index.classes}; the checkpoint {loaded.path} "
                        f"has D={config.latent_vars}, K={config.classes}")
    if index.fingerprint not in (None, loaded.fingerprint) and not force:
        raise DVAEError(f"{name}: these codes were made by another model (fingerprint {index.fingerprint}; "
                        f"{loaded.path} has {loaded.fingerprint}); give its --ckpt, or --force")


def _database(opened: Opened, model: LazyCheckpoint, quiet: bool) -> SearchIndex:
    """The SearchIndex of a database argument (encoding images with the model)."""
    if opened.index is not None:
        return opened.index
    if opened.codes is not None:
        classes = opened.classes or model.get().model.config.classes  # .npy and text do not record K
        return SearchIndex.build(opened.codes, classes, opened.fingerprint)
    loaded = model.get()
    reporter = for_terminal(quiet)
    reporter.task("encode", f"encoding {opened.name}", len(opened.images))
    try:
        return SearchIndex.from_images(loaded, opened.images, on_chunk=lambda n: reporter.advance("encode", n))
    finally:
        reporter.close()


def _pixels(images: ImageSource, limit: Optional[int]) -> np.ndarray:
    """The first `limit` (all when None) binarized images of a source, (n, pixels) bool."""
    parts, count = [np.zeros((0, images.data.pixels), bool)], 0
    for chunk in images.chunks():
        parts.append(chunk.numpy() > 0.5)
        count += len(chunk)
        if limit is not None and count >= limit:
            break
    return np.concatenate(parts)[:limit]


@app.command()
def index(
    db: str = typer.Argument(..., metavar="DB", help="Codes in any format, or images (encoded with --ckpt)."),
    output: Path = output_option("Index file to write."),
    ckpt: Optional[str] = CKPT,
    force: bool = typer.Option(False, "--force", help="Index codes made by another checkpoint than --ckpt "
                               "(D, K must match)."),
    device: str = DEVICE,
    json_out: bool = JSON,
    quiet: bool = QUIET,
) -> None:
    """Build a search index over a database once: the codes and their FAISS index, in one file
    (fast scan for K <= 16, serving image and code queries; binary for K <= 256).

    Example: dvae index train-images-idx3-ubyte.gz -o train.dvaeidx
    """
    with user_errors():
        check_output(output, db, ckpt)
        model = LazyCheckpoint(ckpt, device)
        opened = open_source(db, "DB", lambda: model.get().data)
        if opened.index is not None:
            raise DVAEError(f"{db} is already a search index")
        built = _database(opened, model, quiet)
        if ckpt is not None:  # codes indexed for a model must be that model's
            _check_model(built, model.get(), db, force)
        write_index(output, built)
    summary = {"db": db, "output": str(output), "codes": len(built), "latent_vars": built.latent_vars,
               "classes": built.classes, "fingerprint": built.fingerprint, "kinds": list(built.indexes),
               "bytes": output.stat().st_size}
    if json_out:
        print(json.dumps(summary))
    elif not quiet:
        print(f"indexed {len(built):,} codes ({', '.join(built.indexes) or 'codes only'}) -> {output} "
              f"({summary['bytes']:,} bytes)", file=sys.stderr)


def _labels(path: Optional[Path], flag: str) -> np.ndarray:
    if path is None:
        raise DVAEError(f"--eval needs {flag} FILE (an IDX label file, gzip or raw, or a .npy)")
    if path.suffix == ".npy":
        try:
            labels = np.load(path, allow_pickle=False, mmap_mode="r")
        except (OSError, ValueError) as e:
            raise DVAEError(f"{path}: not a readable .npy of labels ({e})") from None
        if labels.ndim != 1 or labels.dtype.kind not in "iub":
            raise DVAEError(f"{path}: labels must be a 1-D array of integers, one per image; got shape "
                            f"{labels.shape}, dtype {labels.dtype}")
        return np.asarray(labels)
    from ..data import read_idx

    return read_idx(path, kind="labels")


def _print_eval(results: list[dict], title: str) -> None:
    table = Table(title=title, title_justify="left")
    for column in ("key", "bytes/image", *(f"P@{k}" for k in KS), "mAP"):
        table.add_column(column, justify="left" if column == "key" else "right")
    for r in results:
        cells = [f"{r[f'P@{k}']:.3f}" if r.get(f"P@{k}") is not None else "-" for k in KS]
        table.add_row(r["key"], f"{r['bytes']:g}", *cells, f"{r['mAP']:.3f}" if r["mAP"] is not None else "-")
    stdout.print(table)


def _write_results(found: Neighbours, output: Path) -> None:
    """(Q, k) structured .npy: fields row (int64) and score (float64)."""
    from ..fileio import open_output

    table = np.zeros(found.rows.shape, [("row", "<i8"), ("score", "<f8")])
    table["row"], table["score"] = found.rows, found.scores
    with open_output(output) as f:
        np.save(f, table, allow_pickle=False)


@app.command()
def search(
    db: str = typer.Argument(..., metavar="DB", help=DB_HELP),
    query: str = typer.Argument(..., metavar="QUERY", help="Images (scored asymmetrically: log q(code|image) "
                                "from the encoder) or codes (Hamming: differing variables); - = stdin."),
    k: int = typer.Option(10, "-k", min=1, help="Neighbours per query."),
    ckpt: Optional[str] = CKPT,
    device: str = DEVICE,
    exact: bool = typer.Option(False, "--exact", help="Score image queries against every code (NumPy; "
                               "slower) instead of the FAISS fast scan."),
    rerank: int = typer.Option(RERANK, min=1, help="Fast scan: candidates per neighbour, re-scored exactly."),
    limit: Optional[int] = typer.Option(None, min=1, help="Only the first N queries."),
    output: Optional[Path] = output_option("Also write the results to a .npy: a (Q, k) array with fields row "
                                           "and score.", required=False),
    figure: Optional[Path] = typer.Option(None, "--figure", help="Draw the first queries beside their "
                                          "neighbours: .png, .svg or .pdf."),
    figure_queries: int = typer.Option(8, min=1, help="Queries drawn by --figure."),
    eval_: bool = typer.Option(False, "--eval", help="Instead of neighbours, print precision@1/10/100 and mAP "
                               "of every key these inputs allow (needs --db-labels and --query-labels)."),
    db_labels: Optional[Path] = typer.Option(None, help="--eval: labels of the database images (IDX or .npy)."),
    query_labels: Optional[Path] = typer.Option(None, help="--eval: labels of the queries (IDX or .npy)."),
    force: bool = typer.Option(False, "--force", help="Use codes made by another checkpoint (D, K must match)."),
    json_out: bool = JSON,
    quiet: bool = QUIET,
) -> None:
    """Find the k nearest stored codes of each query; prints query, rank, row, score (tab-separated).

    Image queries are scored by log q(code | image), the query's own encoder probabilities summed
    over the stored code (higher is nearer); code queries by the number of differing variables.
    Equal scores come in row order. Example: dvae search db.bin t10k-images-idx3-ubyte.gz -k 10 --json
    """
    with user_errors():
        if db == "-":
            raise DVAEError("DB must be a file (only QUERY may be - for stdin)")
        if eval_ and (output is not None or figure is not None):
            raise DVAEError("--eval prints precision and mAP; it writes no -o results or --figure (run the "
                            "search without --eval for those)")
        if output is not None and output.suffix.lower() != ".npy":
            raise DVAEError(f"-o {output}: results are written as .npy")
        if figure is not None:
            from ..figures import output_format

            output_format(figure)
        inputs = [i for i in (db, query, ckpt, db_labels, query_labels) if i is not None]
        for target in (output, figure):
            if target is not None:
                check_output(target, *inputs)
        model = LazyCheckpoint(ckpt, device)
        opened_db = open_source(db, "DB", lambda: model.get().data)
        queries = open_source(query, "QUERY", lambda: model.get().data)
        if queries.index is not None:
            raise DVAEError(f"QUERY {query} is a search index; give images or codes")
        database = _database(opened_db, model, quiet)
        image_queries = queries.images is not None
        if image_queries or figure is not None or (eval_ and opened_db.images is not None):
            _check_model(database, model.get(), db, force)
        query_pixels = log_pi = None
        if image_queries:
            query_pixels = _pixels(queries.images, limit)
            log_pi = query_log_pi(model.get().model, query_pixels, model.get().data)
            query_codes = log_pi.argmax(axis=2)
        else:
            query_codes = queries.codes[:limit]
            if queries.classes not in (None, database.classes) or query_codes.shape[1:] != (database.latent_vars,):
                raise DVAEError(f"QUERY {query}: codes of D={query_codes.shape[1]}, K={queries.classes}; the "
                                f"database has D={database.latent_vars}, K={database.classes}")
            if None not in (queries.fingerprint, database.fingerprint) and queries.fingerprint != database.fingerprint \
                    and not force:
                raise DVAEError(f"QUERY {query}: codes made by another model (fingerprint {queries.fingerprint}; "
                                f"the database's is {database.fingerprint}); use --force to compare them anyway")
        if eval_:
            db_pixels = _pixels(opened_db.images, None) if opened_db.images is not None else None
            from ..retrieval import evaluate_retrieval

            reporter = for_terminal(quiet)
            try:
                results = evaluate_retrieval(database, _labels(db_labels, "--db-labels"),
                                   _labels(query_labels, "--query-labels")[:limit], query_codes, log_pi,
                                   db_pixels, query_pixels, model.get().model if db_pixels is not None else None,
                                   rerank, reporter, data=model.get().data)
            finally:
                reporter.close()
            if json_out:
                print(json.dumps({"db": db, "query": query, "stored": len(database), "queries": len(query_codes),
                                  "results": results}))
            else:
                _print_eval(results, f"{len(query_codes):,} queries ({query}) against {len(database):,} "
                                     f"stored ({db}); relevant = same label")
            return
        if image_queries:
            found = database.search_images(log_pi, k, exact, rerank)
        else:
            found = database.search_codes(query_codes, k)
        if output is not None:
            _write_results(found, output)
        if figure is not None:
            _draw(figure, found, database, opened_db, query_pixels, query_codes, model.get(), figure_queries)
    _print_results(found, db, query, json_out)


def _draw(path: Path, found: Neighbours, database: SearchIndex, opened_db: Opened, query_pixels,
          query_codes: np.ndarray, loaded: Checkpoint, count: int) -> None:
    """The figure: stored images when the database is images, else the decoded codes."""
    from ..figures import save_figure
    from ..search_figure import neighbours_figure

    count = min(count, len(found.rows))
    rows = found.rows[:count]
    if opened_db.images is not None:
        stored = _pixels(opened_db.images, int(rows.max()) + 1 if rows.size else 0)[rows].astype(np.float32)
        what = "stored images"
    else:
        stored = decode(loaded.model, database.codes[rows.ravel()], loaded.data.shape).reshape(*rows.shape, -1)
        what = "stored codes, decoded"
    shown = (query_pixels[:count].astype(np.float32) if query_pixels is not None
             else decode(loaded.model, query_codes[:count], loaded.data.shape).reshape(count, -1))
    scoring = "log q(code|query)" if found.scoring == ASYMMETRIC else "differing variables"
    mode = "" if found.exact or found.scoring != ASYMMETRIC else ", fast scan"
    title = f"queries (left) and their {rows.shape[1]} nearest {what}\nunder each: #row and {scoring}{mode}"
    save_figure(neighbours_figure(shown, stored, rows, found.scores[:count], title,
                                  "{:.1f}" if found.scoring == ASYMMETRIC else "{:.0f}", loaded.data.shape), path)


def _print_results(found: Neighbours, db: str, query: str, json_out: bool) -> None:
    if json_out:
        print(json.dumps({"db": db, "query": query, "scoring": found.scoring, "exact": found.exact,
                          "k": found.rows.shape[1], "results": [
                              {"query": q, "rows": found.rows[q].tolist(), "scores": found.scores[q].tolist()}
                              for q in range(len(found.rows))]}))
        return
    lines = ["query\trank\trow\tscore"]
    for q in range(len(found.rows)):
        lines.extend(f"{q}\t{rank}\t{row}\t{score:.6g}"
                     for rank, (row, score) in enumerate(zip(found.rows[q], found.scores[q])))
    sys.stdout.write("\n".join(lines) + "\n")
