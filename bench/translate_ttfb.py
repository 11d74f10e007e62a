"""Streamed time to first byte through translation (issue 14), against the same stream
untranslated, in one run: a real `gatewayd serve` (one worker) and the bundled mock, an
OpenAI chat stream for a model routed to the Anthropic mock (translated both ways)
against the Anthropic messages stream it translates to (relayed as it is). Both read the
same upstream events. Requests alternate, so both see the same machine.

    python bench/translate_ttfb.py [--requests 300]   # prints and writes bench/results/translate_ttfb.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
from support.gateway import KEYS, PROVIDER_KEY, Gateway  # noqa: E402
from support.mock import start_mock  # noqa: E402
from support.procs import free_port, stop_process  # noqa: E402

PROMPT = "tell me a story about a gateway that speaks every protocol"
CASES = {
    "translated": (
        "/v1/chat/completions",
        {"model": "only-claude-ttfb", "messages": [{"role": "user", "content": PROMPT}]},
    ),
    "native": (
        "/v1/messages",
        {"model": "mock-claude", "max_tokens": 256, "messages": [{"role": "user", "content": PROMPT}]},
    ),
}


def first_byte_and_total(client: httpx.Client, path: str, body: dict) -> tuple[float, float]:
    started = time.perf_counter()
    with client.stream("POST", path, json={**body, "stream": True}) as response:
        assert response.status_code == 200, response.read()
        chunks = response.iter_raw()
        next(chunks)
        first = time.perf_counter() - started
        for _ in chunks:
            pass
    return first, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=300, help="streams of each kind")
    args = parser.parse_args()
    mock_url, mock = start_mock("--require-key", PROVIDER_KEY)
    try:
        with tempfile.TemporaryDirectory() as root:
            gateway = Gateway(Path(root), int(mock_url.rsplit(":", 1)[1]), free_port()).start()
            try:
                headers = {"authorization": f"Bearer {KEYS['acme']}", "x-gatewayd-cache": "bypass"}
                samples: dict[str, list[tuple[float, float]]] = {name: [] for name in CASES}
                with httpx.Client(base_url=gateway.url, headers=headers, timeout=30) as client:
                    for path, body in CASES.values():  # warm-up: connections, imports
                        for _ in range(20):
                            first_byte_and_total(client, path, body)
                    for _ in range(args.requests):
                        for name, (path, body) in CASES.items():
                            samples[name].append(first_byte_and_total(client, path, body))
            finally:
                gateway.stop()
    finally:
        stop_process(mock)
    result: dict = {"requests": args.requests}
    for name, values in samples.items():
        result[name] = {
            "ttfb_ms_median": round(statistics.median(v[0] for v in values) * 1000, 3),
            "total_ms_median": round(statistics.median(v[1] for v in values) * 1000, 3),
        }
    result["translated_over_native"] = {
        "ttfb": round(result["translated"]["ttfb_ms_median"] / result["native"]["ttfb_ms_median"], 3),
        "total": round(result["translated"]["total_ms_median"] / result["native"]["total_ms_median"], 3),
    }
    print(json.dumps(result, indent=2))
    (HERE / "results" / "translate_ttfb.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
