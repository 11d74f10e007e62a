"""The admin HTTP API: the operator commands (status, history, versions, at, push,
activate, rollback, canary, kill switch, audit) over HTTP on a port of their own, with
bearer tokens and roles, and the operator console (sessions, a live view) at `/`."""
