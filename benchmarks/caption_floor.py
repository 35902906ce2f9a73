"""How far the caption decoder is from its floor: one KV-cached decode step of the LLM against the
same matrix products run bare, and the prompt forward, on the mid-size geometry of
``bench_official.py`` (Qwen2.5-shaped LLM, 8 layers x 896, vocabulary 32768, a 785-position prompt).

    python benchmarks/caption_floor.py --out benchmarks/results/caption-floor.json

* ``decode_ms``: ``Showo2Model.llm`` + ``logits`` for one new token after the prompt (what
  ``text_decoding.generate`` runs per token);
* ``lean_ms``: the same step calling the transformers decoder layers directly (no ``Qwen2Model``
  wrapper: no mask building), so ``decode - lean`` is the wrapper's share;
* ``bare_ms``: only the step's weight products (q, k, v, o, gate, up, down per layer, the language
  head) with ``F.linear``: the floor set by reading every weight once (``weights_mb``);
* ``head_ms``: the language head alone; ``prefill_s``: the 785-position prompt forward;
  ``prefill_last_only_s``: the same forward as ``generate`` runs it (``llm(last_only=True)``: the last
  layer's attention and MLP for the last position only, every key/value still cached).

CPU seconds (``time.process_time``) of one thread; medians after warm-up steps.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

PROMPT = 785  # system prompt + 729 image tokens + time slot + question, as bench_official.py's caption


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=24)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from transformers import DynamicCache

    from showo2_cli.loading import build_network
    from showo2_cli.specs import get_spec

    spec = get_spec("1.5B").replace(hidden_size=896, num_layers=8, num_heads=14, num_kv_heads=2, head_dim=64,
                                    intermediate_size=4864, vocab_size=32768, semantic_layers=1, head_layers=1)
    spec.validate()
    net = build_network(spec, None, torch.float32).eval()
    llm = net.showo.model
    x = torch.randn(1, PROMPT, spec.hidden_size, generator=torch.Generator().manual_seed(0)) * 0.02
    clock = time.process_time

    def lean(h, pos, cache):
        pe = llm.rotary_emb(h, pos)
        for layer in llm.layers:
            h = layer(h, attention_mask=None, position_embeddings=pe, position_ids=pos, cache=cache, use_cache=True)
        return llm.norm(h)

    with torch.no_grad():
        prefill, prefill_cut = [], []
        for _ in range(2):  # interleaved, so both see the same machine
            t0 = clock()
            _, c1 = net.llm(x, None, use_cache=True, past_key_values=DynamicCache())
            prefill.append(clock() - t0)
            t0 = clock()
            net.llm(x, None, use_cache=True, past_key_values=DynamicCache(), last_only=True)
            prefill_cut.append(clock() - t0)
        _, c2 = net.llm(x, None, use_cache=True, past_key_values=DynamicCache())
        decode, leaned, bare, head = [], [], [], []
        v = torch.randn(1, spec.hidden_size)
        for s in range(args.steps):
            pos = torch.tensor([[PROMPT + s]])
            e = llm.embed_tokens(torch.tensor([[5 + s]]))
            t0 = clock()
            ha, _ = net.llm(e, None, position_ids=pos, past_key_values=c1, use_cache=True)
            la = net.logits(ha[:, -1])
            decode.append(clock() - t0)
            t0 = clock()
            lb = net.logits(lean(e, pos, c2)[:, -1])
            leaned.append(clock() - t0)
            if not torch.equal(la, lb):
                raise SystemExit("the lean step differs from the library's: the comparison is void")
            t0 = clock()
            for layer in llm.layers:
                a, m = layer.self_attn, layer.mlp
                q = F.linear(v, a.q_proj.weight, a.q_proj.bias)
                F.linear(v, a.k_proj.weight, a.k_proj.bias), F.linear(v, a.v_proj.weight, a.v_proj.bias)
                o = F.linear(q, a.o_proj.weight)
                F.linear(F.silu(F.linear(o, m.gate_proj.weight)) * F.linear(o, m.up_proj.weight), m.down_proj.weight)
            bare.append(clock() - t0)
            t0 = clock()
            F.linear(v, net.showo.lm_head.weight)
            head.append(clock() - t0)
            bare[-1] += head[-1]
    warm = min(4, args.steps - 1)
    med = lambda xs: 1000 * statistics.median(xs[warm:])  # noqa: E731
    weights = sum(p.numel() for n, p in llm.layers.named_parameters() if p.dim() == 2) + net.showo.lm_head.weight.numel()
    result = {"prompt": PROMPT, "threads": args.threads, "decode_ms": med(decode), "lean_ms": med(leaned),
              "bare_ms": med(bare), "head_ms": med(head), "prefill_s": min(prefill),
              "prefill_last_only_s": min(prefill_cut), "weights_mb": weights * 4 / 1e6}
    result["decode_over_bare"] = result["decode_ms"] / result["bare_ms"]
    print(json.dumps(result, indent=1))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
