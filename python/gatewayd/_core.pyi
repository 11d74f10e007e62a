"""Type stubs for the Rust extension (rust/py): the gateway's hot path."""

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Literal, TypedDict

from gatewayd.control.snapshot import Served

Verdict = Literal["allow", "deny", "invalid", "unroutable", "rejected"]
CacheState = Literal["hit", "miss", "bypass"]
FsyncPolicy = Literal["never", "interval", "group", "always"]
Inflight = Literal["finished-after-revert", "cut-on-revert"]  # Engine.record: what a revert did to a stream

FSYNC_POLICIES: list[FsyncPolicy]  # the audit writer's policies, as the runtime config names them
LATENCY_BUCKETS: list[float]  # upper bounds (seconds) of the request latency histogram; +Inf implied
STICKY_BUCKETS: int  # canary shares are counted in this many sticky buckets (0.01 % each)

Position = Literal["current", "candidate"]

def sticky_bucket(*, api: str, sticky: str | None, body: bytes, key: str) -> int:
    """The request's bucket (0..STICKY_BUCKETS): a hash of its x-gatewayd-sticky header, else
    its end user (OpenAI `user`, Anthropic `metadata.user_id`), else the caller's key."""

# The dicts the extension returns, key by key (rust/py/src/audit.rs). These TypedDicts exist
# for the type checker only: the extension has no such names at run time.
RootCheck = Literal["matches", "retired", "differs", "not checked"]

class ChainVerification(TypedDict):
    records: int
    segments: int
    first_segment: int
    first_seq: int
    head_seq: int
    head_hash: str  # hex
    root: str  # base64
    tail_bytes: int
    checkpoints: list[tuple[str, int, RootCheck]]  # (note path, size, root check)
    problems: list[str]

class InclusionProof(TypedDict):
    seq: int
    size: int
    record: bytes
    leaf: str  # base64, as every hash below
    hashes: list[str]
    root: str

class ConsistencyProof(TypedDict):
    old_size: int
    new_size: int
    old_root: str
    new_root: str
    hashes: list[str]

class AuditOpened(TypedDict):
    created: bool
    torn_tail: tuple[str, int, int] | None  # (segment, offset, bytes cut)
    checkpoint: int | None  # the checkpoint size the chain was re-verified from

class GatewaydError(Exception):
    """Base of every error gatewayd raises on purpose (gatewayd.errors derives from it)."""

class CompileError(GatewaydError):
    """A policy or routing document that does not compile; the message names the field."""

class AuditError(GatewaydError):
    """The audit chain could not be opened, written or read."""

class ChainCorruptError(AuditError):
    """A chain whose stored bytes are not a valid chain: leave it alone for forensics."""

class StreamTranslationError(GatewaydError):
    """An upstream stream event that cannot be read or translated into the caller's protocol."""

class StreamTranslator:
    """One stream's translation between the OpenAI and Anthropic protocols (issue 14)."""

    def __init__(self, *, from_anthropic: bool, include_usage: bool = False) -> None: ...
    def feed(self, chunk: bytes) -> bytes:
        """The caller's events for what `chunk` completes (empty while an event is partial
        or has no counterpart); raises StreamTranslationError."""

class Policy:
    """A compiled policy version. Raises CompileError naming the field on a bad document."""

    version: int
    def __init__(self, doc_json: bytes, version: int) -> None: ...
    @property
    def header_names(self) -> list[str]: ...
    @property
    def rule_count(self) -> int: ...

class Routing:
    """A compiled routing version, checked against the configured (name, kind) providers."""

    version: int
    def __init__(self, doc_json: bytes, version: int, providers: list[tuple[str, str]]) -> None: ...
    @property
    def models(self) -> list[str]: ...

class CacheMode:
    """How one request may use the response cache."""

    OFF: CacheMode
    DETERMINISTIC: CacheMode  # only deterministic requests: temperature 0, and embeddings
    FORCED: CacheMode  # the caller asked for caching explicitly

class Versions:
    """The policy, routing and config versions a request was served under (R3), and which
    were served from a candidate position (`candidates`: policy 1, routing 2, config 4)."""

    policy: int
    routing: int
    config: int
    candidates: int
    def __init__(self, policy: int, routing: int, config: int, candidates: int = 0) -> None: ...
    @property
    def positions(self) -> list[tuple[str, Position]]: ...
    def __hash__(self) -> int: ...

class Fallback:
    """An upstream to try when the one before it fails the request, with its body."""

    provider: str
    model: str
    body: bytes

class Admission:
    """What `Engine.admit` decided: answer with an error, from cache, or go upstream."""

    served: Served  # what the request is served under, given to admit: every later decision reads it (R6)
    request_id: str
    api: str
    verdict: Verdict
    status: int  # the status to answer with when the verdict is not "allow"
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
    fallbacks: list[Fallback]  # to try in order when the provider fails
    cache: CacheState
    cache_key: str | None
    cached_body: bytes | None
    cached_status: int
    cached_content_type: str
    cached_usage: tuple[int, int, int] | None
    versions: Versions
    def answer_headers(
        self, content_type: bytes | None = None, extra: Iterable[tuple[bytes, bytes]] | None = None
    ) -> list[tuple[bytes, bytes]]:
        """`content_type` (None: the cached answer's), then every answer's headers (R3:
        request id, versions, positions, cache), then `extra`."""

class Seen:
    """What a request's headers say, found in one pass (HeaderScanner.scan)."""

    caller: Any  # who the first authorization or x-api-key header names (KeyTable's value), or None
    key: str | None  # the key as sent in that header (Bearer and whitespace stripped)
    request_id: str  # the caller's x-request-id when sane, else a fresh one (32 hex digits)
    content_length: int | None  # the last content-length, when all digits
    cache: bytes | None  # x-gatewayd-cache, lowercased
    vary: str  # the answer-changing forwarded headers, "name:value\n" each: part of the cache key
    transfer_encoding: list[bytes] | None  # every transfer-encoding value, when any was sent
    sticky: str | None  # x-gatewayd-sticky

class KeyTable:
    """Callers by the SHA-256 digest of their key; remembers the header values found valid."""

    def __init__(self, callers: Mapping[bytes, Any]) -> None: ...
    def replace(self, callers: Mapping[bytes, Any]) -> None: ...
    def caller_for(self, name: bytes, value: bytes) -> Any: ...

class HeaderScanner:
    def __init__(self, answer_changing: list[bytes]) -> None: ...
    def scan(self, headers: Sequence[tuple[bytes, bytes]], keys: KeyTable) -> Seen: ...

class Engine:
    """One replica's response cache and audit chain."""

    def __init__(
        self, cache_entries: int, cache_bytes: int, audit_dir: str, chain: str, segment_bytes: int
    ) -> None: ...
    def admit(
        self,
        *,
        served: Served,
        api: str,
        tenant: str,
        request_id: str,
        headers: Sequence[tuple[bytes, bytes]],
        body: bytes,
        cache: CacheMode,
        vary: str,
        waited_s: float = 0.0,
    ) -> Admission: ...
    def reject(
        self,
        *,
        served: Served,
        api: str,
        tenant: str,
        request_id: str,
        status: int,
        code: str,
        message: str,
        waited_s: float = 0.0,
    ) -> Admission: ...
    def record(
        self,
        admission: Admission,
        *,
        status: int,
        error: str | None = None,
        response: bytes | None = None,
        response_sha256: str | None = None,
        cache_ttl_s: float = 0.0,
        upstream: int = 0,  # who answered: 0 the provider, i its fallback i-1
        failovers: list[str] = ...,  # "<provider>: <why>" for each upstream that failed first
        inflight: Inflight | None = None,  # what a revert did to the request in flight (R6)
        reverted_by: int = 0,  # the change after which its version set was no longer served
        upstream_api: str | None = None,  # the answering upstream's API, when translated into it
        key: str | None = None,  # the caller's key by name
        counts: tuple[int, int, int] | None = None,  # (prompt, completion, cached) tokens reported
        saved: bool = False,  # a cache hit: its tokens are the cached answer's, what it saved
    ) -> tuple[int, float | None]:
        """(seq, cost): usage is priced under the admission's config version (its `prices`,
        looked up once per model) and counted in `usage_rows` when a key is named. Raises
        AuditError (ChainCorruptError) when the record cannot be appended."""
    def usage_rows(
        self,
    ) -> list[tuple[tuple[str, str, str, str, int, str], tuple[int, int, int, int, float, int, int, float]]]:
        """By (tenant, key, model, provider, price version, currency): requests, prompt,
        completion, cached tokens, cost, then cache hits' saved prompt, completion, cost."""
    def event(self, fields_json: bytes) -> int: ...
    def fence(self, active: list[Versions]) -> int: ...
    def set_audit_sync(self, policy: FsyncPolicy, interval_ms: int) -> None:
        """Only `always` syncs inside an append."""
    def audit_sync_state(self) -> tuple[FsyncPolicy, int, int, int]:
        """(policy, interval_ms, head seq, synced seq)."""
    def sync_audit(self) -> int:
        """Syncs what was appended so far without holding up appends; the synced seq."""
    def record_hit(self, admission: Admission, key: str) -> int:
        """A cache hit's record (`record` with the cached status, `key`, saved=True); its seq."""
    def release_audit_reserve(self) -> None:
        """At shutdown: the segment ends with its last record, without the space reserved."""
    def audit_head(self) -> tuple[int, str]: ...
    def audit_dir(self) -> str: ...
    def audit_opened(self) -> AuditOpened:
        """created, torn_tail (segment, offset, bytes cut) or None, checkpoint size or None."""
    def audit_checkpoint(self, origin: str) -> tuple[int, str]:
        """The synced tree head as (size, C2SP checkpoint note body) of `<origin>/<chain>`."""
    def audit_plan_retention(self, max_age_s: float, max_bytes: int) -> RetentionPlan | None: ...
    def audit_apply_retention(self, plan: RetentionPlan) -> int: ...
    def metrics_json(self) -> bytes:
        """Requests, shadow decisions and cache counters, as JSON with the Rust names."""

class RetentionPlan:
    """A retention decision, already recorded in the chain."""

    first_segment: int
    first_seq: int
    segments: int
    bytes: int
    record_seq: int

class AuditReader(Iterator[bytes]):
    """One chain's record payloads in order, verified as read (ChainCorruptError at a break);
    from the segment holding `from_seq`, filtered on `ts` (records' own form, as text)."""

    def __init__(
        self, root: str, chain: str, from_seq: int = 0, ts_from: str | None = None, ts_to: str | None = None
    ) -> None: ...
    def __next__(self) -> bytes: ...

def verify_chain(root: str, chain: str) -> ChainVerification:
    """Counts, head, base64 root, `checkpoints` as [(note path, size, root check)] (root
    check: matches | retired | differs | not checked) and `problems`: every problem found,
    one line each, empty for an intact chain."""

def list_chains(root: str) -> list[str]: ...
def parse_checkpoint(note: str) -> tuple[str, int, str]:
    """(origin, size, base64 root); signatures are not checked."""

def prove_inclusion(root: str, chain: str, seq: int, size: int) -> InclusionProof: ...
def prove_consistency(root: str, chain: str, old_size: int, new_size: int) -> ConsistencyProof: ...
