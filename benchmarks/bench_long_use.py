"""Long use in one process: a chat past its context, hundreds of captions and small t2i calls,
``/save`` and ``/load`` over and over, pipelines made and dropped, and a real server on 127.0.0.1.

After each ``--every`` calls (default 100) it records the process's RSS, open file descriptors,
threads, the files in its own temporary folder, the KV caches alive (``DynamicCache`` objects the
garbage collector can see) and, for the chat, the prompt's length (what one answer's KV cache
holds: nothing is cached between turns). Each must level off over the run. It also checks the
last identical seeded request against the first (a sampled caption, a t2i image, a server chat
answer): determinism over time, reported as ``same`` true or false, never as pass/fail timing.

    python benchmarks/bench_long_use.py                     # every part, 300 calls each, demo model
    python benchmarks/bench_long_use.py --parts chat,serve --calls 500 --results out.json

One thread (``OMP_NUM_THREADS=1``); figures on a shared host are noisy, read them as a trend.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_serve import free_port, scene_image  # noqa: E402

PARTS = ("chat", "saveload", "cli", "caption", "t2i", "pipelines", "serve")


def sample(pid: str = "self", tmp: str | None = None) -> dict:
    """RSS (MB), open fds, threads of process ``pid`` and the files under ``tmp``."""
    with open(f"/proc/{pid}/status") as f:
        fields = dict(line.split(":", 1) for line in f if ":" in line)
    out = {"rss_mb": round(int(fields["VmRSS"].split()[0]) / 1024, 1),
           "fds": len(os.listdir(f"/proc/{pid}/fd")), "threads": int(fields["Threads"])}
    if tmp is not None:
        out["tmp_files"] = sum(len(files) + len(dirs) for _, dirs, files in os.walk(tmp))
    return out


def live_caches() -> int:
    from transformers import DynamicCache

    gc.collect()
    with warnings.catch_warnings():  # (isinstance on torch's deprecated module attributes warns)
        warnings.simplefilter("ignore")
        return sum(isinstance(o, DynamicCache) for o in gc.get_objects())


def image_files(folder: Path, count: int) -> list[str]:
    """``count`` shapes-world PNGs written to ``folder``."""
    import base64

    paths = []
    for i in range(count):
        _, url = scene_image(i)
        path = folder / f"scene-{i}.png"
        path.write_bytes(base64.b64decode(url.split(",", 1)[1]))
        paths.append(str(path))
    return paths


def part_chat(model, images, calls, every, tmp) -> dict:
    """One Conversation of ``calls`` turns, an image every fifth, with a context it outgrows."""
    from showo2_cli.chat import Conversation
    from showo2_cli.pipelines import CaptionOptions

    conv = Conversation(model, options=CaptionOptions(max_new_tokens=16), max_context=400)
    rows = []
    for i in range(1, calls + 1):
        if i % 5 == 1:
            conv.attach(images[i % len(images)])
        conv.ask(f"Question {i}: what color is the shape?")
        if i % every == 0:
            held = sum(m.tokens.numel() * m.tokens.element_size() for t in conv.turns for m in t.media
                       if not m.released)
            rows.append({"calls": i, **sample(tmp=tmp), "kv_caches_alive": live_caches(),
                         "prompt_tokens": conv.turns[-1].prompt_tokens, "media_bytes_held": held,
                         "turns_in_context": len(conv.context_turns), "notices": len(conv.notices)})
    return {"rows": rows}


def part_saveload(model, images, calls, every, tmp) -> dict:
    """``/save`` then ``/load`` of the same chat ``calls`` times, a turn asked between each."""
    from showo2_cli.chat import Conversation
    from showo2_cli.pipelines import CaptionOptions

    conv = Conversation(model, options=CaptionOptions(max_new_tokens=16), max_context=400)
    for i in range(12):
        if i % 3 == 0:
            conv.attach(images[i % len(images)])
        conv.ask(f"Question {i}: what shape is it?")
    folder = Path(tempfile.mkdtemp(dir=tmp))
    path = folder / "chat.json"
    rows, first = [], None
    for i in range(1, calls + 1):
        conv.save(path, overwrite=True)
        conv.load(path)
        answer = conv.ask("What color is it?")
        conv.turns.pop()  # the chat stays the same size: each round repeats the first
        first = answer if first is None else first
        if i % every == 0:
            rows.append({"calls": i, **sample(tmp=tmp), "kv_caches_alive": live_caches(),
                         "turns": len(conv.turns), "same_answer_as_first": answer == first})
    return {"rows": rows}


def part_caption(model, images, calls, every, tmp) -> dict:
    from showo2_cli import api
    from showo2_cli.pipelines import CaptionOptions

    seeded = CaptionOptions(questions=["Describe the image."], temperature=1.0, seed=7, max_new_tokens=24)
    rows, first, same = [], None, None
    for i in range(1, calls + 1):
        answer = api.caption(model, images[0], seeded).answers[0]
        api.caption(model, images[i % len(images)], CaptionOptions(max_new_tokens=12))
        first = answer if first is None else first
        same = answer == first
        if i % every == 0:
            rows.append({"calls": i, **sample(tmp=tmp), "kv_caches_alive": live_caches(), "same_as_first": same})
    return {"rows": rows, "seeded_answer": first}


def part_t2i(pipe, calls, every, tmp) -> dict:
    import torch

    rows, first, same = [], None, None
    for i in range(1, calls + 1):
        image = pipe("a red circle", num_inference_steps=2, generator=torch.Generator().manual_seed(3)).images[0]
        pipe(f"shape {i}", num_inference_steps=2, num_images_per_prompt=1 + i % 2)
        data = image.tobytes()
        first = data if first is None else first
        same = data == first
        if i % every == 0:
            rows.append({"calls": i, **sample(tmp=tmp), "same_as_first": same})
    return {"rows": rows}


def part_pipelines(calls, every, tmp) -> dict:
    from showo2_cli import Showo2Pipeline

    rows = []
    for i in range(1, calls + 1):
        pipe = Showo2Pipeline.from_pretrained("demo")
        pipe.caption(_blank(), "What?", max_new_tokens=4)
        del pipe
        if i % every == 0:
            gc.collect()
            rows.append({"calls": i, **sample(tmp=tmp)})
    return {"rows": rows}


def _blank():
    from PIL import Image

    return Image.new("RGB", (64, 64), (200, 30, 30))


def part_serve(images_b64, calls, every, tmp) -> dict:
    import httpx

    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": tmp}
    proc = subprocess.Popen([sys.executable, "-m", "showo2_cli.cli", "serve", "--model", "demo", "--port", str(port),
                             "--quiet"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    rows, first, same = [], None, None
    try:
        with httpx.Client(timeout=120) as client:
            deadline = time.monotonic() + 120
            while True:
                try:
                    if client.get(f"{url}/health").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"the server did not start: {proc.stderr.read()}")
                time.sleep(0.3)
            history, codes = [], {}

            def count(r) -> None:
                codes[r.status_code] = codes.get(r.status_code, 0) + 1
            for i in range(1, calls + 1):
                seeded = {"model": "demo", "max_tokens": 16, "temperature": 1.0, "seed": 11, "messages": [
                    {"role": "user", "content": [{"type": "text", "text": "What is it?"},
                                                 {"type": "image_url", "image_url": {"url": images_b64[0]}}]}]}
                r = client.post(f"{url}/v1/chat/completions", json=seeded)
                count(r)
                answer = r.json()["choices"][0]["message"]["content"]
                first = answer if first is None else first
                same = answer == first
                if i % 10 == 0:  # a conversation of long text turns, streamed, until the server's context
                    # refuses it (400 context_length_exceeded); then its oldest half goes, as clients trim
                    history.append({"role": "user", "content": f"Turn {i}: " + "and now? " * 120})
                    with client.stream("POST", f"{url}/v1/chat/completions", json={
                            "model": "demo", "max_tokens": 8, "stream": True, "messages": history}) as r:
                        count(r)
                        for _ in r.iter_lines():
                            pass
                    if r.status_code == 400:
                        history = history[len(history) // 2 // 2 * 2:]
                    history.append({"role": "assistant", "content": "a shape"})
                count(client.post(f"{url}/v1/images/generations",
                                  json={"model": "demo", "prompt": f"shape {i}", "size": "64x64", "steps": 2}))
                if i % every == 0:
                    rows.append({"calls": i, **sample(str(proc.pid), tmp), "same_as_first": same,
                                 "status_codes": dict(codes)})
    finally:
        proc.terminate()
        proc.wait(30)
    return {"rows": rows, "seeded_answer": first}


def part_cli(images, calls, every, tmp) -> dict:
    """``showo2 chat`` fed a question, then ``/save`` and ``/load`` of its transcript, ``calls`` times
    (an image every fifth), past its ``--max-context``; sampled from ``/proc`` after each ``every``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": tmp}
    transcript = Path(tempfile.mkdtemp(dir=tmp)) / "chat.json"
    proc = subprocess.Popen([sys.executable, "-m", "showo2_cli.cli", "chat", "--model", "demo", "--max-context", "400",
                             "--max-new-tokens", "8", "--quiet"], env=env, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1)
    rows, block = [], time.perf_counter()
    try:
        for i in range(1, calls + 1):
            if i % 5 == 1:
                proc.stdin.write(f"/image {images[i % len(images)]}\n")
            proc.stdin.write(f"Question {i}: what color is it?\n/save {transcript} --overwrite\n/load {transcript}\n")
            proc.stdin.flush()
            if not proc.stdout.readline():  # the answer's line: the question was answered
                raise SystemExit("the chat ended early")
            if i % every == 0:
                rows.append({"calls": i, **sample(str(proc.pid), tmp),
                             "transcript_kb": round(transcript.stat().st_size / 1024, 1),
                             "seconds": round(time.perf_counter() - block, 1)})  # (a shared host: a trend at most)
                block = time.perf_counter()
    finally:
        proc.stdin.close()
        proc.wait(60)
    return {"rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, of {', '.join(PARTS)}")
    parser.add_argument("--calls", type=int, default=300, help="calls per part")
    parser.add_argument("--every", type=int, default=100, help="calls between two samples")
    parser.add_argument("--results", help="write the figures here as JSON")
    args = parser.parse_args()
    parts = [p for p in args.parts.split(",") if p]
    for p in parts:
        if p not in PARTS:
            parser.error(f"unknown part {p!r}: choose from {', '.join(PARTS)}")

    import torch

    torch.set_num_threads(1)
    from showo2_cli import Showo2Pipeline

    with tempfile.TemporaryDirectory(prefix="showo2-long-") as tmp:
        os.environ["TMPDIR"] = tmp  # the files this process (and its server) leaves are counted here
        tempfile.tempdir = None
        work = Path(tmp) / "inputs"
        work.mkdir()
        images = image_files(work, 8)
        pipe = Showo2Pipeline.from_pretrained("demo")
        pipe.set_progress_bar_config(disable=True)
        model = pipe.model
        scratch = Path(tmp) / "run"
        scratch.mkdir()
        out = {"host": platform.node(), "python": platform.python_version(), "calls": args.calls,
               "start": sample(tmp=str(scratch))}
        for p in parts:
            t = time.perf_counter()
            if p == "chat":
                res = part_chat(model, images, args.calls, args.every, str(scratch))
            elif p == "saveload":
                res = part_saveload(model, images, args.calls, args.every, str(scratch))
            elif p == "cli":
                res = part_cli(images, args.calls, args.every, str(scratch))
            elif p == "caption":
                res = part_caption(model, images, args.calls, args.every, str(scratch))
            elif p == "t2i":
                res = part_t2i(pipe, args.calls, args.every, str(scratch))
            elif p == "pipelines":
                res = part_pipelines(max(args.calls // 10, 1), max(args.every // 10, 1), str(scratch))
            else:
                res = part_serve([scene_image(i)[1] for i in range(2)], args.calls, args.every, str(scratch))
            res["seconds"] = round(time.perf_counter() - t, 1)
            out[p] = res
            print(json.dumps({p: res}), flush=True)
    if args.results:
        Path(args.results).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
