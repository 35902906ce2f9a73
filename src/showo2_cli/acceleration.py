"""The memory and speed options of a loaded model, applied in one place (``loading.load``).

* ``attn``: the attention backend of the Qwen2 LLM (transformers' ``attn_implementation``) and of
  the flow head (the project's own blocks), see :func:`showo2_cli.modeling.attention.attend`;
* ``quantize``: weight-only quantization of the LLM's and the flow head's linear layers, the
  activations staying in the model's dtype: ``int8wo`` with torchao (``quantize_(model,
  Int8WeightOnlyConfig())``: int8 weights, one float scale per output row), ``nf4`` with
  bitsandbytes (``bnb.nn.Linear4bit``, NF4 codes in blocks of 64 weights, each block's scale
  itself quantized; runs on CUDA and, with bitsandbytes >= 0.50 (the version tested), on the CPU);
  a layer larger than :data:`QUANTIZE_CHUNK` weights (an untied ``lm_head``, the MLP layers) is quantized by
  chunks of rows into the same library tensor, bit for bit, its scratch bounded by the chunk;
* ``compile``: ``torch.compile`` of the LLM forward and of each flow-head block;
* ``vae_tiling``: diffusers' spatial tiling of ``AutoencoderKLWan`` (``auto``: only for a job that
  would not fit the memory limit untiled, see :func:`showo2_cli.runtime.pick_tiling`).

4-bit goes through bitsandbytes, not torchao: torchao 0.18's int4 weight-only formats need CUDA
(``plain`` needs ``mslk``, ``tile_packed_to_4d`` CUDA, ``plain_int32`` has no CPU kernel), while
bitsandbytes' NF4 runs on both. The swap is done here rather than by accelerate's
``load_and_quantize_model`` or transformers' ``BitsAndBytesConfig``: a load quantizes each layer
as it places it into the network built on 'meta' (:mod:`showo2_cli.placement`), but only after
its weights are checked and its LoRA adapters merged, which those do not do; the layer, its
packing and its kernels are bitsandbytes' own.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .errors import UsageError
from .footprint import PARAMETER_GROUPS
from .options import RuntimeOptions
from .runtime import quiet_imports

#: The parts of the network whose linear layers ``quantize`` converts (the semantic layers, the
#: projectors and the time embedding stay in the model's dtype: small, and closest to the input).
QUANTIZED_PREFIXES = PARAMETER_GROUPS["llm"] + PARAMETER_GROUPS["flow_head"]


def apply(bundle, options: RuntimeOptions | None):
    """Apply ``options``' attention backend, quantization, compilation and VAE tiling to a loaded
    :class:`~showo2_cli.loading.Showo2` (already on its device; ``loading.load`` quantizes as it
    places the weights, so a bundle quantized already is left so); returns the bundle."""
    if options is None:
        return bundle
    options.validate()
    net = bundle.network
    if options.attn != "sdpa":
        net.set_attention(options.attn)
    if options.quantize != "none":
        if bundle.quantize == "none":  # (loading.load quantizes as it places the weights: placement.place)
            quantize_network(net, options.quantize)
        bundle.quantize = options.quantize
    if options.compile:
        compile_network(net)
    if net.head_loader is not None:  # a head loaded on first use gets the same (placement.HeadLoader)
        net.head_loader.runtime = options
    if bundle.vae is not None:
        bundle.vae.tiling = options.vae_tiling
    return bundle


def quantized_filter(net, within: str | None = None) -> callable:
    """``wanted(module, name)``: whether ``--quantize`` converts that layer of ``net`` (a linear layer
    of the LLM or flow head, not a tied ``lm_head``; only under the module named ``within``, when given)."""
    tied = bool(getattr(net.spec, "tie_word_embeddings", False))

    def wanted(module: nn.Module, name: str) -> bool:
        if not isinstance(module, nn.Linear) or not name.startswith(QUANTIZED_PREFIXES):
            return False
        if within is not None and name != within and not name.startswith(within + "."):
            return False
        return not (tied and name == "showo.lm_head")  # a tied head shares the (unquantized) embedding

    return wanted


def quantized_size(net: nn.Module, within: str) -> int:
    """Weights (elements) that :func:`quantize_network` quantizes under the module named ``within``."""
    wanted = quantized_filter(net, within)
    return sum(m.weight.numel() for name, m in net.named_modules() if wanted(m, name))


def quantize_network(net: nn.Module, method: str = "int8wo", within: str | None = None) -> int:
    """Weight-only ``int8wo`` (torchao) or ``nf4`` (bitsandbytes) for the LLM's and flow head's
    linear layers (only those under the module named ``within``, when given: one group of
    :func:`showo2_cli.placement.place`, whose tensors have memory of their own); returns how many
    were quantized."""
    if method not in ("int8wo", "nf4"):
        raise UsageError(f"unknown quantization '{method}'")
    count = _quantize_nf4(net, within) if method == "nf4" else _quantize_int8(net, within)
    if within is None:
        release_weight_file(net)
    return count


def release_weight_file(net: nn.Module) -> None:
    """Give the tensors left unquantized memory of their own. A load memory-maps the weights file
    and its tensors live in that mapping; quantizing read every page of the quantized weights, and
    those pages stayed in the process (its RSS) for as long as any other tensor of the file kept
    the mapping open (the 1.5B-wide test model: 1.84 GB after an int8wo load, now 0.88 GB; fp32's
    0.45 GB). A copy of the rest (the embedding, the semantic layers, norms and biases) lets the
    mapping close."""
    with torch.no_grad():
        for t in [*net.parameters(), *net.buffers()]:
            if type(t) in (torch.Tensor, nn.Parameter) and t.device.type == "cpu":
                t.data = t.data.clone()


#: Weights (elements) of one linear layer quantized at once. The quantizers' scratch is several float32
#: copies of what they quantize (torchao's int8: ``input * (1 / scale)``, its rounding, ``+ zero_point``
#: and the clamp, two 4-byte copies at a time; bitsandbytes' NF4 on the CPU (its default kernel): the
#: weight in float32, the scaled copy, its clamp and the int32 codes), so a larger layer (the 7B's untied
#: ``lm_head``, 151669 x 3584; its MLP layers, 18944 x 3584; the flow head's larger ones) is quantized in
#: chunks of output rows (:func:`_by_rows`): the scratch is the chunk's, 16 M weights, not the layer's.
#: Not smaller: a float32 copy of 16 M weights (64 MiB) is above glibc's largest mmap threshold (32 MiB),
#: so it goes back to the system when freed; chunks of 8 M weights (32 MiB copies) stayed in the heap,
#: and a bf16 load at the 1.5B's widths (its 8960 x 1536 MLP layers chunked) peaked 0.08 GB higher
#: than with those layers quantized whole.
QUANTIZE_CHUNK = 1 << 24


def _quantize_int8(net: nn.Module, within: str | None) -> int:
    try:
        with quiet_imports():  # torchao's import-time warnings
            from torchao.quantization import Int8WeightOnlyConfig, quantize_
    except ImportError as e:
        raise UsageError("--quantize int8wo needs torchao 0.18: pip install 'showo2[quant]'") from e
    wanted = quantized_filter(net, within)
    names = [name for name, m in net.named_modules() if wanted(m, name)]
    config = Int8WeightOnlyConfig()
    if any(net.get_submodule(name).weight.numel() <= QUANTIZE_CHUNK for name in names):
        quantize_(net, config, filter_fn=lambda m, name: wanted(m, name) and m.weight.numel() <= QUANTIZE_CHUNK)
    for name in names:  # (the larger: by rows, the same bits)
        module = net.get_submodule(name)
        if module.weight.numel() > QUANTIZE_CHUNK:
            module.weight = nn.Parameter(_int8_by_rows(module.weight.detach(), config), requires_grad=False)
    return len(names)


def _int8_by_rows(weight: torch.Tensor, config):
    """torchao's int8 weight of ``weight`` (``Int8Tensor.from_hp``, as ``quantize_`` makes it) quantized
    in chunks of rows: its scales (and zero points) are one per output row (``PerRow``), computed from
    that row alone, so each chunk's rows, scales and zero points are the whole weight's, bit for bit."""
    from torchao.quantization import Int8Tensor, PerRow
    from torchao.quantization.utils import recommended_inductor_config_setter

    if not isinstance(config.granularity, PerRow):  # (another granularity would not split by rows)
        raise ValueError(f"int8 by rows needs PerRow scales, not {config.granularity}")
    if config.set_inductor_config:  # (what quantize_'s transform does)
        recommended_inductor_config_setter()
    rows = weight.shape[0]
    first = {}

    def quantize(chunk):
        q = Int8Tensor.from_hp(chunk, granularity=config.granularity)
        extra = [n for n in q.optional_tensor_data_names if n != "zero_point" and getattr(q, n) is not None]
        if extra:
            raise ValueError(f"int8 by rows: unexpected per-tensor data {extra}")
        first.setdefault("q", q)
        return q.qdata, q.scale, q.zero_point

    qdata, scale, zero_point = _by_rows(weight, quantize, (rows, rows, rows))
    q = first["q"]
    return Int8Tensor(qdata, scale, list(q.block_size), q.dtype, zero_point=zero_point,
                      act_quant_kwargs=q.act_quant_kwargs, reduce_range=q.reduce_range)


def _by_rows(weight: torch.Tensor, quantize, lengths, multiple: int = 1) -> list[torch.Tensor]:
    """``quantize`` (a chunk of rows of the 2-D ``weight`` -> tensors) applied to chunks of at most
    :data:`QUANTIZE_CHUNK` weights (whole rows, a multiple of ``multiple`` weights, but the last), its
    outputs written in turn into tensors of first dimension ``lengths`` (the whole weight's), each
    chunk's outputs let go before the next chunk is quantized."""
    n_rows, width = weight.shape
    step = multiple // math.gcd(width, multiple)  # rows whose weights are a multiple of `multiple`
    rows = max(step, QUANTIZE_CHUNK // width // step * step)
    out, at = [], [0] * len(lengths)
    for start in range(0, n_rows, rows):
        parts = quantize(weight[start:start + rows])
        if not out:
            out = [torch.empty((n, *p.shape[1:]), dtype=p.dtype, device=p.device) for p, n in zip(parts, lengths, strict=True)]
        for i, p in enumerate(parts):
            out[i][at[i]:at[i] + p.shape[0]].copy_(p)
            at[i] += p.shape[0]
        del parts
    if at != list(lengths):
        raise ValueError(f"quantizing by rows gave {at} rows, not {list(lengths)}")
    return out


def _quantize_nf4(net: nn.Module, within: str | None) -> int:
    """Replace each wanted ``nn.Linear`` by a ``bitsandbytes.nn.Linear4bit`` holding its weight in
    NF4 (quantized where the weight lies, CPU or CUDA; a weight larger than :data:`QUANTIZE_CHUNK`
    by rows, :func:`_nf4_by_rows`); compute in the weight's own dtype."""
    try:
        with quiet_imports():
            import bitsandbytes as bnb
    except ImportError as e:
        raise UsageError("--quantize nf4 needs bitsandbytes >= 0.50: pip install 'showo2[quant]'") from e
    wanted = quantized_filter(net, within)
    names = [name for name, m in net.named_modules() if wanted(m, name)]
    for name in names:
        old = net.get_submodule(name)
        parent_name, _, child = name.rpartition(".")
        new = bnb.nn.Linear4bit(old.in_features, old.out_features, bias=old.bias is not None,
                                compute_dtype=old.weight.dtype, quant_type="nf4", device="meta")
        new.weight = bnb.nn.Params4bit(old.weight.data, requires_grad=False, quant_type="nf4", module=new)
        if old.bias is not None:
            new.bias = nn.Parameter(old.bias.data, requires_grad=False)
        if old.weight.numel() > QUANTIZE_CHUNK:
            new.weight = _nf4_by_rows(new.weight)
        else:
            new.weight = new.weight.to(old.weight.device)  # the quantization happens here
        # bitsandbytes' CPU inference path (in eval mode, on a CPU with AVX512-BF16) repacks the
        # weight in place on its first forward: it asserts on a layer whose rows are not a multiple
        # of 32 (a 151669-row lm_head), computes in bf16 whatever the compute dtype, and keeps the
        # block scales in bf16, so the numbers would depend on the mode and the CPU. The layers
        # stay on the dequantize-and-matmul path the project measured, and take the module's mode.
        new.support_avx512bf16_for_cpu = False
        new.train(old.training)
        setattr(net.get_submodule(parent_name) if parent_name else net, child, new)
    return len(names)


def _nf4_by_rows(param):
    """The ``bitsandbytes.nn.Params4bit`` that ``param.to(its device)`` makes (``quantize_4bit``: NF4
    codes in blocks of ``blocksize`` consecutive weights, each block's absmax; with
    ``compress_statistics``, those absmax quantized in turn around their mean), quantized in chunks of
    rows whose weights are a multiple of the block: each block, its codes and absmax are the whole
    weight's, bit for bit; the absmax (1/16 of the float32 weight) are then compressed whole, as
    ``quantize_4bit`` does."""
    import bitsandbytes as bnb
    from bitsandbytes.functional import QuantState, get_4bit_type, quantize_blockwise

    weight, size = param.data, param.data.numel()

    def quantize(chunk):
        codes, state = bnb.functional.quantize_4bit(chunk, blocksize=param.blocksize, compress_statistics=False,
                                                    quant_type=param.quant_type, quant_storage=param.quant_storage)
        return codes, state.absmax

    per_item = 2 * param.quant_storage.itemsize  # (4-bit codes per stored item)
    codes, absmax = _by_rows(weight, quantize, (-(-size // per_item), -(-size // param.blocksize)),
                             multiple=param.blocksize * per_item)
    code = get_4bit_type(param.quant_type, device=weight.device)
    kw = {"shape": weight.shape, "dtype": weight.dtype, "blocksize": param.blocksize, "code": code,
          "quant_type": param.quant_type}
    if param.compress_statistics:
        offset = absmax.mean()
        qabsmax, state2 = quantize_blockwise(absmax - offset, blocksize=256)
        state = QuantState(absmax=qabsmax, offset=offset, state2=state2, **kw)
    else:
        state = QuantState(absmax=absmax, **kw)
    if param.module is not None:
        param.module.quant_state = state
    return bnb.nn.Params4bit(codes, requires_grad=False, quant_state=state, blocksize=param.blocksize,
                             compress_statistics=param.compress_statistics, quant_type=param.quant_type,
                             quant_storage=param.quant_storage, module=param.module, bnb_quantized=True)


def compile_network(net: nn.Module) -> None:
    """``torch.compile`` the LLM forward and every flow-head block in place (``--compile``:
    :meth:`~showo2_cli.modeling.showo2.Showo2Model.compile`, the modules keeping their names and
    weights; the first call of each shape compiles); a flow head loaded later is compiled alike."""
    net.compile(**compile_options(net.attn, net.image_embedder_gen.proj.weight.device))


def compile_options(attn: str, device) -> dict:
    """``torch.compile``'s arguments for a network running ``attn`` on ``device``: with flex
    attention on the CPU the compile is for static shapes, as
    :func:`~showo2_cli.modeling.attention._flex`'s own (the outer compile traces flex attention
    itself, and torch's CPU flex template does not build with the dynamic shapes a second shape
    would bring: ``--attn flex --compile`` ended in a C++ compile error)."""
    return {"dynamic": False} if attn == "flex" and torch.device(device).type == "cpu" else {}


def weight_bytes(module: nn.Module) -> int:
    """Bytes the module's parameters and buffers hold (a quantized weight counts its int8 or 4-bit
    data and scales; a tensor shared by two names counts once)."""
    seen, total = set(), 0
    for t in list(module.parameters()) + list(module.buffers()):
        parts = [getattr(t, n) for n in getattr(t, "tensor_data_names", ())] or [t]
        state = getattr(t, "quant_state", None)  # bitsandbytes 4-bit: block scales (and their scales)
        if state is not None:
            parts += [v for v in state.as_dict(packed=False).values() if isinstance(v, torch.Tensor)]
        for p in parts:
            key = (p.untyped_storage().data_ptr(), p.storage_offset(), tuple(p.shape))
            if key not in seen:
                seen.add(key)
                total += p.numel() * p.element_size()
    return total
