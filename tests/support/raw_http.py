"""Raw HTTP/1.1 over a socket, for tests of what no client library would send."""

from __future__ import annotations

import json
import socket


def read_until_closed(sock: socket.socket, timeout: float) -> bytes | None:
    """Everything the server sent until it closed the connection; None if it never did."""
    sock.settimeout(timeout)
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except ConnectionResetError:
        pass
    except TimeoutError:
        return None
    return received


def status_and_headers(response: bytes) -> tuple[int, dict[str, str]]:
    """The status and the (lower-cased) headers of one response."""
    head = response.partition(b"\r\n\r\n")[0].decode().split("\r\n")
    return int(head[0].split()[1]), dict(line.lower().split(": ", 1) for line in head[1:])


def status_and_body(response: bytes) -> tuple[int, dict | None]:
    """The status and the JSON body of one response (chunked or not; None when empty)."""
    head, _, body = response.partition(b"\r\n\r\n")
    if b"transfer-encoding: chunked" in head.lower():
        body = body.split(b"\r\n", 1)[1].rsplit(b"\r\n0\r\n", 1)[0]
    return int(head.split()[1]), json.loads(body) if body else None
