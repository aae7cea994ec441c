"""Files of a local run, written so that ``kill -9`` or a power cut leaves the old or the new version, and
read so that nothing a trial leaves behind (a FIFO, a link loop, a link out of its directory) hangs or
misleads the runner.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
from pathlib import Path

COPY_CHUNK = 1 << 20


def write_all(fd: int, data: bytes) -> None:
    """Write every byte of ``data`` to ``fd`` (``os.write`` may write fewer than asked)."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def fsync_directory(path: Path) -> None:
    """Make the names in a directory (a rename, a new file) survive a crash, not just the files' contents."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so that a reader (or a crash) sees all of it or none of it."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_directory(path.parent)


def append_durably(path: Path, data: bytes) -> None:
    """Append ``data`` to ``path`` (created if missing); once this returns, it survives a crash."""
    created = not path.exists()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    if created:
        fsync_directory(path.parent)


def replace_with_link(path: Path, target: str) -> None:
    """Point the symlink ``path`` at ``target`` in one rename (a reader sees the old target or the new one)."""
    tmp = path.with_name(f".{path.name}.link.tmp")
    tmp.unlink(missing_ok=True)
    os.symlink(target, tmp)
    os.replace(tmp, path)
    fsync_directory(path.parent)


def read_regular_file(path: Path, limit: int, *, tail: bool = False) -> bytes | None:
    """At most ``limit`` bytes of a regular file (its last ones when ``tail``), or None.

    None when it is missing, unreadable or not a regular file: a trial may leave a FIFO (opening
    it for reading would wait for a writer forever) or a device where its result belongs.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return None
        if tail and info.st_size > limit:
            os.lseek(fd, info.st_size - limit, os.SEEK_SET)
        with os.fdopen(fd, "rb", closefd=False) as handle:
            return handle.read(limit)
    except OSError:
        return None
    finally:
        os.close(fd)


def remove_tree(path: Path) -> None:
    """Delete ``path`` and everything under it, however deep, never following a link; what cannot go stays.

    ``shutil.rmtree`` recurses once per level and raises RecursionError (which ``ignore_errors``
    does not cover) on a tree a few thousand levels deep.
    """
    if not path.is_dir() or path.is_symlink():
        with contextlib.suppress(OSError):
            path.unlink()
        return
    directories, pending = [], [path]
    while pending:
        directory = pending.pop()
        directories.append(directory)
        with contextlib.suppress(OSError), os.scandir(directory) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    pending.append(Path(entry.path))
                else:
                    with contextlib.suppress(OSError):
                        os.unlink(entry.path)
    for directory in reversed(directories):
        with contextlib.suppress(OSError):
            directory.rmdir()


def link_stays_inside(target: str) -> bool:
    """Whether a symlink's target, resolved from the link's own directory, can only name something below it.

    Relative and without ``..``: however such links chain, each resolves below the directory holding it.
    """
    return bool(target) and not os.path.isabs(target) and ".." not in Path(target).parts


def copy_tree_within(source: Path, target: Path) -> list[str]:
    """Copy the directory ``source`` to the new directory ``target`` without following any symlink.

    Regular files and directories are copied (files fsync'd); a symlink is copied as the same link
    when it stays inside (:func:`link_stays_inside`), else left out; FIFOs, sockets and devices are
    left out. Returns what was left out, each as ``path (why)``.
    """
    skipped: list[str] = []
    target.mkdir()
    pending = [(source, target)]
    while pending:  # not recursive: a trial may nest directories thousands deep
        src_dir, dst_dir = pending.pop()
        try:
            entries = list(os.scandir(src_dir))
        except OSError as error:
            skipped.append(f"{src_dir.relative_to(source)}/ ({error.strerror or error})")
            continue
        for entry in entries:
            src, dst = Path(entry.path), dst_dir / entry.name
            why = _copy_entry(entry, dst, pending)
            if why:
                skipped.append(f"{src.relative_to(source)} ({why})")
        fsync_directory(dst_dir)
    return skipped


def _copy_entry(entry: os.DirEntry[str], dst: Path, pending: list[tuple[Path, Path]]) -> str | None:
    """Copy one directory entry (a directory is queued); why it was left out, or None."""
    try:
        if entry.is_symlink():
            link = os.readlink(entry.path)
            if not link_stays_inside(link):
                return f"a link to {link!r}, outside the trial's output"
            os.symlink(link, dst)
        elif entry.is_dir(follow_symlinks=False):
            dst.mkdir()
            pending.append((Path(entry.path), dst))
        elif entry.is_file(follow_symlinks=False):
            _copy_file(Path(entry.path), dst)
        else:
            return "not a regular file"
    except OSError as error:
        with contextlib.suppress(OSError):
            dst.unlink()
        return error.strerror or str(error)
    return None


def _copy_file(src: Path, dst: Path) -> None:
    fd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):  # replaced by something else since it was listed
            raise OSError(0, "not a regular file")
        with os.fdopen(fd, "rb", closefd=False) as reader, open(dst, "wb") as writer:
            shutil.copyfileobj(reader, writer, COPY_CHUNK)
            writer.flush()
            os.fchmod(writer.fileno(), stat.S_IMODE(info.st_mode))
            os.fsync(writer.fileno())
    finally:
        os.close(fd)
