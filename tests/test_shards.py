"""Ordered shards (issue 11, part B): code files record shard i of n and the input's identity, `dvae
cat` joins only all shards of one input in order, version-1 files still read, and docs/CODES.md's
identity recipe and sample reader check what dvae checks."""

from __future__ import annotations

import gzip
import io
import re
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from conftest import fake_digits, idx_bytes
from dvae_cli.cli import app
from dvae_cli.codes import CodeWriter, Shard, join_codes, read_codes, write_codes
from dvae_cli.errors import DVAEError
from dvae_cli.inputs import identity, in_memory, open_images

REPO = Path(__file__).resolve().parents[1]
FP = "0123456789abcdef"
ID = "00112233aabbccdd"


def codes(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 10, size=(n, 30))


def shards(tmp_path: Path, total: int = 10, parts: int = 3, ident: str = ID, format: str = "packed") -> list[Path]:
    """The files of `dvae encode --shard i/parts` of an input of `total` images (random codes)."""
    whole, paths = codes(total), []
    for i in range(parts):
        block = slice(i * total // parts, (i + 1) * total // parts)
        paths.append(tmp_path / f"{ident}-{i}.bin")
        write_codes(paths[-1], whole[block], 10, format, FP, Shard(i, parts, total, ident))
    return paths


def test_shards_join_in_order_into_the_whole_input(tmp_path):
    parts = shards(tmp_path)
    joined = join_codes(parts, tmp_path / "all.bin")
    assert joined.shard == Shard(0, 1, 10, ID) and np.array_equal(joined.indices, codes(10))
    assert read_codes(tmp_path / "all.bin").shard == Shard(0, 1, 10, ID)


@pytest.mark.parametrize("order, message", [
    ([0, 2], "shard\\(s\\) 1 of 3 missing"),
    ([0, 1], "shard\\(s\\) 2 of 3 missing"),
    ([0, 1, 1, 2], "shard 1/3 is given more than once"),
    ([0, 0], "shard 0/3 is given more than once"),
    ([1, 0, 2], "out of order"),
    ([2, 1, 0], "out of order"),
])
def test_cat_refuses_missing_repeated_and_out_of_order_shards(tmp_path, order, message):
    parts = shards(tmp_path)
    result = CliRunner().invoke(app, ["cat", *(str(parts[i]) for i in order), "-o", str(tmp_path / "out.bin")])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert re.search(message, " ".join(result.output.split())), result.output
    assert not (tmp_path / "out.bin").exists()


def test_cat_refuses_shards_of_different_inputs(tmp_path):
    a, b = shards(tmp_path / "a", ident=ID), shards(tmp_path / "b", ident="ffffffffffffffff")
    with pytest.raises(DVAEError, match="not shards of one input"):
        join_codes([a[0], b[1], a[2]], tmp_path / "out.bin")
    other_size = shards(tmp_path / "c", total=11)
    with pytest.raises(DVAEError, match="not shards of one input"):
        join_codes([a[0], other_size[1], a[2]], tmp_path / "out.bin")
    other_split = shards(tmp_path / "d", parts=2)
    with pytest.raises(DVAEError, match="not shards of one input"):
        join_codes([a[0], other_split[1]], tmp_path / "out.bin")


def test_cat_refuses_mixing_files_with_and_without_a_shard(tmp_path):
    parts = shards(tmp_path)
    write_codes(tmp_path / "plain.bin", codes(3), 10, "packed", FP)
    with pytest.raises(DVAEError, match="plain.bin does not record which shard"):
        join_codes([*parts, tmp_path / "plain.bin"], tmp_path / "out.bin")


def test_files_without_shards_join_as_given(tmp_path):
    for name, seed in (("a.bin", 1), ("b.bin", 2)):
        write_codes(tmp_path / name, codes(3, seed), 10, "onehot", FP)
    joined = join_codes([tmp_path / "b.bin", tmp_path / "a.bin"], tmp_path / "out.bin")
    assert joined.shard is None and np.array_equal(joined.indices, np.concatenate([codes(3, 2), codes(3, 1)]))


def test_shards_that_do_not_add_up_are_refused(tmp_path):
    parts = shards(tmp_path)
    write_codes(parts[1], codes(1), 10, "packed", FP, Shard(1, 3, 10, ID))  # one image where 3 belong
    with pytest.raises(DVAEError, match="hold 8 codes, their input has 10 images"):
        join_codes(parts, tmp_path / "out.bin")


def test_bad_shard_fields_are_refused_when_written_and_read():
    with pytest.raises(DVAEError, match="shard index"):
        CodeWriter(io.BytesIO(), "packed", 30, 10, 0, FP, Shard(3, 3, 10, ID))
    with pytest.raises(DVAEError, match="input identity"):
        CodeWriter(io.BytesIO(), "packed", 30, 10, 0, FP, Shard(0, 1, 10, "not hex"))
    out = io.BytesIO()
    CodeWriter(out, "packed", 30, 10, 0, FP, Shard(0, 3, 10, ID)).close()
    data = bytearray(out.getvalue())
    data[52:56] = struct.pack("<I", 5)  # shard 5 of 3, with a valid CRC
    data[84:88] = struct.pack("<I", zlib.crc32(bytes(data[:84])))
    with pytest.raises(DVAEError, match="inconsistent codes header.*shard 5/3"):
        read_codes(io.BytesIO(bytes(data)))


# ---- version 1 ---------------------------------------------------------------------------------


def version1_file(indices: np.ndarray, onehot: bool = False) -> bytes:
    """A codes file as dvae wrote it before shards: the 56-byte header of docs/CODES.md's version 1."""
    out = io.BytesIO()
    write_codes(out, indices, 10, "onehot" if onehot else "packed", FP)
    v2 = out.getvalue()
    packing, d, k, group, size = struct.unpack_from("<HIIII", v2, 10)
    fields = struct.pack("<8sHHIIIIQ16s", b"\x89DVAE\r\n\x1a", 1, packing, d, k, group, size, len(indices),
                         FP.encode())
    return fields + struct.pack("<I", zlib.crc32(fields)) + v2[88:]


@pytest.mark.parametrize("onehot", [False, True])
def test_version_1_files_still_read(tmp_path, onehot):
    data = version1_file(codes(7), onehot)
    back = read_codes(io.BytesIO(data))
    assert np.array_equal(back.indices, codes(7)) and back.fingerprint == FP and back.shard is None
    (tmp_path / "v1.bin").write_bytes(data)
    indices, k, fingerprint, shard = spec_reader()(tmp_path / "v1.bin")
    assert np.array_equal(indices, codes(7)) and k == 10 and fingerprint == FP.encode() and shard is None
    joined = join_codes([tmp_path / "v1.bin", tmp_path / "v1.bin"], tmp_path / "out.bin")  # unchecked, as before
    assert len(joined.indices) == 14 and read_codes(tmp_path / "out.bin").shard is None


def test_version_1_damage_is_still_detected():
    data = bytearray(version1_file(codes(2)))
    data[20] ^= 1
    with pytest.raises(DVAEError, match="checksum"):
        read_codes(io.BytesIO(bytes(data)))


# ---- the input's identity ----------------------------------------------------------------------


def test_identity_depends_on_the_images_not_their_container(tmp_path):
    images = fake_digits(40, seed=3)
    np.save(tmp_path / "imgs.npy", images)
    (tmp_path / "imgs.idx").write_bytes(gzip.compress(idx_bytes(images)))
    (tmp_path / "pngs").mkdir()
    for i, image in enumerate(images):
        Image.fromarray(image, "L").save(tmp_path / "pngs" / f"{i:03}.png")
    floats = (images / 255).astype(np.float32)
    stdin = io.BytesIO()
    np.save(stdin, images)
    stdin.seek(0)
    sources = [open_images(tmp_path / "imgs.npy"), open_images(tmp_path / "imgs.idx"), open_images(tmp_path / "pngs"),
               in_memory(floats), open_images("-", stdin)]
    assert len({identity(source) for source in sources}) == 1
    chunks = list(sources[-1].chunks(16))  # stdin is still read whole, from its first image
    assert sum(map(len, chunks)) == 40
    assert identity(in_memory(images[:39])) != identity(sources[0])  # another count
    changed = images.copy()
    changed[5] = 255 - changed[5]
    assert identity(in_memory(changed)) != identity(sources[0])


def test_identity_is_the_recipe_in_the_spec(tmp_path, monkeypatch):
    text = (REPO / "docs" / "CODES.md").read_text()
    recipe = re.search(r"```python\n((?:(?!```).)*hexdigest(?:(?!```).)*)```", text, re.S).group(1)
    for n in (0, 5, 1500):
        np.save(tmp_path / "imgs.npy", fake_digits(n, seed=n))
        monkeypatch.chdir(tmp_path)
        namespace: dict = {}
        exec(recipe, namespace)
        assert namespace["identity"] == identity(open_images(tmp_path / "imgs.npy")), n


# ---- docs/CODES.md's reader checks what dvae decode checks -----------------------------------------


def spec_reader():
    text = (REPO / "docs" / "CODES.md").read_text()
    source = re.search(r"```python\n((?:(?!```).)*def read_dvae_codes.*?)```", text, re.S).group(1)
    namespace: dict = {}
    exec(source, namespace)
    return namespace["read_dvae_codes"]


def test_the_spec_reader_reads_the_shard(tmp_path):
    parts = shards(tmp_path, total=10, parts=3)
    indices, k, fingerprint, shard = spec_reader()(parts[1])
    assert np.array_equal(indices, codes(10)[3:6]) and shard == (1, 3, 10, ID.encode())


def damaged(format: str, d: int, k: int, where: str) -> bytes:
    """A valid file of two codes with its second record damaged where `dvae decode` looks."""
    out = io.BytesIO()
    write_codes(out, np.zeros((2, d), np.int64), k, format, FP)
    data = bytearray(out.getvalue())
    if where == "group":  # the first group value >= K**g (D=3, K=10: one group of 10 bits, set to 1016 or more)
        data[-2] |= 0b11111110
    elif where == "padding":
        data[-1] |= 0b00000001
    else:  # onehot: a second bit for the first variable
        data[-((d * k + 7) // 8)] |= 0b01000000
    return bytes(data)


@pytest.mark.parametrize("format, where", [("packed", "group"), ("packed", "padding"), ("onehot", "two-bits"),
                                           ("onehot", "padding")])
def test_the_spec_reader_refuses_what_decode_refuses(tmp_path, format, where):
    data = damaged(format, 3, 10, where)
    with pytest.raises(DVAEError, match="corrupt"):
        read_codes(io.BytesIO(data))
    (tmp_path / "bad").write_bytes(data)
    with pytest.raises(ValueError, match="corrupt"):
        spec_reader()(tmp_path / "bad")


@pytest.mark.parametrize("cut", [1, 13, 60])
def test_the_spec_reader_refuses_truncated_files(tmp_path, cut):
    out = io.BytesIO()
    write_codes(out, codes(5), 10, "packed", FP)
    (tmp_path / "cut").write_bytes(out.getvalue()[:-cut])
    with pytest.raises(ValueError):
        spec_reader()(tmp_path / "cut")


def test_encode_records_its_shard_and_cat_checks_it(tmp_path, tiny_run):
    np.save(tmp_path / "imgs.npy", fake_digits(25, seed=4))
    runner, ident = CliRunner(), identity(open_images(tmp_path / "imgs.npy"))
    parts = [tmp_path / f"part-{i}.bin" for i in range(3)]
    for i, part in enumerate(parts):
        result = runner.invoke(app, ["encode", str(tmp_path / "imgs.npy"), "-o", str(part), "--shard", f"{i}/3",
                                     "--ckpt", str(tiny_run), "--device", "cpu", "-q"])
        assert result.exit_code == 0, result.output
        assert read_codes(part).shard == Shard(i, 3, 25, ident)
    result = runner.invoke(app, ["cat", *map(str, (parts[0], parts[2], parts[1])), "-o", str(tmp_path / "all.bin")])
    assert result.exit_code == 1 and "out of order" in result.output and not (tmp_path / "all.bin").exists()
    result = runner.invoke(app, ["cat", str(parts[0]), str(parts[2]), "-o", str(tmp_path / "all.bin")])
    assert result.exit_code == 1 and "missing" in result.output
    result = runner.invoke(app, ["cat", *map(str, parts), "-o", str(tmp_path / "all.bin"), "-q"])
    assert result.exit_code == 0 and read_codes(tmp_path / "all.bin").shard == Shard(0, 1, 25, ident)
