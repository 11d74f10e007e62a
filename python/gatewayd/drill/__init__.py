"""Rollback drills: a cluster, locust load, the four scenarios, reports."""
