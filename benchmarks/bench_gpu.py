"""GPU figures: the 1.5B- and 7B-shaped networks at full depth, random weights, bf16.

    python benchmarks/bench_gpu.py --section t2i --out $OUT/gpu-t2i.json    # one section; gpu.sh runs them all
    python benchmarks/bench_gpu.py --section t2i --smoke                    # CPU: the tiny spec, a few steps

Sections (one process each, so a native crash in one, e.g. flex attention, loses nothing else):

* t2i at 432x432, 50 steps (50 guided model calls; the command line's ``--steps 51``), guidance 5
  (cond + uncond), s/image at batch 1 and 4, through ``sampling.generate_latents`` as the pipeline
  calls it (noise drawn on the CPU, prefix cache, shared dual path), the network holding what
  ``showo2 t2i`` loads (no ``lm_head``);
* caption: greedy tokens/s after a 729-token image prompt (``text_decoding.generate``), the time
  to the first token (the prompt's forward) and the decoding rate after it (no flow head, as
  ``showo2 caption`` loads);
* the floating-point work of each t2i run as torch counts it (``FlopCounterMode``: 6.2 TFLOP per
  guided step of the 1.5B at batch 1, 24.9 at batch 4; the 7B's: 21.5) and the rate reached
  (``achieved_tflop_per_s``; an H100 multiplies bf16 matrices at about 790 TFLOP/s), so a
  figure far off that scale shows;
* which kernels ``scaled_dot_product_attention`` ran for t2i and caption (``attention_kernels``:
  the fused memory-efficient or cuDNN kernel, or a fall back to the unfused math kernel that would
  make the sdpa figures a slower path's);
* peak GPU memory of each timed run: ``torch.cuda.max_memory_allocated`` (tensors; ``peak_gib``)
  and ``max_memory_reserved`` (what torch's caching allocator took from the card; nvidia-smi shows
  that plus the CUDA context), both reset after the warm-up;
* attention variants, 10 guided t2i steps each, set as ``--attn`` / ``--compile`` set them
  (``Showo2Model.set_attention``, ``acceleration.compile_network``): sdpa (default), flex (the
  omni mask as a flex ``BlockMask`` in the LLM and the flow head), and ``torch.compile`` of the LLM
  and flow-head blocks; the warm-up's time (the compiles) and torch.compile's graph count before
  and after the timed run (a recompile per step would show there) are recorded, and one step's
  velocity is compared with plain sdpa's on the same weights (``agreement_with_sdpa``);
* the 7B-shaped network's memory for t2i (batch 1): the weights as loaded (``weights_gib``: what
  they hold, ``acceleration.weight_bytes``; ``allocated_gib``: every tensor on the GPU after the
  build) and the run's peak, in bf16 and with ``--quantize nf4``.

Weights are random, built on the device in bf16 (never a float32 copy there; no files), so only
time and memory mean anything. The record is written after each measurement, so a section
stopped by its time limit keeps what it measured.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path

import torch

from showo2_cli.acceleration import weight_bytes
from showo2_cli.modeling.attention import omni_attention_mask
from showo2_cli.options import TextSampling
from showo2_cli.sampling import generate_latents
from showo2_cli.sequences import SpecialTokens, generation_layout, understanding_layout
from showo2_cli.specs import get_spec
from showo2_cli.text_decoding import generate

REAL_IDS = dict(bos=151644, eos=151645, boi=151652, eoi=151653, img_pad=151655, vid_pad=151656, pad=151665,
                img=151666, bov=151667, eov=151668)
#: what each command loads (``load(heads=)``): t2i the flow head only, caption the language head only
T2I_HEADS, CAPTION_HEADS = ("flow_head",), ("lm_head",)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device):
    if device.type == "cuda":
        sync(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def gib(value: int) -> float:
    return value / 2**30


def peak(device) -> dict:
    """The peak since :func:`reset_peak`: tensors (``peak_gib``) and the allocator's reserve."""
    if device.type != "cuda":
        return {"peak_gib": None, "peak_reserved_gib": None}
    return {"peak_gib": gib(torch.cuda.max_memory_allocated(device)),
            "peak_reserved_gib": gib(torch.cuda.max_memory_reserved(device))}


def held_gib(device) -> float | None:
    """Memory the live tensors hold now (the weights, after a build)."""
    return gib(torch.cuda.memory_allocated(device)) if device.type == "cuda" else None


def make_network(spec, device, dtype, heads: tuple[str, ...] | None = None):
    """Random weights straight on the device in ``dtype``: built on 'meta', cast there, then
    ``to_empty`` and filled in place, so no float32 copy of the network (the 7B's: 34 GB) is ever
    on the device. ``heads``: the heads a command loads (``load(heads=)``), the others left out."""
    from showo2_cli.modeling.showo2 import Showo2Model

    with torch.device("meta"):
        net = Showo2Model(spec)
    if heads is not None:
        net.leave_out(heads)
    net = net.to(dtype).to_empty(device=device)
    gen = torch.Generator(device=device).manual_seed(0)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if p.dim() >= 2:
                p.normal_(0.0, 0.02, generator=gen)
            elif "norm" in name and name.endswith("weight"):
                p.fill_(1)
            else:
                p.zero_()
    net.reset_buffers()  # the RoPE tables, float32 as a load builds them
    return net.eval()


def ids(spec) -> SpecialTokens:
    if spec.vocab_size >= 151669:
        return SpecialTokens(**REAL_IDS)
    return SpecialTokens(**{k: spec.vocab_size - (151669 - v) for k, v in REAL_IDS.items()})


def compile_stats() -> dict:
    """torch.compile's counts so far: graphs compiled and graph breaks (0 when nothing compiled)."""
    from torch._dynamo.utils import counters

    return {"graphs": int(counters["stats"]["unique_graphs"]), "graph_breaks": int(sum(counters["graph_break"].values()))}


@torch.no_grad()
def t2i(net, spec, batch: int, steps: int, device, prompt_len: int = 64, warmup_steps: int = 2,
        on_warmup=None, count_flops: bool = False) -> dict:
    """``steps`` guided model calls (``steps + 1`` grid points) after a warm-up of ``warmup_steps``;
    ``on_warmup(calls, seconds)`` is told the warm-up's time after each of its calls (with
    ``--compile`` or flex: the compiles; the first call compiles the prompt's and a step's graphs).
    ``count_flops``: also the run's floating-point work (:func:`run_flops`, the prompt's and each
    step's, counted on extra runs after the timed one) and the rate the timed run reached."""
    tok = ids(spec)
    grid = spec.image_latent_grid
    prompts = [[(i * 7 + j) % 1000 + 100 for j in range(prompt_len)] for i in range(batch)]
    layout = generation_layout(prompts, grid * grid + 1, tok, spec.max_seq_len)
    # as the pipeline: float32 noise drawn on the CPU, the sampler's state moved to the device per call
    noise = torch.randn(batch, spec.latent_channels, 2 * grid, 2 * grid, generator=torch.Generator().manual_seed(0))
    start = time.perf_counter()

    def warming(i, _n, _t, _x):  # (the state is on the CPU: the call's work is done)
        if on_warmup is not None:
            on_warmup(i, time.perf_counter() - start)

    generate_latents(net, layout, noise, 5.0, warmup_steps + 1, 3.0, cache_prefix=True, callback=warming)
    sync(device)
    warmup = time.perf_counter() - start
    before = compile_stats()
    reset_peak(device)
    start = time.perf_counter()
    latents = generate_latents(net, layout, noise, 5.0, steps + 1, 3.0, cache_prefix=True)
    sync(device)
    seconds = time.perf_counter() - start
    result = {"batch": batch, "steps": steps, "model_calls": steps, "cli_steps": steps + 1, "seconds": seconds,
              "s_per_image": seconds / batch, "s_per_step": seconds / steps, **peak(device),
              "warmup_seconds": warmup, "finite": bool(torch.isfinite(latents).all()),
              "compiled_graphs_in_timed_run": compile_stats()["graphs"] - before["graphs"]}
    if count_flops:  # (a failure here is said beside the timings, which stay)
        result.update(guarded(flops_of_run, net, layout, noise, steps, seconds))
    return result


def flops_of_run(net, layout, noise, steps: int, seconds: float) -> dict:
    """The floating-point work of a t2i run of ``steps`` model calls (the prompt's and each step's,
    counted on two more runs: the prompt and one step, the prompt and two) and the rate at which a
    run of ``seconds`` did it."""
    one, two = (run_flops(lambda n=n: generate_latents(net, layout, noise, 5.0, n, 3.0, cache_prefix=True))
                for n in (2, 3))
    step, prompt = two - one, 2 * one - two
    total = prompt + steps * step
    return {"tflop": total / 1e12, "tflop_per_step": step / 1e12, "tflop_prompt": prompt / 1e12,
            "achieved_tflop_per_s": total / seconds / 1e12}


def run_flops(run) -> int:
    """Floating-point operations of ``run()`` as torch counts them (``FlopCounterMode``: matrix
    products and attention, from their shapes; the same count on any device)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        run()
    return int(counter.get_total_flops())


#: the kernels behind ``scaled_dot_product_attention`` (torch's op names, e.g.
#: ``aten::_scaled_dot_product_efficient_attention``, ``..._flash_attention``, ``..._cudnn_attention``,
#: ``..._flash_attention_for_cpu``; the unfused fallback: ``aten::_scaled_dot_product_attention_math``)
SDPA_KERNEL_PREFIX = "aten::_scaled_dot_product_"


def attention_kernels(run) -> dict:
    """Which kernels ``scaled_dot_product_attention`` chose while ``run()`` ran, and how often:
    the masks the project passes (the omni mask and the broadcast key mask, in SDPA's float form
    since probe GE: 0 and ``-inf`` in the query's dtype) must not send it to the unfused math
    kernel, which would make the timings those of a slower path. Flash refuses any mask, boolean or
    float; the memory-efficient and cuDNN kernels take either (torch picks the kernel from the
    mask's shape, not its dtype, and converts a boolean one to this float form itself).
    Read from the profiler's host-side op names, the same on the CPU and on CUDA."""
    from collections import Counter

    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run()
    ops = Counter(e.name for e in prof.events() if e.name.startswith(SDPA_KERNEL_PREFIX))
    return {"ops": dict(ops), "math_fallback": any("attention_math" in name for name in ops)}


@torch.no_grad()
def caption(net, spec, new_tokens: int, device) -> dict:
    tok = ids(spec)
    grid = spec.image_latent_grid
    latents = torch.randn(1, spec.latent_channels, 2 * grid, 2 * grid, generator=torch.Generator().manual_seed(0))
    system = [100 + i for i in range(36)]
    question = [200 + i for i in range(16)]

    def once(n):
        first = []

        def on_token(_token):  # the token's id is on the host: the work before it is done
            if not first:
                first.append(time.perf_counter())

        start = time.perf_counter()
        visual = net.encode_visual(latents.to(device)).fused[0]
        layout = understanding_layout(question, visual.shape[0], tok, system, [], [], mask_mode="official",
                                      official_block_len=grid * grid + 1)
        embeds, _ = net.embed_inputs(layout.input_ids, [[visual]], layout.slots, torch.ones(1))
        mask = omni_attention_mask(layout.blocks, layout.seq_len, device=device)
        out = generate(net, embeds, mask, TextSampling(max_new_tokens=n), on_token=on_token)
        sync(device)
        return out, layout.seq_len, first[0] - start, time.perf_counter() - start

    once(4)
    reset_peak(device)
    out, prompt_len, first_s, seconds = once(new_tokens)
    n = len(out.token_ids)
    return {"prompt_tokens": prompt_len, "new_tokens": n, "seconds": seconds, "tokens_per_s": n / seconds,
            "first_token_s": first_s,
            "decode_tokens_per_s": (n - 1) / (seconds - first_s) if n > 1 and seconds > first_s else None,
            **peak(device)}


def configure(net, variant: str) -> None:
    """The attention variant as the command line sets it: ``--attn flex`` (the LLM's and the flow
    head's attention over a flex BlockMask of the same mask), ``--attn eager`` or ``--compile``."""
    from showo2_cli.acceleration import compile_network

    if variant in ("flex", "eager"):
        net.set_attention(variant)
    elif variant == "compile":
        compile_network(net)
    elif variant != "sdpa":
        raise ValueError(f"unknown attention variant {variant!r}")


@torch.no_grad()
def agreement(net, spec, variant: str) -> dict:
    """The guided velocity of one step (a 2-point grid: the latents moved by it) as ``variant``
    computes it against the same step in plain sdpa (``--compile``: run eager), on the same
    weights and noise: the largest difference beside the velocity's own scale, so a variant that
    computes something else shows in the figures (on random weights in bf16, not a pass mark)."""
    tok = ids(spec)
    grid = spec.image_latent_grid
    layout = generation_layout([[100 + j for j in range(64)]], grid * grid + 1, tok, spec.max_seq_len)
    noise = torch.randn(1, spec.latent_channels, 2 * grid, 2 * grid, generator=torch.Generator().manual_seed(1))

    def velocity():
        return generate_latents(net, layout, noise, 5.0, 2, 3.0, cache_prefix=True) - noise

    got = velocity()
    if variant == "compile":
        with torch.compiler.set_stance("force_eager"):
            want = velocity()
    else:
        attn = net.attn
        net.set_attention("sdpa")
        try:
            want = velocity()
        finally:
            net.set_attention(attn)
    return {"max_abs_diff": float((got - want).abs().max()), "reference_abs_max": float(want.abs().max()),
            "reference_rms": float(want.pow(2).mean().sqrt()), "finite": bool(torch.isfinite(got).all())}


def attention_variant(variant: str, spec, device, dtype, steps: int, on_warmup=None) -> dict:
    """One guided t2i run of ``steps`` steps with the network set up as ``variant`` (and, for a
    variant other than sdpa, its :func:`agreement` with sdpa)."""
    net = make_network(spec, device, dtype, T2I_HEADS)
    configure(net, variant)
    result = {"attn": net.attn, **t2i(net, spec, 1, steps, device, on_warmup=on_warmup)}
    if variant != "sdpa":
        result["agreement_with_sdpa"] = guarded(agreement, net, spec, variant)
    return result


def error_record(e: Exception) -> dict:
    return {"error": f"{type(e).__name__}: {e}"[:500], "trace": traceback.format_exc()[-1500:]}


def guarded(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except Exception as e:
        return error_record(e)


def versions() -> dict:
    """The libraries that ran (the device image's, or the wheels gpu.sh unpacked)."""
    import importlib.metadata

    found = {}
    for name in ("transformers", "diffusers", "accelerate", "bitsandbytes", "triton"):
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


SECTIONS = ("t2i", "caption", "attn-sdpa", "attn-flex", "attn-compile", "7b", "7b-nf4")


def run_section(section: str, smoke: bool, steps: int, tokens: int, save=lambda record: None) -> dict:
    """Measure ``section``; ``save(record)`` is called with the record so far after each stage."""
    device = torch.device("cuda" if torch.cuda.is_available() and not smoke else "cpu")
    dtype = torch.bfloat16
    spec = get_spec("tiny" if smoke else ("7B" if section.startswith("7b") else "1.5B"))
    record = {"section": section, "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
              "torch": torch.__version__, "cuda": torch.version.cuda, "versions": versions(), "dtype": "bf16",
              "spec": spec.name, "smoke": smoke, "finished": False}
    start = time.perf_counter()
    save(record)
    try:
        if section.startswith("attn-"):
            def on_warmup(calls, seconds):  # kept if the section does not finish in its time
                record["warmup"] = {"calls": calls, "seconds": seconds, **compile_stats()}
                save(record)

            record["result"] = guarded(attention_variant, section[5:], spec, device, dtype, 1 if smoke else 10, on_warmup)
        else:
            heads = CAPTION_HEADS if section == "caption" else T2I_HEADS
            reset_peak(device)
            net = make_network(spec, device, dtype, heads)
            record["heads"] = list(heads)
            record["params"] = sum(p.numel() for p in net.parameters())
            record["build_peak_gib"] = peak(device)["peak_gib"]
            if section == "7b-nf4":  # --quantize nf4: bitsandbytes 4-bit LLM and flow head
                from showo2_cli.acceleration import quantize_network

                record["weights_gib_bf16"] = gib(weight_bytes(net))
                record["quantized_layers"] = quantize_network(net, "nf4")
                sync(device)
                record["quantize_peak_gib"] = peak(device)["peak_gib"]
            record["weights_gib"] = gib(weight_bytes(net))  # what the weights hold (4-bit data and scales for nf4)
            record["allocated_gib"] = held_gib(device)  # every live tensor on the GPU (the weights, RoPE tables)
            save(record)
            if section == "t2i":
                record["result"] = []
                for b in (1, 4):
                    record["result"].append(guarded(t2i, net, spec, b, steps, device, count_flops=True))
                    save(record)
                record["attention_kernels"] = guarded(attention_kernels, lambda: t2i(net, spec, 1, 1, device, warmup_steps=1))
            elif section == "caption":
                record["result"] = guarded(caption, net, spec, tokens, device)
                save(record)
                record["attention_kernels"] = guarded(attention_kernels, lambda: caption(net, spec, 2, device))
            elif section.startswith("7b"):
                # (nf4: the same products as bf16, but bitsandbytes' 4-bit matmuls escape torch's count)
                record["result"] = guarded(t2i, net, spec, 1, 1 if smoke else 2, device, count_flops=section == "7b")
    except Exception as e:  # a stage outside guarded() (the build, the quantization): said in the record
        record.update(error_record(e))
    record["seconds"] = time.perf_counter() - start
    record["finished"] = True
    save(record)
    return record


def write_record(path: Path, record: dict) -> None:
    """Write ``record`` as JSON at ``path`` whole or not at all (a kill mid-write leaves the last one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    os.replace(tmp, path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--section", choices=SECTIONS, required=True, help="one measurement (one process each)")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--smoke", action="store_true", help="CPU, the tiny spec, few steps (checks the script runs)")
    ap.add_argument("--steps", type=int, default=50, help="guided model calls per image (the CLI's --steps minus 1)")
    ap.add_argument("--tokens", type=int, default=128)
    args = ap.parse_args(argv)
    save = (lambda record: write_record(args.out, record)) if args.out else (lambda record: None)
    record = run_section(args.section, args.smoke, 2 if args.smoke else args.steps, 4 if args.smoke else args.tokens,
                         save)
    print(json.dumps({k: v for k, v in record.items() if k != "trace"})[:2000], flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
