"""Which upstream a request tries next, apart from the calls (the pipeline makes them).

A request goes to its provider, then to each fallback in turn while they fail it before
answering. One ejected lately (gatewayd.server.health) is passed over without a call,
unless it is the request's last chance: a request is never failed without asking anyone.
"""

from __future__ import annotations

from gatewayd.server.health import ProviderHealth


class Failover:
    """One request's way through its upstreams: 0 is the provider, n its nth fallback."""

    __slots__ = ("_adm", "_fallbacks", "tried", "failovers")

    def __init__(self, adm) -> None:
        self._adm = adm  # the admission: .provider, .body, .fallbacks (each .provider, .body)
        # Read once a provider fails or is ejected: the admission builds the list, a copy
        # of the body for each fallback, when asked, and most requests never need it.
        self._fallbacks: list | None = None
        self.tried = 0  # the upstream to call now (0: the provider)
        self.failovers: list[str] = []  # "name: failure" of each upstream left behind

    @property
    def via(self) -> tuple[int, list[str]]:
        """What the audit record and the error message say: which upstream the answer (or
        the last failure) is from, and what failed before it."""
        return self.tried, self.failovers

    def upstream(self, health: ProviderHealth, now: float) -> tuple[str, bytes]:
        """The (name, body) to call now: the current upstream, or past it while the one
        reached is ejected at `now` and is not the last (each noted as "name: ejected")."""
        while True:
            # The provider read inline: every request asks for it, most for nothing else.
            name, body = self._current() if self.tried else (self._adm.provider, self._adm.body)
            if health.available(name, now) or self.last():
                return name, body
            self._next(name, "ejected")

    def failed(self, failure: str) -> bool:
        """The upstream just called failed before answering. False if it was the last: its
        failure is the request's answer. Else notes it and moves on to the next: True."""
        if self.last():
            return False
        self._next(self._current()[0], failure)
        return True

    def last(self) -> bool:
        """Whether the current upstream is the request's last chance."""
        return self.tried == len(self._alternatives())

    def _current(self) -> tuple[str, bytes]:
        if self.tried == 0:
            return self._adm.provider, self._adm.body
        fallback = self._alternatives()[self.tried - 1]
        return fallback.provider, fallback.body

    def _alternatives(self) -> list:
        if self._fallbacks is None:
            self._fallbacks = self._adm.fallbacks
        return self._fallbacks

    def _next(self, name: str, failure: str) -> None:
        self.failovers.append(f"{name}: {failure}")
        self.tried += 1
