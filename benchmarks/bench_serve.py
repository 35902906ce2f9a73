"""A bounded load test of ``showo2 serve``: concurrent clients, throughput, latency, correctness.

Starts ``showo2 serve --model demo`` on a free localhost port (or uses ``--url``), then runs
``--clients`` concurrent clients (default 32), each sending ``--requests`` chat completions
(default 2) about its own freshly drawn shapes-world image, asking "What color is the shape?".
Every request is first sent alone, one after the other, to record its reference answer (greedy
decoding is deterministic); under load each answer must equal its own request's reference, so a
response mixed up with another request's shows up as a mismatch. Answers are also scored against
the colour actually drawn (the demo's own accuracy, reported apart). A 429 (queue full) is retried
after a quarter of its ``Retry-After``; every request must end in a 200 or the run fails.

Reports requests/s, p50/p95/max latency (end to end, retries included), the 429 count and the
matches, on stdout and (with ``--results``) as JSON:

    python benchmarks/bench_serve.py                      # 32 clients x 2 requests, demo model
    python benchmarks/bench_serve.py --clients 32 --requests 4 --max-queue 8 --stream
    python benchmarks/bench_serve.py --url http://127.0.0.1:8000 --api-key KEY
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
QUESTION = "What color is the shape?"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scene_image(seed: int) -> tuple[str, str]:
    """(colour, PNG data URL) of a fresh shapes-world scene."""
    import numpy as np
    from PIL import Image

    from showo2_cli.training import shapes

    scene = shapes.random_scene(np.random.default_rng(seed))
    buf = io.BytesIO()
    Image.fromarray(shapes.render_image(scene)).save(buf, format="PNG")
    return scene.colour, "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def start_server(port: int, max_queue: int, model: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    cmd = [sys.executable, "-m", "showo2_cli.cli", "serve", "--model", model, "--port", str(port),
           "--max-queue", str(max_queue), "--quiet"]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


async def wait_ready(client, url: str, proc: subprocess.Popen | None, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"the server exited with code {proc.returncode}: {proc.stderr.read().strip()}")
        try:
            r = await client.get(f"{url}/health", timeout=2)
            if r.status_code == 200:
                return
        except Exception:
            pass
        await asyncio.sleep(0.2)
    raise SystemExit(f"the server at {url} did not become ready in {timeout:.0f} s")


async def one_request(client, url: str, headers: dict, model: str, colour: str, image: str, stream: bool,
                      retries: int) -> dict:
    body = {"model": model, "max_tokens": 16, "stream": stream,
            "messages": [{"role": "user", "content": [{"type": "text", "text": QUESTION},
                                                       {"type": "image_url", "image_url": {"url": image}}]}]}
    start = time.perf_counter()
    rejected = 0
    for _ in range(retries + 1):
        if not stream:
            r = await client.post(f"{url}/v1/chat/completions", json=body, headers=headers)
            if r.status_code == 429:
                rejected += 1
                await asyncio.sleep(float(r.headers.get("retry-after", "1")) * 0.25)
                continue
            r.raise_for_status()
            answer = r.json()["choices"][0]["message"]["content"]
            break
        async with client.stream("POST", f"{url}/v1/chat/completions", json=body, headers=headers) as r:
            if r.status_code == 429:
                rejected += 1
                await r.aread()
                await asyncio.sleep(float(r.headers.get("retry-after", "1")) * 0.25)
                continue
            r.raise_for_status()
            pieces, done = [], False
            async for line in r.aiter_lines():
                if line == "data: [DONE]":
                    done = True
                elif line.startswith("data: "):
                    event = json.loads(line[6:])
                    if "error" in event:
                        raise RuntimeError(event["error"]["message"])
                    pieces += [c["delta"].get("content") or "" for c in event["choices"]]
            if not done:
                raise RuntimeError("the stream ended without data: [DONE]")
            answer = "".join(pieces)
            break
    else:
        raise RuntimeError(f"still rejected (429) after {retries} retries")
    return {"seconds": time.perf_counter() - start, "rejected": rejected, "colour": colour,
            "answer": answer.strip()}


async def client_loop(k: int, args, client, url: str, headers: dict, work: list,
                      reference: dict) -> list[dict]:
    out = []
    for j in range(args.requests):
        colour, image = work[k * args.requests + j]
        r = await one_request(client, url, headers, args.model, colour, image, args.stream, args.retries)
        r["reference"] = reference[k * args.requests + j]
        r["match"] = r["answer"] == r["reference"]
        out.append(r)
    return out


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, max(0, round(q * (len(values) - 1))))]


async def run(args) -> dict:
    import httpx

    proc = None
    url = args.url
    if url is None:
        port = free_port()
        proc = start_server(port, args.max_queue, args.model)
        url = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    limits = httpx.Limits(max_connections=args.clients + 4, max_keepalive_connections=args.clients + 4)
    try:
        async with httpx.AsyncClient(timeout=args.timeout, limits=limits) as client:
            await wait_ready(client, url, proc)
            work = [scene_image(args.seed + i) for i in range(args.clients * args.requests)]
            reference = {}
            for i, (colour, image) in enumerate(work):  # each request alone: its reference answer
                r = await one_request(client, url, headers, args.model, colour, image, False, args.retries)
                reference[i] = r["answer"]
            start = time.perf_counter()
            groups = await asyncio.wait_for(
                asyncio.gather(*(client_loop(k, args, client, url, headers, work, reference)
                                 for k in range(args.clients))),
                timeout=args.timeout)
            wall = time.perf_counter() - start
            health = (await client.get(f"{url}/health")).json()
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
    results = [r for g in groups for r in g]
    lat = [r["seconds"] for r in results]
    return {
        "clients": args.clients, "requests_per_client": args.requests, "requests": len(results),
        "stream": args.stream, "max_queue": args.max_queue if args.url is None else None,
        "wall_s": round(wall, 3), "throughput_rps": round(len(results) / wall, 3),
        "latency_p50_s": round(statistics.median(lat), 3), "latency_p95_s": round(percentile(lat, 0.95), 3),
        "latency_max_s": round(max(lat), 3), "rejected_429": sum(r["rejected"] for r in results),
        "matched": sum(r["match"] for r in results),
        "mismatches": [r for r in results if not r["match"]][:10],
        "colour_right": sum(r["answer"] == r["colour"] for r in results),
        "server_counts": {k: health.get(k) for k in ("completed", "failed", "cancelled", "rejected")},
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                    "omp_threads": os.environ.get("OMP_NUM_THREADS")},
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", help="a running server (default: start `showo2 serve --model demo`)")
    p.add_argument("--api-key")
    p.add_argument("--model", default="demo")
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--requests", type=int, default=2, help="requests per client")
    p.add_argument("--max-queue", type=int, default=8, help="--max-queue of the started server")
    p.add_argument("--retries", type=int, default=200, help="429 retries per request")
    p.add_argument("--stream", action="store_true", help="stream the answers (server-sent events)")
    p.add_argument("--timeout", type=float, default=600.0, help="the whole run's limit, seconds")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--results", type=Path, help="also write the report as JSON here")
    args = p.parse_args()
    if not 1 <= args.clients <= 256 or not 1 <= args.requests <= 1000:
        p.error("--clients must be 1..256 and --requests 1..1000")
    report = asyncio.run(run(args))
    text = json.dumps(report, indent=1)
    print(text)
    if args.results:
        args.results.write_text(text + "\n")
    ok = report["matched"] == report["requests"]
    print(f"{report['requests']} requests in {report['wall_s']} s: {report['throughput_rps']} req/s, "
          f"p50 {report['latency_p50_s']} s, p95 {report['latency_p95_s']} s, "
          f"{report['rejected_429']} x 429 (retried), {report['matched']}/{report['requests']} answers equal "
          f"their request's own reference answer; colour right {report['colour_right']}/{report['requests']}",
          file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
