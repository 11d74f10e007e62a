"""Where issue 14's translation runs, chosen by measurement: the Python translation
(gatewayd.translate, msgspec) against a Rust candidate (rust/core/examples/
translate_candidate.rs, serde), on a typical chat request and one Anthropic text-delta
event, in one run; plus what one crossing into the extension costs, which a Rust
translation called from the pipeline would pay per request and per chunk.

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
    translation = Translation("chat", "messages")
    request_ns = best_ns(lambda: translation.request(REQUEST), 20_000)
    stream = translation.stream()
    stream.feed(START)
    chunk_ns = best_ns(lambda: stream.feed(DELTA), 100_000)
    return {"request_ns": round(request_ns), "chunk_ns": round(chunk_ns)}


def rust_figures() -> dict:
    root = HERE.parent
    env = {**os.environ, "CARGO_TARGET_DIR": os.environ.get("CARGO_TARGET_DIR", str(root / "target"))}
    with tempfile.TemporaryDirectory() as tmp:
        request, chunk = Path(tmp, "request.json"), Path(tmp, "chunk.sse")
        request.write_bytes(REQUEST)
        chunk.write_bytes(DELTA)
        argv = ["cargo", "run", "--release", "-q", "-p", "gatewayd-core", "--example", "translate_candidate"]
        done = subprocess.run([*argv, "--", str(request), str(chunk)], cwd=root, env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def crossing_ns() -> float:
    """One call into the extension with bytes in and an int out: the least a Rust
    translation called from Python would pay on top of its own work."""
    return round(best_ns(lambda: _core.sticky_bucket(api="chat", sticky="x", body=b"", key="k"), 200_000))


def main() -> None:
    py, rs, crossing = python_figures(), rust_figures(), crossing_ns()
    result = {
        "python": py,
        "rust": rs,
        "crossing_ns": crossing,
        "rust_with_crossing_over_python": {
            "request": round((rs["request_ns"] + crossing) / py["request_ns"], 3),
            "chunk": round((rs["chunk_ns"] + crossing) / py["chunk_ns"], 3),
        },
        "request_bytes": len(REQUEST),
    }
    print(json.dumps(result, indent=2))
    out = HERE / "results" / "translate.json"
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
