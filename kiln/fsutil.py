"""Atomic output directories, shared by every backend.

A backend writes its whole output into a temporary sibling of the target directory and
moves it into place only when complete, so a failed compile never leaves a half-written
project over a good one. An existing directory is replaced only when it is a Kiln output
(it holds ``kiln_manifest.json``) or empty; anything else is refused.

The staging folder is ``.NAME.kiln-tmp-PID-XXXX`` and, while an old project is swapped out,
``.NAME.kiln-old-PID``. A compile that was killed leaves them behind; the next compile to
the same output removes those whose process is gone (and restores a swapped-out project
that a kill between the two renames left without its replacement). Names without a pid
(older Kiln) count as stale after an hour. A full disk or a read-only folder while the
output is written is a KilnError, and the half-written staging folder is removed.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from kiln.errors import KilnError

MANIFEST = "kiln_manifest.json"
STALE_SECONDS = 3600  # a staging folder without an owner pid is stale after this long
WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG}


def replace_dir(new: Path, target: Path) -> None:
    """Move ``new`` to ``target``; an existing Kiln project there is replaced, anything else refused."""
    check_output_dir(target)
    if target.exists():
        old = target.with_name(f".{target.name}.kiln-old-{os.getpid()}")
        shutil.rmtree(old, ignore_errors=True)
        target.rename(old)
        new.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        new.rename(target)


def check_output_dir(target: Path) -> None:
    """Refuse early (before a long compile) what ``replace_dir`` would refuse at the end."""
    target = Path(target)
    if target.exists():
        if not target.is_dir():
            raise KilnError(f"output path {target} exists and is not a directory")
        if any(target.iterdir()) and not (target / MANIFEST).is_file():
            raise KilnError(f"output directory {target} exists, is not empty and is not a Kiln project; "
                            "remove it or choose another -o")


def read_manifest(path: Path, backend: str) -> dict:
    """The manifest of a Kiln output written by ``backend`` ("hls" or "tvm"); a clear error
    when there is none, it is corrupt, or another backend wrote it."""
    path = Path(path)
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except FileNotFoundError:
        raise KilnError(f"{path} is not a Kiln project (no {MANIFEST}); run `kiln compile` first") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise KilnError(f"{path / MANIFEST} is corrupt: {exc}") from None
    found = manifest.get("backend", "unknown")
    if found != backend:
        use = {"hls": "`kiln csim` / `kiln report` / `kiln synth`", "tvm": "`kiln run` / `kiln bench`",
               "tensorrt": "`kiln run` / `kiln bench` / `kiln build-engine`"}
        raise KilnError(f"{path} was written by the {found.upper()} backend for board {manifest.get('board')!r}, "
                        f"not the {backend.upper()} one; use {use.get(found, '`kiln compile` again')}")
    return manifest


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file renamed over it; errors are KilnErrors."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.resolve().parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.chmod(tmp, 0o666 & ~current_umask())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise KilnError(f"cannot write {path}: {exc.strerror or exc}") from None


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def clean_stale(output_dir: Path) -> list[Path]:
    """Remove the staging folders of ``output_dir`` whose compile is gone (see the module
    docstring); a swapped-out project with no project in its place is moved back. Returns
    what was removed or restored."""
    output_dir = Path(output_dir)
    parent = output_dir.resolve().parent
    pattern = re.compile(rf"^\.{re.escape(output_dir.name)}\.kiln-(tmp|old)(?:-(\d+))?(?:-.*)?$")
    try:
        entries = list(parent.iterdir()) if parent.is_dir() else []
    except OSError:
        return []
    cleaned = []
    for entry in entries:
        match = pattern.match(entry.name)
        if not match or not entry.is_dir() or entry.is_symlink():
            continue
        pid = int(match.group(2)) if match.group(2) else None
        try:
            age = time.time() - entry.stat().st_mtime
        except OSError:
            continue
        if (pid is not None and (pid == os.getpid() or _pid_alive(pid))) or (pid is None and age < STALE_SECONDS):
            continue
        target = parent / output_dir.name
        try:
            if match.group(1) == "old" and not target.exists() and (entry / MANIFEST).is_file():
                entry.rename(target)
            else:
                shutil.rmtree(entry)
        except OSError:
            continue
        cleaned.append(entry)
    return cleaned


@contextmanager
def staged_dir(output_dir: Path):
    """Yield a temporary sibling of ``output_dir`` to write into; on success it replaces
    ``output_dir`` (``replace_dir``), on any error it is removed and ``output_dir`` is untouched."""
    output_dir = Path(output_dir)
    clean_stale(output_dir)
    check_output_dir(output_dir)
    parent = output_dir.resolve().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.kiln-tmp-{os.getpid()}-", dir=parent))
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o777 & ~umask)  # mkdtemp's 0700 would make the output private
    except OSError as exc:
        raise KilnError(f"cannot write to {output_dir}: {exc.strerror or exc}") from None
    try:
        yield tmp
        replace_dir(tmp, output_dir)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if exc.errno in WRITE_ERRNOS:
            raise KilnError(f"cannot write {output_dir}: {exc.strerror}"
                            + (f" ({Path(exc.filename).name})" if exc.filename else "")) from None
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def load_array_file(path, what: str = "input"):
    """A .npy file as an array, or a .npz file as {name: array}; problems are KilnErrors naming the file."""
    import numpy as np

    path = Path(path)
    if not path.is_file():
        raise KilnError(f"{path}: no such {what} file")
    try:
        data = np.load(path, allow_pickle=False)
        if isinstance(data, np.lib.npyio.NpzFile):
            with data:
                data = {k: data[k] for k in data.files}
    except (ValueError, OSError, EOFError) as exc:
        raise KilnError(f"{path}: not a readable .npy/.npz file ({str(exc).strip()[:200]})") from None
    return data
