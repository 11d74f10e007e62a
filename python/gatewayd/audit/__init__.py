"""The audit trail beyond the chain itself (which lives in Rust, gatewayd._core): signing
keys, signed checkpoints, fsync scheduling, retention, verification and shipping.
docs/AUDIT.md describes how they fit together; rust/core/src/audit/FORMAT.md the bytes."""

from gatewayd.audit.checkpoints import Checkpointer, checkpoint
from gatewayd.audit.keys import AuditKeyError, Signer, Verifier, load_keyring

__all__ = ["AuditKeyError", "Checkpointer", "Signer", "Verifier", "checkpoint", "load_keyring"]
