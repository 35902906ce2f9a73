"""No network traffic unless a download was asked for (probe AB).

Importing the libraries a model load needs must not reach the network: bitsandbytes >= 0.50
(imported by diffusers through peft on every model load, wherever it is installed) asks the
``kernels`` package for a CPU kernel on AVX512-BF16 CPUs, and ``kernels`` asked the Hub (its trust
check, then the kernel's versions and files). The local Hub server records every request it gets.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import showo2_cli
from local_hub import LocalHub


@pytest.fixture
def hub():
    with LocalHub() as server:
        yield server


def phoning_module(folder: Path, name: str, url: str) -> None:
    """A module that asks the Hub for a repo's listing when it is imported, best effort, as
    bitsandbytes' CPU backend asks ``kernels.get_kernel`` (which asks the Hub unless
    ``huggingface_hub.constants.HF_HUB_OFFLINE``)."""
    (folder / f"{name}.py").write_text(textwrap.dedent(f"""
        from huggingface_hub import HfApi, constants
        try:
            ASKED = not constants.HF_HUB_OFFLINE
            HfApi(endpoint={url!r}).model_info("kernels-community/quantization-bitsandbytes")
        except Exception as e:
            ERROR = e
    """))


def test_imports_under_quiet_imports_reach_no_hub(hub, tmp_path, monkeypatch):
    import huggingface_hub.constants as C

    from showo2_cli.runtime import quiet_imports

    monkeypatch.setattr(C, "HF_HUB_OFFLINE", False)
    monkeypatch.syspath_prepend(str(tmp_path))
    phoning_module(tmp_path, "ab_phones_at_import", hub.url)
    phoning_module(tmp_path, "ab_phones_after", hub.url)
    with quiet_imports():
        import ab_phones_at_import
    assert hub.requests == [] and ab_phones_at_import.ASKED is False
    assert C.HF_HUB_OFFLINE is False  # the switch is the caller's again after the block
    with pytest.raises(RuntimeError), quiet_imports():
        raise RuntimeError("an import failed")
    assert C.HF_HUB_OFFLINE is False
    import ab_phones_after  # outside the block the Hub is asked, as before: the switch is not left on

    assert ab_phones_after.ASKED is True
    assert ("GET", "/api/models/kernels-community/quantization-bitsandbytes") in hub.requests


def test_an_offline_switch_set_by_the_caller_stays_on(monkeypatch):
    import huggingface_hub.constants as C

    from showo2_cli.runtime import quiet_imports

    monkeypatch.setattr(C, "HF_HUB_OFFLINE", True)
    with quiet_imports():
        assert C.HF_HUB_OFFLINE is True
    assert C.HF_HUB_OFFLINE is True


AUDITED = r"""
import json, os, socket, sys
connections = []
def hook(event, args):
    if event in ("socket.connect", "socket.getaddrinfo", "http.client.connect", "urllib.Request"):
        family = getattr(args[0], "family", None) if event == "socket.connect" else None
        if family != socket.AF_UNIX:
            connections.append([event, repr(args[1:] if event == "socket.connect" else args)[:160]])
sys.addaudithook(hook)

from showo2_cli.cli import main
from showo2_cli import api
from showo2_cli.pipeline import Showo2Pipeline

out, folder, image = sys.argv[1], sys.argv[2], sys.argv[3]
codes = {}
for name, argv in {
    "t2i": ["t2i", "a red circle", "--steps", "2", "-o", f"{out}/a.png", "--quiet"],
    "caption": ["caption", image, "--max-new-tokens", "3", "--quiet"],
    "encode": ["encode", image, "-o", f"{out}/l.safetensors", "--quiet"],
    "decode": ["decode", f"{out}/l.safetensors", "-o", f"{out}/d.png", "--quiet"],
    "info": ["info", folder, "--json"],
    "models": ["models", "--json"],
    "t2i-folder": ["t2i", "a cat", "-m", folder, "--steps", "2", "-o", f"{out}/b.png", "--quiet"],
}.items():
    codes[name] = main(argv)
Showo2Pipeline.from_pretrained("demo")
api.load(folder)
print(json.dumps({"codes": codes, "connections": connections}))
"""


@pytest.mark.slow
def test_local_commands_make_no_connection(hub, tiny_model_dir, tmp_path):
    """The main commands on the bundled demo and on a local folder, and the Python API's loads, in
    one process with the Hub reachable (``HF_ENDPOINT`` at the local server, ``HF_HUB_OFFLINE``
    unset, an empty cache): no socket is connected and no name looked up (the audit hook sees
    every ``socket.connect``/``getaddrinfo``), and the server gets no request."""
    image = tmp_path / "in.png"
    from PIL import Image

    Image.new("RGB", (64, 48), (200, 30, 30)).save(image)
    script = tmp_path / "audited.py"
    script.write_text(AUDITED)
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "SHOWO2_MODEL")}
    source = Path(showo2_cli.__file__).resolve().parents[1]  # the sources this run tests
    env.update(HF_ENDPOINT=hub.url, HF_HOME=str(tmp_path / "hf"), OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(source), env.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, str(script), str(tmp_path), str(tiny_model_dir), str(image)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(result["codes"].values()) == {0}, result["codes"]
    assert result["connections"] == []
    assert hub.requests == []


# ---- probe AI: the switch shared by threads ------------------------------------------------------

def _in_another_thread(block, body):
    """Run ``body()`` while another thread is inside ``block()``; returns what body returned."""
    import threading

    inside, done = threading.Event(), threading.Event()

    def hold():
        with block():
            inside.set()
            done.wait(60)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert inside.wait(60)
        return body()
    finally:
        done.set()
        holder.join(60)


def test_import_blocks_of_two_threads_ending_out_of_order_leave_the_switch_as_the_caller_had_it(monkeypatch):
    """Two threads' first model loads overlap (``api.load`` in two threads): their import blocks
    ended in the other order than they began, and the second put back the 'offline' it had found,
    so the whole process stayed offline (every later pull refused: 'HF_HUB_OFFLINE is set')."""
    import threading

    import huggingface_hub.constants as C

    from showo2_cli.runtime import hub_offline

    def first(a_in, b_in, a_out, seen):
        with hub_offline():
            a_in.set()
            b_in.wait(60)
        a_out.set()

    def second(a_in, b_in, a_out, seen):
        a_in.wait(60)
        with hub_offline():
            seen.append(C.HF_HUB_OFFLINE)
            b_in.set()
            a_out.wait(60)
            seen.append(C.HF_HUB_OFFLINE)  # the first block ended, this one still holds it

    for caller in (False, True):
        monkeypatch.setattr(C, "HF_HUB_OFFLINE", caller)
        events, seen = (threading.Event(), threading.Event(), threading.Event()), []
        threads = [threading.Thread(target=f, args=(*events, seen)) for f in (first, second)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert seen == [True, True]
        assert C.HF_HUB_OFFLINE is caller


def test_a_download_asked_for_runs_while_another_thread_imports(monkeypatch, tmp_path):
    """A pull (or a load that downloads) in one thread while another imports a library inside
    quiet_imports: the download was refused ('HF_HUB_OFFLINE is set', which nobody had set). It now
    runs, with the Hub reachable for it, and the import block holds the switch again after."""
    import huggingface_hub.constants as C

    from showo2_cli import hub as hub_names
    from showo2_cli.errors import ModelError
    from showo2_cli.hub_download import offline
    from showo2_cli.runtime import quiet_imports

    with LocalHub() as server:
        monkeypatch.setattr(C, "ENDPOINT", server.url)
        monkeypatch.setattr(C, "HUGGINGFACE_CO_URL_TEMPLATE", server.url + "/{repo_id}/resolve/{revision}/{filename}")
        monkeypatch.setattr(C, "HF_HUB_CACHE", str(tmp_path / "cache"))
        monkeypatch.setattr(C, "HF_HUB_OFFLINE", False)
        weights = bytes(range(256)) * 200
        server.add("acme/small", {"config.json": b"{}", "model.safetensors": weights})

        def download():
            snap = hub_names.download_model("acme/small")
            assert C.HF_HUB_OFFLINE is True  # back on for the import still running
            assert offline() is False  # the caller's setting, not the block's
            return snap

        snap = _in_another_thread(quiet_imports, download)
        assert (snap / "model.safetensors").read_bytes() == weights
        assert any(path.startswith("/api/models/acme/small") for _, path in server.requests)
        assert C.HF_HUB_OFFLINE is False

        monkeypatch.setattr(C, "HF_HUB_OFFLINE", True)  # offline by the caller: refused, and said so
        with pytest.raises(ModelError, match="HF_HUB_OFFLINE is set"):
            _in_another_thread(quiet_imports, lambda: hub_names.resolve_root("acme/other"))
        assert C.HF_HUB_OFFLINE is True
