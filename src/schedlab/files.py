"""Writing outputs so that a reader, or a kill, never meets half a file or half a report.

A file is written to a temporary name in its own directory and renamed over the target (one
atomic step on POSIX). A report's folder is built beside its target and swapped in with two
renames: a reader sees the old report or the new one, never a mix of the two. What lands gets
the permissions the user's umask gives a new file or folder (a temporary one is private while
it is written). A temporary name holds its writer's process id: a later write of the same
target removes what a killed writer left.
"""

from __future__ import annotations

import glob
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_file(path: Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path``, else it is removed."""
    path.parent.mkdir(parents=True, exist_ok=True)  # its errors name the folder
    with errors_named(path):
        fd, name = tempfile.mkstemp(prefix=temp_prefix(path), suffix=".tmp", dir=path.parent)
    os.close(fd)
    temp = Path(name)
    try:
        with errors_named(path, temp):
            yield temp
            os.chmod(temp, 0o666 & ~umask())
            os.replace(temp, path)
        remove_litter(path)
    finally:
        temp.unlink(missing_ok=True)


def temp_prefix(path: Path) -> str:
    return f".{path.name}.{os.getpid()}."


def umask() -> int:
    """The process's umask, read without changing it (Linux), else set and restored."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def remove_litter(path: Path) -> None:
    """Remove the temporary files and folders of ``path`` that writers killed mid-way left
    (their process no longer exists)."""
    for entry in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        pid = entry.name[len(path.name) + 2 :].partition(".")[0]
        if pid.isdigit() and not process_exists(int(pid)):
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)


def process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


@contextmanager
def errors_named(path: Path, temp: Path | None = None) -> Iterator[None]:
    """An OSError about the temporary file (or folder) names ``path``: the file the user asked
    for (a full disk or a missing permission is the target's problem)."""
    try:
        yield
    except OSError as err:
        if err.filename is None or temp is None:
            raise OSError(err.errno, err.strerror, str(path)) from err
        name = str(err.filename)
        if not name.startswith(str(temp)):
            raise
        raise OSError(err.errno, err.strerror, str(path) + name[len(str(temp)) :]) from err


# What a report folder holds; a folder with anything else is not replaced.
REPORT_SUFFIXES = {".html", ".csv", ".md", ".tex", ".png", ".svg"}


def is_report(path: Path) -> bool:
    entries = list(path.iterdir())
    return (path / "index.html").is_file() and all(
        e.is_file() and e.suffix in REPORT_SUFFIXES for e in entries
    )


def is_tensorboard_logs(path: Path) -> bool:
    """Folders of TensorBoard event files and nothing else (an earlier TensorBoard export)."""
    files = [p for p in path.rglob("*") if not p.is_dir()]
    return bool(files) and all(p.name.startswith("events.out.tfevents.") for p in files)


def check_replaceable(path: Path, looks_like: Callable[[Path], bool], what: str) -> None:
    """A folder may be replaced when it is new, empty, or ``looks_like`` an earlier one."""
    if not path.exists():
        return
    if not path.is_dir():
        raise ValueError(f"{path} is a file; {what} goes into a folder")
    if any(path.iterdir()) and not looks_like(path):
        raise ValueError(
            f"{path} holds files that are not {what}; give --out a new or empty folder, or "
            f"an earlier {what.removeprefix('a ')}'s"
        )


@contextmanager
def atomic_dir(
    path: Path, looks_like: Callable[[Path], bool] = is_report, what: str = "a schedlab report"
) -> Iterator[Path]:
    """Yield a fresh temporary folder to fill; on success it takes the place of ``path`` (new,
    empty, or an earlier one of its kind: see ``check_replaceable``)."""
    path = path.resolve()
    check_replaceable(path, looks_like, what)
    path.parent.mkdir(parents=True, exist_ok=True)  # its errors name the folder
    with errors_named(path):
        temp = Path(tempfile.mkdtemp(prefix=temp_prefix(path), suffix=".tmp", dir=path.parent))
    try:
        with errors_named(path, temp):
            yield temp
            mask = umask()
            os.chmod(temp, 0o777 & ~mask)
            for entry in temp.rglob("*"):
                os.chmod(entry, (0o777 if entry.is_dir() else 0o666) & ~mask)
        old = path.with_name(f".{path.name}.old")
        shutil.rmtree(old, ignore_errors=True)  # left by an earlier swap that was killed
        if path.exists():
            os.replace(path, old)
        os.replace(temp, path)
        shutil.rmtree(old, ignore_errors=True)
        remove_litter(path)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
