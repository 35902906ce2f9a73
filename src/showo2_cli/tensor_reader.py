"""A weight file's tensors read one at a time (:class:`TensorReader`), with memory of their own or
converted to the load's dtype in chunks, the file's pages never piling up beside the weights: what a
load that places (:mod:`showo2_cli.placement`) or converts (:func:`showo2_cli.loading.build_network`)
its network reads with. The files were read and checked first (:func:`~showo2_cli.weights.read_state_dict`)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import ModelError, error_detail, is_out_of_memory
from .weights import looks_like_safetensors, unwrapped

if TYPE_CHECKING:
    import torch


def _data_starts(fh) -> dict[str, tuple[int, int]]:
    """Where each tensor's bytes start in the safetensors file open as ``fh``, and how many there
    are (header already checked and read by the library; read here from the same open file the
    tensors are read from); empty where the file is not little-endian-readable as stored (a
    big-endian host)."""
    import sys

    if sys.byteorder != "little":
        return {}
    n = int.from_bytes(os.pread(fh.fileno(), 8, 0), "little")
    header = json.loads(os.pread(fh.fileno(), n, 8))
    return {k: (8 + n + int(v["data_offsets"][0]), int(v["data_offsets"][1]) - int(v["data_offsets"][0]))
            for k, v in header.items()
            if k != "__metadata__" and isinstance(v, dict) and "data_offsets" in v}


def _converted_from_mapping(mapped: torch.Tensor, dtype: torch.dtype, page_out: Callable[[torch.Tensor], None]
                            ) -> torch.Tensor:
    """A pickle's tensor (``torch.load(mmap=True)``: in the file's memory map) in ``dtype``,
    converted by chunks of :data:`CONVERT_CHUNK` elements, each chunk's pages handed back
    (``page_out``) once converted: the file's pages do not pile up beside the converted weights
    until the load lets the mapping go (an official bf16 ``pytorch_model.bin`` loaded in float32)."""
    import torch

    if mapped.dim() == 0 or mapped.numel() <= CONVERT_CHUNK or not mapped.is_contiguous():
        out = mapped.to(dtype)
        page_out(mapped)
        return out
    out = torch.empty(mapped.shape, dtype=dtype)
    step = max(CONVERT_CHUNK // max(mapped[0].numel(), 1), 1)
    for first in range(0, len(mapped), step):
        part = mapped[first:first + step]
        out[first:first + step].copy_(part)
        page_out(part)
    return out


def _file_mappings(paths: Sequence[Path]) -> list[tuple[int, int]]:
    """The address ranges where this process maps the files ``paths`` (``/proc/self/maps``; none
    elsewhere): where a pickle's tensors lie when ``torch.load`` mapped it."""
    names = {os.path.realpath(p) for p in paths}
    found = []
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                fields = line.split(maxsplit=5)
                if len(fields) == 6 and fields[5].rstrip("\n") in names:
                    start, end = (int(v, 16) for v in fields[0].split("-"))
                    found.append((start, end))
    except OSError:
        pass
    return found


def _page_out(address: int, size: int) -> None:
    """``madvise(MADV_PAGEOUT)`` (Linux 5.4+) over the pages holding ``[address, address + size)``
    of a file's mapping: a hint that never loses data (a clean page is read again from the file
    where used; a page written to is kept, or swapped); nothing where the system has no such call
    or refuses it (the pages then stay, as they did)."""
    import ctypes

    page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
    start = address - address % page
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.madvise(ctypes.c_void_p(start), ctypes.c_size_t(address + size - start), 21)  # MADV_PAGEOUT
    except (OSError, AttributeError):
        pass


_PREADV = hasattr(os, "preadv")  # (not on Windows, nor on macOS before 11: a tensor is then converted whole)


#: Elements of a tensor converted to another dtype at once (:class:`TensorReader`): a bf16 file loaded
#: in float32 reads the 1.5B's 151669 x 1536 embedding (0.47 GB in bf16) in chunks of rows written
#: into its float32 tensor, instead of whole beside it (+0.47 GB at the load's peak).
CONVERT_CHUNK = 1 << 24


class TensorReader:
    """Reads the tensors of weight files one at a time, each with memory of its own: a load that
    converts, quantizes and drops each layer in turn (:func:`showo2_cli.placement.place`) then
    holds about one layer unquantized at a time. A memory-mapped tensor (what
    :func:`read_state_dict` gives) would keep every page it read in the process until the whole
    file is let go (a 0.47 GB ``lm_head`` read through the mapping: +0.46 GB of file pages until
    then; read here, with safetensors' ``pread`` backend: +0.45 GB, all given back on ``del``).
    ``state``: :func:`read_state_dict`'s reading of the same ``paths`` (checked: names, shapes,
    dtypes); a pickle's tensors (``.bin``, which has no such reader) are taken from it, memory-
    mapped (``own_memory`` is then False). ``mapped``: a tensor already in the dtype asked for is
    ``state``'s, the mapping's (an unquantized load assigns it, read lazily); only a tensor
    converted is read. Call it with a name and the dtype wanted (:data:`CONVERT_CHUNK` elements
    read and converted at a time, into the converted tensor: never the whole stored tensor beside
    it); :meth:`close` when done."""

    def __init__(self, paths: Sequence[Path | str], state: Mapping[str, torch.Tensor], mapped: bool = False):
        from safetensors import safe_open

        self.state, self.handles, self.found, self.mapped, self.files = state, [], {}, mapped, {}
        self.taken: list[torch.Tensor] = []  # a pickle's mapped tensors given out since let_go()
        try:
            for path in [Path(p) for p in paths]:
                if not (path.suffix.lower() == ".safetensors" or looks_like_safetensors(path)):
                    continue
                # the file the chunks are read from (:meth:`_converted`), opened with the library's handle
                # and checked to be the same file: one opened later would be whatever is at that path then
                # (a file replaced during the load gave its tensors converted and the old one's the rest)
                fh = open(path, "rb", buffering=0)  # noqa: SIM115 (closed by close())
                self.files[path] = fh
                handle = safe_open(str(path), framework="pt", backend="pread")
                self.handles.append(handle)
                if not os.path.samestat(os.fstat(fh.fileno()), os.stat(path)):
                    raise OSError("the file was replaced while it was being opened")
                starts = _data_starts(fh) if _PREADV else {}
                for key, stored in unwrapped({k: k for k in handle.keys()}).items():
                    self.found[key] = (handle, stored, path, starts.get(stored))
        except Exception as e:
            self.close()
            raise ModelError(f"cannot read weights '{path}' ({error_detail(e)})") from e
        self.own_memory = all(k in self.found for k in state)
        pickles = [Path(p) for p in paths if not any(f[2] == Path(p) for f in self.found.values())]
        self.mappings = _file_mappings(pickles) if pickles else []  # (a pickle's tensors: their pages handed back)

    def __call__(self, key: str, dtype: torch.dtype | None = None) -> torch.Tensor:
        mapped = self.state[key]
        same = dtype is None or mapped.dtype == dtype
        if key not in self.found or (same and self.mapped):
            if same and not self.mapped:
                self.taken.append(mapped)
            return mapped if same else _converted_from_mapping(mapped, dtype, self._page_out)
        handle, stored, path, start = self.found[key]
        try:
            if same or mapped.dim() == 0 or mapped.numel() <= CONVERT_CHUNK or start is None or not _PREADV:
                tensor = handle.get_tensor(stored)
                return tensor if same else tensor.to(dtype)
            if start[1] != mapped.numel() * mapped.element_size():  # not the tensor read_state_dict checked
                raise ModelError(f"cannot read '{key}' from weights '{path}' (it holds {start[1]:,} bytes, not "
                                 f"the {mapped.numel() * mapped.element_size():,} checked: the file changed since)")
            return self._converted(mapped, dtype, path, start[0])
        except ModelError:
            raise
        except Exception as e:  # the file changed since it was checked (truncated, replaced)
            if is_out_of_memory(e):
                raise
            raise ModelError(f"cannot read '{key}' from weights '{path}' ({error_detail(e)})") from e

    def _converted(self, mapped: torch.Tensor, dtype: torch.dtype, path: Path, start: int) -> torch.Tensor:
        """``mapped``'s values (stored from byte ``start`` of ``path``) in ``dtype``: chunks of rows read
        into one buffer of the stored dtype, each converted into the result (``copy_`` converts as
        ``.to`` does: the same bits). safetensors' ``get_slice`` is no help here: its ``pread``
        backend reads the whole tensor for any slice, its ``mmap`` one keeps the pages it read."""
        import torch

        rows, row = len(mapped), max(mapped[0].numel(), 1)
        step = min(max(CONVERT_CHUNK // row, 1), rows)
        out = torch.empty(mapped.shape, dtype=dtype)
        buffer = torch.empty((step, *mapped.shape[1:]), dtype=mapped.dtype)
        raw = memoryview(buffer.view(-1).view(torch.uint8).numpy())
        row_bytes = row * mapped.element_size()
        fh = self.files[path]  # (opened with the library's handle: the same file)
        for first in range(0, rows, step):
            n = min(step, rows - first)
            want, done = n * row_bytes, 0
            while done < want:
                got = os.preadv(fh.fileno(), [raw[done:want]], start + first * row_bytes + done)  # (into the buffer)
                if not got:
                    raise ModelError(f"cannot read weights '{path}' (the file ends early: it changed since it was checked)")
                done += got
            out[first:first + n].copy_(buffer[:n])
        return out

    def let_go(self) -> None:
        """Hand the pages of a pickle's mapped tensors given out since the last call back to the
        system (:func:`_page_out`): a quantized load calls it after each group, whose tensors it has
        quantized into memory of their own (what stays unquantized is read again where used)."""
        for tensor in self.taken:
            self._page_out(tensor)
        self.taken = []

    def _page_out(self, tensor: torch.Tensor) -> None:
        """Hand back the pages of ``tensor`` if it lies in a pickle's file mapping (never memory
        of the process's own: that would be swapped, not freed)."""
        start = tensor.data_ptr()
        size = tensor.numel() * tensor.element_size()
        if size and any(low <= start and start + size <= high for low, high in self.mappings):
            _page_out(start, size)

    def close(self) -> None:
        for handle in self.handles:
            handle.__exit__(None, None, None)
        for fh in self.files.values():
            fh.close()
        self.handles, self.files = [], {}

    def __enter__(self) -> TensorReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
