"""Search: the PQ form of asymmetric scoring against its definition, ties, the index file, the CLI."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from conftest import fake_digits, idx_bytes
from dvae_cli.checkpoint import load_checkpoint
from dvae_cli.cli import app
from dvae_cli.codes import write_codes
from dvae_cli.errors import DVAEError
from dvae_cli.retrieval import Key, evaluate_key, precision
import dvae_cli.search as search_module
from dvae_cli.search import (ASYMMETRIC, HAMMING, SearchIndex, asymmetric_scores, hamming_scores,
                             one_hot_pq, pq_codes, search)
from dvae_cli.search_file import HEADER_SIZE, read_index, write_index

FP = "0123456789abcdef"


def random_log_pi(q: int, d: int, k: int, seed: int = 0) -> np.ndarray:
    logits = np.random.default_rng(seed).normal(size=(q, d, k)) * 3
    return (logits - np.log(np.exp(logits).sum(-1, keepdims=True))).astype(np.float32)


def codes_with_duplicates(n: int, d: int, k: int, seed: int = 0) -> np.ndarray:
    """Random codes where rows 40-59 repeat row 7 and rows 80-99 repeat row 3: many equal scores."""
    codes = np.random.default_rng(seed).integers(0, k, size=(n, d))
    codes[40:60], codes[80:100] = codes[7], codes[3]
    return codes


def reference(scores: np.ndarray, k: int, higher_is_nearer: bool) -> np.ndarray:
    """The definition of the order: by score, equal scores by row number (a full sort)."""
    rows = np.broadcast_to(np.arange(scores.shape[1]), scores.shape)
    return np.lexsort((rows, -scores if higher_is_nearer else scores), axis=1)[:, :k]


@pytest.mark.parametrize("d,k", [(30, 10), (7, 3), (5, 16), (4, 40)])
def test_pq_inner_product_is_the_asymmetric_score(d, k):
    """FAISS IndexPQ with one-hot centroids adds up sum_d log pi_d[code_d] (NumPy brute force)."""
    codes = np.random.default_rng(1).integers(0, k, size=(500, d))
    log_pi = random_log_pi(20, d, k)
    pq = one_hot_pq(d, k)
    pq.add_sa_codes(pq_codes(codes, k))
    scores, rows = pq.search(log_pi.reshape(20, -1), 500)
    expected = asymmetric_scores(log_pi, codes)
    np.testing.assert_allclose(scores, np.take_along_axis(expected, rows, 1), atol=1e-3)
    by_hand = sum(float(log_pi[3, v, codes[11, v]]) for v in range(d))
    assert expected[3, 11] == pytest.approx(by_hand, abs=1e-9)


@pytest.mark.parametrize("d,k", [(30, 10), (7, 3), (5, 16), (4, 40), (3, 300)])
@pytest.mark.parametrize("slices", [1, 9])
def test_exact_search_is_the_definition_with_ties_by_row(d, k, slices, monkeypatch):
    monkeypatch.setattr(search_module, "SCORE_BLOCK", search_module.QUERY_BLOCK * -(-400 // slices))
    codes = codes_with_duplicates(400, d, k)
    log_pi = random_log_pi(30, d, k)
    log_pi[:5] = np.log(np.full((d, k), 1 / k))  # uniform queries: every code scores the same
    index = SearchIndex(codes, k)
    found = index.search_images(log_pi, 25, exact=True)
    expected = asymmetric_scores(log_pi, index.codes)
    assert (found.rows == reference(expected, 25, True)).all()
    np.testing.assert_allclose(found.scores, np.take_along_axis(expected, found.rows, 1), atol=1e-9)
    assert (found.rows[0] == np.arange(25)).all()  # all tied: the first rows


@pytest.mark.parametrize("d,k,kind", [(30, 10, "fastscan"), (7, 3, "fastscan"), (5, 40, "binary"), (6, 300, None)])
@pytest.mark.parametrize("most_candidates", [4096, 30])
def test_hamming_search_is_the_definition_with_ties_by_row(d, k, kind, most_candidates, monkeypatch):
    monkeypatch.setattr(search_module, "SCORE_BLOCK", search_module.QUERY_BLOCK * 50)  # brute force in slices
    monkeypatch.setattr(search_module, "HAMMING_CANDIDATES", most_candidates)  # 30: ties beyond go to brute force
    codes = codes_with_duplicates(400, d, k)
    queries = np.concatenate([codes[[7, 3, 0]], np.random.default_rng(5).integers(0, k, size=(10, d))])
    index = SearchIndex.build(codes, k)
    assert list(index.indexes) == ([kind] if kind else [])
    found = index.search_codes(queries, 30)
    expected = hamming_scores(queries, codes)
    assert (found.rows == reference(expected, 30, False)).all()
    assert (found.scores == np.take_along_axis(expected, found.rows, 1)).all()
    assert found.rows[0, :21].tolist() == [7, *range(40, 60)]  # the 21 copies of row 7, in row order


def test_fast_scan_reranked_is_exact_on_its_set_and_close_to_exact():
    codes = codes_with_duplicates(3000, 30, 10)
    log_pi = random_log_pi(50, 30, 10, seed=3)
    index = SearchIndex.build(codes, 10)
    assert list(index.indexes) == ["fastscan"]
    fast, exact = index.search_images(log_pi, 10), index.search_images(log_pi, 10, exact=True)
    assert not fast.exact and exact.exact
    scores = asymmetric_scores(log_pi, index.codes)
    np.testing.assert_allclose(fast.scores, np.take_along_axis(scores, fast.rows, 1), atol=1e-9)
    assert (np.diff(fast.scores, axis=1) <= 0).all()
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(fast.rows, exact.rows)])
    assert recall >= 0.95
    everything = index.search_images(log_pi, 10, rerank=300)  # every code a candidate: the exact answer
    assert (everything.rows == exact.rows).all()


def test_search_function_and_any_d_k(loaded):
    images = fake_digits(12, seed=4)
    codes = codes_with_duplicates(100, 30, 10)
    found = search(codes, images, k=5, model=loaded.model)
    assert found.scoring == ASYMMETRIC and found.rows.shape == (12, 5)
    by_code = search(codes, codes[:4], k=3, classes=10)
    assert by_code.scoring == HAMMING and by_code.rows[0, 0] == 0
    assert search(codes[:2], codes[:1], k=10, classes=10).rows.shape == (1, 2)  # k beyond N: all of them
    with pytest.raises(DVAEError, match="D=30, K=10"):
        SearchIndex(codes, 10).search_images(random_log_pi(2, 30, 12), 3)


# ---- the index file ---------------------------------------------------------------------------


def test_index_file_round_trip(tmp_path):
    codes = codes_with_duplicates(300, 30, 10)
    index = SearchIndex.build(codes, 10, FP)
    write_index(tmp_path / "db.idx", index)
    back = read_index(tmp_path / "db.idx", fingerprint=FP)
    assert (back.codes == index.codes).all() and back.fingerprint == FP and list(back.indexes) == ["fastscan"]
    log_pi = random_log_pi(10, 30, 10)
    assert (back.search_images(log_pi, 5).rows == index.search_images(log_pi, 5).rows).all()
    for d, k in [(4, 40), (3, 300), (30, 10)]:
        small = SearchIndex.build(np.random.default_rng(0).integers(0, k, size=(0 if k == 10 else 20, d)), k)
        write_index(tmp_path / "small.idx", small)
        assert (read_index(tmp_path / "small.idx").codes == small.codes).all()


@pytest.fixture
def index_bytes(tmp_path) -> bytes:
    write_index(tmp_path / "db.idx", SearchIndex.build(codes_with_duplicates(200, 30, 10), 10, FP))
    return (tmp_path / "db.idx").read_bytes()


@pytest.mark.parametrize("damage,message", [
    (lambda b: b[:HEADER_SIZE - 3], "truncated index header"),
    (lambda b: b[:-100], "truncated index file"),
    (lambda b: b[:HEADER_SIZE + 10], "truncated index file"),
    (lambda b: b[:12] + b"\x07" + b[13:], "corrupt index header"),
    (lambda b: b[:-50] + bytes([b[-50] ^ 1]) + b[-49:], "checksum mismatch in section 'fastscan'"),
    (lambda b: b + b"\0", "after the last section"),
    (lambda b: b[:8] + struct.pack("<H", 9) + b[10:], "version 9"),
    (lambda b: b"\x93NUMPY" + b[6:], "not a dvae search index"),
])
def test_damaged_index_files_are_clear_errors(tmp_path, index_bytes, damage, message):
    (tmp_path / "bad.idx").write_bytes(damage(index_bytes))
    with pytest.raises(DVAEError, match=message):
        read_index(tmp_path / "bad.idx")


def test_index_of_another_model_is_refused(tmp_path, index_bytes):
    (tmp_path / "db.idx").write_bytes(index_bytes)
    with pytest.raises(DVAEError, match="another model"):
        read_index(tmp_path / "db.idx", fingerprint="fedcba9876543210")


# ---- retrieval metrics ------------------------------------------------------------------------


def test_precision_and_average_precision_by_hand():
    """One query, labels by row [a b a b a]; scores rank rows 4, 0, 1, 3, 2 (rows 0 and 1 tied)."""
    db_labels, query_labels = np.array([1, 2, 1, 2, 1]), np.array([1])
    scores = np.array([[3.0, 3.0, 1.0, 2.0, 5.0]])
    key = Key("test", 1, True, lambda block: scores[block])
    result = evaluate_key(key, db_labels, query_labels, ks=(1, 2, 5))
    # ranking 4(rel) 0(rel) 1 3 2(rel): precisions at relevant ranks 1/1, 2/2, 3/5
    assert result["P@1"] == 1 and result["P@2"] == 1 and result["P@5"] == pytest.approx(3 / 5)
    assert result["mAP"] == pytest.approx((1 + 1 + 3 / 5) / 3)
    assert precision(np.array([[4, 1]]), db_labels, query_labels, ks=(1, 2)) == {"P@1": 1.0, "P@2": 0.5}


# ---- the CLI ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def loaded(tiny_run):
    return load_checkpoint(tiny_run)


def cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture
def files(tmp_path, tiny_run):
    db_images, query_images = fake_digits(300, seed=11), fake_digits(6, seed=12)
    np.save(tmp_path / "db.npy", db_images)
    np.save(tmp_path / "q.npy", query_images)
    (tmp_path / "db-labels").write_bytes(idx_bytes(np.arange(300, dtype=np.uint8) % 10))  # IDX magic 2049
    np.save(tmp_path / "q-labels.npy", np.arange(6) % 10)
    result = cli("encode", tmp_path / "db.npy", "-o", tmp_path / "db.bin", "--ckpt", tiny_run, "-q")
    assert result.exit_code == 0, result.output
    return tmp_path


def test_cli_index_and_search_end_to_end(files, tiny_run, loaded):
    result = cli("search", files / "db.bin", files / "q.npy", "-k", 4, "--ckpt", tiny_run, "--json")
    assert result.exit_code == 0, result.output
    listing = json.loads(result.stdout)
    assert listing["scoring"] == "asymmetric" and len(listing["results"]) == 6
    index = SearchIndex.from_images(loaded, files / "db.npy")
    same = search(index, np.load(files / "q.npy"), k=4, model=loaded.model)
    assert [r["rows"] for r in listing["results"]] == same.rows.tolist()

    result = cli("index", files / "db.npy", "-o", files / "db.idx", "--ckpt", tiny_run, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["kinds"] == ["fastscan"]
    out = files / "found.npy"
    result = cli("search", files / "db.idx", files / "q.npy", "-k", 4, "--ckpt", tiny_run, "-o", out, "-q")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "query\trank\trow\tscore" and len(lines) == 1 + 6 * 4
    table = np.load(out, allow_pickle=False)
    assert table.shape == (6, 4) and (table["row"] == same.rows).all()
    assert [int(line.split("\t")[2]) for line in lines[1:5]] == same.rows[0].tolist()

    result = cli("search", files / "db.idx", files / "db.bin", "-k", 3, "--limit", 2, "--json")  # codes: Hamming
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["scoring"] == "hamming"


def test_cli_figure_is_a_png(files, tiny_run):
    for db in ("db.bin", "db.npy"):
        result = cli("search", files / db, files / "q.npy", "-k", 5, "--ckpt", tiny_run, "--figure",
                      files / "f.png", "--figure-queries", 3, "-q")
        assert result.exit_code == 0, result.output
        with Image.open(files / "f.png") as image:
            assert image.format == "PNG" and image.size[0] > 300 and image.size[1] > 150


def test_cli_eval(files, tiny_run):
    result = cli("search", files / "db.npy", files / "q.npy", "--ckpt", tiny_run, "--eval", "--db-labels",
                 files / "db-labels", "--query-labels", files / "q-labels.npy", "--json")
    assert result.exit_code == 0, result.output
    rows = {r["key"]: r for r in json.loads(result.stdout)["results"]}
    assert set(rows) == {"code, asymmetric (exact)", "code, asymmetric (fast scan, rerank 4)", "code, Hamming",
                         "binarized pixels, Hamming", "float pi, L2 (IndexFlatL2)"}
    assert all(0 <= r["P@10"] <= 1 for r in rows.values()) and rows["binarized pixels, Hamming"]["bytes"] == 98
    assert rows["code, Hamming"]["bytes"] == 15 and rows["code, asymmetric (exact)"]["bytes"] == 15


def test_cli_user_errors(files, tiny_run, tmp_path):
    cases = [
        (("search", files / "db.bin", files / "db.bin", "-o", files / "x.txt"), "written as .npy"),
        (("search", files / "db.bin", files / "q.npy", "--ckpt", tiny_run, "--eval"), "--db-labels"),
        (("search", files / "nope", files / "q.npy"), "cannot read"),
    ]
    write_codes(files / "k12.bin", np.zeros((5, 30), np.uint8), 12)
    cases.append((("search", files / "db.bin", files / "k12.bin"), "the database has D=30, K=10"))
    write_codes(files / "other.bin", np.zeros((5, 30), np.uint8), 10, fingerprint=FP)
    cases.append((("search", files / "other.bin", files / "q.npy", "--ckpt", tiny_run), "another model"))
    assert cli("index", files / "db.bin", "-o", files / "db.idx", "-q").exit_code == 0
    cases.append((("search", files / "db.bin", files / "db.idx"), "is a search index"))
    for args, message in cases:
        result = cli(*args)
        assert result.exit_code == 1 and message in result.output, (args, result.output)
        assert "Traceback" not in result.output


def test_index_file_read_with_nothing_but_the_spec(tmp_path):
    """docs/SEARCH.md's layout, read with struct, zlib and FAISS alone."""
    import zlib

    import faiss

    codes = codes_with_duplicates(120, 30, 10)
    write_index(tmp_path / "db.idx", SearchIndex.build(codes, 10, FP, kinds=("fastscan", "binary")))
    data = (tmp_path / "db.idx").read_bytes()
    magic, version, d, k, n, sections, fingerprint = struct.unpack("<8sHIIQH16s", data[:44])
    assert (magic, version, d, k, n, sections, fingerprint) == (b"\x89DVIX\r\n\x1a", 1, 30, 10, 120, 3, FP.encode())
    assert struct.unpack("<I", data[44:48])[0] == zlib.crc32(data[:44])
    offset, found = 48, {}
    for _ in range(sections):
        name, size, crc = struct.unpack("<16sQI", data[offset:offset + 28])
        payload = data[offset + 28:offset + 28 + size]
        assert zlib.crc32(payload) == crc
        found[name.rstrip(b"\0").decode()] = payload
        offset += 28 + size
    assert offset == len(data) and list(found) == ["codes", "fastscan", "binary"]
    assert len(found["codes"]) == 120 * 13  # packed records of docs/CODES.md
    binary = faiss.deserialize_index_binary(np.frombuffer(found["binary"], np.uint8))
    one_hot = np.zeros((1, 320), np.uint8)  # the 300 one-hot bits, zero-padded to 5 words of 64
    one_hot[0, :300] = np.eye(10, dtype=np.uint8)[codes[0]].ravel()
    distances, rows = binary.search(np.packbits(one_hot, axis=1), 1)
    assert rows[0, 0] == 0 and distances[0, 0] == 0
    assert faiss.deserialize_index(np.frombuffer(found["fastscan"], np.uint8)).ntotal == 120


def test_cli_query_from_stdin(files, tiny_run):
    import io

    buffer = io.BytesIO()
    np.save(buffer, np.load(files / "q.npy")[:2])
    result = CliRunner().invoke(app, ["search", str(files / "db.bin"), "-", "-k", "2", "--ckpt", str(tiny_run),
                                      "--json"], input=buffer.getvalue())
    assert result.exit_code == 0, result.output
    from_file = cli("search", files / "db.bin", files / "q.npy", "-k", 2, "--ckpt", tiny_run, "--limit", 2, "--json")
    assert json.loads(result.stdout)["results"] == json.loads(from_file.stdout)["results"]


def test_outputs_that_are_inputs_are_refused(files, tiny_run):
    for args in (["index", files / "db.bin", "-o", files / "db.bin", "--ckpt", tiny_run],
                 ["search", files / "db.bin", files / "q.npy", "-o", files / "q.npy", "--ckpt", tiny_run]):
        before = Path(args[-3]).read_bytes()
        result = cli(*args)
        assert result.exit_code == 1 and "same file as the input" in result.output
        assert Path(args[-3]).read_bytes() == before
