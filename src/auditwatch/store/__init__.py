"""Record stores: sealed SQLite storage, verification, export and queries."""

from __future__ import annotations

from auditwatch.store.keys import KeyFileError, StoreError, StoreTampered
from auditwatch.store.query import StoredRecord, parse_time, query
from auditwatch.store.seal import PeerCred
from auditwatch.store.sqlite import Store, resolve_store_path
from auditwatch.store.verify import Problem, VerifyReport, verify

__all__ = [
    "KeyFileError",
    "PeerCred",
    "Problem",
    "Store",
    "StoreError",
    "StoreTampered",
    "StoredRecord",
    "VerifyReport",
    "parse_time",
    "query",
    "resolve_store_path",
    "verify",
]
