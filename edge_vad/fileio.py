"""Small file helpers shared by the runtime, the model code and the export toolchain.

Every writer here is atomic: the bytes go to a temporary file in the target's own folder (same
file system, so the rename cannot turn into a copy), are flushed to disk, and the temporary file is
then renamed over the target with os.replace. A reader sees the old file or the whole new one, never
a part; a writer that fails leaves the old file as it was and no temporary file behind.

    digest = sha256_file(path)
    atomic_write_bytes(path, data)
    write_json_atomic(path, {"auc": 0.91}, sort_keys=True)
    with atomic_target(path) as tmp:        # for writers that want a file name
        np.save(tmp, array)

Runtime side: stdlib only (no numpy, no torch), so any module may import it.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional, Union

PathLike = Union[str, "os.PathLike[str]"]

SHARED_FILE_MODE = 0o644  # rw-r--r--: for artifacts other users and tools read, whatever the umask
_NEW_FILE_MODE = 0o666  # what open(path, "w") asks for; the process umask then takes its bits away
_NAME_TRIES = 100  # random temporary names tried before giving up (a clash needs 2^32 bad luck)


def sha256_file(path: PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in `chunk`-byte blocks (memory stays flat for large weights)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def fsync_dir(folder: PathLike) -> None:
    """Make a rename durable (the directory entry itself). Best effort where unsupported."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _new_temp(path: Path, base: str, suffix: str, mode: Optional[int]) -> Path:
    """Create (O_EXCL) an empty hidden file `.<base>.<random><suffix>` beside `path`; return its name.

    os.open with 0o666 lets the umask set the mode, as an ordinary open() would; tempfile.mkstemp
    would force 0600 instead. `mode`, when given, is applied exactly (chmod ignores the umask)."""
    for _ in range(_NAME_TRIES):
        tmp = path.with_name(f".{base}.{secrets.token_hex(4)}{suffix}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _NEW_FILE_MODE)
        except FileExistsError:
            continue
        os.close(fd)
        if mode is not None:
            os.chmod(tmp, mode)
        return tmp
    raise FileExistsError(f"could not create a temporary file beside {path} after {_NAME_TRIES} tries")


@contextmanager
def atomic_target(path: PathLike, *, fsync: bool = True, mode: Optional[int] = None,
                  keep_suffix: bool = True) -> Iterator[Path]:
    """Yield a temporary file name beside `path`; on a clean exit it replaces `path`, on an error it is removed.

    For writers that need a file name (np.save, torch.save, cv2.imwrite, savefig). With `keep_suffix`
    the temporary name ends in the target's suffix (`.x.1a2b3c4d.tmp.npy` for `x.npy`), because such
    writers pick the format from it, and np.save would otherwise write to `<name>.npy` instead; pass
    False to end it in `.tmp` (a crash then leaves nothing a `*.npy` glob would pick up). `fsync`
    flushes the file and then the folder entry to disk; `mode` fixes the permission bits (default:
    as a plain open() would create the file, i.e. 0o666 less the umask)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if keep_suffix and path.suffix:
        tmp = _new_temp(path, path.stem, f".tmp{path.suffix}", mode)
    else:
        tmp = _new_temp(path, path.name, ".tmp", mode)
    try:
        yield tmp
        if fsync:
            _fsync_file(tmp)  # the bytes must be on disk before the name says "complete"
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    if fsync:
        fsync_dir(path.parent)


def atomic_write_bytes(path: PathLike, data: bytes, fsync: bool = True, mode: Optional[int] = None) -> Path:
    """Write `data` to `path` atomically (see the module docstring); returns `path` as a Path."""
    path = Path(path)
    with atomic_target(path, fsync=fsync, mode=mode, keep_suffix=False) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
    return path


def atomic_write_text(path: PathLike, text: str, encoding: str = "utf-8", fsync: bool = True,
                      mode: Optional[int] = None) -> Path:
    """Write `text` to `path` atomically, encoded with `encoding`."""
    return atomic_write_bytes(path, text.encode(encoding), fsync=fsync, mode=mode)


def write_json_atomic(path: PathLike, obj: Any, *, fsync: bool = True, mode: Optional[int] = None,
                      **json_kwargs: Any) -> Path:
    """json.dumps(obj, **json_kwargs) plus a final newline, written atomically.

    Defaults: indent=2 (files people read) and allow_nan=False (NaN / Infinity are not JSON: another
    language's parser rejects the file); any json.dumps keyword overrides them."""
    options = {"indent": 2, "allow_nan": False, **json_kwargs}
    return atomic_write_text(path, json.dumps(obj, **options) + "\n", fsync=fsync, mode=mode)
