"""Concurrent chat clients against ``showo2 serve --parallel``: throughput and each request's latency.

Starts a server on 127.0.0.1 for each ``--parallel`` value (default 1, as served before, and 8),
in turn for ``--rounds`` rounds (interleaved, so both see the same machine), and sends 8 chat
completions of different prompt lengths and ``max_tokens`` (half greedy, half sampled with a seed)
all at once (``--full-length``: the end token banned by ``logit_bias``, so every answer is
``max_tokens`` long, 16 to 72 tokens). Each request is first sent alone (its reference answer); under load every answer is
compared with it (equal, or where a token differs: batched kernels round differently). Models:
``demo`` (the bundled one) and ``1.5B-2`` (the 1.5B spec at 2 LLM layers, random weights, the
demo's tokenizer and VAE: a real-width step, its 151k-word head included).

    python benchmarks/bench_serve_parallel.py --model demo --parallel 1 8 --rounds 2
    python benchmarks/bench_serve_parallel.py --model 1.5B-2 --parallel 1 8 --results out.json
    python benchmarks/bench_serve_parallel.py --model demo --agreement 64   # tokens equal to alone?

``--stall``: the running answers while long prompts arrive (chunked prefill, ``--max-num-batched-tokens``):
for each ``--budgets`` value in turn (0: a prompt runs whole, as before), interleaved over ``--rounds``,
``--streams`` streamed answers are decoding when a 4,000-token text question and then a video
question (``--video``) arrive; measured: the streams' gaps between two streamed pieces (worst and p95,
all of them and those while the long prompts run) and each long request's time to its first piece.

    python benchmarks/bench_serve_parallel.py --stall --model demo --budgets 0 512 --rounds 2

``--image-stall``: an image generation (``/v1/images/generations``, ``--image-steps`` steps, seed 7) beside
the answers, for each ``--budgets`` value in turn (0: the image's sampling runs whole, as before),
interleaved over ``--rounds``: the image alone (its latency and pixels); the image sent while ``--streams``
streamed answers are decoding (the streams' gaps during it, its latency, its pixels equal to alone?); and
a short streamed chat sent 0.3 s after an image (its time to first piece, the image's latency).

    python benchmarks/bench_serve_parallel.py --image-stall --model demo --budgets 0 512 --rounds 2

``--image-queue``: ``--parallel`` (the largest value) image requests sent at once (their seeds 7, 8, ...),
then a short streamed chat 0.3 s later: the chat's time to its first piece and its end, each image's
latency and the order they end in, their pixels equal to each alone? For each ``--budgets`` value,
interleaved over ``--rounds``; ``--sources A B``: each round runs once per source tree (its ``src``
folder first on PYTHONPATH, in a process of its own), interleaved, to compare two versions of the server.

    python benchmarks/bench_serve_parallel.py --image-queue --model demo --parallel 3 --budgets 512 --rounds 3 \
        --sources old/src src

``--agreement N``: no server; N greedy and N seeded answers (max 48 tokens), each decoded alone
and then in groups of 8 in one decoding batch, counted: answers whose tokens all equal their
answer alone, and the first differing step of the others.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import contextlib
import json
import os
import platform
import statistics
import sys
import threading
import time

QUESTIONS = ["Hi", "What is a red circle?", "Name a shape.", "Describe a blue square in a few words please.",
             "Tell me about shapes and colors and sizes, and how they are drawn on a plain background.",
             "Green?", "What color is the sky on a clear day, and why is it that color?",
             "Count to five, then name five colors, then five shapes, one a line, in order please."]


def body(i: int, end_id: int | None = None) -> dict:
    b = {"messages": [{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)] * (1 + i // 3)}],
         "max_tokens": 16 + 8 * i}
    if end_id is not None:  # --full-length: the end token banned, every answer max_tokens long
        b["logit_bias"] = {str(end_id): -100}
    if i % 2:
        b.update(temperature=0.9, seed=100 + i)
    return b


def build(name: str):
    import torch

    from showo2_cli.loading import Showo2, load

    demo = load("demo")
    if name == "demo":
        return demo
    from showo2_cli.modeling.showo2 import Showo2Model
    from showo2_cli.specs import REGISTRY

    layers = int(name.split("-")[1])
    spec = REGISTRY["1.5B"].replace(num_layers=layers, semantic_layers=1, head_layers=1)
    torch.manual_seed(0)
    net = Showo2Model(spec).eval()
    net.init_weights(seed=0)
    return Showo2(spec, net, demo.tokenizer, demo.tokens, demo.vae, demo.files)


def start(model, parallel: int, budget: int = 512):
    import uvicorn  # noqa: F401

    from showo2_cli.serve import ServerConfig, bind_socket
    from showo2_cli.serve.app import server_for

    sock = bind_socket("127.0.0.1", 0)
    srv = server_for(model, ServerConfig(parallel=parallel, max_tokens=4096,
                                                            max_num_batched_tokens=budget), sock, log_level="error")
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    host, port = sock.getsockname()[:2]
    url = f"http://{host}:{port}"
    import httpx

    for _ in range(600):
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.1)
    return srv, thread, sock, url


def ask(url: str, i: int, end_id: int | None = None) -> dict:
    import httpx

    t = time.perf_counter()
    r = httpx.post(url + "/v1/chat/completions", json=body(i, end_id), timeout=600)
    r.raise_for_status()
    j = r.json()
    return {"answer": j["choices"][0]["message"]["content"], "tokens": j["usage"]["completion_tokens"],
            "seconds": time.perf_counter() - t}


def one_round(model, parallel: int, n: int, end_id: int | None = None) -> dict:
    srv, thread, sock, url = start(model, parallel)
    try:
        ask(url, 0, end_id)  # warm-up
        alone = [ask(url, i, end_id) for i in range(n)]
        t0 = time.perf_counter()
        with cf.ThreadPoolExecutor(n) as ex:
            together = list(ex.map(lambda i: ask(url, i, end_id), range(n)))
        wall = time.perf_counter() - t0
    finally:
        srv.should_exit = True
        thread.join(60)
        sock.close()
    tokens = sum(r["tokens"] for r in together)
    lat = [r["seconds"] for r in together]
    return {"parallel": parallel, "wall_s": round(wall, 3), "tokens": tokens, "tokens_per_s": round(tokens / wall, 2),
            "latency_s": [round(x, 3) for x in lat], "latency_mean_s": round(statistics.mean(lat), 3),
            "latency_max_s": round(max(lat), 3), "alone_tokens_per_s": round(
                sum(r["tokens"] for r in alone) / sum(r["seconds"] for r in alone), 2),
            "same_as_alone": sum(a["answer"] == b["answer"] for a, b in zip(alone, together, strict=True)),
            "different": [[a["answer"], b["answer"]] for a, b in zip(alone, together, strict=True) if a["answer"] != b["answer"]][:4]}


def stream(url: str, body: dict, times: list, started: threading.Event | None = None) -> None:
    """POST a streamed chat request: ``times`` gets the moment of each piece of text (and ``started`` set at the first)."""
    import httpx

    with httpx.stream("POST", url + "/v1/chat/completions", json={**body, "stream": True}, timeout=600) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            choice = json.loads(line[6:])["choices"][0]
            if choice["delta"].get("content"):
                times.append(time.perf_counter())
                if started is not None:
                    started.set()


def visible(model) -> dict:
    """A ``logit_bias`` that makes each step a piece of text (" a" pushed up, the end banned: a model of
    random weights draws ids the demo's tokenizer has no text for); a step's work is the same whatever it draws."""
    a = model.require_tokenizer()(" a", add_special_tokens=False)["input_ids"][0]
    return {str(a): 50, str(model.tokens.end): -100}


def long_bodies(model, video: str | None) -> list[tuple[str, dict]]:
    """The long requests: a text of about 4,000 tokens and (``video``: a file) a question about a video."""
    import base64

    words = " ".join(QUESTIONS)
    tok = model.require_tokenizer()
    per = len(tok(words)["input_ids"])
    text = " ".join([words] * (4000 // per))
    out = [("text-4k", {"messages": [{"role": "user", "content": text + " Summarize."}], "max_tokens": 4,
                        "logit_bias": visible(model)})]
    if video:
        with open(video, "rb") as f:
            url = "data:video/mp4;base64," + base64.b64encode(f.read()).decode()
        out.append(("video", {"messages": [{"role": "user", "content": [
            {"type": "video_url", "video_url": {"url": url}}, {"type": "text", "text": "What happens?"}]}],
            "max_tokens": 4, "logit_bias": visible(model)}))
    return out


def gaps_of(times: list[float], start: float | None = None, end: float | None = None) -> list[float]:
    return [b - a for a, b in zip(times, times[1:], strict=False)
            if start is None or (b >= start and a <= end)]


@contextlib.contextmanager
def streams_decoding(model, url: str, streams: int, tokens: int):
    """``streams`` streamed answers of ``tokens`` tokens decoding, in their stride: yields their
    pieces' moments (a list each) and their futures; on exit, waits for them to end."""
    end_id = model.tokens.end
    times = [[] for _ in range(streams)]
    firsts = [threading.Event() for _ in range(streams)]
    bodies = [{**body(i, end_id), "max_tokens": tokens, "logit_bias": visible(model)} for i in range(streams)]
    with cf.ThreadPoolExecutor(streams) as ex:
        futures = [ex.submit(stream, url, b, t, f) for b, t, f in zip(bodies, times, firsts, strict=True)]
        while not all(f.is_set() for f in firsts):  # every stream under way (or its error raised)
            for f in futures:
                if f.done():
                    f.result()
                    raise RuntimeError("a stream ended before its first piece: make --tokens longer")
            time.sleep(0.01)
        time.sleep(0.5)  # the streams in their stride
        yield times, futures
        for f in futures:
            f.result()


def stop(srv, thread, sock) -> None:
    srv.should_exit = True
    thread.join(60)
    sock.close()


def stall_round(model, parallel: int, budget: int, streams: int, tokens: int, video: str | None) -> dict:
    srv, thread, sock, url = start(model, parallel, budget)
    end_id = model.tokens.end
    try:
        ask(url, 0, end_id)  # warm-up
        longs = long_bodies(model, video)
        for _, b in longs:  # warm-up (the video's decoding, the long text's shapes)
            stream(url, b, [])
        with streams_decoding(model, url, streams, tokens) as (times, _):
            window0 = time.perf_counter()
            ttft, spans = {}, {}
            for name, b in longs:
                t0, got, first = time.perf_counter(), [], threading.Event()
                stream(url, b, got, first)
                ttft[name] = round(got[0] - t0, 3) if got else None
                spans[name] = (t0, time.perf_counter())
            window1 = time.perf_counter()
    finally:
        stop(srv, thread, sock)
    every = [g for t in times for g in gaps_of(t)]
    during = [g for t in times for g in gaps_of(t, window0, window1)]

    def p95(xs):
        return round(statistics.quantiles(xs, n=20)[-1], 3) if len(xs) > 1 else None

    return {"parallel": parallel, "budget": budget, "streams": streams, "pieces": sum(map(len, times)),
            "worst_gap_s": round(max(every), 3), "p95_gap_s": p95(every), "median_gap_s": round(statistics.median(every), 3),
            "worst_gap_during_long_s": round(max(during), 3) if during else None, "p95_gap_during_long_s": p95(during),
            "worst_gap_during_s": {name: round(max((g for t in times for g in gaps_of(t, *span)), default=0), 3)
                                   for name, span in spans.items()},
            "long_ttft_s": ttft, "long_window_s": round(window1 - window0, 3)}


def image(url: str, steps: int, out: dict, seed: int = 7) -> None:
    """POST an image request: ``out`` gets its latency, the moment it ended and its first image's base64."""
    import httpx

    t = time.perf_counter()
    r = httpx.post(url + "/v1/images/generations", json={"prompt": "a red circle on a blue square", "steps": steps,
                                                         "seed": seed}, timeout=600)
    r.raise_for_status()
    out.update(seconds=round(time.perf_counter() - t, 3), ended=time.perf_counter(), b64=r.json()["data"][0]["b64_json"])


def image_round(model, parallel: int, budget: int, streams: int, tokens: int, steps: int) -> dict:
    srv, thread, sock, url = start(model, parallel, budget)
    end_id = model.tokens.end
    try:
        ask(url, 0, end_id)  # warm-up (the flow head loads on the first image)
        image(url, steps, {})
        alone: dict = {}
        image(url, steps, alone)
        # the image sent while the streams decode
        beside: dict = {}
        with streams_decoding(model, url, streams, tokens) as (times, futures):
            window0 = time.perf_counter()
            image(url, steps, beside)
            window1 = time.perf_counter()
            ended_early = sum(f.done() for f in futures)
        # a chat sent 0.3 s after an image
        during: dict = {}
        chat_times: list = []
        worker = threading.Thread(target=image, args=(url, steps, during))
        worker.start()
        time.sleep(0.3)
        t0 = time.perf_counter()
        stream(url, {**body(1, end_id), "max_tokens": 8, "logit_bias": visible(model)}, chat_times)
        chat = {"ttft_s": round(chat_times[0] - t0, 3), "total_s": round(time.perf_counter() - t0, 3)}
        worker.join()
    finally:
        stop(srv, thread, sock)
    every = [g for t in times for g in gaps_of(t)]
    inside = [g for t in times for g in gaps_of(t, window0, window1)]
    return {"parallel": parallel, "budget": budget, "streams": streams, "image_steps": steps,
            "image_alone_s": alone["seconds"], "image_beside_streams_s": beside["seconds"],
            "image_beside_chat_s": during["seconds"],
            "same_pixels": beside["b64"] == alone["b64"] and during["b64"] == alone["b64"],
            "worst_gap_s": round(max(every), 3), "worst_gap_during_image_s": round(max(inside), 3) if inside else None,
            "median_gap_during_image_s": round(statistics.median(inside), 3) if inside else None,
            "pieces_during_image": len(inside), "streams_ended_during_image": ended_early,
            "chat_during_image": chat}


def queue_round(model, parallel: int, budget: int, streams: int, tokens: int, steps: int) -> dict:
    """``parallel`` images sent at once, then a streamed chat 0.3 s later."""
    srv, thread, sock, url = start(model, parallel, budget)
    end_id = model.tokens.end
    chat_body = {**body(1, end_id), "max_tokens": 8, "logit_bias": visible(model)}
    try:
        ask(url, 0, end_id)  # warm-up (the flow head loads on the first image)
        stream(url, chat_body, [])
        alone = [{} for _ in range(parallel)]
        for k, out in enumerate(alone):
            image(url, steps, out, seed=7 + k)
        crowd = [{} for _ in range(parallel)]
        senders = []
        for k, out in enumerate(crowd):  # in this order (0.1 s apart: the server sees them so)
            senders.append(threading.Thread(target=image, args=(url, steps, out, 7 + k)))
            senders[-1].start()
            time.sleep(0.1)
        time.sleep(0.1)  # (the chat sent 0.3 s after the first image)
        chat_times: list = []
        t0 = time.perf_counter()
        stream(url, chat_body, chat_times)
        t1 = time.perf_counter()
        for s in senders:
            s.join()
    finally:
        stop(srv, thread, sock)
    return {"parallel": parallel, "budget": budget, "image_steps": steps, "images": parallel,
            "chat_ttft_s": round(chat_times[0] - t0, 3), "chat_total_s": round(t1 - t0, 3),
            "chat_ended_before_images": sum(c["ended"] > t1 for c in crowd),
            "image_alone_s": [a["seconds"] for a in alone], "image_in_crowd_s": [c["seconds"] for c in crowd],
            "end_order": sorted(range(parallel), key=lambda k: crowd[k]["ended"]),
            "same_pixels": all(a["b64"] == c["b64"] for a, c in zip(alone, crowd, strict=True))}


def by_sources(sources: list[str], rounds: int) -> list[dict]:
    """This benchmark's arguments (but ``--sources`` and ``--rounds``) run once per round and per
    source tree, interleaved, each in a process of its own with that tree first on PYTHONPATH."""
    import subprocess

    argv, skip = [], False
    for a in sys.argv[1:]:
        if a.startswith("--"):
            skip = a in ("--sources", "--rounds", "--results")
        if not skip:
            argv.append(a)
    out = []
    for _ in range(rounds):
        for src in sources:
            env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.path.abspath(src), os.environ.get("PYTHONPATH", "")])}
            run = subprocess.run([sys.executable, __file__, *argv, "--rounds", "1"], env=env, check=True,
                                 capture_output=True, text=True)
            for line in run.stdout.splitlines():
                if line.startswith("{"):
                    r = {"sources": src, **json.loads(line)}
                    print(json.dumps(r), flush=True)
                    out.append(r)
    return out


def agreement(model, n: int, group: int = 8, full_length: bool = False) -> dict:
    """Answers decoded alone and together (groups of ``group``): how many are the same tokens."""
    from showo2_cli.chat import Conversation
    from showo2_cli.decoding_batch import CURRENT, DecodingBatch
    from showo2_cli.dialogue import TextSampling

    def answer(k: int, sampled: bool) -> list[int]:
        conv = Conversation(model)
        words = QUESTIONS[k % len(QUESTIONS)].split()
        question = " ".join(words[k % len(words):] + words[:k % len(words)])  # another question each
        bias = {model.tokens.end: -100.0} if full_length else None
        sampling = TextSampling(48, temperature=0.9, seed=k, logit_bias=bias) if sampled else \
            TextSampling(48, logit_bias=bias)
        conv.ask(question, sampling)
        return conv.turns[-1].answer_ids

    out = {}
    for sampled in (False, True):
        alone = [answer(k, sampled) for k in range(n)]
        together: list = [None] * n
        for start in range(0, n, group):
            batch = DecodingBatch(model.network)

            def run(k, batch=batch, sampled=sampled, together=together):
                CURRENT.set(batch)
                with batch.turn():
                    together[k] = answer(k, sampled)

            threads = [threading.Thread(target=run, args=(k,)) for k in range(start, min(n, start + group))]
            with batch.turn():  # every answer queued before the first starts
                for t in threads:
                    t.start()
                while batch.queued < len(threads):
                    time.sleep(0.01)
            for t in threads:
                t.join()
        differ = [next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
                  for a, b in zip(alone, together, strict=True) if a != b]
        out["seeded" if sampled else "greedy"] = {
            "answers": n, "same": n - len(differ), "tokens": sum(map(len, alone)), "first_difference_at": differ}
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="demo", help="demo or 1.5B-N (the 1.5B spec at N LLM layers)")
    p.add_argument("--parallel", type=int, nargs="+", default=[1, 8])
    p.add_argument("--requests", type=int, default=8)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--results", help="write the figures here as JSON")
    p.add_argument("--full-length", action="store_true", help="ban the end token: every answer max_tokens long")
    p.add_argument("--stall", action="store_true", help="measure the running answers' gaps while long prompts arrive")
    p.add_argument("--budgets", type=int, nargs="+", default=[0, 512], help="--stall: max_num_batched_tokens values")
    p.add_argument("--streams", type=int, default=3, help="--stall: answers decoding meanwhile")
    p.add_argument("--tokens", type=int, default=400, help="--stall: their max_tokens (long enough to outlast the long prompts)")
    p.add_argument("--video", help="--stall: a video file asked about after the long text")
    p.add_argument("--image-stall", action="store_true",
                   help="measure the answers' gaps and a chat's time to first piece while an image is generated")
    p.add_argument("--image-steps", type=int, default=30, help="--image-stall: the image's steps")
    p.add_argument("--image-queue", action="store_true",
                   help="--parallel images sent at once, then a chat: its time to first piece, the images' order")
    p.add_argument("--sources", nargs="+", help="source trees (their src folders) to run each round with, interleaved")
    p.add_argument("--agreement", type=int, metavar="N", help="count answers equal alone and together instead")
    args = p.parse_args()
    if args.sources:
        rounds = by_sources(args.sources, args.rounds)
        if args.results:
            with open(args.results, "w") as f:
                json.dump({"model": args.model, "rounds": rounds}, f, indent=1)
        return 0
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    model = build(args.model)
    if args.agreement:
        out = {"model": args.model, "agreement": agreement(model, args.agreement, full_length=args.full_length),
               "full_length": args.full_length}
        print(json.dumps(out))
        if args.results:
            with open(args.results, "w") as f:
                json.dump(out, f, indent=1)
        return 0
    rounds = []
    most = max(args.parallel)
    for wanted, run, extra in ((args.image_stall, image_round, args.image_steps), (args.stall, stall_round, args.video),
                               (args.image_queue, queue_round, args.image_steps)):
        if wanted:  # the budgets interleaved, round after round
            for _ in range(args.rounds):
                for budget in args.budgets:
                    r = run(model, most, budget, args.streams, args.tokens, extra)
                    print(json.dumps(r), flush=True)
                    rounds.append(r)
            args.parallel = []  # (no throughput rounds after these)
    for _ in range(args.rounds):
        for parallel in args.parallel:
            r = one_round(model, parallel, args.requests, model.tokens.end if args.full_length else None)
            print(json.dumps({k: v for k, v in r.items() if k != "different"}), flush=True)
            rounds.append(r)
    out = {"model": args.model, "requests": args.requests, "full_length": args.full_length, "stall": args.stall,
           "image_stall": args.image_stall, "image_queue": args.image_queue,
           "rounds": rounds,
           "machine": {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count(),
                       "threads": torch.get_num_threads()}}
    if args.results:
        with open(args.results, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
