"""An OTLP/HTTP trace receiver on loopback, as a collector would be: it decodes each
`ExportTraceServiceRequest` (protobuf, gzip or not) with opentelemetry-proto and keeps the
spans. Run as a script (`otlp.py PORT`) it only counts them (GET / answers the count): the
pipeline bench's receiver, in a process of its own so its work stays out of the bench's CPU
figures.
"""

from __future__ import annotations

import gzip
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

KINDS = {1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}


@dataclass
class Span:
    name: str
    trace_id: str  # hex, as in traceparent
    span_id: str
    parent_id: str  # "" for a root span
    kind: str
    start_ns: int
    end_ns: int
    status: int  # 0 unset, 1 ok, 2 error
    attributes: dict = field(default_factory=dict)
    resource: dict = field(default_factory=dict)


def _value(v):
    which = v.WhichOneof("value")
    return getattr(v, which) if which else None


def decode(body: bytes) -> list[Span]:
    request = ExportTraceServiceRequest()
    request.ParseFromString(body)
    spans = []
    for rs in request.resource_spans:
        resource = {a.key: _value(a.value) for a in rs.resource.attributes}
        for ss in rs.scope_spans:
            for s in ss.spans:
                spans.append(
                    Span(
                        name=s.name,
                        trace_id=s.trace_id.hex(),
                        span_id=s.span_id.hex(),
                        parent_id=s.parent_span_id.hex(),
                        kind=KINDS.get(s.kind, "unspecified"),
                        start_ns=s.start_time_unix_nano,
                        end_ns=s.end_time_unix_nano,
                        status=s.status.code,
                        attributes={a.key: _value(a.value) for a in s.attributes},
                        resource=resource,
                    )
                )
    return spans


class OtlpReceiver:
    """POST /v1/traces on a free loopback port; `spans` grows as exports arrive."""

    def __init__(self, keep: bool = True, port: int = 0) -> None:
        self.spans: list[Span] = []
        self.exports = 0
        self.received = 0  # spans
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                if self.headers.get("content-encoding") == "gzip":
                    body = gzip.decompress(body)
                ok = self.path == "/v1/traces" and self.headers.get("content-type") == "application/x-protobuf"
                if ok:
                    spans = decode(body)
                    with receiver.lock:
                        receiver.exports += 1
                        receiver.received += len(spans)
                        if keep:
                            receiver.spans.extend(spans)
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200 if ok else 400)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def do_GET(self) -> None:
                count = str(receiver.received).encode()
                self.send_response(200)
                self.send_header("content-length", str(len(count)))
                self.end_headers()
                self.wfile.write(count)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self) -> OtlpReceiver:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def trace(self, trace_id: str, count: int, timeout: float = 10) -> list[Span]:
        """The spans of `trace_id` once at least `count` have arrived (in start order)."""
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                spans = [s for s in self.spans if s.trace_id == trace_id]
            if len(spans) >= count or time.monotonic() > deadline:
                return sorted(spans, key=lambda s: s.start_ns)
            time.sleep(0.05)


if __name__ == "__main__":
    OtlpReceiver(keep=False, port=int(sys.argv[1])).server.serve_forever()
