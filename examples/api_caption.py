"""Questions about an image or a video from Python, streaming the answer.

    python examples/api_caption.py --model demo picture.png "What color is the shape?"
"""

import argparse
import sys

from showo2_cli import load
from showo2_cli.pipelines import CaptionOptions, caption

parser = argparse.ArgumentParser()
parser.add_argument("media")
parser.add_argument("questions", nargs="*")
parser.add_argument("--model", default="demo")
parser.add_argument("--max-new-tokens", type=int, default=64)
args = parser.parse_args()

model = load(args.model)
result = caption(model, args.media, CaptionOptions(questions=args.questions, max_new_tokens=args.max_new_tokens),
                 on_text=lambda i, piece: sys.stdout.write(piece))
print()
for q, a in zip(result.questions, result.answers, strict=True):
    print(f"Q: {q}\nA: {a}")
