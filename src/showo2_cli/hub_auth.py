"""The cache folder and the token of a Hub call, as huggingface_hub's ``cache_dir`` and ``token``
take them, and messages that never hold the token.

By default both are huggingface_hub's: the cache ``HF_HUB_CACHE`` (``HF_HOME/hub``), the token
``HF_TOKEN`` or the one ``hf auth login`` saved (``HF_TOKEN_PATH``), none with
``HF_HUB_DISABLE_IMPLICIT_TOKEN``. A Python call that gives its own
(``from_pretrained(..., cache_dir=, token=)``, ``api.load``, ``api.pull``) runs inside
:func:`hub_access`, which sets them for that call alone (a context variable: other threads and
later calls keep theirs); :mod:`showo2_cli.hub` and :mod:`showo2_cli.hub_download` read them
through :func:`access` and :func:`hub_cache` for every lookup and request.

Also huggingface_hub's process-wide offline switch as threads share it: held on while libraries
import (:func:`hub_offline`), kept off for a download asked for (:func:`hub_online`), and read as
the caller set it (:func:`offline`).
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path

from .errors import ModelError, short

#: where huggingface_hub reads a token from the environment (HF_TOKEN first)
TOKEN_VARIABLES = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")


@dataclass(frozen=True)
class HubAccess:
    """Where the cache is and which token is sent, as huggingface_hub's ``cache_dir`` and ``token``
    take them: ``cache_dir`` None is ``HF_HUB_CACHE``; ``token`` a string is sent, False sends none
    (even with ``HF_TOKEN`` set), True needs the saved one, None sends the saved one unless
    ``HF_HUB_DISABLE_IMPLICIT_TOKEN`` is set."""

    cache_dir: str | None = None
    token: bool | str | None = None

    def __repr__(self) -> str:  # never the token itself
        token = "'***'" if isinstance(self.token, str) else repr(self.token)
        return f"HubAccess(cache_dir={self.cache_dir!r}, token={token})"


_ACCESS: ContextVar[HubAccess | None] = ContextVar("showo2_hub_access", default=None)
_ENVIRONMENT = HubAccess()  # huggingface_hub's own: HF_HUB_CACHE, the saved token


def access() -> HubAccess:
    """The cache folder and token of the running call (:func:`hub_access`), else the environment's."""
    return _ACCESS.get() or _ENVIRONMENT


def checked_access(cache_dir=None, token=None) -> HubAccess:
    """``cache_dir`` and ``token`` as a Python caller passes them, checked (``~`` expanded)."""
    if cache_dir is not None:
        if not isinstance(cache_dir, (str, os.PathLike)) or not os.fspath(cache_dir).strip():
            raise ValueError(f"cache_dir must name a folder, got {short(repr(cache_dir), 80)}")
        cache_dir = str(Path(os.fspath(cache_dir)).expanduser())
        if os.path.exists(cache_dir) and not os.path.isdir(cache_dir):
            raise ValueError(f"cache_dir '{short(cache_dir, 200)}' is not a folder")
    if token is not None and not isinstance(token, (bool, str)):
        raise TypeError(f"token must be a string, True, False or None, got {type(token).__name__}")
    if isinstance(token, str):
        token = token.strip()  # as read from a file (open(...).read()): huggingface_hub cleans its own alike
        if not token or not (token.isascii() and token.isprintable()) or " " in token:
            # an HTTP header cannot carry it, and the library's error would quote it
            raise ValueError("token= must be a Hugging Face token: not empty, without spaces, control or non-ASCII "
                             "characters")
    return HubAccess(cache_dir, token)


@contextmanager
def hub_access(cache_dir=None, token=None) -> Iterator[HubAccess]:
    """Use ``cache_dir`` and ``token`` (huggingface_hub's meanings, see :class:`HubAccess`) for the
    Hub lookups and downloads inside the block; leaving it restores the caller's."""
    mark = _ACCESS.set(checked_access(cache_dir, token))
    try:
        yield access()
    finally:
        _ACCESS.reset(mark)


def hub_cache() -> Path:
    """The Hugging Face cache folder in use: ``cache_dir=`` of the running call, else ``HF_HUB_CACHE``
    (checked to name a folder, or nothing yet: :func:`check_hub_folders`)."""
    from huggingface_hub import constants

    check_hub_folders()
    return Path(access().cache_dir or constants.HF_HUB_CACHE)


def _not_a_folder(path: Path) -> str | None:
    """What stands where ``path`` or a folder above it should be, when it is no folder (a file, a
    FIFO); None when they are folders or do not exist yet (huggingface_hub makes them)."""
    import stat

    for at in (path, *path.parents):
        try:
            mode = at.stat().st_mode
        except FileNotFoundError:
            continue
        except OSError as e:  # ENOTDIR: a file above it (found as the loop goes up), a loop of links
            if e.errno == errno.ENOTDIR:
                continue
            return f"it cannot be looked at ({e.strerror})"
        if stat.S_ISDIR(mode):
            return None
        kind = ("a regular file" if stat.S_ISREG(mode) else "a FIFO" if stat.S_ISFIFO(mode)
                else "a socket" if stat.S_ISSOCK(mode) else "a device")
        return f"it is {kind}" if at == path else f"'{short(str(at), 200)}' in it is {kind}"
    return None


def check_hub_folders() -> None:
    """``HF_HOME`` and the cache in use (``cache_dir=``, else ``HF_HUB_CACHE``, else ``HF_HOME/hub``)
    name folders, or nothing yet: a file or a FIFO there was read as a token file that "cannot be
    read (Not a directory)", or as a model missing from the cache. Raises a one-line :class:`ModelError`."""
    from huggingface_hub import constants

    given = access().cache_dir
    cache = ("cache_dir", given) if given else (
        "HF_HUB_CACHE" if os.environ.get("HF_HUB_CACHE") else "HF_HUB_CACHE (HF_HOME/hub)", constants.HF_HUB_CACHE)
    home = "HF_HOME" if os.environ.get("HF_HOME") else "HF_HOME (unset: its default)"
    for name, value in ((home, constants.HF_HOME), cache):
        wrong = _not_a_folder(Path(value))
        if wrong:
            raise ModelError(f"{name} names '{short(str(value), 200)}', which is no folder ({wrong}): point it at a "
                             "folder (huggingface_hub makes one that does not exist), or unset it")


# ---- the offline switch -----------------------------------------------------------------------
# huggingface_hub reads its HF_HUB_OFFLINE switch (``constants.HF_HUB_OFFLINE``) at each request,
# for the whole process. Import blocks (:func:`hub_offline`) and downloads asked for
# (:func:`hub_online`) may overlap in threads (two models loaded at once, a pull beside a load), so
# the switch is counted, not saved and put back by each block: a save-and-restore left it on for
# good when two blocks ended out of order, and a download was refused while another thread imported.
_SWITCH = threading.Lock()
_HELD = {"imports": 0, "downloads": 0, "caller": False}  # "caller": the switch as it was before the imports


def _set_switch() -> None:
    from huggingface_hub import constants

    if _HELD["imports"]:
        constants.HF_HUB_OFFLINE = bool(_HELD["caller"]) or not _HELD["downloads"]


@contextmanager
def hub_offline() -> Iterator[None]:
    """huggingface_hub offline (its ``HF_HUB_OFFLINE`` switch, which it reads at each request, and
    the ``kernels`` package at each ``get_kernel``) while a library imports, then as the caller had it.

    Importing a library must not reach the network: bitsandbytes >= 0.50 (imported by diffusers
    and peft wherever it is installed, by ``--quantize nf4``) asks ``kernels`` for a CPU kernel on
    AVX512-BF16 CPUs, and ``kernels`` (installed by transformers 5.25) then asked the Hub for the
    publisher's trust status and the kernel's versions, and would download the kernel's binary and
    load it. Offline, ``kernels`` uses a kernel already in its cache, else bitsandbytes its own CPU
    code. The switch is process-wide: it is on while any thread is in such a block and no download
    asked for (:func:`hub_online`: ``showo2 pull``, a model not in the cache) runs; while one runs,
    the Hub stays reachable for it (an import meanwhile may then reach it too)."""
    from huggingface_hub import constants

    with _SWITCH:
        if not _HELD["imports"]:
            _HELD["caller"] = constants.HF_HUB_OFFLINE
        _HELD["imports"] += 1
        _set_switch()
    try:
        yield
    finally:
        with _SWITCH:
            _HELD["imports"] -= 1
            _set_switch()
            if not _HELD["imports"]:
                constants.HF_HUB_OFFLINE = _HELD["caller"]


@contextmanager
def hub_online() -> Iterator[None]:
    """A download the user asked for: the Hub is reachable for it (as ``HF_HUB_OFFLINE`` is set by
    the caller) even while another thread imports inside :func:`hub_offline`."""
    with _SWITCH:
        _HELD["downloads"] += 1
        _set_switch()
    try:
        yield
    finally:
        with _SWITCH:
            _HELD["downloads"] -= 1
            _set_switch()


def offline() -> bool:
    """``HF_HUB_OFFLINE`` as the caller set it (not as an import block holds it meanwhile)."""
    from huggingface_hub import constants

    with _SWITCH:
        return bool(_HELD["caller"] if _HELD["imports"] else constants.HF_HUB_OFFLINE)


def hidden(e: BaseException) -> BaseException | None:
    """``e`` as the cause of the error raised for it, or None where its text (or its causes')
    quotes the token (:func:`redact`): a traceback then shows only the one-line message."""
    seen, x = [], e
    while x is not None and all(x is not y for y in seen):
        seen.append(x)
        x = x.__cause__ or x.__context__
    return None if any(redact(str(x)) != str(x) for x in seen) else e


def _token_file() -> Path | None:
    """The file huggingface_hub reads the saved token from when no variable holds one (``HF_TOKEN_PATH``,
    else ``HF_HOME/token``); None when a variable holds one."""
    from huggingface_hub import constants

    if any((os.environ.get(name) or "").strip() for name in TOKEN_VARIABLES):
        return None
    return Path(constants.HF_TOKEN_PATH)


def _saved_source() -> str:
    """Where huggingface_hub's saved token comes from, for messages: the variable it reads first
    (a stale ``HF_TOKEN`` hides a fresh ``hf auth login``), the OIDC exchange, or the token file."""
    if os.environ.get("HF_OIDC_RESOURCE"):
        return "the token had through OIDC (HF_OIDC_RESOURCE)"
    for name in TOKEN_VARIABLES:
        if (os.environ.get(name) or "").strip():
            return f"the token in use ({name}, which comes before the one of hf auth login)"
    return f"the token in use (the one hf auth login saved in '{short(str(_token_file()), 200)}')"


def _saved_token() -> str | None:
    """huggingface_hub's saved token, never waiting: a token file that is a FIFO (or a folder) is none."""
    from huggingface_hub import get_token

    path = _token_file()
    try:
        if path is not None and (path.exists() or path.is_symlink()) and not path.is_file():
            return None
        return get_token()
    except Exception:  # an unreadable file, an OIDC exchange that failed
        return None


def _token_sent() -> tuple[str | None, str]:
    """The token a request of the running call sends (huggingface_hub's rules, :class:`HubAccess`)
    and where it comes from, for messages (which never hold the token itself)."""
    from huggingface_hub import constants

    given = access().token
    if isinstance(given, str):
        return given, "the token given as token="
    if given is False:
        return None, "token=False"
    saved = _saved_token()
    if given is None and constants.HF_HUB_DISABLE_IMPLICIT_TOKEN:
        return None, "HF_HUB_DISABLE_IMPLICIT_TOKEN" if saved else ""
    return saved, _saved_source()


def check_token() -> None:
    """Before a request: the token huggingface_hub will send can be read without waiting (it reads
    the token file for every request: a FIFO there would block each one, a pipe gives it once) and
    an HTTP header can carry it. Raises a one-line :class:`ModelError` naming the source, never the token."""
    from huggingface_hub import constants

    given = access().token
    if isinstance(given, str) or given is False or given is None and constants.HF_HUB_DISABLE_IMPLICIT_TOKEN:
        return
    check_hub_folders()  # HF_HOME a file: the token file "HF_HOME/token" would be "Not a directory"
    path = _token_file()
    if path is not None and (path.exists() or path.is_symlink()) and not path.is_file():
        raise ModelError(f"the token file '{short(str(path), 200)}' (HF_TOKEN_PATH, else HF_HOME/token) is not a "
                         "regular file, and huggingface_hub reads it for every request: write the token to a file, "
                         "or set HF_TOKEN")
    from huggingface_hub import errors, get_token

    try:
        token = get_token()
    except getattr(errors, "OIDCError", ()) as e:  # HF_OIDC_RESOURCE set (huggingface_hub >= 1.30), no CI token
        raise ModelError(f"no Hugging Face token could be had through OIDC: {redact(_first_line(str(e)))}") from None
    except (OSError, UnicodeDecodeError) as e:  # a token file without read permission, not text
        raise ModelError(f"the token file '{short(str(path), 200)}' (HF_TOKEN_PATH, else HF_HOME/token) cannot be "
                         f"read ({getattr(e, 'strerror', None) or type(e).__name__}): write the token to it again (hf "
                         "auth login), or set HF_TOKEN") from None
    if token and not (token.isascii() and token.isprintable() and " " not in token):
        raise ModelError(f"{_saved_source()} holds a space, a control or a non-ASCII character, which no Hugging Face token "
                         "has: check it")


def login_hint() -> str:
    """How to give the Hub a token, or, when one was sent, that it is the one refused."""
    token, source = _token_sent()
    if token:
        return f"{source} has no access to it; check it"
    if source == "token=False":
        return "token=False sends no token: pass token=True (the one of hf auth login or HF_TOKEN) or the token itself"
    if source == "HF_HUB_DISABLE_IMPLICIT_TOKEN":
        return ("no token was sent because HF_HUB_DISABLE_IMPLICIT_TOKEN is set: unset it, or pass the token "
                "explicitly (token=True in Python)")
    python = _ACCESS.get() is not None  # inside from_pretrained, or a call given cache_dir= or token=
    return "log in with hf auth login or set HF_TOKEN" + (" (or pass token=)" if python else "")


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


def redact(text: str) -> str:
    """``text`` without the token a request of the running call sends (nor ``HF_TOKEN``'s): a
    library's error may quote the header it could not send."""
    secrets = {access().token if isinstance(access().token, str) else None, _saved_token(),
               *(os.environ.get(name) for name in TOKEN_VARIABLES)}
    for secret in sorted((x.strip() for x in secrets if isinstance(x, str) and len(x.strip()) >= 4), key=len,
                         reverse=True):
        text = text.replace(secret, "***")
    return text
