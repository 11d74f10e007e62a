"""The operator CLI on the embedded store: immutable versions, history, point-in-time
answers, and bad input answered in one line with nothing changed."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import time

import pytest

from support.gateway import Gateway

POLICY = "default: allow\nrules:\n  - {id: r%d, when: {prompt: {keywords: [k%d]}}, action: deny}\n"


@pytest.fixture(scope="module")
def gw(tmp_path_factory, mock_port, fragile_port):
    g = Gateway(tmp_path_factory.mktemp("reg"), mock_port, fragile_port).start()
    yield g
    g.stop()


def iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).isoformat().replace("+00:00", "Z")


def snapshot(gw: Gateway) -> tuple[str, str]:
    """Everything an operator can see of the registry: must not move on a refused call."""
    return gw.cli("history").stdout, gw.cli("status").stdout.splitlines()[0]


def test_show_returns_the_pushed_bytes_exactly(gw, tmp_path):
    original = b"# a comment that YAML would drop\ndefault: allow\nrules: []\n"
    (tmp_path / "p.yaml").write_bytes(original)
    out = gw.cli("push", "policy", str(tmp_path / "p.yaml"), "--reason", "bytes").stdout
    version = out.split(" version ")[1].split()[0]
    shown = gw.cli("show", "policy", version)
    assert shown.stdout.encode() == original


def test_at_answers_across_several_flips(gw, tmp_path):
    marks = []
    for i in range(3):
        (tmp_path / f"p{i}.yaml").write_text(POLICY % (i, i))
        out = gw.cli("push", "policy", str(tmp_path / f"p{i}.yaml"), "--reason", f"v{i}").stdout
        version = int(out.split(" version ")[1].split()[0])
        gw.cli("activate", "policy", str(version), "--reason", f"step {i}")
        time.sleep(0.05)
        marks.append((time.time(), version))
        time.sleep(0.05)
    gw.cli("rollback", "policy", "--reason", "undo last")
    time.sleep(0.05)
    after_rollback = time.time()
    for t, version in marks:
        out = gw.cli("at", iso(t)).stdout
        assert f"policy/default: version {version} " in out, out
        assert "acknowledged by 1 replica(s)" in out
    out = gw.cli("at", iso(after_rollback)).stdout
    assert f"policy/default: version {marks[1][1]} " in out
    assert "nothing was in effect" in gw.cli("at", "2000-01-01T00:00:00Z").stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (("push", "policy", "{doc}", "--reason", "bad regex"), "rules[0].when.prompt.regex[0]"),
        (("push", "policy", "{missing}", "--reason", "no file"), "No such file"),
        (("push", "routing", "{routing}", "--reason", "unknown provider"), 'unknown provider "nowhere"'),
        (("push", "secrets", "{doc}", "--reason", "x"), "invalid choice: 'secrets'"),
        (("activate", "policy", "999", "--reason", "x"), "policy version 999 does not exist"),
        (("activate", "policy", "1", "--reason", ""), "a reason is required"),
        (("activate", "policy", "1"), "the following arguments are required: --reason"),
        (("rollback", "config", "--reason", "x"), "config/default has no previous version"),
        (("at", "yesterday-ish"), "not an ISO 8601 time"),
        (("show", "policy", "abc"), "invalid int value: 'abc'"),
    ],
)
def test_bad_documents_and_calls_get_one_line_and_change_nothing(gw, tmp_path, args, message):
    (tmp_path / "bad.yaml").write_text("rules:\n  - id: x\n    when: {prompt: {regex: ['(unclosed']}}\n    action: deny\n")
    (tmp_path / "routing.yaml").write_text("routes:\n  - {match: '*', provider: nowhere}\n")
    argv = [
        a.format(doc=tmp_path / "bad.yaml", missing=tmp_path / "nope.yaml", routing=tmp_path / "routing.yaml")
        for a in args
    ]
    before = snapshot(gw)
    done = gw.cli(*argv, check=False)
    assert done.returncode == 2, done
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], done.stderr
    assert snapshot(gw) == before


def test_bad_config_file_is_named(tmp_path):
    path = tmp_path / "gatewayd.toml"
    path.write_text('[server]\nport = "eighty"\n[providers.x]\nkind = "openai"\nbase_url = "http://h/v1"\n')
    done = subprocess.run(
        [sys.executable, "-m", "gatewayd.cli", "--config", str(path), "status"], capture_output=True, text=True
    )
    assert done.returncode == 2
    assert str(path) in done.stderr and "$.server.port" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
