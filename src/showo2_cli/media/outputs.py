"""Output paths: early checks, atomic writes (temporary file + rename), free names, slugs.

What every write is guarded by (signals held back, write errors said as one line, fsync, modes,
:func:`append_text`) is in :mod:`~showo2_cli.media.write_safety`, re-exported here."""

from __future__ import annotations

import errno
import os
import re
import secrets
import shutil
import stat
import tempfile
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

from showo2_cli.errors import OutputError, OutputExists, UsageError, short, unexpanded_home

from .files import PathLike, quote_path
from .probe import error_detail
from .write_safety import append_text as append_text  # (re-exported: media's users import it from here)
from .write_safety import fsync_path, normal_mode, signals_deferred, write_errors
from .write_safety import is_write_error as is_write_error
from .write_safety import write_failed as write_failed


def check_output_name(path: PathLike) -> None:
    """An output option that cannot name a file (empty, ``-``, ending in ``/``, an existing folder):
    refused before its extension is judged (whose message would be about the wrong thing)."""
    raw = str(os.fspath(path))
    if not raw.strip():
        raise UsageError("the output path is empty: give a file name")
    if raw == "-":  # standard output, as '-' is standard input for --prompts-file: never a file named '-'
        raise UsageError("cannot write to standard output ('-'): give a file name (./- for a file named '-')")
    if "\x00" in raw:  # (os.open's ValueError "embedded null byte" when the file was made)
        shown = quote_path(raw.replace("\x00", "\\0"))
        raise OutputError(f"cannot write {shown}: a path cannot hold a NUL character")
    try:
        folder = Path(raw).is_dir()
    except (OSError, ValueError):  # a name too long, a NUL: check_output_path says what is wrong
        folder = False
    if folder:
        raise OutputError(f"cannot write {quote_path(raw)}: it is a directory; give a file name")
    if raw.endswith(("/", os.sep)):
        raise OutputError(f"cannot write {quote_path(raw)}: it names a folder (it ends in '/'); give a file name")


def check_replaceable(path: PathLike) -> None:
    """An existing ``path`` that this process may not replace, refused before any work: in a folder
    with the sticky bit (``/tmp``, a shared folder) only the owner of a file or of the folder may
    rename over it or move it, so the replacement, made after the whole job, would fail with
    "Operation not permitted". (Root may; so may a system without user ids.)"""
    p = Path(os.fspath(path))
    geteuid = getattr(os, "geteuid", None)
    if geteuid is None or geteuid() == 0:
        return
    try:
        folder, entry = os.stat(p.parent), os.lstat(p)
    except OSError:  # absent, or unreadable: the other checks say what is wrong
        return
    if folder.st_mode & stat.S_ISVTX and geteuid() not in (entry.st_uid, folder.st_uid):
        raise OutputError(f"cannot replace {quote_path(p)}: it belongs to another user and folder "
                          f"{quote_path(p.parent)} lets only their owners replace its entries (the sticky bit)")


def extension_refused(path: PathLike, use: str) -> UsageError:
    """The one refusal of an output name whose extension a writer does not take (``use``: what to
    do instead, "use .png, .jpg for t2i"). A name with no extension says so rather than being
    quoted as one: ``out`` and ``out.`` have none, nor has ``.png``, a hidden file's whole name."""
    p = Path(os.fspath(path))
    if p.suffix:
        why = f"unsupported output extension '{p.suffix.lower()[:40]}'"
    elif p.name.startswith(".") and "." not in p.name[1:]:
        why = "a leading '.' makes the name a hidden file's, with no extension"
    else:
        why = "the name has no extension"
    return UsageError(f"cannot write {quote_path(short(os.fspath(path), 200))}: {why}; {use}")


def check_output_path(path: PathLike, overwrite: bool = False, probe: bool = False) -> Path:
    """Check that ``path`` can be written; return it as a Path.

    Call this before expensive work so a bad output fails early. :func:`atomic_output` runs the
    same checks. Without ``probe`` nothing is written. With ``probe=True`` the hidden temporary
    file :func:`atomic_output` would use is created and removed at once, which catches what
    permission bits cannot tell (a read-only or pseudo file system, a full quota, running as
    root); the target itself is never touched.

    Raises:
        OutputError: the folder does not exist or is not a folder, the folder is read-only,
            the target is a directory, or the target exists and ``overwrite`` is False.
    """
    raw = os.fspath(path)
    p = Path(raw)
    if not p.name or p.name in (".", ".."):
        raise OutputError(f"cannot write {quote_path(raw)}: not a file name")
    check_output_name(raw)  # a folder, or a name ending in '/'
    parent = p.parent
    try:
        if p.is_dir():
            raise OutputError(f"cannot write {quote_path(p)}: it is a directory")
        if p.exists() and not p.is_file():  # --overwrite replaces files, never a device or a FIFO
            raise OutputError(f"cannot write {quote_path(p)}: it exists and is not a regular file (a device, FIFO "
                              "or socket)")
        if not parent.exists():
            raise OutputError(f"cannot write {quote_path(p)}: folder {quote_path(parent)} does not exist"
                              f"{unexpanded_home(p)}")
        if not parent.is_dir():
            raise OutputError(f"cannot write {quote_path(p)}: {quote_path(parent)} is not a folder")
        if (p.exists() or p.is_symlink()) and not overwrite:
            raise OutputExists(f"{quote_path(p)} exists; pass --overwrite to replace it")
        check_replaceable(p)
        try:
            name_max = int(os.pathconf(parent, "PC_NAME_MAX"))
        except (OSError, ValueError, AttributeError):
            name_max = 255
        if len(os.fsencode(p.name)) > name_max:
            raise OutputError(f"cannot write {quote_path(p)}: the file name is longer than {name_max} bytes")
    except OutputError:  # an OSError too: said as it is
        raise
    except OSError as e:
        if e.errno == errno.ENAMETOOLONG:
            raise OutputError(f"cannot write {quote_path(p)}: the file name is too long") from e
        raise OutputError(f"cannot write {quote_path(p)}: {e.strerror or error_detail(e)}") from e
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(
            f"cannot write {quote_path(p)}: folder {quote_path(parent)} is read-only (permission denied)"
        )
    if probe:
        with signals_deferred():  # a Ctrl-C between the two never leaves the file behind
            _unlink_quiet(_make_temp(p))
    return p


class OutputFolders:
    """:func:`check_output_path` for many outputs at a time (a prompts file of a million lines):
    each folder is checked (and probed) once, with the first name in it, exactly as
    :func:`check_output_path` does, then listed once; every later name in it is judged against
    that listing: absent (and not the same name in another case or Unicode form, which a
    case-insensitive file system would take for it), or a plain file with ``overwrite``, within
    the folder's name and path limits. Anything else (a name present, a link, a folder that cannot
    be listed) goes through :func:`check_output_path` itself, so every check and message stays
    that one's. The listing is a snapshot: :func:`atomic_output` checks again when writing."""

    def __init__(self, overwrite: bool = False, probe: bool = True):
        self.overwrite = overwrite
        self.probe = probe
        self._checked: set[str] = set()
        self._listings: dict[str, _Listing | None] = {}

    def check(self, path: PathLike) -> None:
        """What :func:`check_output_path` (``probe`` for the first name of each folder) says of ``path``."""
        raw = os.fspath(path)
        folder, name = os.path.split(raw)  # text, not Path: a million Paths hashed cost seconds
        if folder not in self._checked:
            check_output_path(raw, self.overwrite, probe=self.probe)
            self._checked.add(folder)
            return
        listing = self._listing(folder)
        if listing is None or not listing.clear(str(raw), name, self.overwrite):
            check_output_path(raw, self.overwrite)

    def present(self, path: PathLike) -> bool:
        """Whether something (a file, a folder, a link, even a broken one) is at ``path``, as
        ``path.exists() or path.is_symlink()`` says, from the listing of its folder."""
        raw = os.fspath(path)
        folder, name = os.path.split(raw)
        listing = self._listing(folder)
        if listing is None or name not in listing.kinds and _folded(name) in listing.folded:
            p = Path(raw)  # no listing, or another case of a present name: the file system is asked
            return p.exists() or p.is_symlink()
        return name in listing.kinds

    def _listing(self, folder: str) -> _Listing | None:
        if folder not in self._listings:
            self._listings[folder] = _Listing.read(folder or ".")
        return self._listings[folder]


def _folded(name: str) -> str:
    """A name as a case- and normalisation-insensitive file system (macOS, Windows) compares it."""
    return unicodedata.normalize("NFC", name).casefold()


class _Listing:
    """One folder's entries: each name and whether it is a plain file (not a link), with the
    folder's limits on a name's and a path's length in bytes."""

    def __init__(self, kinds: dict[str, bool], name_max: int, path_max: int, sticky: bool = False):
        self.kinds = kinds
        self.sticky = sticky  # a present name may be another user's that we may not replace
        self.folded = {_folded(name) for name in kinds}
        self.name_max = name_max
        self.path_max = path_max

    @classmethod
    def read(cls, folder: str) -> _Listing | None:
        """The listing of ``folder``, or None where it cannot be read (each name is then asked)."""
        try:
            with os.scandir(folder) as entries:
                kinds = {e.name: e.is_file(follow_symlinks=False) for e in entries}
            name_max = int(os.pathconf(folder, "PC_NAME_MAX"))
            path_max = int(os.pathconf(folder, "PC_PATH_MAX"))
            sticky = bool(os.stat(folder).st_mode & stat.S_ISVTX)
        except (OSError, ValueError, AttributeError):
            return None
        return cls(kinds, name_max, path_max, sticky)

    def clear(self, raw: str, name: str, overwrite: bool) -> bool:
        """Whether the output ``raw`` (named ``name`` in this folder) passes every check of
        :func:`check_output_path` by this listing alone; False: ask that function."""
        if (not name or name in (".", "..") or raw == "-" or not raw.strip() or raw.endswith(("/", os.sep))
                or "\x00" in raw or len(os.fsencode(name)) > self.name_max or len(os.fsencode(raw)) >= self.path_max):
            return False
        plain = self.kinds.get(name)
        if plain is None:  # absent, unless the file system takes another case of a present name for it
            return _folded(name) not in self.folded
        return plain and overwrite and not self.sticky  # (check_replaceable asks whose it is)


def short_name(name: str, limit: int = 100) -> str:
    """At most ``limit`` bytes of ``name`` (file-name limits are in bytes: 100 characters of
    4-byte UTF-8 would not fit), cut on a character boundary."""
    raw = os.fsencode(name)
    if len(raw) <= limit:
        return name
    return os.fsdecode(raw[:limit].decode("utf-8", "ignore").encode("utf-8")) if raw[:limit] else name[:1]


def _make_temp(target: Path) -> Path:
    """Create an empty hidden temporary file next to ``target`` keeping its suffix."""
    stem = short_name(target.name)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    last: OSError | None = None
    for _ in range(100):
        tmp = target.parent / f".{stem}.{secrets.token_hex(4)}.tmp{target.suffix}"
        try:
            fd = os.open(tmp, flags, 0o666)  # 0o666 & ~umask, like a normal new file
        except FileExistsError as e:
            last = e
            continue
        except PermissionError as e:
            raise OutputError(
                f"cannot write {quote_path(target)}: folder {quote_path(target.parent)} is read-only "
                f"({e.strerror or error_detail(e)})"
            ) from e
        except OSError as e:
            if e.errno == errno.EROFS:
                raise OutputError(
                    f"cannot write {quote_path(target)}: folder {quote_path(target.parent)} "
                    "is on a read-only file system"
                ) from e
            raise OutputError(
                f"cannot write {quote_path(target)}: "
                f"cannot create a file in folder {quote_path(target.parent)} "
                f"({e.strerror or error_detail(e)})"
            ) from e
        os.close(fd)
        return tmp
    raise OutputError(
        f"cannot write {quote_path(target)}: no free temporary name ({error_detail(last or OSError())})"
    )


def _unlink_quiet(p: Path) -> None:
    try:
        os.unlink(p)
    except OSError:
        pass


def _commit(tmp: Path, target: Path, overwrite: bool) -> None:
    """Move ``tmp`` to ``target``; without ``overwrite`` never replace a file that appeared meanwhile."""
    try:
        if not overwrite:
            try:
                os.link(tmp, target)  # fails if the target exists: no clobbering, even racing
            except FileExistsError as e:
                raise OutputExists(f"{quote_path(target)} exists; pass --overwrite to replace it") from e
            except OSError:  # no hard links on this filesystem
                if target.exists() or target.is_symlink():
                    raise OutputExists(
                        f"{quote_path(target)} exists; pass --overwrite to replace it"
                    ) from None
                os.replace(tmp, target)
            else:
                _unlink_quiet(tmp)
        else:
            os.replace(tmp, target)
    except OutputError:
        raise
    except IsADirectoryError as e:
        raise OutputError(f"cannot write {quote_path(target)}: it is a directory") from e
    except OSError as e:  # (its text names the hidden temporary file, gone by then)
        raise write_failed(target, e) from e


@contextmanager
def atomic_output(path: PathLike, overwrite: bool = False, durable: bool = False) -> Iterator[Path]:
    """Yield a temporary path to write; on success it is renamed to ``path``.

    The temporary file is created (empty) in the same folder, hidden, named
    ``.{name}.{random}.tmp{suffix}`` so encoders that choose a format from the suffix still
    work. When the ``with`` body finishes it is moved into place (``os.replace``, or a no-clobber
    hard link when ``overwrite`` is False); on any exception, KeyboardInterrupt included, it is
    deleted and the exception propagates. The checks of :func:`check_output_path` run first.

    Raises:
        OutputError: see :func:`check_output_path`; also when the rename fails.
    """
    target = check_output_path(path, overwrite)
    tmp = None
    try:
        with signals_deferred():  # the temporary file exists only once it will be cleaned up
            tmp = _make_temp(target)
        with write_errors(target):
            yield tmp
        normal_mode(tmp)  # writers that replace the file (safetensors does) leave it 0600
        if durable:
            fsync_path(tmp)
        group = _GROUP.get()
        if group is not None:  # moved into place with the rest of its group (output_group)
            group.append((tmp, target, overwrite, durable))
            return
        with signals_deferred():
            _commit(tmp, target, overwrite)
        if durable:
            fsync_path(target.parent)
    except BaseException:
        if tmp is not None:
            _unlink_quiet(tmp)
        raise


_GROUP: ContextVar[list | None] = ContextVar("showo2_output_group", default=None)


@contextmanager
def output_group() -> Iterator[None]:
    """Several outputs as one unit (an image, its latents, its sidecar): every :func:`atomic_output`
    inside writes its temporary file as usual, and when the block ends they are all moved into
    place together, with Ctrl-C and SIGTERM held back for those few renames. A failure or an
    interruption before then removes every temporary file and leaves the old files (with
    ``overwrite``) or no files as they were; a rename that fails part-way removes the new files
    already placed that replaced nothing."""
    pending: list[tuple[Path, Path, bool, bool]] = []
    token = _GROUP.set(pending)
    try:
        yield
    except BaseException:
        for tmp, *_ in pending:
            _unlink_quiet(tmp)
        raise
    finally:
        _GROUP.reset(token)
    placed: list[Path] = []
    with signals_deferred():
        try:
            for tmp, target, overwrite, _durable in pending:
                _commit(tmp, target, overwrite)
                if not overwrite:
                    placed.append(target)
        except BaseException:
            for tmp, *_ in pending:
                _unlink_quiet(tmp)
            for target in placed:
                _unlink_quiet(target)
            raise
    for folder in {target.parent for _, target, _, durable in pending if durable}:
        fsync_path(folder)


@contextmanager
def atomic_folder(path: PathLike, overwrite: bool = False, durable: bool = False) -> Iterator[Path]:
    """:func:`atomic_output` for a folder (a model folder, a checkpoint): yield a hidden empty
    folder beside ``path`` to fill; on success it takes ``path``'s place whole (an existing folder
    is moved aside first, then removed), on any exception it is removed. Files and folders get
    the modes of normal new ones; ``durable`` fsyncs every file and the parent before returning.

    Raises:
        OutputError: ``path`` exists (without ``overwrite``) or is not a folder, the parent is
        missing or read-only, or the disk fills up while writing.
    """
    target = Path(os.fspath(path))
    if (target.exists() or target.is_symlink()) and not overwrite:
        raise OutputExists(f"{quote_path(target)} already exists; pass --overwrite to replace it")
    if target.exists() and not target.is_dir():
        raise OutputError(f"{quote_path(target)} exists and is not a folder")
    check_replaceable(target)
    parent = target.parent
    if not parent.is_dir():
        where = f"{quote_path(parent)} is not a folder" if parent.exists() else \
            f"folder {quote_path(parent)} does not exist{unexpanded_home(target)}"
        raise OutputError(f"cannot write {quote_path(target)}: {where}")
    if not os.access(parent, os.W_OK):
        raise OutputError(f"cannot write {quote_path(target)}: folder {quote_path(parent)} is read-only")
    tmp = None
    try:
        with signals_deferred():  # the temporary folder exists only once it will be cleaned up
            try:
                tmp = Path(tempfile.mkdtemp(prefix=f".{short_name(target.name)}.", suffix=".tmp", dir=parent))
            except OSError as e:
                raise OutputError(f"cannot write {quote_path(target)}: cannot create a folder in "
                                  f"{quote_path(parent)} ({e.strerror or error_detail(e)})") from e
        with write_errors(target):
            yield tmp
        for f in [tmp, *tmp.rglob("*")]:
            normal_mode(f, folder=f.is_dir())
            if durable:
                fsync_path(f)
        try:
            with signals_deferred():  # the old folder moved aside and the new one in: never half
                if target.exists():
                    old = Path(tempfile.mkdtemp(prefix=f".{short_name(target.name)}.", suffix=".old", dir=parent))
                    os.replace(target, old / target.name)
                    os.replace(tmp, target)
                    shutil.rmtree(old, ignore_errors=True)
                else:
                    os.replace(tmp, target)
        except OSError as e:
            raise write_failed(target, e) from e
        if durable:
            fsync_path(parent)
    except BaseException:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        raise


def check_folder_keeps_inputs(target: PathLike, inputs, rewritable: PathLike | None = None) -> None:
    """Refuse a folder output whose replacement (``overwrite``) would delete one of the command's
    inputs: the folder is an input, or holds one (``convert models/a -o models --overwrite`` would
    remove ``models`` with ``a`` and everything beside it). ``rewritable`` is the one input folder
    the command may replace in place (it reads it whole first): the source of ``convert SRC -o SRC``,
    its own files included; any other input in it is still refused.

    Raises:
        OutputError: ``target`` is or holds one of ``inputs``.
    """
    try:
        full = Path(os.fspath(target)).expanduser().resolve()
        own = Path(os.fspath(rewritable)).expanduser().resolve() if rewritable is not None else None
    except (OSError, RuntimeError, ValueError):  # a symlink loop, a NUL: the folder checks say it
        return
    for given, part_of_source in inputs:
        if given is None:
            continue
        try:
            p = Path(os.fspath(given)).expanduser().resolve()
        except (OSError, RuntimeError, ValueError):
            continue
        if full != p and full not in p.parents:
            continue
        if part_of_source and own is not None and full == own:
            continue
        raise OutputError(f"cannot replace {quote_path(target)}: it {'is' if full == p else 'holds'} the input "
                          f"{quote_path(given)}, which replacing it would delete (choose another folder)")


def unique_path(path: PathLike, companions=None, taken: set | frozenset = frozenset(),
                folders: OutputFolders | None = None) -> Path:
    """``path`` if it is free, else the first free ``stem-1.ext``, ``stem-2.ext``, ... A name is
    free when nothing is there, nor at any of ``companions(name)`` (the files written beside it,
    such as a sidecar), and it is not in ``taken`` (names already given out). ``folders``: ask
    its listings (one per folder) instead of the file system for each name."""
    p = Path(os.fspath(path))
    present = folders.present if folders is not None else (lambda f: f.exists() or f.is_symlink())

    def free(candidate: Path) -> bool:
        files = [candidate, *(companions(candidate) if companions else ())]
        return candidate not in taken and not any(present(f) for f in files)

    candidate, i = p, 0
    while not free(candidate):
        i += 1
        candidate = p.with_name(f"{p.stem}-{i}{p.suffix}")
    return candidate


_WINDOWS_RESERVED = {
    "con",
    "prn",
    "aux",
    "nul",
    *(f"com{i}" for i in range(10)),
    *(f"lpt{i}" for i in range(10)),
}


def slugify(text: str, max_len: int = 40) -> str:
    """A safe file-name stem from a prompt: lowercase ASCII letters, digits and single dashes.

    Accents are folded (``café`` -> ``cafe``), everything else becomes a dash, the result is cut
    to ``max_len`` characters (at a dash when possible) and never starts or ends with a dash;
    an empty result is ``"output"``.
    """
    if max_len < 1:
        raise UsageError(f"max_len must be at least 1, got {max_len}")
    folded = unicodedata.normalize("NFKD", str(text)).encode("ascii", "ignore").decode("ascii")
    slug = re.sub(r"[^a-z0-9]+", "-", folded.lower()).strip("-")
    if len(slug) > max_len:
        cut = slug[: max_len + 1]
        slug = cut.rsplit("-", 1)[0] if "-" in cut[1:] else slug[:max_len]
        slug = slug[:max_len].strip("-")
    if not slug:
        return "output"
    if slug in _WINDOWS_RESERVED:
        slug = f"{slug}-output"[:max_len].strip("-") or "output"
    return slug
