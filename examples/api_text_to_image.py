"""Text to image from Python.

    python examples/api_text_to_image.py --model demo "a red circle on a white background" out.png
"""

import argparse

from showo2_cli import load
from showo2_cli.media import write_image
from showo2_cli.pipelines import GenerateOptions, text_to_image

parser = argparse.ArgumentParser()
parser.add_argument("prompt")
parser.add_argument("output")
parser.add_argument("--model", default="demo")
parser.add_argument("--steps", type=int, default=None)
parser.add_argument("--seed", type=int, default=0)
args = parser.parse_args()

model = load(args.model)
(image,) = text_to_image(model, [args.prompt], GenerateOptions(steps=args.steps, seed=args.seed))
write_image(args.output, image.frames[0], metadata=image.params, overwrite=True)
print(args.output, image.params)
