"""Text to video and image to video from Python (needs a video-capable model such as the demo).

    python examples/api_video.py --model demo "a blue square moving left on a black background" out.mp4 [--image first.png]
"""

import argparse

from showo2_cli import load
from showo2_cli.media import write_video
from showo2_cli.pipelines import GenerateOptions, image_to_video, text_to_video

parser = argparse.ArgumentParser()
parser.add_argument("prompt")
parser.add_argument("output")
parser.add_argument("--model", default="demo")
parser.add_argument("--image", default=None)
parser.add_argument("--frames", type=int, default=17)
parser.add_argument("--steps", type=int, default=None)
parser.add_argument("--seed", type=int, default=0)
args = parser.parse_args()

model = load(args.model)
opts = GenerateOptions(steps=args.steps, seed=args.seed, frames=args.frames)
if args.image:
    (video,) = image_to_video(model, args.image, [args.prompt], opts)
else:
    (video,) = text_to_video(model, [args.prompt], opts)
write_video(args.output, video.frames, fps=8, metadata=video.params, overwrite=True)
print(args.output, video.frames.shape)
