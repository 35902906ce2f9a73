"""Mutation fuzzing of every reader: real files the project reads, mutated by a seeded mutator and
driven through the public entry points in-process; each outcome classified.

    python benchmarks/fuzz_readers.py --reader image --count 2000 --seed 1
    python benchmarks/fuzz_readers.py --reader all --count 200 --save /tmp/fuzz-defects

A mutant's outcome is *clean* when the reader returns a result or raises the project's own error
(:class:`~showo2_cli.errors.Showo2Error`, one line; the server: a 4xx answer with an OpenAI error
object) and a *defect* otherwise: any other exception (its type is the outcome), a message over
several lines, a hang past ``--timeout`` seconds, a peak memory growth past ``--memory-mb``, or a
5xx answer. The mutant ``i`` of seed ``s`` is a pure function of ``(s, i)``: a defect found at
``--seed 7`` mutant 123 is ``mutate(seed_bytes, random.Random(f"7:123"))`` again.

Readers: image (PNG, JPEG, WebP, BMP, TIFF, GIF, and a photo with its EXIF, written by Pillow from
the shared photos), video (mp4, animated GIF), latents (``.safetensors`` as ``showo2 encode``
writes them, ``.pt``, ``.npy``), prompts (``.txt``, ``.jsonl``, ``.json``), transcript (a chat's
``/save``), metadata (a training folder's ``metadata.jsonl``), lora (a peft adapter folder), model
(the demo model's folder: configs, tokenizer, weights), server (request bodies of the chat, images
and Responses endpoints, data URLs, against a real uvicorn on 127.0.0.1); probe FN's in
``fuzz_more_readers.py``; probe IH's (train-run, latent-cache, schema, chat-load) in
``fuzz_newest_readers.py``.
"""

from __future__ import annotations

import argparse
import base64
import collections
import contextlib
import io
import json
import os
import random
import re
import resource
import shutil
import signal
import struct
import sys
import tempfile
import traceback
from pathlib import Path

MEDIA = Path(os.environ.get("SHOWO2_MEDIA_DIR") or Path(__file__).resolve().parents[2] / "shared" / "media")
sys.path.insert(0, str(Path(__file__).resolve().parent))
import fuzz_more_readers as more  # noqa: E402 (probe FN's readers: config, options, tokenizer, VAE, shards, cache, JPEG)
import fuzz_newest_readers as newest  # noqa: E402 (probe IH's: run folders, latent cache, schema files, /load)

READERS = (("image", "video", "latents", "prompts", "transcript", "metadata", "lora", "model", "server")
           + more.READERS + newest.READERS)


# ---------------------------------------------------------------- the mutator


def _hot_offsets(data: bytes) -> list[int]:
    """Offsets of length/size fields of the formats seeded (PNG chunks, JPEG segments, RIFF chunks,
    safetensors' header length, GIF/BMP/TIFF header sizes, MP4 boxes): where a grown or shrunk
    length does the most harm."""
    hot: list[int] = []
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        i = 8
        while i + 8 <= len(data) and len(hot) < 64:
            hot.append(i)
            i += 12 + struct.unpack(">I", data[i:i + 4])[0]
        hot += [16, 20]  # width, height
    elif data[:2] == b"\xff\xd8":
        i = 2
        while i + 4 <= len(data) and len(hot) < 64 and data[i] == 0xFF:
            hot.append(i + 2)
            if data[i + 1] in (0xC0, 0xC1, 0xC2):
                hot += [i + 5, i + 7]  # height, width
            if data[i + 1] == 0xDA:
                break
            i += 2 + struct.unpack(">H", data[i + 2:i + 4])[0]
    elif data[:4] == b"RIFF":
        hot += [4]
        i = 12
        while i + 8 <= len(data) and len(hot) < 32:
            hot.append(i + 4)
            i += 8 + struct.unpack("<I", data[i + 4:i + 8])[0] + 1 & ~1
    elif data[:3] == b"GIF":
        hot += [6, 8]
    elif data[:2] == b"BM":
        hot += [2, 10, 14, 18, 22, 28, 34]
    elif data[:2] in (b"II", b"MM"):
        hot += [4]
    elif len(data) > 8 and data[4:8] in (b"ftyp", b"styp"):
        i = 0
        while i + 8 <= len(data) and len(hot) < 32:
            hot.append(i)
            size = struct.unpack(">I", data[i:i + 4])[0]
            if size < 8:
                break
            i += size
    if len(data) > 8 and struct.unpack("<Q", data[:8])[0] < len(data):  # a safetensors header length
        hot.append(0)
    return [h for h in hot if h < len(data)]


def mutate_bytes(data: bytes, rng: random.Random) -> bytes:
    """One to three byte-level mutations: bit flips, bytes set to 0x00/0xFF/0x7F/0x80, chunks
    deleted, duplicated or inserted, a truncation, a length field grown or shrunk."""
    b = bytearray(data)
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        if not b:
            b += bytes(rng.randrange(256) for _ in range(rng.randrange(1, 16)))
            continue
        op = rng.randrange(8)
        n = len(b)
        if op == 0:  # bit flips
            for _ in range(rng.randrange(1, 9)):
                i = rng.randrange(n)
                b[i] ^= 1 << rng.randrange(8)
        elif op == 1:  # interesting bytes
            for _ in range(rng.randrange(1, 5)):
                b[rng.randrange(n)] = rng.choice((0x00, 0xFF, 0x7F, 0x80))
        elif op == 2:  # chunk deletion
            i = rng.randrange(n)
            del b[i:i + rng.randrange(1, max(2, min(n - i, 4096)) + 1)]
        elif op == 3:  # chunk duplication
            i = rng.randrange(n)
            chunk = b[i:i + rng.randrange(1, 4097)]
            j = rng.randrange(len(b) + 1)
            b[j:j] = chunk * rng.choice((1, 1, 2, 8))
        elif op == 4:  # insertion of random or interesting bytes
            j = rng.randrange(n + 1)
            b[j:j] = rng.choice((bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64))),
                                 b"\x00" * rng.randrange(1, 256), b"\xff" * rng.randrange(1, 256)))
        elif op == 5:  # truncation
            del b[rng.randrange(n):]
        else:  # a length field grown or shrunk (a hot one when the format is known)
            hot = _hot_offsets(bytes(b))
            i = rng.choice(hot) if hot and rng.random() < 0.8 else rng.randrange(n)
            width, fmt = rng.choice(((4, ">I"), (4, "<I"), (2, ">H"), (2, "<H"), (8, "<Q")))
            if i + width > n:
                continue
            (v,) = struct.unpack(fmt, bytes(b[i:i + width]))
            top = (1 << (8 * width)) - 1
            v = rng.choice((0, 1, top, top >> 1, v + 1, max(v - 1, 0), v * 2, v // 2, v << 8, v * 1000,
                            rng.randrange(top + 1))) & top
            b[i:i + width] = struct.pack(fmt, v)
    return bytes(b)


_HUGE = (10 ** 400, 1e308, -1e308, 2 ** 63, 2 ** 64, -(2 ** 63) - 1, -1, 0, 1.5, 1e-320,
         float("nan"), float("inf"), 10 ** 20)
_TEXTS = ("", " ", "\x00", "\ud800", "\u202e\u0661", "é" * 5000, "a" * 100_000, "../../etc/passwd",
          "/dev/zero", "<image>", "data:image/png;base64,", "null", "\n\n", "\ufeff", "💥" * 1000)


def _random_value(rng: random.Random, depth: int = 0):
    kind = rng.randrange(8)
    if kind == 0:
        return rng.choice(_HUGE)
    if kind == 1:
        return rng.choice(_TEXTS)
    if kind == 2:
        return None
    if kind == 3:
        return rng.choice((True, False))
    if kind == 4 and depth < 3:
        return [_random_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    if kind == 5 and depth < 3:
        return {rng.choice(_TEXTS[:6] + ("a", "type", "path")): _random_value(rng, depth + 1)
                for _ in range(rng.randrange(3))}
    if kind == 6:  # deep nesting, spliced in as text by _dumps (json.dumps would recurse)
        return f"\x00deep:{rng.choice((100, 1000, 5000, 100_000))}:{rng.choice('[{')}\x00"
    return rng.randrange(-(2 ** 40), 2 ** 40)


def _nodes(value, path=()):
    yield path, value
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _nodes(v, path + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _nodes(v, path + (i,))


def mutate_json_value(value, rng: random.Random):
    """A copy of ``value`` with one to three structural mutations: a node's type swapped, a huge
    number, deep nesting, odd unicode, a key deleted or added, a list emptied or grown."""
    value = json.loads(json.dumps(value))
    for _ in range(rng.choice((1, 1, 2, 3))):
        nodes = list(_nodes(value))
        path, node = rng.choice(nodes)
        op = rng.randrange(5)
        if op == 0 and isinstance(node, dict) and node:  # delete a key
            node.pop(rng.choice(list(node)))
            continue
        if op == 1 and isinstance(node, dict):  # add a key
            node[rng.choice(("extra", "a" * 300, "\ud800", "__proto__", "type"))] = _random_value(rng)
            continue
        if op == 2 and isinstance(node, list):
            if node and rng.random() < 0.5:
                node.clear()
            else:
                node.extend([node[0] if node else _random_value(rng)] * rng.choice((2, 100, 10_000)))
            continue
        new = _random_value(rng)
        if op == 3 and isinstance(node, str):  # unicode into a string
            j = rng.randrange(len(node) + 1)
            new = node[:j] + rng.choice(_TEXTS) + node[j:]
        value = set_at(value, path, new)
    return value


def set_at(value, path: tuple, new):
    """``value`` with the node at ``path`` (keys and indexes) replaced by ``new`` (in place where it
    can be; a node inside a tuple stays as it was)."""
    if not path:
        return new
    parent = value
    for k in path[:-1]:
        parent = parent[k]
    if not isinstance(parent, tuple):
        parent[path[-1]] = new
    return value


def _dumps(value, rng: random.Random) -> bytes:
    text = json.dumps(value, ensure_ascii=rng.random() < 0.5, allow_nan=True)

    def deep(m):
        n, kind = int(m.group(1)), m.group(2)
        return '{"a":' * n + "0" + "}" * n if kind == "{" else "[" * n + "0" + "]" * n

    text = re.sub(r'"(?:\\u0000|\x00)deep:(\d+):([\[{])(?:\\u0000|\x00)"', deep, text)
    return text.encode("utf-8", "surrogatepass")


def mutate(data: bytes, kind: str, rng: random.Random) -> bytes:
    """A mutant of a seed file: ``kind`` is ``bytes``, ``json`` (a JSON document) or ``jsonl``
    (JSON lines); the structured ones are mutated as bytes a fifth of the time."""
    if kind in more.KINDS:
        return more.KINDS[kind](data, kind, rng)
    if kind in newest.KINDS:
        return newest.KINDS[kind](data, kind, rng)
    if kind == "bytes" or rng.random() < 0.2:
        return mutate_bytes(data, rng)
    if kind == "jsonl":
        lines = data.decode("utf-8").splitlines()
        if not lines:
            return mutate_bytes(data, rng)
        i = rng.randrange(len(lines))
        try:
            lines[i] = _dumps(mutate_json_value(json.loads(lines[i]), rng), rng).decode("utf-8", "surrogatepass")
        except ValueError:
            return mutate_bytes(data, rng)
        return "\n".join(lines).encode("utf-8", "surrogatepass") + b"\n"
    try:
        value = json.loads(data)
    except ValueError:
        return mutate_bytes(data, rng)
    return _dumps(mutate_json_value(value, rng), rng)


# ---------------------------------------------------------------- seeds: real files the project reads


def _photo(size: int):
    from PIL import Image

    photos = sorted(MEDIA.glob("*.jpg"))
    if photos:
        with Image.open(photos[0]) as im:
            im = im.convert("RGB")
            im.thumbnail((size, size))
            return im
    import numpy as np

    y, x = np.mgrid[0:size * 3 // 4, 0:size]
    return Image.fromarray(np.stack([x % 256, y % 256, (x + y) % 256], -1).astype("uint8"))


class Seed:
    """One file to mutate: ``root`` a folder copied for each mutant (or None: the file alone),
    ``rel`` the file within it, ``kind`` how it is mutated."""

    def __init__(self, label: str, path: Path, kind: str = "bytes", root: Path | None = None):
        self.label, self.path, self.kind, self.root = label, Path(path), kind, root


def seeds_image(work: Path) -> list[Seed]:
    from PIL import Image

    im = _photo(96)
    out = []
    for fmt, ext, kw in (("PNG", "png", {}), ("JPEG", "jpg", {"quality": 80}),
                         ("JPEG", "progressive.jpg", {"progressive": True}), ("WEBP", "webp", {}),
                         ("BMP", "bmp", {}), ("TIFF", "tif", {"compression": "tiff_lzw"}), ("GIF", "gif", {}),
                         ("PNG", "rgba.png", {})):
        p = work / f"still.{ext}"
        src = im.convert("RGBA") if ext == "rgba.png" else im
        src.save(p, fmt, **kw)
        out.append(Seed(ext, p))
    exif = Image.Exif()
    exif[0x0112] = 6  # a portrait phone photo
    p = work / "exif.jpg"
    im.save(p, "JPEG", exif=exif.tobytes())
    out.append(Seed("exif.jpg", p))
    from showo2_cli.media import write_image

    for ext in ("png", "jpg", "webp"):  # outputs with their parameters, as `showo2 t2i` writes them
        p = write_image(work / f"meta.{ext}", im, {"prompt": "a red circle", "seed": 1, "steps": 2})
        out.append(Seed(f"meta.{ext}", Path(p)))
    return out


def seeds_video(work: Path) -> list[Seed]:
    import av
    import numpy as np
    from PIL import Image

    frames = []
    mp4 = MEDIA / "video1.mp4"
    if mp4.is_file():
        with av.open(str(mp4)) as c:
            for i, f in enumerate(c.decode(video=0)):
                im = f.to_image()
                im.thumbnail((64, 64))
                frames.append(np.asarray(im.crop((0, 0, 64 // 2 * 2, im.height // 2 * 2))))
                if i == 7:
                    break
    else:
        frames = [np.full((36, 64, 3), 20 * i, np.uint8) for i in range(8)]
    p = work / "clip.mp4"
    with av.open(str(p), "w") as c:
        s = c.add_stream("libx264", rate=8)
        s.width, s.height, s.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        for a in frames:
            c.mux(s.encode(av.VideoFrame.from_ndarray(a, format="rgb24")))
        c.mux(s.encode())
    g = work / "clip.gif"
    ims = [Image.fromarray(a) for a in frames]
    ims[0].save(g, save_all=True, append_images=ims[1:], duration=100, loop=0)
    return [Seed("mp4", p), Seed("gif", g)]


_MODEL = None


def demo_model():
    global _MODEL
    if _MODEL is None:
        from showo2_cli import api

        _MODEL = api.load("demo")
    return _MODEL


def seeds_latents(work: Path) -> list[Seed]:
    import numpy as np
    import torch

    from showo2_cli import api

    model = demo_model()
    res = api.encode(_photo(64), model.vae, api.EncodeOptions(size=(64, 64)))
    p = api.save_latents(work / "latents.safetensors", res.latents, res.metadata)
    torch.save({"latents": res.latents}, work / "latents.pt")
    np.save(work / "latents.npy", res.latents.numpy())
    return [Seed("safetensors", p), Seed("pt", work / "latents.pt"), Seed("npy", work / "latents.npy")]


def seeds_prompts(work: Path) -> list[Seed]:
    (work / "p.txt").write_text("a red circle\na cat on a mat, photo\n\nsunset over the sea\n", encoding="utf-8")
    (work / "p.jsonl").write_text("\n".join(json.dumps(r) for r in (
        {"prompt": "a red circle"}, {"prompt": "two cats", "tag": "counting", "include": [{"class": "cat", "count": 2}]},
        {"text": "a blue square"})) + "\n", encoding="utf-8")
    (work / "p.json").write_text(json.dumps(["a red circle", {"prompt": "a dog"}, {"caption": "a tree"}]),
                                 encoding="utf-8")
    return [Seed("txt", work / "p.txt"), Seed("jsonl", work / "p.jsonl", "jsonl"),
            Seed("json", work / "p.json", "json")]


def seeds_transcript(work: Path) -> list[Seed]:
    from showo2_cli.chat import Conversation
    from showo2_cli.options import TextSampling

    root = work / "chat"
    root.mkdir()
    _photo(48).save(root / "photo.png")
    conv = Conversation(demo_model())
    conv.attach(str(root / "photo.png"))
    conv.ask("what is this?", TextSampling(max_new_tokens=3))
    conv.ask("and now?", TextSampling(max_new_tokens=3))
    conv.save(root / "chat.json")
    return [Seed("chat.json", root / "chat.json", "json", root=root)]


def seeds_metadata(work: Path) -> list[Seed]:
    root = work / "train"
    root.mkdir()
    im = _photo(32)
    rows = []
    for i in range(3):
        im.save(root / f"{i}.png")
        rows.append({"file_name": f"{i}.png", "text": f"photo number {i}"})
    (root / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return [Seed("metadata.jsonl", root / "metadata.jsonl", "jsonl", root=root)]


def seeds_lora(work: Path) -> list[Seed]:
    import torch

    from showo2_cli.loading import load
    from showo2_cli.lora import add_lora, save_adapter

    network = load("demo", need=()).network
    config = add_lora(network, 2, 4.0, 0.0, ("q_proj", "v_proj"), ("showo.model.layers",))
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in network.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    root = Path(save_adapter(work / "adapter", network, config))
    return [Seed("adapter_config.json", root / "adapter_config.json", "json", root=root),
            Seed("adapter_model.safetensors", root / "adapter_model.safetensors", root=root)]


def seeds_model(work: Path) -> list[Seed]:
    import showo2_cli

    demo = Path(showo2_cli.__file__).parent / "assets" / "demo"
    root = work / "model"
    shutil.copytree(demo, root)
    return [Seed(rel, root / rel, "json" if rel.endswith(".json") else "bytes", root=root)
            for rel in ("config.json", "tokenizer.json", "tokenizer_config.json", "model.safetensors",
                        "vae/config.json", "vae/diffusion_pytorch_model.safetensors")]


def _png_data_url(size: int = 32) -> str:
    buf = io.BytesIO()
    _photo(size).save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def seeds_server(work: Path) -> list[Seed]:
    chat = {"model": "demo", "max_tokens": 2, "temperature": 0, "messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "what is this?"},
                                     {"type": "image_url", "image_url": {"url": _png_data_url()}}]}]}
    images = {"model": "demo", "prompt": "a red circle", "n": 1, "size": "64x64", "response_format": "b64_json",
              "steps": 2, "seed": 1}
    # the Responses API (probe HK): every kind of input item, a schema, the fields it takes and echoes
    responses = {"model": "demo", "max_output_tokens": 2, "temperature": 0, "instructions": "be brief",
                 "truncation": "auto", "store": False, "metadata": {"k": "v"}, "include": [], "tool_choice": "none",
                 "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}}],
                 "text": {"verbosity": "low", "format": {"type": "json_schema", "name": "c", "strict": True, "schema": {
                     "type": "object", "properties": {"c": {"enum": ["red", "blue"]}}, "required": ["c"],
                     "additionalProperties": False}}},
                 "input": [{"role": "developer", "content": "answer in JSON"},
                           {"role": "user", "content": [{"type": "input_text", "text": "what is this?"},
                                                        {"type": "input_image", "image_url": _png_data_url(),
                                                         "detail": "auto"}]},
                           {"type": "message", "role": "assistant", "status": "completed", "id": "msg_1",
                            "content": [{"type": "output_text", "text": "{\"c\": \"red\"}", "annotations": []}]},
                           {"role": "user", "content": "and now?"}]}
    (work / "chat.json").write_text(json.dumps(chat))
    (work / "images.json").write_text(json.dumps(images))
    (work / "responses.json").write_text(json.dumps(responses))
    (work / "png").write_bytes(base64.b64decode(_png_data_url().split(",", 1)[1]))
    (work / "video").mkdir()
    mp4 = seeds_video(work / "video")[0].path
    return [Seed("/v1/chat/completions", work / "chat.json", "json"),
            Seed("/v1/images/generations", work / "images.json", "json"),
            Seed("/v1/responses", work / "responses.json", "json"),
            Seed("data-url", work / "png"), Seed("data-url-video", mp4)]


SEEDS = ({name: globals()[f"seeds_{name}"] for name in READERS if name not in more.READERS + newest.READERS}
         | more.SEEDS | newest.SEEDS)


# ---------------------------------------------------------------- driving a mutant through the reader


def drive(reader: str, seed: Seed, target: Path, root: Path | None, server=None):
    """Run the reader's public entry point on the mutant at ``target`` (within its folder copy)."""
    if reader == "image":
        from showo2_cli.media import read_media, read_metadata

        read_metadata(target)
        read_media(target, num_frames=4)
    elif reader == "video":
        from showo2_cli.media import read_media, read_metadata

        read_metadata(target)
        read_media(target, num_frames=4)
    elif reader == "latents":
        from showo2_cli.pipelines.latents import load_latents  # api.load_latents

        load_latents(target)
    elif reader == "prompts":
        from showo2_cli.saving import read_prompts  # api.read_prompts, without importing the pipelines

        read_prompts(prompts_file=target)
    elif reader == "transcript":
        from showo2_cli.chat import Conversation

        Conversation(demo_model()).load(target)
    elif reader == "metadata":
        from showo2_cli.training.records import Records, build_index
        from showo2_cli.training.schema import DataSource

        with tempfile.TemporaryDirectory() as index:
            records = Records(*build_index(DataSource(kind="pairs", path=str(target.parent)), Path(index)))
            for i in range(len(records)):
                records[i]
    elif reader == "lora":
        from showo2_cli import api

        api.load("demo", need=(), lora=str(target.parent))
    elif reader == "model":
        from showo2_cli import api

        api.load(str(root))
    elif reader == "server":
        return server(seed, target)
    elif reader in newest.READERS:
        newest.drive(reader, seed, target, root)
    else:
        more.drive(reader, seed, target, root)
    return None


def _place(s: Seed, data: bytes, case: Path) -> tuple[Path, Path | None]:
    """The mutant ``data`` of seed ``s`` written in ``case`` (a copy of its folder, hard links but
    for the mutant): (the mutant's path, the folder, or None for a file alone)."""
    if s.label.startswith("link:"):
        return case, more.place(s, data, case)
    if getattr(s, "placer", None) is not None:  # (a run folder: copied, not linked)
        return s.placer(s, data, case)
    if s.root is not None:
        shutil.copytree(s.root, case, symlinks=True, copy_function=os.link)
        target = case / s.path.relative_to(s.root)
        target.unlink()
    else:
        case.mkdir()
        target = case / s.path.name
    target.write_bytes(data)
    return target, case if s.root is not None else None


class Hang(BaseException):
    pass


def _alarm(signum, frame):
    raise Hang()


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def classify(exc: BaseException | None) -> str:
    from showo2_cli.errors import Showo2Error

    if exc is None:
        return "ok"
    if isinstance(exc, Showo2Error):
        text = str(exc)
        if "\n" in text.strip() or not text.strip():
            return "defect:message-not-one-line"
        return f"error:{exc.kind}"
    return f"defect:{type(exc).__name__}"


class ServerClient:
    """The server on a real uvicorn on 127.0.0.1 (a thread of this process), posted to by httpx."""

    def __init__(self):
        import threading

        import httpx

        from showo2_cli.serve import ServerConfig, bind_socket
        from showo2_cli.serve.app import server_for

        self.sock = bind_socket("127.0.0.1", 0)
        self.srv = server_for(demo_model(), ServerConfig(model_id="demo"), self.sock, log_level="critical")
        self.thread = threading.Thread(target=self.srv.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        host, port = self.sock.getsockname()[:2]
        self.http = httpx.Client(base_url=f"http://{host}:{port}", timeout=60)
        for _ in range(600):
            with contextlib.suppress(httpx.HTTPError):
                if self.http.get("/v1/models").status_code == 200:
                    break
            import time

            time.sleep(0.05)

    def __call__(self, seed: Seed, target: Path):
        body = target.read_bytes()
        path = seed.label
        if path.startswith("data-url"):  # a mutated picture or video in a data URL
            path, mime = "/v1/chat/completions", "video/mp4" if path.endswith("video") else "image/png"
            url = f"data:{mime};base64," + base64.b64encode(body).decode()
            body = json.dumps({"model": "demo", "max_tokens": 1, "messages": [{"role": "user", "content": [
                {"type": "text", "text": "?"}, {"type": "image_url", "image_url": {"url": url}}]}]}).encode()
        r = self.http.post(path, content=body, headers={"content-type": "application/json"})
        if r.status_code >= 500:
            return f"defect:http-{r.status_code}"
        if r.status_code >= 400:
            err = r.json().get("error") if r.headers.get("content-type", "").startswith("application/json") else None
            if not isinstance(err, dict) or not isinstance(err.get("message"), str) or "\n" in err["message"]:
                return f"defect:http-{r.status_code}-no-error-object"
            return f"error:http-{r.status_code}"
        return "ok"

    def close(self):
        self.srv.should_exit = True
        self.thread.join(30)
        self.sock.close()
        self.http.close()


def run(reader: str, count: int, seed: int, timeout: float = 20.0, memory_mb: float = 2048,
        save: Path | None = None, work: Path | None = None, log=None, start: int = 0,
        seeds=None, mutator=None, driver=None) -> collections.Counter:
    """Run ``count`` mutants of ``reader``'s seeds (round-robin) from mutant ``start``; return the
    outcome counts. ``seeds(work)``, ``mutator(data, kind, rng)`` and ``driver(reader, seed, target,
    root, server)`` replace this module's (``fuzz_structured.py``'s readers)."""
    seeds_of, mutate_one, drive_one = seeds or SEEDS[reader], mutator or mutate, driver or drive
    outcomes: collections.Counter = collections.Counter()
    own = work is None
    work = Path(tempfile.mkdtemp(prefix=f"fuzz-{reader}-")) if own else Path(work)
    server = None
    try:
        seeds_dir = work / "seeds"
        seeds_dir.mkdir(parents=True, exist_ok=True)
        seeds = seeds_of(seeds_dir)
        if reader == "server":
            server = ServerClient()
        for s in seeds:  # each seed as it is reads (and the imports are paid before any mutant is timed)
            case = work / "warm"
            shutil.rmtree(case, ignore_errors=True)
            target, root = _place(s, s.path.read_bytes(), case)
            try:
                warm = drive_one(reader, s, target, root, server)
            except Exception as e:  # noqa: BLE001
                warm = f"{type(e).__name__}: {e}"
            if warm not in (None, "ok") and not s.label.endswith((".pt", "pt", "npy")):
                raise RuntimeError(f"the {reader} seed {s.label} does not read as it is: {warm}")
        old = signal.signal(signal.SIGALRM, _alarm)
        for i in range(start, start + count):
            s = seeds[i % len(seeds)]
            rng = random.Random(f"{seed}:{i}")
            data = mutate_one(s.path.read_bytes(), s.kind, rng)
            case = work / f"case-{i % 2}"
            shutil.rmtree(case, ignore_errors=True)
            target, root = _place(s, data, case)
            before = _peak_mb()
            exc: BaseException | None = None
            result = None
            signal.setitimer(signal.ITIMER_REAL, timeout)
            try:
                result = drive_one(reader, s, target, root, server)
            except Hang as e:  # (its traceback says where it was stuck)
                exc = e
                result = "hang"
            except (Exception, RecursionError, MemoryError) as e:  # noqa: BLE001 (classified)
                exc = e
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
            if result == "hang":
                outcome = "defect:hang"
            else:
                outcome = result if isinstance(result, str) else classify(exc)
            if _peak_mb() - before > memory_mb:
                outcome = "defect:memory"
            leftover = [n for d, _, files in os.walk(case) for n in files  # (os.walk: a broken link is no error)
                        if n.startswith(".") and n != ".showo2-train.lock" and os.path.isfile(os.path.join(d, n))]
            if leftover:
                outcome = "defect:partial-file"
                exc = exc or RuntimeError(f"left {', '.join(sorted(leftover)[:3])}")
            outcomes[(s.label, outcome)] += 1
            if outcome.startswith("defect") and save is not None:
                save.mkdir(parents=True, exist_ok=True)
                keep = save / f"{reader}-{seed}-{i}-{s.label.strip('/').replace('/', '_')}"
                keep.write_bytes(data)
                keep.with_suffix(keep.suffix + ".txt").write_text(
                    f"{outcome}\n" + ("".join(traceback.format_exception(exc)) if exc else ""))
            if log is not None and outcome.startswith("defect"):
                print(f"{reader} seed={seed} i={i} {s.label}: {outcome}: {str(exc)[:200] if exc else ''}",
                      file=log, flush=True)
            if log is not None and (i + 1 - start) % 200 == 0:  # the counts so far (a long run stopped early)
                print(f"after {i + 1 - start} mutants:\n{table(reader, outcomes)}", file=log, flush=True)
        signal.signal(signal.SIGALRM, old)
    finally:
        if server is not None:
            server.close()
        if own:
            shutil.rmtree(work, ignore_errors=True)
    return outcomes


def table(reader: str, outcomes: collections.Counter) -> str:
    lines = [f"{'reader':10} {'seed file':28} {'outcome':36} {'count':>6}"]
    for (label, outcome), n in sorted(outcomes.items()):
        lines.append(f"{reader:10} {label:28} {outcome:36} {n:>6}")
    defects = sum(n for (_, o), n in outcomes.items() if o.startswith("defect"))
    lines.append(f"{reader:10} {'(all)':28} {'mutants / defects':36} {sum(outcomes.values()):>6} / {defects}")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reader", default="all", choices=READERS + ("all",))
    ap.add_argument("--count", type=int, default=200, help="mutants per reader")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--start", type=int, default=0, help="the first mutant's number (to run one again: --count 1)")
    ap.add_argument("--timeout", type=float, default=20.0, help="seconds before a mutant counts as a hang")
    ap.add_argument("--memory-mb", type=float, default=2048, help="peak memory growth that counts as a defect")
    ap.add_argument("--save", type=Path, help="folder to keep each defect's mutant and traceback in")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    defects = 0
    for reader in READERS if args.reader == "all" else (args.reader,):
        outcomes = run(reader, args.count, args.seed, args.timeout, args.memory_mb, args.save, log=sys.stderr,
                       start=args.start)
        print(table(reader, outcomes), flush=True)
        defects += sum(n for (_, o), n in outcomes.items() if o.startswith("defect"))
    return 1 if defects else 0


if __name__ == "__main__":
    sys.exit(main())
