"""Shared test fixtures: where the shared fixtures live, and a tiny random model folder."""

from __future__ import annotations

import contextlib
import json
import os
import signal
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def set_dotted(cfg: dict, changes: dict) -> dict:
    """``cfg`` (a config as a mapping) with ``{"optim.lr": 0.1, ...}`` written into its tables."""
    for key, value in changes.items():
        node = cfg
        parts = key.split(".")
        for p in parts[:-1]:
            node = node[p]
        node[parts[-1]] = value
    return cfg


def shared_dir(name: str, env: str) -> Path:
    """``$env`` if set, else ``../shared/<name>`` next to the checkout (or the working directory)."""
    if os.environ.get(env):
        return Path(os.environ[env])
    for base in (REPO.parent, Path.cwd().parent):
        if (base / "shared" / name).is_dir():
            return base / "shared" / name
    return REPO.parent / "shared" / name


def random_lora(model_dir: Path, folder: Path) -> Path:
    """A rank-2 LoRA adapter (q/v projections of the LLM) for the model in ``model_dir``, its B
    matrices random (a fresh adapter's are zero and change nothing), saved in peft's layout."""
    import torch

    from showo2_cli.loading import load
    from showo2_cli.lora import add_lora, save_adapter

    network = load(model_dir).network
    config = add_lora(network, 2, 4.0, 0.0, ("q_proj", "v_proj"), ("showo.model.layers",))
    with torch.no_grad():
        for name, p in network.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn_like(p) * 0.1)
    return save_adapter(folder, network, config)


class RecordingStreamer:
    """A streamer with transformers' protocol (``put(ids)``, ``end()``) that keeps what it is fed."""

    def __init__(self):
        self.puts, self.ends = [], 0

    def put(self, value):
        self.puts.append(value)

    def end(self):
        self.ends += 1


def sigint_reaches_child() -> None:
    """``preexec_fn`` for a child a test interrupts with SIGINT: a test run started in the
    background by a shell without job control ignores SIGINT, and a child inherits that (it then
    runs on, exit 0, as Unix intends for background jobs); the child gets the default back."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)



def gated_mlp_linears(seed: int = 0, hidden: int = 24, inner: int = 40):
    """A gated MLP's gate, up and down projections (bias-free ``nn.Linear``) with seeded random weights."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    mods = [torch.nn.Linear(hidden, inner, bias=False), torch.nn.Linear(hidden, inner, bias=False),
            torch.nn.Linear(inner, hidden, bias=False)]
    for m in mods:
        with torch.no_grad():
            m.weight.copy_(torch.randn(m.weight.shape, generator=gen))
    return mods


def write_adapter(model_dir, folder, targets, seed, **config) -> Path:
    """A rank-2 LoRA adapter of the model in ``model_dir`` on ``targets`` (layer-name suffixes) with
    random B matrices, its config then given ``config``'s fields (peft's: alpha_pattern, use_rslora, ...)."""
    import torch

    from showo2_cli.loading import load
    from showo2_cli.lora import ADAPTER_CONFIG, add_lora, save_adapter

    net = load(model_dir).network
    lora_config = add_lora(net, 2, 4.0, 0.0, targets, ())
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    save_adapter(folder, net, lora_config)
    raw = json.loads((folder / ADAPTER_CONFIG).read_text())
    (folder / ADAPTER_CONFIG).write_text(json.dumps({**raw, **config}))
    return folder

def write_h264(path, frames, rate: int = 25, options: dict | None = None, codec: str = "libx264") -> Path:
    """``frames`` (uint8 (T, H, W, 3)) written as an H.264 video at ``path`` (the container its suffix
    names), one frame per tick of ``1/rate``; ``options``: the encoder's (e.g. ``{"preset":
    "ultrafast"}``); ``codec``: another encoder (``mpeg2video``)."""
    import av

    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=rate)
        s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        if options:
            s.options = dict(options)
        for i, f in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(f, format="rgb24")
            vf.pts = i
            for pkt in s.encode(vf):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    return Path(path)


def wait_started(server, timeout: float = 30.0) -> None:
    """Wait until a uvicorn ``server`` (running in another thread) has started, at most ``timeout`` s."""
    import time

    deadline = time.time() + timeout
    while not server.started and time.time() < deadline:
        time.sleep(0.02)
    assert server.started, "the server did not start"


def run_in_thread(server, sock):
    """Run a uvicorn ``server`` on ``sock`` in a daemon thread; return the thread once it has started."""
    import threading

    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    wait_started(server)
    return thread


def enliven(net, seed: int = 1):
    """Give a network's zero-initialised flow-head layers small random values (the official init
    makes v = 0), so velocities are non-zero and sampling actually moves; returns ``net``."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for block in net.diffusion_head_a:
            w = block.adaLN_modulation[-1].weight
            w.copy_(torch.randn(w.shape, generator=g) * 0.02)
        lin = net.diffusion_head_b.linear.weight
        lin.copy_(torch.randn(lin.shape, generator=g) * 0.05)
    return net


@contextlib.contextmanager
def serving(model, model_id: str = "demo", **config):
    """``showo2 serve`` of ``model`` on a free port of 127.0.0.1, in a thread (``config``: more of
    its ServerConfig): yields its base URL (``http://127.0.0.1:PORT``); stopped on exit."""
    from showo2_cli.serve import ServerConfig, bind_socket
    from showo2_cli.serve.app import server_for

    sock = bind_socket("127.0.0.1", 0)
    srv = server_for(model, ServerConfig(model_id=model_id, **config), sock, log_level="error")
    thread = run_in_thread(srv, sock)
    host, port = sock.getsockname()[:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        srv.should_exit = True
        thread.join(30)
        sock.close()


PARITY_DIR = shared_dir("parity", "SHOWO2_PARITY_DIR")
MEDIA_DIR = shared_dir("media", "SHOWO2_MEDIA_DIR")


def parity_weight_file(fmt: str, folder: Path) -> Path:
    """The parity set's weights as ONE official file, ``folder / pytorch_model.{fmt}`` (``bin`` or
    ``safetensors``), for the tests that lay the model out as a repo or damage its one file: the
    set's own file where it ships one; a set stored in shards (as large checkpoints are, probe JA)
    is written as one file from them, a tied token table stored once (shared) in the pickle as the
    official save stores it, the values in the set's own dtype."""
    import shutil

    import torch

    from showo2_cli.hub_files import find_weights
    from showo2_cli.loading import read_state_dict

    name = f"pytorch_model.{fmt}"
    folder.mkdir(parents=True, exist_ok=True)
    if (PARITY_DIR / "model" / name).is_file():
        shutil.copy(PARITY_DIR / "model" / name, folder / name)
        return folder / name
    state = {k: v.clone().contiguous() for k, v in read_state_dict(find_weights(PARITY_DIR / "model")).items()}
    llm = json.loads((PARITY_DIR / "model" / "llm" / "config.json").read_text())
    table, head = "showo.model.embed_tokens.weight", "showo.lm_head.weight"
    if fmt == "bin":
        if llm.get("tie_word_embeddings", True) and head in state and torch.equal(state[head], state[table]):
            state[head] = state[table]
        torch.save(state, folder / name)
    else:
        from safetensors.torch import save_file

        save_file(state, str(folder / name), metadata={"format": "pt"})
    return folder / name


@pytest.fixture(scope="module")
def demo_url():
    """The base URL of a real ``showo2 serve`` of the bundled demo on 127.0.0.1, one a test module
    (skipped where FastAPI or the demo is missing)."""
    pytest.importorskip("fastapi")
    from showo2_cli.loading import bundled_demo_path, load

    if bundled_demo_path() is None:
        pytest.skip("the bundled demo is not installed")
    with serving(load("demo")) as url:
        yield url


def official_vae_input(vae, pixels):
    """What a fixture's VAE input gives here, for a set made with the official code, which takes
    inputs the VAE here refuses by design (a clear one-line ``InputError``, README "Latents and
    frames"): the official ``WanVAE_.encode`` reads frames in chunks 1, 4, 4, ... and drops a
    trailing partial chunk, so its latents of T frames ARE those of the first ``1 + 4k``; a size
    that is not a multiple of 8 has no such equivalent (the official strided convolutions pad it).
    Returns ``(pixels to encode or None, number of frames its latents decode to)``, after checking
    that the whole input is refused in one line whenever it is not itself what is encoded."""
    from showo2_cli.errors import InputError
    from showo2_cli.modeling.vae import SPATIAL_FACTOR, TEMPORAL_FACTOR

    frames = pixels.shape[2] if pixels.dim() == 5 else 1
    kept = 1 + (frames - 1) // TEMPORAL_FACTOR * TEMPORAL_FACTOR
    used = pixels[:, :, :kept] if pixels.dim() == 5 else pixels
    spatial_ok = not any(s % SPATIAL_FACTOR for s in pixels.shape[-2:])
    if kept != frames or not spatial_ok:
        with pytest.raises(InputError) as refused:
            vae.encode(pixels)
        assert "\n" not in str(refused.value), str(refused.value)
    return (used if spatial_ok else None), kept


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A randomly initialised `tiny` model folder (showo2 format, byte tokenizer, small VAE)."""
    from showo2_cli.loading import init_model

    path = tmp_path_factory.mktemp("models") / "tiny"
    init_model("tiny", path, seed=0, vae_base_dim=4)
    return path


@pytest.fixture(scope="module")
def tiny_pipe(tiny_model_dir):
    """A ``Showo2Pipeline`` of the tiny model, progress bars off (one per test module)."""
    from showo2_cli import Showo2Pipeline

    pipe = Showo2Pipeline.from_pretrained(tiny_model_dir)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="session")
def media_dir() -> Path:
    if not MEDIA_DIR.is_dir():
        pytest.skip(f"no shared media at {MEDIA_DIR}")
    return MEDIA_DIR


def pytest_terminal_summary(terminalreporter):
    """The worst difference per tensor compared by the parity tests (a report, not a test)."""
    import sys

    parity = sys.modules.get("test_parity")
    worst = getattr(parity, "WORST", None)
    if worst:
        terminalreporter.section("parity: worst absolute difference per compared tensor")
        for k, v in sorted(worst.items()):
            terminalreporter.write_line(f"  {k}: {v:.3g}")


#: frames that carry their own number (:func:`numbered_frame`, read back by :func:`frame_number`):
#: 9 black/white stripes 8 pixels wide, so any frame a reader picks names itself
NUMBERED_SIZE = (72, 48)
_NUMBER_BITS = 9


def numbered_frame(i: int):
    """An RGB frame (H, W, 3 uint8) of :data:`NUMBERED_SIZE` showing ``i`` in binary stripes."""
    import numpy as np

    w, h = NUMBERED_SIZE
    frame = np.zeros((h, w, 3), np.uint8)
    for b in range(_NUMBER_BITS):
        if i >> b & 1:
            frame[:, b * 8:(b + 1) * 8] = 255
    return frame


def frame_number(frame) -> int:
    """The number a :func:`numbered_frame` shows (an array or a PIL image), through lossy codecs."""
    import numpy as np

    frame = np.asarray(frame)
    return sum(1 << b for b in range(_NUMBER_BITS) if frame[:, b * 8 + 2:b * 8 + 6].mean() > 128)
