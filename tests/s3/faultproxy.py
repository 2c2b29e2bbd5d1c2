"""A tiny HTTP/1.1 proxy on loopback that forwards to an S3 endpoint and injects faults on cue.

It forwards requests and responses byte for byte (so SigV4 signatures, aws-chunked bodies and ranged
GETs pass untouched) and, for requests matching a :class:`Fault`, answers instead of the store:

- ``slowdown``: 503 with S3's ``SlowDown`` error (throttling; retryable)
- ``internal``: 500 with ``InternalError`` (retryable)
- ``drop``: closes the connection after reading the request, without any response (retryable)
- ``truncate``: forwards the response headers and half of the body, then closes (a body that breaks off)
- ``denied``: 403 with ``AccessDenied`` (permanent)

:meth:`FaultProxy.stop` closes the listening socket and every open connection (the endpoint is down:
connections are refused); :meth:`FaultProxy.start` listens again on the same port.
"""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass, field
from urllib.parse import urlsplit

_ERRORS = {
    "slowdown": (503, "Slow Down", "SlowDown", "Please reduce your request rate."),
    "internal": (500, "Internal Server Error", "InternalError", "We encountered an internal error."),
    "denied": (403, "Forbidden", "AccessDenied", "Access Denied"),
}


@dataclass
class Fault:
    """Fail the next ``times`` requests that match ``method`` and ``path_prefix`` (None = any)."""

    kind: str
    times: int = 1
    method: str | None = None
    path_prefix: str | None = None
    injected: int = 0

    def matches(self, method: str, path: str) -> bool:
        return (
            self.injected < self.times
            and (self.method is None or self.method == method)
            and (self.path_prefix is None or path.startswith(self.path_prefix))
        )


@dataclass
class Seen:
    method: str
    path: str
    outcome: str  # "forwarded" or the fault kind


@dataclass
class FaultProxy:
    upstream_port: int
    port: int = 0
    faults: list[Fault] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._conns: set[socket.socket] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def fail(
        self, kind: str, *, times: int = 1, method: str | None = None, path_prefix: str | None = None
    ) -> Fault:
        assert kind in (*_ERRORS, "drop", "truncate"), kind
        fault = Fault(kind, times, method, path_prefix)
        with self._lock:
            self.faults.append(fault)
        return fault

    def requests(self, method: str | None = None, path_prefix: str = "") -> list[Seen]:
        with self._lock:
            return [
                s
                for s in self.seen
                if (method is None or s.method == method) and s.path.startswith(path_prefix)
            ]

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> FaultProxy:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def stop(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            # shutdown() first: close() alone leaves a socket that a thread blocks on in accept()
            # listening until that accept() returns, and it would let one more connection in.
            _close(listener)
        with self._lock:
            conns, self._conns = set(self._conns), set()
        for conn in conns:
            _close(conn)

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return  # listener closed
            with self._lock:
                self._conns.add(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    # ------------------------------------------------------------------- serving
    def _serve(self, client: socket.socket) -> None:
        upstream: socket.socket | None = None
        reader = client.makefile("rb")
        try:
            while True:
                request = _read_message(reader, response_to=None, client=client)
                if request is None:
                    return
                head, raw = request
                method, target = head[0].split(" ")[:2]
                path = urlsplit(target).path
                fault = self._take_fault(method, path)
                with self._lock:
                    self.seen.append(Seen(method, path, fault.kind if fault else "forwarded"))
                if fault is not None and fault.kind == "drop":
                    return
                if fault is not None and fault.kind in _ERRORS:
                    client.sendall(_error_response(fault.kind, method))
                    continue
                if upstream is None:
                    upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
                    up_reader = upstream.makefile("rb")
                upstream.sendall(raw)
                response = _read_message(up_reader, response_to=method)
                if response is None:
                    return
                resp_head, resp_raw = response
                if fault is not None and fault.kind == "truncate":
                    header_end = resp_raw.index(b"\r\n\r\n") + 4
                    body_len = len(resp_raw) - header_end
                    client.sendall(resp_raw[: header_end + body_len // 2])
                    return
                client.sendall(resp_raw)
                if _header(resp_head, "connection").lower() == "close":
                    return
        except OSError:
            return
        finally:
            _close(client)
            if upstream is not None:
                _close(upstream)
            with self._lock:
                self._conns.discard(client)

    def _take_fault(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.matches(method, path):
                    fault.injected += 1
                    return fault
        return None


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


def _header(head: list[str], name: str) -> str:
    for line in head[1:]:
        key, _, value = line.partition(":")
        if key.strip().lower() == name:
            return value.strip()
    return ""


def _read_message(reader, *, response_to: str | None, client=None) -> tuple[list[str], bytes] | None:
    """Read one HTTP/1.1 message; return its head lines and its bytes (None at EOF).

    A request's ``Expect: 100-continue`` is answered here (on ``client``) and not forwarded, so
    that clients do not wait for their expect timeout on every upload.
    """
    head: list[str] = []
    while True:
        line = reader.readline(65537)
        if not line:
            return None
        if line in (b"\r\n", b"\n"):
            if head:
                break
            continue  # tolerate blank lines between messages
        head.append(line.decode("latin-1").rstrip("\r\n"))
    if client is not None and _header(head, "expect").lower() == "100-continue":
        head = [h for h in head if not h.lower().startswith("expect:")]
        client.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
    raw = bytearray("".join(h + "\r\n" for h in head).encode("latin-1") + b"\r\n")
    status = int(head[0].split(" ")[1]) if response_to is not None else 0
    if response_to == "HEAD" or status in (204, 304) or 100 <= status < 200:
        return head, bytes(raw)
    if "chunked" in _header(head, "transfer-encoding").lower():
        while True:
            size_line = reader.readline(65537)
            raw += size_line
            size = int(size_line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while True:  # trailers, then the blank line
                    trailer = reader.readline(65537)
                    raw += trailer
                    if trailer in (b"\r\n", b"\n", b""):
                        break
                break
            raw += reader.read(size + 2)
    elif length := _header(head, "content-length"):
        raw += reader.read(int(length))
    elif response_to is not None:
        raw += reader.read()  # body delimited by the connection closing
    return head, bytes(raw)


def _error_response(kind: str, method: str) -> bytes:
    status, reason, code, message = _ERRORS[kind]
    body = (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message>'
        f"<RequestId>sanyi-fault</RequestId></Error>"
    ).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/xml\r\n"
        f"Content-Length: {len(body)}\r\nx-amz-request-id: sanyi-fault\r\n\r\n"
    ).encode()
    return head if method == "HEAD" else head + body
