"""Probe Z2: Hub downloads on huggingface_hub 1.x (httpx) and 2.x (httpx2, a separate package).

huggingface_hub 2 builds its session on ``httpx2``: the listing cap wrapped the response body in an
``httpx.SyncByteStream``, which an ``httpx2`` response takes for an async stream ("Attempted to call
a sync close on an async stream": every pull and load by repo id failed), and the network errors
were classified by ``httpx``'s classes, which ``httpx2``'s are not. These tests use whichever
library the installed huggingface_hub's session is made of, so they check both majors; the Hub
tests in test_hub_pipeline.py run the whole download path against a local server.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from showo2_cli.errors import ModelError

REPO = Path(__file__).resolve().parents[1]


def session_library():
    """The module of the client huggingface_hub downloads with (``httpx`` or ``httpx2``)."""
    from huggingface_hub import get_session

    return importlib.import_module(type(get_session()).__module__.split(".")[0])


def test_a_capped_listing_body_reads_and_closes_on_the_hubs_http_library(monkeypatch):
    from showo2_cli import hub_download

    lib = session_library()
    monkeypatch.setattr(hub_download, "MAX_LISTING_BYTES", 100)

    def listing(chunks: list[bytes]):
        request = lib.Request("GET", "http://127.0.0.1:1/api/models/acme/x")
        response = lib.Response(200, content=iter(chunks), request=request)
        hub_download._LISTING.message = "the listing is longer than the cap"
        try:
            hub_download._cap_listing(response)
        finally:
            hub_download._LISTING.message = None
        return response

    short = listing([b"a" * 60, b"b" * 40])
    assert short.read() == b"a" * 60 + b"b" * 40  # exactly the cap: read whole
    short.close()
    long = listing([b"a" * 60, b"b" * 41, b"c" * 10**6])
    with pytest.raises(hub_download.Overrun, match="^the listing is longer than the cap$"):
        long.read()
    long.close()  # no "sync close on an async stream"
    assert long.is_closed


@pytest.mark.parametrize("error, says", [
    ("ConnectError", "'acme/x' is not in the Hugging Face cache and the Hub at {url} cannot be reached "
                     "(ConnectError: refused)"),
    ("ConnectTimeout", "'acme/x' is not in the Hugging Face cache and the Hub at {url} cannot be reached "
                       "(ConnectTimeout: refused)"),
    ("ReadTimeout", "downloading model 'acme/x' failed: the Hub at {url} did not answer in time (ReadTimeout: "
                    "refused; HF_HUB_DOWNLOAD_TIMEOUT sets the limit); pull again"),
    ("ReadError", "downloading model 'acme/x' failed (ReadError: refused); the cache keeps no half model "
                  "(pull again)"),
    ("RemoteProtocolError", "downloading model 'acme/x' failed (RemoteProtocolError: refused); the cache keeps "
                            "no half model (pull again)"),
])
def test_network_errors_of_the_hubs_http_library_are_one_line(error, says):
    """On hub 2 an ``httpx2`` error was none of ``httpx``'s: it came back unchanged (a traceback)."""
    from showo2_cli.hub_download import as_model_error, endpoint

    e = getattr(session_library(), error)("refused")
    got = as_model_error("acme/x", "model", e)
    assert isinstance(got, ModelError) and str(got).endswith(says.format(url=endpoint()))


def test_the_declared_range_takes_the_measured_huggingface_hub_releases():
    # 1.18.0 (floor), 1.33.0, 2.0.0 and 2.4.0 (which transformers 5.25 requires) pass the Hub tests
    from packaging.requirements import Requirement

    from showo2_cli.training.config import toml_module

    deps = toml_module().loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["dependencies"]
    (spec,) = [Requirement(d).specifier for d in deps if Requirement(d).name.lower() == "huggingface_hub"]
    assert all(v in spec for v in ("1.18.0", "1.33.0", "2.0.0", "2.4.0"))
    assert "1.17.0" not in spec and "3.0.0" not in spec
