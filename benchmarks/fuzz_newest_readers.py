"""The readers added since probes FA and FN, for ``benchmarks/fuzz_readers.py`` (probe IH). Each
reader is a seed maker and a driver, run as ``fuzz_readers.py --reader NAME``:

    python benchmarks/fuzz_readers.py --reader train-run --count 1000 --seed 51

Readers:
- train-run: a tiny ``showo2 train`` run folder resumed (``train(cfg)``, one step past its checkpoint):
  ``trainer_state.pt`` mutated as a structure (a value's type swapped, a key dropped or added, a
  tensor of another shape or dtype, NaN, huge numbers; saved again by ``torch.save``) or as bytes,
  the ``latest`` pointer, ``train_config.json``, ``metrics.jsonl``, the checkpoint's weights and its
  EMA weights.
- latent-cache: the same config trained one step from nothing over its latent cache (``cache =``)
  whose entries 0 and 1 are mutated: as bytes, or their safetensors header as JSON (dtypes, shapes,
  offsets, metadata). A run whose loss is not finite is a defect (an entry trusted that is not one
  the VAE writes).
- schema: a JSON schema file as ``--json-schema FILE`` takes it (``read_schema``), then a caption
  constrained by it (``api.caption(json_schema=)``, the demo model, 3 tokens).
- chat-load: a chat's ``/save`` transcript holding an image, a dropped turn and notices, taken up
  (``Conversation.load``) and asked once more (the media read again, 2 tokens).
"""

from __future__ import annotations

import io
import json
import math
import os
import random
import shutil
import struct
from pathlib import Path

READERS = ("train-run", "latent-cache", "schema", "chat-load")

TINY = """mode = "showo2"
seed = 0
output_dir = "{out}"
[model]
init_spec = "tiny"
vae_base_dim = 4
[[data]]
kind = "shapes"
role = "t2i"
resolution = 32
cache = "cache"
[batch]
t2i = 2
[optim]
lr = 1e-3
max_steps = {steps}
[run]
save_every = 1
log_every = 1
keep_last = 2
[ema]
decay = 0.9
"""


def _seed(label, path, kind="bytes", root=None):
    from fuzz_readers import Seed

    seed = Seed(label, path, kind, root)
    seed.placer = place if root is not None else None
    return seed


# ---------------------------------------------------------------- structural mutation of a torch state

def _torch_nodes(value, path=()):
    yield path, value
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _torch_nodes(v, path + (k,))
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            yield from _torch_nodes(v, path + (i,))


def _odd_value(rng: random.Random, old):
    import torch
    from fuzz_readers import _random_value

    if torch.is_tensor(old) and rng.random() < 0.7:
        op = rng.randrange(7)
        if op == 0:
            return old.flatten()[: max(0, old.numel() - rng.randrange(1, 3))]  # one value short
        if op == 1:
            return torch.cat([old.flatten(), old.flatten()[:1]]) if old.numel() else torch.zeros(3)
        if op == 2:
            return old.to(rng.choice((torch.int64, torch.bool, torch.float16, torch.float64, torch.complex64,
                                      torch.uint8)))
        if op == 3:
            return torch.full_like(old.float(), rng.choice((float("nan"), float("inf"), 1e38, -1e38)))
        if op == 4:
            return old.reshape(-1, 1) if old.numel() else old.reshape(0, 1)
        if op == 5:
            return torch.tensor(rng.choice((0.5, 2**62, -1)))
        return old.t() if old.dim() == 2 else old.unsqueeze(0)
    new = _random_value(rng)
    if isinstance(new, str) and new.startswith("\x00deep:"):  # nesting as a value (torch.save pickles it)
        depth = min(int(new.split(":")[1]), 200)  # (torch.save recurses: deeper is the harness's RecursionError)
        new = 0
        for _ in range(depth):
            new = [new]
    return new


def mutate_torch(data: bytes, kind: str, rng: random.Random) -> bytes:
    """A ``torch.save`` file's mutant: its object mutated one to three times and saved again (a
    fifth of the time the bytes instead)."""
    import torch
    from fuzz_readers import mutate_bytes, set_at

    if rng.random() < 0.2:
        return mutate_bytes(data, rng)
    value = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    for _ in range(rng.choice((1, 1, 2, 3))):
        nodes = list(_torch_nodes(value))
        weights = [4 if path and path[0] != "optimizer" else 1 for path, _ in nodes]  # the small tables too
        path, node = rng.choices(nodes, weights)[0]
        op = rng.randrange(4)
        if op == 0 and isinstance(node, dict) and node:
            node.pop(rng.choice(list(node)))
            continue
        if op == 1 and isinstance(node, dict):
            node[rng.choice(("extra", "step", "format", "mode", "rng", "ema", "optimizer", 0, 999))] = \
                _odd_value(rng, None)
            continue
        if op == 2 and isinstance(node, list):
            node[:] = [] if node and rng.random() < 0.5 else node * rng.choice((2, 100))
            continue
        value = set_at(value, path, _odd_value(rng, node))
    buf = io.BytesIO()
    try:
        torch.save(value, buf)
    except RecursionError:
        return mutate_bytes(data, rng)
    return buf.getvalue()


def mutate_safetensors(data: bytes, kind: str, rng: random.Random) -> bytes:
    """A safetensors file's mutant: its JSON header mutated (a dtype, a shape, an offset, the
    metadata) and its length field set to fit, or (half the time) its bytes."""
    from fuzz_readers import _dumps, mutate_bytes, mutate_json_value

    if rng.random() < 0.5 or len(data) < 8:
        return mutate_bytes(data, rng)
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    if rng.random() < 0.5:  # aimed: a field set to what the format allows but this entry is not
        name = rng.choice([k for k in header if k != "__metadata__"] or ["mu"])
        entry = header.setdefault(name, {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]})
        field = rng.choice(("dtype", "shape", "data_offsets", "rename", "metadata"))
        if field == "dtype":
            entry["dtype"] = rng.choice(("F16", "BF16", "F64", "I32", "I64", "U8", "BOOL", "F8_E4M3", "X"))
        elif field == "shape":
            entry["shape"] = rng.choice(([], [0], [2**31], [2**62, 2**62], list(reversed(entry.get("shape", []))),
                                         entry.get("shape", [])[1:], [*entry.get("shape", []), 1]))
        elif field == "data_offsets":
            a, b = entry.get("data_offsets", [0, 4])
            entry["data_offsets"] = rng.choice(([b, a], [0, 0], [a, b + 4], [a, 2**63], [a - 4, b - 4]))
        elif field == "rename":
            header[rng.choice(("x", "MU", "mu ", "logvar", "mu"))] = header.pop(name)
        else:
            header["__metadata__"] = rng.choice(({"media": 1}, {"media": ""}, {}, {"media": "x" * 100_000}, [],
                                                 {"media": None}))
        text = json.dumps(header).encode()
    else:
        text = _dumps(mutate_json_value(header, rng), rng)
    return struct.pack("<Q", len(text)) + text + data[8 + n:]


KINDS = {"torch": mutate_torch, "safetensors": mutate_safetensors}


# ---------------------------------------------------------------- seeds


def _train_folder(work: Path) -> Path:
    """A tiny run (3 steps, checkpoints every step, an EMA, a latent cache) made once."""
    import contextlib

    from showo2_cli.training import load_config, train

    root = work / "run-folder"
    if (root / "run" / "latest").exists():
        return root
    root.mkdir(parents=True, exist_ok=True)
    (root / "resume.toml").write_text(TINY.format(out="run", steps=4))
    (root / "fresh.toml").write_text(TINY.format(out="fresh", steps=1))
    cfg = load_config(root / "resume.toml")
    cfg.optim.max_steps = 3
    with contextlib.redirect_stderr(io.StringIO()):
        train(cfg)
    return root


def seeds_train_run(work: Path) -> list:
    root = _train_folder(work)
    ck = "run/checkpoint-000003"
    return [_seed("trainer_state.pt", root / ck / "trainer_state.pt", "torch", root),
            _seed("latest", root / "run" / "latest", "bytes", root),
            _seed("train_config.json", root / "run" / "train_config.json", "json", root),
            _seed("metrics.jsonl", root / "run" / "metrics.jsonl", "jsonl", root),
            _seed("model.safetensors", root / ck / "model.safetensors", "safetensors", root),
            _seed("ema/model.safetensors", root / ck / "ema" / "model.safetensors", "safetensors", root)]


def seeds_latent_cache(work: Path) -> list:
    root = _train_folder(work)
    entries = sorted((root / "cache").rglob("*.safetensors"))[:2]
    return [_seed(f"cache:{p.name}", p, "safetensors", root) for p in entries]


SCHEMA = {"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object",
          "$defs": {"colour": {"type": "string", "enum": ["red", "green", "blue"]}},
          "properties": {"shape": {"type": "string", "pattern": "^[a-z]{1,12}$"},
                         "name": {"type": "string", "minLength": 1, "maxLength": 8},
                         "colour": {"$ref": "#/$defs/colour"},
                         "count": {"type": "integer", "minimum": 0, "maximum": 9},
                         "size": {"type": "number", "exclusiveMinimum": 0},
                         "tags": {"type": "array", "items": {"type": "string"}, "minItems": 0, "maxItems": 3},
                         "where": {"anyOf": [{"type": "null"}, {"type": "string", "format": "date"}]},
                         "flat": {"type": "boolean", "const": True}},
          "required": ["shape", "colour"], "additionalProperties": False}


def seeds_schema(work: Path) -> list:
    p = work / "schema.json"
    p.write_text(json.dumps(SCHEMA, indent=1), encoding="utf-8")
    return [_seed("schema.json", p, "json")]


def seeds_chat_load(work: Path) -> list:
    from fuzz_readers import _photo, demo_model

    from showo2_cli.chat import Conversation
    from showo2_cli.options import TextSampling

    root = work / "chat2"
    root.mkdir()
    _photo(48).save(root / "photo.png")
    _photo(40).save(root / "next.jpg")
    conv = Conversation(demo_model(), max_context=400)
    conv.attach(str(root / "photo.png"))
    for q in ("what is this?", "and the colours?", "say more " * 20, "one word"):
        conv.ask(q, TextSampling(max_new_tokens=3, seed=1))
    conv.attach(str(root / "next.jpg"))  # pending for the next question
    conv.save(root / "chat.json")
    return [_seed("chat.json", root / "chat.json", "json", root)]


SEEDS = {"train-run": seeds_train_run, "latent-cache": seeds_latent_cache, "schema": seeds_schema,
         "chat-load": seeds_chat_load}


# ---------------------------------------------------------------- placing and driving a mutant


class Trusted(Exception):
    """A mutant taken as valid that is not (a defect: its type is the outcome)."""


def place(seed, data: bytes, case: Path) -> tuple[Path, Path]:
    """A run folder's copy for one mutant: weights hard-linked (only ever replaced by a rename),
    every other file copied (a run appends to its metrics and rewrites its pointer)."""
    def copy(src, dst):
        if src.endswith(".safetensors") and "cache" not in Path(src).parts[-4:]:
            os.link(src, dst)
        else:
            shutil.copy2(src, dst)

    shutil.copytree(seed.root, case, symlinks=True, copy_function=copy)
    target = case / seed.path.relative_to(seed.root)
    target.unlink()
    target.write_bytes(data)
    return target, case


def drive(reader: str, seed, target: Path, root: Path | None):
    import contextlib

    if reader in ("train-run", "latent-cache"):
        from showo2_cli.training import load_config, train

        cfg = load_config(root / ("resume.toml" if reader == "train-run" else "fresh.toml"))
        fds = len(os.listdir("/proc/self/fd"))
        try:
            with contextlib.redirect_stderr(io.StringIO()):
                result = train(cfg)
        finally:
            if len(os.listdir("/proc/self/fd")) > fds:  # (the run's lock, a file left open)
                raise Trusted(f"{len(os.listdir('/proc/self/fd')) - fds} files left open")
        if not math.isfinite(result.loss):
            raise Trusted(f"the loss is {result.loss}")
        if reader == "latent-cache":  # every entry it trained on is one this run writes now
            from safetensors import safe_open

            for p in sorted((root / "cache").rglob("*.safetensors"))[:2]:
                with safe_open(str(p), framework="pt") as f:
                    if sorted(f.keys()) != ["logvar", "mu"]:
                        raise Trusted(f"{p.name} left as it was: {sorted(f.keys())}")
    elif reader == "schema":
        from fuzz_readers import _photo, demo_model

        from showo2_cli import api
        from showo2_cli.structured import read_schema

        schema = read_schema(str(target))
        api.caption(demo_model(), _photo(32), api.CaptionOptions(questions=["describe it"], json_schema=schema,
                                                                    max_new_tokens=3, seed=1))
    elif reader == "chat-load":
        from fuzz_readers import demo_model

        from showo2_cli.chat import Conversation
        from showo2_cli.options import TextSampling

        conv = Conversation(demo_model())
        conv.load(target)
        conv.ask("and now?", TextSampling(max_new_tokens=2, seed=1))
    else:
        raise ValueError(reader)
