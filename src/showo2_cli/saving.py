"""The files a generation run reads and writes, the same for the Python API and the command line.

* :func:`read_prompts`: a prompt and/or a prompts file (one a line, or JSON records for a ``.jsonl``,
  ``.ndjson`` or ``.json`` file; ``-`` reads stdin's lines);
* :func:`plan_outputs`: one :class:`OutputPlan` per output (the image or video, its sidecar JSON and,
  when asked, its latents file), every path checked before any work starts;
* :func:`load_noise`: exact starting noise from a ``.safetensors`` file, judged from its header;
* :func:`save_results`: the outputs of :func:`~showo2_cli.pipelines.text_to_image` (and video)
  written as planned: pixels with their parameters inside (PNG text, EXIF or container comment),
  the sidecar and the latents, each output's files as one unit.
"""

from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from . import __version__
from . import media as M
from .errors import InputError, OutputError, OutputExists, UsageError
from .options import (
    CAPTION_FIELDS,
    DEFAULT_FPS,
    MAX_OUTPUTS,
    MAX_PROMPTS_FILE_BYTES,
    check_choice,
    check_fps,
    check_int,
    check_seed,
    check_text,
    seed_for,
    short,
)
from .value_checks import check_flag

#: Largest noise tensor accepted, in elements (a 4096 x 4096 latent video of 257 frames is less).
MAX_NOISE_ELEMENTS = 1 << 31
#: What generation writes: every written format that holds the recorded parameters (BMP has no metadata).
KIND_EXTS = {"t2i": M.RECORDING_IMAGE_EXTS, "t2v": M.VIDEO_WRITE_EXTS, "i2v": M.VIDEO_WRITE_EXTS}
DEFAULT_EXT = {"t2i": ".png", "t2v": ".mp4", "i2v": ".mp4"}


def read_prompts(prompt: str | None = None, prompts_file: str | os.PathLike | None = None) -> list[str]:
    """The prompt and/or the prompts of the prompts file ('-': stdin): its non-empty lines, or its
    JSON records for a ``.jsonl``/``.ndjson`` or ``.json`` file (:data:`JSON_PROMPTS_SUFFIXES`). An
    empty or over-long prompt is a usage error; an unreadable, empty or non-UTF-8 prompts file, or
    a record that is no prompt, an input error naming it (and the line)."""
    prompts: list[str] = []
    if prompt is not None:
        prompts.append(check_text(prompt, "prompt"))
    if prompts_file is not None:
        stdin = str(prompts_file) == "-"
        path = Path(prompts_file)
        where = "stdin" if stdin else f"'{path}'"
        if stdin:
            if sys.stdin is None:
                raise InputError("prompts file stdin is closed")
            try:
                data = sys.stdin.buffer.read(MAX_PROMPTS_FILE_BYTES + 1)
            except (OSError, ValueError) as e:  # a closed or non-binary stream
                raise InputError(f"cannot read prompts file stdin: {getattr(e, 'strerror', None) or e}") from e
            if len(data) > MAX_PROMPTS_FILE_BYTES:
                raise InputError(f"prompts from stdin are too large (more than {MAX_PROMPTS_FILE_BYTES // 2**20} MiB)")
        else:  # the one bounded reader judges the file (missing, a folder, a FIFO, too large) before reading
            data = M.read_limited(path, MAX_PROMPTS_FILE_BYTES, "prompts file")
        # UTF-8 (a BOM allowed), or UTF-16 with its BOM (what Windows editors save as "Unicode")
        encoding = M.text_encoding(data)
        try:
            text = data.decode(encoding)
        except UnicodeDecodeError as e:
            raise InputError(f"prompts file {where} is not {'UTF-8 (nor UTF-16)' if encoding.startswith('utf-16') else 'UTF-8'} "
                             f"text (byte {e.start})") from e
        # any bytes decode as UTF-16: text has no control characters and no second byte-order mark
        odd = re.search("[\x00-\x08\x0b\x0c\x0e-\x1f\ufeff\ufffe\uffff]", text) if encoding.startswith("utf-16") else None
        if odd is not None:
            raise InputError(f"prompts file {where} is not UTF-8 text (nor UTF-16 text: it holds "
                             f"U+{ord(odd.group()):04X} at character {odd.start()})")
        if "\x00" in text:  # no text holds NUL: UTF-16 saved without its byte-order mark reads so as UTF-8
            raise InputError(f"prompts file {where} is not text: line {_line_at(text, text.index(chr(0)))} "
                             "holds a NUL character (UTF-16 without a byte-order mark?)")
        # a .jsonl file (GenEval's metadata) holds a JSON record a line, a .json file (DPG-Bench's) an
        # array of them: each a prompt, or an object with a prompt field (read as text lines, such a
        # file made an image of every line's JSON, or of its brackets). Stdin is text lines.
        suffix = "" if stdin else path.suffix.lower()
        items = _json_prompts(text, where, suffix) if suffix in JSON_PROMPTS_SUFFIXES else _line_prompts(text)
        found = 0
        for start, item in items:
            try:
                check_text(item, "prompt")
            except UsageError as e:
                raise InputError(f"prompts file {where} line {_line_at(text, start)}: {e}") from None
            found += 1
            if found > MAX_OUTPUTS:
                raise InputError(f"prompts file {where} holds more than {MAX_OUTPUTS:,} prompts, more than one run "
                                 "makes: split it")
            prompts.append(item)
        if not found:
            raise InputError(f"prompts file {where} holds no prompt")
    if not prompts:
        raise UsageError("give a PROMPT, '-' to read the prompts from stdin, or --prompts-file")
    return prompts


#: prompts files read as JSON records rather than text lines: JSON Lines, and a JSON array
JSON_PROMPTS_SUFFIXES = (".jsonl", ".ndjson", ".json")
_JSON_TYPES = {dict: "an object", list: "an array", str: "a string", int: "a number", float: "a number",
               bool: "a boolean", type(None): "null"}
_JSON_BLANK = re.compile("[ \t\r\n\ufeff]*")  # JSON's whitespace, and a byte-order mark opening a line


def _line_prompts(text: str):
    """(offset, prompt) of each non-blank line of a text prompts file. Lines end at "\n", "\r\n"
    or a lone "\r" (classic Mac OS files: such a file was one prompt holding carriage returns); a
    form feed or U+2028 inside a line is not a new prompt. A byte-order mark opening a line (the
    first, or one of files joined by `cat`) is not text. Lazy: never more than asked for is held."""
    for match in re.finditer("[^\r\n]+", text):
        line = match.group().strip().lstrip("\ufeff").strip()
        if line:
            yield match.start(), line


def _json_prompts(text: str, where: str, suffix: str):
    """(offset, prompt) of each record of a JSON Lines prompts file (a blank line is none), or of
    each element of a ``.json`` one's top-level array, parsed one at a time. A record is the prompt
    itself or an object holding it in one of :data:`~showo2_cli.options.CAPTION_FIELDS` (the
    official evaluation files' ``prompt``); it is taken exactly (JSON says where it starts and ends)."""
    decoder = json.JSONDecoder()

    def parse(start: int, source: str = text, base: int = 0) -> tuple[object, int]:
        """The value at text[start], from ``source`` (text itself, or the line at ``base``), and its end."""
        try:
            value, stop = decoder.raw_decode(source, start - base)
            return value, stop + base
        except json.JSONDecodeError as e:
            raise InputError(f"prompts file {where} line {_line_at(text, e.pos + base)}: not valid JSON "
                             f"({e.msg})") from None
        except ValueError:  # Python's limit on an integer's digits: "internal error: ValueError", exit 1
            raise InputError(f"prompts file {where} line {_line_at(text, start)}: a number of more than "
                             f"{sys.get_int_max_str_digits():,} digits, not a prompt") from None
        except RecursionError:
            raise InputError(f"prompts file {where} line {_line_at(text, start)}: JSON nested too deeply") from None

    def prompt(value: object, start: int) -> str:
        if isinstance(value, dict):
            field = next((k for k in CAPTION_FIELDS if k in value), None)
            if field is None:
                raise InputError(f"prompts file {where} line {_line_at(text, start)}: a record without a prompt "
                                 f"({', '.join(CAPTION_FIELDS)}); its fields are {short(', '.join(value), 80)}")
            value = value[field]
        if not isinstance(value, str):
            raise InputError(f"prompts file {where} line {_line_at(text, start)}: the prompt is "
                             f"{_JSON_TYPES.get(type(value), 'not a string')}, not a string")
        return value

    def blank(start: int) -> int:  # the first position at or after start that is not JSON whitespace
        return _JSON_BLANK.match(text, start).end()

    if suffix != ".json":
        for match in re.finditer("[^\r\n]+", text):
            start = blank(match.start())
            if start < match.end():
                value, end = parse(start, match.group(), match.start())  # never into the next line
                if blank(end) < match.end():
                    raise InputError(f"prompts file {where} line {_line_at(text, start)}: more than one JSON "
                                     "value on a line (JSON Lines holds one record a line)")
                yield start, prompt(value, start)
        return
    pos = blank(0)
    if not text.startswith("[", pos):
        raise InputError(f"prompts file {where} is not a JSON array of prompts (strings, or objects with a "
                         f"{' or '.join(CAPTION_FIELDS)} field)")
    pos = blank(pos + 1)
    closed = text.startswith("]", pos)
    while not closed:
        value, end = parse(pos)
        yield pos, prompt(value, pos)
        pos = blank(end)
        closed = text.startswith("]", pos)
        if not closed and not text.startswith(",", pos):
            raise InputError(f"prompts file {where} line {_line_at(text, pos)}: not valid JSON (expected ',' or "
                             "']' after an element)")
        pos = blank(pos + 1) if not closed else pos
    if blank(pos + 1) < len(text):
        raise InputError(f"prompts file {where} line {_line_at(text, blank(pos + 1))}: not valid JSON (text after "
                         "the array)")


def _line_at(text: str, index: int) -> int:
    """The number (from 1) of the line of a prompts file holding ``text[index]``: line ends ("\n",
    "\r\n", a lone "\r") counted in place (a list of them, and a copy of the text before, took
    540 MB and 14 s for a record after 67 million blank lines)."""
    return text.count("\n", 0, index) + text.count("\r", 0, index) - text.count("\r\n", 0, index) + 1


def latents_beside(path: Path) -> Path:
    """Where ``--save-latents`` puts the latents of the output at ``path``."""
    return path.with_name(path.stem + ".latents.safetensors")


def encoded_output(media: str | os.PathLike | None, output: str | os.PathLike | None = None,
                   overwrite: bool = False) -> Path:
    """Where ``encode`` writes the latents of the file ``media``: ``output``, else
    ``<media>.latents.safetensors`` beside it (a default name never replaces a file: ``-1``,
    ``-2``, ...); a ``.safetensors`` name that can be written, checked before any work."""
    if output is not None:
        M.check_output_name(os.fspath(output))  # as text: a trailing '/' is seen (a Path drops it)
        out = Path(os.fspath(output))
    elif media is None:
        raise UsageError("media given in memory has no file to write its latents beside: give the output's name")
    else:
        out = Path(os.fspath(media))
        out = out.with_name(out.name + ".latents.safetensors")
        if not overwrite:
            out = M.unique_path(out)
    if out.suffix.lower() != ".safetensors":  # as every other output: .SafeTensors too
        raise M.extension_refused(out, "latents are written as .safetensors")
    return M.check_output_path(out, overwrite, probe=True)


@dataclass
class OutputPlan:
    """Where one output goes: the media file, its sidecar JSON, and its latents (or None)."""

    path: Path
    sidecar: Path
    latents: Path | None
    default: Path | None = None  # a name chosen by the tool (no -o): the name it was made from

    @classmethod
    def beside(cls, path: Path, save_latents: bool, default: Path | None = None) -> OutputPlan:
        """The plan of an output at ``path``: its sidecar and latents are named after it."""
        return cls(path, path.with_suffix(".json"), latents_beside(path) if save_latents else None, default)

    def next_free(self) -> OutputPlan:
        """A default-named plan whose name was taken meanwhile (another run, started at the same
        moment, chose it too): the next free ``-1``, ``-2``, ... name, as planning gives."""
        save = self.latents is not None
        path = M.unique_path(self.default, lambda c: OutputPlan.beside(c, save).files()[1:], {self.path})
        return OutputPlan.beside(path, save, self.default)

    def files(self) -> list[Path]:
        return [f for f in (self.path, self.sidecar, self.latents) if f is not None]


def check_kind(kind: str) -> None:
    """``kind`` of :func:`plan_outputs` / :func:`save_results`: t2i, t2v or i2v (another was a KeyError)."""
    check_choice("kind", kind, tuple(KIND_EXTS), allow_none=False)


def check_inputs_kept(plans: list[OutputPlan], inputs: dict[str, str | os.PathLike | None]) -> None:
    """Refuse a run one of whose output files (image or video, sidecar, latents) is one of its
    inputs (``inputs``: what names it -> its path, e.g. ``{"--prompts-file": path}``): with
    ``--overwrite`` the prompts file, the image of i2v or the noise was replaced by an output
    (ffmpeg refuses the same, even with ``-y``)."""
    given = [(what, os.fspath(path)) for what, path in inputs.items()  # (a PIL image or a tensor: no file)
             if isinstance(path, (str, os.PathLike)) and os.fspath(path) != "-"]
    given = [(what, path) for what, path in given if os.path.isfile(path)]
    for plan in plans if given else []:
        for f in plan.files():
            for what, path in given:
                if os.path.exists(f) and os.path.samefile(f, path):
                    raise UsageError(f"the output '{short(str(f), 80)}' is the input {what} '{short(path, 80)}': "
                                     "write the output elsewhere (the input would be replaced)")


def output_extension(kind: str, output: str | os.PathLike | None) -> str:
    check_kind(kind)
    allowed = KIND_EXTS[kind]
    if output is None:
        return DEFAULT_EXT[kind]
    M.check_output_name(output)
    ext = Path(output).suffix.lower()
    if ext not in allowed:
        raise M.extension_refused(output, f"use {', '.join(allowed)} for {kind}")
    return ext


def plan_outputs(kind: str, output: str | os.PathLike | None, prompts: list[str], indices: list[int], n: int,
                 seed: int | None, overwrite: bool = False, total_jobs: int | None = None,
                 save_latents: bool = False) -> list[OutputPlan]:
    """One plan per (prompt, k), in job order: ``output`` as given for a single result,
    ``stem-NNN.ext`` (the global job index) for several, or ``<prompt-slug>-<seed>.ext`` in the
    current folder without ``output`` (``<prompt-slug>-noise<job>.ext`` when ``seed`` is None: the
    outputs start from given noise). Every file of every plan is checked now (writable, and
    absent unless ``overwrite``), so nothing fails after the work is done."""
    ext = output_extension(kind, output)
    check_int("n", n, 1, MAX_OUTPUTS)  # (0 or -1 planned nothing, silently; None failed in the arithmetic)
    if n is None:
        raise UsageError(f"n must be a whole number between 1 and {MAX_OUTPUTS}, got None")
    check_seed(seed, "seed")  # (-5 named the files after seed 2^63-5, which no run uses)
    check_flag("overwrite", overwrite)
    check_flag("save_latents", save_latents)
    for name, given in (("prompts", prompts), ("indices", indices)):  # (a text was planned a file a character)
        if isinstance(given, (str, bytes)) or not isinstance(given, (list, tuple)):
            raise UsageError(f"{name} must be a list, got {short(repr(given))}")
    if total_jobs is not None and (isinstance(total_jobs, bool) or not isinstance(total_jobs, int) or total_jobs < 1):
        raise UsageError(f"total_jobs must be None or a whole number of at least 1, got {short(repr(total_jobs))}")
    total = len(prompts) * n if total_jobs is None else total_jobs
    if max(total, len(prompts) * n) > MAX_OUTPUTS:  # before a plan is made: ~1 KB each
        raise UsageError(f"{max(total, len(prompts) * n):,} outputs ({len(prompts):,} prompts x {n}) are more than "
                         f"one run makes ({MAX_OUTPUTS:,}): split the prompts into several runs")
    for p in prompts:  # (None was planned as a file named 'none-1.png')
        check_text(p, "prompt")
    if len(indices) != len(prompts):
        raise UsageError(f"indices must give one job index a prompt: {len(indices):,} for {len(prompts):,} prompts")
    for i in indices:  # job i * n + k of the run's total (-1 named a file 'x--01.png', 1.5 raised ValueError)
        if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i <= (total - n) // n:
            raise UsageError(f"indices must be whole numbers from 0 to {(total - n) // n} (the prompt's place in the "
                             f"run of {total:,} outputs, {n} a prompt), got {short(repr(i))}")
    plans = []
    taken: set[Path] = set()  # default names already given to an earlier output of this run
    folders = M.OutputFolders(overwrite)  # one listing of each folder, not a dozen stat calls a name
    for p, i in zip(prompts, indices, strict=True):
        for k in range(n):
            default = None
            if output is None:
                tag = f"noise{i * n + k}" if seed is None else seed_for(seed, i, k, n)
                path = default = Path(f"{M.slugify(p)}-{tag}{ext}")
                if not overwrite:  # free for the media file, its sidecar and latents, and not given out yet
                    path = M.unique_path(path, lambda c: OutputPlan.beside(c, save_latents).files()[1:], taken,
                                         folders)
                taken.add(path)
            elif total == 1:
                path = Path(output)
            else:
                out = Path(output)
                width = max(3, len(str(total - 1)))
                path = out.with_name(f"{out.stem}-{i * n + k:0{width}d}{out.suffix}")
            plans.append(OutputPlan.beside(path, save_latents, default if not overwrite else None))
    seen: set[str] = set()
    for plan in plans:
        for f in map(str, plan.files()):
            if f in seen:
                raise UsageError(f"two outputs would be written to '{short(f, 80)}'")
            seen.add(f)
            folders.check(f)  # as M.check_output_path, the first name of each folder probed
    return plans


def load_noise(path: str | os.PathLike | None):
    """Exact starting noise: the one tensor (or the one named ``noise``) of a ``.safetensors`` file.
    Its shape and dtype are judged from the header before any tensor is read."""
    if path is None:
        return None
    from .weights import read_one_tensor

    def pick(keys: list[str], p: Path) -> str:
        if "noise" not in keys and len(keys) != 1:
            raise InputError(f"noise file '{p}' must hold one tensor (or one named 'noise')")
        return "noise" if "noise" in keys else keys[0]

    noise, _meta = read_one_tensor(path, "noise", pick, MAX_NOISE_ELEMENTS)
    p = Path(path)
    if not noise.dim() or noise.dim() > 6 or not noise.numel():
        raise InputError(f"noise '{p}' has shape {tuple(noise.shape)}: not a latent")
    noise = noise.float()  # checked after the cast: a float64 1e300 is inf in float32
    if not noise.isfinite().all():
        raise InputError(f"noise '{p}' must be finite in float32, got NaN/inf values")
    return noise


def result_metadata(item, kind: str, fps: float | None = None, image: str | os.PathLike | None = None,
                    noise: str | os.PathLike | None = None) -> dict:
    """The parameters recorded with an output (inside the file and in its sidecar)."""
    meta = {**item.params, "showo2_version": __version__, "kind": kind}
    if kind != "t2i":
        meta["fps"] = fps
    if image is not None:
        meta["image"] = str(image)
    if noise is not None:  # the starting noise came from this file (row ``noise_row``), not the seed
        meta["noise"] = str(noise)
    return meta


def save_results(results, plans: list[OutputPlan], kind: str, fps: float | None = DEFAULT_FPS,
                 image: str | os.PathLike | None = None, overwrite: bool = False,
                 noise: str | os.PathLike | None = None) -> list[dict]:
    """Write each result as planned and return one record per output (what the sidecar holds).
    An output's files are one unit (:func:`~showo2_cli.media.output_group`): they take their
    places together, and a failure or Ctrl-C before then leaves none of them (and, with
    ``overwrite``, the old ones as they were). A default name (no ``-o``) that another run took
    meanwhile moves on to the next free one, as planning does."""
    check_kind(kind)
    if len(results) != len(plans):
        raise UsageError(f"{len(results)} result(s) but {len(plans)} planned output(s)")
    check_inputs_kept(plans, {"image": image, "noise": noise})
    if kind != "t2i":
        check_fps(fps)  # --fps's range (1000 was written, which the command refuses)
    records = []
    for plan, item in zip(plans, results, strict=True):
        for _attempt in range(100):
            try:
                records.append(_save_one(plan, item, kind, fps, image, overwrite, noise))
                break
            except OutputExists:
                if plan.default is None:  # a name the user gave is never changed
                    raise
                plan = plan.next_free()  # another run took this default name meanwhile
        else:
            raise OutputError(f"no free name for '{plan.default}' after 100 tries")
    return records


def _save_one(plan: OutputPlan, item, kind: str, fps: float | None, image, overwrite: bool, noise) -> dict:
    """Write one planned output (media, latents, sidecar) as one unit; with ``overwrite`` a
    latents file of the output it replaces is removed when this one has none (the set stays one
    output's)."""
    from .pipelines.latents import save_latents

    rate = M.written_fps(plan.path, DEFAULT_FPS if fps is None else fps) if kind != "t2i" else None  # a GIF's is coarser
    meta = result_metadata(item, kind, rate, image, noise)
    record = {"output": str(plan.path), **meta}
    with M.output_group():
        if kind == "t2i":
            M.write_image(plan.path, item.frames[0], metadata=meta, overwrite=overwrite)
        else:
            M.write_video(plan.path, item.frames, rate, overwrite=overwrite, metadata=meta)
        if plan.latents is not None:
            lat = item.latents if item.latents.dim() == 4 else item.latents[:, None]
            meta_l = {"format": "showo2-latents", "version": 1, "kind": "image" if kind == "t2i" else "video",
                      "frames": int(item.frames.shape[0]), "fps": rate,
                      "height": item.params["height"], "width": item.params["width"], **meta}
            save_latents(plan.latents, lat.contiguous(), meta_l, overwrite=overwrite)
            record["latents"] = str(plan.latents)
        with M.atomic_output(plan.sidecar, overwrite=overwrite) as tmp:
            Path(tmp).write_text(json.dumps(record, indent=1) + "\n")
    stale = latents_beside(plan.path)
    if overwrite and plan.latents is None and stale.is_file():
        stale.unlink()  # the replaced output's latents: no longer this output's
    return record
