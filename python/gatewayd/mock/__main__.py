"""``python -m gatewayd.mock`` (also ``gatewayd mock-upstream``): run the mock LLM provider."""

from __future__ import annotations

import argparse

from .server import run

DESCRIPTION = "Mock OpenAI/Anthropic provider that echoes requests (x-mock-* headers override the knobs)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100)
    parser.add_argument("--latency-ms", type=float, default=0.0, help="delay before each response")
    parser.add_argument("--chunk-delay-ms", type=float, default=0.0, help="delay between stream events")
    parser.add_argument("--error-rate", type=float, default=0.0, help="probability of a random 500")
    parser.add_argument("--chunks", type=int, default=8, help="content pieces per stream")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--require-key", default=None, help="accept only this API key")


def run_from_args(args: argparse.Namespace) -> int:
    run(
        host=args.host,
        port=args.port,
        latency_ms=args.latency_ms,
        chunk_delay_ms=args.chunk_delay_ms,
        error_rate=args.error_rate,
        chunks=args.chunks,
        workers=args.workers,
        require_key=args.require_key,
    )
    return 0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m gatewayd.mock", description=DESCRIPTION)
    add_arguments(parser)
    run_from_args(parser.parse_args(argv))


if __name__ == "__main__":
    main()
