"""What tool calling costs on ``showo2 serve`` (probe IE), over the demo model on the CPU.

    python benchmarks/bench_tool_calls.py [--rounds 8] [--max-tokens 40]

A server on a free port of 127.0.0.1 in this process; each round sends, one after the other (the
order turned each round), the same question as plain text, with two tools offered (``auto``), with
``tool_choice: "required"``, with the weather tool named, and as ``response_format`` json_schema of
that tool's parameters (the same structured output without tools), each at temperature 1 with the
round's seed. Reports per mode the median seconds a request, the prompt and answer tokens, and
how many constrained answers that finished (not cut by ``--max-tokens``) held to the schema, and the
finish reasons seen.
Seconds are only comparable side by side, in one run, on an idle machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time

WEATHER = {"type": "object", "properties": {
    "city": {"type": "string", "maxLength": 12}, "unit": {"type": "string", "enum": ["c", "f"]}},
    "required": ["city", "unit"]}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "The weather in a city.",
                                           "parameters": WEATHER}},
         {"type": "function", "function": {"name": "get_time", "description": "The time now."}}]
MODES = {
    "text": {},
    "auto": {"tools": TOOLS},
    "required": {"tools": TOOLS, "tool_choice": "required", "parallel_tool_calls": False},
    "named": {"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "get_weather"}}},
    "json_schema": {"response_format": {"type": "json_schema", "json_schema": {"name": "w", "schema": WEATHER}}},
}


def held(mode: str, message: dict) -> bool | None:
    """Whether a constrained answer holds to its schema (None: not constrained): JSON that parses, the
    weather tool's required keys, its enum and length; the time tool's ``{}``."""
    if mode in ("text", "auto"):
        return None
    if mode == "json_schema":
        pairs = [("get_weather", message["content"] or "")]
    else:
        pairs = [(c["function"]["name"], c["function"]["arguments"]) for c in message.get("tool_calls") or []]
    try:
        values = [(name, json.loads(text)) for name, text in pairs]
    except ValueError:
        return False
    return bool(values) and all(
        v == {} if name == "get_time" else
        set(v) == {"city", "unit"} and v["unit"] in ("c", "f") and len(v["city"]) <= 12 for name, v in values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=40)
    args = parser.parse_args()

    import httpx
    import torch

    from showo2_cli.loading import load
    from showo2_cli.serve import ServerConfig, bind_socket
    from showo2_cli.serve.app import server_for

    torch.set_num_threads(1)
    sock = bind_socket("127.0.0.1", 0)
    srv = server_for(load("demo"), ServerConfig(model_id="demo"), sock, log_level="error")
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not srv.started:
        time.sleep(0.05)
    host, port = sock.getsockname()[:2]
    url = f"http://{host}:{port}/v1/chat/completions"
    seen: dict[str, list] = {m: [] for m in MODES}
    try:
        for seed in range(args.rounds):
            order = list(MODES)[seed % len(MODES):] + list(MODES)[:seed % len(MODES)]
            for mode in order:
                body = {"model": "demo", "messages": [{"role": "user", "content": "Weather in Paris?"}],
                        "max_tokens": args.max_tokens, "temperature": 1.0, "seed": seed, **MODES[mode]}
                start = time.perf_counter()
                r = httpx.post(url, json=body, timeout=300)
                took = time.perf_counter() - start
                r.raise_for_status()
                out = r.json()
                seen[mode].append((took, out["usage"], held(mode, out["choices"][0]["message"]),
                                   out["choices"][0]["finish_reason"]))
    finally:
        srv.should_exit = True
        thread.join(30)
        sock.close()
    print(f"{'mode':12} {'s/request':>9} {'prompt':>7} {'answer':>7}  held  finish")
    for mode, rows in seen.items():
        checks = [h for _, _, h, f in rows if h is not None and f != "length"]  # (a cut answer is not whole)
        finishes = sorted({f for *_, f in rows})
        print(f"{mode:12} {statistics.median(t for t, *_ in rows):9.3f} "
              f"{statistics.median(u['prompt_tokens'] for _, u, *_ in rows):7.0f} "
              f"{statistics.median(u['completion_tokens'] for _, u, *_ in rows):7.0f}  "
              f"{f'{sum(checks)}/{len(checks)}' if checks else '-':>4}  {','.join(finishes)}")


if __name__ == "__main__":
    main()
