"""The download machinery of :mod:`showo2_cli.hub`: every Hub call with a bounded wait, sizes
checked before anything is fetched, checksums checked after, and errors as one line.

* Each call runs in a worker thread; the caller waits in short joins, so Ctrl-C reaches it at
  once, and a download that makes no progress (less than :data:`STALL_BYTES` in
  ``SHOWO2_HUB_STALL_SECONDS``, default 120) fails naming the Hub endpoint. HTTP reads also time
  out after huggingface_hub's ``HF_HUB_ETAG_TIMEOUT`` / ``HF_HUB_DOWNLOAD_TIMEOUT``.
* On an interruption or a stall, the ``.incomplete`` files this download started are removed
  (only this process's: another process downloading into the same cache keeps its own; a worker
  left behind is marked in :data:`ABANDONED`, so the command line exits without waiting for it).
  A download first removes the ``.incomplete`` files nobody is writing (whose blob lock is free):
  what a killed process left behind.
* A download that receives more bytes than the listing announces for the files it fetches (a
  body that never ends, a file far bigger than listed) is stopped at that count and its
  ``.incomplete`` files removed, so a hostile or broken server cannot fill the disk.
* The repo listing is read up to :data:`MAX_LISTING_BYTES`: a listing that never ends fails
  instead of filling the memory.
* Each newly downloaded file is checked against the size in the Hub's listing, and each LFS
  file against its sha256.
* The cache folder and the token are a call's own where it gave them (:mod:`showo2_cli.hub_auth`):
  every lookup and request here reads them through :func:`~showo2_cli.hub_auth.access`, and no
  message holds the token.
* A failure becomes one line naming the fix (:func:`~showo2_cli.hub_errors.as_model_error`, in
  :mod:`showo2_cli.hub_errors`, re-exported here with ``endpoint`` and ``hub_httpx``).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tqdm.std import tqdm as _std_tqdm

from .environment import env_seconds
from .errors import ModelError, gb_text
from .hub_auth import access, check_token, hidden, hub_cache, hub_online
from .hub_auth import offline as offline  # (re-exported: hub and hub_vae import it from here)
from .hub_errors import as_model_error as as_model_error  # (re-exported, as endpoint and hub_httpx)
from .hub_errors import endpoint as endpoint
from .hub_errors import error_chain
from .hub_errors import hub_httpx as hub_httpx

Progress = Callable[[str, int, int], None]

STALL_ENV = "SHOWO2_HUB_STALL_SECONDS"
STALL_BYTES = 1024  # a download that receives less than this in the stall window has stalled
#: The most a repo listing (``model_info`` with file metadata) may take: a repo of 100,000 files
#: lists in about 30 MB, and the listing is held in memory and parsed whole.
MAX_LISTING_BYTES = 64 * 2**20
#: Set when a download was given up (stalled or interrupted) while huggingface_hub's worker
#: threads may still run: the command line then exits without waiting for them.
ABANDONED = threading.Event()


def repo_cache_folder(repo_id: str) -> Path:
    """The folder of a model repo in the Hugging Face cache (``models--OWNER--NAME``)."""
    return hub_cache() / f"models--{repo_id.replace('/', '--')}"


def cache_ref_readable(repo_id: str, revision: str | None = None) -> bool:
    """Whether the cache's ``refs/<revision>`` pointer (which huggingface_hub reads to find a
    snapshot) is absent or a regular file: a FIFO there would block every lookup forever."""
    try:
        ref = repo_cache_folder(repo_id) / "refs" / (revision or "main")
        return not ref.exists() or ref.is_file()
    except (OSError, ValueError):
        return False


def cached_commit(repo_id: str, revision: str | None = None) -> str | None:
    """The commit hash ``revision`` (default ``main``) names in the cache: ``refs/<revision>``'s text
    (a cache a user was given may hold anything there: only a commit hash counts), or the revision
    itself when it is one; None otherwise (no network)."""
    ref = repo_cache_folder(repo_id) / "refs" / (revision or "main")
    try:
        commit = ref.read_text(encoding="ascii").strip() if cache_ref_readable(repo_id, revision) and \
            ref.is_file() else revision
    except (OSError, ValueError):
        return None
    return commit if commit and re.fullmatch(r"[0-9a-f]{40}", commit) else None


def expand_commit(repo_id: str, revision: str | None) -> str | None:
    """``revision`` as the cache knows it: a short commit hash (4 to 39 hex digits, as ``git`` takes
    one) that is no ref of the cache and the prefix of exactly one of its snapshots -> that
    snapshot's full commit; two or more -> a :class:`ModelError` naming them; anything else
    unchanged (no network: the Hub's own answer decides online)."""
    if revision is None or not re.fullmatch(r"[0-9a-f]{4,39}", revision):
        return revision
    folder = repo_cache_folder(repo_id)
    try:
        if (folder / "refs" / revision).exists():  # a branch or tag named like hex digits: the ref wins, as in git
            return revision
        found = sorted(p.name for p in (folder / "snapshots").iterdir()
                       if p.name.startswith(revision) and re.fullmatch(r"[0-9a-f]{40}", p.name))
    except (OSError, ValueError):
        return revision
    if len(found) > 1:
        raise ModelError(f"revision '{revision}' of '{repo_id}' is ambiguous: the cache holds the commits "
                         f"{', '.join(found[:5])}{' ...' if len(found) > 5 else ''}; give more of its digits")
    return found[0] if found else revision


def stall_seconds() -> float:
    """``$SHOWO2_HUB_STALL_SECONDS`` (default 120); anything but a number of seconds > 0 is a
    UsageError naming it (0, negative and NaN were taken as the default, silently)."""
    return env_seconds(STALL_ENV, 120.0)


@dataclass
class RemoteFile:
    """A file of a repo listing: its size and, for an LFS file, its sha256 (None when unknown)."""

    size: int | None = None
    sha256: str | None = None


class Overrun(ModelError):
    """A download received more bytes than the listing announced (raised inside the download)."""


class _Bytes:
    """Bytes done/total of a snapshot download, from huggingface_hub's byte bars, as one phase;
    also when the download last made progress (:meth:`stalled`). ``limit``: the bytes the
    listing announces; a byte bar going past it raises :class:`Overrun` in the download."""

    def __init__(self, phase: str, progress: Progress | None, limit: int | None = None, overrun: str = ""):
        self.phase, self.progress = phase, progress
        self.limit, self.overrun = limit, overrun
        self.lock = threading.Lock()
        self.bars: dict[int, tuple[int, int]] = {}  # bar -> (done, total)
        self.received = self.mark_bytes = 0
        self.mark_time = time.monotonic()

    def stalled(self, window: float) -> bool:
        with self.lock:
            return time.monotonic() - self.mark_time > window

    def bar_class(self):
        meter = self

        class Bar(_std_tqdm):
            """A tqdm that never draws: huggingface_hub's byte bars become ``progress`` calls."""

            def __init__(self, *args, **kwargs):
                kwargs["disable"] = True
                self.counts_bytes = kwargs.get("unit") == "B"
                self.bytes_done = int(kwargs.get("initial") or 0)
                super().__init__(*args, **kwargs)

            def update(self, n=1):
                if self.counts_bytes and n:
                    self.bytes_done += int(n)
                    meter.report(id(self), self.bytes_done, int(self.total or 0), int(n))
                    if meter.limit is not None and self.bytes_done > meter.limit:
                        raise Overrun(meter.overrun)  # ends huggingface_hub's read loop

            def refresh(self, *args, **kwargs):
                if self.counts_bytes:
                    meter.report(id(self), self.bytes_done, int(self.total or 0))

        return Bar

    def report(self, bar: int, done: int, total: int, new: int = 0) -> None:
        with self.lock:
            self.bars[bar] = (done, total)
            self.received += new
            if self.received - self.mark_bytes >= STALL_BYTES or (total and done >= total):
                self.mark_bytes, self.mark_time = self.received, time.monotonic()
            # huggingface_hub keeps two byte bars (received, written) over the same bytes: follow the one ahead
            done = max(d for d, _ in self.bars.values())
            total = max(t for _, t in self.bars.values())
        if self.progress is not None and total:
            self.progress(self.phase, min(done, total), total)


def _blobs(repo_id: str) -> Path:
    return repo_cache_folder(repo_id) / "blobs"


def _names(folder: Path) -> set[str]:
    try:
        return set(os.listdir(folder))
    except OSError:
        return set()


def _open_here(folder: Path) -> set[str] | None:
    """Names of the files in ``folder`` that this process holds open (None where the system does
    not say: no ``/proc/self/fd``)."""
    fds = Path("/proc/self/fd")
    if not fds.is_dir():
        return None
    out, where = set(), os.path.realpath(folder)
    try:
        for fd in os.listdir(fds):
            try:
                target = os.readlink(fds / fd)
            except OSError:
                continue
            if os.path.dirname(target) == where:
                out.add(os.path.basename(target))
    except OSError:
        return None
    return out


def remove_stale_partials(repo_id: str) -> list[str]:
    """Remove the ``.incomplete`` files of ``repo_id`` that no download is writing: huggingface_hub
    writes ``<blob>.<random>.incomplete`` under the blob's lock and deletes it on an error, so one
    whose lock is free was left by a killed process and is never reused. Returns the names removed."""
    from filelock import FileLock, Timeout

    blobs = _blobs(repo_id)
    locks = hub_cache() / ".locks" / blobs.parent.name
    removed = []
    for name in sorted(_names(blobs)):
        if not name.endswith(".incomplete") or not (locks / f"{name.split('.')[0]}.lock").is_file():
            continue
        lock = FileLock(locks / f"{name.split('.')[0]}.lock", timeout=0)
        try:
            with lock:
                (blobs / name).unlink()
                removed.append(name)
        except (Timeout, OSError, NotImplementedError):  # being written now, not ours, or no flock here
            continue
    return removed


def _bounded(call: Callable, meter: _Bytes, repo_id: str, what: str):
    """``call()`` in a worker thread; the caller waits in short joins (Ctrl-C reaches it at once)
    and gives up when ``meter`` sees no progress for :func:`stall_seconds`. On either, the
    ``.incomplete`` files started meanwhile are removed before the exception goes on."""
    window = stall_seconds()
    blobs = _blobs(repo_id)
    before = _names(blobs)
    box: dict = {}

    def work():
        try:
            box["value"] = call()
        except BaseException as e:  # handed to the caller
            box["error"] = e

    def remove_started():
        ours = _open_here(blobs)  # another process's download into this cache is not ours to end
        for name in _names(blobs) - before:
            if name.endswith(".incomplete") and (ours is None or name in ours):
                try:
                    (blobs / name).unlink()
                except OSError:
                    pass

    worker = threading.Thread(target=work, name=f"showo2-hub-{repo_id}", daemon=True)
    try:
        with hub_online():  # another thread's import block must not make this download offline
            worker.start()
            while worker.is_alive():
                worker.join(0.1)
                if worker.is_alive() and meter.stalled(window):
                    raise ModelError(f"downloading {what} '{repo_id}' stalled: the Hub at {endpoint()} sent nothing "
                                     f"for {window:g} s ({STALL_ENV} sets the limit); pull again")
    except BaseException:
        ABANDONED.set()
        remove_started()
        raise
    if "error" in box:
        if any(isinstance(x, Overrun) for x in error_chain(box["error"])):
            remove_started()  # the bytes past the listing are no part of any file
        raise box["error"]
    return box["value"]


class _Capped:
    """A response body that raises :class:`Overrun` past ``limit`` bytes (wraps httpx's stream)."""

    def __init__(self, stream, limit: int, message: str):
        self.stream, self.limit, self.message = stream, limit, message

    def __iter__(self):
        seen = 0
        for chunk in self.stream:
            seen += len(chunk)
            if seen > self.limit:
                raise Overrun(self.message)
            yield chunk

    def close(self) -> None:
        self.stream.close()


_LISTING = threading.local()  # .message set while this thread reads a listing


def _cap_listing(response) -> None:
    """huggingface_hub session hook: the body of a listing this thread asked for is capped."""
    message = getattr(_LISTING, "message", None)
    if message is not None and response.request.method == "GET" and "/api/" in response.request.url.path:
        class Stream(_Capped, hub_httpx().SyncByteStream):
            pass

        response.stream = Stream(response.stream, MAX_LISTING_BYTES, message)


def _timeout() -> float:
    from huggingface_hub import constants

    return float(max(constants.HF_HUB_ETAG_TIMEOUT, constants.HF_HUB_DOWNLOAD_TIMEOUT))


def remote_listing(repo_id: str, what: str, revision: str | None = None) -> dict[str, RemoteFile]:
    """The repo's files with their sizes and LFS checksums (one API call, bounded)."""
    from huggingface_hub import HfApi, get_session

    check_token()
    hooks = get_session().event_hooks["response"]
    if _cap_listing not in hooks:
        hooks.append(_cap_listing)
    token = access().token

    def call():
        _LISTING.message = (f"the listing of {what} '{repo_id}' from the Hub at {endpoint()} is longer than "
                            f"{MAX_LISTING_BYTES // 2**20} MiB; not read further")
        try:
            return HfApi().model_info(repo_id, revision=revision, files_metadata=True, timeout=_timeout(), token=token)
        finally:
            _LISTING.message = None

    try:
        info = _bounded(call, _Bytes("listing", None), repo_id, what)
    except Exception as e:
        raise as_model_error(repo_id, what, e, revision) from hidden(e)
    return {s.rfilename: RemoteFile(s.size, s.lfs.sha256 if s.lfs else None) for s in info.siblings or []}


def _is_cached(repo_id: str, filename: str, revision: str | None) -> bool:
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(repo_id, filename, revision=revision, cache_dir=access().cache_dir)
    except Exception:
        return False
    return isinstance(found, str) and os.path.exists(found)


def check_sizes(repo_id: str, what: str, files: list[str], remote: dict[str, RemoteFile],
                revision: str | None = None, force: bool = False) -> int | None:
    """Before downloading: a config or tokenizer file larger than its loader reads is refused,
    and so is a download larger than the cache folder's free space. Returns the bytes the listing
    announces for the files not cached yet (all of them with ``force``; None when it leaves a size out)."""
    from .hub_files import TOKENIZER_FILES
    from .tokenizer import tokenizer_file_limit
    from .weights import MAX_CONFIG_BYTES

    total, known = 0, True
    for name in files:
        size = remote[name].size if name in remote else None
        if size is None:
            known = known and not force and _is_cached(repo_id, name, revision)
            continue
        base = name.rsplit("/", 1)[-1]
        cap = (tokenizer_file_limit(base) if base in TOKENIZER_FILES  # the caps the loaders hold them to
               else MAX_CONFIG_BYTES if base.endswith(".json") else None)
        if cap is not None and size > cap:
            raise ModelError(f"{what} '{repo_id}' on the Hub has a '{name}' of {size} bytes, more than the "
                             f"{cap // 2**20} MiB a {base} may have; not downloaded")
        if force or not _is_cached(repo_id, name, revision):
            total += size
    cache = hub_cache()
    folder = cache
    while not folder.exists() and folder.parent != folder:
        folder = folder.parent
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return total if known else None
    if total > free:
        raise ModelError(f"{what} '{repo_id}' needs {gb_text(total / 1e9)} but the Hugging Face cache at "
                         f"{cache} has {gb_text(free / 1e9)} free; free some space "
                         "(or use another cache: HF_HUB_CACHE, cache_dir=) and pull again")
    return total if known else None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(2**22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _verify(repo_id: str, what: str, snap: Path, files: list[str], remote: dict[str, RemoteFile],
            before: set[str]) -> None:
    """Each newly downloaded file against the listing's size, and an LFS file against its sha256;
    a mismatch is removed (blob and link)."""
    blobs = _blobs(repo_id)
    for name in files:
        listed = remote.get(name)
        link = snap / name
        if listed is None or (listed.size is None and not listed.sha256) or not link.exists():
            continue
        blob = link.resolve()
        if blob.parent != blobs.resolve() or blob.name in before:
            continue
        if listed.size is not None and blob.stat().st_size != listed.size:
            problem = f"has {blob.stat().st_size} bytes where the Hub's listing says {listed.size}"
        elif listed.sha256 and _sha256(blob) != listed.sha256.lower():
            problem = "does not match its checksum (sha256 of the Hub's listing)"
        else:
            continue
        for p in (blob, link):
            try:
                p.unlink()
            except OSError:
                pass
        raise ModelError(f"{what} '{repo_id}': '{name}' from the Hub at {endpoint()} {problem}; removed, pull again")


def download_files(repo_id: str, files: list[str] | None, progress: Progress | None, what: str,
             revision: str | None = None, remote: dict[str, RemoteFile] | None = None,
             force_download: bool = False) -> Path:
    """``snapshot_download`` of the selected files, bounded (:func:`_bounded`), sizes checked first
    and LFS checksums after (with ``remote``, the listing); errors as one-line :class:`ModelError`.
    ``force_download``: fetched again even where cached (huggingface_hub's ``force_download``)."""
    from huggingface_hub import snapshot_download

    if not cache_ref_readable(repo_id, revision):
        raise ModelError(f"the Hugging Face cache entry of '{repo_id}' is damaged: its refs/{revision or 'main'} is "
                         "not a regular file (delete that file and pull again)")
    check_token()
    limit = None
    if remote is not None and files is not None:
        limit = check_sizes(repo_id, what, files, remote, revision, force=force_download)
    overrun = (f"downloading {what} '{repo_id}' stopped: the Hub at {endpoint()} sent more than the {limit} bytes "
               "its listing announces; nothing of it is kept")
    meter = _Bytes(f"downloading {repo_id}", progress, limit, overrun)
    remove_stale_partials(repo_id)
    if force_download and files is not None:
        _drop_copies(repo_id, revision, files)
    before = set() if force_download else _names(_blobs(repo_id))  # forced: every file is new, checked
    where = access()

    def call():
        return snapshot_download(repo_id, allow_patterns=files, tqdm_class=meter.bar_class(), revision=revision,
                                 etag_timeout=_timeout(), cache_dir=where.cache_dir, token=where.token,
                                 force_download=force_download)

    try:
        snap = Path(_bounded(call, meter, repo_id, what))
    except Exception as e:
        raise as_model_error(repo_id, what, e, revision) from hidden(e)
    if remote is not None and files is not None:
        _verify(repo_id, what, snap, files, remote, before)
    return snap


def _drop_copies(repo_id: str, revision: str | None, files: list[str]) -> None:
    """Before a forced download: remove the snapshot's entries of ``files`` that are not links into
    ``blobs/`` (a file edited in place, e.g. by ``sed -i``, or a copy where links are not made; a
    link that leads out of the repo's blobs, to ``/etc/passwd`` or nowhere; an empty folder where
    the file belongs): huggingface_hub fetches the blob again but keeps such an entry, so the
    damage would stay. A link is removed, never what it points to; a folder with files in it is a
    ModelError naming it (its files are not this tool's to delete). Only entries inside the snapshot
    are touched: the commit (``refs/<revision>``'s text, a cache a user was given) is a commit
    hash, and the snapshot's folder and each entry's folder are where the cache holds them, not
    links out of it (a ``refs/main`` of ``../../../x`` or ``/home/me`` had the files of that
    name there deleted)."""
    folder = repo_cache_folder(repo_id)
    kept = None
    try:
        commit = cached_commit(repo_id, revision)
        if commit is None:
            return  # no commit of this cache: nothing of it to drop (the download says what is wrong)
        snapshot = folder / "snapshots" / commit
        root = snapshot.resolve()
        if root.parent != (folder / "snapshots").resolve():
            return  # the snapshot is a link out of the cache: not its files to delete
        blobs = _blobs(repo_id).resolve()
        for name in files:
            entry = snapshot / name
            if not entry.parent.resolve().is_relative_to(root):  # a subfolder linked out of the snapshot
                continue
            if entry.is_symlink():
                if entry.resolve().parent != blobs:
                    entry.unlink()
            elif entry.is_dir():
                if any(entry.iterdir()):
                    kept = (name, entry)
                    break
                entry.rmdir()
            elif entry.is_file():
                entry.unlink()
    except (OSError, ValueError):  # nothing to drop, or no such commit: the download says what is wrong
        pass
    if kept is not None:
        raise ModelError(f"the Hugging Face cache entry of '{repo_id}' is damaged: {kept[0]} is a folder with files "
                         f"in it ({kept[1]}); delete it and pull again")
