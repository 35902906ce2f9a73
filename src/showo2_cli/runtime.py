"""Where and how a job runs: the device, the dtype, the memory guard and the process rank.

The one dtype table (names in :data:`showo2_cli.options.DTYPES`), the one device picker, CPU
offload (accelerate's hooks), the memory guard every command consults before allocating, and the
rank/world of a multi-process launch (:func:`~showo2_cli.processes.process_rank`, torch-free so the
command line plans its outputs before importing torch). The launch's processes joined over gloo
(:func:`launch_group`) live in :mod:`showo2_cli.process_group` and are re-exported here.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import warnings
from contextlib import contextmanager, suppress
from pathlib import Path

import torch

from .environment import MAX_MEMORY_ENV, env_memory_limit
from .errors import ResourceError, UsageError, gb_text, short
from .hub_auth import hub_offline
from .options import (
    DTYPES,
    NF4_SEQUENTIAL,
    OFFLOAD_MODES,
    check_device,
    is_finite_number,
)

# (re-exported: the launch group's users import these from here)
from .process_group import LAUNCH_WAIT as LAUNCH_WAIT
from .process_group import LaunchGroup as LaunchGroup
from .process_group import join_launch as join_launch
from .process_group import launch_group as launch_group
from .processes import launch_env, process_rank

#: Loggers that write about the machine while transformers, diffusers or peft import torchao and
#: bitsandbytes (installed for ``--quantize``): torchao's missing CUDA extensions, torch's note on an
#: Enum torchao registers, diffusers' on torchao 0.18's removed tensor classes, bitsandbytes' on the
#: optional ``kernels`` package (its own CPU kernels run instead), and ``kernels`` itself (installed
#: by transformers 5.25) on skipping its Hub trust check offline when bitsandbytes asks it for a CPU
#: kernel. Noise on every command, about nothing a user can act on, so :func:`quiet_imports` holds
#: it back while those imports run.
IMPORT_NOISE = ("torchao", "torch.utils._pytree", "diffusers.quantizers.torchao.torchao_quantizer",
                "bitsandbytes.backends.cpu.ops", "kernels")


#: torch's own deprecation of ``torch.jit.script_method``, which torch's inductor still calls when
#: bitsandbytes (imported by diffusers and peft) compiles its ops: 14 lines under ``-W default``
#: or pytest, about torch's code
IMPORT_DEPRECATION = r"`torch\.jit\.script_method` is deprecated"


#: held by the thread inside :func:`quiet_imports`: the project's imports of transformers, diffusers,
#: peft and bitsandbytes run one thread at a time. transformers' first import is not safe from threads:
#: three threads each making their first ``load_tokenizer`` call at once, 2 of the 3 failed with "cannot
#: import name 'AutoTokenizer' from 'transformers'" (a thread handed the half-built module). Re-entrant:
#: a block may open inside another.
IMPORTS_LOCK = threading.RLock()


@contextmanager
def quiet_imports():
    """Import heavy libraries inside this block: the :data:`IMPORT_NOISE` loggers show only errors
    meanwhile, and :data:`IMPORT_DEPRECATION` is not shown; after, the loggers have their own
    levels back and that one filter is gone (the caller's logging and warning settings are theirs:
    a level set here for good hid torchao's and torch's later warnings from a program that imported
    showo2_cli). Not ``warnings.catch_warnings``: it would also drop the filters the imported
    libraries add for themselves. The Hub is offline meanwhile (:func:`~showo2_cli.hub_auth.hub_offline`).
    One thread at a time is in the block (:data:`IMPORTS_LOCK`), so every import of those libraries in
    the project goes through it: their first imports are then safe from threads, and two blocks never
    take each other's logger levels for the caller's."""
    with IMPORTS_LOCK:
        loggers = [logging.getLogger(name) for name in IMPORT_NOISE]
        levels = [logger.level for logger in loggers]
        for logger in loggers:
            logger.setLevel(max(logger.getEffectiveLevel(), logging.ERROR))
        warnings.filterwarnings("ignore", IMPORT_DEPRECATION, DeprecationWarning)
        ignore = warnings.filters[0]
        try:
            with hub_offline():
                yield
        finally:
            for logger, level in zip(loggers, levels, strict=True):
                logger.setLevel(level)
            with suppress(ValueError):
                warnings.filters.remove(ignore)
            getattr(warnings, "_filters_mutated", lambda: None)()  # the warnings module's cache of the filters


def one_call_at_a_time(method):
    """Run a method under its object's re-entrant ``_call_lock`` (a step callback may call again):
    objects that keep a running call's state on themselves (the pipeline's ``_interrupt`` and
    ``num_timesteps``, the VAE's causal caches) then take turns between threads instead of reading
    each other's state. The object makes ``self._call_lock = threading.RLock()``, and a copy
    (pickle, ``copy.deepcopy``) a new one."""

    @functools.wraps(method)
    def locked(self, *args, **kwargs):
        with self._call_lock:
            return method(self, *args, **kwargs)

    return locked


def cpu_by_default(function):
    """Run ``function`` with torch's default device the CPU, as the library is written (noise from
    CPU generators, masks, positions and time grids made without ``device=``, then moved to the
    model's device): a caller's ``torch.set_default_device("cuda")`` (a notebook's habit) or
    ``"meta"`` would otherwise put them elsewhere and fail deep inside, or draw other noise.

    A default device is a ``DeviceContext`` torch-function mode, through which every torch call
    then passes in Python (24-50% of a small model's call). The call runs with the caller's
    device modes taken off the stack, which is exactly torch's own CPU default (not a CPU mode in
    their place, which costs as much), and with no mode at all it is a plain call."""

    @functools.wraps(function)
    def pinned(*args, **kwargs):
        if not torch._C._is_torch_function_mode_enabled():
            return function(*args, **kwargs)
        with _without_default_device():
            return function(*args, **kwargs)

    return pinned


@contextmanager
def _without_default_device():
    """Take the default-device modes (``torch.utils._device.DeviceContext``: ``set_default_device``,
    ``with torch.device(...)``) off this thread's torch-function mode stack, keeping any other mode
    in its order, and put the stack back as it was afterwards (as ``DeviceContext.__enter__``
    itself rearranges it)."""
    from torch.overrides import _len_torch_function_stack, _pop_mode, _push_mode
    from torch.utils import _device

    saved = [_pop_mode() for _ in range(_len_torch_function_stack())][::-1]  # bottom first
    device_modes = [m for m in saved if isinstance(m, _device.DeviceContext)]
    if not device_modes:
        for mode in saved:
            _push_mode(mode)
        yield
        return
    for mode in saved:
        if not isinstance(mode, _device.DeviceContext):
            _push_mode(mode)
    local = getattr(torch, "_GLOBAL_DEVICE_CONTEXT", None)  # thread-local; get_default_device() reads it
    global_context = getattr(local, "device_context", None)
    current = _device.CURRENT_DEVICE  # what torch.compile's guards read; None with the CPU default
    if global_context is not None:
        local.device_context = None
    _device.CURRENT_DEVICE = None
    try:
        yield
    finally:
        _device.CURRENT_DEVICE = current
        if global_context is not None:
            local.device_context = global_context
        for _ in range(_len_torch_function_stack()):
            _pop_mode()
        for mode in saved:
            _push_mode(mode)

TORCH_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def torch_dtype(name: str | torch.dtype) -> torch.dtype:
    """``fp32``/``float32``/``bf16``/... (or a torch dtype) -> the torch dtype."""
    if isinstance(name, torch.dtype):
        return name
    key = str(name).lower().removeprefix("torch.")
    key = "fp32" if key == "float" else key
    if key not in DTYPES:
        raise UsageError(f"unknown dtype '{name}'; use one of fp32, bf16, fp16")
    return TORCH_DTYPES[DTYPES[key]]


def dtype_label(dtype: torch.dtype) -> str:
    return {v: k for k, v in TORCH_DTYPES.items()}.get(dtype, str(dtype).replace("torch.", ""))


def pick_device(device: str = "auto") -> str:
    """``auto`` -> cuda, then mps, then cpu; an explicit device must be available."""
    check_device(device)
    device = device.lower()
    if device.startswith("cpu:"):  # torch.device("cpu", 0): one CPU, whatever the index
        device = "cpu"
    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "mps" if mps else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {device}: no CUDA device is available")
    if device.startswith("cuda:") and int(device[5:]) >= torch.cuda.device_count():
        count = torch.cuda.device_count()  # (torch's "invalid device ordinal" came at the first move)
        raise UsageError(f"--device {device}: this machine has {count} CUDA device(s), cuda:0"
                         + (f" to cuda:{count - 1}" if count > 1 else ""))
    if device == "mps" and not mps:
        raise UsageError("--device mps: MPS is not available")
    if device == "cuda" and process_rank()[1] > 1:  # one GPU per process under accelerate/torchrun
        local = launch_env("LOCAL_RANK", 0) or 0
        if local >= torch.cuda.device_count():
            raise UsageError(f"LOCAL_RANK={local} but this machine has {torch.cuda.device_count()} CUDA device(s)")
        device = f"cuda:{local}"
    return device


def pick_dtype(dtype: str, device: str) -> torch.dtype:
    """``auto`` -> bf16 on CUDA, fp32 elsewhere."""
    if dtype.lower() == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return torch_dtype(dtype)


#: the dtypes a Python caller may compute in: the CLI's (:data:`TORCH_DTYPES`) and float64
PYTHON_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)


def _is_auto(value) -> bool:
    return isinstance(value, str) and value.strip().lower() == "auto"


def python_device(device: str | torch.device) -> str:
    """A device a Python caller passes (``"auto"``, ``"cpu"``, ``"cuda:0"``, ``"MPS"``, a
    ``torch.device``), checked and resolved as ``--device`` is (:func:`pick_device`); a wrong one is
    one :class:`UsageError` line naming ``device`` and the accepted values."""
    from .errors import rename_options

    try:
        return pick_device(str(device))
    except UsageError as e:
        raise UsageError(rename_options(str(e), {"--device": "device"})) from None


def python_dtype(dtype: str | torch.dtype, device: str | torch.device = "cpu", name: str = "dtype") -> torch.dtype:
    """A dtype a Python caller passes: ``"auto"`` (bf16 on CUDA, float32 elsewhere, as ``--dtype
    auto``), a name of the dtype table (any case, ``torch.`` prefix or not) or a torch dtype, of
    float32, bfloat16, float16, or float64 (the one Python callers get beyond the CLI's). ``name``:
    the caller's argument, for the message (``torch_dtype`` in ``from_pretrained``)."""
    if _is_auto(dtype):
        return pick_dtype("auto", str(device))
    key = str(dtype).lower().removeprefix("torch.") if isinstance(dtype, (str, torch.dtype)) else None
    if key in ("float64", "fp64", "double"):
        return torch.float64
    try:
        found = torch_dtype(dtype) if key is not None else None
    except UsageError:
        found = None
    if found not in PYTHON_DTYPES:
        raise UsageError(f"{name} must be auto, fp32, bf16, fp16 or float64 (a name or a torch dtype), got "
                         f"'{short(dtype)}'")
    return found


def load_placement(runtime, device=None, dtype=None, dtype_name: str = "dtype") -> tuple[str, torch.dtype]:
    """Where ``loading.load`` (and ``Showo2Pipeline.from_pretrained``) builds a model, the one
    reading of the placement arguments: ``device`` (:func:`python_device`) and ``dtype``
    (:func:`python_dtype`), else the :class:`~showo2_cli.options.RuntimeOptions`' own when not
    ``auto``, else the CPU in float32 (diffusers' default). ``"auto"`` passed as an argument is the
    best one (CUDA, then MPS, then the CPU; bf16 on CUDA), and defers to the options' explicit
    value as an argument not given does (``torch_dtype="auto"`` with ``RuntimeOptions(dtype="bf16")``
    is bf16). A given argument and an option that disagree are a :class:`UsageError`: one of them
    would be ignored. ``dtype_name``: the caller's name of ``dtype``, for the messages."""
    auto_device, auto_dtype = _is_auto(device), _is_auto(dtype)
    device = None if auto_device else device
    dtype = None if auto_dtype else dtype
    rt_device = runtime.device if runtime is not None and not _is_auto(runtime.device) else None
    rt_dtype = runtime.dtype if runtime is not None and not _is_auto(runtime.dtype) else None
    if device is not None:
        dev = python_device(device)
        if rt_device is not None and torch.device(dev) != torch.device(pick_device(rt_device)):
            raise UsageError(f"device '{device}' and RuntimeOptions(device='{rt_device}') disagree: pass one")
    else:
        dev = pick_device(rt_device if rt_device is not None else "auto" if auto_device else "cpu")
    if dtype is not None:
        dt = python_dtype(dtype, dev, dtype_name)
        if rt_dtype is not None and dt != python_dtype(rt_dtype):
            raise UsageError(f"{dtype_name} {dtype_label(dt)} and RuntimeOptions(dtype='{rt_dtype}') disagree: pass one")
    elif rt_dtype is not None:
        dt = python_dtype(rt_dtype)
    else:
        dt = pick_dtype("auto" if auto_dtype or auto_device else "fp32", dev)
    quantize = getattr(runtime, "quantize", "none")
    if dt == torch.float64 and quantize != "none":  # (torchao asserted, bitsandbytes raised, after the weights were read)
        raise UsageError(f"RuntimeOptions(quantize='{quantize}') quantizes fp32, bf16 or fp16 weights, not float64: "
                         f"pass another {dtype_name}, or no quantize")
    return dev, dt


# ---- CPU offload ------------------------------------------------------------------------------

def enable_offload(bundle, mode: str, device: str | torch.device) -> None:
    """Keep a loaded bundle's weights in CPU memory and run them on ``device`` (accelerate's hooks).

    ``model``: ``cpu_offload_with_hook`` on the network and on the VAE, each hook offloading the
    other before its component runs, so one of them is on the device at a time (the diffusers
    ``enable_model_cpu_offload``; the hooks fire on the components' entry methods, which carry
    diffusers' ``apply_forward_hook``). ``sequential``: ``cpu_offload`` on both, every layer's
    weights brought to the device for its own forward and dropped after (least memory, slowest).
    ``none`` does nothing. The components report ``device`` as the execution device, so the
    pipelines put their inputs there. On a CPU-only machine the weights do not move, but the same
    hooks run (``sequential`` leaves the parameters on 'meta' between calls).
    """
    if mode not in OFFLOAD_MODES:
        raise UsageError(f"--offload must be one of {', '.join(OFFLOAD_MODES)}, got '{mode}'")
    if mode == "none":
        return
    from accelerate import cpu_offload, cpu_offload_with_hook

    dev = torch.device(device)
    if bundle.vae is not None:
        bundle.vae.load_parts()  # the hooks hold what is there: a part loaded later would have none
    if mode == "sequential":  # (model offload moves the network whole: a head loaded later moves with it)
        bundle.network.load_heads()
    parts = [m for m in (bundle.network, bundle.vae) if m is not None]
    if any(getattr(m, "execution_device", None) is not None for m in parts):
        raise UsageError("offload is already enabled on this model")
    if mode == "sequential" and any(getattr(p, "quant_state", None) is not None for p in bundle.network.parameters()):
        raise UsageError(NF4_SEQUENTIAL)  # (RuntimeOptions.validate says it before a load)
    if mode == "model":
        hooks = [cpu_offload_with_hook(m, dev)[1] for m in parts]
        for hook, other in zip(hooks, hooks[1:] + hooks[:1], strict=True):
            if other is not hook:
                hook.hook.prev_module_hook = other
    else:
        for m in parts:
            cpu_offload(m, dev)
    for m in parts:
        m.execution_device = dev
    bundle.offload = mode


def disable_offload(bundle) -> None:
    """Take :func:`enable_offload`'s hooks off (diffusers' ``remove_all_hooks``): the weights stay
    where the hooks last put them (sequential offload's are put back from its CPU copies), and
    ``.to()`` places them again."""
    from accelerate.hooks import remove_hook_from_module

    for m in (bundle.network, bundle.vae):
        if m is not None and getattr(m, "execution_device", None) is not None:
            remove_hook_from_module(m, recurse=True)
            m.execution_device = None
            for module in m.modules():  # accelerate puts the class's forward back as the module's own
                bound = module.__dict__.get("forward")  # (a bound method, which pickle cannot name)
                if getattr(bound, "__func__", None) is type(module).forward:
                    del module.forward
    bundle.offload = "none"


# ---- memory guard -----------------------------------------------------------------------------


def available_memory_gb(device: str | torch.device = "cpu") -> float | None:
    """Memory a job on ``device`` can use now: on CUDA the card's free memory plus what torch's
    caching allocator holds unused (freed by an earlier job of this process: it serves this job's
    tensors first, and is given back to the card before an allocation fails), else the available
    RAM (``MemAvailable``, capped by a cgroup limit when there is one). None when unknown."""
    dev = torch.device(device)
    if dev.type == "cuda":
        try:
            free, _total = torch.cuda.mem_get_info(dev)
            cached = torch.cuda.memory_reserved(dev) - torch.cuda.memory_allocated(dev)
            return (free + max(cached, 0)) / 1e9
        except Exception:
            return None
    found: float | None = None
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    found = int(line.split()[1]) * 1024 / 1e9
                    break
    except (OSError, ValueError, IndexError):
        found = None
    if found is None:
        try:
            found = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 1e9
        except (AttributeError, ValueError, OSError):
            found = None
    try:  # a container's own limit (cgroup v2)
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit.isdigit():
            used = int(Path("/sys/fs/cgroup/memory.current").read_text().strip() or 0)
            room = max(int(limit) - used, 0) / 1e9
            found = room if found is None else min(found, room)
    except (OSError, ValueError):
        pass
    return found


def decode_budget(option: float | None = None) -> int | None:
    """Bytes the decoded frames of an input video may take: the job's memory limit
    (:func:`memory_limit_gb` on the CPU, where frames are decoded); None when there is none."""
    limit, _source = memory_limit_gb(option, "cpu")
    return int(limit * 1e9) if limit else None


def memory_limit_gb(option: float | None = None, device: str | torch.device = "cpu") -> tuple[float | None, str]:
    """The memory limit for a job and where it comes from: ``--max-memory`` (``option``), else
    ``$SHOWO2_MAX_MEMORY_GB``, else the memory available on ``device``. 0 means no limit."""
    if option is not None:
        value, source = option, "--max-memory"
        if not is_finite_number(value) or value < 0:  # ("x": a TypeError, 10**400: an OverflowError)
            raise UsageError(f"{source} must be a number of GB >= 0 (0: no limit), got {short(value)}")
        value = float(value)
    else:
        value, source = env_memory_limit(), MAX_MEMORY_ENV
        if value is None:
            return available_memory_gb(device), "available memory"
    return (value or None), source


def _counted(need_gb: float, weights: tuple[float, float], source: str) -> tuple[float, float]:
    """(the job's whole need, the weights in it): with a limit given, every weight the job runs
    counts; against the memory available now, only the weights not loaded yet (the rest already
    took theirs)."""
    total, loaded = weights
    counted = total - loaded if source == "available memory" else total
    return need_gb + counted, counted


#: The largest block glibc's malloc hands out from its heap: its mmap threshold rises to the size of
#: each larger block freed, up to ``DEFAULT_MMAP_THRESHOLD_MAX`` (32 MiB on a 64-bit system); a block
#: under it, freed, stays in the process (the heap's free holes are not given back).
HEAP_BLOCK_BYTES = 32 * 2**20
#: How many such blocks a video job's heap keeps beside its tensors on the CPU: the most measured
#: (probe DN, ``benchmarks/results/memory-guard-heap.json``: RSS peak with glibc as it is minus the
#: peak of the tensors alone, ``MALLOC_MMAP_THRESHOLD_=65536``, 64-256 px, 5-33 frames: 622.6 MB,
#: the real architecture's decode of 33 frames at 128 px) in blocks, rounded up (19), and one more.
HEAP_BLOCKS = 20


def heap_allowance_gb(device: str | torch.device = "cpu", video: bool = True) -> float:
    """The memory the CPU's allocator keeps beyond a video job's tensors (:data:`HEAP_BLOCKS` of
    :data:`HEAP_BLOCK_BYTES`), which :func:`check_memory` adds to its estimate: the VAE's chunks of
    4 frames and the sampling steps before them free blocks under glibc's threshold that the heap
    keeps (measured 0.03-0.62 GB, growing with the frames at 128 px). 0 for a job of one frame (its estimate holds
    without it) and on another device (its caching allocator is not glibc's)."""
    return HEAP_BLOCKS * HEAP_BLOCK_BYTES / 1e9 if video and torch.device(device).type == "cpu" else 0.0


def check_memory(need_gb: float, what: str, option: float | None = None,
                 device: str | torch.device = "cpu", advice: str = "",
                 weights: tuple[float, float] = (0.0, 0.0), video: bool = False) -> None:
    """Raise :class:`ResourceError` when ``need_gb`` (an estimate of the job's working memory) plus
    the ``weights`` it runs (:func:`~showo2_cli.footprint.weights_gb`: all of them, loaded or not, when a limit is given;
    those not loaded yet against the memory available) exceeds the memory limit. ``video``: a job of
    more than one frame, whose need counts :func:`heap_allowance_gb` on the CPU."""
    limit, source = memory_limit_gb(option, device)
    if limit is None:
        return
    need_gb += heap_allowance_gb(device, video)
    need, counted = _counted(need_gb, weights, source)
    if need <= limit:
        return
    where = "of available memory" if source == "available memory" else f"allowed by {source}"
    held = (f" ({gb_text(counted)} of weights" + (f", {gb_text(need_gb)} to run" if need_gb > 0 else "") + ")"
            if counted > 0 else "")
    raise ResourceError(f"{what} needs about {gb_text(need)}{held}, more than the {gb_text(limit)} {where}"
                        + (f"; {advice}" if advice else "")
                        + f" (raise the limit with --max-memory or {MAX_MEMORY_ENV})")


def pick_tiling(mode: str, untiled_gb: float, tiled_gb: float, option: float | None = None,
                device: str | torch.device = "cpu", weights: tuple[float, float] = (0.0, 0.0),
                video: bool = False) -> bool:
    """Whether a VAE job runs in spatial tiles: ``on``/``off`` as said; ``auto`` tiles only a job
    whose untiled estimate (with its ``weights`` and ``video``'s allowance, as :func:`check_memory`
    counts them) exceeds the memory limit when tiling lowers it (so every job that fits today is
    computed exactly as before)."""
    if mode == "on":
        return True
    if mode != "auto":
        return False
    limit, source = memory_limit_gb(option, device)
    need = untiled_gb + heap_allowance_gb(device, video)
    return limit is not None and _counted(need, weights, source)[0] > limit and tiled_gb < untiled_gb

