"""The admin HTTP API: the operator commands (status, history, versions, at, push,
activate, rollback) over HTTP on a port of their own, with bearer tokens and roles."""
