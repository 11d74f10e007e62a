"""Type stubs for the Rust extension (rust/py): the gateway's hot path."""

from collections.abc import Iterator

class Policy:
    """A compiled policy version. Raises ValueError naming the field on a bad document."""

    def __init__(self, doc_json: bytes) -> None: ...
    @property
    def header_names(self) -> list[str]: ...
    @property
    def rule_count(self) -> int: ...

class Routing:
    """A compiled routing version, checked against the configured (name, kind) providers."""

    def __init__(self, doc_json: bytes, providers: list[tuple[str, str]]) -> None: ...
    @property
    def models(self) -> list[str]: ...

class Admission:
    """What `Engine.admit` decided: answer with an error, from cache, or go upstream."""

    request_id: str
    api: str
    verdict: str  # allow | deny | invalid | unroutable | rejected
    status: int
    code: str
    message: str
    rule: str | None
    matched: list[str]
    model: str
    stream: bool
    provider: str | None
    upstream_model: str | None
    redacted: bool
    body: bytes | None
    fallbacks: list[tuple[str, bytes]]  # (provider, body) to try in order when the provider fails
    cache: str  # hit | miss | bypass
    cache_key: str | None
    cached_body: bytes | None
    cached_status: int
    cached_content_type: str
    versions: tuple[int, int, int]

class Engine:
    """One replica's response cache and audit chain."""

    def __init__(self, cache_entries: int, cache_bytes: int, audit_dir: str, chain: str, segment_bytes: int) -> None: ...
    def admit(
        self,
        policy: Policy,
        policy_version: int,
        shadow: tuple[Policy, int] | None,
        routing: Routing,
        routing_version: int,
        config_version: int,
        api: str,
        tenant: str,
        request_id: str,
        headers: list[tuple[str, str]],
        body: bytes,
        cache_mode: int,
    ) -> Admission: ...
    def reject(
        self, api: str, tenant: str, request_id: str, status: int, code: str, message: str, versions: tuple[int, int, int]
    ) -> Admission: ...
    def record(
        self,
        admission: Admission,
        status: int,
        error: str | None,
        response: bytes | None,
        response_sha256: str | None,
        cache_ttl_s: float,
        upstream: int = 0,  # who answered: 0 the provider, i its fallback i-1
        failovers: list[str] = ...,  # "<provider>: <why>" for each upstream that failed first
    ) -> int: ...
    def event(self, fields_json: bytes) -> int: ...
    def fence(self, active: list[tuple[int, int, int]]) -> int: ...
    def set_audit_sync(self, policy: str, interval_ms: int) -> None:
        """never | interval | group | always; only `always` syncs inside an append."""
    def audit_sync_state(self) -> tuple[str, int, int, int]:
        """(policy, interval_ms, head seq, synced seq)."""
    def sync_audit(self) -> int:
        """Syncs what was appended so far without holding up appends; the synced seq."""
    def audit_head(self) -> tuple[int, str]: ...
    def audit_dir(self) -> str: ...
    def audit_opened(self) -> dict[str, object]:
        """created, torn_tail (segment, offset, bytes cut) or None, checkpoint size or None."""
    def audit_checkpoint(self, origin: str) -> tuple[int, str]:
        """The synced tree head as (size, C2SP checkpoint note body) of `<origin>/<chain>`."""
    def audit_plan_retention(self, max_age_s: float, max_bytes: int) -> RetentionPlan | None: ...
    def audit_apply_retention(self, plan: RetentionPlan) -> int: ...
    def cache_stats(self) -> dict[str, int]: ...
    def metrics_json(self) -> bytes: ...

class RetentionPlan:
    """A retention decision, already recorded in the chain."""

    first_segment: int
    first_seq: int
    segments: int
    bytes: int
    record_seq: int

class AuditReader(Iterator[bytes]):
    """One chain's record payloads in order, verified as read (ValueError at a break);
    from the segment holding `from_seq`, filtered on `ts` (records' own form, as text)."""

    def __init__(
        self, root: str, chain: str, from_seq: int = 0, ts_from: str | None = None, ts_to: str | None = None
    ) -> None: ...
    def __next__(self) -> bytes: ...

def verify_chain(root: str, chain: str) -> dict[str, object]:
    """Counts, head, base64 root and [(note path, size, retired)]; ValueError at a break."""

def list_chains(root: str) -> list[str]: ...
def parse_checkpoint(note: str) -> tuple[str, int, str]:
    """(origin, size, base64 root); signatures are not checked."""

def prove_inclusion(root: str, chain: str, seq: int, size: int) -> dict[str, object]: ...
def prove_consistency(root: str, chain: str, old_size: int, new_size: int) -> dict[str, object]: ...
