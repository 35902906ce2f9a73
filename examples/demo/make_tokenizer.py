"""Build the demo's tokenizer: a small byte-level BPE over the shapes world's language.

    python examples/demo/make_tokenizer.py            # writes examples/demo/tokenizer/

Deterministic (fixed seed, fixed corpus). The Qwen2.5 special tokens follow the learned
vocabulary, and Show-o2's additions ([PAD], <image>, <|vid_start|>, <|vid_end|>) are added when
the model loads, exactly as for the real tokenizer.
"""

import argparse
from pathlib import Path

import numpy as np

from showo2_cli.sequences import ASSISTANT_PREFIX, SYSTEM_PROMPT, USER_PREFIX
from showo2_cli.tokenizer import add_showo2_tokens, train_bpe_tokenizer
from showo2_cli.training import shapes as S

argparse.ArgumentParser(description=__doc__.split("\n\n")[0]).parse_args()  # --help: usage, nothing written
rng = np.random.default_rng(0)
texts = []
for i in range(4000):
    scene = S.random_scene(rng, video=bool(i % 2))
    texts.append(S.caption(scene))
    texts += [f"{q} {a}" for q, a in S.qa_pairs(scene)]
texts += [SYSTEM_PROMPT.replace("<|im_end|>", ""), USER_PREFIX.replace("<|im_start|>", ""),
          ASSISTANT_PREFIX.replace("<|im_start|>", "")] * 50
tokenizer = train_bpe_tokenizer(texts, vocab_size=400)
out = Path(__file__).resolve().parent / "tokenizer"
tokenizer.save_pretrained(str(out))
tokens = add_showo2_tokens(tokenizer)
print(out, len(tokenizer), tokens)
