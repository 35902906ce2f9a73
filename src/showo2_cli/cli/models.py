"""Model plumbing: ``models``, ``pull``, ``info``, ``convert``, ``init``."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Annotated

import typer

from ..errors import ModelError, UsageError, short
from ..model_files import check_output_folder
from ..options import check_dtype
from .common import (
    JsonOpt,
    LoraOpt,
    LoraWeightOpt,
    MaxMemOpt,
    ModelOpt,
    OverwriteOpt,
    ProgressReporter,
    QuietOpt,
    VaeOpt,
    emit,
    fetch_if_needed,
    model_name,
    notice,
    setup,
    status,
)
from .common import (
    adapters as weighted,
)


def info(
    model: Annotated[str | None, typer.Argument(
        help="Model name, folder or Hugging Face repo id (default: the one the other commands use: "
             "$SHOWO2_MODEL, the cached official 1.5B, then the bundled demo).")] = None,
    model_opt: ModelOpt = None,
    vae: VaeOpt = None,
    json_mode: JsonOpt = False,
    quiet: QuietOpt = False,
):
    """Show a model's spec, parameter counts, dtype and where each file was found."""
    setup(json_mode, quiet, result="the model's details")
    if model is not None and model_opt is not None and model != model_opt:
        raise UsageError(f"two models given: '{short(model)}' and --model '{short(model_opt)}'; give one")
    model = model_name(model if model is not None else model_opt)
    from ..model_files import find_files

    fetch_if_needed(model, vae)
    files = find_files(model, vae=vae)
    if not files.weights:
        raise ModelError(f"model '{model}' has no weights: {_weights_gap(files)}")
    from ..loading import build_network, parameter_counts  # torch: after the cheap checks of the name
    from ..model_config import spec_from_files
    from ..weights import read_state_dict

    start = time.perf_counter()
    state = read_state_dict(files.weights)
    spec = spec_from_files(files, state)
    dtypes = sorted({str(v.dtype).replace("torch.", "") for v in state.values()})
    build_network(spec, state, next(iter(state.values())).dtype, where=str(files.root))  # validates keys
    seconds = time.perf_counter() - start
    counts = parameter_counts(state, tied=spec.tie_word_embeddings)
    result = {"model": model, "format": files.format, "spec": spec.to_dict(), "parameters": counts,
              "dtype": dtypes, "files": files.describe(), "missing": [p for p, _ in files.missing],
              "check_seconds": round(seconds, 3)}
    lines = [f"model      {model}", f"format     {files.format}  ({files.root})",
             f"weights    {', '.join(str(p.name) for p in files.weights)}  [{', '.join(dtypes)}]",
             f"LLM        Qwen2.5: hidden {spec.hidden_size}, {spec.num_layers} layers, {spec.num_heads}/{spec.num_kv_heads} heads, "
             f"vocab {spec.vocab_size}, tied embeddings {spec.tie_word_embeddings}",
             f"semantic   {spec.semantic_layers} SigLIP layers of width {spec.clip_latent_dim}, position table {spec.position_embedding_rows}",
             f"flow head  {spec.head_layers} blocks of width {spec.head_hidden}"
             + (f" ({spec.head_heads}/{spec.head_kv_heads} heads x {spec.head_dim_flow})" if spec.head_layers else ""),
             f"geometry   {_pixels(spec)}, {spec.config_grid[0]}x{spec.config_grid[1]} tokens, patch {spec.patch_size}, "
             f"max_seq_len {spec.max_seq_len}",
             f"tasks      {', '.join(spec.tasks)}"]
    lines.append("parameters " + ", ".join(f"{k} {v / 1e6:.2f}M" for k, v in counts.items()))
    merged = _merged_adapters(files)
    if merged:  # (`convert --lora`, save_pretrained after load_lora_weights: the adapters are in the weights)
        result["lora_merged"] = merged
        lines.append("LoRA       merged into the weights: " + ", ".join(
            f"{a['path']} at weight {a['weight']:g}" if isinstance(a, dict) else str(a) for a in merged))
    pieces = [("tokenizer", files.tokenizer), ("VAE", files.vae)]
    if files.format != "showo2":  # a showo2 folder's config.json holds the whole spec
        pieces += [("LLM config", files.llm_config), ("SigLIP config", files.siglip_config)]
    for piece, where in pieces:
        lines.append(f"{piece:<10} {where if where else 'not found'}")
    for piece, hint in files.missing:
        lines.append(f"missing    {piece}: {hint}")
    emit(result, "\n".join(lines))


def convert(
    src: Annotated[str, typer.Argument(help="The model to rewrite: an official or showo2-format folder (a training checkpoint too), repo id, variant name or demo.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="The folder to write.")],
    dtype: Annotated[str, typer.Option("--dtype", help="keep, bf16, fp16 or fp32.")] = "keep",
    vae: VaeOpt = None,
    lora: LoraOpt = None,
    lora_weight: LoraWeightOpt = None,
    overwrite: OverwriteOpt = False,
    json_mode: JsonOpt = False,
    quiet: QuietOpt = False,
):
    """Rewrite a checkpoint as a pickle-free safetensors folder that loads memory-mapped
    (with --lora: the adapters merged into its weights, a full model of its own)."""
    setup(json_mode, quiet)
    lora = weighted(lora, lora_weight)  # (a weight per adapter: checked before anything else)
    dtype = check_dtype(dtype, extra=("keep",))  # (recorded by its canonical name: Float16 is fp16)
    check_output_folder(output, overwrite)
    import torch

    from ..loading import build_network, check_adapters, save_folder
    from ..model_config import spec_from_files
    from ..model_files import find_files
    from ..modeling.vae_files import load_vae
    from ..runtime import torch_dtype
    from ..tokenizer import add_showo2_tokens, load_tokenizer
    from ..weights import read_state_dict

    target_dtype = None if dtype == "keep" else torch_dtype(dtype)
    start = time.perf_counter()
    fetch_if_needed(src, vae)
    files = find_files(src, vae=vae)
    if not files.weights:
        raise ModelError(f"'{src}' has no weights: {_weights_gap(files)}")
    from ..lora import as_given, fetch_adapter, find_adapter, given_adapters, merge_adapters

    given = given_adapters(lora)  # (path, weight) of each, in order
    typed, weights = [ref for ref, _ in given], [weight for _, weight in given]
    lora = [fetch_adapter(ref) for ref in typed]  # a repo id: its cached folder
    adapter_folders = [find_adapter(ref) for ref in lora]
    check_adapters(files, lora)  # each read and checked (files, values, shapes where known) before the weights are
    from ..media import check_folder_keeps_inputs

    if overwrite:  # replacing a folder that holds the source, its VAE or an adapter would delete it
        check_folder_keeps_inputs(output, [*((p, True) for p in files.pieces()), *((a, False) for a in adapter_folders)],
                                  rewritable=files.root)
    adapters = []
    with status("reading weights"):
        state = read_state_dict(files.weights)
        spec = spec_from_files(files, state)
        ref_dtype = target_dtype or next(iter(state.values())).dtype
        network = build_network(spec, {k: v for k, v in state.items()}, torch.float32 if lora else ref_dtype,
                                where=str(files.root))
        if lora:  # merged in float32, written in the chosen dtype (keep: the checkpoint's own)
            merged = merge_adapters(network, lora, weights=weights)
            adapters = [as_given(*each) for each in zip(typed, lora, merged, weights, strict=True)]
            kept = {k: v.dtype for k, v in state.items()}
            state = {k: v.to(kept.get(k, v.dtype)) for k, v in network.state_dict().items()}
        del network
    tokenizer = None
    if files.tokenizer is not None:
        tokenizer = load_tokenizer(files.tokenizer)
        add_showo2_tokens(tokenizer)
    vae_model = load_vae(files.vae) if files.vae is not None else None
    for piece, hint in files.missing:
        notice(f"note: {piece} not found ({hint}); the converted folder will lack it")
    with status(f"writing {output}"):
        save_folder(output, spec, state, tokenizer=tokenizer, vae=vae_model, dtype=target_dtype, overwrite=overwrite,
                    extra={"converted_from": str(files.root), **({"lora_merged": adapters} if adapters else {})})
    seconds = time.perf_counter() - start
    size = sum(f.stat().st_size for f in output.rglob("*") if f.is_file())
    notice(f"wrote {size / 1e6:.1f} MB in {seconds:.1f} s")
    emit({"output": str(output), "seconds": round(seconds, 2), "bytes": size, "spec": spec.name,
          "dtype": dtype, "tokenizer": tokenizer is not None, "vae": vae_model is not None, "lora": adapters},
         str(output))  # stdout: the folder alone, so `$(showo2 convert ...)` is it


def init(
    output: Annotated[Path, typer.Option("--output", "-o", help="The folder to write.")],
    spec: Annotated[str, typer.Option("--spec", help="A registry spec: tiny, 1.5B, 7B, ...")] = "tiny",
    seed: Annotated[int, typer.Option("--seed", help="Random seed.")] = 0,
    dtype: Annotated[str, typer.Option("--dtype", help="fp32, bf16 or fp16.")] = "fp32",
    vae_dim: Annotated[int | None, typer.Option("--vae-dim", min=1, max=512, help="Base width of the random Wan VAE (96 is the real one).")] = None,
    max_memory: MaxMemOpt = None,
    overwrite: OverwriteOpt = False,
    json_mode: JsonOpt = False,
    quiet: QuietOpt = False,
):
    """Write a new randomly initialised model folder of any spec (the start of training, or for tests)."""
    setup(json_mode, quiet)
    from ..options import check_seed
    from ..specs import get_spec

    check_seed(seed)
    spec_obj = get_spec(spec)
    dtype = check_dtype(dtype, extra=())
    check_output_folder(output, overwrite)
    from ..loading import init_model
    from ..runtime import torch_dtype

    with status(f"initialising a random '{spec_obj.name}' model"):
        path = init_model(spec_obj, output, seed=seed, dtype=torch_dtype(dtype), vae_base_dim=vae_dim,
                          overwrite=overwrite, max_memory_gb=max_memory)
    emit({"output": str(path), "spec": spec_obj.name, "seed": seed, "dtype": dtype}, str(path))


def models(json_mode: JsonOpt = False, quiet: QuietOpt = False):
    """The known variants: which are present locally (and where), what is missing, how to get it."""
    setup(json_mode, quiet, result="the list of models")
    from ..hub import WAN_VAE_FILE, WAN_VAE_REPO, bundled_demo_path, cached_snapshot
    from ..hub_vae import shared_vae
    from ..model_files import LLM_REPO_FILES, find_files
    from ..specs import REGISTRY

    try:
        vae, vae_error = shared_vae(local_files_only=True), None  # a VAE for a model without its own ($SHOWO2_VAE, the cache)
    except ModelError as e:  # $SHOWO2_VAE names nothing: every model without its own VAE misses it
        vae, vae_error = None, str(e)
        notice(f"note: {e}")
    rows = []
    demo = bundled_demo_path()
    rows.append({"name": "demo", "repo": None, "present": (demo / "config.json").exists(),
                 "path": str(demo) if (demo / "config.json").exists() else None, "missing": [],
                 "get": [], "tasks": "all (small synthetic shapes world)"})
    for name, spec in REGISTRY.items():
        if not spec.repo_id:
            continue
        snap = cached_snapshot(spec.repo_id)
        missing, get, damaged = [], [], None
        if snap is None:
            missing.append("checkpoint")
            get.append(f"hf download {spec.repo_id}")
            if spec.llm_repo_id and cached_snapshot(spec.llm_repo_id, role="tokenizer") is None:
                missing.append("tokenizer")
                get.append(f"hf download {spec.llm_repo_id} {LLM_REPO_FILES}")
            if vae is None:
                missing.append("VAE")
                if vae_error is None:  # (with $SHOWO2_VAE set the load reads its VAE, never the Wan2.1 one)
                    get.append(f"hf download {WAN_VAE_REPO} {WAN_VAE_FILE}")
        else:  # what loading it would find: the same lookups as `showo2 info`, no network
            try:
                for piece, hint in find_files(snap).missing:
                    missing.append(piece)
                    if hint.startswith("hf download "):
                        get.append(hint.split(" (")[0])
            except ModelError as e:
                if str(e) == vae_error:
                    missing.append("VAE")
                else:
                    damaged = str(e)
                    get.append(f"showo2 pull {name} --force-download")
        if missing:
            get.insert(0, f"showo2 pull {name}")
        rows.append({"name": name, "repo": spec.repo_id, "present": not missing and damaged is None,
                     "path": str(snap) if snap else None, "missing": missing, "damaged": damaged, "get": get,
                     "tasks": ", ".join(spec.tasks)})
    env = os.environ.get("SHOWO2_MODEL")
    lines = [f"default: {env} (SHOWO2_MODEL)" if env else "default: the cached official 1.5B if present, else demo"]
    for r in rows:
        state = ("ready" if r["present"] else f"damaged: {r['damaged']}" if r.get("damaged") else
                 "missing " + ", ".join(r["missing"]) if r["missing"] else "not installed")
        lines.append(f"{r['name']:<18} {state}" + (f"  ({r['path']})" if r["path"] else ""))
        lines.append(f"{'':<18} tasks: {r['tasks']}")
        for cmd in r["get"]:
            lines.append(f"{'':<18} get: {cmd}")
    emit({"models": rows, "default_env": env}, "\n".join(lines))


def pull(
    model: Annotated[str, typer.Argument(help="A variant (1.5B, 7B, 1.5B-HQ, ...) or a Hugging Face repo id; "
                                         "NAME@REVISION pins a commit, tag or branch.")],
    force_download: Annotated[bool, typer.Option(
        "--force-download", help="Fetch the model repo's files again even where cached (a damaged copy); its "
                                 "tokenizer and VAE repos, which other models share, only when missing.")] = False,
    json_mode: JsonOpt = False,
    quiet: QuietOpt = False,
):
    """Download a model and what it needs (tokenizer, VAE) into the Hugging Face cache, to run offline.

    Only the files it loads come: config.json and one set of weights (safetensors before pickles), the tokenizer files and LLM config of its Qwen2.5 repo, the SigLIP config and Wan2.1_VAE.pth (or, for a model without a VAE of its own, the VAE $SHOWO2_VAE names). Cached pieces are not fetched again; an interrupted pull keeps the files it finished and fetches the rest anew. HF_HOME / HF_HUB_CACHE (the cache, for pull and every other command alike: there is no --cache-dir), HF_ENDPOINT, HF_TOKEN / HF_TOKEN_PATH (or hf auth login; no --token, which ps and the shell history would show), HF_HUB_DISABLE_IMPLICIT_TOKEN and HF_HUB_OFFLINE are honoured.
    """
    setup(json_mode, quiet)
    from ..hub import pull as pull_model

    with ProgressReporter() as progress:
        result = pull_model(model, progress=progress, force_download=force_download)
    for piece in result.missing:
        notice(f"note: {piece} still missing after the pull (see: showo2 info {model})")
    state = (f"downloaded {', '.join(result.downloaded)}" if result.downloaded else
             "already in the cache" if result.repo_id is not None else
             "bundled with showo2, nothing to download" if model == "demo" else "a local folder, nothing to download")
    emit({"model": model, "repo": result.repo_id, "path": str(result.path), "downloaded": result.downloaded,
          "pieces": result.pieces, "missing": result.missing}, f"{model}: {state}  ({result.path})")


def _weights_gap(files) -> str:
    """What find_files said of a model without weights (the names it looked for, the ``variant``
    files it holds instead)."""
    return next((hint for piece, hint in files.missing if piece == "weights"), f"none in '{files.root}'")


def _merged_adapters(files) -> list:
    """The LoRA adapters a showo2-format folder's config records as merged into its weights
    (``showo2.lora_merged``: paths or repo ids, ``{"path", "weight"}`` where merged at another
    strength); [] for other formats or none."""
    from ..weights import read_json

    if files.format != "showo2":
        return []
    section = read_json(Path(files.root) / "config.json").get("showo2")
    merged = section.get("lora_merged") if isinstance(section, dict) else None
    if not isinstance(merged, list):
        return []
    return [a for a in merged if isinstance(a, str) or isinstance(a, dict) and isinstance(a.get("path"), str)
            and isinstance(a.get("weight"), (int, float))]


def _pixels(spec) -> str:
    """The default output size: ``432px`` (square) or ``WIDTHxHEIGHTpx`` (a non-square configured grid)."""
    h, w = spec.default_size()
    return f"{h}px" if h == w else f"{w}x{h}px"
