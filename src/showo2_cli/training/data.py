"""Training data: streaming sources whose sample order is a pure function of (seed, position).

Sources (one ``[[data]]`` table each: ``shapes``, ``pairs``, ``llava``) and their :class:`Sample`
are :mod:`.sources`' (re-exported here).

Nothing is held in memory: files are indexed once (byte offsets in a memory-mapped ``.u64``
file under ``<output_dir>/.data-index``) and records are read by seeking. The order is a pure
function of the position, so resuming at step ``s`` reproduces the data exactly:

* process ``r`` of ``w`` takes, at step ``s``, the role's sample numbers
  ``(s * w + r) * batch + j`` for ``j < batch`` (the processes' shares are disjoint);
* sample number ``n`` of a role picks a source by weight (a hash of ``n``) and, inside a finite
  source of ``N`` items, item ``perm_e(n mod N)`` with ``e = n // N`` the epoch and ``perm_e`` a
  keyed pseudo-random permutation (a Feistel network: O(1) memory for any ``N``).

VAE latents can be cached (``cache = "folder"``, :mod:`.latent_cache`): the frozen VAE's posterior
mean and log-variance per item, used only where an entry is what this run would write.
"""

from __future__ import annotations

import hashlib
import struct

import numpy as np
import torch

from ..errors import InputError, ResourceError, UsageError, one_line
from ..options import check_unicode
from .latent_cache import LatentCache
from .records import RecordsChanged
from .schema import TrainConfig
from .sources import LlavaSource as LlavaSource  # (re-exported, as below: users import them here)
from .sources import PairsSource as PairsSource
from .sources import Sample as Sample
from .sources import ShapesSource as ShapesSource
from .sources import Source as Source
from .sources import make_sources as make_sources
from .sources import source_geometry as source_geometry

INDEX_DIR = ".data-index"


# ---- deterministic hashing and permutations --------------------------------------------------

def mix(*values: int | str) -> int:
    """A 63-bit hash of a tuple of ints/strings (stable across processes, platforms, runs)."""
    h = hashlib.blake2b(digest_size=8)
    for v in values:
        if isinstance(v, str):
            b = v.encode()
            h.update(b"s" + struct.pack("<Q", len(b)) + b)
        else:
            h.update(b"i" + int(v).to_bytes(16, "little", signed=True))
    return int.from_bytes(h.digest(), "little") >> 1


class Permutation:
    """A keyed bijection of ``range(n)`` (4-round Feistel network with cycle walking)."""

    def __init__(self, n: int, key: int):
        if n < 1:
            raise ValueError("a permutation needs n >= 1")
        self.n, self.key = n, key
        bits = max(2, (n - 1).bit_length())
        bits += bits % 2
        self.half = bits // 2
        self.mask = (1 << self.half) - 1

    def _round(self, r: int, x: int) -> int:
        return mix(self.key, r, x) & self.mask

    def _encrypt(self, x: int) -> int:
        left, right = x >> self.half, x & self.mask
        for r in range(4):
            left, right = right, left ^ self._round(r, right)
        return (left << self.half) | right

    def __call__(self, i: int) -> int:
        if not 0 <= i < self.n:
            raise IndexError(i)
        x = self._encrypt(i)
        while x >= self.n:  # cycle walking stays inside [0, n)
            x = self._encrypt(x)
        return x


# ---- the role streams and the dataset ----------------------------------------------------------

class TrainingData(torch.utils.data.Dataset):
    """Maps ``(role, n)`` to the role's ``n``-th :class:`Sample` (a pure function of the config)."""

    MAX_SKIPS = 64

    def __init__(self, cfg: TrainConfig, sources: list[Source], caches: dict[int, LatentCache] | None = None):
        self.seed = cfg.seed
        self.sources = sources
        self.caches = caches or {}
        self.by_role: dict[str, list[Source]] = {}
        for s in sources:
            self.by_role.setdefault(s.spec.role, []).append(s)
        self._perms: dict[tuple[int, int], Permutation] = {}

    def role_length(self, role: str) -> int | None:
        """Items per epoch of a role (None when a source is endless)."""
        total = 0
        for s in self.by_role.get(role, []):
            n = s.size()
            if n is None:
                return None
            total += n
        return total

    def pick(self, role: str, n: int) -> tuple[Source, int]:
        """The source and item of the role's sample number ``n``."""
        sources = self.by_role[role]
        if len(sources) == 1:
            src = sources[0]
        else:
            weights = np.array([s.spec.weight for s in sources], dtype=np.float64)
            u = mix(self.seed, role, n) / float(1 << 63)
            src = sources[int(np.searchsorted(np.cumsum(weights) / weights.sum(), u, side="right").clip(0, len(sources) - 1))]
        size = src.size()
        if size is None:
            return src, n
        epoch, offset = divmod(n, size)
        key = (src.index, epoch)
        perm = self._perms.get(key)
        if perm is None:
            if len(self._perms) > 64:
                self._perms.clear()
            perm = self._perms[key] = Permutation(size, mix(self.seed, src.index, epoch))
        return src, perm(offset)

    def __len__(self) -> int:  # only used by DataLoader bookkeeping
        return 1 << 62

    def __getitem__(self, key: tuple[str, int]) -> Sample:
        role, n = key
        last = None
        for skipped in range(self.MAX_SKIPS):
            src, item = self.pick(role, n + skipped * 7919)
            try:
                sample = self.load(src, item)
            except (InputError, ResourceError) as e:
                if isinstance(e, RecordsChanged):  # not an item to pass over: the lines after it moved
                    raise
                sample, last = None, e
            else:
                if sample is None:
                    last = f"data[{src.index}] item {item} is smaller than min_res={src.spec.min_res}"
            if sample is not None:
                sample.skipped = skipped
                sample.skip_reason = one_line(last, 200) if skipped else ""
                return sample
        why = f"; the last: {one_line(last, 160)}" if last is not None else ""
        raise InputError(f"data[{src.index}]: {self.MAX_SKIPS} consecutive items could not be used "
                         f"(unreadable, or smaller than min_res={src.spec.min_res}){why}")

    def load(self, src: Source, item: int) -> Sample | None:
        """Item ``item`` of ``src``: its cached latent when there is one, else its pixels."""
        cache = self.caches.get(src.index)
        media = src.media(item) if cache is not None else None
        hit, note = cache.entry(item, media) if media is not None else (None, "")
        sample = src.get(item, pixels=hit is None)
        if sample is None:
            return None
        _check_unicode(sample, src, item)
        if hit is not None:
            sample.latent = hit
        elif media is not None and sample.has_visual:
            sample.cache_path, sample.cache_media, sample.cache_note = str(cache.path(item)), media, note
        return sample


def _check_unicode(sample: Sample, src: Source, item: int) -> None:
    """An item whose text JSON's ``"\\ud83d"`` escape left a lone surrogate in (an emoji cut in half by
    a tool counting UTF-16 units) is an input error, passed over: the tokenizer's TypeError ended the run."""
    where = f"'{src.spec.path}' record {item}" if src.spec.path else f"data[{src.index}] item {item}"
    for text in (sample.text, *(t for turn in sample.turns for t in turn)):
        try:
            check_unicode(text, f"{where}'s text")
        except UsageError as e:
            raise InputError(str(e)) from None


def step_keys(roles: dict[str, int], step: int, rank: int, world: int) -> list[tuple[str, int]]:
    """The ``(role, n)`` keys process ``rank`` of ``world`` trains on at ``step``."""
    keys = []
    for role, b in roles.items():
        first = (step * world + rank) * b
        keys.extend((role, first + j) for j in range(b))
    return keys


class StepSampler(torch.utils.data.Sampler):
    """Yields each step's list of keys, from ``start`` (inclusive) to ``stop`` (exclusive)."""

    def __init__(self, roles: dict[str, int], start: int, stop: int, rank: int, world: int):
        self.roles, self.start, self.stop, self.rank, self.world = roles, start, stop, rank, world

    def __iter__(self):
        for step in range(self.start, self.stop):
            yield step_keys(self.roles, step, self.rank, self.world)

    def __len__(self) -> int:
        return max(0, self.stop - self.start)


def collate(samples: list[Sample]) -> list[Sample]:
    return samples


def loader(dataset: TrainingData, sampler: StepSampler, num_workers: int, worker_init_fn=None, seed: int = 0):
    """A DataLoader over whole steps (workers prefetch pixels; encoding stays in the trainer). Its
    workers' seeds come from ``seed``: torch draws them from the global generator otherwise, one
    draw where the loop starts, which is at another point of a resumed run's."""
    kwargs = {"num_workers": num_workers, "prefetch_factor": 2, "persistent_workers": False,
              "worker_init_fn": worker_init_fn} if num_workers > 0 else {}
    return torch.utils.data.DataLoader(dataset, batch_sampler=sampler, collate_fn=collate,
                                       generator=torch.Generator().manual_seed(seed), **kwargs)
