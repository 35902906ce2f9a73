"""Hub failures as one line: :func:`as_model_error` turns what a Hub call raised (huggingface_hub's
errors, HTTP statuses, network and timeout errors, the cache's own ``OSError``) into a
:class:`~showo2_cli.errors.ModelError` naming the repo, the endpoint and the fix, without the token.
Also the two lookups every message and classification needs: the Hub's :func:`endpoint` and the
HTTP library its session is built on (:func:`hub_httpx`). :mod:`showo2_cli.hub_download` re-exports
all three."""

from __future__ import annotations

import errno
import os
from pathlib import Path

from .errors import ModelError, short
from .hub_auth import hub_cache, login_hint, offline, redact


def endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


def hub_httpx():
    """The HTTP library huggingface_hub's session is built on: ``httpx`` on hub 1, ``httpx2`` (a
    separate package with its own classes) on hub 2. Streams wrapped and errors classified must be
    its own: an ``httpx.SyncByteStream`` is an "async stream" to an ``httpx2`` response, and an
    ``httpx2.ConnectError`` is no ``httpx.HTTPError``."""
    from huggingface_hub import utils

    try:
        return utils.httpx  # exported since hub 1.32 (httpx2 on hub 2)
    except AttributeError:  # hub 1.18-1.31 export none: theirs is httpx
        import httpx

        return httpx


def error_chain(e: BaseException) -> list[BaseException]:
    """``e`` and its causes (``raise ... from``), outermost first."""
    out = [e]
    while out[-1].__cause__ is not None and all(out[-1].__cause__ is not x for x in out):
        out.append(out[-1].__cause__)
    return out


def _root(e: BaseException) -> BaseException:
    return error_chain(e)[-1]


def _status(e: BaseException) -> int | None:
    """The HTTP status of a Hub answer behind ``e`` (itself or its causes), if any."""
    for x in error_chain(e):
        status = getattr(getattr(x, "response", None), "status_code", None)
        if isinstance(status, int) and status >= 400:
            return status
    return None


def as_model_error(repo_id: str, what: str, e: Exception, revision: str | None = None) -> Exception:
    """A Hub, network or listing failure as a one-line :class:`ModelError` (anything else
    unchanged: a bug), without the token (:func:`redact`)."""
    error = _as_model_error(repo_id, what, e, revision)
    if isinstance(error, ModelError) and error is not e:
        return ModelError(redact(str(error)))
    return error


def _as_model_error(repo_id: str, what: str, e: Exception, revision: str | None = None) -> Exception:
    from huggingface_hub.errors import (
        GatedRepoError,
        LocalEntryNotFoundError,
        LocalTokenNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    if isinstance(e, ModelError):
        return e
    if isinstance(e, LocalTokenNotFoundError):
        return ModelError(f"token=True but no Hugging Face token is saved: log in with hf auth login or set HF_TOKEN "
                          f"(or pass the token as token=) to download {what} '{repo_id}'")
    httpx = hub_httpx()
    if isinstance(e, GatedRepoError):
        return ModelError(f"{what} '{repo_id}' is gated on the Hub: accept its terms on the model page and "
                          f"{login_hint()}, then pull again")
    if isinstance(e, RepositoryNotFoundError):
        return ModelError(f"{what} '{repo_id}' is not on the Hub at {endpoint()} (or it is private: {login_hint()})")
    if isinstance(e, RevisionNotFoundError):
        return ModelError(f"{what} '{repo_id}' has no revision '{revision or 'main'}' on the Hub")
    status = _status(e)
    if status in (401, 403):
        return ModelError(f"downloading {what} '{repo_id}' failed: the Hub at {endpoint()} answered HTTP {status} "
                          f"(access refused): {login_hint()}, then pull again")
    if status == 429:
        return ModelError(f"downloading {what} '{repo_id}' failed: the Hub at {endpoint()} answered HTTP 429 (too many "
                          "requests); wait a while, then pull again")
    if status is not None:
        return ModelError(f"downloading {what} '{repo_id}' failed: the Hub at {endpoint()} answered HTTP {status}; "
                          "the cache keeps no half model (pull again)")
    if isinstance(e, (OfflineModeIsEnabled, LocalEntryNotFoundError, httpx.ConnectError, httpx.ConnectTimeout)):
        why = "HF_HUB_OFFLINE is set" if offline() else f"the Hub at {endpoint()} cannot be reached ({_cause(e)})"
        return ModelError(f"{what} '{repo_id}' is not in the Hugging Face cache and {why}")
    if any(isinstance(x, (httpx.TimeoutException, TimeoutError)) for x in error_chain(e)):
        return ModelError(f"downloading {what} '{repo_id}' failed: the Hub at {endpoint()} did not answer in time "
                          f"({_cause(e)}; HF_HUB_DOWNLOAD_TIMEOUT sets the limit); pull again")
    if isinstance(e, (httpx.HTTPError, ConnectionError, TimeoutError)):
        return ModelError(f"downloading {what} '{repo_id}' failed ({_cause(e)}); the cache keeps no half model "
                          "(pull again)")
    if isinstance(e, OSError) and "Consistency check failed" in str(e):
        return ModelError(f"downloading {what} '{repo_id}' failed: a file arrived with another size than the Hub at "
                          f"{endpoint()} announced; the cache keeps no half model (pull again)")
    if isinstance(e, OSError):
        # a local file (the cache, the token file under HF_HOME): which one, or "Not a directory" says nothing
        where = f"'{short(os.fsdecode(e.filename), 200)}': " if isinstance(e.filename, (str, bytes)) else ""
        fix = ""
        if e.errno in (errno.EROFS, errno.EACCES, errno.EPERM) and where and \
                Path(os.fsdecode(e.filename)).absolute().is_relative_to(hub_cache().absolute()):
            fix = (f"; the Hugging Face cache {short(str(hub_cache()), 200)} cannot be written (a read-only volume?): "
                   "set HF_HUB_CACHE to a folder you can write, or pull the model where the cache can be written")
        return ModelError(f"downloading {what} '{repo_id}' failed: {where}{_first_line(e.strerror or str(e))}{fix}")
    if isinstance(e, ValueError):  # HFValidationError, an unusable listing or file entry, a Xet-only file
        return ModelError(f"{what} '{repo_id}' cannot be downloaded from the Hub at {endpoint()}: {_first_line(str(e))}")
    return e


def _first_line(text: str, n: int = 160) -> str:
    first = text.strip().splitlines()[0] if text.strip() else ""
    return first if len(first) <= n else first[:n - 3] + "..."


def _cause(e: BaseException) -> str:
    e = _root(e)
    first = _first_line(str(e), 120)
    return f"{type(e).__name__}: {first}" if first else type(e).__name__
