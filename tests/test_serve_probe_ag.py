"""Probe AG: `showo2 serve` as it runs in production: clients that stop reading their answer, and
the signals a service manager sends (real servers on 127.0.0.1)."""

from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager

import pytest

from conftest import run_in_thread, wait_started

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
    thread = run_in_thread(server, sock)
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


def test_a_client_reading_slower_than_the_pace_is_dropped():
    """A trickle (4 KiB every 50 ms: 80 KiB/s) under the pace (1 MiB/s here, 8 KiB/s in `serve`)
    is no better than a stall: it would hold the answer for as long as it takes."""
    with uvicorn_with(timeout=0.5, min_rate=2**20) as (server, port, thread):
        client = _ask(port)
        got, start = 0, time.time()
        try:
            while server.server_state.connections and time.time() - start < 30:
                got += len(client.recv(4096))
                time.sleep(0.05)
        except ConnectionResetError:
            pass
        assert not server.server_state.connections and got < ANSWER // 4
        with pytest.raises(ConnectionResetError):  # reset: what the kernel held is dropped too
            while client.recv(1 << 20):
                pass
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


class Hangup(Exception):
    pass


def test_sighup_drains_as_sigterm_does():
    """SIGHUP (a closed terminal or ssh session, a service manager's hang-up) reached the command
    line's handler (which raises, as here) inside uvicorn's loop: a traceback in the log, the running
    request answered 503, `showo2: error: hung up`. It now drains as SIGTERM does: the running job
    finishes, and the handler is put back afterwards."""
    import asyncio
    import os
    import signal

    from showo2_cli.serve import Job, ServerConfig, bind_socket
    from showo2_cli.serve.app import server_for

    def hangup(signum, frame):
        raise Hangup

    before = signal.signal(signal.SIGHUP, hangup)
    sock = bind_socket("127.0.0.1", 0)
    srv = server_for(None, ServerConfig(), sock, log_level="error")
    finished = []

    def job_then_hangup():
        wait_started(srv)
        started = threading.Event()

        def job_fn(job):
            started.set()
            time.sleep(0.5)
            finished.append(not job.cancel.is_set())

        srv.config.app.state.worker.submit(Job(job_fn, asyncio.new_event_loop()))
        started.wait(30)
        os.kill(os.getpid(), signal.SIGHUP)

    helper = threading.Thread(target=job_then_hangup, daemon=True)
    helper.start()
    try:
        srv.run(sockets=[sock])  # in the main thread, where uvicorn takes the signals
        assert finished == [True] and signal.getsignal(signal.SIGHUP) is hangup
    finally:
        helper.join(30)
        signal.signal(signal.SIGHUP, before)
        sock.close()


# ---- the timeouts as options (vLLM's --timeout-keep-alive, llama.cpp's --timeout) ----------------

def test_the_timeouts_are_options(monkeypatch, capsys):
    """The keep-alive (uvicorn's 5 s) and the request timeout (15 s) were fixed: behind a proxy that
    keeps upstream connections open longer (nginx's keepalive_timeout, 60 s), the server closed an
    idle one as the proxy sent a request on it (a 502 for a POST, which proxies do not retry)."""
    import showo2_cli.serve as S
    from showo2_cli.cli import common, main

    seen = {}
    monkeypatch.setattr(common, "load_model", lambda *a, **k: None)
    monkeypatch.setattr(S, "serve", lambda bundle, config, sock, **k: seen.update(config=config))
    assert main(["serve", "--port", "0", "--timeout-keep-alive", "75", "--request-timeout", "30", "--quiet"]) == 0
    assert (seen["config"].keep_alive_timeout, seen["config"].request_timeout) == (75, 30)
    for option in ("--timeout-keep-alive", "--request-timeout"):
        assert main(["serve", "--port", "0", option, "0"]) == 2
        assert capsys.readouterr().err == f"showo2: error: {option} must be between 0.1 and 86400 seconds, got 0\n"


def test_an_idle_connection_stays_open_for_the_keep_alive():
    """The header timer closed a kept-alive connection at the request timeout even when the
    keep-alive was longer; the keep-alive now holds an idle one, and a request begun on it still
    has the request timeout for its headers."""
    import uvicorn

    from showo2_cli.serve import ServerConfig, bind_socket
    from showo2_cli.serve.app import server_for

    sock = bind_socket("127.0.0.1", 0)
    srv = server_for(None, ServerConfig(request_timeout=0.3, keep_alive_timeout=30.0), sock, log_level="error")
    assert isinstance(srv, uvicorn.Server) and srv.config.timeout_keep_alive == 30.0
    thread = run_in_thread(srv, sock)
    try:
        client = socket.create_connection(sock.getsockname()[:2], timeout=10)
        for _ in range(2):
            client.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = b""
            while not answer.endswith(b"}"):  # the whole answer (headers and body may come apart)
                chunk = client.recv(65536)
                assert chunk, f"closed after {answer!r}"
                answer += chunk
            assert answer.startswith(b"HTTP/1.1 200")
            time.sleep(1.0)  # idle longer than the request timeout, shorter than the keep-alive
        client.sendall(b"GET /health HTTP/1.1\r\n")  # but a request begun must come whole in the request
        answer = b""  # timeout, not the keep-alive's 30 s (the client gives up at 10 s)
        while chunk := client.recv(65536):
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 408 ")
        client.close()
    finally:
        srv.should_exit = True
        thread.join(30)
        sock.close()


def test_the_no_key_warning_comes_only_for_an_address_it_listens_on(monkeypatch, capsys):
    """`serve --host 192.0.2.1` (not this machine's) printed the no-API-key warning before its one
    error line; the warning now comes once the address is bound, as it still does for 0.0.0.0."""
    import showo2_cli.serve as S
    from showo2_cli.cli import common, main

    monkeypatch.delenv(S.API_KEY_ENV, raising=False)
    assert main(["serve", "--host", "192.0.2.1", "--port", "8000"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("showo2: error: cannot listen on 192.0.2.1:8000: ") and err.count("\n") == 1, err
    monkeypatch.setattr(common, "load_model", lambda *a, **k: None)
    monkeypatch.setattr(S, "serve", lambda *a, **k: None)
    assert main(["serve", "--host", "0.0.0.0", "--port", "0"]) == 0
    assert capsys.readouterr().err.startswith("warning: listening on 0.0.0.0 without an API key")


def test_a_second_server_on_the_same_port_fails_before_loading(monkeypatch, capsys):
    """Two `showo2 serve --port P` started together both bound P (SO_REUSEADDR lets sockets that
    do not listen yet share a port): the second loaded the model too, then died at uvicorn's
    listen() with a traceback and "internal error" (exit 1). The port is now listened on as it is
    bound, so the second fails at once, as for any port in use."""
    import showo2_cli.serve as S
    from showo2_cli.cli import common, main

    loaded = []
    monkeypatch.setattr(common, "load_model", lambda *a, **k: loaded.append(1))
    monkeypatch.setattr(S, "serve", lambda *a, **k: None)
    first = S.bind_socket("127.0.0.1", 0)  # the first server, loading its model
    port = first.getsockname()[1]
    try:
        assert main(["serve", "--port", str(port)]) == 2
        assert capsys.readouterr().err == f"showo2: error: cannot listen on 127.0.0.1:{port}: Address already in use\n"
        assert loaded == []
    finally:
        first.close()


def test_a_forced_exit_stops_the_jobs_and_shuts_the_app_down(capfd):
    """A second Ctrl-C (uvicorn's force exit) skipped the app's shutdown: its task died cancelled as
    the loop ended ("ERROR: Traceback ... CancelledError" in the log) and the running job was never
    told to stop. Now the jobs are stopped (answered 503) and the app shuts down."""
    import asyncio

    from showo2_cli.dialogue import Cancelled
    from showo2_cli.serve import Job, ServerConfig, bind_socket
    from showo2_cli.serve.app import server_for

    sock = bind_socket("127.0.0.1", 0)
    srv = server_for(None, ServerConfig(), sock, log_level="info")
    thread = run_in_thread(srv, sock)
    started = threading.Event()

    def long_job(job):
        started.set()
        job.cancel.wait(60)
        raise Cancelled("cancelled")

    job = Job(long_job, asyncio.new_event_loop())
    srv.config.app.state.worker.submit(job)
    assert started.wait(30)
    srv.should_exit = srv.force_exit = True
    thread.join(60)
    sock.close()
    err = capfd.readouterr().err
    assert not thread.is_alive() and job.cancel.is_set() and job.abandoned
    assert "Traceback" not in err and "Application shutdown complete" in err, err
    # (on uvicorn's stderr handler, as uvicorn's own lines: probe AM)
    assert "WARNING:  forced exit (a second Ctrl-C): 1 request(s) stopped" in err.splitlines(), err
    job.loop.close()
