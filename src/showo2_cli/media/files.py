"""The small files a command reads whole (configs, prompts, captions, training records): one bounded
reader that never blocks or reads without end, and the one choice of their text encoding."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from showo2_cli.errors import InputError, Showo2Error, error_detail

from .probe import PathLike, missing_input, quote_path


def read_limited(path: PathLike, limit: int, what: str, error: type[Showo2Error] = InputError) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes, in one bounded read: the one reader for
    the small files a command takes whole (configs, prompts, captions). The file is opened without
    blocking and judged by its descriptor, so a FIFO (which would wait for a writer for ever), a
    device (``/dev/zero`` never ends) or a folder is refused before a byte is read, as is a file
    whose size is over ``limit``; one that grows past ``limit`` while being read is refused after
    ``limit + 1`` bytes. Every problem is one ``error`` line naming ``what`` and the path."""
    p = Path(os.fspath(path))
    prefix = f"cannot read {what} {quote_path(p)}"
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(p, flags)
    except FileNotFoundError:
        raise missing_input(path, what, error) from None
    except OSError as e:  # permission denied, a symbolic link loop, a name too long, ...
        raise error(f"{prefix}: {error_detail(e)}") from None
    data, problem = b"", None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            problem = "is a directory, not a file"
        elif not stat.S_ISREG(st.st_mode):
            problem = "not a regular file"
        elif st.st_size <= limit:
            with os.fdopen(os.dup(fd), "rb") as fh:
                data = fh.read(limit + 1)
    except OSError as e:  # an I/O error on a damaged disk
        problem = error_detail(e)
    finally:
        os.close(fd)
    if problem is not None:
        raise error(f"{prefix}: {problem}")
    if st.st_size > limit or len(data) > limit:  # said so, or grew past it while being read
        raise error(f"{prefix}: larger than {_bytes_text(limit)}")
    return data


def text_encoding(head: bytes) -> str:
    """The encoding of a text file a user saved, from its first bytes ``head``: ``"utf-16"`` when it
    opens with UTF-16's byte-order mark (what Windows editors save as "Unicode", and what Windows
    PowerShell's ``>`` and ``Out-File`` write), else ``"utf-8"``, whose byte-order mark (what Notepad
    and PowerShell's ``-Encoding UTF8`` write) is no text: :func:`decode_text` drops it. The one
    choice for the text files a command reads (prompts, training configs, captions, records)."""
    return "utf-16" if head[:2] in (b"\xff\xfe", b"\xfe\xff") else "utf-8"


def decode_text(data: bytes, errors: str = "strict") -> str:
    """The text of a file a user saved (:func:`text_encoding`), a UTF-8 byte-order mark dropped; the
    position of a :class:`UnicodeDecodeError` is the byte's in the file."""
    text = data.decode(text_encoding(data), errors)
    return text[1:] if text[:1] == "\ufeff" else text


def _bytes_text(n: int) -> str:
    """``16 MiB``, ``64 KiB``, ``100 bytes``."""
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift} {unit}"
    return f"{n} bytes"
