"""edge_vad.fileio: hashes match hashlib, writes are all-or-nothing, modes follow the umask or the caller."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest

from edge_vad.fileio import (
    SHARED_FILE_MODE,
    atomic_target,
    atomic_write_bytes,
    atomic_write_text,
    sha256_file,
    write_json_atomic,
)

# FIPS 180-2 test vector: SHA-256("abc").
ABC_SHA256 = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    try:
        yield
    finally:
        os.umask(old)


def test_sha256_file_matches_the_standard_vector_and_hashlib(tmp_path: Path) -> None:
    small = tmp_path / "abc"
    small.write_bytes(b"abc")
    assert sha256_file(small) == ABC_SHA256
    # Several chunks, the last one short: the chunked read must hash every byte exactly once.
    data = np.random.default_rng(0).bytes(10_000 + 7)
    big = tmp_path / "big.bin"
    big.write_bytes(data)
    assert sha256_file(big, chunk=1000) == sha256_file(big) == hashlib.sha256(data).hexdigest()


def test_atomic_write_bytes_creates_folders_and_replaces(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "x.bin"
    assert atomic_write_bytes(target, b"old") == target
    atomic_write_bytes(str(target), b"new contents")
    assert target.read_bytes() == b"new contents"
    assert [p.name for p in target.parent.iterdir()] == ["x.bin"]


def test_failed_replace_keeps_old_content_and_leaves_no_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "x.json"
    write_json_atomic(target, {"v": 1})

    def boom(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_text(target, "{}")
    assert json.loads(target.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_a_writer_failing_halfway_leaves_the_old_file_whole(tmp_path: Path) -> None:
    target = tmp_path / "feats.npy"
    np.save(target, np.arange(4))
    seen = []
    with pytest.raises(RuntimeError, match="interrupted"):
        with atomic_target(target) as tmp:
            seen.append(tmp)
            with open(tmp, "wb") as fh:
                fh.write(b"\x93NUMPY half a header")
            assert tmp.parent == target.parent and tmp.read_bytes()  # the partial bytes really were written
            raise RuntimeError("interrupted")
    assert np.load(target).tolist() == [0, 1, 2, 3]
    assert not seen[0].exists()
    assert [p.name for p in tmp_path.iterdir()] == ["feats.npy"]


def test_atomic_target_keeps_the_suffix_so_writers_do_not_rename(tmp_path: Path) -> None:
    # np.save appends ".npy" to a name without it; with the suffix kept it writes the temp file itself.
    target = tmp_path / "feats.npy"
    with atomic_target(target) as tmp:
        assert tmp.name.startswith(".feats.") and tmp.suffix == ".npy"
        np.save(tmp, np.ones((2, 3), np.float32))
    assert np.load(target).shape == (2, 3)
    assert [p.name for p in tmp_path.iterdir()] == ["feats.npy"]
    with atomic_target(target, keep_suffix=False) as tmp:
        assert tmp.name.endswith(".tmp")
        with open(tmp, "wb") as fh:
            np.save(fh, np.zeros(5))
    assert np.load(target).shape == (5,)


def test_write_json_atomic_format_and_strictness(tmp_path: Path) -> None:
    target = tmp_path / "m.json"
    write_json_atomic(target, {"b": 1, "a": [1.5]}, sort_keys=True)
    assert target.read_text() == json.dumps({"a": [1.5], "b": 1}, indent=2) + "\n"
    with pytest.raises(ValueError):  # NaN is not JSON: refused by default, the old file stays
        write_json_atomic(target, {"auc": float("nan")})
    assert json.loads(target.read_text()) == {"a": [1.5], "b": 1}
    write_json_atomic(target, {"auc": float("nan")}, allow_nan=True)
    assert "NaN" in target.read_text()


def test_atomic_write_text_encodes_utf8(tmp_path: Path) -> None:
    target = atomic_write_text(tmp_path / "t.txt", "Größe\n")
    assert target.read_bytes() == "Größe\n".encode("utf-8")


def test_mode_follows_the_umask_unless_given(tmp_path: Path, umask_027) -> None:
    assert _mode(atomic_write_bytes(tmp_path / "plain", b"x")) == 0o640  # as open() would: 0o666 & ~0o027
    assert _mode(atomic_write_bytes(tmp_path / "shared", b"x", mode=SHARED_FILE_MODE)) == 0o644
    with atomic_target(tmp_path / "fig.png", mode=0o600) as tmp:
        tmp.write_bytes(b"png")
    assert _mode(tmp_path / "fig.png") == 0o600


def test_fsync_flag(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append(fd), real(fd)))
    atomic_write_bytes(tmp_path / "a", b"x", fsync=False)
    assert calls == []
    atomic_write_bytes(tmp_path / "b", b"x")
    assert len(calls) == 2  # the file, then the folder entry


def test_snapshot_alias_keeps_its_shared_mode(tmp_path: Path, umask_027) -> None:
    # edge_vad.runtime.snapshot.atomic_write_bytes always wrote 0o644 (snapshots, run reports are read by other tools).
    from edge_vad.runtime.snapshot import atomic_write_bytes as snapshot_write

    assert _mode(snapshot_write(tmp_path / "s.jpg", b"jpeg")) == 0o644
