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
started = set()


def stream(i: int, piece: str) -> None:
    """Answer i's text as it comes, each answer on its own line."""
    if i not in started:
        sys.stdout.write("\n" if started else "")
        started.add(i)
    sys.stdout.write(piece)


result = caption(model, args.media, CaptionOptions(questions=args.questions, max_new_tokens=args.max_new_tokens),
                 on_text=stream)
print()
for q, a in zip(result.questions, result.answers, strict=True):
    print(f"Q: {q}\nA: {a}")
