"""A tiny provider that notes the headers of each request it gets and answers a fixed chat
completion (OpenAI, whole or streamed with a pause between events) or message (Anthropic):
what a traced gateway sent upstream, as the upstream saw it."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

USAGE = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
CHAT = {
    "id": "chatcmpl-rec",
    "object": "chat.completion",
    "created": 0,
    "model": "rec-gpt",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
    "usage": USAGE,
}
MESSAGE = {
    "id": "msg_rec",
    "type": "message",
    "role": "assistant",
    "model": "rec-claude",
    "content": [{"type": "text", "text": "hi"}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {"input_tokens": 3, "output_tokens": 2},
}


def _chunk(delta: dict, finish: str | None = None, usage: dict | None = None) -> bytes:
    choices = [{"index": 0, "delta": delta, "finish_reason": finish}] if usage is None else []
    event = {"id": "chatcmpl-rec", "object": "chat.completion.chunk", "created": 0, "model": "rec-gpt"}
    event["choices"] = choices
    if usage is not None:
        event["usage"] = usage
    return b"data: " + json.dumps(event).encode() + b"\n\n"


class RecordingUpstream:
    """`seen` holds (path, {header: value}) per request, lowercase names; `pause_s` is the
    time between a stream's events."""

    def __init__(self, pause_s: float = 0.3) -> None:
        self.seen: list[tuple[str, dict[str, str]]] = []
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))))
                upstream.seen.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
                if self.path.endswith("/messages"):
                    return self._whole(MESSAGE)
                if not body.get("stream"):
                    return self._whole(CHAT)
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.send_header("transfer-encoding", "chunked")
                self.end_headers()
                events = [
                    _chunk({"role": "assistant", "content": "h"}),
                    _chunk({"content": "i"}, "stop"),
                    _chunk({}, usage=USAGE),
                    b"data: [DONE]\n\n",
                ]
                for i, event in enumerate(events):
                    if i:
                        time.sleep(pause_s)
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
                    self.wfile.flush()
                self.wfile.write(b"0\r\n\r\n")

            def _whole(self, answer: dict) -> None:
                data = json.dumps(answer).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> RecordingUpstream:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
