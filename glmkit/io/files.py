"""Opening inputs (plain, gzip or stdin, with a checksum) and publishing outputs atomically."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import glob
import gzip
import hashlib
import io
import logging
import os
import re
import shutil
import socket
import stat
import sys
import tempfile
import time
import uuid
import zlib
from pathlib import Path
from typing import BinaryIO, Iterator, Sequence

from glmkit.errors import GlmkitError

STDIO = "-"
log = logging.getLogger("glmkit")


class _HashingRaw(io.RawIOBase):
    """Feeds every byte read through sha256, so inputs are hashed in the same pass that parses them."""

    def __init__(self, raw: BinaryIO):
        self._raw = raw
        self.sha256 = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = self._raw.readinto(buffer)
        if n:
            self.sha256.update(memoryview(buffer)[:n])
        return n


class InputFile:
    """An input named on the command line: a path or ``-`` for stdin.

    ``open()`` yields a binary stream that is transparently gunzipped (detected
    by magic bytes, not by the name); once the stream has been read to the end,
    ``sha256`` holds the checksum of the bytes as stored (compressed if gzip).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = str(path)
        self.sha256: str | None = None

    @property
    def display(self) -> str:
        return "<stdin>" if self.path == STDIO else self.path

    def check(self) -> None:
        """Fail early, before any work, on a missing file or a directory."""
        if self.path == STDIO:
            return
        p = Path(self.path)
        if p.is_dir():
            raise GlmkitError(f"{self.path}: is a directory, expected a file")
        if not p.exists():
            raise GlmkitError(f"{self.path}: " + (_broken_link(p) if p.is_symlink() else "no such file"))
        if not os.access(p, os.R_OK):
            raise GlmkitError(f"{self.path}: permission denied")

    @contextlib.contextmanager
    def open(self) -> Iterator[BinaryIO]:
        self.check()
        raw = sys.stdin.buffer if self.path == STDIO else open(self.path, "rb")
        hashing = _HashingRaw(raw)
        buffered = io.BufferedReader(hashing, buffer_size=1 << 20)
        try:
            stream = gzip.GzipFile(fileobj=buffered) if buffered.peek(2)[:2] == b"\x1f\x8b" else buffered
            try:
                yield stream
            except (EOFError, gzip.BadGzipFile, zlib.error) as e:
                raise GlmkitError(f"{self.display}: truncated or corrupt gzip file ({e})") from e
            # drain so the checksum covers the whole file even if the reader stopped early
            while hashing.readinto(bytearray(1 << 20)):
                pass
            self.sha256 = hashing.sha256.hexdigest()
        finally:
            if raw is not sys.stdin.buffer:
                raw.close()

    def record(self) -> dict:
        """The provenance entry for this input."""
        return {"path": self.path if self.path == STDIO else os.path.abspath(self.path), "sha256": self.sha256}


def _broken_link(path: Path) -> str:
    try:
        path.resolve(strict=True)
    except RuntimeError:   # Python 3.11-3.12 (3.13: OSError ELOOP)
        return "a symbolic link loop"
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "a symbolic link loop"
    return f"a symbolic link to {os.readlink(path)}, which does not exist"


def _overlaps(a: Path, b: Path) -> bool:
    """The same file or folder, or one inside the other (symlinks resolved)."""
    a, b = Path(os.path.realpath(a)), Path(os.path.realpath(b))   # realpath: a link loop is no error here
    return a == b or a in b.parents or b in a.parents


def check_output_paths(paths: Sequence[str | None], force: bool, inputs: Sequence[str] = ()) -> None:
    """Refuse outputs that exist (unless force), that are (or hold, or lie in) an input of the same run, or
    whose folder is missing: before any work."""
    named = [p for p in paths if p is not None and p != STDIO]
    for p in named:
        for i in inputs:
            if i != STDIO and _overlaps(Path(p), Path(i)):
                same = os.path.realpath(p) == os.path.realpath(i)
                what = "is also an input" if same else f"overlaps the input {i}"
                raise GlmkitError(f"{p}: {what} of this run; write the output elsewhere")
    seen = set()
    for p in named:
        key = os.path.abspath(p)
        if key in seen:
            raise GlmkitError(f"{p}: named twice as an output")
        seen.add(key)
        path = Path(p)
        if (path.exists() or path.is_symlink()) and not force:
            raise GlmkitError(f"{p}: output exists; use --force to replace it")
        if not path.parent.exists():
            raise GlmkitError(f"{p}: folder {path.parent} does not exist")
        if not path.parent.is_dir():
            raise GlmkitError(f"{p}: {path.parent} is not a folder")
    if sum(p == STDIO for p in paths if p is not None) > 1:
        raise GlmkitError("only one output can go to stdout ('-')")


# -- one writer per output: a lock beside it, held for the whole run ----------------------------------------

HOST = socket.gethostname()
_held: dict[str, int] = {}  # lock files this process holds -> how many claims hold each (claims nest)


def lock_path(output: Path) -> Path:
    return output.with_name(f".{output.name}.lock")


def work_folder(output: str | Path) -> Path:
    """The resumable work folder of an output (``.NAME.work`` beside it): kept when a run fails, so that the
    same command resumes from it; only the run holding the output's lock touches it."""
    output = Path(output)
    return output.with_name(f".{output.name}.work")


def planned_work_folder(output: str | Path, plan: str) -> tuple[Path, bool]:
    """(the work folder of ``output``, whether it was kept from an earlier run with the same ``plan``). A folder
    left by another plan (other inputs, model or options) is emptied: what it holds would not fit this run."""
    work = work_folder(output)
    clear_work_folder(work, keep=lambda: (work / "plan.txt").read_text() == plan)
    if work.exists():
        return work, True
    work.mkdir(parents=True)
    (work / "plan.txt").write_text(plan)
    return work, False


def clear_work_folder(work: Path, keep=lambda: False) -> None:
    """Empty the way for a work folder: remove what is at ``work`` unless ``keep()`` says it is to be resumed,
    and only if glmkit made it (a folder holding its plan.txt or a glmkit store, or nothing). A link, a file or
    someone else's folder there is refused, never followed or deleted."""
    if not (work.exists() or work.is_symlink()):
        return
    if work.is_symlink() or not work.is_dir():
        raise GlmkitError(f"{work}: is {'a symbolic link' if work.is_symlink() else 'not a folder'}, not a work "
                          f"folder glmkit made; glmkit will not use or remove it (move it away)")
    ours = (work / "plan.txt").is_file() or not any(work.iterdir()) or \
        _schema_of(work / "zarr.json").startswith("glmkit.")
    if not ours:
        raise GlmkitError(f"{work}: a folder glmkit did not make lies where it keeps its work; glmkit will not use "
                          f"or remove it (move it away, or name another output)")
    try:
        if keep():
            return
    except (OSError, ValueError):
        pass
    remove(work)


def _schema_of(zarr_json: Path) -> str:
    import json

    try:
        schema = json.loads(zarr_json.read_text()).get("attributes", {}).get("schema")
        return schema if isinstance(schema, str) else ""
    except (OSError, ValueError, AttributeError):
        return ""


def _partials(output: Path) -> list[Path]:
    return sorted(output.parent.glob(f".{glob.escape(output.name)}.partial-*"))


LOCK_LINE = re.compile(r"pid \d+ on \S+, since \d{4}-\d\d-\d\d \d\d:\d\d:\d\d")


def _open_lock_file(path: Path, output: Path) -> int:
    """The lock file, opened for writing without following a link and only if it is a plain file of its own
    (a neighbour's symlink or hard link at that name would make glmkit overwrite whatever it points to)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o666)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise GlmkitError(f"{path}: is a symbolic link, which glmkit did not make; glmkit will not write "
                              f"through it (remove it, or name another output)") from None
        if e.errno == errno.EACCES and path.exists():
            owner = path.stat().st_uid
            raise GlmkitError(f"{path}: a lock file left by user {_user(owner)} (uid {owner}), not writable by "
                              f"you; no run of theirs holds it if `fuser {path}` shows nothing: ask them to remove "
                              f"it, or name another output") from None
        raise GlmkitError(f"{output}: cannot write in {output.parent} ({e.strerror.lower()})") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
        os.close(fd)
        what = "has other hard links" if stat.S_ISREG(info.st_mode) else "is not a plain file"
        raise GlmkitError(f"{path}: {what}, so it is not a lock glmkit made; glmkit will not write to it (remove "
                          f"it, or name another output)")
    return fd


def _user(uid: int) -> str:
    try:
        import pwd

        return pwd.getpwuid(uid).pw_name
    except (KeyError, ImportError):
        return str(uid)


@contextlib.contextmanager
def _lock(output: Path) -> Iterator[None]:
    """An exclusive flock on ``.NAME.lock``, refused at once (naming the holder) if another process has it.

    The kernel drops the lock of a process that dies, so a lock file left by a
    killed run is simply taken over. The holder unlinks the file before it lets
    go; a process that opened the old file in between sees another inode and retries.
    """
    path = lock_path(output)
    key = os.path.realpath(path)
    if _held.get(key):
        _held[key] += 1
        try:
            yield
        finally:
            _held[key] -= 1
        return
    while True:
        fd = _open_lock_file(path, output)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 4096).decode("utf-8", "replace").strip() or "unknown process"
            os.close(fd)
            raise GlmkitError(f"{output}: another glmkit run is writing it ({holder}); wait for it to finish, "
                              f"or name another output") from None
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    previous = os.read(fd, 4096).decode("utf-8", "replace").strip()
    if previous and not LOCK_LINE.fullmatch(previous):   # a file glmkit did not write: never truncate it
        os.close(fd)
        raise GlmkitError(f"{path}: exists and is not a glmkit lock; glmkit will not overwrite it (move it away, "
                          f"or name another output)")
    if previous:
        log.debug(f"{output}: taking over the lock left by a run that stopped ({previous})")
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()} on {HOST}, since {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode(), 0)
    _held[key] = 1
    try:
        yield
    finally:
        del _held[key]
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        os.close(fd)


_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS}


def _output_written(error: OSError, outputs: Sequence[Path]) -> Path | None:
    """The output a failed write was for: its path lies in the output, or its temporary or work name
    (``.NAME.*`` beside it); a full disk or quota with no path names the first output. None: not a write of ours."""
    if error.filename is not None:
        failed = Path(os.path.abspath(error.filename))
        for output in outputs:
            if failed == output or output in failed.parents:
                return output
            hidden = output.with_name(f".{output.name}.")
            if any(str(p).startswith(str(hidden)) for p in (failed, *failed.parents)):
                return output
        return None
    return outputs[0] if outputs and error.errno in _FULL else None


@contextlib.contextmanager
def claim_outputs(paths: Sequence[str | None], force: bool = False, inputs: Sequence[str] = ()) -> Iterator[None]:
    """Check the outputs, lock each for this run, and clear what runs that died left beside them.

    Hold it for the whole run: two processes given the same output cannot both
    write it (the second is refused, naming the first), and since every writer
    holds the lock, a ``.NAME.partial-*`` found while holding it is a dead run's
    leftover and is removed. Claims nest: a command may claim again what it holds.
    """
    check_output_paths(paths, force, inputs)
    named = sorted({Path(p).absolute() for p in paths if p is not None and p != STDIO})
    with contextlib.ExitStack() as locks:
        for output in named:
            locks.enter_context(_lock(output))
        for output in named:
            for leftover in _partials(output):
                log.info(f"{output.name}: removing {leftover.name}, left by a run that stopped")
                remove(leftover)
        try:
            yield
        except GlmkitError as e:
            note = _work_left(named)
            if note and "is kept in" not in str(e) and not any(str(work_folder(o)) in str(e) for o in named):
                raise type(e)(f"{e}; {note}") from e   # (a message naming a file in it says enough)
            raise
        except OSError as e:
            output = _output_written(e, named)
            if output is None:
                raise
            note = _work_left(named)
            raise GlmkitError(f"{output}: could not write it ({e.strerror or e}); nothing was replaced"
                              + (f"; {note}" if note else "")) from e


def _work_left(outputs: Sequence[Path]) -> str:
    """After a failed run: its work folders that hold nothing yet go; those holding finished work stay, and the
    error says where (a folder left without a word looks like litter, and is deleted with the work in it)."""
    kept = []
    for output in outputs:
        work = work_folder(output)
        if not work.is_dir() or work.is_symlink():
            continue
        if any(p.is_file() and p.name != "plan.txt" for p in work.rglob("*")):
            kept.append(str(work))
        elif (work / "plan.txt").is_file() or not any(work.iterdir()):
            remove(work)
    return (f"its finished work is kept in {', '.join(kept)}: the same command resumes from it (pretrain: with "
            f"--resume)") if kept else ""


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def follow_umask(folder: Path) -> None:
    """Give the files in ``folder`` the mode the umask gives new files (0644 under umask 022).

    Some writers (safetensors, tempfile) create files 0600: in a lab's shared
    model folder those would be unreadable to the group.
    """
    mask = os.umask(0)
    os.umask(mask)
    for f in Path(folder).rglob("*"):
        if f.is_file() and not f.is_symlink():
            os.chmod(f, 0o666 & ~mask)


def remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


@contextlib.contextmanager
def atomic_outputs(paths: Sequence[str | None], force: bool = False,
                   inputs: Sequence[str] = ()) -> Iterator[list[Path | None]]:
    """Yield temporary paths beside each output; publish them by rename only on success.

    A crash or an error leaves no output behind and never a half-written one
    under the final name. ``-`` is written to a temporary file and copied to
    stdout at the end. ``None`` entries (outputs not requested) stay ``None``.
    """
    with claim_outputs(paths, force, inputs):
        tag = f"partial-{HOST}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        temps: list[Path | None] = []
        for p in paths:
            if p is None:
                temps.append(None)
            elif p == STDIO:
                fd, name = tempfile.mkstemp(prefix="glmkit-stdout-")
                os.close(fd)
                temps.append(Path(name))
            else:
                final = Path(p)
                temps.append(final.with_name(f".{final.name}.{tag}"))
        try:
            yield temps
        except BaseException:
            for t in temps:
                if t is not None:
                    remove(t)
            raise
        for p, t in zip(paths, temps):
            if p is None:
                continue
            if p == STDIO:
                with open(t, "rb") as fh:
                    shutil.copyfileobj(fh, sys.stdout.buffer)
                sys.stdout.buffer.flush()
                t.unlink()
                continue
            publish(t, Path(p))


def publish(temp: Path, final: Path) -> None:
    """Rename a finished output into place, replacing what is there (callers have checked --force)."""
    if (final.is_dir() and not final.is_symlink()) or (temp.is_dir() and (final.exists() or final.is_symlink())):
        # os.replace cannot swap a folder over a non-empty folder, nor over a file or a link: move the old one
        # aside first (named as a partial, so that a run killed right here leaves nothing the next run will not
        # clear; a link is moved, never what it points to)
        old = final.with_name(f".{final.name}.partial-old-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        final.rename(old)
        temp.rename(final)
        remove(old)
    else:
        os.replace(temp, final)
