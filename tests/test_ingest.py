"""auditwatch._ingest, the collector's native loops, against their Python definitions."""

from __future__ import annotations

import hashlib
import hmac
import random
import struct
from typing import Optional, Tuple

import pytest

from auditwatch import _ingest
from auditwatch.store.seal import DOMAIN_MAC, DOMAIN_RECORD, PeerCred, Sealer

# ---- seal_chunk ---------------------------------------------------------------------

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
Peer = Optional[Tuple[int, int, int]]  # (uid, gid, pid), as seal_chunk takes it


def expected(
    sealer: Sealer, records: list[bytes], first_pos: int, prev: bytes, peer: Peer
) -> bytes:
    """What seal_chunk must return, from seal.py's own functions."""
    cred = None if peer is None else PeerCred(pid=peer[2], uid=peer[0], gid=peer[1])
    out = []
    for i, raw in enumerate(records):
        digest = sealer.record_hash(prev, first_pos + i, cred, raw)
        out += [prev, digest, sealer.record_mac(digest)]
        prev = digest
    return b"".join(out)


def chunk(records: list[bytes]) -> bytes:
    return b"".join(r + b"\n" for r in records)


def random_record(rng: random.Random, size: int) -> bytes:
    return bytes(rng.choice(b'\x00\x01\x7f\x80\xff abc{}":,\r\t') for _ in range(size))


KEYS = [b"", b"k", bytes(range(32)), b"\xa5" * 64, b"\x5a" * 65, bytes(range(200))]
PEERS: list[Peer] = [
    None,
    (0, 0, 1),
    (1000, 1000, 4242),
    (-1, -2, -3),
    (INT64_MAX, INT64_MIN, 2**40 + 7),
    (INT64_MIN, INT64_MAX, -1),
]


@pytest.mark.parametrize("key", KEYS, ids=lambda k: f"key{len(k)}")
def test_seal_chunk_matches_sealer_for_every_length_up_to_300(key):
    # Every length 0..300 covers each way the hash input (21-byte label, 32-byte prev,
    # 41-byte link, raw) and its padding can fall across 64-byte blocks, several times.
    rng = random.Random(len(key))
    sealer = Sealer(key, b"store-id")
    records = [random_record(rng, size) for size in range(301)]
    for peer in PEERS:
        prev = bytes(rng.getrandbits(8) for _ in range(32))
        first_pos = rng.choice([1, 2, 1000, 2**32 + 1, INT64_MAX - len(records) + 1])
        got = _ingest.seal_chunk(chunk(records), len(records), first_pos, prev, peer, key)
        assert got == expected(sealer, records, first_pos, prev, peer), peer


def test_seal_chunk_chains_across_chunks():
    rng = random.Random(7)
    key = b"chain-key"
    sealer = Sealer(key, b"id")
    records = [random_record(rng, rng.randrange(0, 300)) for _ in range(500)]
    peer = (1000, 100, 31337)
    want = expected(sealer, records, 1, sealer.genesis, peer)
    got, prev, pos, i = b"", sealer.genesis, 1, 0
    for size in [0, 1, 7, 64, 100, 0, 128, 200]:
        part = records[i : i + size]
        out = _ingest.seal_chunk(chunk(part), len(part), pos, prev, peer, key)
        assert len(out) == 96 * len(part)
        if part:
            prev = out[-64:-32]  # the last record's hash
        got += out
        pos += len(part)
        i += len(part)
    assert i == len(records) and got == want


def test_seal_chunk_follows_the_formula_as_documented():
    # Independent of seal.py's helpers: hashlib, hmac and struct straight from the
    # docstring's formula, so a mistake shared by both implementations shows too.
    key, prev = b"\x01" * 80, bytes(range(32))
    records = [b"", b'{"v":1}', b"x" * 200]
    out = _ingest.seal_chunk(chunk(records), 3, 5, prev, (7, 8, 9), key)
    for i, raw in enumerate(records):
        link = struct.pack(">QBqqqQ", 5 + i, 1, 7, 8, 9, len(raw))
        digest = hashlib.sha256(DOMAIN_RECORD + prev + link + raw).digest()
        mac = hmac.new(key, DOMAIN_MAC + digest, hashlib.sha256).digest()
        assert out[96 * i : 96 * (i + 1)] == prev + digest + mac
        prev = digest


# sha256 of the output below, computed with seal.Sealer.
PINNED = "85e287279084fa3245870bfd2071a6dc7e146bb50675f7d208a3f70cbae8d6d0"


def test_seal_chunk_output_is_pinned():
    # A known answer: any change to one byte of the output (or to the scheme) fails.
    records = [bytes([i % 251]) * i for i in range(130) if i % 251 != 10]
    out = _ingest.seal_chunk(chunk(records), len(records), 1, b"\x00" * 32, (1, 2, 3), b"key")
    assert len(out) == 96 * len(records)
    assert hashlib.sha256(out).hexdigest() == PINNED
    # and each byte matters: flipping any one byte of a record changes its hash
    bad = bytearray(chunk(records))
    bad[1000] ^= 0x01
    assert _ingest.seal_chunk(bytes(bad), len(records), 1, b"\x00" * 32, (1, 2, 3), b"key") != out


def test_seal_chunk_of_nothing():
    assert _ingest.seal_chunk(b"", 0, 1, b"\x00" * 32, None, b"k") == b""
    assert _ingest.seal_chunk(bytearray(), 0, INT64_MAX, b"\x00" * 32, (1, 2, 3), b"") == b""


def test_seal_chunk_takes_any_contiguous_buffer():
    rng = random.Random(3)
    records = [random_record(rng, n) for n in range(0, 150, 7)]
    data, key = chunk(records), b"buffer-key"
    want = _ingest.seal_chunk(data, len(records), 10, b"\x11" * 32, None, key)
    assert want == expected(Sealer(key, b""), records, 10, b"\x11" * 32, None)
    for raw in (
        bytearray(data),
        memoryview(data),
        memoryview(bytearray(data)),
        memoryview(b"xx" + data)[2:],
    ):
        got = _ingest.seal_chunk(
            raw, len(records), 10, memoryview(b"\x11" * 32), None, bytearray(key)
        )
        assert got == want


class BytesSubclass(bytes):
    pass


def test_seal_chunk_takes_bytes_subclasses():
    want = _ingest.seal_chunk(b"a\nb\n", 2, 1, b"\x00" * 32, None, b"k")
    assert _ingest.seal_chunk(BytesSubclass(b"a\nb\n"), 2, 1, b"\x00" * 32, None, b"k") == want


ZERO = b"\x00" * 32


@pytest.mark.parametrize(
    ("raw", "n", "message"),
    [
        (b"a\nb\n", 3, "n is 3 but raw holds only 2 newline-terminated records"),
        (b"a\nb\n", 9, "n is 9 but raw holds only 2 newline-terminated records"),
        (
            b"a\nbc",
            2,
            "n is 2 but raw holds only 1 newline-terminated records (and 2 bytes without a newline at the end)",
        ),
        (b"a\nb\n", 1, "raw holds more than n = 1 records"),
        (b"a\n\n", 1, "raw holds more than n = 1 records"),
        (b"a\nbc", 1, "raw has 2 bytes without a newline after its n = 1 records"),
        (b"x", 0, "raw has 1 bytes without a newline after its n = 0 records"),
        (b"\n", 0, "raw holds more than n = 0 records"),
        (b"", 1, "n is 1 but raw holds only 0 newline-terminated records"),
    ],
)
def test_seal_chunk_record_count_errors(raw, n, message):
    for buf in (raw, bytearray(raw)):
        with pytest.raises(ValueError) as exc:
            _ingest.seal_chunk(buf, n, 1, ZERO, None, b"k")
        assert str(exc.value) == "seal_chunk: " + message


@pytest.mark.parametrize(
    ("args", "exc_type", "message"),
    [
        ((b"", -1, 1, ZERO, None, b""), ValueError, "n must be >= 0, not -1"),
        ((b"", 2**63, 1, ZERO, None, b""), ValueError, "n must be between 0 and 2**63 - 1"),
        ((b"", 0, 0, ZERO, None, b""), ValueError, "first_pos must be >= 1, not 0"),
        ((b"", 0, -5, ZERO, None, b""), ValueError, "first_pos must be >= 1, not -5"),
        ((b"", 0, 2**63, ZERO, None, b""), ValueError, "first_pos must be between 1 and 2**63 - 1"),
        (
            (b"a\nb\n", 2, INT64_MAX, ZERO, None, b""),
            ValueError,
            "the last position, first_pos + n - 1 = 9223372036854775807 + 2 - 1, is beyond 2**63 - 1",
        ),
        (
            (b"", 0, 1, ZERO[:31], None, b""),
            ValueError,
            "prev must be 32 bytes (a SHA-256 digest), not 31",
        ),
        (
            (b"", 0, 1, ZERO + b"\x00", None, b""),
            ValueError,
            "prev must be 32 bytes (a SHA-256 digest), not 33",
        ),
        (("a\n", 1, 1, ZERO, None, b""), TypeError, "raw must be a bytes-like object, not str"),
        ((None, 0, 1, ZERO, None, b""), TypeError, "raw must be a bytes-like object, not NoneType"),
        ((b"", 0.0, 1, ZERO, None, b""), TypeError, "n must be an int, not float"),
        ((b"", "0", 1, ZERO, None, b""), TypeError, "n must be an int, not str"),
        ((b"", 0, None, ZERO, None, b""), TypeError, "first_pos must be an int, not NoneType"),
        (
            (b"", 0, 1, ZERO.hex(), None, b""),
            TypeError,
            "prev must be a bytes-like object, not str",
        ),
        ((b"", 0, 1, ZERO, None, "key"), TypeError, "key must be a bytes-like object, not str"),
        (
            (b"", 0, 1, ZERO, [1, 2, 3], b""),
            TypeError,
            "peer must be None or a (uid, gid, pid) tuple, not list",
        ),
        (
            (b"", 0, 1, ZERO, (1, 2), b""),
            TypeError,
            "peer must be None or a (uid, gid, pid) tuple, not tuple",
        ),
        (
            (b"", 0, 1, ZERO, (1, 2, 3, 4), b""),
            TypeError,
            "peer must be None or a (uid, gid, pid) tuple, not tuple",
        ),
        (
            (b"", 0, 1, ZERO, PeerCred(1, 2, 3), b""),
            TypeError,
            "peer must be None or a (uid, gid, pid) tuple, not PeerCred",
        ),
        ((b"", 0, 1, ZERO, (1, 2, "3"), b""), TypeError, "peer pid must be an int, not str"),
        ((b"", 0, 1, ZERO, (1.0, 2, 3), b""), TypeError, "peer uid must be an int, not float"),
        (
            (b"", 0, 1, ZERO, (2**63, 0, 0), b""),
            OverflowError,
            "peer uid does not fit in a signed 64-bit integer",
        ),
        (
            (b"", 0, 1, ZERO, (0, -(2**63) - 1, 0), b""),
            OverflowError,
            "peer gid does not fit in a signed 64-bit integer",
        ),
        (
            (b"", 0, 1, ZERO, (0, 0, 2**64), b""),
            OverflowError,
            "peer pid does not fit in a signed 64-bit integer",
        ),
    ],
)
def test_seal_chunk_argument_errors(args, exc_type, message):
    with pytest.raises(exc_type) as exc:
        _ingest.seal_chunk(*args)
    assert type(exc.value) is exc_type
    assert str(exc.value) == "seal_chunk: " + message


def test_seal_chunk_last_position_may_be_the_largest():
    sealer = Sealer(b"k", b"")
    records = [b"a", b"b"]
    out = _ingest.seal_chunk(b"a\nb\n", 2, INT64_MAX - 1, ZERO, None, b"k")
    assert out == expected(sealer, records, INT64_MAX - 1, ZERO, None)


def test_seal_chunk_keywords_and_non_tuple_int_subclass():
    out = _ingest.seal_chunk(raw=b"a\n", n=True, first_pos=1, prev=ZERO, peer=None, key=b"k")
    assert out == expected(Sealer(b"k", b""), [b"a"], 1, ZERO, None)
    with pytest.raises(TypeError):
        _ingest.seal_chunk(b"a\n", 1, 1, ZERO, None)


def test_seal_chunk_non_contiguous_buffer_is_refused():
    with pytest.raises(BufferError):
        _ingest.seal_chunk(memoryview(b"a\na\n")[::2], 2, 1, ZERO, None, b"k")
