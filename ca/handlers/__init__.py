"""Thin HTTP handlers, one module per ACME resource; the flows live in `ca.accounts`, `ca.orders`, …"""
