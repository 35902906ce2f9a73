"""Probe E: `showo2 serve` against slow, stuck and silent clients, on a real server on 127.0.0.1
(the app and uvicorn as `serve` builds them, in this process, with a short request timeout)."""

from __future__ import annotations

import json
import socket
import time
from contextlib import contextmanager

import pytest

from conftest import run_in_thread

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

TIMEOUT = 0.5  # the server's request timeout here (15 s by default)


@contextmanager
def running_server(**config):
    """A server as `serve` builds it, on 127.0.0.1 in this process, with no model: these requests
    never get as far as a job. Yields its (host, port)."""
    from showo2_cli.serve import ServerConfig, bind_socket
    from showo2_cli.serve.app import server_for

    sock = bind_socket("127.0.0.1", 0)
    srv = server_for(None, ServerConfig(model_id="demo", **config), sock, log_level="error")
    thread = run_in_thread(srv, sock)
    try:
        yield sock.getsockname()[:2]
    finally:
        srv.should_exit = True
        thread.join(30)
        sock.close()


@pytest.fixture(scope="module")
def server():
    with running_server(request_timeout=TIMEOUT) as address:
        yield address


def _connect(address) -> socket.socket:
    s = socket.create_connection(address, timeout=10)
    return s


def _read_all(s: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (a timeout fails the test)."""
    out = b""
    while chunk := s.recv(65536):
        out += chunk
    return out


def test_a_silent_connection_is_closed(server):
    """Connected, nothing sent: uvicorn kept it open for ever (a descriptor each, until the process
    ran out of them and accepted no one)."""
    s = _connect(server)
    start = time.monotonic()
    assert _read_all(s) == b""  # closed, with nothing to say
    assert TIMEOUT * 0.8 <= time.monotonic() - start < TIMEOUT + 5
    s.close()


def test_headers_sent_a_byte_at_a_time_are_cut_off(server):
    """Slowloris: the header must be complete within the timeout, however steadily its bytes come
    (a byte every 50 ms here); a part of a header that stops coming is answered 408."""
    s = _connect(server)
    s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
    answer = _read_all(s)
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:100]
    error = json.loads(answer.partition(b"\r\n\r\n")[2])["error"]  # the OpenAI shape, as every error here
    assert error["code"] == "request_timeout" and error["message"] == "the request headers did not all come within 0.5 s"
    s.close()

    s = _connect(server)
    s.settimeout(0.05)
    start, ended = time.monotonic(), None
    for byte in b"GET /health HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"a" * 200:
        try:
            s.sendall(bytes([byte]))
            if not s.recv(65536).startswith(b"HTTP/1.1 408 "):
                break
        except TimeoutError:  # nothing yet: the next byte
            continue
        except OSError:  # reset: the server closed it while the bytes came
            pass
        ended = time.monotonic() - start
        break
    s.close()
    assert ended is not None and TIMEOUT * 0.8 <= ended < TIMEOUT + 5, ended


def test_a_body_that_never_comes_is_answered_408(server):
    """Headers declare 200 bytes, 12 come: the request waited for the rest for ever."""
    s = _connect(server)
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: 200\r\n\r\n{\"messages\":")
    answer = _read_all(s)  # the server also closes the connection: the rest of the body is not read
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert b"connection: close" in head.lower()
    error = json.loads(body)["error"]
    assert error["code"] == "request_timeout" and "12 bytes" in error["message"]
    s.close()


def test_a_slow_but_steady_body_is_read(server):
    """A body taking longer than the timeout but coming at a steady pace is read: 40 KiB in 1.2 s."""
    s = _connect(server)
    body = b" " * 40_000 + b'{"model": "not-here", "messages": []}'
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(body))
    for k in range(0, len(body), 10_000):
        s.sendall(body[k:k + 10_000])
        time.sleep(0.3)
    answer = _read_all(s)
    assert answer.startswith(b"HTTP/1.1 404 "), answer[:200]  # read to its end: the model it names is not here
    assert json.loads(answer.partition(b"\r\n\r\n")[2])["error"]["code"] == "model_not_found"
    s.close()


def test_other_clients_and_kept_alive_connections_are_served(server):
    """While stuck connections wait for their timeout, other clients are answered; a kept-alive
    connection asking again within the timeout is answered too."""
    import httpx

    stuck = [_connect(server) for _ in range(20)]
    for s in stuck:
        s.sendall(b"GET /health HTTP/1.1\r\n")
    with httpx.Client(base_url=f"http://{server[0]}:{server[1]}", timeout=10) as client:
        for _ in range(3):
            assert client.get("/health").json()["status"] == "ok"
            time.sleep(TIMEOUT / 3)
    for s in stuck:
        s.close()


def test_the_unread_body_of_an_answered_request_cannot_hold_the_connection(server):
    """Probe J: a request answered before its body was read (413 for a declared 100 MB, 404) left
    uvicorn discarding the rest as it came, with no timeout: a byte every few seconds held the
    connection for ever (slowloris past the header timeout). It is closed once the timeout passes;
    a rejected body that came whole leaves the connection kept alive for the next request."""
    s = _connect(server)
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n")
    assert s.recv(65536).startswith(b"HTTP/1.1 413 ")
    s.settimeout(TIMEOUT / 5)
    start, closed = time.monotonic(), False
    while not closed and time.monotonic() - start < TIMEOUT + 3:
        try:
            s.sendall(b"x")
            closed = s.recv(65536) == b""
        except TimeoutError:
            pass
        except OSError:  # reset: closed too
            closed = True
    assert closed and time.monotonic() - start < TIMEOUT + 3
    s.close()

    s = _connect(server)
    s.sendall(b"POST /nowhere HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n12345")
    time.sleep(TIMEOUT / 5)
    s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    answers = _read_all(s)
    assert answers.startswith(b"HTTP/1.1 404 ") and b"HTTP/1.1 200 " in answers
    s.close()


def test_the_open_files_limit_is_raised():
    """With the usual soft limit of 1024 descriptors, a thousand connections stopped the server
    accepting any (asyncio logs "Too many open files" and tries again every second)."""
    resource = pytest.importorskip("resource")
    from showo2_cli.serve.connections import more_open_files

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard <= 300:
        pytest.skip("the hard limit leaves no room to raise")
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
        expected = 4096 if hard == resource.RLIM_INFINITY else min(hard, 4096)
        assert more_open_files(4096) == expected
        assert resource.getrlimit(resource.RLIMIT_NOFILE) == (expected, hard)
        assert more_open_files(128) == expected  # never lowered
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _post_head(size: int) -> bytes:
    return (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Connection: close\r\nContent-Length: %d\r\n\r\n" % size)


def test_large_bodies_read_at_once_are_bounded():
    """Bodies being read and parsed at once are bounded (4 of the largest size; small ones always
    pass): thirty 19 MiB bodies at once took the server from 0.9 to 2.6 GiB before any of them
    reached the queue's limit."""
    import httpx

    limit = 200_000
    with running_server(max_body_bytes=limit, request_timeout=30) as address:
        url = f"http://{address[0]}:{address[1]}"
        held = []
        try:
            for _ in range(4):  # four large bodies on their way: the budget is full
                s = _connect(address)
                s.sendall(_post_head(limit) + b" " * 100)
                held.append(s)
            deadline = time.time() + 10
            while time.time() < deadline:  # refused once the four are being read
                r = httpx.post(url + "/v1/chat/completions", content=b" " * (limit - 2) + b"{}", timeout=10)
                if r.status_code == 429:
                    break
                time.sleep(0.05)
            assert r.status_code == 429 and r.headers["retry-after"] == "1", r.text
            assert r.json()["error"]["code"] == "server_busy"
            small = httpx.post(url + "/v1/chat/completions", json={"model": "not-here"}, timeout=10)
            assert small.status_code == 404  # a small body is still read
            assert httpx.get(url + "/health").json()["rejected"] >= 1
        finally:
            for s in held:  # the clients go away: their share is given back
                s.close()
        deadline = time.time() + 10
        while time.time() < deadline:
            r = httpx.post(url + "/v1/chat/completions", content=b" " * (limit - 30) + b'{"model": "not-here"}',
                           timeout=10)
            if r.status_code != 429:
                break
            time.sleep(0.05)
        assert r.status_code == 404, r.text
