"""Checkpoints: complete folders renamed into place, and a ``latest`` pointer replaced atomically.

A run folder looks like::

    runs/tiny/
      latest                  one line: the name of the newest complete checkpoint
      checkpoint-000100/      a showo2 model folder (``showo2_cli.load`` reads it) + trainer_state.pt
      checkpoint-000200/
      metrics.jsonl  config.json  samples/

Writing a checkpoint: everything goes to a hidden ``.checkpoint-000200.<random>.tmp/`` folder
(files fsync'ed), which is renamed to ``checkpoint-000200/`` in one step; only then is ``latest``
rewritten (a temporary file and ``os.replace``); both through the project's one atomic writer
(:func:`showo2_cli.media.atomic_folder` / :func:`~showo2_cli.media.atomic_output`). A crash at
any moment leaves either the previous ``latest`` pointing at a complete folder, or the new one;
leftover temporary folders are removed on the next start.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import ModelError, OutputError, error_detail, short
from ..run_folders import LATEST, STATE_FILE
from ..run_folders import latest_checkpoint as latest_checkpoint  # (the run-folder readers live there)
from ..run_folders import list_checkpoints as list_checkpoints
from ..run_folders import newest_checkpoint as newest_checkpoint
from ..run_folders import resolve_run_path as resolve_run_path

EMA_DIR = "ema"  # inside a checkpoint: the EMA weights (a loadable model folder, or an adapter)


def checkpoint_name(step: int) -> str:
    return f"checkpoint-{step:06d}"


def write_pointer(output_dir: Path, name: str) -> None:
    """Point ``latest`` at ``name`` atomically (and durably)."""
    from ..media import atomic_output

    with atomic_output(output_dir / LATEST, overwrite=True, durable=True) as tmp:
        tmp.write_text(name + "\n", encoding="utf-8")


def read_state(folder: Path, mode: str, state_format: int) -> dict:
    """A checkpoint's ``trainer_state.pt`` (tensors and plain values only: ``weights_only``),
    checked to be a training state of ``mode``: a damaged one is a :class:`ModelError` naming it.
    The file passes the weights' checks first (:func:`~showo2_cli.weights.check_pickle`): a legacy
    pickle claiming 10^10 floats had torch allocate 40 GB before reading a byte of them."""
    import torch

    from ..weights import check_pickle

    path = folder / STATE_FILE
    if not path.is_file():  # a FIFO waited for a writer for ever, a device never ends
        raise ModelError(f"cannot read the training state '{path}': not a regular file")
    check_pickle(path, "the training state")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated, empty, not a torch file, or a pickle asking for code
        from ..weights import unreadable_pickle

        raise unreadable_pickle(path, e, "the training state") from None
    if not isinstance(state, dict) or state.get("format") != state_format or state.get("mode") != mode:
        raise ModelError(f"'{folder}' is not a '{mode}' training checkpoint of this version")
    step = state.get("step")
    if isinstance(step, bool) or not isinstance(step, int) or not 0 <= step < 10**12 \
            or not isinstance(state.get("optimizer"), dict):
        raise ModelError(f"'{path}' is damaged: it lacks a step count or the optimizer state")
    elapsed = state.get("elapsed", 0.0)
    if isinstance(elapsed, bool) or not isinstance(elapsed, (int, float)) or not 0 <= elapsed < 1e12:
        raise ModelError(f"'{path}' is damaged: its elapsed time is {str(elapsed)[:40]}")
    rng = state.get("rng", {})
    if not isinstance(rng, dict):
        raise ModelError(f"'{path}' is damaged: its random state is not a table")
    if "torch" in rng:
        want = torch.get_rng_state()
        got = rng["torch"]
        if not torch.is_tensor(got) or got.dtype != want.dtype or got.shape != want.shape:
            raise ModelError(f"'{path}' is damaged: its torch random state is not this version's")
    return state


def order_changes(state: dict, signature: str, sizes: list, world: int) -> list[str]:
    """What differs from the run that saved ``state`` and makes the sample order differ from an
    uninterrupted run's: the config's data, batch or seed (``signature``), the number of items of
    a source (``sizes``: records added to or removed from its files), the number of processes."""
    said, order = [], "the sample order differs from an uninterrupted run"
    saved = state.get("data_signature")
    if saved and saved != signature:
        said.append(f"the config's data, batch or seed changed since the checkpoint: {order}")
    elif isinstance(state.get("data_sizes"), list) and len(state["data_sizes"]) == len(sizes):
        pairs = enumerate(zip(state["data_sizes"], sizes, strict=True))
        changed = [f"data[{i}] has {b} items ({a} at the checkpoint)" for i, (a, b) in pairs if a != b]
        if changed:
            said.append(f"{'; '.join(changed[:3])}: {order}")
    if state.get("world_size") not in (None, world):
        said.append(f"resuming with {world} process(es) instead of {state['world_size']}: {order}")
    return said


#: what AdamW keeps for each parameter it has stepped
ADAMW_STATE = ("step", "exp_avg", "exp_avg_sq")


def restore_optimizer(optimizer, saved: Any, where: Path) -> None:
    """Load ``saved`` (a training state's ``optimizer`` entry) into ``optimizer`` (AdamW), checked as
    ``load_state_dict`` does not: the algorithm's switches (``amsgrad``, ``maximize``, ...) this
    optimizer's, a stepped parameter's state whole (:data:`ADAMW_STATE`), each moment of its
    parameter's shape, every value finite, second moments not negative, each step count a whole
    number from 0 to 10^12. A damaged entry is a
    :class:`ModelError` naming ``where``: a step of -1e38 overflowed AdamW's bias correction at the
    first step and ``amsgrad`` switched on raised KeyError (internal errors), a NaN moment made
    every weight NaN, ``maximize`` would have trained the loss up."""
    import torch

    def damaged(why: str) -> ModelError:
        return ModelError(f"'{where}': the optimizer state does not fit this model ({why})")

    # the algorithm's switches (amsgrad, maximize, foreach, fused, ...): never the config's to change,
    # so a checkpoint's are this optimizer's (amsgrad switched on without its state: KeyError at the step)
    switches = [k for k, v in optimizer.defaults.items() if isinstance(v, bool) or v is None]
    wanted = [{k: g.get(k) for k in switches} for g in optimizer.param_groups]
    try:
        optimizer.load_state_dict(saved)
    except (ValueError, KeyError, TypeError, RuntimeError, AttributeError, IndexError) as e:
        raise damaged(error_detail(e)) from None
    for i, (g, want) in enumerate(zip(optimizer.param_groups, wanted, strict=True)):
        for key, value in want.items():
            if type(g.get(key)) is not type(value) or g.get(key) != value:
                raise damaged(f"group {i} has {key} {short(g.get(key))}, not {value}")
    for param, moments in optimizer.state.items():
        if not torch.is_tensor(param) or not isinstance(moments, dict):  # (kept as saved: no group names it)
            raise damaged(f"a state for parameter {short(param)}, which no group holds")
        lacks = [k for k in ADAMW_STATE if moments and k not in moments]  # (empty: a parameter not stepped yet)
        if lacks:
            raise damaged(f"the state of a parameter of shape {tuple(param.shape)} lacks {lacks[0]}")
        for key, value in moments.items():
            if key == "step":
                number = (torch.is_tensor(value) and value.numel() == 1 and value.dtype != torch.bool
                          and not value.is_complex()) or type(value) in (int, float)
                step = float(value) if number else None
                if step is None or not (0 <= step < 1e12 and step == int(step)):
                    raise damaged(f"a step count of {short(value) if step is None else format(step, 'g')}")
            elif not torch.is_tensor(value) or value.shape != param.shape:
                got = f"of shape {tuple(value.shape)}" if torch.is_tensor(value) else f"a {type(value).__name__}"
                raise damaged(f"{key} {got} for a parameter of shape {tuple(param.shape)}")
            elif not value.is_floating_point() or not torch.isfinite(value).all():
                raise damaged(f"{key} holds {'values that are not finite' if value.is_floating_point() else value.dtype}")
            elif key in ("exp_avg_sq", "max_exp_avg_sq") and bool((value < 0).any()):
                raise damaged(f"{key} holds negative values")


#: the optimizer settings of each AdamW group that a checkpoint's state would bring back
OPTIMIZER_SETTINGS = ("base_lr", "weight_decay", "betas", "eps")


def optimizer_settings(groups: list[dict]) -> list[dict]:
    return [{k: (tuple(g[k]) if k == "betas" else g[k]) for k in OPTIMIZER_SETTINGS if k in g} for g in groups]


def restore_settings(groups: list[dict], wanted: list[dict]) -> str | None:
    """Put the config's optimizer settings (``wanted``: :func:`optimizer_settings` of the groups
    built from it) back into ``groups`` after the checkpoint's optimizer state was loaded, which
    brings the checkpoint's back (a resume with ``--set optim.lr=...`` kept the old rate, silently);
    the notice naming what changed, or None."""
    changed = []
    for g, want in zip(groups, wanted, strict=True):
        for key, value in want.items():
            old = g.get(key)
            old = tuple(old) if key == "betas" and isinstance(old, (list, tuple)) else old
            try:  # (a damaged state's may be anything: None, a tensor, text; the config's apply either way)
                same = not isinstance(old, bool) and bool(old == value)
            except (RuntimeError, TypeError, ValueError):
                same = False
            if not same:
                what = f"{'lr' if key == 'base_lr' else key} of group '{short(g.get('name', '?'))}'"
                said = f"{what} {value} (the checkpoint's: {short(old)})"
                changed += [said] if said not in changed else []  # (a group's decay and no-decay halves)
            g[key] = value
    if not changed:
        return None
    more = f" and {len(changed) - 2} more" if len(changed) > 2 else ""
    return (f"the optimizer settings differ from the checkpoint's: {'; '.join(changed[:2])}{more}: "
            "the config's apply from here on, unlike an uninterrupted run")


#: the run's record in its folder: the config, and the invocations that trained it
RUN_CONFIG = "train_config.json"


def read_run_config(output_dir: Path) -> dict | None:
    """The run's record (``train_config.json``) as a dict, or None where it cannot be read: missing, not
    a regular file (a FIFO would wait for a writer for ever), over ``MAX_CONFIG_BYTES`` (judged by its
    size before a byte is read: a record is a config and one line an invocation, some KiB), not a
    JSON object. Its readers then go on without it, as they did for a record that is not JSON."""
    import json

    from ..errors import Showo2Error
    from ..media import read_limited
    from ..options import MAX_CONFIG_BYTES

    try:
        record = json.loads(read_limited(output_dir / RUN_CONFIG, MAX_CONFIG_BYTES, "the run's record"))
    except (Showo2Error, ValueError, RecursionError):  # (a list 100,000 deep: not JSON to us)
        return None
    return record if isinstance(record, dict) else None


def write_run_config(output_dir: Path, info: dict, start_step: int, resumed: bool) -> None:
    """Write the run's ``train_config.json``: ``info`` (the config, its source, this invocation's
    ``world_size`` and ``max_steps``, as before) and ``invocations``, each start of the run with its
    ``start_step``, ``world_size``, ``max_steps`` and time (a run resumed on 2 processes after 1
    recorded only the last's ``world_size``; each checkpoint's state keeps its own). A resumed run keeps
    the earlier invocations that started before its checkpoint (those after it are undone, as their
    metrics lines are); one whose record cannot be read starts the list again."""
    import json
    import time

    from ..media import atomic_output

    path = output_dir / RUN_CONFIG
    earlier = (read_run_config(output_dir) or {}).get("invocations") if resumed else None
    earlier = [e for e in earlier if isinstance(e, dict) and type(e.get("start_step")) is int
               and e["start_step"] < start_step] if isinstance(earlier, list) else []
    now = {"start_step": start_step, "world_size": info.get("world_size"), "max_steps": info.get("max_steps"),
           "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    with atomic_output(path, overwrite=True) as tmp:
        tmp.write_text(json.dumps({**info, "invocations": [*earlier, now]}, indent=1, default=str) + "\n")


def resume_point(output_dir: Path, resume: bool, notice: Callable[[str], None]) -> Path | None:
    """The checkpoint a run in ``output_dir`` resumes (None: it starts at step 0): the one ``latest``
    names, else (the pointer gone) the newest holding a training state, with a notice. Refused
    (:class:`OutputError`): checkpoints there with ``resume`` off, and checkpoint folders none of
    which holds a training state (model-only copies), which a run starting afresh would overwrite
    and prune as it saved its own (Hugging Face's example scripts refuse an output folder that is
    not empty and holds no checkpoint to resume, the same way)."""
    latest = latest_checkpoint(output_dir)
    if latest is None and (latest := newest_checkpoint(output_dir)) is not None:
        notice(f"'{output_dir}' has no 'latest' pointer: its newest checkpoint is {latest.name}")
    if latest is not None and not resume:
        raise OutputError(f"'{output_dir}' already holds checkpoints (latest: {latest.name}); "
                          "resume (the default) or choose another output_dir")
    if latest is None and (found := [p.name for _, p in list_checkpoints(output_dir)]):
        raise OutputError(f"'{output_dir}' holds checkpoint folders none of which has a training state "
                          f"({', '.join(found[:3])}{', ...' if len(found) > 3 else ''}: no {STATE_FILE}, nothing "
                          "to resume), which a new run would overwrite and prune: move them away or choose another "
                          "output_dir")
    return latest if resume else None


def check_same_run(output_dir: Path, model) -> None:
    """Refuse (:class:`OutputError`) to resume the checkpoints of ``output_dir`` when the run that
    wrote them (its ``train_config.json``) started from another model than ``model`` (the config's
    ModelConfig: ``model.init`` / ``model.init_spec``). Nothing is said when it cannot be told (no
    readable record; a model folder that is no longer where it was)."""
    import os

    try:
        saved = (read_run_config(output_dir) or {})["config"]["model"]
    except (KeyError, TypeError):
        return
    if not isinstance(saved, dict):
        return

    def same(a, b) -> bool:
        if a == b:
            return True
        if not (isinstance(a, str) and isinstance(b, str)):
            return False
        if not os.path.exists(a):  # moved or removed since: the run cannot be told apart by it
            return True
        try:
            return os.path.exists(b) and os.path.samefile(a, b)
        except OSError:
            return False

    def what(init, init_spec) -> str:
        return f"model.init '{init}'" if init else f"model.init_spec '{init_spec}'"

    was = saved.get("init"), saved.get("init_spec")
    now = model.init, model.init_spec
    if bool(was[0]) != bool(now[0]) or not same(was[0], now[0]) or (not now[0] and was[1] != now[1]):
        raise OutputError(f"'{output_dir}' holds another run (it started from {what(*was)}, this config from "
                          f"{what(*now)}): choose another output_dir, or resume that run with its own config")


def share_folder(src: Path, dst: Path) -> None:
    """``dst`` made a copy of the folder ``src`` whose files are hard links to ``src``'s (copies where
    the file system has none): the frozen VAE that a checkpoint and its ``ema/`` model both hold is
    on the disk once, and each folder still loads alone (a copy of ``ema/`` copies the files)."""
    import os

    dst.mkdir()
    for p in sorted(src.iterdir()):
        if p.is_dir():
            share_folder(p, dst / p.name)
            continue
        try:
            os.link(p, dst / p.name)
        except OSError:
            shutil.copy2(p, dst / p.name)


def clean_partials(output_dir: Path) -> list[Path]:
    """Remove the staging folders and the temporary files (``latest``, ``metrics.jsonl``,
    ``train_config.json``) a crash may have left behind."""
    removed = []
    for p in output_dir.iterdir() if output_dir.is_dir() else []:
        ours = p.name.startswith((".checkpoint-", f".{LATEST}.", ".metrics.jsonl.", ".train_config.json."))
        if ours and (p.name.endswith(".partial") or ".tmp" in p.name or p.name.endswith(".old")):
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def write_checkpoint(output_dir: Path, step: int, write: Callable[[Path], None], keep_last: int = 0) -> Path:
    """Create ``checkpoint-<step>`` with ``write(staging_folder)`` (which fills an existing empty
    folder), publish it, update ``latest``, and keep only the newest ``keep_last`` checkpoints
    (0 keeps all)."""
    from ..media import atomic_folder

    output_dir = Path(output_dir)
    name = checkpoint_name(step)
    final = output_dir / name
    # the same step may be saved again (resumed and stopped at once): replaced whole
    with atomic_folder(final, overwrite=True, durable=True) as staging:
        write(staging)
    write_pointer(output_dir, name)
    if keep_last > 0:
        for _, old in list_checkpoints(output_dir)[:-keep_last]:
            if old.name != name:
                remove_checkpoint(old)
    return final


def remove_checkpoint(folder: Path) -> None:
    """Delete a checkpoint folder: moved aside to a hidden name in one step first (what
    :func:`clean_partials` removes at the next start), so that a crash while its files are unlinked
    leaves no folder of a checkpoint's name holding part of one."""
    import tempfile

    try:
        aside = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".old", dir=folder.parent))
        os.replace(folder, aside / folder.name)
    except OSError:  # (removed meanwhile, a read-only folder: deleted in place, as far as it goes)
        shutil.rmtree(folder, ignore_errors=True)
        return
    shutil.rmtree(aside, ignore_errors=True)


# ---- one run per folder ---------------------------------------------------------------------------

LOCK_FILE = ".showo2-train.lock"
_HELD: dict[str, Any] = {}  # output folders this process holds, by resolved path


def hold_folder(output_dir: Path) -> str | None:
    """Hold ``output_dir`` for this run (an advisory lock the OS drops when the process ends): a
    second ``train`` on the same folder interleaved its metrics and pruned the other's checkpoints.
    Returns the key to release with :func:`release_folder` (None: not taken here)."""
    try:
        import fcntl
    except ImportError:  # no flock (Windows): unguarded
        return None
    key = str(output_dir.resolve())
    if key in _HELD:  # this process holds it already (a Run set up by hand before)
        return None
    fh = open(output_dir / LOCK_FILE, "a+")  # noqa: SIM115 (held open for the whole run; closed by release_folder)
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.seek(0)
            pid = fh.read(20).strip()
            raise OutputError(f"'{output_dir}' is in use by another showo2 train run{f' (pid {pid})' if pid else ''}: "
                              "wait for it to end, or choose another output_dir") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()}\n")
        fh.flush()
    except BaseException:  # refused, a full disk, Ctrl-C: the file is not left open
        fh.close()
        raise
    _HELD[key] = fh
    return key


def release_folder(key: str | None) -> None:
    """Release what :func:`hold_folder` took: its lock file closed."""
    fh = _HELD.pop(key, None) if key is not None else None
    if fh is not None:
        fh.close()


def drop_inherited_holds() -> None:
    """In a process forked from a run (a data-loader worker): close its copies of the run's lock
    files, without unlocking them (a flock belongs to the open file, which the run still holds), so
    the lock ends with the run: a worker left behind by a killed run held it, and the resume was
    refused as "in use by another showo2 train run"."""
    while _HELD:
        _HELD.popitem()[1].close()


def ema_state(ema) -> dict:
    """An EMA's (diffusers' ``EMAModel``) state for the training state, without its weights: the
    checkpoint's ``ema/`` folder holds them already (a second copy was as large as the model)."""
    state = {k: v for k, v in ema.state_dict().items() if k != "shadow_params"}
    return {**state, "shadow_params_in": EMA_DIR}


def restore_ema(ema, saved: Any, checkpoint: Path, objective) -> None:
    """Load ``saved`` (a training state's ``ema`` entry) into ``ema`` (diffusers' ``EMAModel``), the
    weights from the state itself (a checkpoint before ``shadow_params_in``) or from the checkpoint's
    ``ema/`` folder (:func:`read_ema`). A damaged entry (not a table, a decay of "x" or 2, a step
    that is no integer, weights of other shapes) is a :class:`ModelError` naming the file: diffusers'
    own refusals were internal errors, and weights of the wrong shapes failed at the first update."""
    where = checkpoint / STATE_FILE
    if not isinstance(saved, dict):
        raise ModelError(f"'{where}' is damaged: its EMA state is not a table")
    try:
        ema.load_state_dict(saved)
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        raise ModelError(f"'{where}' is damaged: its EMA state is refused ({error_detail(e)})") from None
    if saved.get("shadow_params") is None:  # read from the checkpoint's ema/ folder
        ema.shadow_params = read_ema(checkpoint, saved, objective)
        return
    params = objective.ema_parameters()
    if len(ema.shadow_params) != len(params) or any(t.shape != p.shape for t, p in zip(ema.shadow_params, params,
                                                                                         strict=False)):
        raise ModelError(f"'{where}': its EMA weights do not fit this model")


def read_ema(checkpoint: Path, state: dict, objective) -> list:
    """The EMA weights of ``checkpoint`` for ``EMAModel.shadow_params``, read by its objective from
    the ``ema/`` folder that :func:`ema_state` points at (written in float32 from those weights, so
    bit for bit what was averaged), on the devices of the parameters they follow."""
    import torch

    folder = checkpoint / EMA_DIR
    if state.get("shadow_params_in") != EMA_DIR or not folder.is_dir():
        raise ModelError(f"'{checkpoint}': the training state keeps the EMA weights in {EMA_DIR}/, which is "
                         "missing: resume from another checkpoint")
    params = objective.ema_parameters()
    shadow = objective.read_ema(folder)
    if len(shadow) != len(params) or any(t.shape != p.shape for t, p in zip(shadow, params, strict=False)):
        raise ModelError(f"'{folder}': the EMA weights do not fit this model")
    return [t.detach().to(device=p.device, dtype=torch.float32).clone() for t, p in zip(shadow, params, strict=True)]
