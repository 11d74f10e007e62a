"""Where issue 14's translation runs, chosen by measurement, in one run: a typical chat
request translated by the shipped Python (gatewayd.translate, msgspec) against a Rust
candidate (rust/core/examples/translate_candidate.rs, serde, plus one crossing into the
extension, which a Rust translation called from the pipeline would pay); and one
Anthropic text-delta event translated by the shipped Rust (`_core.StreamTranslator`,
called from Python as the pipeline does) against the Python candidate
(bench/python_stream_candidate.py).

    python bench/translate_bench.py        # prints and writes bench/results/translate.json
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import timeit
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from gateway_bench import PROMPT  # noqa: E402
from python_stream_candidate import AnthropicToOpenAIStream  # noqa: E402

from gatewayd import _core  # noqa: E402
from gatewayd.translate import Translation  # noqa: E402

REQUEST = json.dumps(
    {
        "model": "claude-sonnet-4-5",
        "messages": [{"role": "system", "content": "You are terse."}, {"role": "user", "content": PROMPT}],
        "max_tokens": 256,
        "temperature": 0.2,
        "stream": True,
    }
).encode()
START = (
    b'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_1","type":"message","role":'
    b'"assistant","model":"claude-sonnet-4-5","content":[],"stop_reason":null,"usage":{"input_tokens":9,'
    b'"output_tokens":1}}}\n\n'
)
DELTA = (
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
    b'"delta":{"type":"text_delta","text":"the quick brown fox jumps over"}}\n\n'
)


def best_ns(op, number: int) -> float:
    """The least time per call over 5 repeats: the least disturbed, on a shared box."""
    return min(timeit.repeat(op, number=number, repeat=5)) / number * 1e9


def python_figures() -> dict:
    """The shipped request translation; the candidate stream translation."""
    translation = Translation("chat", "messages")
    request_ns = best_ns(lambda: translation.request(REQUEST), 20_000)
    stream = AnthropicToOpenAIStream()
    stream.feed(START)
    chunk_ns = best_ns(lambda: stream.feed(DELTA), 100_000)
    return {"request_ns": round(request_ns), "chunk_ns": round(chunk_ns)}


def shipped_stream_ns() -> float:
    """The shipped stream translation, per chunk, called from Python (crossing included)."""
    stream = Translation("chat", "messages").stream()
    stream.feed(START)
    return round(best_ns(lambda: stream.feed(DELTA), 100_000))


def rust_figures() -> dict:
    root = HERE.parent
    env = {**os.environ, "CARGO_TARGET_DIR": os.environ.get("CARGO_TARGET_DIR", str(root / "target"))}
    with tempfile.TemporaryDirectory() as tmp:
        request, chunk = Path(tmp, "request.json"), Path(tmp, "chunk.sse")
        request.write_bytes(REQUEST)
        chunk.write_bytes(DELTA)
        argv = ["cargo", "run", "--release", "-q", "-p", "gatewayd-core", "--example", "translate_candidate"]
        done = subprocess.run(
            [*argv, "--", str(request), str(chunk)], cwd=root, env=env, capture_output=True, text=True, check=True
        )
    return json.loads(done.stdout)


def crossing_ns() -> float:
    """One call into the extension with bytes in and an int out: the least a Rust
    translation called from Python would pay on top of its own work."""
    return round(best_ns(lambda: _core.sticky_bucket(api="chat", sticky="x", body=b"", key="k"), 200_000))


def main() -> None:
    py, rs, crossing, shipped = python_figures(), rust_figures(), crossing_ns(), shipped_stream_ns()
    result = {
        "python": py,
        "rust": rs,
        "crossing_ns": crossing,
        "rust_stream_from_python_ns": shipped,
        "rust_over_python": {
            "request_with_crossing": round((rs["request_ns"] + crossing) / py["request_ns"], 3),
            "chunk_from_python": round(shipped / py["chunk_ns"], 3),
        },
        "request_bytes": len(REQUEST),
    }
    print(json.dumps(result, indent=2))
    out = HERE / "results" / "translate.json"
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
