"""The sealing scheme: a SHA-256 hash chain over the records, each link MAC'd.

Everything here is the *definition* shared by the writer (``sqlite.py``) and the
checker (``verify.py``); docs/store.md states the same formulas in prose.

    genesis   = SHA-256("auditwatch/genesis/v1\\0" || store_id)
    hash[pos] = SHA-256("auditwatch/record/v1\\0" || hash[pos-1] || u64(pos)
                        || peer || u64(len(raw)) || raw)          hash[0] = genesis
    peer      = u8(1) || i64(uid) || i64(gid) || i64(pid)   or 25 zero bytes when unknown
    mac[pos]  = HMAC-SHA256(key, "auditwatch/record-mac/v1\\0" || hash[pos])
    head seal = HMAC-SHA256(key, "auditwatch/head-seal/v1\\0" || store_id || u64(pos)
                            || hash[pos])
    key check = HMAC-SHA256(key, "auditwatch/key-check/v1\\0" || store_id)

u64/i64 are big-endian. The labels end in NUL so no label is a prefix of another
input; the lengths make the hash input unambiguous.
"""

from __future__ import annotations

import hashlib
import struct
from typing import Any, Callable, NamedTuple

DOMAIN_GENESIS = b"auditwatch/genesis/v1\x00"
DOMAIN_RECORD = b"auditwatch/record/v1\x00"
DOMAIN_MAC = b"auditwatch/record-mac/v1\x00"
DOMAIN_SEAL = b"auditwatch/head-seal/v1\x00"
DOMAIN_KEYCHECK = b"auditwatch/key-check/v1\x00"

HASH_SIZE = 32
_U64 = struct.Struct(">Q")
# pos, peer-present flag, uid, gid, pid, len(raw): one pack call per record.
_LINK = struct.Struct(">QBqqqQ")


class PeerCred(NamedTuple):
    """The sender's credentials as the kernel reported them (SO_PEERCRED order).

    The store reads only the ``pid``, ``uid`` and ``gid`` attributes, so any object
    that has them will do (e.g. the collector's own credentials type).
    """

    pid: int
    uid: int
    gid: int


def _hmac_states(key: bytes) -> tuple[Any, Any]:
    # HMAC (RFC 2104) with the inner and outer pads absorbed once: per record this
    # leaves two state copies and two one-block compressions, about half the cost
    # of hmac.new(...) on every record.
    if len(key) > 64:
        key = hashlib.sha256(key).digest()
    key = key.ljust(64, b"\x00")
    inner = hashlib.sha256(bytes(b ^ 0x36 for b in key))
    outer = hashlib.sha256(bytes(b ^ 0x5C for b in key))
    return inner, outer


class Sealer:
    """Computes hashes and MACs for one store (its id) under one key."""

    def __init__(self, key: bytes, store_id: bytes) -> None:
        self.key = key  # for the native sealer (_ingest.seal_chunk), which does the same
        self.store_id = store_id
        self.genesis = hashlib.sha256(DOMAIN_GENESIS + store_id).digest()
        self._record_base = hashlib.sha256(DOMAIN_RECORD)
        inner, outer = _hmac_states(key)
        self._inner, self._outer = inner, outer
        self._mac_inner = inner.copy()
        self._mac_inner.update(DOMAIN_MAC)

    def _mac(self, msg: bytes) -> bytes:
        i = self._inner.copy()
        i.update(msg)
        o = self._outer.copy()
        o.update(i.digest())
        return o.digest()

    def record_hash(self, prev: bytes, pos: int, peer: PeerCred | None, raw: bytes) -> bytes:
        h = self._record_base.copy()
        h.update(prev + link_bytes(pos, peer, len(raw)) + raw)
        return h.digest()

    def record_mac(self, digest: bytes) -> bytes:
        i = self._mac_inner.copy()
        i.update(digest)
        o = self._outer.copy()
        o.update(i.digest())
        return o.digest()

    def seal_one(self, prev: bytes, pos: int, peer: PeerCred | None, raw: bytes) -> bytes:
        """prev_hash, hash and MAC of one record: its entry in a chunk's seal column."""
        digest = self.record_hash(prev, pos, peer, raw)
        return prev + digest + self.record_mac(digest)

    def seal_mac(self, pos: int, digest: bytes) -> bytes:
        return self._mac(DOMAIN_SEAL + self.store_id + _U64.pack(pos) + digest)

    def key_check(self) -> bytes:
        return self._mac(DOMAIN_KEYCHECK + self.store_id)

    def hot_functions(self) -> tuple[Callable[[], Any], Callable[[], Any], Callable[[], Any]]:
        """Bound ``copy`` methods for inlined loops: record base, MAC inner, MAC outer."""
        return self._record_base.copy, self._mac_inner.copy, self._outer.copy


def link_bytes(pos: int, peer: PeerCred | None, size: int) -> bytes:
    """The fixed-size middle of a record's hash input (see the module docstring)."""
    if peer is None:
        return _LINK.pack(pos, 0, 0, 0, 0, size)
    return _LINK.pack(pos, 1, peer.uid, peer.gid, peer.pid, size)


def peer_from_columns(uid: int | None, gid: int | None, pid: int | None) -> PeerCred | None:
    """The credentials a stored row was sealed with; ValueError when half-erased."""
    if uid is None and gid is None and pid is None:
        return None
    if uid is None or gid is None or pid is None:
        raise ValueError("peer credentials partly missing")
    return PeerCred(pid=pid, uid=uid, gid=gid)
