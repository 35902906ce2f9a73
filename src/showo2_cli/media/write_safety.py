"""What every output write is guarded by (the pieces :mod:`~showo2_cli.media.outputs`' atomic
writers stand on): Ctrl-C, SIGTERM and SIGHUP held back for the few file operations that must not
be cut in two (:func:`signals_deferred`), an OS error while writing said as one
:class:`~showo2_cli.errors.OutputError` naming the target, also when a library reports it in its
own exception type (:func:`is_write_error`, :func:`write_failed`, :func:`write_errors`), a
finished file or folder given a normal new one's mode (:func:`normal_mode`) and flushed to disk
(:func:`fsync_path`), and the one appending writer, a log's line whole or not at all
(:func:`append_text`). :mod:`~showo2_cli.media.outputs` re-exports these names.
"""

from __future__ import annotations

import errno
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from showo2_cli.errors import OutputError, Showo2Error

from ..launch import INTERRUPTS
from .files import PathLike, quote_path
from .probe import error_detail


@contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold Ctrl-C, SIGTERM and SIGHUP back for a few quick file operations that must not be cut in two
    (create and remove a probe file, rename a finished output into place): a signal that comes
    meanwhile is acted on (its handler called) when the block ends. Only the main thread can
    change handlers; elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    old = {}
    for sig in INTERRUPTS:
        if signal.getsignal(sig) in (None, signal.SIG_IGN):  # set outside Python, or ignored: left alone
            continue
        try:
            old[sig] = signal.signal(sig, lambda signum, frame: caught.append(signum))
        except (ValueError, OSError):
            pass
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
        if caught:
            handler = old.get(caught[0])
            if callable(handler):
                handler(caught[0], None)  # raises KeyboardInterrupt (or the program's own exception)
            elif handler == signal.SIG_DFL:
                os.kill(os.getpid(), caught[0])


_WRITE_ERROR_TEXTS = ("IoError", "os error", "failed writing", "No space left", "file write failed")


def is_write_error(exc: BaseException) -> bool:
    """An OS error while writing, also when a library reports it in its own exception type
    (safetensors' ``IoError``, torch's "failed writing file")."""
    if isinstance(exc, Showo2Error):  # ModelError and OutputError are OSErrors, not write failures
        return False
    return isinstance(exc, OSError) or (isinstance(exc, Exception) and any(k in str(exc) for k in _WRITE_ERROR_TEXTS))


def write_failed(target: Path, exc: BaseException, what: str = "") -> OutputError:
    """An OutputError for an error raised while writing ``target`` (``what``: "image", "video"): a
    full disk (ENOSPC), a quota (EDQUOT), a read-only file system (EROFS) or any other OS error,
    including the ones a library reports in its own exception type (safetensors' ``IoError``);
    never the name of the temporary file it was written as."""
    code, text = getattr(exc, "errno", None), str(exc)
    if code in (errno.ENOSPC, errno.EDQUOT) or "No space left" in text or "StorageFull" in text:
        why = "no space left on the device"
    elif code == errno.EROFS or "Read-only file system" in text:
        why = "read-only file system"
    elif code == errno.EFBIG or "File too large" in text:  # RLIMIT_FSIZE, or a file system's largest file
        why = "the file is larger than this process may write (its file-size limit, ulimit -f, or the file system's)"
    elif isinstance(exc, OSError) and exc.strerror:  # its strerror alone: the path in it may be the temporary's
        why = exc.strerror[:1].lower() + exc.strerror[1:]
    else:
        why = error_detail(exc) if isinstance(exc, OSError) else text.strip().splitlines()[0][:200] if text else \
            type(exc).__name__
    return OutputError(f"cannot write {what + ' ' if what else ''}{quote_path(target)}: {why}")


@contextmanager
def write_errors(target: Path) -> Iterator[None]:
    """A full disk, a quota or a read-only file system while writing: one :class:`OutputError`."""
    try:
        yield
    except OutputError:
        raise
    except Exception as e:
        if is_write_error(e):
            raise write_failed(target, e) from e
        raise


def append_text(path: PathLike, text: str) -> None:
    """Append ``text`` to the log ``path`` whole or not at all: a write cut by a full disk is cut back
    to the old end (no half line) and raised as :func:`write_failed` says it, naming the file."""
    target, data = Path(os.fspath(path)), memoryview(text.encode("utf-8"))
    with signals_deferred():  # (the few system calls of one line)
        try:
            fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
        except OSError as e:
            raise write_failed(target, e) from e
        end = os.fstat(fd).st_size
        try:
            while data:
                data = data[os.write(fd, data):]
        except OSError as e:
            with suppress(OSError):
                os.ftruncate(fd, end)
            raise write_failed(target, e) from e
        finally:
            os.close(fd)


def fsync_path(p: Path) -> None:
    """Flush a file's or a folder's entries to disk (best effort where the OS refuses)."""
    try:
        fd = os.open(p, os.O_RDONLY | (os.O_DIRECTORY if p.is_dir() else 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def normal_mode(p: Path, folder: bool = False) -> None:
    """Give a finished output the mode of a normal new file (0o666) or folder (0o777) minus the umask."""
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.chmod(p, (0o777 if folder else 0o666) & ~umask)
    except OSError:
        pass
