"""Reusable test helpers: real local servers (DNS) that tests and interop runs share."""
