"""More readers for ``benchmarks/fuzz_readers.py`` (probe FN): the training config, the API's option
records, tokenizer files alone, the VAE (an original ``.pth``; a diffusers folder), a sharded
checkpoint's index, the Hugging Face cache's ``refs/`` and ``snapshots/`` links, and the JPEG marker
walk. Each reader is a seed maker and a driver; ``fuzz_readers.py --reader NAME`` runs them as its own.

    python benchmarks/fuzz_readers.py --reader config --count 3000 --seed 31

Readers:
- config: ``showo2 train CONFIG`` (``load_config``): the tiny example as TOML, the same settings as
  YAML and JSON; TOML and YAML are mutated a line at a time (a value replaced by a hostile literal:
  huge or non-finite numbers, dates, deep arrays, inline tables, YAML anchors, aliases and tags) or
  as bytes, JSON structurally.
- options: ``GenerateOptions`` / ``CaptionOptions`` / ``EncodeOptions`` built from a mutated record
  (a JSON object of their fields, as a Python caller reading saved settings would) and validated.
- tokenizer: a tokenizer folder alone (``tokenizer.json``, ``tokenizer_config.json``,
  ``special_tokens_map.json``): ``load_tokenizer``, Show-o2's tokens added, a text encoded.
- vae-pth: the parity set's original-layout ``Wan2.1_VAE_tiny.pth`` (``torch.load(weights_only=True)``),
  alone and beside its ``config.json``: ``load_vae``.
- vae-folder: the demo's diffusers-layout VAE folder: ``load_vae``.
- sharded: the demo model with its weights in two shards and ``model.safetensors.index.json``: ``load``.
- hf-cache: the demo model as a Hugging Face cache entry (``blobs/``, ``refs/main``, ``snapshots/COMMIT``
  links): ``load("fuzz/demo", cache_dir=..., local_files_only=True)``; ``refs/main`` mutated as
  bytes, a snapshot link's target mutated as text (the link made again), the config blob mutated.
- jpeg: JPEGs with many segments (EXIF, ICC, comments, restart markers, progressive, fill bytes):
  ``walk_jpeg_markers`` (the pre-Pillow walk), then ``read_metadata`` and ``read_media``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import shutil
from pathlib import Path

READERS = ("config", "options", "tokenizer", "vae-pth", "vae-folder", "sharded", "hf-cache", "jpeg")
PARITY = Path(os.environ.get("SHOWO2_PARITY_DIR") or Path(__file__).resolve().parents[2] / "shared" / "parity")

# ---------------------------------------------------------------- text (TOML / YAML) mutation

_TOML_VALUES = ("1e400", "-1e400", "inf", "nan", "-inf", "9" * 400, "0x7fffffffffffffffff", "1979-05-27T07:32:00Z",
                "1979-05-27", "07:32:00", '""', '"\\u0000"', '"\\ud800"', "'" + "a" * 100_000 + "'", "[]", "{}",
                "[" * 5000 + "]" * 5000, "{a = {b = {c = 1}}}", "[1, 'a', 2.5, true]", "true", "-0", "0", "-1",
                "1_000_000_000_000_000_000", '"../../etc/passwd"', '"/dev/zero"', '"~"', '"."', "[[1], [2]]")
_YAML_VALUES = ("&a [*a]", "!!python/object/apply:os.system ['true']", "!!binary aGVsbG8=", "!!set {a, b}",
                "2001-12-14t21:59:43.10-05:00", "1e-4", ".inf", ".nan", "0o777", "0b1010", "~", "null", "yes",
                "{<<: {a: 1}}", "[&x 1, *x]", "*undefined", "? [a, b]\n: c", "|\n  text", ">-\n  folded",
                "!!timestamp 2001-12-14", "!!int 'x'", "!!float 1", "!!str", "'\\u0000'", "\"\\ud800\"",
                "[" * 5000 + "]" * 5000, "{" * 5000 + "}" * 5000)
_BOMB = ('a: &a ["x","x","x","x","x","x","x","x","x"]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n'
         'c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\n'
         'f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\ng: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]\n')


def mutate_text(data: bytes, kind: str, rng: random.Random) -> bytes:
    """A TOML or YAML mutant: one to three lines' values replaced by hostile literals, a section's
    name or a key changed, a line duplicated or dropped, a YAML alias bomb or anchor added."""
    from fuzz_readers import mutate_bytes

    if rng.random() < 0.25:
        return mutate_bytes(data, rng)
    lines = data.decode("utf-8").splitlines()
    values = _TOML_VALUES if kind == "toml" else _TOML_VALUES[:12] + _YAML_VALUES
    sep = "=" if kind == "toml" else ":"
    for _ in range(rng.choice((1, 1, 2, 3))):
        keyed = [i for i, ln in enumerate(lines) if sep in ln and not ln.lstrip().startswith("#")]
        op = rng.randrange(6)
        if op <= 2 and keyed:  # a value replaced
            i = rng.choice(keyed)
            key, _, _ = lines[i].partition(sep)
            lines[i] = f"{key}{sep} {rng.choice(values)}"
        elif op == 3 and keyed:  # a key renamed (unknown, empty, dotted, quoted oddly)
            i = rng.choice(keyed)
            key, _, rest = lines[i].partition(sep)
            indent = key[:len(key) - len(key.lstrip())]
            new = rng.choice(("extra", '"\\u0000"', "a.b.c", "'" + "k" * 300 + "'", "data", "model", "__class__"))
            lines[i] = f"{indent}{new} {sep}{rest}"
        elif op == 4 and lines:  # a line duplicated or dropped
            i = rng.randrange(len(lines))
            if rng.random() < 0.5:
                lines.insert(i, lines[i])
            else:
                del lines[i]
        else:  # a section header or a bomb
            if kind == "toml":
                lines.insert(rng.randrange(len(lines) + 1),
                             rng.choice(("[model]", "[[data]]", "[data]", "[[batch]]", "[run.x]", "[" * 300)))
            else:
                lines.append(rng.choice((_BOMB, "data: *a", "<<: {mode: vae}", "--- \n- 1", "%YAML 9.9")))
    return ("\n".join(lines) + "\n").encode("utf-8", "surrogatepass")


# ---------------------------------------------------------------- seeds


def _seed(label, path, kind="bytes", root=None):
    from fuzz_readers import Seed

    return Seed(label, path, kind, root)


def seeds_config(work: Path) -> list:
    import yaml

    from showo2_cli.training.config import read_raw

    examples = Path(__file__).resolve().parents[1] / "examples"
    out = []
    raw = read_raw(examples / "train_tiny.toml")
    raw["output_dir"] = "run"
    for name, text in (("config.toml", None), ("config.yaml", yaml.safe_dump(raw, sort_keys=False)),
                       ("config.json", json.dumps(raw, indent=1))):
        root = work / name.replace(".", "-")
        root.mkdir()
        p = root / name
        if text is None:
            text = (examples / "train_tiny.toml").read_text().replace('"../runs/tiny"', '"run"')
        p.write_text(text, encoding="utf-8")
        out.append(_seed(name, p, name.rsplit(".", 1)[1], root))
    return out


_OPTION_CLASSES = ("GenerateOptions", "CaptionOptions", "EncodeOptions")


def _record(obj) -> dict:
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)
            if isinstance(getattr(obj, f.name), (str, int, float, bool, list, tuple, type(None)))}


def seeds_options(work: Path) -> list:
    from showo2_cli import api

    out = []
    for cls, obj in (("GenerateOptions", api.GenerateOptions(seed=1, steps=4, size=(64, 64), guidance=3.0,
                                                             negative_prompt="blurry")),
                     ("CaptionOptions", api.CaptionOptions(max_new_tokens=8, temperature=0.7, top_p=0.9)),
                     ("EncodeOptions", api.EncodeOptions(size=(64, 64))),
                     # custom grids (probe HK): a record holding each kind, as a sidecar does
                     ("GenerateOptions:sigmas", api.GenerateOptions(seed=1, size=(64, 64), sigmas=[1.0, 0.75, 0.5, 0.25])),
                     ("GenerateOptions:timesteps", api.GenerateOptions(seed=1, size=(64, 64), timesteps=[999.0, 500.0]))):
        p = work / f"{cls.replace(':', '-')}.json"
        p.write_text(json.dumps(_record(obj)))
        out.append(_seed(cls, p, "json"))
    return out


def seeds_tokenizer(work: Path) -> list:
    import showo2_cli

    demo = Path(showo2_cli.__file__).parent / "assets" / "demo"
    fast = work / "fast"
    fast.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(demo / name, fast / name)
    tok = json.loads((demo / "tokenizer.json").read_text())
    specials = [t["content"] for t in tok.get("added_tokens", []) if t.get("special")]
    (fast / "special_tokens_map.json").write_text(json.dumps(
        {"eos_token": specials[0] if specials else "<|endoftext|>", "additional_special_tokens": specials[1:4]}))
    return [_seed(f"fast/{n}", fast / n, "json", fast)
            for n in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")]


def seeds_vae_pth(work: Path) -> list:
    alone, beside = work / "alone", work / "beside"
    alone.mkdir()
    beside.mkdir()
    shutil.copy(PARITY / "vae" / "Wan2.1_VAE_tiny.pth", alone / "Wan2.1_VAE.pth")
    shutil.copy(PARITY / "vae" / "Wan2.1_VAE_tiny.pth", beside / "Wan2.1_VAE.pth")
    shutil.copy(PARITY / "vae" / "config.json", beside / "config.json")
    return [_seed("Wan2.1_VAE.pth", alone / "Wan2.1_VAE.pth", root=alone),
            _seed("with-config/Wan2.1_VAE.pth", beside / "Wan2.1_VAE.pth", root=beside),
            _seed("with-config/config.json", beside / "config.json", "json", beside)]


def seeds_vae_folder(work: Path) -> list:
    import showo2_cli

    root = work / "vae"
    shutil.copytree(Path(showo2_cli.__file__).parent / "assets" / "demo" / "vae", root)
    return [_seed(n, root / n, "json" if n.endswith(".json") else "bytes", root)
            for n in ("config.json", "diffusion_pytorch_model.safetensors")]


def _demo_sharded(root: Path) -> None:
    from safetensors.torch import load_file, save_file

    import showo2_cli

    demo = Path(showo2_cli.__file__).parent / "assets" / "demo"
    shutil.copytree(demo, root, ignore=shutil.ignore_patterns("model.safetensors"))
    sd = load_file(demo / "model.safetensors")
    names = sorted(sd)
    half = len(names) // 2
    weight_map = {}
    for i, part in enumerate((names[:half], names[half:])):
        shard = f"model-0000{i + 1}-of-00002.safetensors"
        save_file({k: sd[k].contiguous() for k in part}, root / shard, metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(part, shard))
    size = sum(v.numel() * v.element_size() for v in sd.values())
    (root / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": size},
                                                                   "weight_map": weight_map}, indent=1))


def seeds_sharded(work: Path) -> list:
    root = work / "sharded"
    _demo_sharded(root)
    return [_seed("model.safetensors.index.json", root / "model.safetensors.index.json", "json", root),
            _seed("model-00001-of-00002", root / "model-00001-of-00002.safetensors", root=root)]


COMMIT = "0123456789abcdef0123456789abcdef01234567"


def seeds_hf_cache(work: Path) -> list:
    """A cache entry as huggingface_hub writes one: each file a blob named by its hash, linked from
    ``snapshots/COMMIT/`` by a relative link; ``refs/main`` the commit. The seeds (mutated) are
    ``refs/main``, a text file holding a link's target (``link:REL`` seeds: the link is made from
    it) and the config blob."""
    import hashlib

    import showo2_cli

    demo = Path(showo2_cli.__file__).parent / "assets" / "demo"
    cache = work / "cache"
    repo = cache / "models--fuzz--demo"
    (repo / "blobs").mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    snap = repo / "snapshots" / COMMIT
    for f in sorted(p for p in demo.rglob("*") if p.is_file()):
        rel = f.relative_to(demo)
        blob = hashlib.sha256(f.read_bytes()).hexdigest()
        shutil.copy(f, repo / "blobs" / blob)
        link = snap / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.relpath(repo / "blobs" / blob, link.parent), link)
    (work / "links").mkdir()
    seeds = [_seed("refs/main", repo / "refs" / "main", root=cache)]
    for rel in ("config.json", "model.safetensors", "vae/config.json"):
        holder = work / "links" / rel.replace("/", "_")
        holder.write_text(os.readlink(snap / rel))
        seeds.append(_seed(f"link:{rel}", holder))
    config_blob = (snap / "config.json").resolve()
    seeds.append(_seed("blob:config.json", config_blob, "json", cache))
    return seeds


def seeds_jpeg(work: Path) -> list:
    import io

    from fuzz_readers import _photo
    from PIL import Image, ImageCms

    im = _photo(80)
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    exif = Image.Exif()
    exif[0x0112] = 3
    exif[0x010F] = "fuzz"
    out = []
    for label, kw in (("exif-icc.jpg", {"exif": exif.tobytes(), "icc_profile": icc, "quality": 85}),
                      ("progressive.jpg", {"progressive": True, "quality": 70}),
                      ("restart.jpg", {"quality": 60, "restart_marker_blocks": 1}),
                      ("gray.jpg", {"quality": 90})):
        p = work / label
        (im.convert("L") if label == "gray.jpg" else im).save(p, "JPEG", **kw)
        out.append(_seed(label, p))
    buf = io.BytesIO()  # comments and fill bytes between the segments, as some cameras write
    im.save(buf, "JPEG", quality=75)
    data = buf.getvalue()
    com = b"".join(b"\xff\xfe" + (2 + len(t)).to_bytes(2, "big") + t for t in (b"made by a camera", b"x" * 100))
    p = work / "comments-fill.jpg"
    p.write_bytes(data[:2] + com + b"\xff" * 7 + data[2:])
    out.append(_seed("comments-fill.jpg", p))
    return out


SEEDS = {"config": seeds_config, "options": seeds_options, "tokenizer": seeds_tokenizer,
         "vae-pth": seeds_vae_pth, "vae-folder": seeds_vae_folder, "sharded": seeds_sharded,
         "hf-cache": seeds_hf_cache, "jpeg": seeds_jpeg}
KINDS = {"toml": mutate_text, "yaml": mutate_text}  # the text kinds (the others are fuzz_readers.mutate's)


# ---------------------------------------------------------------- drivers


def place(seed, data: bytes, case: Path) -> Path:
    """Write a mutant into the copy ``case`` of its seed's folder (a ``link:`` seed: a link made from
    the mutated target text, in a copy of the cache). Returns the folder a driver reads."""
    if seed.label.startswith("link:"):
        rel = seed.label[len("link:"):]
        cache = seed.path.parent.parent / "cache"
        shutil.copytree(cache, case, symlinks=True, copy_function=os.link)
        link = case / "models--fuzz--demo" / "snapshots" / COMMIT / rel
        link.unlink()
        target = data.decode("utf-8", "surrogateescape").replace("\x00", "")[:4000]
        try:
            os.symlink(target, link)
        except (OSError, ValueError):
            link.write_bytes(data)
        return case
    return case


def drive(reader: str, seed, target: Path, root: Path | None):
    if reader == "config":
        from showo2_cli.training.config import load_config

        load_config(target)
    elif reader == "options":
        from showo2_cli import api
        from showo2_cli.errors import UsageError

        try:  # (the record's own JSON is the caller's to read: only a mapping reaches the options)
            record = json.loads(target.read_bytes())
        except (ValueError, RecursionError):
            raise UsageError("not JSON") from None
        if not isinstance(record, dict):
            raise UsageError("not a record")
        cls = getattr(api, seed.label.split(":")[0])
        known = {f.name for f in dataclasses.fields(cls)} - {"noise"}  # (a tensor: TypeError by design)
        options = cls(**{k: v for k, v in record.items() if k in known})
        if seed.label.startswith("GenerateOptions"):  # as text_to_image judges them: the model's defaults filled in
            from fuzz_readers import demo_model

            from showo2_cli.sampling import check_schedule

            options.validate()
            resolved = options.resolved(demo_model().spec, video=False)
            resolved.validate(demo_model().spec)
            check_schedule(resolved.method, resolved.steps, resolved.shift, resolved.sigmas, resolved.timesteps)
            json.dumps([options.sigmas, options.timesteps])  # (the record a run writes)
        else:
            options.validate()
    elif reader == "tokenizer":
        from showo2_cli.tokenizer import add_showo2_tokens, encode_text, load_tokenizer

        tok = load_tokenizer(root)
        add_showo2_tokens(tok)
        encode_text(tok, "a red circle on a white background, é 💥")
    elif reader in ("vae-pth", "vae-folder"):
        from showo2_cli.modeling.vae_files import load_vae

        load_vae(root / "Wan2.1_VAE.pth" if reader == "vae-pth" else root)
    elif reader == "sharded":
        from showo2_cli import api

        api.load(str(root), need=())
    elif reader == "hf-cache":
        from showo2_cli import api

        api.load("fuzz/demo", need=("tokenizer", "VAE"), local_files_only=True, cache_dir=str(root))
    elif reader == "jpeg":
        from showo2_cli.media import read_media, read_metadata
        from showo2_cli.media.jpeg_markers import walk_jpeg_markers

        with open(target, "rb") as fh:
            walk_jpeg_markers(fh)
        read_metadata(target)
        read_media(target)
    else:
        raise ValueError(reader)
