"""Interop: real ACME clients (certbot, lego, uacme, certbot's `acme` library) against a running `acmeda serve`."""
