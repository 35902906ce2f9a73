"""Hostile-input corpus, round JB: written blind from the README, ``--help`` and docs/cli.md.

    python benchmarks/hostile_corpus_jb.py [--only SUBSTRING,...] [--jobs N] [--skip cli,api,serve] [--keep]

Every case is generated into a fresh scratch folder (``tempfile.mkdtemp``), from the bundled demo
model and the real photos, clip and GIF in the shared media folder ($SHOWO2_MEDIA_DIR, found as
tests/conftest.py finds it). The bar:

* CLI: exit code as expected (non-zero for bad input, 0 for valid-but-odd input), an error is
  one line ``showo2: error: ...`` on stderr, never a traceback; no case over 60 s or 4 GB of RSS;
  an output that existed before an error is unchanged, none is left half-written.
* API (one child process, the demo loaded once): bad input raises the project's ``Showo2Error``.
* Server (one ``showo2 serve --port 0``): bad bodies get a 4xx JSON error, never a 5xx.

Prints PASS/FAIL per case and the counts; exit 1 when any case fails. Timings are not judged.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import io
import json
import os
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
TIMEOUT = 60.0
RSS_LIMIT_KB = 4 * 1024 * 1024


def shared_media() -> Path:
    """$SHOWO2_MEDIA_DIR, else ../shared/media next to the checkout or the working folder (as tests/conftest.py)."""
    if os.environ.get("SHOWO2_MEDIA_DIR"):
        return Path(os.environ["SHOWO2_MEDIA_DIR"])
    for base in (ROOT.parent, Path.cwd().parent):
        if (base / "shared" / "media").is_dir():
            return base / "shared" / "media"
    return ROOT.parent / "shared" / "media"


MEDIA = shared_media()
PHOTO = MEDIA / "pexels-taryn-elliott-4144459.jpg"
PHOTO2 = MEDIA / "pexels-talha-ahmed-26040377-7949588.jpg"
CLIP = MEDIA / "video1.mp4"
GIF = MEDIA / "waves.gif"


@dataclass
class Case:
    name: str
    argv: list[str]
    expect: str = "error"  # "error": non-zero, one clean line; "ok": exit 0
    code: int | None = None  # the exact exit code wanted, where the docs say it
    stdin: bytes | None = b""
    env: dict = field(default_factory=dict)
    keep: list[str] = field(default_factory=list)  # files that must be unchanged afterwards
    absent: list[str] = field(default_factory=list)  # files that must not exist afterwards
    not_in_err: str = ""  # a misleading phrase stderr must not hold


@dataclass
class Outcome:
    name: str
    ok: bool
    why: str
    seconds: float = 0.0


# ---------------------------------------------------------------- file makers

def png_bytes(width: int, height: int, depth: int = 8, colour: int = 2, data: bytes | None = None) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    if data is None:  # pixels only for a small image: a huge one is a header that lies
        small = width * height < 10_000_000
        data = zlib.compress((b"\x00" + b"\x80" * (width * 3)) * height if small else b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def safetensors_bytes(header: dict, data: bytes) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


def make_files(d: Path) -> dict[str, Path]:
    """The hostile and odd files the cases point at."""
    from PIL import Image  # noqa: PLC0415

    f: dict[str, Path] = {}

    def put(name: str, content: bytes) -> Path:
        p = d / name
        p.write_bytes(content)
        f[name] = p
        return p

    photo = PHOTO.read_bytes()
    clip = CLIP.read_bytes()
    put("empty.jpg", b"")
    put("trunc.jpg", photo[: len(photo) // 3])
    put("head.jpg", photo[:200])
    put("text.jpg", b"hello, I am not an image\n" * 10)
    put("trunc.mp4", clip[: len(clip) // 4])
    put("head.mp4", clip[:64])
    put("huge.png", png_bytes(100_000, 100_000))
    put("zero_w.png", png_bytes(0, 16))
    put("zero_h.png", png_bytes(16, 0))
    put("max_dims.png", png_bytes(2**31 - 1, 2**31 - 1))
    put("bad_idat.png", png_bytes(64, 64, data=b"not zlib data at all"))
    put("ppm_huge.ppm", b"P6\n100000 100000\n255\n" + b"\x00" * 100)
    put("bmp_huge.bmp", b"BM" + struct.pack("<IHHI", 54, 0, 0, 54) + struct.pack("<IiiHHIIiiII", 40, 60000, 60000, 1, 24, 0, 0, 0, 0, 0, 0))
    put("gif_huge.gif", b"GIF89a" + struct.pack("<HH", 65535, 65535) + b"\x00\x00\x00" + b",\x00\x00\x00\x00\xff\xff\xff\xff\x00\x02\x02D\x01\x00;")
    put("svg.png", b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"></svg>')
    put("html.jpg", b"<!DOCTYPE html><html><body>blob</body></html>")
    put("lfs.jpg", b"version https://git-lfs.github.com/spec/v1\noid sha256:" + b"0" * 64 + b"\nsize 12345\n")
    put("pdf.jpg", b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n")
    put("eps.jpg", b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n")
    put("random.bin", os.urandom(4096))
    put("nul.jpg", b"\x00" * 4096)
    def odd(name: str, *new_args) -> None:  # valid but odd
        Image.new(*new_args).save(d / name)
        f[name] = d / name

    odd("one.png", "RGB", (1, 1), (200, 10, 10))
    odd("strip.png", "RGB", (2000, 3), (10, 200, 10))
    odd("gray16.png", "I;16", (40, 40))
    odd("cmyk.jpg", "CMYK", (40, 40), (0, 100, 200, 0))
    odd("clear.png", "RGBA", (40, 40), (0, 0, 0, 0))
    odd("pal.gif", "P", (40, 40))
    put("photo_named.mp4", photo)  # an image under a video's name: judged by content
    put("clip_named.png", clip)
    put("unicode \u202e\u05d0 name \U0001f600.jpg", photo)
    put("new\nline.jpg", photo)
    put("-dash.jpg", photo)
    (d / "adir").mkdir()
    f["adir"] = d / "adir"
    os.mkfifo(d / "fifo.jpg")
    f["fifo.jpg"] = d / "fifo.jpg"
    (d / "dangling.jpg").symlink_to(d / "nowhere.jpg")
    f["dangling.jpg"] = d / "dangling.jpg"
    (d / "loop.jpg").symlink_to(d / "loop.jpg")
    f["loop.jpg"] = d / "loop.jpg"
    (d / "link.jpg").symlink_to(PHOTO)
    f["link.jpg"] = d / "link.jpg"
    # prompts files
    put("prompts_empty.txt", b"")
    put("prompts_blank.txt", b"\n\n   \n\t\n")
    put("prompts_binary.txt", b"\xff\xfe\x00\x81 bad utf8 \xc3\x28\n")
    put("prompts_long.txt", b"a" * 20000 + b"\n")
    put("prompts_bad.jsonl", b'{"prompt": "ok"}\n{not json\n')
    put("prompts_types.jsonl", b'{"prompt": 5}\n')
    put("prompts_obj.json", b'{"prompt": "a cat"}')
    put("prompts_nested.json", b"[" * 100000 + b"]" * 100000)
    put("prompts_nul.txt", b"a cat\x00 on a mat\n")
    put("prompts_many.txt", b"p\n" * 200000)
    put("prompts_crlf_bom.txt", b"\xef\xbb\xbfa red circle\r\n")
    put("prompts_null.json", b"[null]")
    put("prompts_wrongkey.jsonl", b'{"title": "no prompt field"}\n')
    # latents seeds are made by the runner from a real encode
    # schemas
    put("schema_bad.json", b"{not a schema")
    put("schema_type.json", b'{"type": "frobnicate"}')
    put("schema_deep.json", b'{"type":"object","properties":{"a":' * 3000 + b'{"type":"string"}' + b"}}" * 3000)
    put("schema_array.json", b"[1, 2, 3]")
    put("schema_empty.json", b"")
    put("schema_ref.json", b'{"$ref": "#/definitions/nope"}')
    put("schema_ok.json", b'{"type":"object","properties":{"color":{"type":"string"}},"required":["color"]}')
    # configs
    put("cfg_empty.toml", b"")
    put("cfg_bad.toml", b"mode = \n[[[")
    put("cfg_array.json", b"[1,2,3]")
    put("cfg_nan.toml", b'mode = "showo2"\nseed = 0\n[model]\ninit_spec = "tiny"\nvae_base_dim = 8\n[optim]\nlr = nan\n')
    put("cfg_negbatch.toml", b'mode = "showo2"\n[model]\ninit_spec = "tiny"\nvae_base_dim = 8\n[[data]]\nkind = "shapes"\nrole = "t2i"\nresolution = 64\n[batch]\nt2i = -4\n')
    put("cfg_hugeres.toml", b'mode = "showo2"\n[model]\ninit_spec = "tiny"\nvae_base_dim = 8\n[[data]]\nkind = "shapes"\nrole = "t2i"\nresolution = 99999999\n[batch]\nt2i = 1\n')
    put("cfg_types.toml", b'mode = 5\nseed = "x"\n')
    put("cfg_unknown.toml", b'mode = "showo2"\nfrobnicate = 1\n')
    put("cfg_bomb.yaml", b'a: &a ["x","x","x","x","x","x","x","x","x"]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\ng: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]\nh: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]\ni: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]\n')
    put("cfg_yaml_obj.yaml", b"!!python/object/apply:os.system ['echo pwned']\n")
    put("cfg.txt", b'mode = "showo2"\n')
    put("cfg_steps_inf.toml", b'mode = "showo2"\n[model]\ninit_spec = "tiny"\nvae_base_dim = 8\n[optim]\nmax_steps = inf\n')
    put("cfg_bigint.toml", b'mode = "showo2"\nseed = 9223372036854775807\n[model]\ninit_spec = "tiny"\nvae_base_dim = 8\n[optim]\nwarmup_steps = -1\n')
    # transcripts
    put("tr_empty.json", b"")
    put("tr_bad.json", b"{oops")
    put("tr_list.json", b"[1,2]")
    put("tr_deep.json", b"[" * 200000 + b"]" * 200000)
    put("tr_roles.json", json.dumps({"messages": [{"role": "wizard", "content": 5}]}).encode())
    put("tr_media.json", json.dumps({"messages": [{"role": "user", "content": "hi", "media": ["/dev/zero"]}]}).encode())
    # LoRA folders
    lora_empty = d / "lora_empty"
    lora_empty.mkdir()
    f["lora_empty"] = lora_empty
    lora_bad = d / "lora_bad"
    lora_bad.mkdir()
    (lora_bad / "adapter_config.json").write_text('{"r": 0, "lora_alpha": 1e308, "target_modules": 5}')
    (lora_bad / "adapter_model.safetensors").write_bytes(b"\x00" * 7)
    f["lora_bad"] = lora_bad
    lora_cfgonly = d / "lora_cfgonly"
    lora_cfgonly.mkdir()
    (lora_cfgonly / "adapter_config.json").write_text("{not json")
    (lora_cfgonly / "adapter_model.safetensors").write_bytes(safetensors_bytes({}, b""))
    f["lora_cfgonly"] = lora_cfgonly
    lora_pickle = d / "lora_pickle"
    lora_pickle.mkdir()
    (lora_pickle / "adapter_config.json").write_text('{"r": 4, "lora_alpha": 4, "target_modules": ["q_proj"], "peft_type": "LORA"}')
    (lora_pickle / "adapter_model.bin").write_bytes(b"\x80\x04cos\nsystem\nq\x00X\x04\x00\x00\x00echoq\x01\x85q\x02Rq\x03.")
    f["lora_pickle"] = lora_pickle
    lora_shape = d / "lora_shape"
    lora_shape.mkdir()
    (lora_shape / "adapter_config.json").write_text('{"r": 4, "lora_alpha": 4, "target_modules": ["q_proj"], "peft_type": "LORA"}')
    import numpy as np  # noqa: PLC0415
    a = np.zeros((4, 7), dtype=np.float32).tobytes()
    (lora_shape / "adapter_model.safetensors").write_bytes(safetensors_bytes(
        {"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": {"dtype": "F32", "shape": [4, 7], "data_offsets": [0, len(a)]}}, a))
    f["lora_shape"] = lora_shape
    return f


def make_latents(d: Path, seed: Path) -> dict[str, Path]:
    """Hostile latents files from a real one written by `showo2 encode`."""
    import numpy as np  # noqa: PLC0415
    raw = seed.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    body = raw[8 + n:]
    key = next(k for k in header if k != "__metadata__")
    meta = header.get("__metadata__", {})
    out: dict[str, Path] = {}

    def put(name: str, content: bytes) -> None:
        (d / name).write_bytes(content)
        out[name] = d / name

    def with_header(h: dict, data: bytes = body) -> bytes:
        return safetensors_bytes(h, data)

    put("lat_empty.safetensors", b"")
    put("lat_trunc.safetensors", raw[: len(raw) // 2])
    put("lat_hdrlen.safetensors", struct.pack("<Q", 2**63) + raw[8:])
    put("lat_hdrlen_big.safetensors", struct.pack("<Q", len(raw) * 4) + raw[8:])
    put("lat_hdrjson.safetensors", struct.pack("<Q", 10) + b"{notjson!!" + body)
    shape = header[key]["shape"]
    h = json.loads(json.dumps(header))
    h[key]["shape"] = [0] + shape[1:]
    h[key]["data_offsets"] = [0, 0]
    put("lat_zero.safetensors", with_header(h, b""))
    h = json.loads(json.dumps(header))
    h[key]["shape"] = [1, 16, 100000, 100000, 100000]
    put("lat_huge_shape.safetensors", with_header(h))
    h = json.loads(json.dumps(header))
    h[key]["dtype"] = "I64"
    put("lat_int.safetensors", with_header(h))
    arr = np.frombuffer(body, dtype=np.float32).copy() if header[key]["dtype"] == "F32" else None
    if arr is not None:
        nan = arr.copy()
        nan[:10] = np.nan
        put("lat_nan.safetensors", with_header(header, nan.tobytes()))
        big = arr.copy()
        big[:] = 1e30
        put("lat_big.safetensors", with_header(header, big.tobytes()))
    h = json.loads(json.dumps(header))
    h[key]["shape"] = [int(np.prod(shape))]
    put("lat_1d.safetensors", with_header(h))
    h = {k: v for k, v in header.items() if k != "__metadata__"}
    put("lat_nometa.safetensors", with_header(h))
    for field_name, value in (("fps", "nan"), ("fps", "1e308"), ("frames", "99999999999"), ("size", "[0, 0]")):
        h = json.loads(json.dumps(header))
        h.setdefault("__metadata__", {})[field_name] = value
        put(f"lat_meta_{field_name}_{len(out)}.safetensors", with_header(h))
    h = json.loads(json.dumps(header))
    h["__metadata__"] = {k: "x" * 10 for k in meta} | {"garbage": "\x00\u202e"}
    put("lat_meta_garbage.safetensors", with_header(h))
    h = json.loads(json.dumps(header))
    h["second"] = dict(h[key])
    put("lat_two.safetensors", with_header(h))
    put("lat_renamed.bin", raw)  # a real latents file under another name
    put("lat_pickle.pt", b"\x80\x04cos\nsystem\nq\x00X\x04\x00\x00\x00echoq\x01\x85q\x02Rq\x03.")
    buf = io.BytesIO()
    np.savez(buf, latents=np.zeros((1, 16, 1, 4, 4), dtype=np.float32))
    put("lat.npz", buf.getvalue())
    return out


# ---------------------------------------------------------------- the CLI cases

def cli_cases(d: Path, f: dict[str, Path], lat: dict[str, Path], real_lat: Path) -> list[Case]:
    P = str(PHOTO)
    o = lambda name: str(d / "out" / name)  # noqa: E731
    C: list[Case] = []
    add = C.append
    sh = ["-m", "showo2_cli"]

    def t2i(name, *args, **kw):
        add(Case(f"t2i/{name}", [*sh, "t2i", *args], **kw))

    # --- prompts
    t2i("prompt-empty", "", "-o", o("p0.png"), code=2)
    t2i("prompt-spaces", "   \t ", "-o", o("p1.png"), code=2)
    t2i("prompt-10001", "a" * 10001, "-o", o("p2.png"), code=2)
    t2i("prompt-stdin-empty", "-", "-o", o("p3.png"), stdin=b"")
    t2i("prompt-stdin-binary", "-", "-o", o("p4.png"), stdin=b"\xff\xfe\xc3\x28\n")
    t2i("prompt-stdin-nul", "-", "-o", o("p5.png"), stdin=b"\x00\x00\x00\n")
    t2i("prompt-control", "\x1b[31mred\x07\x08", "--steps", "2", "-o", o("p6.png"), expect="ok")
    t2i("prompt-rtl-emoji", "\u202e\u05e9\u05dc\u05d5\u05dd \U0001f408 \u200b", "--steps", "2", "-o", o("p7.png"), expect="ok")
    t2i("prompt-linesep", "a\u2028b\u2029c\x85d", "--steps", "2", "-o", o("p8.png"), expect="ok")
    # --- prompts files
    for name in ("prompts_empty.txt", "prompts_blank.txt", "prompts_binary.txt", "prompts_long.txt",
                 "prompts_bad.jsonl", "prompts_types.jsonl", "prompts_nested.json", "prompts_null.json",
                 "prompts_wrongkey.jsonl"):
        t2i(f"prompts-file-{name}", "--prompts-file", str(f[name]), "-o", o(f"{name}.png"))
    t2i("prompts-file-200000-outputs-unwritable", "--prompts-file", str(f["prompts_many.txt"]), "-o",
        str(d / "no" / "such" / "many.png"), code=5)  # every output planned and checked before the model loads
    t2i("prompts-file-obj-json", "--prompts-file", str(f["prompts_obj.json"]), "-o", o("pobj.png"))
    t2i("prompts-file-dir", "--prompts-file", str(f["adir"]), "-o", o("pdir.png"), code=3)
    t2i("prompts-file-fifo", "--prompts-file", str(f["fifo.jpg"]), "-o", o("pfifo.png"))
    t2i("prompts-file-devzero", "--prompts-file", "/dev/zero", "-o", o("pzero.png"))
    t2i("prompts-file-missing", "--prompts-file", str(d / "nope.txt"), "-o", o("pmiss.png"), code=3)
    t2i("prompts-file-and-prompt-ok", "a cat", "--prompts-file", str(f["prompts_crlf_bom.txt"]), "--steps", "2",
        "-o", o("pboth.png"), expect="ok")  # documented: the prompt and the file's prompts
    t2i("prompts-file-bom-crlf", "--prompts-file", str(f["prompts_crlf_bom.txt"]), "--steps", "2", "-o", o("pbom.png"), expect="ok")
    # --- numbers
    bad_numbers = {
        "--steps": ["0", "1", "10001", "-1", "nan", "2e3", "99999999999999999999"],
        "--guidance": ["nan", "inf", "-1", "1e308", "101"],
        "--shift": ["0", "-1", "nan", "inf"],
        "--seed": ["-1", str(2**63), str(2**64), "1.5"],
        "--size": ["0", "0x0", "7x7", "4097", "16x99999", "abc", "64x", "x64", "-64", "64x64x64", "1e3"],
        "-n": ["0", "-1", "1001"],
        "--batch-size": ["0", "1025"],
        "--max-memory": ["nan", "-1", "inf?"],
        "--sigmas": ["", "1,nan", "2,1", "1,,0.5", "abc", "0.5,0.9"],
        "--timesteps": ["1001,500", "a,b", "", "999,999"],
        "--device": ["cuda:99", "tpu", "", "cpu:-1"],
        "--dtype": ["int8"],
        "--sampler": ["ddim"],
        "--lora-weight": ["101", "nan"],
    }
    for opt, values in bad_numbers.items():
        for v in values:
            extra = ["--lora", str(f["lora_empty"])] if opt == "--lora-weight" else []
            t2i(f"opt{opt}={v!r}", "a cat", opt, v, *extra, "-o", o(f"n{len(C)}.png"))
    t2i("lora-weight-without-lora", "a cat", "--lora-weight", "0.5", "-o", o("lw.png"), code=2)
    t2i("timesteps-and-sigmas", "a cat", "--sigmas", "1,0.5", "--timesteps", "999,500", "-o", o("ts.png"), code=2)
    t2i("steps-2-odd-ok", "a cat", "--steps", "2", "--guidance", "0", "--seed", str(2**63 - 1), "-o", o("odd.png"), expect="ok")
    t2i("size-16-ok", "a cat", "--steps", "2", "--size", "16", "-o", o("s16.png"), expect="ok")
    t2i("size-tall-ok", "a cat", "--steps", "2", "--size", "16x128", "-o", o("s16x128.png"), expect="ok")
    t2i("quantize-nf4-cpu", "a cat", "--quantize", "nf4", "--steps", "2", "-o", o("nf4.png"), expect="any")
    # --- outputs
    existing = d / "out" / "existing.png"
    t2i("output-exists", "a cat", "--steps", "2", "-o", str(existing), code=5, keep=[str(existing)])
    t2i("output-is-dir", "a cat", "-o", str(f["adir"]), code=5)
    t2i("output-parent-missing", "a cat", "-o", str(d / "no" / "such" / "x.png"), code=5)
    t2i("output-ext-txt", "a cat", "-o", o("x.txt"))
    t2i("output-no-ext", "a cat", "-o", o("noext"))
    t2i("output-name-too-long", "a cat", "-o", o("a" * 300 + ".png"), code=5)
    t2i("output-devnull", "a cat", "--steps", "2", "-o", "/dev/null")
    t2i("output-devfull", "a cat", "--steps", "2", "-o", "/dev/full")
    t2i("output-fifo", "a cat", "-o", str(f["fifo.jpg"]))
    t2i("output-dangling-link", "a cat", "--steps", "2", "-o", str(d / "out" / "dangle.png"), keep=[])
    t2i("output-unicode-ok", "a cat", "--steps", "2", "-o", o("\u202e\u05d0 \U0001f600.png"), expect="ok")
    t2i("output-sidecar-exists", "a cat", "--steps", "2", "-o", o("side.png"), keep=[o("side.json")], absent=[o("side.png")])
    t2i("output-latents-sidecar-exists", "a cat", "--steps", "2", "--save-latents", "-o", o("sl.png"),
        keep=[o("sl.latents.safetensors")], absent=[o("sl.png")])
    # --- noise
    t2i("noise-missing", "a cat", "--noise", str(d / "none.safetensors"), "-o", o("nz0.png"), code=3)
    t2i("noise-empty", "a cat", "--noise", str(lat["lat_empty.safetensors"]), "-o", o("nz1.png"), code=3)
    t2i("noise-wrong-shape", "a cat", "--noise", str(real_lat), "--steps", "2", "-o", o("nz2.png"))
    t2i("noise-nan", "a cat", "--noise", str(lat.get("lat_nan.safetensors", real_lat)), "--steps", "2", "-o", o("nz3.png"))
    t2i("noise-hdrlen", "a cat", "--noise", str(lat["lat_hdrlen.safetensors"]), "-o", o("nz4.png"), code=3)
    t2i("noise-pickle", "a cat", "--noise", str(lat["lat_pickle.pt"]), "-o", o("nz5.png"))
    t2i("noise-dir", "a cat", "--noise", str(f["adir"]), "-o", o("nz6.png"), code=3)
    # --- models and VAEs
    t2i("model-missing-folder", "a cat", "-m", str(d / "nomodel"), "-o", o("m0.png"))
    t2i("model-empty-folder", "a cat", "-m", str(f["adir"]), "-o", o("m1.png"))
    t2i("model-is-file", "a cat", "-m", P, "-o", o("m2.png"))
    t2i("model-bad-repo-offline", "a cat", "-m", "nobody/nothing-here", "-o", o("m3.png"), env={"HF_HUB_OFFLINE": "1"})
    t2i("model-at-empty-rev", "a cat", "-m", "demo@", "-o", o("m4.png"))
    t2i("model-traversal-id", "a cat", "-m", "../../etc/passwd", "-o", o("m5.png"))
    t2i("model-nul-ish", "a cat", "-m", "de\u202emo", "-o", o("m6.png"))
    t2i("vae-garbage-file", "a cat", "--vae", str(f["random.bin"]), "-o", o("v0.png"))
    t2i("vae-empty-dir", "a cat", "--vae", str(f["adir"]), "-o", o("v1.png"))
    t2i("vae-latents-file", "a cat", "--vae", str(real_lat), "-o", o("v2.png"))
    for name in ("lora_empty", "lora_bad", "lora_cfgonly", "lora_pickle", "lora_shape"):
        t2i(f"lora-{name}", "a cat", "--lora", str(f[name]), "--steps", "2", "-o", o(f"{name}.png"))
    t2i("lora-file", "a cat", "--lora", P, "-o", o("lf.png"))
    # --- env vars
    for var, value in (("SHOWO2_MAX_PIXELS", "abc"), ("SHOWO2_MAX_PIXELS", "-1"), ("SHOWO2_MAX_PIXELS", "nan"),
                       ("SHOWO2_MAX_MEMORY_GB", "inf"), ("SHOWO2_MAX_MEMORY_GB", "-5"), ("SHOWO2_MAX_MEMORY_GB", "1e400"),
                       ("SHOWO2_MODEL", "/nonexistent/model"), ("SHOWO2_MODEL", ""), ("SHOWO2_VAE", "/nonexistent.pth"),
                       ("SHOWO2_HUB_STALL_SECONDS", "nan"), ("SHOWO2_RENDEZVOUS_SECONDS", "-3"),
                       ("WORLD_SIZE", "0"), ("WORLD_SIZE", "abc"), ("RANK", "5"), ("LOCAL_RANK", "-1"), ("MASTER_PORT", "99999")):
        env = {"WORLD_SIZE": "2", "RANK": "0", "MASTER_ADDR": "127.0.0.1"} if var in ("RANK", "MASTER_PORT") else {}
        env[var] = value
        # each variable is read where it is used: the pixel limit by media readers, the stall time by
        # downloads, the rendezvous time and LOCAL_RANK by a launch (WORLD_SIZE > 1), $SHOWO2_VAE by a
        # model without a VAE of its own; an empty $SHOWO2_MODEL is unset. Elsewhere: no traceback.
        unused = var in ("SHOWO2_MAX_PIXELS", "SHOWO2_HUB_STALL_SECONDS", "SHOWO2_RENDEZVOUS_SECONDS",
                         "LOCAL_RANK", "SHOWO2_VAE") or value == ""
        t2i(f"env-{var}={value!r}", "a cat", "--steps", "2", "-o", o(f"env{len(C)}.png"), env=env,
            expect="any" if unused else "error")
    for value in ("abc", "-1", "nan", "0"):
        add(Case(f"caption/env-SHOWO2_MAX_PIXELS={value!r}", [*sh, "caption", str(PHOTO), "--max-new-tokens", "2"],
                 env={"SHOWO2_MAX_PIXELS": value}, code=2))

    # --- caption: media
    def cap(name, *args, **kw):
        add(Case(f"caption/{name}", [*sh, "caption", *args], **kw))

    for name in ("empty.jpg", "trunc.jpg", "head.jpg", "text.jpg", "trunc.mp4", "head.mp4", "bad_idat.png",
                 "svg.png", "html.jpg", "lfs.jpg", "pdf.jpg", "eps.jpg", "random.bin", "nul.jpg"):
        cap(f"media-{name}", str(f[name]), "--max-new-tokens", "2", code=3)
    for name in ("huge.png", "max_dims.png", "ppm_huge.ppm", "bmp_huge.bmp", "gif_huge.gif"):
        cap(f"media-{name}", str(f[name]), "--max-new-tokens", "2")
    for name in ("zero_w.png", "zero_h.png"):
        cap(f"media-{name}", str(f[name]), "--max-new-tokens", "2", code=3)
    for name in ("adir", "fifo.jpg", "dangling.jpg", "loop.jpg"):
        cap(f"media-{name}", str(f[name]), "--max-new-tokens", "2", code=3)
    cap("media-devzero", "/dev/zero", "--max-new-tokens", "2", code=3)
    cap("media-devnull", "/dev/null", "--max-new-tokens", "2", code=3)
    cap("media-stdin-dash", "-", "--max-new-tokens", "2", stdin=PHOTO.read_bytes()[:100])
    for name in ("one.png", "strip.png", "gray16.png", "cmyk.jpg", "clear.png", "pal.gif", "photo_named.mp4",
                 "clip_named.png", "unicode \u202e\u05d0 name \U0001f600.jpg", "new\nline.jpg", "link.jpg"):
        cap(f"odd-ok-{name!r}", str(f[name]), "--max-new-tokens", "2", "--frames", "4", expect="ok")
    cap("odd-ok-gif", str(GIF), "--max-new-tokens", "2", "--frames", "4", expect="ok")
    cap("odd-ok-dash-name", "--max-new-tokens", "2", "--", str(f["-dash.jpg"]), expect="ok")
    cap("q-empty", P, "-q", "", code=2)
    cap("q-long", P, "-q", "b" * 10001, code=2)
    cap("q-control-ok", P, "-q", "what\x1b[2J is \u202eit?", "--max-new-tokens", "2", expect="ok")
    for opt, values in {"--max-new-tokens": ["0", "-1", str(2**63)], "--temperature": ["-1", "nan", "inf"],
                        "--top-p": ["0", "1.5", "nan"], "--top-k": ["-1"], "--min-p": ["2", "-0.1"],
                        "--repetition-penalty": ["0", "-1", "nan"], "--frames": ["0", "-1", str(2**63)],
                        "--format": ["xml"], "--mask": ["weird"]}.items():
        for v in values:
            cap(f"opt{opt}={v!r}", P, opt, v, "--max-new-tokens" if opt != "--max-new-tokens" else "--quiet",
                *(["2"] if opt != "--max-new-tokens" else []))
    for name in ("schema_bad.json", "schema_type.json", "schema_deep.json", "schema_array.json", "schema_empty.json",
                 "schema_ref.json"):
        cap(f"schema-{name}", P, "--json-schema", str(f[name]), "--max-new-tokens", "4")
    cap("schema-inline-bad", P, "--json-schema", "{", "--max-new-tokens", "4")
    cap("schema-and-format", P, "--json-schema", str(f["schema_ok.json"]), "--format", "json", "--max-new-tokens", "4")
    cap("schema-dir", P, "--json-schema", str(f["adir"]), "--max-new-tokens", "4")
    cap("schema-ok", P, "--json-schema", str(f["schema_ok.json"]), "--max-new-tokens", "24", expect="ok")
    cap("json-stdout-closed-ish", P, "--json", "--max-new-tokens", "2", expect="ok")

    # --- encode / decode
    def enc(name, *args, **kw):
        add(Case(f"encode/{name}", [*sh, "encode", *args], **kw))

    def dec(name, *args, **kw):
        add(Case(f"decode/{name}", [*sh, "decode", *args], **kw))

    enc("trunc-mp4", str(f["trunc.mp4"]), "-o", o("e0.safetensors"), code=3)
    enc("huge-png", str(f["huge.png"]), "-o", o("e1.safetensors"), code=6)
    enc("size-0", P, "--size", "0", "-o", o("e2.safetensors"), code=2)
    enc("size-unaligned", P, "--size", "17", "-o", o("e3.safetensors"), code=2)
    enc("frames-0", str(CLIP), "--frames", "0", "-o", o("e4.safetensors"), code=2)
    enc("frames-huge", str(CLIP), "--frames", "100000", "--size", "32", "-o", o("e5.safetensors"), expect="ok")
    enc("seed-neg", P, "--sample", "--seed", "-1", "-o", o("e6.safetensors"), code=2)
    enc("out-ext-png", P, "-o", o("e7.png"))
    enc("out-exists", P, "--size", "32", "-o", str(d / "out" / "existing.safetensors"), code=5,
        keep=[str(d / "out" / "existing.safetensors")])
    enc("default-out-taken-moves-on-ok", str(d / "out" / "enc_src.jpg"), "--size", "32", expect="ok",
        keep=[str(d / "out" / "enc_src.jpg.latents.safetensors")])  # documented: -1, -2, ... never replaced
    enc("gif-ok", str(GIF), "--size", "32", "-o", o("e8.safetensors"), expect="ok")
    enc("one-pixel-ok", str(f["one.png"]), "--size", "32", "-o", o("e9.safetensors"), expect="ok")
    # valid: no metadata (another tool's latents), metadata keys of its own beside showo2's (ignored), a
    # latents file under another name (judged by content)
    valid = ("lat_nometa.safetensors", "lat_renamed.bin") + tuple(n for n in lat if n.startswith("lat_meta_") and "garbage" not in n)
    for name, path in lat.items():
        dec(f"latents-{name}", str(path), "-o", o(f"d_{name}.png"), expect="ok" if name in valid else "error")
    dec("latents-own-fps-key-to-video-ok", str(next(p for n, p in lat.items() if n.startswith("lat_meta_fps"))),
        "-o", o("d_fps.mp4"), expect="ok")
    dec("latents-dir", str(f["adir"]), "-o", o("dd.png"), code=3)
    dec("latents-fifo", str(f["fifo.jpg"]), "-o", o("df.png"), code=3)
    dec("latents-devzero", "/dev/zero", "-o", o("dz.png"), code=3)
    dec("latents-image", P, "-o", o("di.png"), code=3)
    dec("fps-0", str(real_lat), "--fps", "0", "-o", o("dfps.png"), code=2)
    dec("fps-nan", str(real_lat), "--fps", "nan", "-o", o("dfps2.mp4"), code=2)
    dec("out-exists", str(real_lat), "-o", str(existing), code=5, keep=[str(existing)])
    dec("raw-of-normalised", str(real_lat), "--raw", "-o", o("raw.png"), code=2)  # its metadata says normalised
    dec("to-video-ok", str(real_lat), "-o", o("one.mp4"), expect="ok")

    # --- i2v / t2v
    add(Case("i2v/video-as-image", [*sh, "i2v", str(CLIP), "waves", "-o", o("i0.mp4")], code=3))
    add(Case("i2v/trunc", [*sh, "i2v", str(f["trunc.jpg"]), "waves", "-o", o("i1.mp4")], code=3))
    add(Case("i2v/out-png", [*sh, "i2v", P, "waves", "-o", o("i2.png")]))
    add(Case("t2v/frames-0", [*sh, "t2v", "waves", "--frames", "0", "-o", o("v0.mp4")], code=2))
    add(Case("t2v/frames-neg", [*sh, "t2v", "waves", "--frames", "-5", "-o", o("v1.mp4")], code=2))
    add(Case("t2v/frames-huge", [*sh, "t2v", "waves", "--frames", str(2**63), "-o", o("v2.mp4")], code=2))
    add(Case("t2v/fps-inf", [*sh, "t2v", "waves", "--fps", "inf", "-o", o("v3.mp4")], code=2))
    add(Case("t2v/fps-1e308", [*sh, "t2v", "waves", "--fps", "1e308", "-o", o("v4.mp4")], code=2))
    add(Case("t2v/out-jpg", [*sh, "t2v", "waves", "-o", o("v5.jpg")]))
    add(Case("t2v/frames-2-rounded-ok", [*sh, "t2v", "waves", "--frames", "2", "--steps", "2", "--size", "32", "-o", o("v6.gif")], expect="ok"))

    # --- models / info / pull / convert / init
    add(Case("info/missing", [*sh, "info", str(d / "nomodel")], code=4))
    add(Case("info/file", [*sh, "info", P]))
    add(Case("info/badcfg", [*sh, "info", str(d / "badcfg_model")], code=4))
    add(Case("info/hugecfg", [*sh, "info", str(d / "hugecfg_model")], code=4))
    add(Case("info/truncweights", [*sh, "info", str(d / "trunc_model")]))
    add(Case("t2i/model-truncweights", [*sh, "t2i", "a cat", "-m", str(d / "trunc_model"), "-o", o("tw.png")], code=4))
    add(Case("t2i/model-nancfg", [*sh, "t2i", "a cat", "-m", str(d / "badcfg_model"), "-o", o("bc.png")], code=4))
    add(Case("pull/bad-name-offline", [*sh, "pull", "no such model!!"], env={"HF_HUB_OFFLINE": "1"}))
    add(Case("pull/empty", [*sh, "pull", ""]))
    add(Case("convert/to-existing-file", [*sh, "convert", "demo", "-o", str(existing)], code=5, keep=[str(existing)]))
    add(Case("convert/dtype-int8", [*sh, "convert", "demo", "--dtype", "int8", "-o", str(d / "out" / "conv")], code=2))
    add(Case("convert/bad-src", [*sh, "convert", str(f["random.bin"]), "-o", str(d / "out" / "conv2")]))
    add(Case("init/spec-bogus", [*sh, "init", "--spec", "bogus", "-o", str(d / "out" / "init0")], code=2))
    add(Case("init/vae-dim-0", [*sh, "init", "--vae-dim", "0", "-o", str(d / "out" / "init1")], code=2))
    add(Case("init/dtype-int8", [*sh, "init", "--dtype", "int8", "-o", str(d / "out" / "init2")], code=2))
    add(Case("init/seed-neg", [*sh, "init", "--seed", "-1", "-o", str(d / "out" / "init3")]))
    add(Case("init/existing-file", [*sh, "init", "-o", str(existing)], code=5, keep=[str(existing)]))
    add(Case("init/7B-memory", [*sh, "init", "--spec", "7B", "--max-memory", "1", "-o", str(d / "out" / "init4")]))

    # --- train
    def tr(name, *args, **kw):
        add(Case(f"train/{name}", [*sh, "train", *args], **kw))

    for name in ("cfg_empty.toml", "cfg_bad.toml", "cfg_array.json", "cfg_nan.toml", "cfg_negbatch.toml",
                 "cfg_hugeres.toml", "cfg_types.toml", "cfg_unknown.toml", "cfg_bomb.yaml", "cfg_yaml_obj.yaml",
                 "cfg.txt", "cfg_steps_inf.toml", "cfg_bigint.toml"):
        tr(f"config-{name}", str(f[name]), "--check", "-o", str(d / "out" / f"run_{name}"), code=2)
    tr("config-dir", str(f["adir"]), "--check", code=2)
    tr("config-missing", str(d / "none.toml"), "--check")
    tr("set-garbage", str(ROOT / "examples" / "train_tiny.toml"), "--check", "--set", "no_equals_sign",
       "-o", str(d / "out" / "runA"), code=2)
    tr("set-nan-lr", str(ROOT / "examples" / "train_tiny.toml"), "--check", "--set", "optim.lr=nan",
       "-o", str(d / "out" / "runB"), code=2)
    tr("set-unknown", str(ROOT / "examples" / "train_tiny.toml"), "--check", "--set", "optim.frob=1",
       "-o", str(d / "out" / "runC"), code=2)
    tr("max-steps-neg", str(ROOT / "examples" / "train_tiny.toml"), "--check", "--max-steps", "-1",
       "-o", str(d / "out" / "runD"), code=2)
    tr("stop-after-0", str(ROOT / "examples" / "train_tiny.toml"), "--stop-after", "0", "-o", str(d / "out" / "runE"))
    tr("shard-bad", str(ROOT / "examples" / "train_tiny.toml"), "--pre-encode", "--shard", "3/2",
       "-o", str(d / "out" / "runF"), code=2)
    tr("shard-zero", str(ROOT / "examples" / "train_tiny.toml"), "--pre-encode", "--shard", "0/0",
       "-o", str(d / "out" / "runG"), code=2)
    tr("output-is-file", str(ROOT / "examples" / "train_tiny.toml"), "--max-steps", "1", "-o", str(existing),
       keep=[str(existing)])
    tr("check-ok", str(ROOT / "examples" / "train_tiny.toml"), "--check", "-o", str(d / "out" / "runH"), expect="ok")

    # --- chat (stdin driven)
    def chat(name, lines: bytes, *args, **kw):  # a REPL: a bad slash command is an error line, the chat goes on
        kw["expect"] = "repl" if kw.get("expect") == "ok" else kw.get("expect", "error")
        add(Case(f"chat/{name}", [*sh, "chat", "--max-new-tokens", "2", *args], stdin=lines, **kw))

    chat("load-empty", f"/load {f['tr_empty.json']}\n/quit\n".encode(), expect="ok")
    chat("load-bad", f"/load {f['tr_bad.json']}\n/quit\n".encode(), expect="ok")
    chat("load-deep", f"/load {f['tr_deep.json']}\n/quit\n".encode(), expect="ok")
    chat("load-roles", f"/load {f['tr_roles.json']}\n/quit\n".encode(), expect="ok")
    chat("load-devzero", b"/load /dev/zero\n/quit\n", expect="ok", not_in_err="not valid JSON")
    chat("load-missing", f"/load {d / 'none.json'}\n/quit\n".encode(), expect="ok", not_in_err="not valid JSON")
    chat("load-dir", f"/load {f['adir']}\n/quit\n".encode(), expect="ok", not_in_err="not valid JSON")
    chat("image-fifo", f"/image {f['fifo.jpg']}\n/quit\n".encode(), expect="ok")
    chat("image-huge", f"/image {f['huge.png']}\nwhat?\n/quit\n".encode(), expect="ok")
    chat("save-existing", f"hi\n/save {existing}\n/quit\n".encode(), expect="ok", keep=[str(existing)])
    chat("save-dir", f"/save {f['adir']}\n/quit\n".encode(), expect="ok")
    chat("t2i-bad-out", b"/t2i a cat -o /nonexistent/dir/x.png\n/quit\n", expect="ok")
    chat("binary-stdin", b"\xff\xfe\x00\x01\x02\n/quit\n", expect="ok")
    chat("unclosed-multiline", b'"""\nline one\nline two\n', expect="ok")
    chat("unknown-slash", b"/frobnicate\n/quit\n", expect="ok")
    chat("media-arg-trunc", b"hi\n/quit\n", str(f["trunc.jpg"]), code=3)
    chat("max-context-1", b"hi\n/quit\n", "--max-context", "1")
    chat("system-empty", b"hi\n/quit\n", "-s", "", expect="ok")

    # --- serve options (fail before or at start)
    def srv(name, *args, **kw):
        add(Case(f"serve-opt/{name}", [*sh, "serve", *args], **kw))

    srv("port-70000", "--port", "70000", code=2)
    srv("port-neg", "--port", "-1", code=2)
    srv("max-queue-neg", "--max-queue", "-1", code=2)
    srv("parallel-0", "--parallel", "0", code=2)
    srv("max-body-nan", "--max-body-mb", "nan", code=2)
    srv("request-timeout-0", "--request-timeout", "0", code=2)
    srv("served-name-empty", "--served-model-name", "", code=2)
    srv("allow-origin-bogus", "--allow-origin", "not an origin", code=2)
    srv("host-bogus", "--host", "999.1.1.1", "--port", "0", code=2)
    srv("max-size-0", "--max-size", "0", code=2)
    srv("drain-inf", "--drain-timeout", "inf", code=2)
    srv("api-key-newline", "--api-key", "a\nb", code=2)

    # --- top level
    add(Case("top/unknown-command", [*sh, "frobnicate"], code=2))
    add(Case("top/no-args-ok", [*sh], expect="any"))
    add(Case("models/json-ok", [*sh, "models", "--json"], expect="ok"))
    return C


# ---------------------------------------------------------------- running

def run_cli(case: Case, workdir: Path) -> Outcome:
    env = dict(os.environ)
    env.update({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
                "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))})
    env.update(case.env)
    before = {p: Path(p).read_bytes() for p in case.keep if Path(p).is_file()}
    out_path, err_path, in_path = (workdir / f".{os.getpid()}.{id(case)}.{k}" for k in ("out", "err", "in"))
    in_path.write_bytes(case.stdin or b"")
    start = time.monotonic()
    with open(out_path, "wb") as so, open(err_path, "wb") as se, open(in_path, "rb") as si:
        proc = subprocess.Popen([PY, *case.argv], stdin=si, stdout=so, stderr=se, env=env, cwd=workdir,
                                start_new_session=True)
        peak, why = 0, ""
        while True:
            try:  # the child's own high-water mark (wait4's ru_maxrss starts from the forking parent's)
                rss = int(next(ln for ln in Path(f"/proc/{proc.pid}/status").read_text().splitlines()
                               if ln.startswith("VmHWM")).split()[1])
                peak = max(peak, rss)
            except (OSError, StopIteration, ValueError):
                rss = 0
            pid, status = os.waitpid(proc.pid, os.WNOHANG)
            if pid:
                code = os.waitstatus_to_exitcode(status)
                break
            if rss > RSS_LIMIT_KB or time.monotonic() - start > TIMEOUT:
                why = "memory blow-up" if rss > RSS_LIMIT_KB else "hang (>60 s)"
                os.killpg(proc.pid, signal.SIGKILL)
                os.waitpid(proc.pid, 0)
                code = -9
                break
            time.sleep(0.1)
        proc.returncode = code
    seconds = time.monotonic() - start
    err = err_path.read_text(errors="replace")
    for p in (out_path, err_path, in_path):
        p.unlink()
    if why:
        return Outcome(case.name, False, f"{why}; peak RSS {peak // 1024} MB", seconds)
    if peak > RSS_LIMIT_KB:
        return Outcome(case.name, False, f"peak RSS {peak // 1024} MB", seconds)
    for p, content in before.items():
        if not Path(p).is_file() or Path(p).read_bytes() != content:
            return Outcome(case.name, False, f"clobbered {p}", seconds)
    for p in case.absent:
        if Path(p).exists():
            return Outcome(case.name, False, f"left {p}", seconds)
    tail = err.strip().splitlines()[-1] if err.strip() else ""
    if case.not_in_err and case.not_in_err in err:
        return Outcome(case.name, False, f"misleading message ({case.not_in_err!r}): {err.strip()[-200:]!r}", seconds)
    if "Traceback" in err:
        return Outcome(case.name, False, f"traceback (exit {code}): {tail[:200]}", seconds)
    if case.expect == "repl":
        if code != 0:
            return Outcome(case.name, False, f"the chat ended with exit {code}: {tail[:200]}", seconds)
        return Outcome(case.name, True, f"exit 0: {tail[:150]}", seconds)
    if case.expect == "any":
        return Outcome(case.name, True, f"exit {code}", seconds)
    if case.expect == "ok":
        if code != 0:
            return Outcome(case.name, False, f"valid input refused, exit {code}: {tail[:200]}", seconds)
        if "showo2: error" in err:
            return Outcome(case.name, False, f"exit 0 but an error line: {tail[:200]}", seconds)
        return Outcome(case.name, True, "exit 0", seconds)
    if code == 0:
        return Outcome(case.name, False, "accepted (exit 0)", seconds)
    if code == 1:
        return Outcome(case.name, False, f"internal error (exit 1): {tail[:200]}", seconds)
    errors = [ln for ln in err.splitlines() if ln.startswith("showo2: error")]
    if len(errors) != 1:
        return Outcome(case.name, False, f"exit {code} without one 'showo2: error' line: {err.strip()[-200:]!r}", seconds)
    if case.code is not None and code != case.code:
        return Outcome(case.name, False, f"exit {code}, documented {case.code}: {errors[0][:200]}", seconds)
    return Outcome(case.name, True, f"exit {code}: {errors[0][:150]}", seconds)


def prepare(d: Path) -> tuple[dict, dict, Path]:
    (d / "out").mkdir()
    files = make_files(d)
    (d / "out" / "existing.png").write_bytes(b"precious")
    (d / "out" / "existing.safetensors").write_bytes(b"precious latents")
    (d / "out" / "side.json").write_bytes(b"precious sidecar")
    (d / "out" / "sl.latents.safetensors").write_bytes(b"precious latents")
    (d / "out" / "enc_src.jpg").write_bytes(PHOTO.read_bytes())
    (d / "out" / "enc_src.jpg.latents.safetensors").write_bytes(b"precious")
    (d / "out" / "dangle.png").symlink_to(d / "out" / "nowhere" / "x.png")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT / "src"))
    real = d / "real.latents.safetensors"
    subprocess.run([PY, "-m", "showo2_cli", "encode", str(PHOTO), "--size", "32", "-o", str(real), "--quiet"],
                   check=True, env=env)
    latents = make_latents(d, real)
    model = d / "model"
    subprocess.run([PY, "-m", "showo2_cli", "init", "--spec", "tiny", "--vae-dim", "8", "-o", str(model), "--quiet"],
                   check=True, env=env)
    for name, change in (("badcfg_model", "nan"), ("hugecfg_model", "huge"), ("trunc_model", "trunc")):
        copy = d / name
        copy.mkdir()
        for item in model.iterdir():
            if item.is_file():
                (copy / item.name).write_bytes(item.read_bytes())
            else:
                (copy / item.name).symlink_to(item)
        cfg_path = copy / "config.json"
        if change == "trunc":
            weights = max((p for p in copy.iterdir() if p.suffix == ".safetensors"), key=lambda p: p.stat().st_size)
            weights.write_bytes(weights.read_bytes()[:1000])
            continue
        cfg = json.loads(cfg_path.read_text())

        def mutate(fields: dict, number: int) -> None:  # every whole number, the showo2 spec block's too
            for k, v in list(fields.items()):
                if isinstance(v, dict):
                    mutate(v, number)
                elif isinstance(v, int) and not isinstance(v, bool):
                    fields[k] = number
        mutate(cfg, 2**40 if change == "huge" else -1)
        cfg_path.write_text(json.dumps(cfg))
    return files, latents, real


# ---------------------------------------------------------------- API cases (a child process)

API_CHILD = r'''
import json, math, os, signal, sys, traceback
import numpy as np, torch
torch.set_num_threads(1)
from PIL import Image
from showo2_cli import api
from showo2_cli.errors import Showo2Error
d, photo = sys.argv[1], sys.argv[2]
model = api.load("demo")
pipe = api.Showo2Pipeline.from_pretrained("demo")
def alarm(*a): raise TimeoutError("hang")
signal.signal(signal.SIGALRM, alarm)
G = api.GenerateOptions
cases = [
 ("load-missing", "error", lambda: api.load(os.path.join(d, "nomodel"))),
 ("load-int", "error", lambda: api.load(123)),
 ("load-empty", "error", lambda: api.load("")),
 ("load-file", "error", lambda: api.load(photo)),
 ("caption-none", "error", lambda: api.caption(model, None)),
 ("caption-missing", "error", lambda: api.caption(model, os.path.join(d, "nofile.jpg"))),
 ("caption-pil-0x0", "error", lambda: api.caption(model, Image.new("RGB", (0, 0)))),
 ("caption-array-empty", "error", lambda: api.caption(model, np.zeros((0, 0, 3), np.uint8))),
 ("caption-array-nan", "error", lambda: api.caption(model, np.full((32, 32, 3), np.nan, np.float32))),
 ("caption-array-object", "error", lambda: api.caption(model, np.array([[object()]]))),
 ("caption-tensor-5d", "error", lambda: api.caption(model, torch.zeros(1, 2, 3, 4, 5, 6))),
 ("caption-q-empty", "error", lambda: api.caption(model, photo, api.CaptionOptions(questions=[""]))),
 ("caption-q-int", "error", lambda: api.caption(model, photo, api.CaptionOptions(questions=[5]))),
 ("caption-q-str-is-one-question", "ok", lambda: api.caption(model, photo, api.CaptionOptions(questions="what", max_new_tokens=2))),
 ("caption-tokens-neg", "error", lambda: api.caption(model, photo, api.CaptionOptions(max_new_tokens=-1))),
 ("caption-pil-1x1-ok", "ok", lambda: api.caption(model, Image.new("RGB", (1, 1)), api.CaptionOptions(max_new_tokens=2))),
 ("caption-array-gray-ok", "ok", lambda: api.caption(model, np.zeros((20, 30), np.uint8), api.CaptionOptions(max_new_tokens=2))),
 ("gen-steps-0", "error", lambda: api.text_to_image(model, ["a"], G(steps=0))),
 ("gen-seed-neg", "error", lambda: api.text_to_image(model, ["a"], G(seed=-1, steps=2))),
 ("gen-seed-2**64", "error", lambda: api.text_to_image(model, ["a"], G(seed=2**64, steps=2))),
 ("gen-guidance-nan", "error", lambda: api.text_to_image(model, ["a"], G(guidance=float("nan"), steps=2))),
 ("gen-shift-inf", "error", lambda: api.text_to_image(model, ["a"], G(shift=float("inf"), steps=2))),
 ("gen-size-0", "error", lambda: api.text_to_image(model, ["a"], G(size=(0, 0), steps=2))),
 ("gen-size-neg", "error", lambda: api.text_to_image(model, ["a"], G(size=(-16, 16), steps=2))),
 ("gen-size-float", "error", lambda: api.text_to_image(model, ["a"], G(size=(16.5, 16), steps=2))),
 ("gen-steps-bool", "error", lambda: api.text_to_image(model, ["a"], G(steps=True))),
 ("gen-no-prompts", "error", lambda: api.text_to_image(model, [], G(steps=2))),
 ("gen-prompt-empty", "error", lambda: api.text_to_image(model, [""], G(steps=2))),
 ("gen-prompt-none", "error", lambda: api.text_to_image(model, [None], G(steps=2))),
 ("gen-prompt-bytes", "error", lambda: api.text_to_image(model, [b"a cat"], G(steps=2))),
 ("gen-prompt-str", "any", lambda: api.text_to_image(model, "a cat", G(steps=2))),
 ("t2v-frames-0", "error", lambda: api.text_to_video(model, ["a"], G(frames=0, steps=2))),
 ("t2v-frames-neg", "error", lambda: api.text_to_video(model, ["a"], G(frames=-3, steps=2))),
 ("i2v-none", "error", lambda: api.image_to_video(model, None, ["a"], G(steps=2))),
 ("encode-missing", "error", lambda: api.encode(os.path.join(d, "none.jpg"), model.vae, api.EncodeOptions())),
 ("encode-size-0", "error", lambda: api.encode(photo, model.vae, api.EncodeOptions(size=(0, 0)))),
 ("encode-frames-neg", "error", lambda: api.encode(photo, model.vae, api.EncodeOptions(frames=-1))),
 ("decode-wrong-ndim", "error", lambda: api.decode(torch.zeros(3, 3), model.vae)),
 ("decode-nan", "error", lambda: api.decode(torch.full((1, 16, 1, 2, 2), float("nan")), model.vae)),
 ("decode-zero-dim", "error", lambda: api.decode(torch.zeros(1, 16, 0, 2, 2), model.vae)),
 ("decode-channels", "error", lambda: api.decode(torch.zeros(1, 3, 1, 2, 2), model.vae)),
 ("decode-int", "error", lambda: api.decode(torch.zeros(1, 16, 1, 2, 2, dtype=torch.int64), model.vae)),
 ("decode-list", "error", lambda: api.decode([[1, 2]], model.vae)),
 ("decode-file-missing", "error", lambda: api.decode_file(os.path.join(d, "none.safetensors"), model.vae)),
 ("decode-file-image", "error", lambda: api.decode_file(photo, model.vae)),
 ("load-latents-trunc", "error", lambda: api.load_latents(os.path.join(d, "lat_trunc.safetensors"))),
 ("load-latents-hdr", "error", lambda: api.load_latents(os.path.join(d, "lat_hdrlen.safetensors"))),
 ("load-noise-nan", "error", lambda: api.load_noise(os.path.join(d, "lat_huge_shape.safetensors"))),
 ("encode-file-out-exists", "error", lambda: api.encode_file(photo, model.vae, os.path.join(d, "out", "existing.safetensors"), api.EncodeOptions(size=(32, 32)))),
 ("encode-file-out-missing-dir", "error", lambda: api.encode_file(photo, model.vae, os.path.join(d, "no", "x.safetensors"), api.EncodeOptions(size=(32, 32)))),
 ("encode-file-devzero", "error", lambda: api.encode_file("/dev/zero", model.vae, os.path.join(d, "out", "z.safetensors"))),
 ("decode-file-out-exists", "error", lambda: api.decode_file(os.path.join(d, "real.latents.safetensors"), model.vae, os.path.join(d, "out", "existing.png"))),
 ("decode-file-fps-nan", "error", lambda: api.decode_file(os.path.join(d, "real.latents.safetensors"), model.vae, os.path.join(d, "out", "f.mp4"), fps=float("nan"))),
 ("decode-file-hugeshape", "error", lambda: api.decode_file(os.path.join(d, "lat_huge_shape.safetensors"), model.vae, os.path.join(d, "out", "h.png"))),
 ("plan-n-0", "error", lambda: api.plan_outputs("t2i", os.path.join(d, "out", "p.png"), ["a"], [0], 0, seed=1)),
 ("plan-seed-neg", "error", lambda: api.plan_outputs("t2i", os.path.join(d, "out", "p.png"), ["a"], [0], 1, seed=-5)),
 ("caption-video-frames-0", "error", lambda: api.caption(model, os.path.join(d, "clip_named.png"), api.CaptionOptions(frames=0))),
 ("read-prompts-none", "error", lambda: api.read_prompts(None)),
 ("read-prompts-devzero", "error", lambda: api.read_prompts(None, "/dev/zero")),
 ("read-prompts-dir", "error", lambda: api.read_prompts(None, d)),
 ("read-prompts-int", "error", lambda: api.read_prompts(5)),
 ("plan-bad-ext", "error", lambda: api.plan_outputs("t2i", os.path.join(d, "out", "x.txt"), ["a"], [0], 1, seed=1)),
 ("plan-bad-kind", "error", lambda: api.plan_outputs("frobnicate", os.path.join(d, "out", "x.png"), ["a"], [0], 1, seed=1)),
 ("plan-existing", "error", lambda: api.plan_outputs("t2i", os.path.join(d, "out", "existing.png"), ["a"], [0], 1, seed=1)),
 ("save-latents-existing", "error", lambda: api.save_latents(os.path.join(d, "out", "existing.safetensors"), torch.zeros(16, 1, 2, 2), {})),
 ("check-memory-nan", "error", lambda: api.check_memory(float("nan"), "a job")),
 ("pick-device-bogus", "error", lambda: api.pick_device("tpu")),
 ("pick-dtype-bogus", "error", lambda: api.pick_dtype("int8", torch.device("cpu"))),
 ("pipe-prompt-int", "error", lambda: pipe(123, num_inference_steps=2)),
 ("pipe-steps-0", "error", lambda: pipe("a", num_inference_steps=0)),
 ("pipe-steps-str", "error", lambda: pipe("a", num_inference_steps="2")),
 ("pipe-height-neg", "error", lambda: pipe("a", num_inference_steps=2, height=-16)),
 ("pipe-height-odd", "error", lambda: pipe("a", num_inference_steps=2, height=17, width=16)),
 ("pipe-n-0", "error", lambda: pipe("a", num_inference_steps=2, num_images_per_prompt=0)),
 ("pipe-generator-str", "error", lambda: pipe("a", num_inference_steps=2, generator="x")),
 ("pipe-output-type", "error", lambda: pipe("a", num_inference_steps=2, output_type="bogus")),
 ("pipe-latents-shape", "error", lambda: pipe("a", num_inference_steps=2, latents=torch.zeros(1, 2, 3))),
 ("pipe-latents-nan", "error", lambda: pipe("a", num_inference_steps=2, latents=torch.full((1, 16, 1, 2, 2), float("nan")))),
 ("pipe-unsupported", "error", lambda: pipe("a", num_inference_steps=2, frobnicate=1)),
 ("pipe-guidance-inf", "error", lambda: pipe("a", num_inference_steps=2, guidance_scale=float("inf"))),
 ("pipe-frames-neg", "error", lambda: pipe("a", num_inference_steps=2, num_frames=-1)),
 ("pipe-sigmas-bad", "error", lambda: pipe("a", sigmas=[float("nan"), 0.5])),
 ("pipe-timesteps-bad", "error", lambda: pipe("a", timesteps=[5000, 1])),
 ("pipe-neg-prompt-count", "error", lambda: pipe(["a", "b"], num_inference_steps=2, negative_prompt=["x", "y", "z"])),
 ("pipe-caption-none", "error", lambda: pipe.caption(None)),
 ("pipe-caption-q-int", "error", lambda: pipe.caption(photo, 5)),
 ("pipe-image-garbage", "error", lambda: pipe("a", image=os.path.join(d, "trunc.jpg"), num_frames=5, num_inference_steps=2)),
 ("pipe-from-missing", "error", lambda: api.Showo2Pipeline.from_pretrained(os.path.join(d, "nomodel"))),
 ("pipe-from-dtype", "error", lambda: api.Showo2Pipeline.from_pretrained("demo", torch_dtype="int8")),
 ("pipe-from-variant", "error", lambda: api.Showo2Pipeline.from_pretrained("demo", variant="fp16")),
 ("pipe-save-existing", "error", lambda: pipe.save_pretrained(os.path.join(d, "out", "existing.png"))),
 ("pipe-to-bogus", "error", lambda: pipe.to("tpu")),
 ("pipe-rtl-ok", "ok", lambda: pipe("\u202e\u05d0 \U0001f600 \x00 cat", num_inference_steps=2, height=16, width=16)),
]
for name, want, fn in cases:
    signal.alarm(60)
    try:
        fn()
        got, detail = "ok", ""
    except (Showo2Error, ValueError, TypeError) as e:  # the documented API errors (diffusers' ValueError/TypeError)
        got, detail = "error", f"{type(e).__name__}: {str(e)[:150]}"
    except TimeoutError:
        got, detail = "hang", ""
    except BaseException as e:
        got, detail = "foreign", f"{type(e).__name__}: {str(e)[:150]} @ {traceback.extract_tb(e.__traceback__)[-1].filename.split('/')[-1]}:{traceback.extract_tb(e.__traceback__)[-1].lineno}"
    finally:
        signal.alarm(0)
    passed = want == "any" and got in ("ok", "error") or got == want
    print(json.dumps({"name": "api/" + name, "ok": passed, "why": f"{got} {detail}".strip()}), flush=True)
'''


def run_api(d: Path) -> list[Outcome]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT / "src"))
    proc = subprocess.run([PY, "-c", API_CHILD, str(d), str(PHOTO)], capture_output=True, text=True, env=env,
                          timeout=3600)
    outs = [Outcome(**json.loads(ln)) for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0:
        outs.append(Outcome("api/child", False, f"exit {proc.returncode}: {proc.stderr.strip()[-300:]}"))
    return outs


# ---------------------------------------------------------------- server cases

def run_server(d: Path, files: dict) -> list[Outcome]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT / "src"))
    proc = subprocess.Popen([PY, "-m", "showo2_cli", "serve", "--port", "0", "--max-body-mb", "1", "--max-n", "2",
                             "--max-steps", "4", "--max-size", "64", "--max-tokens", "8"],
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, env=env, text=True,
                            start_new_session=True)
    port = None
    log: list[str] = []
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        log.append(line)
        if "serving" in line and "http://" in line:
            port = int(line.split("http://")[1].split("/")[0].split(" ")[0].rsplit(":", 1)[1])
            break
    if port is None:
        proc.kill()
        return [Outcome("serve/start", False, "".join(log)[-300:])]
    threading.Thread(target=lambda: [log.append(x) for x in proc.stderr], daemon=True).start()
    png = base64.b64encode((MEDIA / "waves.gif").read_bytes()[:0] or files["one.png"].read_bytes()).decode()
    huge = base64.b64encode(files["huge.png"].read_bytes()).decode()
    trunc = base64.b64encode(files["trunc.jpg"].read_bytes()[:3000]).decode()

    def msg(content):
        return {"model": "demo", "messages": [{"role": "user", "content": content}], "max_tokens": 2}

    def img(url):
        return msg([{"type": "text", "text": "what?"}, {"type": "image_url", "image_url": {"url": url}}])

    chat, images, responses = "/v1/chat/completions", "/v1/images/generations", "/v1/responses"
    cases: list[tuple[str, str, str, bytes | dict | list, str]] = [
        ("body-not-json", "POST", chat, b"{nope", "4xx"),
        ("body-array", "POST", chat, [1, 2], "4xx"),
        ("body-empty", "POST", chat, b"", "4xx"),
        ("body-string", "POST", chat, b'"hi"', "4xx"),
        ("messages-missing", "POST", chat, {"model": "demo"}, "4xx"),
        ("messages-empty", "POST", chat, {"model": "demo", "messages": []}, "4xx"),
        ("role-bogus", "POST", chat, {"model": "demo", "messages": [{"role": "wizard", "content": "hi"}]}, "4xx"),
        ("content-int", "POST", chat, msg(5), "4xx"),
        ("content-nul-ok", "POST", chat, msg("hi\x00\u202e there"), "200"),
        ("max-tokens-neg", "POST", chat, {**msg("hi"), "max_tokens": -1}, "4xx"),
        ("max-tokens-huge", "POST", chat, {**msg("hi"), "max_tokens": 2**63}, "4xx"),
        ("max-tokens-str", "POST", chat, {**msg("hi"), "max_tokens": "2"}, "4xx"),
        ("max-tokens-float", "POST", chat, {**msg("hi"), "max_tokens": 2.5}, "4xx"),
        ("temperature-nan", "POST", chat, b'{"model":"demo","messages":[{"role":"user","content":"hi"}],"temperature":NaN}', "4xx"),
        ("temperature-inf", "POST", chat, b'{"model":"demo","messages":[{"role":"user","content":"hi"}],"temperature":Infinity}', "4xx"),
        ("top-p-1e308", "POST", chat, {**msg("hi"), "top_p": 1e308}, "4xx"),
        ("seed-neg", "POST", chat, {**msg("hi"), "seed": -1}, "any4xx-or-200"),
        ("seed-2**64", "POST", chat, {**msg("hi"), "seed": 2**64}, "4xx"),
        ("n-0", "POST", chat, {**msg("hi"), "n": 0}, "4xx"),
        ("stop-many", "POST", chat, {**msg("hi"), "stop": ["x"] * 1000}, "4xx"),
        ("stop-int", "POST", chat, {**msg("hi"), "stop": 5}, "4xx"),
        ("model-wrong", "POST", chat, {**msg("hi"), "model": "gpt-4"}, "4xx"),
        ("model-int", "POST", chat, {**msg("hi"), "model": 5}, "4xx"),
        ("deep-json", "POST", chat, b'{"model":"demo","messages":' + b"[" * 50000 + b"]" * 50000 + b"}", "4xx"),
        ("image-not-data", "POST", chat, img("http://127.0.0.1:1/x.png"), "4xx"),
        ("image-file-url", "POST", chat, img("file:///etc/passwd"), "4xx"),
        ("image-bad-b64", "POST", chat, img("data:image/png;base64,!!!notbase64"), "4xx"),
        ("image-trunc", "POST", chat, img("data:image/jpeg;base64," + trunc), "4xx"),
        ("image-huge-dims", "POST", chat, img("data:image/png;base64," + huge), "4xx"),
        ("image-empty", "POST", chat, img("data:image/png;base64,"), "4xx"),
        ("image-ok", "POST", chat, img("data:image/png;base64," + png), "200"),
        ("image-url-int", "POST", chat, msg([{"type": "image_url", "image_url": {"url": 5}}]), "4xx"),
        ("part-type-bogus", "POST", chat, msg([{"type": "video_magic", "x": 1}]), "4xx"),
        ("body-too-big", "POST", chat, msg("a" * (2 * 1024 * 1024)), "4xx"),
        ("response-format-bogus", "POST", chat, {**msg("hi"), "response_format": {"type": "yaml"}}, "4xx"),
        ("json-schema-deep", "POST", chat, json.dumps({**msg("hi"), "response_format": {"type": "json_schema", "json_schema": {
            "name": "x", "schema": "@"}}}).encode().replace(b'"@"', files["schema_deep.json"].read_bytes()), "4xx"),
        ("json-schema-not-obj", "POST", chat, {**msg("hi"), "response_format": {"type": "json_schema", "json_schema": {
            "name": "x", "schema": 5}}}, "4xx"),
        ("tools-malformed", "POST", chat, {**msg("hi"), "tools": [{"type": "function"}]}, "4xx"),
        ("tools-params-str", "POST", chat, {**msg("hi"), "tools": [{"type": "function", "function": {
            "name": "f", "parameters": "x"}}]}, "4xx"),
        ("tool-choice-missing-fn", "POST", chat, {**msg("hi"), "tools": [{"type": "function", "function": {"name": "f"}}],
                                                  "tool_choice": {"type": "function", "function": {"name": "g"}}}, "4xx"),
        ("stream-bad-tokens", "POST", chat, {**msg("hi"), "stream": True, "max_tokens": 0}, "4xx"),
        ("stream-str", "POST", chat, {**msg("hi"), "stream": "yes"}, "4xx"),
        ("logprobs", "POST", chat, {**msg("hi"), "logprobs": True, "top_logprobs": 100}, "4xx"),
        ("img-prompt-empty", "POST", images, {"model": "demo", "prompt": ""}, "4xx"),
        ("img-prompt-int", "POST", images, {"model": "demo", "prompt": 5}, "4xx"),
        ("img-size-0", "POST", images, {"model": "demo", "prompt": "a", "size": "0x0"}, "4xx"),
        ("img-size-huge", "POST", images, {"model": "demo", "prompt": "a", "size": "99999x99999"}, "4xx"),
        ("img-size-garbage", "POST", images, {"model": "demo", "prompt": "a", "size": "abcxdef"}, "4xx"),
        ("img-n-0", "POST", images, {"model": "demo", "prompt": "a", "n": 0}, "4xx"),
        ("img-n-100", "POST", images, {"model": "demo", "prompt": "a", "n": 100}, "4xx"),
        ("img-steps-1e9", "POST", images, {"model": "demo", "prompt": "a", "steps": 10**9}, "4xx"),
        ("img-steps-nan", "POST", images, b'{"model":"demo","prompt":"a","steps":NaN}', "4xx"),
        ("img-guidance-neg", "POST", images, {"model": "demo", "prompt": "a", "guidance": -1}, "4xx"),
        ("img-format-bogus", "POST", images, {"model": "demo", "prompt": "a", "response_format": "tiff"}, "4xx"),
        ("img-prompt-long", "POST", images, {"model": "demo", "prompt": "a" * 20000}, "4xx"),
        ("img-ok", "POST", images, {"model": "demo", "prompt": "\u202ea cat\x00", "size": "32x32", "steps": 2,
                                    "response_format": "b64_json"}, "200"),
        ("resp-input-int", "POST", responses, {"model": "demo", "input": 5}, "4xx"),
        ("resp-prev-id", "POST", responses, {"model": "demo", "input": "hi", "previous_response_id": "x"}, "4xx"),
        ("resp-max-out-neg", "POST", responses, {"model": "demo", "input": "hi", "max_output_tokens": -5}, "4xx"),
        ("resp-item-bogus", "POST", responses, {"model": "demo", "input": [{"type": "bogus"}]}, "4xx"),
        ("resp-ok", "POST", responses, {"model": "demo", "input": "hi", "max_output_tokens": 2}, "200"),
        ("get-on-post", "GET", chat, b"", "4xx"),
        ("models-traversal", "GET", "/v1/models/../../etc/passwd", b"", "4xx"),
        ("unknown-route", "GET", "/v2/bogus", b"", "4xx"),
        ("health-ok", "GET", "/health", b"", "200"),
    ]
    outs = []
    for name, method, path, body, want in cases:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            conn.request(method, path, body=raw if method == "POST" else None,
                         headers={"Content-Type": "application/json"} if method == "POST" else {})
            resp = conn.getresponse()
            status, data = resp.status, resp.read()
            conn.close()
        except Exception as e:  # noqa: BLE001
            outs.append(Outcome(f"serve/{name}", False, f"{type(e).__name__}: {e}"))
            continue
        try:
            json.loads(data or b"null")
            is_json = True
        except ValueError:
            is_json = False
        if want == "200":
            ok, why = status == 200, f"{status} {data[:150]!r}"
        elif want == "any4xx-or-200":
            ok, why = status == 200 or 400 <= status < 500, f"{status}"
        else:
            ok = 400 <= status < 500 and is_json
            why = f"{status} {data[:150]!r}"
        outs.append(Outcome(f"serve/{name}", ok, why))
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    if any("Traceback" in x for x in log):
        outs.append(Outcome("serve/log-traceback", False, next(x for x in log if "Traceback" in x)[:200]))
    return outs


def main() -> int:
    global TIMEOUT  # noqa: PLW0603
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="", help="run the cases whose name holds one of these (comma-separated)")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=TIMEOUT, help="seconds a case may run (60: the bar on an idle host)")
    ap.add_argument("--keep", action="store_true", help="keep the scratch folder")
    ap.add_argument("--skip", default="", help="comma-separated groups to skip: cli, api, serve")
    args = ap.parse_args()
    TIMEOUT = args.timeout
    d = Path(tempfile.mkdtemp(prefix="hostile-jb-"))
    skip = set(filter(None, args.skip.split(",")))
    try:
        files, latents, real = prepare(d)
        only = args.only.split(",")
        cases = [c for c in cli_cases(d, files, latents, real) if any(o in c.name for o in only)]
        outcomes: list[Outcome] = []
        if "cli" not in skip:
            with ThreadPoolExecutor(args.jobs) as pool:
                for out in pool.map(lambda c: run_cli(c, d), cases):
                    outcomes.append(out)
                    print(f"{'PASS' if out.ok else 'FAIL'} {out.name} ({out.seconds:.1f} s): {out.why}", flush=True)
        leftovers = [str(q) for q in d.rglob(".*tmp*")]  # (after every case: one runs while another writes)
        if "cli" not in skip:
            outcomes.append(Outcome("cli/no-temporary-files-left", not leftovers, f"{leftovers[:3]}"))
            print(f"{'PASS' if not leftovers else 'FAIL'} cli/no-temporary-files-left: {leftovers[:3]}", flush=True)
        for group, fn in (("api", lambda: run_api(d)), ("serve", lambda: run_server(d, files))):
            if group in skip or (args.only and not any(o in group for o in only)):
                continue
            for out in fn():
                outcomes.append(out)
                print(f"{'PASS' if out.ok else 'FAIL'} {out.name}: {out.why}", flush=True)
        failed = [o for o in outcomes if not o.ok]
        print(f"\n{len(outcomes) - len(failed)} passed, {len(failed)} failed of {len(outcomes)} cases")
        for o in failed:
            print(f"  FAIL {o.name}: {o.why}")
        return 1 if failed else 0
    finally:
        if args.keep:
            print(f"scratch kept: {d}")
        else:
            import shutil  # noqa: PLC0415
            shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
