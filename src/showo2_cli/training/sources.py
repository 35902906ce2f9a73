"""Training data sources (one ``[[data]]`` table each) and the :class:`Sample` an item of one is:

* ``shapes``: the synthetic shapes world (:mod:`showo2_cli.training.shapes`); item ``i`` is the
  scene drawn from ``numpy.random.default_rng([seed, source, i])``.
* ``pairs``: image/video + caption pairs, from a folder (media files with a ``.txt`` caption of
  the same stem) or a ``.jsonl`` of ``{"path": ..., "prompt": ...}`` (spec §14.2); captions
  cleaned as the official dataset does, or by the source's ``captions`` rule (:mod:`.captions`).
* ``llava``: LLaVA-style conversations (``.json`` array or ``.jsonl``) with ``image`` (or
  ``video``) and ``conversations: [{from: human|gpt, value}]`` (spec §12.2), or ``messages`` of
  ``{role, content}``, a content a string or TRL's list of text and image parts.

A record file is indexed once (:mod:`.records`) and its records read by seeking; an item's media
are read and fitted to the source's resolution here. Which item a training step takes is
:mod:`.data`'s (which re-exports every public name of this module).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError, UsageError, one_line, short
from ..messages import content_text
from .captions import clean_caption, read_caption_file
from .records import CAPTION_FIELDS, METADATA_FILES, Records, build_index
from .schema import DataSource, TrainConfig

# ---- samples ---------------------------------------------------------------------------------

@dataclass
class Sample:
    """One training example before tokenisation and VAE encoding."""

    role: str
    source: int  # index in config.data
    item: int  # item inside the source (the cache key)
    pixels: np.ndarray | None = None  # uint8 (T, H, W, 3); T = 1 for an image
    latent: dict | None = None  # cached {"mu", "logvar"} float32, instead of pixels
    cache_path: str | None = None  # where the encoded latent should be stored
    cache_media: str = ""  # the identity of the media it is encoded from (Source.media)
    cache_note: str = ""  # why the cache's entry was not used though it was there (LatentCache.entry)
    text: str = ""  # caption (generation, captioning)
    turns: list = field(default_factory=list)  # [(question, answer)] for understanding
    format: str = "tuning"
    image_first: bool = True  # understanding: the visual block precedes the first question
    has_visual: bool = True
    skipped: int = 0  # items skipped to reach this one (unreadable or too small)
    skip_reason: str = ""  # why the last of them was (one line)


# ---- pixels ----------------------------------------------------------------------------------

def _fit(img, resolution: int, mode: str) -> np.ndarray:
    from ..media import resize_and_pad, resize_center_crop

    fitted = resize_center_crop(img, resolution) if mode == "crop" else resize_and_pad(img, resolution)
    return np.asarray(fitted.convert("RGB"), dtype=np.uint8)


def _read_visual(path: Path, resolution: int, frames: int, mode: str, video: bool, min_res: int) -> np.ndarray | None:
    """uint8 (T, H, W, 3) at ``resolution``; None when the image is smaller than ``min_res``."""
    from PIL import Image

    from ..media import probe_kind, read_image, read_video

    kind = probe_kind(path)
    if video:
        if kind != "video":
            raise InputError(f"'{path}' is an image but this source needs videos")
        # each frame fitted as it is decoded (read_video's fit): 17 frames of a 4K phone video were held
        # whole, 0.42 GB a sample in every loader worker, for 3 MB of 256x256 frames
        media = read_video(path, num_frames=frames, fit=lambda f: _fit(Image.fromarray(f), resolution, mode))
        if min(media.source_size) < min_res:
            return None
        return media.frames
    if kind == "video":
        media = read_video(path, num_frames=1)
        img = Image.fromarray(media.frames[0])
    else:
        img = read_image(path)
    if min(img.size) < min_res:
        return None
    return _fit(img, resolution, mode)[None]


# ---- sources ---------------------------------------------------------------------------------

class Source:
    """One ``[[data]]`` entry: ``size()`` items (None = endless), ``get(item)`` a :class:`Sample`."""

    def __init__(self, index: int, spec: DataSource, cfg: TrainConfig, geometry: dict):
        self.index, self.spec, self.seed = index, spec, cfg.seed
        self.resolution = geometry["resolution"]
        self.frames = geometry["frames"]
        self.format = spec.format or ("tuning" if spec.kind in ("shapes", "llava") else "captioning")
        default_pre = "pad" if spec.role in ("mmu", "mmu_vid") and self.format != "captioning" else "crop"
        self.preprocess = spec.preprocess or default_pre
        self.video = spec.role in ("t2v", "mmu_vid") or (spec.role == "vae" and self.frames > 1)

    def size(self) -> int | None:
        """Items in one epoch; None for an endless source."""
        return None

    def get(self, item: int, pixels: bool = True) -> Sample | None:
        """The item; ``pixels=False`` skips reading media (its latent is cached)."""
        raise NotImplementedError

    def media(self, item: int) -> str | None:
        """The identity of the file item ``item`` reads (path, size, modification time; "" for none),
        kept with its cached latent: a cached latent is used only for the same file (editing a
        records file moves items, and a cache keyed by item alone paired captions with other
        images' latents). None when the file cannot be found."""
        return ""

    @staticmethod
    def _identity(path: Path | None) -> str | None:
        if path is None:
            return ""
        try:
            st = path.stat()
            return f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
        except (OSError, RuntimeError):
            return None

    def signature(self) -> dict:
        """What determines an item's pixels (the latent cache key)."""
        return {"kind": self.spec.kind, "role": self.spec.role, "resolution": self.resolution,
                "frames": self.frames, "preprocess": self.preprocess}

    def _random_crop(self, pixels: np.ndarray, item: int) -> np.ndarray:
        crop = self.spec.crop
        if not crop or crop >= min(pixels.shape[1:3]):
            return pixels
        rng = np.random.default_rng([self.seed, self.index, item, 7])
        top = int(rng.integers(0, pixels.shape[1] - crop + 1))
        left = int(rng.integers(0, pixels.shape[2] - crop + 1))
        return np.ascontiguousarray(pixels[:, top:top + crop, left:left + crop])


class ShapesSource(Source):
    def size(self):
        return self.spec.size

    def signature(self) -> dict:
        return {**super().signature(), "seed": self.seed, "source": self.index}

    def get(self, item: int, pixels: bool = True) -> Sample:
        from . import shapes

        rng = np.random.default_rng([self.seed, self.index, item])
        role = self.spec.role
        scene = shapes.random_scene(rng, video=self.video, canvas=self.resolution,
                                    frames=max(self.frames, 2))
        sample = Sample(role, self.index, item, format=self.format)
        if pixels:
            sample.pixels = shapes.render_video(scene, self.frames) if self.video else shapes.render_image(scene)[None]
        if role in ("t2i", "t2v"):
            sample.text = shapes.caption(scene)
        elif role in ("mmu", "mmu_vid"):
            if self.format == "tuning":
                pairs = shapes.qa_pairs(scene)
                sample.turns = [pairs[int(rng.integers(len(pairs)))]]
            else:
                sample.turns = [("", shapes.caption(scene))]
                sample.text = shapes.caption(scene)
        else:
            sample.pixels = self._random_crop(sample.pixels, item)
        return sample


class PairsSource(Source):
    def __init__(self, index, spec, cfg, geometry, records: Records):
        super().__init__(index, spec, cfg, geometry)
        self.records = records
        self.root = Path(spec.root) if spec.root else Path(spec.path).parent if Path(spec.path).is_file() else Path(spec.path)
        folder = Path(spec.path)  # an imagefolder's metadata names files of its folder only (as datasets reads it)
        self.confined = folder.is_dir() and any((folder / name).is_file() for name in METADATA_FILES)

    def size(self):
        return len(self.records)

    def signature(self) -> dict:
        return {**super().signature(), "path": str(Path(self.spec.path).resolve())}

    def _media_path(self, rec: dict, i: int) -> Path:
        for key in ("path", "image", "video", "file_name", "file"):
            if isinstance(rec.get(key), str) and rec[key]:
                return _record_path(rec[key], f"'{self.spec.path}' record {i} {key}", self.root, self.confined)
        raise InputError(f"'{self.spec.path}' record {i} has no path/image/video field")

    def _caption(self, rec: dict, i: int) -> str:
        for key in CAPTION_FIELDS:
            if isinstance(rec.get(key), str):
                return rec[key]
            if rec.get(key) is not None:  # a list or a number was read as no caption (the unconditional row)
                raise InputError(f"'{self.spec.path}' record {i} {key} must be text, got {type(rec[key]).__name__}")
        cap = rec.get("caption_file")
        if cap is None or cap == "":
            return ""
        where = f"'{self.spec.path}' record {i} caption_file"
        if not isinstance(cap, str):
            raise InputError(f"{where} must be a path, got {type(cap).__name__}")
        return read_caption_file(_record_path(cap, where, self.root, self.confined), where)

    def media(self, item: int) -> str | None:
        return self._identity(self._media_path(self.records[item], item))

    def get(self, item: int, pixels: bool = True) -> Sample | None:
        rec = self.records[item]
        role = self.spec.role
        sample = Sample(role, self.index, item, format=self.format)
        if pixels:
            sample.pixels = _read_visual(self._media_path(rec, item), self.resolution, self.frames,
                                         self.preprocess, self.video, self.spec.min_res)
            if sample.pixels is None:
                return None
        if role == "vae":
            sample.pixels = self._random_crop(sample.pixels, item)
            return sample
        # the official cleanup (phrases removed from generation captions only), or the source's `captions`
        sample.text = clean_caption(self._caption(rec, item), self.spec.captions or "official",
                                    generation=role in ("t2i", "t2v"))
        if role in ("mmu", "mmu_vid"):
            sample.turns = [("", sample.text)]
        return sample


class LlavaSource(Source):
    def __init__(self, index, spec, cfg, geometry, records: Records):
        super().__init__(index, spec, cfg, geometry)
        self.records = records
        self.root = Path(spec.root) if spec.root else Path(spec.path).parent

    def size(self):
        return len(self.records)

    def signature(self) -> dict:
        return {**super().signature(), "path": str(Path(self.spec.path).resolve())}

    def get(self, item: int, pixels: bool = True) -> Sample | None:
        rec = self.records[item]
        # LLaVA's conversations of {from, value}, or the {role, content} messages of the OpenAI-style
        # ShareGPT data LLaMA-Factory and TRL read ("has no conversations": every record passed over)
        convs = rec.get("conversations") if rec.get("conversations") is not None else rec.get("messages")
        if not isinstance(convs, list) or not convs:
            raise InputError(f"'{self.spec.path}' record {item} has no conversations")
        turns, question = [], None
        for turn in convs:
            try:  # a string, or a list of text and image parts (TRL's vision records: they were passed over)
                text = content_text(turn.get("value", turn.get("content")) if isinstance(turn, dict) else None)
            except ValueError as e:
                raise InputError(f"'{self.spec.path}' record {item} has a malformed conversation turn ({e})") from None
            who = str(turn.get("from", turn.get("role", ""))).lower()
            if who in ("human", "user"):
                question = text
            elif who in ("gpt", "assistant") and question is not None:
                turns.append((question, text))
                question = None
        if not turns:
            raise InputError(f"'{self.spec.path}' record {item} has no human/gpt turn pair")
        sample = Sample(self.spec.role, self.index, item, format=self.format, turns=turns)
        p = self._media_path(rec, item)
        if p is not None and pixels:
            sample.pixels = _read_visual(p, self.resolution, self.frames, self.preprocess, self.video,
                                         self.spec.min_res)
            if sample.pixels is None:
                return None
        elif p is None:
            sample.has_visual = False
        return sample

    def _media_path(self, rec: dict, item: int) -> Path | None:
        """The record's image or video (None: a conversation about no media)."""
        media_key = "video" if self.video else "image"
        # "images"/"videos": LLaMA-Factory's lists (a record naming its picture so trained without it, silently)
        ref = rec.get(media_key) or rec.get(media_key + "s") or rec.get("image") or rec.get("video") or \
            rec.get("images") or rec.get("videos")
        if isinstance(ref, list):  # one picture a conversation: the others were dropped, the words about them kept
            if len(ref) > 1:
                raise InputError(f"'{self.spec.path}' record {item} names {len(ref)} {media_key}s: a conversation "
                                 f"trains with one {media_key} (split it into a record for each)")
            ref = ref[0] if ref else None
        if ref is not None and ref != "" and not isinstance(ref, str):
            raise InputError(f"'{self.spec.path}' record {item} {media_key} must be a path, got {type(ref).__name__}")
        if not ref:
            return None
        return _record_path(ref, f"'{self.spec.path}' record {item} {media_key}", self.root)

    def media(self, item: int) -> str | None:
        return self._identity(self._media_path(self.records[item], item))


# ---- a source's geometry, the sources of a config ------------------------------------------

def source_geometry(spec: DataSource, model_spec) -> dict:
    """Resolution and frame count of a source, filling the model's defaults."""
    res = spec.resolution or (model_spec.resolution if model_spec is not None else 256)
    if spec.role == "t2v":
        frames = spec.frames or model_spec.video_frames
    elif spec.role == "mmu_vid":
        frames = spec.frames or model_spec.und_video_frames
    else:
        frames = spec.frames or 1
    return {"resolution": int(res), "frames": int(frames)}


def make_sources(cfg: TrainConfig, model_spec, index_dir: Path) -> list[Source]:
    out = []
    for i, s in enumerate(cfg.data):
        geometry = source_geometry(s, model_spec)
        if s.kind == "shapes":
            out.append(ShapesSource(i, s, cfg, geometry))
        else:
            records = Records(*build_index(s, index_dir), name=s.path)
            if len(records) == 0:
                raise UsageError(f"{cfg.source}: data[{i}].path: '{s.path}' holds no records")
            cls = PairsSource if s.kind == "pairs" else LlavaSource
            out.append(cls(i, s, cfg, geometry, records))
    return out


def _record_path(text: str, where: str, root: Path, confined: bool = False) -> Path:
    """The file a record names: ``~`` expanded, a relative path taken from ``root`` (the records
    file's folder, or the source's ``root``: a relative ``caption_file`` was taken from the working
    folder, so a run started elsewhere trained on empty captions). A path written on Windows
    (``images\\cat.jpg``: a data set made there) is read with ``/`` where only that names a file:
    every such record was unreadable, passed over. ``confined`` (a data folder's ``metadata.jsonl``
    or ``metadata.csv``): the name must be of a file in ``root`` (not absolute, no ``..`` out of it),
    as Hugging Face ``datasets`` reads only the files found in the folder, matched to the records by
    their names: a hostile data set's ``../../home/me/.ssh/id_rsa`` or ``/etc/passwd`` was read."""
    if confined:
        parts = os.path.normpath(text.replace("\\", "/")).split("/")
        if os.path.isabs(text) or text.startswith(("~", "\\")) or ".." in parts:
            raise InputError(f"{where} '{short(text, 80)}' is outside the data folder '{root}': an imagefolder's "
                             "metadata names the files of its folder, relative to it")
    try:
        p = Path(text).expanduser()
    except RuntimeError as e:  # "~nosuchuser/..."
        raise InputError(f"{where}: {one_line(e, 80)}") from None
    p = p if p.is_absolute() else root / p
    if "\\" in text and not os.path.lexists(p):
        other = _record_path(text.replace("\\", "/"), where, root)
        if os.path.lexists(other):
            return other
    return p
