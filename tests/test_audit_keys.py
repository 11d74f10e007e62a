"""Checkpoint keys: created private, refused when exposed, never printed, and rotated
without losing the verifiability of older checkpoints."""

from __future__ import annotations

import os

import pytest

from gatewayd import _core, config
from gatewayd.audit import AuditKeyError, Signer, checkpoint
from gatewayd.audit.runtime import AuditRuntime
from support.audit import CHAIN, build_chain, cli, new_signer


def test_keygen_creates_a_private_key_and_prints_only_the_verifier_key(tmp_path):
    key, keyring = tmp_path / "audit.key", tmp_path / "keyring"
    done = cli("audit", "keygen", "--out", str(key), "--name", "example.com/audit", "--keyring", str(keyring))
    assert done.returncode == 0, done.stderr
    vkey = done.stdout.strip()
    assert vkey.startswith("example.com/audit+") and keyring.read_text() == vkey + "\n"
    assert os.stat(key).st_mode & 0o777 == 0o600
    seed = key.read_text().strip().split("+", 4)[4]
    pub = cli("audit", "pubkey", "--key", str(key))
    assert (pub.returncode, pub.stdout.strip()) == (0, vkey)
    for output in (done.stdout, done.stderr, pub.stdout, pub.stderr):
        assert seed not in output
    assert seed not in repr(Signer.load(key))

    again = cli("audit", "keygen", "--out", str(key))
    assert again.returncode == 2 and again.stderr.count("\n") == 1 and str(key) in again.stderr, again.stderr


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660])
def test_a_key_open_to_others_is_refused_with_one_line_naming_it(tmp_path, mode):
    key, _ = new_signer(tmp_path)
    os.chmod(key, mode)
    done = cli("audit", "pubkey", "--key", str(key))
    assert done.returncode == 2, done.stdout
    assert done.stderr.count("\n") == 1 and str(key) in done.stderr and "chmod 600" in done.stderr, done.stderr


def test_a_replica_refuses_to_start_with_an_exposed_key(tmp_path):
    key, _ = new_signer(tmp_path)
    os.chmod(key, 0o644)
    conf = tmp_path / "gatewayd.toml"
    conf.write_text(
        f'[audit]\nsigning_key = "{key}"\n[providers.p]\nkind = "openai"\nbase_url = "http://127.0.0.1:1"\n'
    )
    settings = config.load(conf, {})
    engine = _core.Engine(16, 1 << 20, str(tmp_path), CHAIN, 1 << 20)
    with pytest.raises(AuditKeyError, match="open to group or others"):
        AuditRuntime(engine, settings)


def test_rotation_keeps_older_checkpoints_verifiable(tmp_path):
    root = tmp_path / "audit"
    _, old = new_signer(tmp_path, "gatewayd.test/audit")
    _, new = new_signer(tmp_path, "gatewayd.test/audit")
    build_chain(root, 30, old, checkpoint_every=10)
    engine = _core.Engine(16, 1 << 20, str(root), CHAIN, 64 << 20)
    engine.event(b'{"kind":"request","request_id":"after-rotation"}')
    checkpoint(engine, new)
    del engine

    both = tmp_path / "keyring"
    both.write_text(f"# retired\n{old.verifier.text()}\n{new.verifier.text()}\n")
    done = cli("audit", "verify", "--dir", str(root), "--keyring", str(both))
    assert done.returncode == 0, done.stdout + done.stderr
    assert old.verifier.id.hex() in done.stdout and new.verifier.id.hex() in done.stdout

    only_new = tmp_path / "new-only"
    only_new.write_text(new.verifier.text() + "\n")
    done = cli("audit", "verify", "--dir", str(root), "--keyring", str(only_new))
    assert done.returncode == 1 and "signed by no key of the keyring" in done.stdout, done.stdout
