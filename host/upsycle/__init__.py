"""UPSYCLE on the host: proxy, client, CLI (CPython only)."""
