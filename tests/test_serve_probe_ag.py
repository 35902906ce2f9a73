"""Probe AG: `showo2 serve` as it runs in production: clients that stop reading their answer, and
the signals a service manager sends (real servers on 127.0.0.1)."""

from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

ANSWER = 32 << 20  # far more than the kernel's socket buffers take on loopback


async def big_answer(scope, receive, send):
    """One answer of ANSWER bytes, written at once as a JSONResponse of images is."""
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(ANSWER).encode())]})
    await send({"type": "http.response.body", "body": b"x" * ANSWER})


@contextmanager
def uvicorn_with(timeout: float, min_rate: float):
    """uvicorn with serve's protocol over ``big_answer``, in a thread; yields (server, port, thread).
    Its graceful shutdown waits up to 120 s, so a stop that is quicker is the protocol's doing."""
    import uvicorn

    from showo2_cli.serve.connections import timed_protocol

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(big_answer, http=timed_protocol(timeout, min_rate), log_level="error",
                            lifespan="off", timeout_graceful_shutdown=120)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started and time.time() < deadline:
        time.sleep(0.02)
    assert server.started
    try:
        yield server, sock.getsockname()[1], thread
    finally:
        server.should_exit = True
        thread.join(130)
        sock.close()


def _ask(port: int) -> socket.socket:
    client = socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a client that takes little at a time
    client.connect(("127.0.0.1", port))
    client.settimeout(60)
    client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert client.recv(16).startswith(b"HTTP/1.1 200")
    return client


def _read_rest(client: socket.socket) -> tuple[int, bool]:
    """(bytes read until the server ended the connection, whether it was reset)."""
    got = 0
    try:
        while chunk := client.recv(1 << 20):
            got += len(chunk)
    except ConnectionResetError:
        return got, True
    return got, False


def test_a_client_that_stops_reading_its_answer_is_dropped():
    """uvicorn has no write timeout: a client that read the first bytes of a large answer and then
    nothing held the answer (32 MiB here), its connection and the server's exit for ever."""
    with uvicorn_with(timeout=0.5, min_rate=2**30) as (server, port, thread):
        client = _ask(port)
        deadline = time.time() + 30
        while server.server_state.connections and time.time() < deadline:
            time.sleep(0.05)
        assert not server.server_state.connections  # dropped at about 0.5 s, not held
        got, _ = _read_rest(client)
        assert got < ANSWER - 16  # what it did not read was never sent
        client.close()


def test_a_stalled_reader_does_not_hold_the_server_s_exit():
    """SIGTERM (should_exit) with a client not reading: uvicorn waited for the connection until its
    graceful-shutdown timeout (60 s here before, serve's --drain-timeout + 5), logging an error."""
    with uvicorn_with(timeout=1.0, min_rate=2**30) as (server, port, thread):
        client = _ask(port)
        server.should_exit = True
        thread.join(30)
        assert not thread.is_alive()
        client.close()


def test_a_client_reading_at_its_own_pace_gets_the_whole_answer():
    """A client that pauses shorter than the timeout and then reads gets every byte, with the
    default pace (8 KiB/s) far below what it reads at."""
    with uvicorn_with(timeout=5.0, min_rate=8192) as (server, port, thread):
        client = _ask(port)
        time.sleep(0.3)
        got, reset = _read_rest(client)
        assert (got + 16, reset) >= (ANSWER, False)
        client.close()


@pytest.mark.slow
def test_sighup_drains_as_sigterm_does():
    """SIGHUP (a closed terminal or ssh session, a service manager's hang-up) reached the command
    line's handler inside uvicorn's loop: a traceback in the log, the running request cut off, exit
    129. It now drains as SIGTERM does: the running request is answered, exit 0."""
    import signal

    import httpx

    from test_chat_serve import ServerProcess

    server = ServerProcess("--max-steps", "5000")
    try:
        result = {}

        def request():
            body = {"prompt": "a blue square on a black background", "steps": 20, "seed": 1}
            result["r"] = httpx.post(server.url + "/v1/images/generations", json=body, timeout=120)

        thread = threading.Thread(target=request)
        thread.start()
        deadline = time.time() + 30
        while not httpx.get(server.url + "/health").json()["running"] and time.time() < deadline:
            time.sleep(0.05)
        server.proc.send_signal(signal.SIGHUP)
        thread.join(120)
        assert result["r"].status_code == 200 and len(result["r"].json()["data"]) == 1
        assert server.proc.wait(60) == 0
        err = server.proc.stderr.read()
        assert "Traceback" not in err and "error" not in err.lower(), err
    finally:
        server.stop()
