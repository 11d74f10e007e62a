"""`gatewayd audit ...`: verify the trail, manage checkpoint keys, prove records, and
query, export and ship records (those three are in audit_records.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from gatewayd import _core
from gatewayd.audit import note, trail
from gatewayd.audit.keys import AuditKeyError, Signer, Verifier, add_to_keyring, load_keyring
from gatewayd.cli import audit_records
from gatewayd.cli.audit_records import audit_root
from gatewayd.cli.common import CliError, Parser, load_settings, open_registry
from gatewayd.errors import ChainCorruptError

TLOG_PROOF = "c2sp.org/tlog-proof@v1"


def register(commands) -> None:
    audit = commands.add_parser("audit", help="verify, prove, query, export and ship the audit chains")
    verbs = audit.add_subparsers(dest="audit_command", required=True, parser_class=Parser)

    v = verbs.add_parser("verify", help="verify every chain, checkpoint and signature")
    _where(v)
    v.set_defaults(run=run_verify)

    k = verbs.add_parser("keygen", help="create a checkpoint signing key (mode 0600)")
    k.add_argument("--out", required=True, help="the key file to create; never overwritten")
    k.add_argument("--name", default="gatewayd/audit", help="the key name signature lines show")
    k.add_argument("--keyring", help="also append the verifier key to this keyring")
    k.set_defaults(run=run_keygen)

    p = verbs.add_parser("pubkey", help="print the verifier key of the signing key")
    p.add_argument("--key", help="signing key file (default: audit.signing_key of the config)")
    p.set_defaults(run=run_pubkey)

    pr = verbs.add_parser("prove", help="inclusion proof of a request's record against the latest checkpoint")
    pr.add_argument("request_id")
    _where(pr)
    pr.set_defaults(run=run_prove)

    c = verbs.add_parser("consistency", help="prove a later checkpoint extends an earlier one")
    c.add_argument("old", help="checkpoint note file")
    c.add_argument("new", help="checkpoint note file")
    _where(c)
    c.set_defaults(run=run_consistency)

    audit_records.register(verbs)


def _where(parser) -> None:
    parser.add_argument("--dir", help="audit directory (default: audit.dir of the config)")
    parser.add_argument("--keyring", help="verifier keys (default: audit.keyring, else the signing key's own)")


def _has_config(args) -> bool:
    return bool(getattr(args, "config", None) or os.environ.get("GATEWAYD_CONFIG"))


def _keyring(args) -> list[Verifier] | None:
    try:
        if args.keyring:
            return load_keyring(args.keyring)
        if not _has_config(args):
            return None
        return trail.configured_keyring(load_settings(args))
    except AuditKeyError as exc:
        raise CliError(str(exc)) from None


def run_verify(args) -> int:
    """Reports every problem of every chain, and every replica known to have served whose
    chain is missing; exit 1 if there is any. A run with a config is remembered in its
    control directory, for the alert on a trail left unverified."""
    root = audit_root(args)
    opener = None
    if _has_config(args):
        settings = load_settings(args)
        opener = lambda: open_registry(settings)  # noqa: E731
    result = trail.verify_trail(root, _keyring(args), opener)
    if not result.reports and not result.problems:
        print(f"no audit chains under {root}")
        return 1
    if opener is not None:
        trail.remember(settings.path(settings.control.dir), result)
    for r in result.reports:
        kept = f" (seq {r.first_seq} on; earlier records removed by retention)" if r.first_seq > 1 else ""
        signed = "no checkpoints: its end is not signed"
        if r.checkpoints:
            signed = f"{r.checkpoints} checkpoint(s) signed by {', '.join(sorted(r.signers))}"
        damage = f"; {len(r.problems)} problem(s), listed below" if r.problems else ""
        print(
            f"  {r.chain}: {r.records} records{kept} in {r.segments} segment(s), "
            f"head seq {r.head_seq}; {signed}{damage}"
        )
    for line in result.problems + result.notes:
        print(line)
    if result.problems:
        total = len({r.chain for r in result.reports} | result.known.keys())
        print(f"NOT INTACT: {len(result.problems)} problem(s); {len(result.affected)} of {total} chain(s) affected")
        return 1
    records = sum(r.records for r in result.reports)
    checkpoints = sum(r.checkpoints for r in result.reports)
    print(f"intact: {len(result.reports)} chain(s), {records} records, {checkpoints} checkpoint signature(s) verified")
    if result.registry_checked:
        print(f"every version the records name ({result.referenced}) resolves in the registry")
        print(f"every replica the registry knows of ({len(result.known)}) has its chain")
    return 0


def run_keygen(args) -> int:
    try:
        signer = Signer.generate(args.name)
        signer.save(args.out)
        if args.keyring:
            add_to_keyring(args.keyring, signer.verifier)
    except AuditKeyError as exc:
        raise CliError(str(exc)) from None
    print(signer.verifier.text())
    return 0


def run_pubkey(args) -> int:
    path = args.key
    if not path:
        settings = load_settings(args)
        if not settings.audit.signing_key:
            raise CliError("no signing key: pass --key FILE or set audit.signing_key")
        path = settings.path(settings.audit.signing_key)
    try:
        print(Signer.load(path).verifier.text())
    except AuditKeyError as exc:
        raise CliError(str(exc)) from None
    return 0


def _signed_checkpoint(path: Path, keyring: list[Verifier] | None) -> tuple[str, int, str, str]:
    """(origin, size, root, note text) of a checkpoint whose signature verifies."""
    if keyring is None:
        raise CliError("no keyring to check checkpoint signatures with: pass --keyring")
    try:
        text = path.read_text()
        note.verify(text, keyring)
        origin, size, root = _core.parse_checkpoint(text)
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"{path}: {exc}") from None
    except (note.NoteError, ValueError) as exc:
        raise CliError(f"{path}: {exc}", exit_code=1) from None
    return origin, size, root, text


def run_prove(args) -> int:
    root = audit_root(args)
    keyring = _keyring(args)
    needle = b'"request_id":' + json.dumps(args.request_id).encode()
    proofs = []
    for chain in _core.list_chains(root):
        seqs = [json.loads(p)["seq"] for p in _core.AuditReader(root, chain) if needle in p]
        if not seqs:
            continue
        notes = sorted((p for p in Path(root, chain, "checkpoints").glob("*.note") if p.stem.isdigit()), key=_size)
        if not notes or _size(notes[-1]) < max(seqs):
            latest = _size(notes[-1]) if notes else 0
            message = f"chain {chain}: seq {max(seqs)} is not covered by a checkpoint yet (latest: size {latest})"
            raise CliError(message, 1)
        _, size, checkpoint_root, text = _signed_checkpoint(notes[-1], keyring)
        for seq in seqs:
            proofs.append(_inclusion(root, chain, seq, size, checkpoint_root, text))
    if not proofs:
        raise CliError(f"no record of request {args.request_id} under {root}", 1)
    print(json.dumps({"request_id": args.request_id, "proofs": proofs}, indent=2))
    return 0


def _size(note_path: Path) -> int:
    return int(note_path.stem)


def _inclusion(root: str, chain: str, seq: int, size: int, checkpoint_root: str, note_text: str) -> dict:
    try:
        proof = _core.prove_inclusion(root, chain, seq, size)
    except (ChainCorruptError, ValueError) as exc:  # broken, or a seq/size out of range
        raise CliError(f"chain {chain}: {exc}", 1) from None
    if proof["root"] != checkpoint_root:
        raise CliError(f"chain {chain}: the chain no longer matches its checkpoint at size {size}", 1)
    lines = [TLOG_PROOF, f"index {seq - 1}", *proof["hashes"]]
    return {
        "chain": chain,
        "seq": seq,
        "index": seq - 1,
        "tree_size": size,
        "record": proof["record"].decode(),
        "leaf_hash": proof["leaf"],
        "proof": proof["hashes"],
        "root": proof["root"],
        "checkpoint": note_text,
        "tlog_proof": "\n".join(lines) + "\n\n" + note_text,
    }


def run_consistency(args) -> int:
    keyring = _keyring(args)
    old_origin, old_size, old_root, old_text = _signed_checkpoint(Path(args.old), keyring)
    new_origin, new_size, new_root, new_text = _signed_checkpoint(Path(args.new), keyring)
    if old_origin != new_origin:
        raise CliError(f"the checkpoints are of different logs: {old_origin} and {new_origin}")
    chain = new_origin.rsplit("/", 1)[-1]
    try:
        proof = _core.prove_consistency(audit_root(args), chain, old_size, new_size)
    except (ChainCorruptError, ValueError) as exc:  # broken, or sizes out of range
        raise CliError(f"chain {chain}: {exc}", 1) from None
    for label, size, signed, computed in (
        ("old", old_size, old_root, proof["old_root"]),
        ("new", new_size, new_root, proof["new_root"]),
    ):
        if signed != computed:
            what = f"the {label} checkpoint (size {size}) does not match the chain: history was rewritten"
            raise CliError(f"chain {chain}: {what}", 1)
    print(
        json.dumps(
            {
                "chain": chain,
                "old": {"size": old_size, "root": old_root, "checkpoint": old_text},
                "new": {"size": new_size, "root": new_root, "checkpoint": new_text},
                "proof": proof["hashes"],
            },
            indent=2,
        )
    )
    return 0
