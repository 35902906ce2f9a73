"""Connections of ``showo2 serve`` that send nothing, or too slowly: uvicorn closes a connection
idle after a response (``timeout_keep_alive``) but waits for a request's headers for ever, so a
client that connects and sends nothing, or one byte of header at a time (slowloris), holds a socket
and a file descriptor until it goes away; a thousand of them use up the usual 1024 descriptors and
the server accepts no one any more. Here the headers of each request must come within a time
(then the connection is closed, with a 408 when part of a request came); the body's pace is
checked where it is read (:func:`~showo2_cli.serve.body.read_json`). uvicorn has no write timeout
either: a client that stops reading its answer (a 16 MiB JSON of images, an event stream) held
the answer's bytes, its connection and a SIGTERM's exit for ever; here a stalled answer must be
taken at the body's pace, or the connection is dropped. Also the listening socket
(:func:`bind_socket`) and the one-line notice when file descriptors run out."""

from __future__ import annotations

import errno
import json
import logging
import math
import socket
import struct
import time

from ..errors import UsageError
from .body import BODY_MIN_RATE
from .errors import ApiError

log = logging.getLogger("showo2.serve")

#: the most file descriptors the server asks for (the soft limit is raised towards the hard one)
MAX_OPEN_FILES = 65536


def _closing_answer(error: ApiError, reason: bytes) -> bytes:
    """The whole answer, in the OpenAI error shape, to a request the connection ends after."""
    body = json.dumps(error.body()).encode()
    return (b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nConnection: close\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (error.status, reason, len(body), body))


def _request_timeout(header_timeout: float) -> bytes:
    """The whole 408 answer to a request whose headers did not all come."""
    return _closing_answer(ApiError(408, f"the request headers did not all come within {header_timeout:g} s",
                                    "request_timeout"), b"Request Timeout")


#: the answer to bytes that are not HTTP/1.1 (no Host, a negative or doubled Content-Length, headers
#: over h11's limit as they come, bad chunk sizes): uvicorn's is a text/plain "Invalid HTTP request received."
BAD_HTTP = _closing_answer(ApiError(400, "invalid HTTP request (a malformed request line, header or chunked body, "
                                         "or headers too large)", "invalid_http"), b"Bad Request")


def timed_protocol(header_timeout: float, min_rate: float = BODY_MIN_RATE, keep_alive: float = 0.0):
    """uvicorn's h11 protocol, closing a connection whose request headers have not all come
    ``header_timeout`` seconds after it opened or after its last response (``keep_alive`` seconds
    when longer: uvicorn's own timer closes an idle one then), or whose answered
    request's unread body (a 413, a 404) is still coming then; and dropping one whose client takes
    less than ``min_rate`` bytes a second of its stalled answer (more than uvicorn's high-water mark
    unsent, or bytes unsent at the close) over each ``header_timeout`` seconds (nginx's
    ``send_timeout``, with a pace)."""
    try:
        import h11
        from uvicorn.protocols.http.h11_impl import H11Protocol
    except ImportError:  # pragma: no cover - a uvicorn that moved its h11 protocol: serve without the timer
        log.warning("uvicorn's h11 protocol was not found: request headers are not timed")
        return "h11"

    answer = _request_timeout(header_timeout)

    class TimedH11Protocol(H11Protocol):
        _header_timer = None
        _write_timer = None
        _idle = False  # the header timer is the keep-alive's (longer than the request timeout)

        def _arm(self, seconds: float = header_timeout) -> None:
            self._disarm()
            self._idle = seconds > header_timeout
            self._header_timer = self.loop.call_later(seconds, self._headers_late)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._arm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():  # the next request's headers get their own time (an idle
                # connection the keep-alive's, when longer; the unread body of an answered one only this)
                self._arm(max(header_timeout, keep_alive) if self.conn.their_state is h11.IDLE else header_timeout)
            self._watch_writes()  # closed after the answer (Connection: close, HTTP/1.0) with bytes unsent

        # ---- the answer must be read: a write timeout -------------------------------------------------

        def _watch_writes(self) -> None:
            """Time the client's reading while the answer waits for it: while writing is paused (more
            than the high-water mark unsent) or the connection closes with bytes unsent."""
            pending = self.transport.get_write_buffer_size()
            if not pending or not (self.flow.write_paused or self.transport.is_closing()):
                self._unwatch_writes()
            elif self._write_timer is None:
                self._write_timer = self.loop.call_later(header_timeout, self._unread, pending)

        def _unwatch_writes(self) -> None:
            if self._write_timer is not None:
                self._write_timer.cancel()
                self._write_timer = None

        def pause_writing(self) -> None:
            super().pause_writing()
            self._watch_writes()

        def resume_writing(self) -> None:  # the client took most of it: the next stall gets its own time
            super().resume_writing()
            self._unwatch_writes()
            self._watch_writes()

        def shutdown(self) -> None:
            super().shutdown()
            self._watch_writes()

        def timeout_keep_alive_handler(self) -> None:
            super().timeout_keep_alive_handler()
            self._watch_writes()

        def _unread(self, before: int) -> None:
            """A look at a stalled answer: the client must have taken ``min_rate`` bytes a second
            since the last look (or all that was left), else it is dropped."""
            self._write_timer = None
            left = self.transport.get_write_buffer_size()
            if not left:
                return
            if before - left >= min(before, header_timeout * min_rate):
                self._watch_writes()  # reading at the pace: the next look
                return
            log.info("dropped a connection whose client did not read its answer (%d bytes unsent, %d taken in "
                     "%g s)", left, max(before - left, 0), header_timeout)
            sock = self.transport.get_extra_info("socket")
            try:  # a reset: the kernel drops what it holds for the client too (a close would send it on)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except (AttributeError, OSError):  # pragma: no cover - not a TCP socket
                pass
            self.transport.abort()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.conn.their_state is not h11.IDLE and self.conn.our_state is not h11.DONE:
                self._disarm()  # the headers are in: the request runs (not: the rest of an answered one's body)
            elif self._idle and self.conn.their_state is h11.IDLE:  # a kept-alive connection's next request
                self._arm()  # began: its headers get the request timeout from now, not the keep-alive's

        def connection_lost(self, exc) -> None:
            self._disarm()
            self._unwatch_writes()
            super().connection_lost(exc)

        def send_400_response(self, msg: str) -> None:  # uvicorn's, for what h11 could not parse
            if self.conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):  # not inside an answer already begun
                self.transport.write(BAD_HTTP)
            self.transport.close()

        def _headers_late(self) -> None:
            self._header_timer = None
            if self.transport.is_closing():
                return
            if self.cycle is not None and not self.cycle.response_complete:
                return  # a response is still being sent
            if self.conn.their_state is not h11.IDLE:
                if self.conn.our_state is h11.DONE:  # answered before its body was read (413, 404, 429):
                    # uvicorn discards the rest as it comes, which a byte now and then made last for ever
                    log.info("closed a connection whose unread request body still came after %g s", header_timeout)
                    self.transport.close()
                return
            if self.conn.trailing_data[0]:  # part of a request came: say why it ends
                log.info("closed a connection whose request headers did not come within %g s", header_timeout)
                self.transport.write(answer)
            self.transport.close()
            self._watch_writes()

    return TimedH11Protocol


def more_open_files(wanted: int = MAX_OPEN_FILES) -> int:
    """Raise this process's soft limit on open files towards its hard limit (at most ``wanted``),
    as Go's runtime does for every server: each client holds one; the usual soft limit of 1024
    would cap the server at about a thousand connections. Returns the soft limit now."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not on Windows
        return -1
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(hard, wanted)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):  # pragma: no cover - a sandbox may refuse; the old limit stays
            pass
    return soft


#: connections the kernel holds for the server before it accepts them (uvicorn's default)
BACKLOG = 2048


def bind_socket(host: str, port: int):
    """A listening TCP socket, so a busy port fails before the model loads. It listens at once:
    with SO_REUSEADDR (a restart must not wait for the last connections' TIME_WAIT) Linux lets two
    sockets bind one port while neither listens, and a second ``serve`` started during the first's
    load also loaded the model, then died with a traceback. Connections made during the load wait
    in the backlog and are answered once the model is loaded."""
    from ..serve_config import check_port

    check_port(port)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise UsageError(f"--host '{host}' cannot be resolved ({e.strerror or e})") from None
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(BACKLOG)
    except OSError as e:
        sock.close()
        raise UsageError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    sock.set_inheritable(True)
    return sock


class FileLimitNotice(logging.Filter):
    """Out of file descriptors (``ulimit -n``, many clients), asyncio logs every failed ``accept()``
    with its traceback, thousands a second (288 000 lines of stderr in 40 s at ``ulimit -n 64``):
    instead, one line at most every ``every`` seconds; connections wait until others close."""

    def __init__(self, every: float = 10.0):
        super().__init__()
        self.every, self.last = every, -math.inf

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not (isinstance(exc, OSError) and exc.errno in (errno.EMFILE, errno.ENFILE)):
            return True
        now = time.monotonic()
        if now - self.last < self.every:
            return False
        self.last = now
        try:
            import resource

            limit = f"; ulimit -n is {resource.getrlimit(resource.RLIMIT_NOFILE)[0]}"
        except (ImportError, OSError, ValueError):
            limit = ""
        record.msg = (f"cannot accept a connection: {exc.strerror}{limit}; new connections wait until "
                      "others close (raise the limit for more clients)")
        record.args, record.exc_info, record.exc_text, record.levelno, record.levelname = \
            (), None, None, logging.WARNING, "WARNING"
        return True
