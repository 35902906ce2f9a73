"""What structured output costs a token on the CPU (probe FK).

    python benchmarks/bench_structured.py [--vocab 151665] [--tokens 200]

Two measurements, interleaved, one thread:

1. ``GrammarConstraint`` alone (the mask of the next tokens filled and applied to the scores) over a
   byte-level BPE vocabulary of ``--vocab`` tokens made up here (Qwen2.5's has 151,665 with
   Show-o2's; the vocabulary's shape, not its words, sets xgrammar's cost), fed the tokens of a
   valid answer one at a time; with the one-off costs (the tokenizer's info and compiler, the
   schema's compilation).
2. The demo model's answers with and without a schema (seconds a token, the same prompt).

Seconds are only comparable side by side on an idle machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

SCHEMA = {"type": "object", "properties": {
    "name": {"type": "string", "maxLength": 40}, "age": {"type": "integer", "minimum": 0, "maximum": 150},
    "tags": {"type": "array", "items": {"enum": ["red", "green", "blue"]}, "maxItems": 8},
    "box": {"type": "object", "properties": {"w": {"type": "number"}, "ok": {"type": "boolean"}},
            "required": ["w", "ok"]}}, "required": ["name", "age", "tags", "box"]}
ANSWER = {"name": "a small red circle on black", "age": 42, "tags": ["red", "blue", "green"],
          "box": {"w": 1.5, "ok": True}}


def big_tokenizer(size: int):
    """A byte-level BPE tokenizer of ``size`` tokens: the 256 byte symbols, then made-up words."""
    import random

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    byte_symbols = list(pre_tokenizers.ByteLevel.alphabet())
    vocab = {s: i for i, s in enumerate(sorted(byte_symbols))}
    rng, letters = random.Random(0), "abcdefghijklmnopqrstuvwxyzĠ{}\":,0123456789"
    while len(vocab) < size - 1:
        vocab.setdefault("".join(rng.choice(letters) for _ in range(rng.randint(2, 9))), len(vocab))
    vocab["<|im_end|>"] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>")


def constraint_per_token(tokenizer, rounds: int) -> dict:
    import torch

    from showo2_cli import structured

    stop = (tokenizer.convert_tokens_to_ids("<|im_end|>"),)
    width = len(tokenizer)
    t = time.perf_counter()
    structured._compiler(tokenizer, width, stop)
    setup = time.perf_counter() - t
    ids = tokenizer.encode(json.dumps(ANSWER), add_special_tokens=False) + list(stop)
    per_token, compile_s = [], []
    for _ in range(rounds):
        t = time.perf_counter()
        c = structured.constraint_for(tokenizer, _Sampling(SCHEMA, stop))
        scores = torch.randn(1, width)
        c(torch.tensor([[]], dtype=torch.long), scores)  # compiles (cached after the first round)
        compile_s.append(time.perf_counter() - t)
        t = time.perf_counter()
        for n in range(1, len(ids)):
            out = c(torch.tensor([ids[:n]]), scores)
            assert torch.isfinite(out[0, ids[n]]), "the answer's next token was masked"
        per_token.append((time.perf_counter() - t) / (len(ids) - 1))
    return {"vocab": width, "answer_tokens": len(ids), "tokenizer_setup_s": round(setup, 3),
            "first_compile_s": round(compile_s[0], 4), "later_compile_s": round(statistics.median(compile_s[1:]), 4),
            "per_token_ms": round(1e3 * statistics.median(per_token), 3)}


class _Sampling:
    def __init__(self, schema, stop):
        self.json_schema, self.strict_schema, self.stop_ids = schema, True, stop


def demo_answers(rounds: int, tokens: int) -> dict:
    from showo2_cli.chat import Conversation
    from showo2_cli.loading import load
    from showo2_cli.options import TextSampling

    model = load("demo")
    out = {"free": [], "schema": []}
    for _ in range(rounds):  # interleaved
        for key, schema in (("free", None), ("schema", SCHEMA)):
            conv = Conversation(model)
            t = time.perf_counter()
            conv.ask("Describe a person.", TextSampling(tokens, json_schema=schema))
            out[key].append((time.perf_counter() - t) / max(conv.turns[-1].generated_tokens, 1))
    return {f"demo_{k}_ms_per_token": round(1e3 * statistics.median(v), 3) for k, v in out.items()}


def main() -> None:
    import torch

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--vocab", type=int, default=151_665)
    p.add_argument("--tokens", type=int, default=200)
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    torch.set_num_threads(1)
    print(json.dumps(constraint_per_token(big_tokenizer(args.vocab), args.rounds)))
    print(json.dumps(demo_answers(args.rounds, args.tokens)))


if __name__ == "__main__":
    main()
