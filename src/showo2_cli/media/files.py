"""Input files: the first check of every reader (:func:`check_input_file`: a missing path, a folder,
a device, an empty file, a Git LFS pointer), and the small files a command reads whole (configs,
prompts, captions, training records): one bounded reader that never blocks or reads without end,
and the one choice of their text encoding."""

from __future__ import annotations

import errno
import os
import re
import stat
from pathlib import Path
from typing import Union

from showo2_cli.errors import InputError, Showo2Error, UsageError, error_detail, short, unexpanded_home

PathLike = Union[str, "os.PathLike[str]"]


def quote_path(path: PathLike) -> str:
    """The path quoted for a one-line message."""
    text = os.fspath(path)
    return "'" + text.replace("\n", "\\n").replace("\r", "\\r") + "'"


def missing_input(path: PathLike, what: str, error: type[Showo2Error] = InputError) -> Showo2Error:
    """The one message for an input path that does not exist: a broken symbolic link, a URL (the
    tools fetch none), else no such file."""
    p = Path(os.fspath(path))
    if p.is_symlink():
        try:
            os.stat(p)
        except OSError as e:  # (a loop of links read "broken symbolic link": nothing is missing)
            if e.errno == errno.ELOOP:
                return error(f"cannot read {what} {quote_path(p)}: broken symbolic link (a loop: each link leads to another)")
        return error(f"cannot read {what} {quote_path(p)}: broken symbolic link")
    text = os.fspath(path)  # a URL (the CLI's Path made "https://x" "https:/x"): say so
    collapsed = re.match(r"(?i)(https?|ftps?|s3|gs|hf|file):/(?!/)", text) if isinstance(text, str) else None
    if collapsed:
        text = collapsed[1] + ("://" if collapsed[1].lower() != "file" else ":///") + text[collapsed.end():]
    if isinstance(text, str) and re.match(r"[A-Za-z][A-Za-z0-9+.-]+://", text):
        return error(f"cannot read {what} {short(text, 80)}: URLs are not fetched; download the file and pass its path")
    return error(f"cannot read {what} {quote_path(p)}: no such file{unexpanded_home(path)}")


#: how a Git LFS pointer file begins: a repository cloned without Git LFS (``git clone`` of a Hugging
#: Face model or data set where git-lfs is not installed) holds one, of about 130 bytes, in place
#: of each large file (weights, images, videos)
LFS_POINTER = b"version https://git-lfs.github.com/spec/"
#: what to do about one
LFS_ADVICE = "the repository was cloned without Git LFS: run 'git lfs install' and 'git lfs pull' in it"


def lfs_pointer(path: Path, size: int) -> bool:
    """Whether the regular file ``path`` of ``size`` bytes is a Git LFS pointer (at most 1 KB,
    opening with :data:`LFS_POINTER`, as the Git LFS specification has it)."""
    return size <= 1024 and _head(path).startswith(LFS_POINTER)


def lfs_pointer_note(paths) -> str | None:
    """The Git LFS pointers among ``paths`` (regular files; absent or unreadable ones are not),
    said as one clause with :data:`LFS_ADVICE` (what ``info``, ``models`` and the load say of a
    model piece cloned without Git LFS); None where there are none."""
    found = []
    for path in paths:
        try:
            if os.path.isfile(path) and lfs_pointer(Path(path), os.path.getsize(path)):
                found.append(f"'{path}'")
        except OSError:
            continue
    if not found:
        return None
    what = "is a Git LFS pointer, not the file" if len(found) == 1 else "are Git LFS pointers, not the files"
    return f"{' and '.join(found)} {what} ({LFS_ADVICE})"


def markup(path: Path) -> str | None:
    """What a file that is markup, not media or weights, is: ``"an HTML page"`` (what ``wget`` or
    ``curl`` of a web page's address saves: a Hugging Face or GitHub "blob" link, a sign-in page),
    ``"an SVG drawing"`` (vector graphics, which no reader here rasterizes), ``"a PDF document"`` or
    ``"a PostScript document"`` (EPS too: a page, not a picture; FFmpeg's raw MJPEG reader found the
    JPEG inside a PDF of a scan or photo and read it as a video of one frame), else None."""
    raw = _head(path)
    if raw.startswith(b"%PDF-"):
        return "a PDF document"
    if raw.startswith((b"%!PS", b"\xc5\xd0\xd3\xc6")):  # PostScript and EPS, and EPS with a DOS preview header
        return "a PostScript document"
    head = raw.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if head.startswith((b"<!doctype html", b"<html")):
        return "an HTML page"
    if head.startswith(b"<svg") or (head.startswith((b"<?xml", b"<!doctype svg")) and b"<svg" in head):
        return "an SVG drawing"
    return None


#: what to do about :func:`markup`
MARKUP_ADVICE = {"an HTML page": "a web page was saved, not the file: download the file itself, from a Hugging "
                                 "Face 'resolve' or a GitHub 'raw' link",
                 "an SVG drawing": "this tool reads no vector graphics: export it as PNG first",
                 "a PDF document": "this tool reads no documents: export the page or picture as PNG or JPEG "
                                   "first, with pdftoppm -png or pdfimages -all",
                 "a PostScript document": "this tool reads no documents: export the page or picture as PNG or "
                                          "JPEG first, with gs -sDEVICE=png16m"}


def _head(path: Path, size: int = 512) -> bytes:
    """The first ``size`` bytes of a regular file (nothing where it cannot be read: said by the reader)."""
    try:
        with open(path, "rb") as fh:
            return fh.read(size)
    except OSError:
        return b""


def check_input_file(path: PathLike, what: str) -> Path:
    """Refuse a missing path, a folder, a special file, an empty file, a Git LFS pointer or a web
    page (:func:`markup`; they were "not an image", "not a video this tool can read" or "not a
    safetensors file")."""
    try:
        p = Path(os.fspath(path))
    except TypeError as e:
        raise UsageError(f"not a file path: {short(repr(path), 60)} (a {type(path).__name__})") from e
    prefix = f"cannot read {what} {quote_path(p)}"
    try:
        if not p.exists():
            raise missing_input(path, what)
        if p.is_dir():
            raise InputError(f"{prefix}: is a directory, not a file")
        if not p.is_file():
            raise InputError(f"{prefix}: not a regular file")
        size = p.stat().st_size
        if size == 0:
            raise InputError(f"{prefix}: empty file")
        if lfs_pointer(p, size):
            raise InputError(f"{prefix}: a Git LFS pointer, not the file ({LFS_ADVICE})")
        found = markup(p)
        if found is not None:
            raise InputError(f"{prefix}: it is {found} ({MARKUP_ADVICE[found]})")
    except OSError as e:  # permission denied on a parent folder, name too long, ...
        raise InputError(f"{prefix}: {error_detail(e)}") from e
    if not os.access(p, os.R_OK):
        raise InputError(f"{prefix}: permission denied")
    return p


def read_limited(path: PathLike, limit: int, what: str, error: type[Showo2Error] = InputError) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes, in one bounded read: the one reader for
    the small files a command takes whole (configs, prompts, captions). The file is opened without
    blocking and judged by its descriptor, so a FIFO (which would wait for a writer for ever), a
    device (``/dev/zero`` never ends) or a folder is refused before a byte is read, as is a file
    whose size is over ``limit``; one that grows past ``limit`` while being read is refused after
    ``limit + 1`` bytes. A file whose size is 0 but which reads as bytes is one the system makes as
    it is read (``/proc/self/environ``: the environment, tokens included), no file a user saved: it is
    refused as the media readers refuse it (a data set's caption link to it was trained on). Every
    problem is one ``error`` line naming ``what`` and the path."""
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
    if st.st_size == 0 and data:
        raise error(f"{prefix}: not a regular file (the system makes its content as it is read, as /proc's files)")
    return data


def text_encoding(head: bytes) -> str:
    """The encoding of a text file a user saved, from its first bytes ``head``: ``"utf-16"`` when it
    opens with UTF-16's byte-order mark (what Windows editors save as "Unicode", and what Windows
    PowerShell's ``>`` and ``Out-File`` write); ``"utf-16-le"`` / ``"utf-16-be"`` when one of its
    first two bytes is NUL and the other is not (UTF-16 saved without the mark: .NET's
    ``Encoding.Unicode`` streams, Python's ``"utf-16-le"``; Python's :func:`json.loads` reads JSON
    bytes so, RFC 4627's rule, where UTF-8 text holds no NUL); else ``"utf-8"``, whose byte-order
    mark (what Notepad and PowerShell's ``-Encoding UTF8`` write) is no text: :func:`decode_text`
    drops it. The one choice for the text files a command reads (prompts, training configs,
    captions, records); every UTF-16 one starts with ``"utf-16"``."""
    if head[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return "utf-16"
    if len(head) >= 2 and (head[0] == 0) != (head[1] == 0):
        return "utf-16-be" if head[0] == 0 else "utf-16-le"
    return "utf-8"


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
