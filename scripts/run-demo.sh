#!/usr/bin/env bash
# `make run`: the bundled mock provider plus the gateway on its embedded store.
# With OPENAI_API_KEY / ANTHROPIC_API_KEY set, gpt-* and claude-* models go to the real APIs.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
mkdir -p var
[ -f var/audit.key ] || $BIN/gatewayd audit keygen --out var/audit.key --keyring var/audit.keyring
$BIN/gatewayd mock-upstream --port 9100 &
MOCK=$!
trap 'kill $MOCK 2>/dev/null' EXIT
echo "gatewayd: http://127.0.0.1:8080 (OpenAI SDK base_url http://127.0.0.1:8080/v1, Anthropic SDK base_url http://127.0.0.1:8080, key gw-demo-key)"
$BIN/gatewayd --config examples/gatewayd.toml serve "$@"
