"""Structure-aware fuzzing (probe JE): each seed parsed into its structure (PNG chunks, JPEG segments,
GIF blocks, the mp4/mov box tree, WebM's EBML elements, a safetensors header and its data, a torch zip
archive's members and pickle), its fields mutated (dimensions, counts, offsets, durations, timescales,
codec fourccs, frame counts, sample tables, dtypes, shapes, duplicate, missing and reordered
elements), and written back with its sizes and checksums fixed, so the mutant passes the outer checks
that stop most byte-level mutants (``fuzz_readers.py``) and reaches the inner parsers: PyAV's demuxers
and decoders, Pillow's decoders, the project's header readers, the memory guard's size reading.

    python benchmarks/fuzz_structured.py --reader png --count 2000 --seed 1
    python benchmarks/fuzz_structured.py --reader all --count 300 --save fuzz-defects
    python benchmarks/fuzz_structured.py --reader apng --count 3000 --readers-only   # no model: many more mutants

Each mutant is driven through every entry point that reads its kind of file, each one run even where
another refused it: media (``probe_kind``, ``read_metadata``, ``check_video``, ``read_image`` as caption
and i2v read it, ``read_media``, encode's ``read_source``, a training ``pairs`` source's sample), and
where the file reads, the demo model's ``api.caption``, ``api.encode`` and (images) ``api.image_to_video``,
and every fourth mutant the server's chat endpoint with the file as an image or video content part;
latents (``load_latents``, then ``api.decode`` where they load); VAE weights (the memory guard's
``header_sizes``, then ``load_vae``). Outcomes as ``fuzz_readers.py`` classifies them (a hang past
``--timeout``, a peak RSS growth past ``--memory-mb``, any exception but the project's one-line errors, a
partial file left), and besides, the address space is capped (``--address-space-gb`` over what the
process holds when it starts): an allocation of a size read from a file before it is checked fails
as a ``MemoryError``, a defect.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import pickletools
import random
import struct
import sys
import zipfile
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fuzz_readers as base  # noqa: E402 (the harness: seeds' placing, the run loop, the outcomes)

READERS = ("png", "apng", "jpeg", "gif", "mp4", "mov", "webm", "latents", "vae")
_N = (0, 1, 2, 3, 7, 8, 15, 16, 255, 256, 4095, 65535, 65536, 2**24, 2**31 - 1, 2**31, 2**32 - 1)


def _num(rng: random.Random, old: int, top: int) -> int:
    """An interesting value for a field holding ``old`` that fits under ``top``."""
    v = rng.choice(_N + (old + 1, max(old - 1, 0), old * 2, old // 2, old * 100, rng.randrange(top + 1), top))
    return min(max(v, 0), top)


def _put(b: bytes, off: int, fmt: str, value) -> bytes:
    size = struct.calcsize(fmt)
    if off + size > len(b):
        return b
    return b[:off] + struct.pack(fmt, value) + b[off + size:]


def _shuffle_items(items: list, rng: random.Random, fixed: int = 0) -> None:
    """Drop, duplicate (up to a hundredfold) or swap one of ``items[fixed:]`` in place."""
    if len(items) <= fixed:
        return
    i = rng.randrange(fixed, len(items))
    op = rng.randrange(3)
    if op == 0 and len(items) > fixed + 1:
        del items[i]
    elif op == 1:
        items[i + 1:i + 1] = [items[i]] * rng.choice((1, 1, 2, 100))
    else:
        j = rng.randrange(fixed, len(items))
        items[i], items[j] = items[j], items[i]


# ---------------------------------------------------------------- PNG (and APNG): chunks, CRCs fixed

PNG_SIG = b"\x89PNG\r\n\x1a\n"


def png_parse(data: bytes) -> list[list]:
    chunks, i = [], 8
    while i + 8 <= len(data):
        n = struct.unpack(">I", data[i:i + 4])[0]
        chunks.append([data[i + 4:i + 8], data[i + 8:i + 8 + n]])
        i += 12 + n
    return chunks


def png_write(chunks: list[list]) -> bytes:
    out = [PNG_SIG]
    for kind, body in chunks:
        out.append(struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body)))
    return b"".join(out)


def _zlib_bomb(n: int) -> bytes:
    return zlib.compress(b"\x00" * n, 9)


def mutate_png(data: bytes, rng: random.Random) -> bytes:
    chunks = png_parse(data)
    for _ in range(rng.choice((1, 1, 2, 3))):
        op = rng.randrange(8)
        kinds = [c[0] for c in chunks]
        if op == 0 and b"IHDR" in kinds:  # a header field
            c = chunks[kinds.index(b"IHDR")]
            field = rng.randrange(7)
            if field < 2 and len(c[1]) < 4 * field + 4:  # (an IHDR cut short, or a chunk an earlier op renamed)
                continue
            if field < 2:
                (old,) = struct.unpack(">I", c[1][4 * field:4 * field + 4])
                c[1] = _put(c[1], 4 * field, ">I", _num(rng, old, 2**32 - 1))
            else:
                c[1] = c[1][:6 + field] + bytes([rng.choice((0, 1, 2, 3, 4, 6, 7, 8, 16, 255))]) + c[1][7 + field:]
        elif op == 1:  # an acTL / fcTL field (frames, sizes, offsets, delays, disposal)
            for c in chunks:
                if c[0] == b"acTL" and rng.random() < 0.5:
                    c[1] = _put(c[1], rng.choice((0, 4)), ">I", _num(rng, 1, 2**32 - 1))
                    break
                if c[0] == b"fcTL" and rng.random() < 0.4:
                    off = rng.choice((0, 4, 8, 12, 16, 20, 22))
                    c[1] = _put(c[1], off, ">H" if off >= 20 else ">I", _num(rng, 1, 65535 if off >= 20 else 2**32 - 1))
                    if rng.random() < 0.3:
                        c[1] = c[1][:24] + bytes([rng.randrange(256), rng.randrange(256)])
                    break
        elif op == 2:  # the pixel data decompressed and recompressed: short, long, bad filter bytes
            idat = [c for c in chunks if c[0] == b"IDAT"]
            if idat:
                try:
                    raw = zlib.decompressobj().decompress(b"".join(c[1] for c in idat))
                except zlib.error:
                    raw = b""
                how = rng.randrange(4)
                if how == 0:
                    raw = raw[:rng.randrange(len(raw) + 1)]
                elif how == 1:
                    raw = raw + raw[:rng.randrange(1, len(raw) + 2)] * rng.choice((1, 10))
                elif how == 2 and raw:
                    raw = bytearray(raw)
                    for _ in range(rng.randrange(1, 8)):
                        raw[rng.randrange(len(raw))] = rng.choice((5, 6, 255, 4))
                    raw = bytes(raw)
                else:
                    raw = b"\x00" * rng.choice((10**6, 5 * 10**7))  # a zlib bomb in the pixel data
                body = zlib.compress(raw, 6)
                first = next(i for i, c in enumerate(chunks) if c[0] == b"IDAT")
                chunks = [c for c in chunks if c[0] != b"IDAT"]
                parts = rng.choice((1, 1, 3, 50))
                step = max(1, len(body) // parts + 1)
                chunks[first:first] = [[b"IDAT", body[k:k + step]] for k in range(0, len(body), step)]
        elif op == 3:  # an ancillary chunk inserted: text (incl. a bomb), eXIf, iCCP, PLTE, tRNS, an animation's
            kind, body = rng.choice((
                (b"tEXt", b"parameters\x00" + rng.choice((b"{}", b"{\"prompt\": 1}", b"x" * 100000, b"[" * 5000))),
                (b"zTXt", b"parameters\x00\x00" + _zlib_bomb(rng.choice((10**5, 10**8)))),
                (b"iTXt", b"comment\x00\x01\x00\x00\x00" + _zlib_bomb(rng.choice((10**5, 10**8)))),
                (b"iTXt", b"showo2\x00\x00\x00en\x00\x00" + b"\xff\xfe" * 10),
                (b"eXIf", b"MM\x00*\x00\x00\x00\x08\x00\x01\x01\x12\x00\x03\x00\x00\x00\x01\x00" + bytes([rng.randrange(256)])
                 + b"\x00\x00"),
                (b"eXIf", b"II*\x00" + struct.pack("<I", rng.choice((0, 8, 2**31))) + b"\xff\xff" + b"\x00" * 20),
                (b"iCCP", b"icc\x00\x00" + zlib.compress(b"\x00" * 128 + b"x" * rng.choice((10, 10**6)))),
                (b"PLTE", bytes(rng.randrange(256) for _ in range(rng.choice((3, 4, 768, 771, 0))))),
                (b"tRNS", bytes(rng.randrange(256) for _ in range(rng.choice((1, 2, 6, 300))))),
                (b"acTL", struct.pack(">II", rng.choice((0, 1, 2, 2**31)), rng.choice((0, 1)))),
                (b"fcTL", struct.pack(">IIIIIHHBB", 0, rng.choice((1, 2**31)), rng.choice((1, 2**31)),
                                      rng.choice((0, 2**31)), 0, 1, rng.choice((0, 1)), rng.randrange(4), rng.randrange(3))),
                (b"sBIT", b"\x00\x09\x10"), (b"pHYs", b"\x00" * 9), (b"gAMA", b"\x00\x00\x00\x00"),
            ))
            chunks.insert(rng.randrange(1, len(chunks) + 1) if chunks else 0, [kind, body])
        elif op == 4:  # a chunk dropped, duplicated or moved (IEND early, IHDR twice, ...)
            _shuffle_items(chunks, rng)
        elif op == 5:  # a chunk's body truncated or extended (its length and CRC fixed)
            if chunks:
                c = rng.choice(chunks)
                c[1] = c[1][:rng.randrange(len(c[1]) + 1)] if rng.random() < 0.5 else c[1] + b"\x00" * rng.randrange(1, 9)
        elif op == 6:  # fdAT sequence numbers and frame data
            for c in chunks:
                if c[0] in (b"fdAT", b"fcTL") and rng.random() < 0.5:
                    c[1] = _put(c[1], 0, ">I", _num(rng, 1, 2**32 - 1))
        else:  # a chunk's type changed (critical/ancillary bits, a known one)
            if chunks:
                c = rng.choice(chunks)
                c[0] = rng.choice((b"IDAT", b"fdAT", b"iDAT", b"IHDR", b"JDAT", c[0].swapcase()))
    return png_write(chunks)


# ---------------------------------------------------------------- JPEG: segments, lengths fixed

def jpeg_parse(data: bytes) -> list[list]:
    """[marker, body] items from after SOI: segments (body without the length), and entropy-coded
    data as [None, bytes]."""
    items, i = [], 2
    while i + 2 <= len(data):
        if data[i] != 0xFF:
            j = i
            while True:  # entropy-coded data up to the next marker that is not a stuffed 0 or an RST
                j = data.find(b"\xff", j)
                if j < 0 or j + 1 >= len(data):
                    j = len(data)
                    break
                if data[j + 1] == 0 or 0xD0 <= data[j + 1] <= 0xD7 or data[j + 1] == 0xFF:
                    j += 2 if data[j + 1] != 0xFF else 1
                    continue
                break
            items.append([None, data[i:j]])
            i = j
            continue
        m = data[i + 1]
        if m in (0xD8, 0xD9, 0x01) or 0xD0 <= m <= 0xD7:
            items.append([m, None])
            i += 2
            continue
        n = struct.unpack(">H", data[i + 2:i + 4])[0] if i + 4 <= len(data) else 2
        items.append([m, data[i + 4:i + 2 + n]])
        i += 2 + n
    return items


def jpeg_write(items: list[list]) -> bytes:
    out = [b"\xff\xd8"]
    for m, body in items:
        if m is None:
            out.append(body)
        elif body is None:
            out.append(bytes([0xFF, m]))
        else:
            out.append(bytes([0xFF, m]) + struct.pack(">H", min(len(body) + 2, 65535)) + body[:65533])
    return b"".join(out)


def _exif(rng: random.Random) -> bytes:
    """An APP1 EXIF body: an orientation, IFD offsets and counts from the odd ones."""
    count = rng.choice((1, 2, 0, 65535))
    offset = rng.choice((8, 0, 2**31, 7, 26))
    entries = struct.pack(">HHIHH", 0x0112, 3, 1, rng.choice((0, 1, 3, 6, 8, 9, 65535)), 0)
    entries += struct.pack(">HHII", rng.choice((0x8769, 0x8825, 0x9286, 0x927C)), rng.choice((4, 7, 2, 13)),
                           rng.choice((1, 2**30, 100)), rng.choice((8, 2**31, 26)))
    return b"Exif\x00\x00MM\x00*" + struct.pack(">I", offset) + struct.pack(">H", count) + entries + b"\x00" * 8


def mutate_jpeg(data: bytes, rng: random.Random) -> bytes:
    items = jpeg_parse(data)
    for _ in range(rng.choice((1, 1, 2, 3))):
        op = rng.randrange(9)
        sofs = [it for it in items if it[0] in (0xC0, 0xC1, 0xC2, 0xC3, 0xC9, 0xCA) and it[1]]
        if op == 0 and sofs:  # the frame header: precision, height, width, components, sampling, tables
            s = rng.choice(sofs)
            field = rng.randrange(6)
            if field == 0:
                s[1] = bytes([rng.choice((8, 12, 16, 0, 255))]) + s[1][1:]
            elif field in (1, 2):
                (old,) = struct.unpack(">H", s[1][2 * field - 1:2 * field + 1])
                s[1] = _put(s[1], 2 * field - 1, ">H", _num(rng, old, 65535))
            elif field == 3:
                n = rng.choice((0, 1, 2, 3, 4, 5, 255))
                comps = s[1][6:]
                s[1] = s[1][:5] + bytes([n]) + (comps * 3)[:3 * n] if n <= 5 else s[1][:5] + bytes([n]) + comps
            elif field == 4 and len(s[1]) > 7:
                k = 6 + 3 * rng.randrange(max(1, (len(s[1]) - 6) // 3)) + 1
                s[1] = s[1][:k] + bytes([rng.choice((0x00, 0x11, 0x22, 0x44, 0x41, 0x14, 0xFF, 0x13))]) + s[1][k + 1:]
            elif len(s[1]) > 8:
                k = 6 + 3 * rng.randrange(max(1, (len(s[1]) - 6) // 3)) + 2
                s[1] = s[1][:k] + bytes([rng.choice((0, 1, 3, 4, 255))]) + s[1][k + 1:]
        elif op == 1 and sofs:  # the coding process changed (baseline, extended, progressive, lossless, arithmetic)
            rng.choice(sofs)[0] = rng.choice((0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC9, 0xCA, 0xCB, 0xF7))
        elif op == 2:  # a quantisation table: precision/id byte, zeros
            for it in items:
                if it[0] == 0xDB and it[1] and rng.random() < 0.5:
                    b = bytearray(it[1])
                    if rng.random() < 0.5:
                        b[0] = rng.choice((0x00, 0x10, 0x04, 0x0F, 0x11))
                    else:
                        b[1:] = b"\x00" * (len(b) - 1)
                    it[1] = bytes(b)
                    break
        elif op == 3:  # a Huffman table: class/id, counts that sum past the values given
            for it in items:
                if it[0] == 0xC4 and it[1] and rng.random() < 0.5:
                    b = bytearray(it[1])
                    if rng.random() < 0.3:
                        b[0] = rng.choice((0x00, 0x01, 0x10, 0x11, 0x04, 0x20, 0xFF))
                    else:
                        for _ in range(rng.randrange(1, 4)):
                            b[1 + rng.randrange(16)] = rng.choice((0, 1, 2, 255, 16))
                    it[1] = bytes(b)
                    break
        elif op == 4:  # the scan header: components, table ids, spectral selection, approximation
            scans = [it for it in items if it[0] == 0xDA and it[1]]
            if scans:
                s = rng.choice(scans)
                b = bytearray(s[1])
                k = rng.randrange(len(b))
                b[k] = rng.choice((0, 1, 2, 3, 4, 0x3F, 0x40, 0xFF, 0x11, 0x44, b[k] ^ 1))
                s[1] = bytes(b)
        elif op == 5:  # a segment inserted: DRI, EXIF, ICC, Adobe, comment, a second SOF or EOI
            seg = rng.choice((
                [0xDD, struct.pack(">H", rng.choice((0, 1, 2, 65535)))], [0xE1, _exif(rng)],
                [0xE2, b"ICC_PROFILE\x00" + bytes([rng.choice((1, 2, 0)), rng.choice((1, 2, 0))]) + b"\x00" * 128],
                [0xEE, b"Adobe" + bytes([0, 100, 0, 0, 0, 0, rng.choice((0, 1, 2, 3))])],
                [0xFE, b"x" * rng.choice((0, 100, 65000))], [0xD9, None], [0xD8, None],
                [0xC0, b"\x08" + struct.pack(">HH", rng.choice((1, 65535, 0)), rng.choice((1, 65535, 0)))
                 + b"\x01\x01\x11\x00"],
            ))
            items.insert(rng.randrange(len(items) + 1), seg)
        elif op == 6:  # entropy-coded data truncated, doubled, or RST markers strewn in
            ecs = [it for it in items if it[0] is None]
            if ecs:
                e = rng.choice(ecs)
                how = rng.randrange(3)
                if how == 0:
                    e[1] = e[1][:rng.randrange(len(e[1]) + 1)]
                elif how == 1:
                    e[1] = e[1] * rng.choice((2, 20))
                else:
                    b = bytearray(e[1])
                    for _ in range(rng.randrange(1, 6)):
                        k = rng.randrange(len(b) + 1)
                        b[k:k] = bytes([0xFF, 0xD0 + rng.randrange(8)])
                    e[1] = bytes(b)
        elif op == 7:  # a segment (or a scan with its data) dropped, duplicated, moved
            _shuffle_items(items, rng)
        else:  # an APPn's body truncated (EXIF, JFIF, ICC)
            apps = [it for it in items if it[0] is not None and 0xE0 <= it[0] <= 0xEF and it[1]]
            if apps:
                a = rng.choice(apps)
                a[1] = a[1][:rng.randrange(len(a[1]) + 1)]
    return jpeg_write(items)


# ---------------------------------------------------------------- GIF: blocks, sub-block lengths fixed

def gif_parse(data: bytes) -> tuple[bytes, bytes, list[list]]:
    """(header + screen descriptor, global table, blocks): ["ext", label, [sub-blocks]] and
    ["img", descriptor (9 bytes), local table, min code size, data]."""
    head = data[:13]
    flags = head[10]
    i = 13
    gct = b""
    if flags & 0x80:
        gct = data[i:i + 3 * (2 << (flags & 7))]
        i += len(gct)
    blocks = []

    def subs(i):
        out = []
        while i < len(data) and data[i]:
            out.append(data[i + 1:i + 1 + data[i]])
            i += 1 + data[i]
        return out, i + 1

    while i < len(data) and data[i] != 0x3B:
        if data[i] == 0x21 and i + 1 < len(data):
            sb, j = subs(i + 2)
            blocks.append(["ext", data[i + 1], sb])
            i = j
        elif data[i] == 0x2C:
            desc = data[i + 1:i + 10]
            j = i + 10
            lct = b""
            if len(desc) == 9 and desc[8] & 0x80:
                lct = data[j:j + 3 * (2 << (desc[8] & 7))]
                j += len(lct)
            mincode = data[j] if j < len(data) else 8
            sb, j = subs(j + 1)
            blocks.append(["img", desc, lct, mincode, b"".join(sb)])
            i = j
        else:
            break
    return head, gct, blocks


def gif_write(head: bytes, gct: bytes, blocks: list[list], trailer: bool = True) -> bytes:
    out = [head, gct]

    def subs(data: bytes) -> bytes:
        return b"".join(bytes([len(data[k:k + 255])]) + data[k:k + 255] for k in range(0, len(data), 255)) + b"\x00"

    for b in blocks:
        if b[0] == "ext":
            out.append(bytes([0x21, b[1]]) + b"".join(bytes([len(s)]) + s for s in b[2] if s) + b"\x00")
        else:
            out.append(b"\x2c" + b[1] + b[2] + bytes([b[3]]) + subs(b[4]))
    return b"".join(out) + (b"\x3b" if trailer else b"")


def _table(flags: int, rng: random.Random) -> bytes:
    return bytes(rng.randrange(256) for _ in range(3 * (2 << (flags & 7))))


def mutate_gif(data: bytes, rng: random.Random) -> bytes:
    head, gct, blocks = gif_parse(data)
    trailer = True
    for _ in range(rng.choice((1, 1, 2, 3))):
        op = rng.randrange(8)
        imgs = [b for b in blocks if b[0] == "img" and len(b[1]) == 9]
        if op == 0:  # the logical screen: width, height, global table flag/size (the table fitted to it)
            field = rng.randrange(3)
            if field < 2:
                (old,) = struct.unpack("<H", head[6 + 2 * field:8 + 2 * field])
                head = _put(head, 6 + 2 * field, "<H", _num(rng, old, 65535))
            else:
                flags = rng.choice((0x00, 0x80, 0x87, 0xF7, 0x81, head[10] ^ 0x80))
                head = head[:10] + bytes([flags]) + head[11:]
                gct = _table(flags, rng) if flags & 0x80 else b""
        elif op == 1 and imgs:  # a frame's left, top, width, height
            b = rng.choice(imgs)
            k = 2 * rng.randrange(4)
            (old,) = struct.unpack("<H", b[1][k:k + 2])
            b[1] = _put(b[1], k, "<H", _num(rng, old, 65535))
        elif op == 2 and imgs:  # a frame's flags: interlace, local table (fitted)
            b = rng.choice(imgs)
            flags = rng.choice((0x00, 0x40, 0x80, 0x87, 0xC7, 0x81))
            b[1] = b[1][:8] + bytes([flags])
            b[2] = _table(flags, rng) if flags & 0x80 else b""
        elif op == 3 and imgs:  # LZW: minimum code size, data cut or grown, codes past the table
            b = rng.choice(imgs)
            how = rng.randrange(4)
            if how == 0:
                b[3] = rng.choice((0, 1, 2, 7, 8, 11, 12, 13, 255))
            elif how == 1:
                b[4] = b[4][:rng.randrange(len(b[4]) + 1)]
            elif how == 2:
                b[4] = b[4] + bytes(rng.randrange(256) for _ in range(rng.choice((1, 100, 10000))))
            else:
                b[4] = b"\xff" * rng.choice((10, 1000, 100000))
        elif op == 4:  # a graphic control extension: delay, disposal, transparency index
            gces = [b for b in blocks if b[0] == "ext" and b[1] == 0xF9 and b[2] and len(b[2][0]) >= 4]
            if gces:
                g = rng.choice(gces)
                s = bytearray(g[2][0])
                field = rng.randrange(3)
                if field == 0:
                    s[1:3] = struct.pack("<H", rng.choice((0, 1, 2, 65535)))
                elif field == 1:
                    s[0] = rng.choice((0x00, 0x1C, 0x0C, 0x1D, 0xFF, 0x04, 0x08))
                else:
                    s[3] = rng.randrange(256)
                g[2][0] = bytes(s if rng.random() < 0.8 else s[:rng.randrange(4)])
        elif op == 5:  # an extension inserted: loop count, a comment, a plain text block, one unknown
            ext = rng.choice((["ext", 0xFF, [b"NETSCAPE2.0", b"\x01" + struct.pack("<H", rng.choice((0, 1, 65535)))]],
                              ["ext", 0xFE, [b"x" * 255] * rng.choice((1, 1000))],
                              ["ext", 0xFE, [b'{"prompt": "a", "seed": 1e999}']],
                              ["ext", 0x01, [struct.pack("<HHHHBBBB", 0, 0, 65535, 65535, 8, 8, 0, 1), b"hello"]],
                              ["ext", 0xF9, [b"\x04\x00\x00\x00"]], ["ext", 0x00, [b"?"]]))
            blocks.insert(rng.randrange(len(blocks) + 1), ext)
        elif op == 6:  # a block dropped, duplicated (up to a hundred frames more) or moved
            _shuffle_items(blocks, rng)
        else:  # no trailer, or blocks only (no frame)
            if rng.random() < 0.5:
                trailer = False
            else:
                blocks = [b for b in blocks if b[0] != "img"] if rng.random() < 0.5 else blocks[:1]
    return gif_write(head, gct, blocks, trailer)


# ---------------------------------------------------------------- mp4 / mov: the box tree, sizes fixed

MP4_CONTAINERS = {b"moov", b"trak", b"mdia", b"minf", b"stbl", b"dinf", b"edts", b"udta", b"mvex", b"moof",
                  b"traf", b"meta", b"ilst", b"stsd", b"avc1", b"avc3", b"hvc1", b"hev1", b"mp4v", b"vp09",
                  b"av01", b"jpeg", b"mjpa", b"dref", b"gmhd"}
#: bytes before a container's children: a full box's version/flags, the sample description's count,
#: a visual sample entry's fixed fields
MP4_PREFIX = {b"meta": 4, b"stsd": 8, b"dref": 8, b"avc1": 78, b"avc3": 78, b"hvc1": 78, b"hev1": 78,
              b"mp4v": 78, b"vp09": 78, b"av01": 78, b"jpeg": 78, b"mjpa": 78}


class Box:
    def __init__(self, kind: bytes, prefix: bytes = b"", body: bytes = b"", children: list | None = None):
        self.kind, self.prefix, self.body, self.children = kind, prefix, body, children
        self.origin: tuple[int, int] | None = None  # a top-level box's payload (start, end) in the parsed file

    def walk(self, path=()):
        yield path + (self,)
        for c in self.children or ():
            yield from c.walk(path + (self,))


def mp4_parse(data: bytes, parent: bytes = b"") -> list[Box]:
    boxes, i = [], 0
    while i + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[i:i + 8])
        head = 8
        if size == 1 and i + 16 <= len(data):
            size, head = struct.unpack(">Q", data[i + 8:i + 16])[0], 16
        elif size == 0:
            size = len(data) - i
        if size < head:
            break
        payload = data[i + head:i + size]
        if kind == b"meta" and payload[4:8] == b"hdlr":  # a QuickTime meta box has no version/flags
            boxes.append(Box(kind, b"", children=mp4_parse(payload, kind)))
        elif kind in MP4_CONTAINERS and len(payload) >= MP4_PREFIX.get(kind, 0) and \
                (kind not in MP4_PREFIX or kind in (b"meta", b"stsd", b"dref") or parent == b"stsd"):
            n = MP4_PREFIX.get(kind, 0)
            boxes.append(Box(kind, payload[:n], children=mp4_parse(payload[n:], kind)))
        else:
            boxes.append(Box(kind, body=payload))
        if not parent:
            boxes[-1].origin = (i + head, i + size)
        i += size
    return boxes


def _mp4_bytes(boxes: list[Box]) -> bytes:
    out = []
    for b in boxes:
        payload = b.prefix + (_mp4_bytes(b.children) if b.children is not None else b.body)
        out.append(struct.pack(">I4s", 8 + len(payload), b.kind) + payload)
    return b"".join(out)


def mp4_write(boxes: list[Box]) -> bytes:
    """The file of the top-level ``boxes``, their sizes fixed and, as a muxer (or qt-faststart) does, the
    chunk offsets (``stco``/``co64`` entries) that pointed into a top-level ``mdat`` moved by as much as it
    moved: a box grown before it (a moov first, as faststart files and web videos have it), or the mdat
    moved. An offset that points into no mdat (a mutated one) is left as it is; a duplicated mdat's
    offsets follow its first copy."""
    moves, at = [], 0
    for b in boxes:
        size = len(_mp4_bytes([b]))
        if b.kind == b"mdat" and b.origin is not None and all(m[0] != b.origin for m in moves):
            moves.append((b.origin, at + 8 - b.origin[0]))
        at += size
    if any(delta for _, delta in moves):
        for path in (p for b in boxes for p in b.walk()):
            box = path[-1]
            if box.kind in (b"stco", b"co64") and box.children is None and len(box.body) >= 8:
                box.body = _moved_offsets(box.body, 8 if box.kind == b"co64" else 4, moves)
    return _mp4_bytes(boxes)


def _moved_offsets(body: bytes, width: int, moves: list) -> bytes:
    """A chunk offset table's ``body`` (version/flags, count, entries of ``width`` bytes) with each entry
    inside a moved mdat's old payload moved with it (those past the declared count too)."""
    fmt, top = (">Q", 2**64 - 1) if width == 8 else (">I", 2**32 - 1)
    out = bytearray(body)
    for k in range(8, len(body) - width + 1, width):
        (v,) = struct.unpack(fmt, body[k:k + width])
        for (start, end), delta in moves:
            if start <= v < end:
                out[k:k + width] = struct.pack(fmt, min(max(v + delta, 0), top))
                break
    return bytes(out)


#: (box, byte offset in the body, struct format) of the fields that say sizes, times and counts
#: (version 0 layouts, as PyAV writes them)
MP4_FIELDS = {
    b"mvhd": ((12, ">I"), (16, ">I"), (20, ">I"), (96, ">I")),  # timescale, duration, rate, next track id
    b"mdhd": ((12, ">I"), (16, ">I")),  # timescale, duration
    b"tkhd": ((12, ">I"), (20, ">I"), (76, ">I"), (80, ">I"), (40, ">I"), (52, ">I"), (56, ">I"), (72, ">I")),
    b"stts": ((4, ">I"), (8, ">I"), (12, ">I")), b"ctts": ((4, ">I"), (8, ">I"), (12, ">I")),
    b"stss": ((4, ">I"), (8, ">I")), b"stsc": ((4, ">I"), (8, ">I"), (12, ">I"), (16, ">I")),
    b"stsz": ((4, ">I"), (8, ">I"), (12, ">I")), b"stco": ((4, ">I"), (8, ">I")), b"co64": ((4, ">I"), (8, ">Q")),
    b"elst": ((4, ">I"), (8, ">I"), (12, ">i"), (16, ">I")), b"hdlr": ((8, "4s"),),
    b"avcC": ((1, "B"), (3, "B"), (4, "B"), (5, "B"), (6, ">H")), b"pasp": ((0, ">I"), (4, ">I")),
    b"colr": ((4, ">H"), (6, ">H")), b"btrt": ((0, ">I"),), b"sgpd": ((4, ">I"),), b"sbgp": ((8, ">I"),),
}
#: a visual sample entry's fields (after its 8-byte header): width, height, resolution, frame count, depth
ENTRY_FIELDS = ((24, ">H"), (26, ">H"), (28, ">I"), (40, ">H"), (74, ">H"), (76, ">h"))
FOURCCS = (b"avc1", b"hvc1", b"mp4v", b"vp09", b"av01", b"jpeg", b"raw ", b"mjpa", b"xxxx", b"avc3", b"mp4a",
           b"apcn", b"rle ", b"png ")


def _field(body: bytes, off: int, fmt: str, rng: random.Random) -> bytes:
    size = struct.calcsize(fmt)
    if off + size > len(body):
        return body
    if fmt == "4s":
        return _put(body, off, fmt, rng.choice((b"soun", b"text", b"vide", b"\x00\x00\x00\x00", b"meta")))
    (old,) = struct.unpack(fmt, body[off:off + size])
    if fmt.endswith(("i", "h")):
        v = rng.choice((0, -1, 1, -(2 ** (8 * size - 1)), 2 ** (8 * size - 1) - 1, old * 2, -old))
        return _put(body, off, fmt, max(min(v, 2 ** (8 * size - 1) - 1), -(2 ** (8 * size - 1))))
    return _put(body, off, fmt, _num(rng, old, 2 ** (8 * size) - 1))


def mutate_mp4(data: bytes, rng: random.Random) -> bytes:
    boxes = mp4_parse(data)
    for _ in range(rng.choice((1, 1, 2, 3))):
        paths = [p for b in boxes for p in b.walk()]
        op = rng.randrange(7)
        if op <= 1:  # a field that says a size, a time or a count
            cands = [p[-1] for p in paths if p[-1].kind in MP4_FIELDS and p[-1].children is None]
            if cands:
                b = rng.choice(cands)
                off, fmt = rng.choice(MP4_FIELDS[b.kind])
                b.body = _field(b.body, off, fmt, rng)
        elif op == 2:  # a sample table's entries: one value, the count short of them, the table cut
            cands = [p[-1] for p in paths if p[-1].kind in (b"stts", b"stsz", b"stco", b"stsc", b"stss", b"ctts",
                                                            b"co64", b"elst") and p[-1].children is None]
            if cands:
                b = rng.choice(cands)
                how = rng.randrange(3)
                if how == 0 and len(b.body) > 12:
                    k = 8 + 4 * rng.randrange((len(b.body) - 8) // 4)
                    b.body = _field(b.body, k, ">I", rng)
                elif how == 1:
                    b.body = b.body[:8 + 4 * rng.randrange(max(1, (len(b.body) - 8) // 4))]
                else:
                    b.body = b.body + b.body[8:] * rng.choice((1, 100))
        elif op == 3:  # a sample entry: its fourcc, width, height, frame count, depth
            cands = [p[-1] for p in paths if len(p) > 1 and p[-2].kind == b"stsd"]
            if cands:
                e = rng.choice(cands)
                if rng.random() < 0.4:
                    e.kind = rng.choice(FOURCCS)
                elif e.prefix:
                    off, fmt = rng.choice(ENTRY_FIELDS)
                    e.prefix = _field(e.prefix, off - 0, fmt, rng)
        elif op == 4:  # the codec's parameters (avcC: SPS/PPS bytes, counts, lengths)
            cands = [p[-1] for p in paths if p[-1].kind in (b"avcC", b"hvcC", b"esds", b"vpcC", b"av1C")]
            if cands:
                b = rng.choice(cands)
                body = bytearray(b.body)
                how = rng.randrange(3)
                if how == 0 and len(body) > 8:
                    for _ in range(rng.randrange(1, 4)):
                        k = rng.randrange(8, len(body))
                        body[k] ^= 1 << rng.randrange(8)
                elif how == 1:
                    body = body[:rng.randrange(len(body) + 1)]
                else:
                    body = bytearray(_field(bytes(body), rng.choice((5, 6)), rng.choice(("B", ">H")), rng))
                b.body = bytes(body)
        elif op == 5:  # a box dropped, duplicated or moved (a second trak, moov before mdat, no stsz)
            parents = [boxes] + [p[-1].children for p in paths if p[-1].children]
            _shuffle_items(rng.choice(parents), rng)
        else:  # a box's type changed (stco to co64, a track's handler's box, a free box)
            cands = [p[-1] for p in paths]
            b = rng.choice(cands)
            b.kind = rng.choice((b"free", b"co64", b"stco", b"stz2", b"moov", b"trak", b"uuid", b"mdat", b"wide"))
            if b.kind not in MP4_CONTAINERS and b.children is not None:
                b.body, b.children = b.prefix + _mp4_bytes(b.children), None
                b.prefix = b""
    return mp4_write(boxes)


# ---------------------------------------------------------------- WebM / Matroska: EBML, sizes fixed

EBML_MASTERS = {0x1A45DFA3, 0x18538067, 0x114D9B74, 0x4DBB, 0x1549A966, 0x1654AE6B, 0xAE, 0xE0, 0xE1,
                0x1F43B675, 0xA0, 0x1C53BB6B, 0xBB, 0xB7, 0x1254C367, 0x7373, 0x63C0, 0x67C8, 0x6D80,
                0x6240, 0x5034, 0x55B0, 0x1043A770, 0xB6}
EBML_UINTS = (0xB0, 0xBA, 0x2AD7B1, 0xD7, 0x83, 0xE7, 0x23E383, 0x9C, 0x54B0, 0x54BA, 0x54B2, 0x4285,
              0x42F3, 0x42F2, 0x42F7, 0x4287, 0x73C5, 0x53AC, 0xB3, 0xF7, 0xF1, 0x9A, 0x55EE, 0x56AA, 0x56BB,
              0x54AA, 0x54BB, 0x54CC, 0x54DD)


def _vint(data: bytes, i: int, keep_marker: bool) -> tuple[int, int]:
    first = data[i]
    n = next((k for k in range(8) if first & (0x80 >> k)), 7) + 1
    v = first if keep_marker else first & (0xFF >> n)
    for k in range(1, n):
        v = (v << 8) | (data[i + k] if i + k < len(data) else 0)
    return v, n


def ebml_parse(data: bytes) -> list[list]:
    """[id, value]: a master's value its children, another's its bytes."""
    out, i = [], 0
    while i < len(data):
        if data[i] == 0:
            break
        eid, a = _vint(data, i, True)
        if i + a >= len(data):
            break
        size, b = _vint(data, i + a, False)
        start = i + a + b
        if size == (1 << (7 * b)) - 1:  # unknown size: to the end
            size = len(data) - start
        body = data[start:start + size]
        out.append([eid, ebml_parse(body) if eid in EBML_MASTERS else body, i])  # (i: where it was)
        i = start + size
    return out


def _id_bytes(eid: int) -> bytes:
    return eid.to_bytes(max(1, (eid.bit_length() + 7) // 8), "big")


def ebml_write(elements: list[list]) -> bytes:
    out = []
    for e in elements:
        eid, value = e[0], e[1]
        body = ebml_write(value) if isinstance(value, list) else value
        out.append(_id_bytes(eid) + b"\x01" + len(body).to_bytes(7, "big") + body)
    return b"".join(out)


def _ebml_find(elements: list[list], eid: int):
    for e in elements:
        if e[0] == eid:
            yield e
        if isinstance(e[1], list):
            yield from _ebml_find(e[1], eid)


def ebml_fix_positions(tree: list[list]) -> None:
    """A segment's SeekHead positions and its Cues' cluster positions set to where the elements
    they name are once written (their sizes changed): as a muxer writes them."""
    for seg in (e for e in tree if e[0] == 0x18538067 and isinstance(e[1], list)):
        children = seg[1]
        fields = list(_ebml_find(children, 0x53AC)) + list(_ebml_find(children, 0xF1))
        olds = {id(f): int.from_bytes(f[1], "big") if f[1] else 0 for f in fields}
        for f in fields:  # eight bytes each, before the offsets are counted, so they hold
            f[1] = b"\x00" * 8
        where, moved, pos = {}, {}, 0
        for c in children:
            where.setdefault(c[0], pos)
            if len(c) > 2:
                moved.setdefault(c[2], pos)
            pos += len(ebml_write([c]))
        for seek in _ebml_find(children, 0x4DBB):
            sid = next((int.from_bytes(x[1], "big") for x in seek[1] if x[0] == 0x53AB and isinstance(x[1], bytes)), None)
            for f in (x for x in seek[1] if x[0] == 0x53AC):
                f[1] = where.get(sid, olds[id(f)]).to_bytes(8, "big")
        for f in _ebml_find(children, 0xF1):
            f[1] = moved.get(olds[id(f)], olds[id(f)]).to_bytes(8, "big")


def mutate_webm(data: bytes, rng: random.Random) -> bytes:
    tree = ebml_parse(data)

    def walk(elements):
        for e in elements:
            yield e, elements
            if isinstance(e[1], list):
                yield from walk(e[1])

    for _ in range(rng.choice((1, 1, 2, 3))):
        nodes = list(walk(tree))
        op = rng.randrange(7)
        if op <= 1:  # an unsigned field: a size, a scale, a track number, a timecode, an EBML limit
            cands = [e for e, _ in nodes if e[0] in EBML_UINTS]
            if cands:
                e = rng.choice(cands)
                old = int.from_bytes(e[1], "big") if e[1] else 0
                width = rng.choice((len(e[1]) or 1, 1, 2, 4, 8, 0, 9))
                v = _num(rng, old, 2 ** 64 - 1)
                e[1] = b"" if width == 0 else (v % (1 << (8 * min(width, 8)))).to_bytes(width, "big")
        elif op == 2:  # the duration (a float): NaN, inf, negative, huge, a width floats do not have
            cands = [e for e, _ in nodes if e[0] in (0x4489, 0xB5, 0x2383E3)]
            if cands:
                e = rng.choice(cands)
                e[1] = rng.choice((struct.pack(">d", float("nan")), struct.pack(">d", float("inf")),
                                   struct.pack(">d", -1.0), struct.pack(">d", 1e300), struct.pack(">f", 0.0),
                                   b"\x00\x01\x02", b""))
        elif op == 3:  # the codec, the doc type, the codec's private data
            cands = [e for e, _ in nodes if e[0] in (0x86, 0x4282, 0x63A2)]
            if cands:
                e = rng.choice(cands)
                if e[0] == 0x86:
                    e[1] = rng.choice((b"V_VP8", b"V_VP9", b"V_AV1", b"V_MPEG4/ISO/AVC", b"V_UNCOMPRESSED",
                                       b"V_MJPEG", b"A_OPUS", b"", b"S_TEXT/UTF8", b"V_MS/VFW/FOURCC"))
                elif e[0] == 0x4282:
                    e[1] = rng.choice((b"webm", b"matroska", b"x", b""))
                else:
                    e[1] = bytes(rng.randrange(256) for _ in range(rng.choice((0, 4, 40, 5000))))
        elif op == 4:  # a block: its track number, timecode, flags (lacing), frame cut
            cands = [e for e, _ in nodes if e[0] in (0xA3, 0xA1) and len(e[1]) > 4]
            if cands:
                e = rng.choice(cands)
                b = bytearray(e[1])
                how = rng.randrange(4)
                if how == 0:
                    b[0] = rng.choice((0x80, 0x81, 0x82, 0xFF, 0x40))
                elif how == 1:
                    b[1:3] = struct.pack(">h", rng.choice((0, -32768, 32767, -1)))
                elif how == 2:
                    b[3] = rng.choice((0x80, 0x82, 0x84, 0x86, 0x06, 0x00, 0xFF))
                else:
                    b = b[:rng.randrange(4, len(b) + 1)]
                e[1] = bytes(b)
        elif op == 5:  # an element dropped, duplicated (clusters, track entries) or moved
            lists = [tree] + [e[1] for e, _ in nodes if isinstance(e[1], list) and e[1]]
            _shuffle_items(rng.choice(lists), rng)
        else:  # an element's id changed (a master given another's, a block a master's)
            cands = [e for e, _ in nodes]
            e = rng.choice(cands)
            new = rng.choice((0xAE, 0xA3, 0x1F43B675, 0x1654AE6B, 0xEC, 0xB0, 0x4489))
            if (new in EBML_MASTERS) == isinstance(e[1], list):
                e[0] = new
    if rng.random() < 0.9:  # (else the positions stay stale: a muxer's bug, or a file edited by hand)
        ebml_fix_positions(tree)
    return ebml_write(tree)


# ---------------------------------------------------------------- safetensors: the header as JSON, its length fixed

def mutate_safetensors(data: bytes, rng: random.Random) -> bytes:
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    blob = data[8 + n:]
    names = [k for k in header if k != "__metadata__"]
    text = None
    for _ in range(rng.choice((1, 1, 2))):
        op = rng.randrange(8)
        name = rng.choice(names)
        e = header.get(name)
        offsets = e.get("data_offsets") if isinstance(e, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(x, int) for x in offsets)):
            continue  # (an entry an earlier mutation changed past what these mutate)
        if op == 0:  # a dtype
            e["dtype"] = rng.choice(("F16", "BF16", "F64", "F32", "I8", "I64", "U8", "BOOL", "F8_E4M3", "F8_E5M2",
                                     "C64", "U64", ""))
        elif op == 1:  # a shape: dims added, dropped, swapped, zero, negative, huge; its bytes kept
            s = list(e.get("shape", []))
            e["shape"] = rng.choice((s[::-1], s[1:], s + [1], [1] + s, [0] + s[1:], [2**31] + s[1:], [-1] + s[1:],
                                     [x * 2 for x in s], [2**32, 2**32], [1.5] + s[1:], [], [math.prod(s)],
                                     ["2"] + s[1:] if s else []))
        elif op == 2:  # the data offsets: swapped, overlapping, past the end, unaligned
            a, b = e["data_offsets"]
            e["data_offsets"] = rng.choice(([b, a], [a, a], [a + 1, b + 1], [a, b + len(blob)], [0, b - a],
                                            [a, 2**64 - 1], [a - 1, b], [a, b, 0], [a]))
        elif op == 3:  # a tensor named twice in the text, or given another's entry
            other = rng.choice(names)
            header[rng.choice((name + "x", other, name.upper()))] = dict(header[other]) if isinstance(
                header.get(other), dict) else {}
        elif op == 4:  # the metadata: a value's JSON mutated, the map's type, a key's
            meta = header.get("__metadata__") if isinstance(header.get("__metadata__"), dict) else {}
            key = rng.choice(list(meta) or ["showo2"])
            val = meta.get(key, "{}")
            try:
                mutated = json.dumps(base.mutate_json_value(json.loads(val), rng), allow_nan=True)
            except (ValueError, TypeError):  # (not JSON text; or no text: a value an earlier mutation set)
                mutated = val[: len(val) // 2] if isinstance(val, str) else "{"
            meta = dict(meta)
            meta[key] = rng.choice((mutated, mutated, 1, None, ["x"], "x" * 10**6))
            header["__metadata__"] = rng.choice((meta, meta, meta, [], "x", None))
        elif op == 5:  # the data region cut or grown
            blob = blob[:rng.randrange(len(blob) + 1)] if rng.random() < 0.5 else blob + b"\x00" * rng.choice((1, 4, 4096))
        elif op == 6:  # a tensor dropped
            if len(names) > 1:
                header.pop(name, None)
        else:  # the data's values: NaN, inf, huge (float32 bit patterns)
            a, b = e["data_offsets"]
            k = a + 4 * rng.randrange(max(1, (b - a) // 4))
            blob = blob[:k] + rng.choice((b"\x00\x00\xc0\x7f", b"\x00\x00\x80\x7f", b"\xff\xff\x7f\x7f")) + blob[k + 4:]
    text = json.dumps(header).encode()
    if rng.random() < 0.15:  # a name given twice in the text itself (the format forbids it; JSON allows it)
        first = names[0]
        dup = json.dumps({first: header.get(first, {})})[1:-1].encode()
        text = text[:-1] + b", " + dup + b"}"
    if rng.random() < 0.1:
        text += b" " * rng.choice((1, 7, 100))  # padding, as the format allows
    return struct.pack("<Q", len(text)) + text + blob


# ---------------------------------------------------------------- torch's zip archive: members and pickle, CRCs fixed

def mutate_torch_zip(data: bytes, rng: random.Random) -> bytes:
    zin = zipfile.ZipFile(io.BytesIO(data))
    members = [[i.filename, zin.read(i.filename)] for i in zin.infolist()]
    for _ in range(rng.choice((1, 1, 2))):
        op = rng.randrange(5)
        if op <= 1:  # the pickle: an integer argument (a shape, a stride, an offset, a storage's size)
            m = next(m for m in members if m[0].endswith("data.pkl"))
            ops = [(o, a, p) for o, a, p in pickletools.genops(m[1]) if o.name in ("BININT", "BININT1", "BININT2")]
            if ops:
                o, arg, pos = rng.choice(ops)
                width = {"BININT": 4, "BININT1": 1, "BININT2": 2}[o.name]
                top = 2 ** (8 * width) - 1
                v = _num(rng, arg, top)
                m[1] = m[1][:pos + 1] + v.to_bytes(width, "little") + m[1][pos + 1 + width:]
        elif op == 2:  # the pickle: a string (a storage's type, a key, a dtype)
            m = next(m for m in members if m[0].endswith("data.pkl"))
            ops = [(o, a, p) for o, a, p in pickletools.genops(m[1]) if o.name in ("SHORT_BINUNICODE", "BINUNICODE")
                   and isinstance(a, str)]
            if ops:
                o, arg, pos = rng.choice(ops)
                new = rng.choice(("DoubleStorage", "HalfStorage", "LongStorage", "ByteStorage", "BoolStorage", "cpu",
                                  "cuda", "meta", "x", arg + "x", arg[:-1], "0", "99"))
                enc = new.encode()
                head = b"\x8c" + bytes([len(enc)]) if len(enc) < 256 else b"X" + struct.pack("<I", len(enc))
                width = 2 if o.name == "SHORT_BINUNICODE" else 5
                old = arg.encode()
                m[1] = m[1][:pos] + head + enc + m[1][pos + width + len(old):]
        elif op == 3:  # a storage's bytes cut, grown or dropped; version and byte order
            m = rng.choice(members)
            if m[0].endswith("/version"):
                m[1] = rng.choice((b"99\n", b"", b"x\n", b"1\n"))
            elif m[0].endswith("/byteorder"):
                m[1] = rng.choice((b"big", b"", b"middle"))
            else:
                m[1] = m[1][:rng.randrange(len(m[1]) + 1)] if rng.random() < 0.5 else m[1] + b"\x00" * 64
        else:  # a member dropped, duplicated, moved
            _shuffle_items(members, rng)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:
        for name, body in members:
            z.writestr(zipfile.ZipInfo(name), body)
    return out.getvalue()


MUTATORS = {"png": mutate_png, "apng": mutate_png, "jpeg": mutate_jpeg, "gif": mutate_gif, "mp4": mutate_mp4,
            "mov": mutate_mp4, "webm": mutate_webm, "latents": mutate_safetensors}


def mutate(data: bytes, kind: str, rng: random.Random) -> bytes:
    """A structured mutant of ``data`` (``kind``: the seed's format); one in ten a byte-level mutant
    of the structured one (a field the structure cannot name)."""
    if kind == "pth":
        out = mutate_torch_zip(data, rng)
    elif kind in ("st", "latents"):
        out = mutate_safetensors(data, rng)
    else:
        out = MUTATORS[kind](data, rng)
    return base.mutate_bytes(out, rng) if rng.random() < 0.1 else out


# ---------------------------------------------------------------- seeds


def _frames(n: int = 9, side: int = 64):
    import av
    import numpy as np

    frames = []
    mp4 = base.MEDIA / "video1.mp4"
    if mp4.is_file():
        with av.open(str(mp4)) as c:
            for f in c.decode(video=0):
                frames.append(np.asarray(f.to_image().resize((side, side * 3 // 4 // 2 * 2))))
                if len(frames) == n:
                    break
    while len(frames) < n:
        frames.append(np.full((side * 3 // 4 // 2 * 2, side, 3), 25 * len(frames) % 256, np.uint8))
    return frames


def _video(path: Path, codec: str, fmt: str | None = None, pix: str = "yuv420p", sar=None,
           faststart: bool = False) -> Path:
    import av

    with av.open(str(path), "w", format=fmt, options={"movflags": "+faststart"} if faststart else None) as c:
        s = c.add_stream(codec, rate=8)
        frames = _frames()
        s.width, s.height, s.pix_fmt = frames[0].shape[1], frames[0].shape[0], pix
        if sar is not None:  # non-square pixels (a pasp box)
            s.codec_context.sample_aspect_ratio = sar
        for a in frames:
            c.mux(s.encode(av.VideoFrame.from_ndarray(a, format="rgb24")))
        c.mux(s.encode())
    return path


def _faststart_copy(path: Path, packets: int = 12) -> Path | None:
    """The shared mp4's first ``packets`` video packets remuxed (not re-encoded: its encoder's avcC,
    B-frames and composition offsets) with the moov first, as web videos are served."""
    import av

    src = base.MEDIA / "video1.mp4"
    if not src.is_file():
        return None
    with av.open(str(src)) as i, av.open(str(path), "w", options={"movflags": "+faststart"}) as o:
        s = o.add_stream_from_template(i.streams.video[0])
        for n, pkt in enumerate(i.demux(i.streams.video[0])):
            if pkt.dts is None or n >= packets:
                continue
            pkt.stream = s
            o.mux(pkt)
    return path


def seeds(reader: str, work: Path) -> list:
    from PIL import Image

    S = base.Seed
    im = base._photo(80)
    if reader == "png":
        from showo2_cli.media import write_image

        im.save(work / "a.png")
        im.convert("RGBA").save(work / "b.png")
        im.convert("P").save(work / "c.png")
        im.convert("L").save(work / "d.png")
        p = write_image(work / "meta.png", im, {"prompt": "a red circle", "seed": 1, "steps": 2})
        return [S(n, work / n, "png") for n in ("a.png", "b.png", "c.png", "d.png")] + [S("meta.png", Path(p), "png")]
    if reader == "apng":
        ims = [Image.fromarray(f) for f in _frames(5)]
        ims[0].save(work / "a.png", save_all=True, append_images=ims[1:], duration=100, loop=0)
        ims[0].save(work / "b.png", save_all=True, append_images=ims[1:], duration=[50, 100, 0, 10, 10],
                    disposal=2, blend=1, default_image=True)
        return [S("apng", work / "a.png", "apng"), S("apng-default", work / "b.png", "apng")]
    if reader == "jpeg":
        from showo2_cli.media import write_image

        exif = Image.Exif()
        exif[0x0112] = 6
        im.save(work / "a.jpg", quality=85)
        im.save(work / "b.jpg", progressive=True)
        im.save(work / "c.jpg", exif=exif.tobytes(), subsampling=0)
        im.convert("L").save(work / "d.jpg")
        im.convert("CMYK").save(work / "e.jpg")
        p = write_image(work / "meta.jpg", im, {"prompt": "a red circle", "seed": 1, "steps": 2})
        photos = sorted(base.MEDIA.glob("*.jpg"))[:1]  # a real phone photo's segments, shrunk to keep it quick
        out = [S(n, work / n, "jpeg") for n in ("a.jpg", "b.jpg", "c.jpg", "d.jpg", "e.jpg")] + [S("meta.jpg", Path(p), "jpeg")]
        for ph in photos:
            with Image.open(ph) as big:
                small = big.copy()
                small.thumbnail((160, 160))
                small.save(work / "photo.jpg", exif=big.info.get("exif", b""), icc_profile=big.info.get("icc_profile"))
            out.append(S("photo.jpg", work / "photo.jpg", "jpeg"))
        return out
    if reader == "gif":
        ims = [Image.fromarray(f) for f in _frames(5, 48)]
        ims[0].save(work / "a.gif", save_all=True, append_images=ims[1:], duration=100, loop=0)
        ims[0].save(work / "still.gif")
        out = [S("gif", work / "a.gif", "gif"), S("still.gif", work / "still.gif", "gif")]
        real = base.MEDIA / "waves.gif"
        if real.is_file():
            with Image.open(real) as g:  # the real one's first frames, small
                frames = []
                for k in range(min(getattr(g, "n_frames", 1), 4)):
                    g.seek(k)
                    frames.append(g.convert("RGB").resize((48, 48)))
            frames[0].save(work / "waves.gif", save_all=True, append_images=frames[1:], duration=80, loop=0,
                           disposal=2)
            out.append(S("waves.gif", work / "waves.gif", "gif"))
        return out
    if reader == "mp4":
        from fractions import Fraction

        rot = work / "rot90.mp4"  # a phone video's display matrix (tkhd), set in the box tree
        boxes = mp4_parse(_video(work / "r.mp4", "libx264").read_bytes())
        for path in (p for b in boxes for p in b.walk()):
            if path[-1].kind == b"tkhd":
                path[-1].body = path[-1].body[:40] + struct.pack(">9i", 0, 1 << 16, 0, -(1 << 16), 0, 0, 0, 0,
                                                                 1 << 30) + path[-1].body[76:]
        rot.write_bytes(mp4_write(boxes))
        return [S("h264.mp4", _video(work / "a.mp4", "libx264"), "mp4"),
                S("mpeg4.mp4", _video(work / "b.mp4", "mpeg4"), "mp4"),
                S("meta.mp4", _written_video(work / "meta.mp4"), "mp4"),
                S("sar.mp4", _video(work / "s.mp4", "libx264", sar=Fraction(4, 3)), "mp4"), S("rot90.mp4", rot, "mp4"),
                S("faststart.mp4", _video(work / "f.mp4", "libx264", faststart=True), "mp4")] + \
            ([S("web.mp4", web, "mp4")] if (web := _faststart_copy(work / "web.mp4")) else [])
    if reader == "mov":
        return [S("mjpeg.mov", _video(work / "a.mov", "mjpeg", pix="yuvj420p"), "mov"),
                S("h264.mov", _video(work / "b.mov", "libx264"), "mov"),
                S("faststart.mov", _video(work / "c.mov", "libx264", faststart=True), "mov")]
    if reader == "webm":
        return [S("vp9.webm", _video(work / "a.webm", "libvpx-vp9"), "webm"),
                S("vp8.webm", _video(work / "b.webm", "libvpx"), "webm"),
                S("h264.mkv", _video(work / "c.mkv", "libx264"), "webm"),
                S("meta.webm", _written_video(work / "meta.webm"), "webm")]
    if reader == "latents":
        from showo2_cli import api

        model = base.demo_model()
        res = api.encode(im, model.vae, api.EncodeOptions(size=(64, 64)))
        a = api.save_latents(work / "image.safetensors", res.latents, res.metadata)
        res = api.encode(str(_video(work / "v.mp4", "libx264")), model.vae, api.EncodeOptions(size=(32, 32), frames=5))
        b = api.save_latents(work / "video.safetensors", res.latents, res.metadata)
        return [S("image.safetensors", Path(a), "latents"), S("video.safetensors", Path(b), "latents")]
    if reader == "vae":
        import shutil

        import torch
        from safetensors.torch import load_file

        import showo2_cli

        demo = Path(showo2_cli.__file__).parent / "assets" / "demo" / "vae"
        root = work / "vae"
        shutil.copytree(demo, root)
        pth = work / "pth"
        pth.mkdir()
        torch.save(load_file(str(root / "diffusion_pytorch_model.safetensors")), pth / "Wan2.1_VAE.pth")
        return [S("vae.safetensors", root / "diffusion_pytorch_model.safetensors", "st", root=root),
                S("Wan2.1_VAE.pth", pth / "Wan2.1_VAE.pth", "pth", root=pth)]
    raise ValueError(reader)


def _written_video(path: Path) -> Path:
    import numpy as np

    from showo2_cli.media import write_video

    return Path(write_video(path, np.stack(_frames(5, 64)), fps=8, metadata={"prompt": "waves", "seed": 1, "steps": 2}))


# ---------------------------------------------------------------- the entry points

_SERVER = None


def _training_sample(target: Path, video: bool):
    """The sample a ``pairs`` training source reads from ``target`` (a metadata.jsonl beside it)."""
    import tempfile

    from showo2_cli.training import load_config
    from showo2_cli.training.data import make_sources

    folder = target.parent
    (folder / "metadata.jsonl").write_text(json.dumps({"file_name": target.name, "text": "a photo"}) + "\n")
    role, frames = ("t2v", "frames = 5\n") if video else ("t2i", "")
    (folder / "t.toml").write_text(
        f'mode = "showo2"\noutput_dir = "run"\n[model]\ninit_spec = "tiny"\nvae_base_dim = 4\n'
        f'[[data]]\nkind = "pairs"\nrole = "{role}"\npath = "{folder}"\nresolution = 32\n{frames}'
        f'[batch]\n{role} = 1\n[optim]\nmax_steps = 1\n')
    cfg = load_config(folder / "t.toml")
    with tempfile.TemporaryDirectory(dir=folder) as index:
        return make_sources(cfg, None, Path(index))[0].get(0)


def _steps_media(target: Path, i: int) -> list:

    import showo2_cli.media as M
    from showo2_cli import api
    from showo2_cli.pipelines.latents import read_source

    def kind():
        return M.probe_kind(target)

    steps = [("probe", kind), ("metadata", lambda: M.read_metadata(target)),
             ("check_video", lambda: M.check_video(target) if kind() == "video" else None),
             ("read_image(min_side)", lambda: M.read_image(target, min_side=64) if kind() == "image" else None),
             ("read_image", lambda: M.read_image(target) if kind() == "image" else None),
             ("read_media", lambda: M.read_media(target, num_frames=4)),
             ("encode read", lambda: read_source(target, (32, 32), 5)),
             ("training", lambda: _training_sample(target, kind() == "video"))]
    if READERS_ONLY[0]:
        return steps
    model = base.demo_model()
    steps += [("caption", lambda: api.caption(model, target, api.CaptionOptions(max_new_tokens=1))),
             ("encode", lambda: api.encode_file(target, model.vae, target.parent / "out.safetensors",
                                                api.EncodeOptions(size=(32, 32), frames=5), overwrite=True))]
    if i % 3 == 0:
        steps.append(("i2v", lambda: api.image_to_video(model, target, ["waves"], api.GenerateOptions(
            size=(32, 32), steps=2, frames=5)) if kind() == "image" else None))
    if i % 4 == 0:
        steps.append(("server", lambda: _post(target)))
    return steps


def _post(target: Path):
    global _SERVER
    if _SERVER is None:
        _SERVER = base.ServerClient()
    data = target.read_bytes()
    mime = {b"\x89PNG": "image/png", b"\xff\xd8\xff": "image/jpeg", b"GIF8": "image/gif"}
    kind = next((m for k, m in mime.items() if data.startswith(k)), "video/mp4")
    seed = base.Seed("data-url-video" if kind.startswith("video") else "data-url", target)
    out = _SERVER(seed, target) if kind.startswith("video") else _post_image(target, kind)
    if out.startswith("defect"):
        raise RuntimeError(f"server: {out}")


def _post_image(target: Path, mime: str) -> str:
    import base64

    url = f"data:{mime};base64," + base64.b64encode(target.read_bytes()).decode()
    body = json.dumps({"model": "demo", "max_tokens": 1, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "?"}, {"type": "image_url", "image_url": {"url": url}}]}]})
    r = _SERVER.http.post("/v1/chat/completions", content=body, headers={"content-type": "application/json"})
    if r.status_code >= 500:
        return f"defect:http-{r.status_code}: {r.text[:200]}"
    if r.status_code >= 400:
        err = r.json().get("error") if r.headers.get("content-type", "").startswith("application/json") else None
        if not isinstance(err, dict) or "\n" in str(err.get("message")):
            return f"defect:http-{r.status_code}-no-error-object"
    return "ok"


def _steps_latents(target: Path, i: int) -> list:
    from showo2_cli import api
    from showo2_cli.pipelines.latents import load_latents

    if READERS_ONLY[0]:
        return [("load_latents", lambda: load_latents(target))]
    model = base.demo_model()

    def decode():  # what `showo2 decode` writes (an image or a video beside it), for latents of a small size
        z, meta = load_latents(target)
        if z.numel() <= 16 * 4 * 16 * 16:
            api.decode_file(target, model.vae, overwrite=True, loaded=(z, meta))

    return [("load_latents", lambda: load_latents(target)), ("decode", decode)]


def _steps_vae(target: Path, i: int) -> list:
    from showo2_cli.modeling.vae_files import header_sizes, load_vae

    return [("header_sizes", lambda: header_sizes(target.parent)), ("load_vae", lambda: load_vae(target.parent))]


def drive(reader: str, seed, target: Path, root, server=None):
    """Every entry point of ``reader``'s kind on the mutant, each run though another refused it:
    the first defect raised; else the first of the project's errors; else None (read)."""
    from showo2_cli.errors import Showo2Error

    steps = {"latents": _steps_latents, "vae": _steps_vae}.get(reader, _steps_media)(target, _drive_count())
    first = None
    for name, step in steps:
        try:
            step()
        except Showo2Error as e:
            if "\n" in str(e).strip() or not str(e).strip():
                raise
            first = first or e
        except (Exception, RecursionError, MemoryError) as e:  # noqa: BLE001 (the step named on the defect)
            e.add_note(f"in step {name}")
            raise
    if first is not None:
        raise first
    return None


_COUNT = [0]
#: --readers-only: the file readers alone, none of the demo model's entry points (caption, encode, i2v,
#: the server, decode), which take most of a mutant's time where the file reads
READERS_ONLY = [False]


def _drive_count() -> int:
    _COUNT[0] += 1
    return _COUNT[0]


def reach(reader: str, count: int, seed: int) -> dict[str, tuple[int, int]]:
    """How many of ``count`` mutants, structured and byte-level (``fuzz_readers.mutate_bytes``), a
    media reader reads whole (``read_media``: past every checksum and size check, through the
    decoder): ``{"structured": (read, count), "bytes": (read, count)}``."""
    import shutil
    import tempfile

    import showo2_cli.media as M
    from showo2_cli.errors import Showo2Error

    work = Path(tempfile.mkdtemp(prefix=f"reach-{reader}-"))
    try:
        found = seeds(reader, work)
        out = {}
        for how in ("structured", "bytes"):
            read = 0
            for i in range(count):
                s = found[i % len(found)]
                rng = random.Random(f"{seed}:{i}")
                data = s.path.read_bytes()
                data = mutate(data, s.kind, rng) if how == "structured" else base.mutate_bytes(data, rng)
                target = work / f"m{s.path.suffix}"
                target.write_bytes(data)
                try:
                    M.read_media(target, num_frames=4)
                    read += 1
                except (Showo2Error, Exception):  # noqa: BLE001 (counted, not judged: the fuzzing run judges)
                    pass
            out[how] = (read, count)
        return out
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv=None) -> int:
    import resource

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reader", default="all", choices=READERS + ("all",))
    ap.add_argument("--count", type=int, default=200, help="mutants per reader")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--start", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=30.0, help="seconds before a mutant counts as a hang")
    ap.add_argument("--memory-mb", type=float, default=4096, help="peak RSS growth that counts as a defect")
    ap.add_argument("--address-space-gb", type=float, default=6.0,
                    help="address space allowed over what the process holds at the start (0: no cap)")
    ap.add_argument("--save", type=Path, help="folder to keep each defect's mutant and traceback in")
    ap.add_argument("--reach", action="store_true",
                    help="only count the mutants read whole, structured against byte-level (media readers)")
    ap.add_argument("--readers-only", action="store_true",
                    help="drive the file readers alone (media: probe_kind, read_metadata, check_video, read_image, "
                         "read_media, encode's read_source, a training sample; latents: load_latents; VAE weights: "
                         "header_sizes, load_vae), none of the demo model's entry points: many more mutants an hour")
    args = ap.parse_args(argv)
    READERS_ONLY[0] = args.readers_only
    import torch

    torch.set_num_threads(1)
    if args.reach:
        for reader in READERS[:7] if args.reader == "all" else (args.reader,):
            r = reach(reader, args.count, args.seed)
            print(f"{reader:6} read whole: structured {r['structured'][0]}/{args.count}, "
                  f"byte-level {r['bytes'][0]}/{args.count}", flush=True)
        return 0
    if not args.readers_only or args.reader in ("latents", "all"):  # (the latents seeds are encoded by it)
        base.demo_model()
    if args.address_space_gb:
        with open("/proc/self/statm") as fh:
            held = int(fh.read().split()[0]) * resource.getpagesize()
        cap = held + int(args.address_space_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (cap, resource.getrlimit(resource.RLIMIT_AS)[1]))
    defects = 0
    try:
        for reader in READERS if args.reader == "all" else (args.reader,):
            outcomes = base.run(reader, args.count, args.seed, args.timeout, args.memory_mb, args.save,
                                log=sys.stderr, start=args.start, seeds=lambda work, r=reader: seeds(r, work),
                                mutator=mutate, driver=drive)
            print(base.table(reader, outcomes), flush=True)
            defects += sum(n for (_, o), n in outcomes.items() if o.startswith("defect"))
    finally:
        if _SERVER is not None:
            _SERVER.close()
    return 1 if defects else 0


if __name__ == "__main__":
    sys.exit(main())
