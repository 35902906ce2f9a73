"""Safe state-dict and config IO with strict fit checks, for BOTH networks (Show-o2 and the VAE).

* :func:`read_state_dict`: tensors from ``.safetensors`` (memory-mapped) or from a torch pickle
  (``.pth``/``.bin``/``.pt``/``.ckpt``) loaded only with ``torch.load(weights_only=True)``, so a
  file that would run code on load is refused; a file whose suffix says nothing is judged by its
  header. Wrappers (``{"state_dict": ...}``, ``{"model": ...}``, DeepSpeed's ``{"module": ...}``,
  DDP's ``module.`` and torch.compile's ``_orig_mod.`` prefixes) are removed; anything that is not
  a mapping of names to tensors is refused.
* :func:`check_fit`: the keys, shapes and floating-point dtypes a model expects, checked before
  anything is copied, with one line naming the first problems.
* :func:`read_json`: a config file (a regular file, at most 16 MiB, not nested absurdly deep).

Every problem is a :class:`~showo2_cli.errors.ModelError` on one line naming the file.
"""

from __future__ import annotations

import errno
import json
import os
import re
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import InputError, ModelError, error_detail, is_out_of_memory, one_line, short
from .options import MAX_CONFIG_BYTES

TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")
#: the entry of a training checkpoint holding the weights (DeepSpeed's ``mp_rank_00_model_states.pt``
#: keeps them under ``module``), the first found taken
WRAPPER_KEYS = ("state_dict", "model", "module")
#: prefixes wrappers add to every key: DDP's and DeepSpeed's ``module.``, torch.compile's ``_orig_mod.``
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
WEIGHT_SUFFIXES = (".safetensors", *TORCH_SUFFIXES)

if TYPE_CHECKING:  # torch is imported where tensors are read: the configs (read_json) and the hub's
    import torch  # lookups that use them stay torch-free (`showo2 models` answers without it)


def first(names: Iterable[str], n: int = 3) -> str:
    """``a, b, c (+4 more)``."""
    names = list(names)
    shown = ", ".join(names[:n])
    return shown + (f" (+{len(names) - n} more)" if len(names) > n else "")


def read_json(path: str | Path) -> dict:
    """A config file: a regular file (never a FIFO or a device, which could block forever), at
    most 16 MiB (read by :func:`~showo2_cli.media.read_limited`: one that grows while being read
    is not read on), JSON nested at most a few hundred levels, holding an object."""
    from .media import LFS_ADVICE, LFS_POINTER, read_limited

    path = Path(path)
    try:
        raw = read_limited(path, MAX_CONFIG_BYTES, "config", ModelError)
        if raw.startswith(LFS_POINTER):  # a clone without Git LFS: was "not valid JSON (Expecting value ...)"
            raise ModelError(f"'{path}' is a Git LFS pointer, not the file ({LFS_ADVICE})")
        data = json.loads(raw.decode("utf-8"))
    except RecursionError as e:
        raise ModelError(f"cannot read '{path}': JSON nested too deeply") from e
    except ModelError:  # an OSError too: said as it is
        raise
    except (ValueError, UnicodeDecodeError) as e:
        raise ModelError(f"cannot read '{path}': not valid JSON ({one_line(e)})") from e
    if not isinstance(data, dict):
        raise ModelError(f"'{path}' is not a JSON object (found {type(data).__name__})")
    return data


def save_tensors(tensors: Mapping[str, torch.Tensor], path: str | os.PathLike, metadata: dict[str, str]) -> None:
    """``safetensors.torch.save_file``, the same bytes for the same tensors and metadata: safetensors
    (0.8) writes the metadata in its hash map's order, which changes from process to process, so two
    equal saves had two sha256s. The header is written again in place with the metadata keys sorted
    (the same JSON, the same length: only the order of its entries changes)."""
    from safetensors.torch import save_file

    save_file(dict(tensors), str(path), metadata=metadata)
    if len(metadata) < 2:
        return
    with open(path, "r+b") as f:
        n = int.from_bytes(f.read(8), "little")
        header = f.read(n)
        parsed = json.loads(header, object_pairs_hook=dict)
        meta = parsed.pop("__metadata__", None)
        if not isinstance(meta, dict):
            return
        text = json.dumps({"__metadata__": dict(sorted(meta.items())), **parsed}, separators=(",", ":"),
                          ensure_ascii=False).encode()
        if len(text) <= n and json.loads(text) == json.loads(header):  # (else left as safetensors wrote it)
            f.seek(8)
            f.write(text.ljust(n, b" "))


def looks_like_safetensors(path: Path) -> bool:
    """The safetensors header: an 8-byte little-endian length, then a JSON object."""
    try:
        with open(path, "rb") as f:
            head = f.read(9)
    except OSError:
        return False
    return len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < (1 << 30)


#: The largest safetensors header the safetensors library reads (its own limit, 100 MB)
MAX_SAFETENSORS_HEADER = 100_000_000
#: More tensors than any weight file holds (Qwen2.5-72B: 963; a Show-o2 1.5B about 700; Wan2.1's VAE 194)
MAX_TENSORS = 100_000


class _Twice(ValueError):
    pass


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict:
    """A JSON object's pairs as a dict; the first name given a second time is raised (found in
    one pass: searching each name's predecessors took 30 s for a header of 40,000 metadata names,
    hours for a million)."""
    found = dict(pairs)
    if len(found) != len(pairs):
        seen: set[str] = set()
        raise _Twice(next(k for k, _v in pairs if k in seen or seen.add(k)))
    return found


def check_safetensors_header(path: Path, what: str, error: type[Exception] = ModelError) -> None:
    """Refuse a safetensors file whose header lists more than :data:`MAX_TENSORS` tensors (counted
    in its bytes, before any parsing: a 67 MB header of a million empty tensors took minutes and
    over 1 GB in the library) or names a tensor (or a field of one) twice (the safetensors library
    takes such a header, one of the two silently, though the format forbids it). The header is
    read within the library's own bound and never beyond the file's end; a header the library
    would refuse anyway (too long, truncated, not JSON) is left to it."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
            size = os.fstat(fh.fileno()).st_size
            n = int.from_bytes(head, "little") if len(head) == 8 else -1
            if not 0 < n <= min(MAX_SAFETENSORS_HEADER, size - 8):
                return
            raw = fh.read(n)
    except OSError:  # the library says what is wrong
        return
    count = raw.count(b'"data_offsets"')  # one a tensor (an escaped quote in a name is no match)
    if count > MAX_TENSORS:
        raise error(f"cannot read {what} '{path}': its header lists {count} tensors, more than the "
                    f"{MAX_TENSORS} any model has")
    try:
        json.loads(raw, object_pairs_hook=_unique_pairs)
    except _Twice as e:
        raise error(f"cannot read {what} '{path}': its header names '{short(str(e), 80)}' twice "
                    "(which tensor is meant cannot be told)") from None
    except (ValueError, RecursionError):  # not JSON: the library says what is wrong
        return


#: Bytes a value of each floating-point dtype a latent (or starting noise) may be stored in, by its
#: safetensors name
FLOAT_WIDTHS = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2}
#: The torch names of the other safetensors dtypes (what a message says)
OTHER_DTYPE_NAMES = {"BOOL": "bool", "U8": "uint8", "I8": "int8", "I16": "int16", "U16": "uint16", "I32": "int32",
                     "U32": "uint32", "I64": "int64", "U64": "uint64", "F8_E4M3": "float8_e4m3fn",
                     "F8_E5M2": "float8_e5m2"}


def read_one_tensor(path: str | os.PathLike, what: str, pick: Callable[[list[str], Path], str],
                    max_elements: int) -> tuple[torch.Tensor, dict[str, str]]:
    """One floating-point tensor of a small ``.safetensors`` file a user gives (latents, starting
    noise) and the file's metadata: the one reader of both. The file is a regular, readable,
    non-empty one; its header is bounded (:func:`check_safetensors_header`); ``pick(keys, path)``
    names the tensor (or raises); its declared size (at most ``max_elements``, and no more than
    the file holds) and dtype are judged from the header before a byte of it is read. Every
    problem is one :class:`~showo2_cli.errors.InputError` line naming the file; running out of
    memory mapping it stays a memory error."""
    from safetensors import safe_open

    from .media import check_input_file

    p = check_input_file(Path(path), f"{what} file")
    check_safetensors_header(p, what, InputError)
    try:
        with safe_open(str(p), framework="pt") as f:
            key = pick(list(f.keys()), p)
            sl = f.get_slice(key)
            shape, dtype = tuple(sl.get_shape()), str(sl.get_dtype())
            count = 1
            for d in shape:
                count *= d
            if count > max_elements or count * FLOAT_WIDTHS.get(dtype, 1) > p.stat().st_size:
                raise InputError(f"'{p}': the header declares {what} of shape {shape}, which this file "
                                 f"({p.stat().st_size} bytes) cannot hold or no model could decode")
            if dtype not in FLOAT_WIDTHS:
                raise InputError(f"'{p}': {what} must be floating point (float32, float16, bfloat16 or float64), "
                                 f"got {OTHER_DTYPE_NAMES.get(dtype, dtype)}")
            return f.get_tensor(key), dict(f.metadata() or {})
    except InputError:
        raise
    except Exception as e:
        if is_out_of_memory(e):  # no room to map the file (`ulimit -v`): a memory error, as for weights
            raise
        raise InputError(f"cannot read {what} '{p}': not a safetensors file or truncated ({error_detail(e)})") from e


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path), device="cpu")


def _load_pickle(path: Path) -> Any:
    """``torch.load`` restricted to tensors and plain containers, mmap'd when the format allows."""
    import torch

    check_pickle(path)  # (its own warnings filter)
    with warnings.catch_warnings():  # torch warns about odd pickles on stderr: the error says it
        warnings.simplefilter("ignore")
        try:
            return torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as e:
            if "mmap" not in str(e):
                raise
            return torch.load(str(path), map_location="cpu", weights_only=True)  # legacy (non-zip) format


def check_pickle(path: Path, what: str = "weights") -> None:
    """What a ``torch.save`` file must pass before ``torch.load`` reads it (every reader of one: the
    weights here, a training checkpoint's state): its zip entries stored uncompressed and each
    named once (:func:`_check_stored`), a legacy file's storages no larger than the file
    (:func:`_check_claims`), so nothing is allocated at a size the file names before it is checked.
    Each problem is a :class:`~showo2_cli.errors.ModelError` naming ``what`` and the file."""
    _check_stored(path, what)
    with warnings.catch_warnings():  # (torch's deprecation of the typed storages the claims name)
        warnings.simplefilter("ignore")
        _check_claims(path, what)


def _check_stored(path: Path, what: str = "weights") -> None:
    """A torch zip archive must hold its entries uncompressed, as ``torch.save`` writes them: mapped
    (``mmap=True``), a compressed entry's tensors were its compressed bytes taken as values (a
    re-zipped checkpoint loaded as garbage, silently), and inflated they could be any size. Nor may
    it name an entry twice, which torch.save never does: torch reads the first copy, Python's zipfile
    and other tools the last, so which tensor is meant cannot be told (never pick one silently)."""
    import zipfile

    try:
        if not zipfile.is_zipfile(path):
            return
        with zipfile.ZipFile(path) as archive:
            entries = archive.infolist()
            packed = next((i.filename for i in entries if i.compress_type != zipfile.ZIP_STORED), None)
    except (OSError, zipfile.BadZipFile, ValueError, EOFError):
        return  # (torch says what is wrong with it)
    seen: set[str] = set()
    twice = next((i.filename for i in entries if i.filename in seen or seen.add(i.filename)), None)
    if twice is not None:
        raise ModelError(f"cannot read {what} '{path}': its zip archive holds {short(twice, 80)} twice, with "
                         "nothing to tell which copy is meant (torch.save writes each entry once)")
    if packed is not None:
        raise ModelError(f"cannot read {what} '{path}': its zip entries are compressed (e.g. {short(packed, 80)}), "
                         "which torch.save never writes (a re-zipped checkpoint?); save the tensors again with "
                         "torch.save or safetensors")


def _check_claims(path: Path, what: str = "weights") -> None:
    """A legacy (non-zip) ``torch.save`` file must hold the bytes its storages claim: torch
    allocates each storage at the size its pickle names before reading the data (a 486-byte file
    claiming 10^10 floats asked for 40 GB: "out of memory"). The claims are read with an unpickler
    that imports nothing and calls none of the file's names (its own stand-ins only)."""
    import pickle
    import zipfile

    import torch

    class _Stub:  # what every name the pickle asks for becomes: calling or building it does nothing
        def __init__(self, *args, **kwargs):
            pass

        def __setstate__(self, state):
            pass

    claims: dict[str, int] = {}

    class _Claims(pickle.Unpickler):
        def find_class(self, module, name):
            storage = getattr(torch, name, None) if module == "torch" and name.endswith("Storage") else None
            return storage if isinstance(storage, type) and hasattr(storage, "dtype") else _Stub

        def persistent_load(self, pid):
            if isinstance(pid, tuple) and len(pid) >= 5 and pid[0] in ("storage", b"storage"):
                kind, key, numel = pid[1], pid[2], pid[4]
                if isinstance(kind, type) and isinstance(numel, int):
                    claims[str(key)] = max(claims.get(str(key), 0), numel * torch._utils._element_size(kind.dtype))
            return _Stub()

    try:
        if zipfile.is_zipfile(path):  # (mapped: a storage is its record, whatever the pickle claims)
            return
        with open(path, "rb") as fh:
            for _ in range(4):  # magic number, protocol version, system info, the object
                _Claims(fh).load()
    except Exception:  # not a legacy torch file, or a broken one: torch says what is wrong with it
        if not claims:
            return
    size, claimed = path.stat().st_size, sum(claims.values())
    if claimed > size:
        raise ModelError(f"cannot read {what} '{path}': its tensors claim {claimed:,} bytes but the file holds "
                         f"{size:,} (truncated or corrupt)")


def _pickled_code(path: Path) -> str | None:
    """What a pickle stream in ``path`` would import or call (``module name``, or ``?`` when the
    opcode names nothing), read with :mod:`pickletools` (parsing only, nothing runs); None when it
    calls nothing or is not a pickle."""
    import pickletools

    class _Discard:
        def write(self, text: str) -> int:
            return len(text)

    strings: list[str] = []
    try:
        with open(path, "rb") as fh:  # a whole, consistent stream first: noise can begin with any opcode
            pickletools.dis(fh, out=_Discard())
        with open(path, "rb") as fh:
            for op, arg, _pos in pickletools.genops(fh):
                if isinstance(arg, str):
                    strings = [*strings[-1:], arg]
                if op.name in ("GLOBAL", "INST"):
                    return str(arg).replace(" ", ".")
                if op.name == "STACK_GLOBAL":  # module and name were the last two strings pushed
                    return ".".join(strings[-2:]) if len(strings) == 2 else "?"
                if op.name in ("REDUCE", "OBJ", "NEWOBJ", "NEWOBJ_EX", "BUILD"):
                    return "?"
    except Exception:  # not a pickle (or a broken one): nothing to name
        return None
    return None


def unreadable_pickle(path: Path, e: Exception, what: str) -> ModelError:
    """The one-line error for a ``torch.load(weights_only=True)`` that failed: a pickle that would
    run code is refused "for safety" naming what it calls; else it is truncated or corrupt."""
    msg = str(e)
    unpickler = "weights_only" in msg or "Weights only load failed" in msg or "Unsupported global" in msg
    if unpickler:
        found = re.search(r"(?i)unsupported global:? (?:GLOBAL )?([\w.]+)", msg)
        named = found.group(1) if found else None
        if named is None and "global" not in msg.lower():
            named = _pickled_code(path)  # a plain pickle torch cannot parse may still call code
        if named is not None or "global" in msg.lower():
            calls = f"; it references {named}" if named not in (None, "?") else ""
            return ModelError(f"refusing to load '{path}' for safety: it holds pickled objects other than "
                              f"tensors (loading it could run code{calls})")
    if unpickler or not _starts_like_torch(path):  # which error torch meets first in noise is chance
        why = re.search(r"WeightsUnpickler error:\s*(.*?)\s*(?:Check the documentation|$)", msg, re.S)
        return ModelError(f"cannot read {what} '{path}': not a safetensors or PyTorch checkpoint (truncated or "
                          f"corrupt: {one_line(why.group(1) if why else msg, 120) or type(e).__name__})")
    return ModelError(f"cannot read {what} '{path}': truncated or corrupt ({one_line(msg) or type(e).__name__})")


def _starts_like_torch(path: Path) -> bool:
    """Whether ``path`` begins as ``torch.save`` writes: a zip archive, or (the legacy format) a
    pickle stream of protocol 2 or later."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(2)
    except OSError:
        return True  # nothing more to tell
    return head == b"PK" or (len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5)


def _read_one(path: Path) -> dict[str, torch.Tensor]:
    import torch

    try:
        exists, regular = path.exists(), path.is_file()
    except OSError as e:  # a name no file can have (a shard index may name anything): longer than the system takes
        raise ModelError(f"weight file '{short(str(path), 200)}' cannot be opened ({e.strerror or one_line(e)})") from None
    if not exists:
        raise ModelError(f"weight file '{path}' is missing")
    if not regular:  # a FIFO or a device would block or never end
        raise ModelError(f"weight file '{path}' is not a regular file")
    from .media import LFS_ADVICE, MARKUP_ADVICE, lfs_pointer, markup

    if lfs_pointer(path, path.stat().st_size):  # was "not a safetensors or PyTorch checkpoint"
        raise ModelError(f"weight file '{path}' is a Git LFS pointer, not the weights ({LFS_ADVICE}, or get the "
                         "model with showo2 pull)")
    found = markup(path)
    if found is not None:  # `wget` of a "blob" link: "not a safetensors ... header too large"
        raise ModelError(f"weight file '{path}' is {found}, not the weights ({MARKUP_ADVICE[found]})")
    suffix = path.suffix.lower()
    safetensors = suffix == ".safetensors" or looks_like_safetensors(path)  # also a .bin holding safetensors
    if safetensors:
        check_safetensors_header(path, "weights")
    try:
        obj: Any = _load_safetensors(path) if safetensors else _load_pickle(path)
    except ModelError:  # an OSError too: said as it is
        raise
    except Exception as e:
        if is_out_of_memory(e):  # no room to map the file (`ulimit -v`): a memory error, not a corrupt file
            raise
        if isinstance(e, OSError) and not (e.errno == errno.EINVAL and not safetensors):
            raise ModelError(f"cannot read weights '{path}' ({e.strerror or one_line(e)})") from e
        raise unreadable_pickle(path, e, "weights") from e  # (torch's zip reader: EINVAL for a truncated archive)
    if isinstance(obj, Mapping):
        for key in WRAPPER_KEYS:
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj:
        raise ModelError(f"'{path}' is not a state dict of tensors (found {type(obj).__name__})")
    bad = [str(k) for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise ModelError(f"'{path}' is not a state dict of tensors (entries {first(bad)})")
    odd = [k for k, v in obj.items() if v.layout != torch.strided]
    if odd:  # sparse or other layouts: no model stores its weights so
        raise ModelError(f"'{path}' holds tensors in a {str(obj[odd[0]].layout).replace('torch.', '')} layout "
                         f"(e.g. {odd[0]}), not dense weights")
    big = next((k for k, v in obj.items() if v.numel() * v.element_size() > v.untyped_storage().nbytes()), None)
    if big is not None:  # strides of 0 (or overlapping): 16 stored floats read as 10^12 values, which any use
        t = obj[big]     # (a NaN check, a merge) would allocate: "out of memory" from a 64-byte record
        raise ModelError(f"'{path}': {short(big, 80)} claims {tuple(t.shape)} ({t.numel():,} values) from "
                         f"{t.untyped_storage().nbytes():,} stored bytes (strides {t.stride()}): not dense weights")
    return unwrapped(dict(obj))


def unwrapped(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` less the prefixes that wrappers add to every key (:data:`WRAPPER_PREFIXES`, in any
    order and number: ``module._orig_mod.`` from a compiled model under DDP)."""
    while state:
        prefix = next((p for p in WRAPPER_PREFIXES if all(k.startswith(p) for k in state)), None)
        if prefix is None:
            return state
        state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def file_stamp(weights: Path) -> tuple:
    """What says a weight file (a model's or a VAE's, read again for a part loaded on first use) is
    still the one loaded: its size and time, or, for a file of a Hugging Face cache (a link into
    ``blobs/``, each named by its content's hash), that blob's name and size: ``pull
    --force-download`` writes the same blob again (new time, the same bytes, checked)."""
    info, real = weights.stat(), Path(os.path.realpath(weights))
    if real.parent.name == "blobs" and len(real.name) in (40, 64) and all(c in "0123456789abcdef" for c in real.name):
        return str(real), info.st_size
    return info.st_size, info.st_mtime_ns


def read_state_dict(paths: Path | str | Sequence[Path | str]) -> dict[str, torch.Tensor]:
    """All tensors of one weight file or of several shards, never unpickling code."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    state: dict[str, torch.Tensor] = {}
    for path in paths:
        part = _read_one(Path(path))
        twice = next((k for k in part if k in state), None)
        if twice is not None:  # which copy is meant cannot be told: never pick one silently
            raise ModelError(f"'{path}' holds '{twice}', which an earlier shard holds too: the shards disagree")
        state.update(part)
    return state


def check_fit(expected: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor], where: str | Path,
              optional: Iterable[str] = (), what: str = "the model") -> None:
    """Strict key, shape and dtype check of ``state`` against ``expected`` (a model's
    ``state_dict()``, meta tensors welcome), before anything is loaded. Keys in ``optional`` (a
    tied embedding stored once) may be absent."""
    optional = set(optional)
    missing = [k for k in expected if k not in state and k not in optional]
    unexpected = [k for k in state if k not in expected]
    wrong = [f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}" for k, v in expected.items()
             if k in state and tuple(state[k].shape) != tuple(v.shape)]
    not_float = [f"{k} {str(state[k].dtype).replace('torch.', '')}" for k, v in expected.items()
                 if k in state and v.is_floating_point() and not state[k].is_floating_point()]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing key(s) (e.g. {first(missing)})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s) (e.g. {first(unexpected)})")
    if wrong:
        problems.append(f"{len(wrong)} wrong shape(s) (e.g. {first(wrong, 2)})")
    if not_float:
        problems.append(f"{len(not_float)} tensor(s) that are not floating point (e.g. {first(not_float, 2)})")
    if problems:
        raise ModelError(f"weights in '{where}' do not fit {what}: {', '.join(problems)}")


__all__ = ["MAX_CONFIG_BYTES", "TORCH_SUFFIXES", "WEIGHT_SUFFIXES", "check_fit", "check_pickle", "check_safetensors_header",
           "first", "looks_like_safetensors", "one_line", "read_json", "read_state_dict", "unwrapped"]
