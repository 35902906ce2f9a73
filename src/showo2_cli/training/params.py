"""Trainable parameters: freezing and AdamW groups by name substring (spec §12.1), and weight digests."""

from __future__ import annotations

import hashlib

import torch

from ..errors import UsageError
from .schema import TrainConfig


def weights_digest(module: torch.nn.Module) -> str:
    """sha256 of a module's state dict (sorted keys, raw bytes)."""
    h = hashlib.sha256()
    for k, v in sorted(module.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes() if v.numel() else b"")
    return h.hexdigest()


# ---- parameters and optimizer -----------------------------------------------------------------

def parameter_groups(module: torch.nn.Module, cfg: TrainConfig) -> tuple[list[dict], dict]:
    """Freeze and group parameters by name substring (spec §12.1). Returns the AdamW groups and a
    report ``{group: {"params": n, "tensors": k}, "frozen": {...}}``."""
    o = cfg.optim
    frozen_hits = dict.fromkeys(o.frozen, 0)
    group_hits = {g.name: dict.fromkeys(g.patterns, 0) for g in o.groups}
    buckets: dict[tuple[str, bool], list] = {}
    report: dict[str, dict] = {}
    seen = set()
    for name, p in module.named_parameters(remove_duplicate=False):
        if id(p) in seen:
            continue
        seen.add(id(p))
        frozen = [pat for pat in o.frozen if pat in name]
        for pat in frozen:
            frozen_hits[pat] += 1
        group = None
        if not frozen:
            for g in o.groups:
                hit = [pat for pat in g.patterns if pat in name]
                if hit:
                    for pat in hit:
                        group_hits[g.name][pat] += 1
                    group = g
                    break
        if frozen or (group is None and o.ungrouped == "frozen"):
            p.requires_grad_(False)
            entry = report.setdefault("frozen", {"params": 0, "tensors": 0})
        else:
            p.requires_grad_(True)
            gname = group.name if group else "default"
            decay = p.dim() >= 2
            buckets.setdefault((gname, decay), []).append(p)
            entry = report.setdefault(gname, {"params": 0, "tensors": 0})
        entry["params"] += p.numel()
        entry["tensors"] += 1
    for pat, n in frozen_hits.items():
        if n == 0:
            raise UsageError(f"{cfg.source}: optim.frozen: '{pat}' matches no parameter name")
    for i, g in enumerate(o.groups):
        for pat, n in group_hits[g.name].items():
            if n == 0:
                raise UsageError(f"{cfg.source}: optim.groups[{i}].patterns: '{pat}' matches no trainable "
                                 "parameter name (or every match is frozen)")
    lrs = {g.name: (g.lr, o.weight_decay if g.weight_decay is None else g.weight_decay) for g in o.groups}
    lrs["default"] = (o.lr, o.weight_decay)
    groups = []
    order = [g.name for g in o.groups] + ["default"]
    for gname in order:
        for decay in (True, False):
            params = buckets.get((gname, decay))
            if params:
                lr, wd = lrs[gname]
                groups.append({"params": params, "lr": lr, "base_lr": lr, "weight_decay": wd if decay else 0.0,
                               "name": gname})
    if not groups:
        raise UsageError(f"{cfg.source}: optim: every parameter is frozen; nothing to train")
    return groups, report


def adapter_groups(module: torch.nn.Module, cfg: TrainConfig) -> tuple[list[dict], dict]:
    """The AdamW groups of a LoRA run: the parameters left trainable (the adapter's) at optim.lr,
    weight decay on matrices only; the report as :func:`parameter_groups` gives it."""
    o = cfg.optim
    decay, plain, report = [], [], {}
    for _, p in module.named_parameters():
        entry = report.setdefault("lora" if p.requires_grad else "frozen", {"params": 0, "tensors": 0})
        entry["params"] += p.numel()
        entry["tensors"] += 1
        if p.requires_grad:
            (decay if p.dim() >= 2 else plain).append(p)
    groups = [{"params": ps, "lr": o.lr, "base_lr": o.lr, "weight_decay": wd, "name": "lora"}
              for ps, wd in ((decay, o.weight_decay), (plain, 0.0)) if ps]
    if not groups:
        raise UsageError(f"{cfg.source}: lora: the adapter has no trainable parameter")
    return groups, report
