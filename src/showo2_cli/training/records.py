"""File indexes for the pairs and LLaVA sources: every record of a ``.jsonl`` (or a ``.json``
array converted to JSONL, or a folder listing) found by its byte offset, from a memory-mapped
uint64 file built once per input file (keyed by path, size and mtime) and shared by every process.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np

from ..errors import InputError, json_problem, one_line, short
from ..options import CAPTION_FIELDS
from .schema import DataSource

#: one record (a JSONL line, an element of a JSON array): larger is no caption or conversation,
#: and parsing it would take memory without bound (a 400 MB line was killed at 22 GB)
MAX_RECORD_BYTES = 8 << 20
#: the records of a Hugging Face ``imagefolder`` data set, in its folder (JSONL or CSV)
METADATA_FILES = ("metadata.jsonl", "metadata.csv")


def _file_key(path: Path) -> str:
    st = path.stat()
    return hashlib.sha1(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:20]


def _folder_key(folder: Path) -> str:
    """A folder listing's key: its path and the modification time of every folder in it, which
    changes when a file is added, removed or renamed there (a listing keyed by the path alone was
    used forever: images added later were never trained on, and deleted ones failed the run)."""
    h = hashlib.sha1()
    for dirpath, dirnames, _ in os.walk(folder):
        dirnames.sort()
        try:
            h.update(f"|{os.path.relpath(dirpath, folder)}:{os.stat(dirpath).st_mtime_ns}".encode())
        except OSError:
            continue
    return hashlib.sha1(str(folder.resolve()).encode()).hexdigest()[:10] + h.hexdigest()[:10]


def _scan_lines(path: Path, out_offsets: Path) -> None:
    """Offsets of every non-blank line of a text file, streamed to a uint64 file. Lines are read in
    pieces of at most 1 MiB: a line of gigabytes is indexed without being held (it was read whole,
    a 2 GB line took 2.6 GB), and refused as one record when it is read (:data:`MAX_RECORD_BYTES`)."""
    from ..media import atomic_output

    offsets = []
    with atomic_output(out_offsets, overwrite=True) as tmp, open(path, "rb") as f, open(tmp, "wb") as out:
        pos, start, blank = 0, None, True
        while piece := f.readline(1 << 20):
            if start is None:  # a line begins
                start, blank = pos, True
            blank = blank and not piece.strip()
            pos += len(piece)
            if not piece.endswith(b"\n"):
                continue  # the line goes on (or the file ends without a newline)
            if not blank:
                offsets.append(start)
                if len(offsets) >= 1 << 16:
                    out.write(np.asarray(offsets, dtype="<u8").tobytes())
                    offsets.clear()
            start = None
        if start is not None and not blank:
            offsets.append(start)
        out.write(np.asarray(offsets, dtype="<u8").tobytes())


def _encoding(path: Path) -> str:
    """The text encoding of a records file, for an incremental decoder: UTF-16 (with its byte-order
    mark, or without it where a NUL opens it), else UTF-8 with its mark, if any, dropped
    (:func:`~showo2_cli.media.text_encoding`)."""
    from ..media import text_encoding

    with open(path, "rb") as f:
        encoding = text_encoding(f.read(2))
    return encoding if encoding.startswith("utf-16") else "utf-8-sig"


def iter_json_array(path: Path, chunk: int = 1 << 20):
    """Elements of a top-level JSON array, parsed incrementally (the file is never loaded whole).
    UTF-8 (a byte-order mark, as Windows tools write, was "not a JSON array") or UTF-16 with its mark."""
    import codecs

    decoder = json.JSONDecoder()
    encoding = _encoding(path)
    text = codecs.getincrementaldecoder(encoding)()
    with open(path, "rb") as f:
        try:
            yield from _json_array(path, f, chunk, decoder, text)
        except UnicodeDecodeError as e:
            raise _not_text(path, "UTF-16" if encoding.startswith("utf-16") else "UTF-8", e) from None


def _not_text(path: Path, encoding: str, e: UnicodeDecodeError) -> InputError:
    """A records file that is not ``encoding`` text; one cut inside its last character said so (a
    UTF-16 file of an odd number of bytes was "not UTF-16 text (byte 0 of a chunk)")."""
    if e.reason in ("truncated data", "unexpected end of data"):
        return InputError(f"'{path}' is not {encoding} text: it ends inside a character (cut short?)")
    return InputError(f"'{path}' is not {encoding} text (byte {e.start} of a chunk)")


def _json_array(path: Path, f, chunk: int, decoder, utf8):
    """:func:`iter_json_array`'s parser over the open file ``f``."""
    buf, pos, started, eof = "", 0, False, False
    while True:
        if not eof and len(buf) - pos < chunk:
            data = f.read(chunk)
            eof = not data
            buf = buf[pos:] + utf8.decode(data, final=eof)
            pos = 0
        while pos < len(buf) and buf[pos] in " \t\r\n,":
            pos += 1
        if not started:
            if pos >= len(buf):
                if eof:
                    raise InputError(f"'{path}' is empty: expected a JSON array")
                continue
            if buf[pos] != "[":
                raise InputError(f"'{path}' is not a JSON array (LLaVA format) nor JSONL")
            started, pos = True, pos + 1
            continue
        if pos < len(buf) and buf[pos] == "]":
            return
        if pos >= len(buf):
            if eof:
                raise InputError(f"'{path}' ends before the JSON array is closed")
            continue
        try:
            value, end = decoder.raw_decode(buf, pos)
            cut = end >= len(buf) and not eof  # maybe a number or literal cut by the chunk end
        except (json.JSONDecodeError, RecursionError) as e:
            if eof:
                raise InputError(f"'{path}' {json_problem(e)}") from e
            cut = True
        except ValueError:  # an integer over Python's digit limit ("internal error: ValueError", exit 1)
            raise InputError(f"'{path}' holds a number of more than {sys.get_int_max_str_digits():,} digits: "
                             "not a caption or conversation") from None
        if (end if not cut else len(buf)) - pos > MAX_RECORD_BYTES:
            raise InputError(f"'{path}' holds an element over {MAX_RECORD_BYTES >> 20} MiB: not a caption or "
                             "conversation")
        if cut:  # an element cut by the chunk boundary: read more and retry
            data = f.read(chunk)
            eof = not data
            buf = buf[pos:] + utf8.decode(data, final=eof)
            pos = 0
            continue
        yield value
        pos = end


def build_index(source: DataSource, index_dir: Path) -> tuple[Path, Path]:
    """(records file, offsets file) for a pairs/llava source, building them once.

    A ``.jsonl`` is indexed in place; a folder of pairs becomes a listing JSONL, unless it holds a
    ``metadata.jsonl`` or ``metadata.csv`` (a Hugging Face ``imagefolder``: its records name the
    files, ``file_name``, and their captions; listed, every caption was empty, the unconditional
    row); a ``.json`` array, and a ``.csv`` with a header line, are converted to JSONL
    incrementally. Safe to call from several processes at once.
    """
    path = Path(source.path)
    index_dir.mkdir(parents=True, exist_ok=True)
    if path.is_dir():  # its relative file names are the folder's (the source's root)
        path = next((path / name for name in METADATA_FILES if (path / name).is_file()), path)
        if path.is_file() and source.kind == "pairs":
            _check_caption_field(path)
    if path.is_dir():
        key = _folder_key(path)
        records = index_dir / f"{key}.listing.jsonl"
        offsets = index_dir / f"{key}.listing.u64"
        if not (records.exists() and offsets.exists()):
            for stale in index_dir.glob(f"{key[:10]}*.listing.*"):  # the folder's earlier listings
                stale.unlink(missing_ok=True)
            _list_folder(path, records)
            _scan_lines(records, offsets)
        return records, offsets
    key = _file_key(path)
    jsonl = path.suffix.lower() == ".jsonl"
    if jsonl and not _encoding(path).startswith("utf-16"):
        offsets = index_dir / f"{key}.u64"
        if not offsets.exists():
            _scan_lines(path, offsets)
        return path, offsets
    records = index_dir / f"{key}.jsonl"
    offsets = index_dir / f"{key}.jsonl.u64"
    if not (records.exists() and offsets.exists()):
        from ..media import atomic_output

        with atomic_output(records, overwrite=True) as tmp, open(tmp, "w", encoding="utf-8") as out:
            if jsonl:  # UTF-16 (PowerShell's `>`): its lines split at the byte 0A lost the first record
                _to_utf8(path, out)
            elif path.suffix.lower() == ".csv":
                for row in _csv_rows(path):
                    out.write(json.dumps(row, ensure_ascii=False) + "\n")
            else:
                for element in iter_json_array(path):
                    out.write(json.dumps(element, ensure_ascii=False) + "\n")
        _scan_lines(records, offsets)
    return records, offsets


def _check_caption_field(path: Path) -> None:
    """An ``imagefolder``'s metadata file names its captions' field as :data:`CAPTION_FIELDS` do
    (its first record tells): a column named otherwise (``description``) trained on empty
    captions, the unconditional row, silently."""
    if path.suffix == ".csv":
        first = next(_csv_rows(path), {})
    else:
        with open(path, encoding=_encoding(path), errors="replace") as f:
            line = f.readline(MAX_RECORD_BYTES)
        try:
            first = json.loads(line)
        except (ValueError, RecursionError):
            return  # (a malformed record, or one nested too deeply, is said where it is read)
    if isinstance(first, dict) and first and not any(k in first for k in (*CAPTION_FIELDS, "caption_file")):
        raise InputError(f"'{path}' has no caption field ({', '.join(CAPTION_FIELDS)}): its fields are "
                         f"{', '.join(short(k, 30) for k in list(first)[:8])}; name the captions' column text, as a "
                         "Hugging Face imagefolder's")


def _split_folder(folder: Path, metadata: Path) -> InputError:
    """A folder with no metadata file of its own over one that has one (a Hugging Face imagefolder's
    ``train/metadata.jsonl``, ``test/...``: its splits) was listed as a folder of pairs: every split's
    images, the held-out ones too, trained on empty captions (their ``.txt`` files, absent)."""
    return InputError(f"folder '{folder}' has no {' or '.join(METADATA_FILES)} of its own, but '{metadata}' "
                      "names captions (a Hugging Face imagefolder's splits): point the source's path at a "
                      f"split's folder, such as '{metadata.parent}' (a held-out one: another [[data]] source with "
                      "split = \"eval\")")


def _csv_rows(path: Path):
    """The rows of a CSV file with a header line (a Hugging Face ``imagefolder``'s ``metadata.csv``),
    each a record of its named fields, streamed: UTF-8 (Excel's byte-order mark dropped) or UTF-16
    with its mark; a row's fields past the header are left out."""
    import csv

    try:
        with open(path, encoding=_encoding(path), newline="") as f:
            for row in csv.DictReader(f):
                yield {k: v for k, v in row.items() if k is not None}
    except (csv.Error, UnicodeDecodeError) as e:
        raise InputError(f"'{path}' is not a CSV file with a header line ({one_line(e, 120)})") from None


def _to_utf8(path: Path, out, chunk: int = 1 << 20) -> None:
    """A UTF-16 JSONL file's text written to ``out`` (UTF-8), a piece at a time, lines as they are."""
    try:
        with open(path, encoding=_encoding(path), newline="") as f:
            while piece := f.read(chunk):
                out.write(piece)
    except UnicodeDecodeError as e:
        raise _not_text(path, "UTF-16", e) from None


def _list_folder(folder: Path, out: Path) -> None:
    from ..media import IMAGE_EXTS, VIDEO_EXTS, atomic_output

    exts = set(IMAGE_EXTS) | set(VIDEO_EXTS)
    count = 0
    with atomic_output(out, overwrite=True) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for dirpath, dirnames, filenames in os.walk(folder):
            dirnames.sort()
            if meta := next((name for name in METADATA_FILES if name in filenames), None):
                raise _split_folder(folder, Path(dirpath) / meta)
            for name in sorted(filenames):
                p = Path(dirpath) / name
                if p.suffix.lower() in exts and not name.startswith("."):
                    caption = p.with_suffix(".txt")  # else kohya-ss's captioners' .caption (empty: none)
                    if not caption.exists() and p.with_suffix(".caption").is_file():
                        caption = p.with_suffix(".caption")
                    f.write(json.dumps({"path": str(p), "caption_file": str(caption)}) + "\n")
                    count += 1
        if count == 0:  # inside the writer: nothing is published
            raise InputError(f"folder '{folder}' holds no images or videos")


class RecordsChanged(InputError):
    """A records file edited since it was indexed: every read after it would be of moved lines, so a
    run stops on it (restarted, it indexes the file again) rather than passing its items over."""


class Records:
    """Random access to the records of an indexed JSONL file (offsets memory-mapped)."""

    def __init__(self, records: Path, offsets: Path, name: str | None = None, stamp: tuple[int, int] | None = None):
        self.records, self.offsets_path = Path(records), Path(offsets)
        self.name = name or str(records)  # what errors call it: the user's file, not its converted index
        size = self.offsets_path.stat().st_size // 8
        self._offsets = np.memmap(self.offsets_path, dtype="<u8", mode="r", shape=(size,)) if size else np.zeros(0, "<u8")
        # the file as indexed (size, modification time): an edit while a run reads it moved the lines, and
        # the records after it were "not valid JSON" of a valid file, or another line, silently
        self.stamp = stamp if stamp is not None else _stamp(os.stat(self.records))

    def __len__(self) -> int:
        return int(self._offsets.shape[0])

    def __getitem__(self, i: int) -> dict:
        with open(self.records, "rb") as f:
            if _stamp(os.fstat(f.fileno())) != self.stamp:
                raise RecordsChanged(f"'{self.name}' changed since it was indexed (record {i} is no longer where it was): "
                                 "restart the run to index it again")
            f.seek(int(self._offsets[i]))
            line = f.readline(MAX_RECORD_BYTES + 1)
        if len(line) > MAX_RECORD_BYTES:
            raise InputError(f"'{self.name}' record {i} is over {MAX_RECORD_BYTES >> 20} MiB: not a caption or "
                             "conversation")
        try:
            value = json.loads(line)
        except (ValueError, RecursionError) as e:  # UnicodeDecodeError is a ValueError; nesting too deep
            raise InputError(f"'{self.name}' record {i} {json_problem(e, 120)}") from None
        if not isinstance(value, dict):
            raise InputError(f"'{self.name}' record {i} is not a JSON object")
        return value

    def __getstate__(self):  # workers re-open the memmap
        return {"records": self.records, "offsets": self.offsets_path, "name": self.name, "stamp": self.stamp}

    def __setstate__(self, state):
        self.__init__(state["records"], state["offsets"], state.get("name"), state.get("stamp"))


def _stamp(st: os.stat_result) -> tuple[int, int]:
    return st.st_size, st.st_mtime_ns
