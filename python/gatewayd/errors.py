"""One base class for every error gatewayd raises on purpose, and one table for what each
kind means to a caller: the CLI's exit code and the HTTP status and error code of the
admin API. The CLI and the admin API catch `GatewaydError` once and look the error up here.

The base is the Rust extension's own `GatewaydError`, so errors raised in Rust (a document
that does not compile, an audit chain that cannot be written) are caught the same way;
nothing catches bare `OSError` or `ValueError` to mean "ours".
"""

from __future__ import annotations

from typing import NamedTuple

from gatewayd._core import AuditError, ChainCorruptError, GatewaydError

__all__ = [
    "AuditError",
    "BadInputError",
    "ChainCorruptError",
    "ConflictError",
    "ContractMismatchError",
    "DocumentError",
    "GatewaydError",
    "NotFoundError",
    "StoreLostError",
    "StoreUnavailableError",
    "Meaning",
    "meaning",
]


class BadInputError(GatewaydError):
    """Refused before anything changed: a bad file, field, argument or request."""


class DocumentError(BadInputError):
    """A document that cannot be parsed or compiled; the message names the file and field."""


class ConflictError(GatewaydError):
    """A compare-and-set lost: the pointer moved since the caller read it."""

    @classmethod
    def moved(cls, domain: str, scope: str, current: int | None, expected: int | None) -> ConflictError:
        return cls(f"{domain}/{scope} moved to version {current} (expected {expected}); re-read and try again")

    @classmethod
    def candidate_moved(cls, domain: str, scope: str, current: object, expected: object) -> ConflictError:
        def said(candidate) -> str:
            return f"version {candidate.version} at {candidate.share / 100:g}%" if candidate else "none"

        return cls(
            f"{domain}/{scope}'s candidate moved to {said(current)} (expected {said(expected)}); re-read and try again"
        )


class ContractMismatchError(GatewaydError):
    """A routing change refused because the upstreams of its two positions answer the same
    probes in different shapes (docs/ROLLBACK.md R11); nothing was changed. The message is
    one line; `differences` lists them, one line each: the CLI prints them below it, the
    admin API joins them into its message."""

    def __init__(self, message: str, differences: list[str]):
        super().__init__(message)
        self.differences = differences


class StoreUnavailableError(GatewaydError):
    """The control store did not answer. A write may or may not have landed: re-read first."""


class StoreLostError(GatewaydError):
    """The store is not the one whose history was seen (empty, another epoch, or behind):
    writing to it could give a used version number to another document (R17). Refused
    before anything was written."""


class NotFoundError(BadInputError):
    """A version, domain or record the caller named does not exist."""


class Meaning(NamedTuple):
    exit_code: int  # 2: bad input, nothing changed; 1: the operation ran and failed
    status: int  # the admin API's HTTP status
    code: str  # the admin API's error code


# Most specific first: the first class an error is an instance of decides.
_TABLE: tuple[tuple[type[BaseException], Meaning], ...] = (
    (DocumentError, Meaning(2, 400, "invalid_document")),
    (NotFoundError, Meaning(2, 404, "not_found")),
    (StoreLostError, Meaning(2, 503, "store_lost")),
    (BadInputError, Meaning(2, 400, "invalid_request")),
    (ContractMismatchError, Meaning(2, 409, "contract_mismatch")),
    (ConflictError, Meaning(1, 409, "conflict")),
    (StoreUnavailableError, Meaning(1, 503, "store_unavailable")),
    (AuditError, Meaning(1, 503, "audit_unavailable")),
    (GatewaydError, Meaning(1, 500, "internal_error")),
)


def meaning(exc: GatewaydError) -> Meaning:
    for kind, what in _TABLE:
        if isinstance(exc, kind):
            # A CLI error may say the operation ran and failed (exit 1) rather than refused.
            exit_code = getattr(exc, "exit_code", what.exit_code)
            return what._replace(exit_code=exit_code)
    raise TypeError(f"{type(exc).__name__} is not a GatewaydError")
