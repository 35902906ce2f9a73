"""The hostile-input corpus: bad files generated on the fly, and the cases that run them.

``build_corpus`` writes every bad input (and the few odd-but-valid ones) under a folder;
``hostile_cases`` turns them into :class:`Case` objects, one ``showo2`` invocation each, with the
exit code and the words the one-line error must contain; ``run_case``/``check_case`` run one as
a real subprocess and list what it did wrong. ``corpus_table`` renders the results as markdown
(set ``SHOWO2_HOSTILE_REPORT=FILE`` when running the suite to get it written).

Nothing here allocates a big image: the 20000x20000 PNG is a header with a tiny IDAT.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image

MARKER_NAME = "PICKLE_PAYLOAD_RAN"
#: a read-only place to write: as root, chmod does not stop writes, a pseudo file system does
READ_ONLY_TARGETS = ("/proc/showo2-hostile.png", "/sys/showo2-hostile.png")


# ---- small generators -------------------------------------------------------------------------

def model_with_spec(model_dir: Path, dst: Path, change: dict) -> Path:
    """A copy of a showo2-format model folder whose spec has ``change`` written into it."""
    shutil.copytree(model_dir, dst)
    cfg = json.loads((dst / "config.json").read_text())
    cfg["showo2"]["spec"].update(change)
    (dst / "config.json").write_text(json.dumps(cfg))
    return dst


def noise(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def gradient(h: int, w: int, t: int = 1) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    out = np.empty((t, h, w, 3), np.uint8)
    for i in range(t):
        out[i, ..., 0] = (x * 255 // max(w - 1, 1) + 9 * i) % 256
        out[i, ..., 1] = y * 255 // max(h - 1, 1)
        out[i, ..., 2] = 90 + 10 * i
    return out


def image_bytes(arr_or_img, fmt: str, **kw) -> bytes:
    img = arr_or_img if isinstance(arr_or_img, Image.Image) else Image.fromarray(arr_or_img)
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def gif_bytes(frames: np.ndarray) -> bytes:
    images = [Image.fromarray(f) for f in frames]
    buf = io.BytesIO()
    images[0].save(buf, format="GIF", save_all=True, append_images=images[1:], duration=100, loop=0)
    return buf.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def gif_screen(gif: bytes, width: int, height: int) -> bytes:
    """``gif`` with its logical screen (the canvas every frame paints on) set to width x height."""
    return gif[:6] + struct.pack("<HH", width, height) + gif[10:]


def png_with_chunk_claim(png: bytes, kind: bytes, length: int) -> bytes:
    """``png`` with a ``kind`` chunk after IHDR whose length field claims ``length`` bytes (a
    hundred follow, then the real IDAT): a reader that trusts the length allocates it."""
    return png[:33] + struct.pack(">I", length) + kind + b"icc\0\0" + bytes(100) + png[33:]


def mp4_sample_count(mp4: bytes, count: int) -> bytes:
    """``mp4`` whose time-to-sample table (``stts``) says its first run has ``count`` samples:
    the index lists frames the file does not hold."""
    i = mp4.index(b"stts")
    return mp4[: i + 12] + struct.pack(">I", count) + mp4[i + 16:]


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims width x height with a tiny (and far too short) IDAT."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + png_chunk(b"IEND", b""))


def png_rgb48(h: int, w: int) -> bytes:
    """A 16-bit-per-channel RGB PNG (PIL cannot write one), a smooth ramp."""
    y, x = np.mgrid[0:h, 0:w]
    arr = np.stack([x * 65535 // (w - 1), y * 65535 // (h - 1), np.full_like(x, 40000)], -1).astype(">u2")
    raw = b"".join(b"\0" + arr[r].tobytes() for r in range(h))
    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(raw))
            + png_chunk(b"IEND", b""))


def scramble(data: bytes, start: int, end: int, seed: int = 1) -> bytes:
    out = bytearray(data)
    out[start:end] = np.random.default_rng(seed).integers(0, 256, end - start, dtype=np.uint8).tobytes()
    return bytes(out)


def write_av(path: Path, frames: np.ndarray, pts: list[int] | None = None, time_base=Fraction(1, 8),
             codec: str = "libx264", fmt: str | None = None) -> Path:
    import av

    with av.open(str(path), "w", format=fmt) as c:
        s = c.add_stream(codec, rate=Fraction(8))
        s.width, s.height = frames.shape[2], frames.shape[1]
        s.pix_fmt = "yuv420p"
        s.codec_context.time_base = time_base
        for i, f in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(f, format="rgb24")
            vf.pts = pts[i] if pts is not None else i
            vf.time_base = time_base
            for pkt in s.encode(vf):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    return path


def write_audio_only(path: Path) -> Path:
    import av

    with av.open(str(path), "w") as c:
        s = c.add_stream("aac", rate=16000)
        for i in range(4):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate = 16000
            frame.pts = i * 1024
            for pkt in s.encode(frame):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    return path


def write_no_frames(path: Path) -> Path:
    """An mp4 with a video stream that holds no frame at all."""
    import av

    with av.open(str(path), "w") as c:
        s = c.add_stream("mpeg4", rate=8)
        s.width, s.height, s.pix_fmt = 32, 32, "yuv420p"
        c.start_encoding()  # writes the header; no frame follows
    return path


class PicklePayload:
    """Unpickled unsafely, this creates the marker file: proof that code ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


# ---- the corpus -------------------------------------------------------------------------------

def build_media(d: Path, media_dir: Path | None) -> dict[str, Path]:
    from showo2_cli import media as M

    d.mkdir(parents=True, exist_ok=True)
    f: dict[str, Path] = {}

    def put(name: str, data: bytes) -> Path:
        (d / name).write_bytes(data)
        f[name] = d / name
        return d / name

    img = noise(48, 64)
    good = {
        "png": image_bytes(img, "PNG"), "jpg": image_bytes(img, "JPEG", quality=90),
        "webp": image_bytes(img, "WEBP", quality=90), "gif": gif_bytes(np.stack([noise(48, 64, s) for s in range(5)])),
    }
    M.write_video(d / "ok.mp4", gradient(48, 64, 9), 8)
    M.write_video(d / "ok.webm", gradient(48, 64, 9), 8)
    good["mp4"] = (d / "ok.mp4").read_bytes()
    good["webm"] = (d / "ok.webm").read_bytes()
    put("ok.png", good["png"])
    f["ok.mp4"], f["ok.webm"] = d / "ok.mp4", d / "ok.webm"
    for ext, data in good.items():
        n = len(data)
        put(f"empty.{ext}", b"")
        put(f"truncated.{ext}", data[: n // 2])
    # corruption that breaks the structure (JPEG/GIF pixel data are not checksummed: a flipped byte
    # there decodes to wrong colours, as in any viewer, so the headers are hit instead)
    put("corrupt.png", scramble(good["png"], len(good["png"]) // 3, 2 * len(good["png"]) // 3))
    put("corrupt.jpg", scramble(good["jpg"], 12, 80))
    put("corrupt.webp", scramble(good["webp"], 12, 80))
    put("corrupt.gif", scramble(good["gif"], len(good["gif"]) // 3, 2 * len(good["gif"]) // 3))
    put("corrupt.mp4", scramble(good["mp4"], len(good["mp4"]) // 3, 2 * len(good["mp4"]) // 3))
    put("corrupt.webm", scramble(good["webm"], len(good["webm"]) // 3, 2 * len(good["webm"]) // 3))
    put("random.mp4", np.random.default_rng(5).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    put("text.png", b"this is not a picture\n" * 20)
    put("video-named.png", good["mp4"])  # a video with an image name
    put("image-named.mp4", good["png"])  # an image with a video name
    put("bomb-20000.png", png_header_only(20000, 20000))
    put("one-pixel.png", image_bytes(np.array([[[200, 30, 30]]], np.uint8), "PNG"))
    # round eleven: files that pass a first look and fail the decode, in a few hundred bytes
    put("gif-screen-65535.gif", gif_screen(good["gif"], 65535, 65535))
    put("png-header-only.png", good["png"][:33])  # the signature and IHDR, then nothing
    put("png-iccp-2gb.png", png_with_chunk_claim(good["png"], b"iCCP", 0x7FFFFFFF))
    put("mp4-stts-1e9.mp4", mp4_sample_count(good["mp4"], 10**9))
    write_audio_only(d / "audio-only.mp4")
    f["audio-only.mp4"] = d / "audio-only.mp4"
    write_no_frames(d / "zero-frames.mp4")
    f["zero-frames.mp4"] = d / "zero-frames.mp4"
    (d / "a-folder.png").mkdir(exist_ok=True)
    f["a-folder.png"] = d / "a-folder.png"
    if media_dir is not None and (media_dir / "video1.mp4").is_file():
        data = (media_dir / "video1.mp4").read_bytes()
        put("real-truncated.mp4", data[: len(data) // 2])
        photo = (media_dir / "pexels-taryn-elliott-4144459.jpg").read_bytes()
        put("real-truncated.jpg", photo[: len(photo) // 3])
    return f


def build_valid_media(d: Path) -> dict[str, Path]:
    """Odd but valid inputs that must work."""
    d.mkdir(parents=True, exist_ok=True)
    f: dict[str, Path] = {}
    base = gradient(40, 56)[0]
    ramp16 = (np.mgrid[0:40, 0:56][1] * 65535 // 55).astype(np.uint16)
    Image.fromarray(ramp16).save(d / "gray16.png")  # mode I;16
    (d / "rgb48.png").write_bytes(png_rgb48(40, 56))
    Image.fromarray(base).convert("L").save(d / "gray.png")
    Image.fromarray(base).convert("P", palette=Image.Palette.ADAPTIVE, colors=16).save(d / "palette.png")
    Image.fromarray(base).convert("CMYK").save(d / "cmyk.jpg", quality=95)
    rgba = np.dstack([base, np.linspace(0, 255, 56, dtype=np.uint8)[None].repeat(40, 0)])
    Image.fromarray(rgba, "RGBA").save(d / "rgba.png")
    # a portrait picture (48 wide, 80 high) with a red block at its top-left, stored sideways
    # (80 wide, 48 high) with EXIF orientation 6 ("rotate 90 degrees clockwise to display")
    upright = gradient(80, 48)[0].copy()
    upright[:12, :12] = (255, 0, 0)
    Image.fromarray(upright).save(d / "upright.png")
    stored = np.ascontiguousarray(np.rot90(upright, k=1))  # 90 degrees counter-clockwise
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(d / "exif-rotated.png", exif=exif.tobytes())
    Image.fromarray(stored).save(d / "exif-rotated.jpg", exif=exif.tobytes(), quality=98)
    Image.fromarray(upright).save(d / "upright.jpg", quality=98)
    (d / "one-pixel.png").write_bytes(image_bytes(np.array([[[200, 30, 30]]], np.uint8), "PNG"))
    write_av(d / "one-frame.mp4", gradient(32, 48, 1))
    write_av(d / "vfr.mp4", gradient(32, 48, 10), pts=[0, 40, 120, 130, 200, 400, 410, 420, 600, 700],
             time_base=Fraction(1, 1000))
    (d / "image-named.mp4").write_bytes(image_bytes(base, "PNG"))
    shutil.copy(d / "vfr.mp4", d / "video-named.png")
    uni = d / "dossier à espaces 日本"
    uni.mkdir(exist_ok=True)
    Image.fromarray(base).save(uni / "photo ünïcødé 写真 #1.png")
    for p in sorted(d.rglob("*")):
        if p.is_file():
            f[str(p.relative_to(d))] = p
    return f


def build_latents(d: Path, marker: Path) -> dict[str, Path]:
    import torch
    from safetensors.torch import save_file

    d.mkdir(parents=True, exist_ok=True)
    f: dict[str, Path] = {}
    ok = torch.randn(16, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    meta = {"showo2": json.dumps({"format": "showo2-latents", "kind": "image", "frames": 1, "fps": None})}

    def save(name: str, tensors: dict, metadata: dict | None = meta) -> None:
        save_file(tensors, str(d / name), metadata=metadata)
        f[name] = d / name

    save("ok.safetensors", {"latents": ok})
    save("wrong-key.safetensors", {"z": ok})
    save("wrong-channels.safetensors", {"latents": torch.zeros(8, 1, 4, 4)})
    save("wrong-rank.safetensors", {"latents": torch.zeros(16, 4)})
    save("batch-of-two.safetensors", {"latents": torch.zeros(2, 16, 1, 4, 4)})
    save("zero-size.safetensors", {"latents": torch.zeros(16, 1, 0, 4)})
    save("int32.safetensors", {"latents": torch.zeros(16, 1, 4, 4, dtype=torch.int32)})
    save("bool.safetensors", {"latents": torch.zeros(16, 1, 4, 4, dtype=torch.bool)})
    save("nan.safetensors", {"latents": torch.full((16, 1, 4, 4), float("nan"))})
    save("inf.safetensors", {"latents": torch.full((16, 1, 4, 4), float("inf"))})
    save("meta-not-json.safetensors", {"latents": ok}, {"showo2": "{not json"})
    save("meta-not-object.safetensors", {"latents": ok}, {"showo2": "[1, 2, 3]"})
    save("meta-wrong-types.safetensors", {"latents": ok},
         {"showo2": json.dumps({"fps": "fast", "vae": 123, "frames": "many", "kind": ["x"]})})
    save("meta-bad-fps.safetensors", {"latents": ok}, {"showo2": json.dumps({"fps": -5})})
    save("meta-nan-fps.safetensors", {"latents": torch.randn(16, 2, 4, 4)}, {"showo2": '{"fps": NaN}'})
    evil_vae = d / "evil-vae.pth"
    import pickle

    evil_vae.write_bytes(pickle.dumps({"encoder.conv1.weight": PicklePayload(marker)}))
    save("meta-evil-vae.safetensors", {"latents": ok}, {"showo2": json.dumps({"vae": str(evil_vae)})})
    f["evil-vae.pth"] = evil_vae
    # decoding (16, 1, 256, 256) latents gives a 2048 x 2048 picture: about 2 GB with the tiny VAE
    save("big-decode.safetensors", {"latents": torch.zeros(16, 1, 256, 256, dtype=torch.float16)})
    data = (d / "ok.safetensors").read_bytes()
    (d / "truncated.safetensors").write_bytes(data[: len(data) // 2])
    (d / "empty.safetensors").write_bytes(b"")
    (d / "text.safetensors").write_text("not a tensor file\n")
    (d / "header-lies.safetensors").write_bytes(struct.pack("<Q", 10**12) + b"{}")
    (d / "a-folder.safetensors").mkdir(exist_ok=True)
    for name in ("truncated", "empty", "text", "header-lies", "a-folder"):
        f[f"{name}.safetensors"] = d / f"{name}.safetensors"
    # --noise files for t2i
    save("noise-nan.safetensors", {"noise": torch.full((16, 4, 4), float("nan"))}, None)
    save("noise-int.safetensors", {"noise": torch.zeros(16, 4, 4, dtype=torch.int64)}, None)
    save("noise-wrong-shape.safetensors", {"noise": torch.zeros(3, 5, 7)}, None)
    save("noise-two.safetensors", {"a": torch.zeros(16, 4, 4), "b": torch.zeros(16, 4, 4)}, None)
    return f


def build_models(d: Path, tiny: Path, marker: Path) -> dict[str, Path]:
    """Broken copies of the tiny model folder."""
    import torch
    from safetensors.torch import load_file, save_file

    d.mkdir(parents=True, exist_ok=True)
    f: dict[str, Path] = {}

    def copy(name: str) -> Path:
        dst = d / name
        if dst.exists():
            shutil.rmtree(dst)
        shutil.copytree(tiny, dst)
        f[name] = dst
        return dst

    shutil.copytree(tiny, d / "ok", dirs_exist_ok=True)
    f["ok"] = d / "ok"
    (copy("missing-weights") / "model.safetensors").unlink()
    (copy("missing-config") / "config.json").unlink()
    shutil.rmtree(copy("missing-vae") / "vae")
    m = copy("missing-tokenizer")
    (m / "tokenizer.json").unlink()
    (m / "tokenizer_config.json").unlink()
    m = copy("truncated-weights")
    data = (m / "model.safetensors").read_bytes()
    (m / "model.safetensors").write_bytes(data[: len(data) // 2])
    m = copy("truncated-vae")
    vae_file = m / "vae" / "diffusion_pytorch_model.safetensors"
    data = vae_file.read_bytes()
    vae_file.write_bytes(data[: len(data) // 3])
    m = copy("empty-weights")
    (m / "model.safetensors").write_bytes(b"")
    m = copy("config-not-json")
    (m / "config.json").write_text('{"showo2": {"spec": ')
    m = copy("config-is-a-list")
    (m / "config.json").write_text("[1, 2, 3]\n")
    cfg = json.loads((tiny / "config.json").read_text())

    def with_spec(name: str, **changes) -> None:
        c = json.loads(json.dumps(cfg))
        c["showo2"]["spec"].update(changes)
        (copy(name) / "config.json").write_text(json.dumps(c))

    with_spec("config-wrong-types", hidden_size="sixty-four", num_layers=2.5)
    with_spec("config-string-layers", num_layers="2")
    with_spec("config-float-size", hidden_size=64.0, resolution="64")
    with_spec("config-negative", num_layers=-3, image_latent_grid=0)
    with_spec("config-huge", hidden_size=2**40, num_heads=2**36, head_dim=16)
    with_spec("config-unknown-field", flux_capacitor=True)
    with_spec("config-null-tasks", tasks=None)
    c = json.loads(json.dumps(cfg))
    c["showo2"] = "yes"
    (copy("config-bad-section") / "config.json").write_text(json.dumps(c))
    state = load_file(str(tiny / "model.safetensors"))
    key = "fusion_proj.3.weight" if "fusion_proj.3.weight" in state else sorted(state)[-1]

    def with_state(name: str, new: dict) -> None:
        m = copy(name)
        (m / "model.safetensors").unlink()
        save_file(new, str(m / "model.safetensors"))

    with_state("missing-key", {k: v for k, v in state.items() if k != key})
    with_state("extra-key", {**state, "surplus.weight": torch.zeros(3)})
    with_state("wrong-shape", {**state, key: torch.zeros(3, 3)})
    with_state("wrong-dtype", {**state, key: state[key].to(torch.int32)})
    other = next(k for k in sorted(state) if k != key and k.endswith(".bias"))
    with_state("bad-keys", {**{k: v for k, v in state.items() if k != other}, key: torch.zeros(3, 3),
                            "surplus.weight": torch.zeros(3)})
    m = copy("pickle-payload")
    (m / "model.safetensors").unlink()
    torch.save({**{k: v for k, v in list(state.items())[:3]}, "showo.model.norm.weight": PicklePayload(marker)},
               m / "pytorch_model.bin")
    m = copy("pickle-payload-vae")
    vdir = m / "vae"
    (vdir / "diffusion_pytorch_model.safetensors").unlink()
    torch.save({"encoder.conv_in.weight": PicklePayload(marker)}, vdir / "diffusion_pytorch_model.bin")
    m = copy("weights-is-a-folder")
    (m / "model.safetensors").unlink()
    (m / "model.safetensors").mkdir()
    return f


def build_train(d: Path) -> dict[str, Path]:
    d.mkdir(parents=True, exist_ok=True)
    files = {
        "empty.toml": "",
        "not-toml.toml": "this = is [not toml\n",
        "wrong-types.toml": 'mode = "showo2"\n[optim]\nlr = "fast"\nmax_steps = -4\n',
        "unknown-mode.toml": 'mode = "teleport"\n',
    }
    out = {}
    for name, text in files.items():
        (d / name).write_text(text)
        out[name] = d / name
    (d / "binary.toml").write_bytes(bytes(range(256)) * 4)
    out["binary.toml"] = d / "binary.toml"
    (d / "a-folder.toml").mkdir(exist_ok=True)
    out["a-folder.toml"] = d / "a-folder.toml"
    (d / "prompts-empty.txt").write_text("\n  \n\n")
    (d / "prompts-binary.txt").write_bytes(b"\xff\xfe\x00\x81" * 100)
    (d / "prompts-long.txt").write_text("ok prompt\n" + "x" * 100_000 + "\n")
    for name in ("prompts-empty.txt", "prompts-binary.txt", "prompts-long.txt"):
        out[name] = d / name
    return out


_BUILT: dict[str, tuple[Path, Path, dict[str, dict[str, Path]]]] = {}


def corpus_for(tmp_path_factory, tiny: Path, media_dir: Path | None):
    """``(root, pickle marker, {"media"|"latents"|"models"|"train"|"valid": {name: path}})``,
    built once per test session (the test modules share it)."""
    key = str(tmp_path_factory.getbasetemp())
    if key not in _BUILT:
        root = tmp_path_factory.mktemp("hostile")
        marker = root / MARKER_NAME
        files = {
            "media": build_media(root / "media", media_dir),
            "latents": build_latents(root / "latents", marker),
            "models": build_models(root / "models", tiny, marker),
            "train": build_train(root / "train"),
            "valid": build_valid_media(root / "valid"),
        }
        _BUILT[key] = (root, marker, files)
    return _BUILT[key]


# ---- cases ------------------------------------------------------------------------------------

@dataclass
class Case:
    name: str
    args: list[str]
    code: int
    needles: tuple[str, ...] = ()
    what: str = ""
    json: bool = True
    env: dict[str, str] = field(default_factory=dict)
    existing: dict[str, bytes] = field(default_factory=dict)  # files put in the case folder first
    timeout: float = 300.0  # a hang detector: 90 s was reached by sound runs on a loaded 2-core machine


@dataclass
class Result:
    case: Case
    code: int
    stdout: str
    stderr: str
    seconds: float
    folder: Path
    before: dict
    after: dict


#: latents files run through ``decode`` as subprocesses (all of them load in-process too)
SUBPROCESS_LATENTS = ("wrong-rank", "int32", "meta-wrong-types", "truncated", "empty", "a-folder")
#: broken model folders run through ``info`` as subprocesses (all of them load in-process too)
SUBPROCESS_MODELS = (("truncated-weights", "truncated"), ("config-wrong-types", "hidden_size"),
                     ("bad-keys", "1 missing key"), ("pickle-payload", "refusing"))
#: what each broken model folder must be refused for, by ``loading.load``
MODEL_NEEDLES = {
    "missing-weights": "weights", "missing-config": "config.json", "missing-vae": "VAE",
    "missing-tokenizer": "tokenizer", "truncated-weights": "truncated", "truncated-vae": "truncated",
    "empty-weights": "model.safetensors", "config-not-json": "config.json", "config-is-a-list": "config.json",
    "config-wrong-types": "hidden_size", "config-string-layers": "num_layers", "config-float-size": "hidden_size",
    "config-negative": "num_layers", "config-huge": "hidden_size", "config-unknown-field": "flux_capacitor",
    "config-null-tasks": "tasks", "config-bad-section": "showo2", "missing-key": "missing key",
    "extra-key": "surplus.weight", "wrong-shape": "wrong shape", "wrong-dtype": "not floating point",
    "bad-keys": "1 unexpected key",
    "pickle-payload": "refusing", "pickle-payload-vae": "refusing", "weights-is-a-folder": "model.safetensors",
}


def hostile_cases(corpus: dict[str, dict[str, Path]], tiny: Path) -> list[Case]:
    media, lat, models, train = corpus["media"], corpus["latents"], corpus["models"], corpus["train"]
    m = ["-m", str(tiny)]
    cases: list[Case] = []

    def add(name, args, code, *needles, what="", json_mode=True, **kw):
        cases.append(Case(name, [str(a) for a in args], code, tuple(needles), what or name, json_mode, **kw))

    # -- bad media, through each command that reads media ------------------------------------
    bad_media = [
        ("empty.png", "empty file"), ("empty.mp4", "empty file"), ("empty.webp", "empty file"),
        ("truncated.png", "truncated"), ("truncated.jpg", "truncated"), ("truncated.webp", "truncated.webp"),
        ("truncated.gif", "truncated"), ("truncated.mp4", "truncated"), ("truncated.webm", "truncated"),
        ("corrupt.png", "corrupt"), ("corrupt.jpg", "corrupt"), ("corrupt.webp", "corrupt"),
        ("corrupt.gif", "corrupt"), ("corrupt.mp4", "corrupt"), ("corrupt.webm", "corrupt"),
        ("random.mp4", "not an image or video"), ("text.png", "not an image or video"),
        ("audio-only.mp4", "no video stream"), ("zero-frames.mp4", "no video stream"),
        ("a-folder.png", "directory"), ("real-truncated.mp4", "truncated"), ("real-truncated.jpg", "truncated"),
        ("png-header-only.png", "not an image or video"), ("png-iccp-2gb.png", "not an image or video"),
        ("mp4-stts-1e9.mp4", "lists 1000000000 frames"),
    ]
    for name, needle in bad_media:
        if name not in media:
            continue
        src = media[name]
        add(f"encode/{name}", ["encode", src, "-o", "out.safetensors", *m], 3, name, needle)
    for name in ("empty.png", "truncated.mp4", "corrupt.jpg", "text.png", "audio-only.mp4", "a-folder.png",
                 "truncated.gif", "corrupt.webm"):
        add(f"caption/{name}", ["caption", media[name], *m, "--max-new-tokens", "2"], 3, name)
    for name in ("empty.png", "truncated.png", "corrupt.webp", "text.png", "a-folder.png", "ok.mp4"):
        add(f"i2v/{name}", ["i2v", media[name], "a prompt", "-o", "out.mp4", *m, "--steps", "2", "--frames", "5"],
            3, name)
    add("i2v/video-named.png", ["i2v", media["video-named.png"], "p", "-o", "out.mp4", *m], 3,
        "video-named.png", "it is a video", what="a video named .png given as the first frame")
    add("encode/missing-file", ["encode", "no-such-file.png", "-o", "o.safetensors", *m], 3,
        "no-such-file.png", "no such file")
    add("encode/bomb-20000.png", ["encode", media["bomb-20000.png"], "-o", "o.safetensors", *m], 6,
        "bomb-20000.png", "too large", what="PNG header claiming 20000x20000")
    add("encode/gif-screen-65535.gif", ["encode", media["gif-screen-65535.gif"], "-o", "o.safetensors", *m], 6,
        "gif-screen-65535.gif", "too large", what="GIF whose logical screen is 65535x65535")
    add("caption/bomb-20000.png", ["caption", media["bomb-20000.png"], *m], 6, "bomb-20000.png", "too large")
    add("i2v/bomb-20000.png", ["i2v", media["bomb-20000.png"], "p", *m], 6, "bomb-20000.png", "too large")
    add("encode/max-pixels-env", ["encode", media["ok.png"], "-o", "o.safetensors", *m], 6, "ok.png", "3,072",
        env={"SHOWO2_MAX_PIXELS": "1000"}, what="SHOWO2_MAX_PIXELS=1000 and a 64x48 image")
    add("encode/max-pixels-env-bad", ["encode", media["ok.png"], "-o", "o.safetensors", *m], 2, "SHOWO2_MAX_PIXELS",
        env={"SHOWO2_MAX_PIXELS": "lots"})

    # -- outputs -------------------------------------------------------------------------------
    for cmd, src, ext in (("encode", media["ok.png"], ".safetensors"), ("decode", lat["ok.safetensors"], ".png")):
        add(f"{cmd}/output-missing-folder", [cmd, src, "-o", f"no/such/folder/out{ext}", *m], 5, f"out{ext}",
            "does not exist")
        ro = READ_ONLY_TARGETS[0].replace(".png", ext)
        add(f"{cmd}/output-read-only-fs", [cmd, src, "-o", ro, *m], 5, ro)
        add(f"{cmd}/output-exists", [cmd, src, "-o", f"out{ext}", *m], 5, f"out{ext}", "--overwrite",
            existing={f"out{ext}": b"precious"})
        add(f"{cmd}/output-is-a-folder", [cmd, src, "-o", f"adir{ext}", *m], 5, f"adir{ext}", "directory",
            existing={f"adir{ext}/keep": b"x"})
    add("encode/output-wrong-extension", ["encode", media["ok.png"], "-o", "out.png", *m], 2, "out.png")
    add("encode/output-name-too-long", ["encode", media["ok.png"], "-o", "n" * 300 + ".safetensors", *m], 5,
        "too long")
    add("t2i/output-read-only-fs", ["t2i", "a cat", "-o", READ_ONLY_TARGETS[1], *m, "--steps", "2"], 5,
        READ_ONLY_TARGETS[1])
    add("t2i/output-missing-folder", ["t2i", "a cat", "-o", "missing/cat.png", *m], 5, "missing/cat.png",
        "does not exist")
    add("t2i/output-exists", ["t2i", "a cat", "-o", "cat.png", *m], 5, "cat.png", existing={"cat.png": b"mine"})
    add("t2i/sidecar-exists", ["t2i", "a cat", "-o", "cat.png", *m], 5, "cat.json", existing={"cat.json": b"{}"})
    add("t2i/output-folder-named-png", ["t2i", "a cat", "-o", "d.png", *m], 5, "d.png", "directory",
        existing={"d.png/keep": b"x"})
    add("t2i/output-tiff", ["t2i", "a cat", "-o", "cat.tiff", *m], 2, "unsupported output extension")
    add("t2v/output-exists", ["t2v", "a cat", "-o", "v.mp4", *m], 5, "v.mp4", existing={"v.mp4": b"mine"})
    add("t2v/output-png", ["t2v", "a cat", "-o", "v.png", *m], 2, "unsupported output extension")
    add("t2v/output-read-only-fs", ["t2v", "x", "-o", "/proc/showo2-hostile.mp4", *m, "--steps", "2"], 5,
        "/proc/showo2-hostile.mp4")
    add("i2v/output-missing-folder", ["i2v", media["ok.png"], "p", "-o", "no/v.gif", *m], 5, "no/v.gif",
        "does not exist")
    add("init/output-exists", ["init", "-o", "m", "--spec", "tiny"], 5, "'m'", existing={"m/config.json": b"{}"})
    add("init/output-read-only-fs", ["init", "-o", "/proc/showo2-hostile-model", "--spec", "tiny"], 5,
        "/proc/showo2-hostile-model")
    add("init/output-missing-folder", ["init", "-o", "no/such/m", "--spec", "tiny"], 5, "no/such/m", "does not exist")
    add("init/unknown-spec", ["init", "-o", "m", "--spec", "13B"], 2, "13B")
    add("init/vae-dim-zero", ["init", "-o", "m", "--vae-dim", "0"], 2, "--vae-dim")
    add("init/bad-dtype", ["init", "-o", "m", "--dtype", "fp8"], 2, "fp8")
    add("convert/output-exists", ["convert", models["ok"], "-o", "c"], 5, "'c'", existing={"c/x": b"x"})
    add("convert/output-read-only-fs", ["convert", models["ok"], "-o", "/proc/showo2-hostile-conv"], 5,
        "/proc/showo2-hostile-conv")
    add("convert/bad-dtype", ["convert", models["ok"], "-o", "c", "--dtype", "fp7"], 2, "fp7")

    # -- absurd option values ------------------------------------------------------------------
    t2i = ["t2i", "a cat", "-o", "cat.png", *m]
    for name, extra, code, needle in [
        ("steps-negative", ["--steps", "-1"], 2, "--steps"),
        ("steps-zero", ["--steps", "0"], 2, "--steps"),
        ("steps-huge", ["--steps", "1000000000"], 2, "--steps"),
        ("steps-not-a-number", ["--steps", "many"], 2, "--steps"),
        ("guidance-nan", ["--guidance", "nan"], 2, "--guidance"),
        ("guidance-inf", ["--guidance", "inf"], 2, "--guidance"),
        ("guidance-negative", ["--guidance", "-3"], 2, "--guidance"),
        ("shift-zero", ["--shift", "0"], 2, "--shift"),
        ("size-not-multiple-of-16", ["--size", "100"], 2, "multiples of 16"),
        ("size-zero", ["--size", "0"], 2, "--size"),
        ("size-negative", ["--size", "-32"], 2, "--size"),
        ("size-garbage", ["--size", "big"], 2, "--size"),
        ("size-three-sides", ["--size", "16x16x16"], 2, "--size"),
        ("size-enormous", ["--size", "1000000"], 2, "--size"),
        ("size-too-big-for-memory", ["--size", "4096", "--max-memory", "1"], 6, "needs about"),
        ("num-images-zero", ["-n", "0"], 2, "--num-images"),
        ("num-images-huge", ["-n", "1000000000"], 2, "--num-images"),
        ("batch-size-zero", ["--batch-size", "0"], 2, "--batch-size"),
        ("seed-negative", ["--seed", "-1"], 2, "--seed"),
        ("seed-huge", ["--seed", str(2**70)], 2, "--seed"),
        ("sampler-unknown", ["--sampler", "rk4"], 2, "--sampler"),
        ("device-unknown", ["--device", "tpu"], 2, "--device"),
        ("dtype-unknown", ["--dtype", "fp8"], 2, "fp8"),
        ("max-memory-negative", ["--max-memory", "-1"], 2, "--max-memory"),
        ("unknown-option", ["--frobnicate"], 2, "--frobnicate"),
    ]:
        add(f"t2i/{name}", [*t2i, *extra], code, needle)
    add("t2i/empty-prompt", ["t2i", "", "-o", "cat.png", *m], 2, "empty prompt")
    add("t2i/blank-prompt", ["t2i", "   \t ", "-o", "cat.png", *m], 2, "empty prompt")
    add("t2i/prompt-100k", ["t2i", "x" * 100_000, "-o", "cat.png", *m], 2, "100000 characters", "10000")
    add("t2i/no-prompt", ["t2i", "-o", "cat.png", *m], 2, "PROMPT")
    add("t2i/prompts-file-missing", ["t2i", "--prompts-file", "nope.txt", *m], 3, "nope.txt")
    add("t2i/prompts-file-folder", ["t2i", "--prompts-file", ".", *m], 3, "directory")
    add("t2i/prompts-file-empty", ["t2i", "--prompts-file", train["prompts-empty.txt"], *m], 3, "prompts-empty.txt")
    add("t2i/prompts-file-binary", ["t2i", "--prompts-file", train["prompts-binary.txt"], *m], 3,
        "prompts-binary.txt", "UTF-8")
    add("t2i/prompts-file-long-line", ["t2i", "--prompts-file", train["prompts-long.txt"], *m], 3,
        "prompts-long.txt", "line 2")
    add("t2i/noise-missing", [*t2i, "--noise", "nope.safetensors"], 3, "nope.safetensors")
    add("t2i/noise-garbage", [*t2i, "--noise", lat["text.safetensors"]], 3, "text.safetensors")
    t2v = ["t2v", "a cat", "-o", "v.mp4", *m]
    for name, extra, code, needle in [
        ("frames-zero", ["--frames", "0"], 2, "--frames"),
        ("frames-negative", ["--frames", "-5"], 2, "--frames"),
        ("frames-huge", ["--frames", "1000000000"], 2, "--frames"),
        ("fps-zero", ["--fps", "0"], 2, "--fps"),
        ("fps-nan", ["--fps", "nan"], 2, "--fps"),
        ("fps-huge", ["--fps", "1e30"], 2, "--fps"),
        ("too-big-for-memory", ["--frames", "257", "--size", "2048", "--max-memory", "2"], 6, "needs about"),
    ]:
        add(f"t2v/{name}", [*t2v, *extra], code, needle)
    add("t2v/empty-prompt", ["t2v", "", "-o", "v.mp4", *m], 2, "empty prompt")
    cap = ["caption", media["ok.png"], *m]
    for name, extra, code, needle in [
        ("max-new-tokens-huge", ["--max-new-tokens", "1000000000"], 2, "--max-new-tokens"),
        ("max-new-tokens-zero", ["--max-new-tokens", "0"], 2, "--max-new-tokens"),
        ("temperature-nan", ["--temperature", "nan"], 2, "--temperature"),
        ("temperature-negative", ["--temperature", "-1"], 2, "--temperature"),
        ("top-p-above-one", ["--temperature", "1", "--top-p", "2"], 2, "--top-p"),
        ("top-k-negative", ["--temperature", "1", "--top-k", "-1"], 2, "--top-k"),  # 0 is no top-k (probe GK)
        ("frames-zero", ["--frames", "0"], 2, "--frames"),
        ("frames-huge", ["--frames", "1000000000"], 2, "--frames"),
        ("mask-unknown", ["--mask", "sideways"], 2, "--mask"),
        ("empty-question", ["-q", ""], 2, "empty question"),
        ("question-100k", ["-q", "y" * 100_000], 2, "100000 characters"),
    ]:
        add(f"caption/{name}", [*cap, *extra], code, needle)
    enc = ["encode", media["ok.png"], "-o", "o.safetensors", *m]
    for name, extra, code, needle in [
        ("size-not-multiple-of-16", ["--size", "100"], 2, "multiples of 16"),
        ("size-zero", ["--size", "0"], 2, "--size"),
        ("frames-zero", ["--frames", "0"], 2, "--frames"),
        ("frames-negative", ["--frames", "-1"], 2, "--frames"),
        ("frames-huge", ["--frames", "1000000000"], 2, "--frames"),
        ("seed-negative", ["--sample", "--seed", "-4"], 2, "--seed"),
    ]:
        add(f"encode/{name}", [*enc, *extra], code, needle)
    add("decode/fps-zero", ["decode", lat["ok.safetensors"], "-o", "o.png", *m, "--fps", "0"], 2, "--fps")
    add("decode/fps-nan", ["decode", lat["ok.safetensors"], "-o", "o.png", *m, "--fps", "nan"], 2, "--fps")
    add("decode/output-txt", ["decode", lat["ok.safetensors"], "-o", "o.txt", *m], 2, "o.txt", "extension")
    add("train/max-steps-zero", ["train", train["empty.toml"], "--max-steps", "0"], 2, "--max-steps")
    add("train/set-no-equals", ["train", train["empty.toml"], "--set", "optim.lr"], 2, "--set")
    add("models/unknown-option", ["models", "--frobnicate"], 2, "--frobnicate")
    add("models/extra-argument", ["models", "extra"], 2, "extra")
    add("unknown-command", ["teleport"], 2, "teleport")

    # -- latents files -------------------------------------------------------------------------
    for name in SUBPROCESS_LATENTS:
        ext = ".mp4" if name == "meta-nan-fps" else ".png"
        add(f"decode/{name}", ["decode", lat[f"{name}.safetensors"], "-o", f"out{ext}", *m], 3, f"{name}.safetensors")
    add("decode/missing", ["decode", "nope.safetensors", "-o", "o.png", *m], 3, "nope.safetensors")
    # a data file never chooses which files the program opens: the VAE named in the metadata is not
    # used (the model given has none, so the run stops there, and the payload never runs)
    add("decode/meta-evil-vae", ["decode", lat["meta-evil-vae.safetensors"], "-o", "out.png", "-m",
                                 models["missing-vae"]], 4, "VAE",
        what="latents whose metadata names a VAE .pth carrying a pickle payload")
    # (with --vae-tiling auto, the default, the same job decodes in tiles within the budget: test_accel.py)
    add("decode/too-big-to-decode", ["decode", lat["big-decode.safetensors"], "-o", "out.png", *m, "--max-memory",
                                     "1", "--vae-tiling", "off"], 6, "needs about",
        what="(16, 1, 256, 256) latents: a 2048x2048 picture, untiled")

    # -- model folders (every broken folder is also loaded in-process, see test_hostile_loading.py) ------
    for name, needle in SUBPROCESS_MODELS:
        extra = ("1 unexpected key", "surplus.weight", "1 wrong shape") if name == "bad-keys" else ()
        add(f"info/model-{name}", ["info", models[name]], 4, name, needle, *extra)
    for name, needle in (("pickle-payload", "refusing"), ("missing-vae", "VAE")):
        add(f"t2i/model-{name}", ["t2i", "a cat", "-o", "cat.png", "-m", models[name], "--steps", "2"], 4, name,
            needle)
    add("caption/model-missing-tokenizer", ["caption", media["ok.png"], "-m", models["missing-tokenizer"]], 4,
        "missing-tokenizer", "tokenizer")
    add("convert/model-pickle-payload", ["convert", models["pickle-payload"], "-o", "c"], 4, "pickle-payload",
        "refusing")
    add("encode/vae-pickle-payload", ["encode", media["ok.png"], "-o", "o.safetensors", "--vae",
                                      lat["evil-vae.pth"]], 4, "evil-vae.pth", "refusing")
    add("decode/vae-pickle-payload", ["decode", lat["ok.safetensors"], "-o", "o.png", "--vae", lat["evil-vae.pth"]],
        4, "evil-vae.pth", "refusing")
    add("info/missing", ["info", "no-such-model"], 4, "no-such-model")

    # -- training configs ----------------------------------------------------------------------
    for name, code, needle in [("empty.toml", 2, "model"), ("not-toml.toml", 2, "TOML"), ("wrong-types.toml", 2, "lr"),
                               ("unknown-mode.toml", 2, "teleport"), ("binary.toml", 2, "decode"),
                               ("a-folder.toml", 2, "folder")]:
        add(f"train/{name}", ["train", train[name], "-o", "run"], code, name, needle)
    add("train/missing-config", ["train", "nope.toml", "-o", "run"], 2, "nope.toml")
    tiny_cfg = str(Path(__file__).resolve().parents[2] / "examples" / "train_tiny.toml")
    add("train/output-read-only-fs", ["train", tiny_cfg, "-o", "/proc/showo2-hostile-run", "--max-steps", "2"], 5,
        "/proc/showo2-hostile-run")
    add("train/output-is-a-file", ["train", tiny_cfg, "-o", "afile", "--max-steps", "2"], 5, "afile",
        existing={"afile": b"keep me"})

    # -- the same failures without --json: stdout must stay empty -----------------------------
    for base in ("encode/truncated.mp4", "t2i/steps-negative", "decode/output-exists", "info/model-pickle-payload",
                 "t2i/output-read-only-fs", "caption/empty-question", "train/not-toml.toml", "unknown-command"):
        c = next(c for c in cases if c.name == base)
        cases.append(Case(base + " (plain)", list(c.args), c.code, c.needles, c.what, False, dict(c.env),
                          dict(c.existing)))
    return cases


# ---- running and checking ---------------------------------------------------------------------

def snapshot(root: Path) -> dict[str, tuple]:
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_symlink():
            out[rel] = ("link", os.readlink(p))
        elif p.is_dir():
            out[rel] = ("dir",)
        else:
            st = p.stat()
            digest = hashlib.sha1(p.read_bytes()).hexdigest() if st.st_size < 4 << 20 else ""
            out[rel] = ("file", st.st_size, st.st_mtime_ns, digest)
    return out


def base_env(hf_cache: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOWO2_")}
    env.update(HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(hf_cache), HF_HOME=str(hf_cache), PYTHONIOENCODING="utf-8",
               OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", COLUMNS="200")
    return env


def _prepared(case: Case, work: Path) -> tuple[Path, dict, list[str]]:
    """The case's folder under ``work`` with its ``existing`` files written, a snapshot of it, and
    the command line (``--json`` added where the case asks): what both runners start from."""
    folder = work / case.name.replace("/", "__").replace(" ", "_")
    folder.mkdir(parents=True, exist_ok=True)
    for rel, data in case.existing.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
    args = [*case.args, "--json"] if case.json and case.args and case.args[0] not in ("teleport",) else list(case.args)
    return folder, snapshot(folder), args


def run_case(case: Case, work: Path, env: dict[str, str]) -> Result:
    import time

    folder, before, args = _prepared(case, work)
    start = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, "-m", "showo2_cli.cli", *args], cwd=folder,
                              env={**env, **case.env}, capture_output=True, text=True, encoding="utf-8",
                              errors="replace", timeout=case.timeout)
        code, stdout, stderr = proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as e:
        code, stdout, stderr = -999, str(e.stdout or ""), f"(killed after {case.timeout:.0f} s) {e.stderr or ''}"
    seconds = time.perf_counter() - start
    return Result(case, code, stdout, stderr, seconds, folder, before, snapshot(folder))


@contextmanager
def _fds_captured():
    """What native code writes to file descriptors 1 and 2 while the block runs (libav's and
    torch's C++ logs bypass ``sys.stdout``/``sys.stderr``): ``[stdout, stderr]``, filled on exit."""
    got = ["", ""]
    with tempfile.TemporaryFile() as out_f, tempfile.TemporaryFile() as err_f:
        sys.stdout.flush()
        sys.stderr.flush()
        saved = os.dup(1), os.dup(2)
        os.dup2(out_f.fileno(), 1)
        os.dup2(err_f.fileno(), 2)
        try:
            yield got
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
            for i, f in enumerate((out_f, err_f)):
                f.seek(0)
                got[i] = f.read().decode("utf-8", "replace")


def run_case_in_process(case: Case, work: Path, hf_cache: Path) -> Result:
    """:func:`run_case`, through the CLI's entry point in this process (what ``showo2`` runs after
    its imports): the case folder as the working directory, the environment of :func:`base_env`
    plus the case's, huggingface_hub's import-time constants to match, and stdout/stderr caught at
    both the Python and the file-descriptor level. One case at a time (the working directory and
    the environment belong to the process)."""
    import time

    import huggingface_hub.constants as C
    import pytest

    from showo2_cli.cli import main

    folder, before, args = _prepared(case, work)
    env = {**base_env(hf_cache), **case.env}
    out, err = io.StringIO(), io.StringIO()
    start = time.perf_counter()
    with pytest.MonkeyPatch.context() as mp:
        for k in set(os.environ) - set(env):
            mp.delenv(k)
        for k, v in env.items():
            mp.setenv(k, v)
        mp.setattr(C, "HF_HUB_OFFLINE", True)
        mp.setattr(C, "HF_HUB_CACHE", str(hf_cache))
        mp.chdir(folder)
        with _fds_captured() as native, redirect_stdout(out), redirect_stderr(err):
            code = main(args)  # an exception escaping here fails the test: a traceback in a subprocess
    seconds = time.perf_counter() - start
    return Result(case, code, out.getvalue() + native[0], err.getvalue() + native[1], seconds, folder, before,
                  snapshot(folder))


def check_case(r: Result) -> list[str]:
    """What the failing run did wrong (empty when it behaved)."""
    c, problems = r.case, []
    if r.code != c.code:
        problems.append(f"exit code {r.code}, expected {c.code}")
    lines = r.stderr.splitlines()
    if len(lines) != 1:
        problems.append(f"{len(lines)} stderr lines, expected 1")
    if "Traceback" in r.stderr:
        problems.append("a traceback on stderr")
    line = lines[-1] if lines else ""
    if not line.startswith("showo2: error: "):
        problems.append("the stderr line does not start with 'showo2: error: '")
    for needle in c.needles:
        if needle not in line:
            problems.append(f"'{needle}' not in the message")
    if c.json and c.args[0] != "teleport":
        try:
            obj = json.loads(r.stdout)
            err = obj["error"]
            if len(r.stdout.strip().splitlines()) != 1 or set(obj) != {"error"}:
                problems.append("stdout holds more than the JSON error object")
            if err["exit_code"] != r.code or f"showo2: error: {err['message']}" != line or not err["kind"]:
                problems.append(f"the JSON error object disagrees with the exit code/stderr: {err}")
        except (ValueError, KeyError, TypeError):
            problems.append(f"stdout is not a JSON error object: {r.stdout[:200]!r}")
    elif r.stdout:
        problems.append(f"stdout is not empty: {r.stdout[:200]!r}")
    if r.before != r.after:
        added = sorted(set(r.after) - set(r.before))
        changed = sorted(k for k in r.before if r.after.get(k) != r.before[k])
        problems.append(f"the case folder changed: added {added}, changed/removed {changed}")
    return problems


def corpus_table(results: list[Result], root: Path, tiny: Path | None = None) -> str:
    """Markdown: case, command (corpus paths relative, the tiny model as TINY), exit code, stderr."""
    def short(text: str) -> str:
        if tiny is not None:
            text = text.replace(str(tiny), "TINY")
        return text.replace(str(root) + "/", "")

    rows = ["| case | command | exit | stderr |", "|---|---|---|---|"]
    for r in results:
        args = [short(a) for a in r.case.args]
        cmd = " ".join(a if len(a) <= 80 else f"{a[:8]}…({len(a)} chars)" for a in args)
        line = short((r.stderr.splitlines() or [""])[-1])
        line = line if len(line) <= 400 else line[:397] + "..."
        rows.append(f"| {r.case.name} | `{cmd.replace('|', '/')}` | {r.code} | {line.replace('|', '/')} |")
    return "\n".join(rows) + "\n"
