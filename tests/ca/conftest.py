"""Fixtures of the in-process ACME app (see tests/ca/acme_app.py)."""

from tests.ca.acme_app import acme, make_config, responder, start_app  # noqa: F401
