"""auditwatch._ingest, the collector's native loops, against their Python definitions."""

from __future__ import annotations

import ctypes
import hashlib
import hmac
import json
import random
import re
import struct
import subprocess
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


def exact(data: bytes) -> ctypes.Array:
    """A copy with no byte after the data (bytes and bytearray keep a NUL there), so
    that AddressSanitizer (.ci/run) sees a read past the end."""
    return ctypes.create_string_buffer(data, len(data))


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
        assert (
            _ingest.seal_chunk(exact(chunk(records)), len(records), first_pos, prev, peer, key)
            == got
        )


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


# ---- scan_lines ---------------------------------------------------------------------

T0 = 1_700_000_000_000_000_000  # nanoseconds: 19 digits, as the hook writes them
WHERE = {"file": "/usr/lib/python3.11/json/decoder.py", "line": 353, "func": "raw_decode"}


def rec(seq: int, run: str = "r1", pid: int = 100, ts: int | None = None, **extra) -> bytes:
    """A hook-shaped event record, compact as the hook writes it."""
    d = {"v": 1, "seq": seq, "run": run, "parent_run": None, "pid": pid}
    d.update(ts=T0 + seq if ts is None else ts, kind="event", event="open")
    d.update(args=["/srv/app/m.py", "r", 524288], where=WHERE, action="record")
    d.update(extra)
    return json.dumps(d, separators=(",", ":")).encode()


def lines(*recs: bytes) -> bytes:
    return b"".join(r + b"\n" for r in recs)


def plain(line: bytes, peer_pid: int | None = None) -> bool:
    items = _ingest.scan_lines(line + b"\n", peer_pid)
    assert len(items) == 1
    assert _ingest.scan_lines(exact(line + b"\n"), peer_pid) == items
    return len(items[0]) == 11


def test_scan_a_clean_run_is_one_item():
    rng = random.Random(1)
    ts = [T0 + rng.randrange(10**9) for _ in range(100)]
    recs = [rec(seq, ts=ts[seq - 1], event=f"ev{seq % 3}") for seq in range(1, 101)]
    data = lines(*recs)
    names = ("ev1", "ev2", "ev0")
    kinds = bytes(names.index(f"ev{seq % 3}") for seq in range(1, 101))
    assert _ingest.scan_lines(data, 100) == [
        (0, len(data), "r1", 1, 100, 100, "ev1", min(ts), max(ts), names, kinds)
    ]
    assert _ingest.scan_lines(data, None) == _ingest.scan_lines(data, 100)


def test_scan_a_ninth_event_name_starts_a_new_run():
    # A run lists its distinct event names (the store indexes them); it holds eight.
    recs = [rec(seq, event=f"ev{seq}") for seq in range(1, 11)]
    data = lines(*recs)
    at = offsets(data)
    names = tuple(f"ev{i}" for i in range(1, 9))
    assert _ingest.scan_lines(data, 100) == [
        (0, at[7][1] + 1, "r1", 1, 8, 8, "ev8", T0 + 1, T0 + 8, names, bytes(range(8))),
        (at[8][0], len(data), "r1", 9, 10, 2, "ev10", T0 + 9, T0 + 10, ("ev9", "ev10"), b"\0\1"),
    ]


def offsets(data: bytes) -> list[tuple[int, int]]:
    """(start, end without the newline) of every line."""
    out, pos = [], 0
    for line in data.split(b"\n")[:-1]:
        out.append((pos, pos + len(line)))
        pos += len(line) + 1
    return out


def test_scan_splits_runs_at_a_seq_gap_a_run_change_and_a_replay():
    recs = (
        [rec(s) for s in (1, 2, 3, 5, 6)] + [rec(s, run="r2") for s in (7, 8)] + [rec(8, run="r2")]
    )
    data = lines(*recs)
    at = offsets(data)
    assert _ingest.scan_lines(data, 100) == [
        (0, at[2][1] + 1, "r1", 1, 3, 3, "open", T0 + 1, T0 + 3, ("open",), b"\x00\x00\x00"),
        (at[3][0], at[4][1] + 1, "r1", 5, 6, 2, "open", T0 + 5, T0 + 6, ("open",), b"\x00\x00"),
        (at[5][0], at[6][1] + 1, "r2", 7, 8, 2, "open", T0 + 7, T0 + 8, ("open",), b"\x00\x00"),
        (at[7][0], at[7][1] + 1, "r2", 8, 8, 1, "open", T0 + 8, T0 + 8, ("open",), b"\x00"),
    ]


def test_scan_other_kinds_and_other_pids_are_lines():
    start = rec(1, kind="start")
    exit_ = rec(5, kind="exit")
    data = lines(start, rec(2), rec(3, pid=101), rec(4), exit_)
    at = offsets(data)
    assert _ingest.scan_lines(data, 100) == [
        at[0],
        (at[1][0], at[1][1] + 1, "r1", 2, 2, 1, "open", T0 + 2, T0 + 2, ("open",), b"\x00"),
        at[2],
        (at[3][0], at[3][1] + 1, "r1", 4, 4, 1, "open", T0 + 4, T0 + 4, ("open",), b"\x00"),
        at[4],
    ]
    # Without the sender's pid any pid is plain, but a run has one pid.
    assert _ingest.scan_lines(data, None) == [
        at[0],
        (at[1][0], at[1][1] + 1, "r1", 2, 2, 1, "open", T0 + 2, T0 + 2, ("open",), b"\x00"),
        (at[2][0], at[2][1] + 1, "r1", 3, 3, 1, "open", T0 + 3, T0 + 3, ("open",), b"\x00"),
        (at[3][0], at[3][1] + 1, "r1", 4, 4, 1, "open", T0 + 4, T0 + 4, ("open",), b"\x00"),
        at[4],
    ]


def test_scan_empty_lines_give_no_item_and_end_a_run():
    data = b"\n\n" + lines(rec(1), rec(2)) + b"\n" + lines(rec(3), b"junk") + b"\n\n"
    at = [span for span in offsets(data) if span[0] != span[1]]
    assert _ingest.scan_lines(data, 100) == [
        (at[0][0], at[1][1] + 1, "r1", 1, 2, 2, "open", T0 + 1, T0 + 2, ("open",), b"\x00\x00"),
        (at[2][0], at[2][1] + 1, "r1", 3, 3, 1, "open", T0 + 3, T0 + 3, ("open",), b"\x00"),
        at[3],
    ]
    assert _ingest.scan_lines(b"", None) == []
    assert _ingest.scan_lines(b"\n\n\n", None) == []


def test_scan_whitespace_around_and_inside_the_object():
    line = b' \t{ "v" : 1 , "seq":1,"run":"r","pid":1,"kind":"event","event":"e","ts":2 } \r'
    assert _ingest.scan_lines(line + b"\n", 1) == [
        (0, len(line) + 1, "r", 1, 1, 1, "e", 2, 2, ("e",), b"\0")
    ]
    assert not plain(b" ")
    assert not plain(b"\r")


SEVEN = {"v": 1, "run": "r", "seq": 1, "pid": 1, "kind": "event", "event": "e", "ts": 2}


def obj(*pairs: str) -> bytes:
    return ("{" + ",".join(pairs) + "}").encode()


def base(**replace: str) -> list[str]:
    """The seven keys as JSON members, some replaced by raw text."""
    return [replace.get(k, f"{json.dumps(k)}:{json.dumps(v)}") for k, v in SEVEN.items()]


def test_scan_the_seven_keys():
    assert plain(obj(*base()))
    assert plain(obj(*base(), '"extra":[{"deep":null}]'))
    for key in SEVEN:
        assert not plain(obj(*[m for m in base() if not m.startswith(f'"{key}"')])), key
    bad = {
        "v": ["2", "1.0", '"1"', "true", "1e0"],
        "run": ['""', '"a\\u0062"', '"a\\"b"', "1", "null"],
        "seq": ["0", "-1", "1.0", '"1"', "true", "-0"],
        "pid": ["1.0", '"1"', "null"],
        "kind": ['"start"', '"Event"', '"\\u0065vent"', '"event "', "1"],
        "event": ['"a\\nb"', '"\\u0061"', "null", "1", '["e"]'],
        "ts": ["2.0", '"2"', "null", "2e3"],
    }
    for key, values in bad.items():
        for value in values:
            line = obj(*base(**{key: f'"{key}":{value}'}))
            assert not plain(line), line
    assert plain(obj(*base(event='"event":""')))
    assert plain(obj(*base(ts='"ts":-5', seq='"seq":9223372036854775807')))


def test_scan_repeated_keys():
    for key, value in SEVEN.items():
        dup = f"{json.dumps(key)}:{json.dumps(value)}"
        assert not plain(obj(*base(), dup)), key
        assert not plain(obj(dup, *base())), key
    assert plain(obj(*base(), '"x":1', '"x":2'))  # other keys: ignored (and legal JSON)
    assert plain(obj(*base(), '"w":{"v":1,"v":2}'))  # nested: not the top level
    assert not plain(obj(*base(), '"\\u0072un":"other"'))  # an escaped key could be one of ours
    assert not plain(obj(*base(), '"a\\u0062":1'))


def test_scan_pid_against_the_sender():
    line = obj(*base(pid='"pid":4242'))
    assert plain(line, 4242) and plain(line, None)
    assert not plain(line, 4243)
    assert not plain(line, -4242)


def test_scan_integers_must_fit_64_bits():
    for value in ["9223372036854775807", "-9223372036854775808", "123456789012345678", "0", "-0"]:
        assert plain(obj(*base(), f'"n":{value}')), value
        assert plain(obj(*base(), f'"n":[{value}]')), value
    for value in ["9223372036854775808", "-9223372036854775809", "12345678901234567890", "1" * 40]:
        assert not plain(obj(*base(), f'"n":{value}')), value
        assert not plain(obj(*base(), f'"n":{{"a":[{value}]}}')), value
    assert not plain(obj(*base(ts='"ts":9223372036854775808')))
    assert plain(obj(*base(ts='"ts":-9223372036854775808')))


def test_scan_numbers_follow_the_json_grammar():
    for value in ["1.5", "-0.0", "1e5", "1E+5", "1e-400", "9.9e307", "9" * 300 + ".5", "0.1e307"]:
        assert plain(obj(*base(), f'"n":{value}')), value
    # Conservative near the top of the range: |x| < 10**(integer digits + exponent)
    # must stay <= 10**308, so some finite floats are not plain either.
    assert not plain(obj(*base(), '"n":1.7e308'))
    bad = ["01", "1.", ".5", "-", "+1", "1e", "1e+", "0x10", "1.5.5", "--1", "-a", "1ee5", "0.e1"]
    bad += ["1e309", "-1e309", "9" * 310 + ".0", "1e99999999999999999999", "10e308"]
    for value in bad:
        assert not plain(obj(*base(), f'"n":{value}')), value


def test_scan_literals():
    assert plain(obj(*base(), '"a":[true,false,null]'))
    for value in [
        "NaN",
        "Infinity",
        "-Infinity",
        "True",
        "nul",
        "tru",
        "fals",
        "nulll",
        "undefined",
    ]:
        assert not plain(obj(*base(), f'"n":{value}')), value


def test_scan_string_escapes():
    for value in [
        '"\\"\\\\\\/\\b\\f\\n\\r\\t"',
        '"\\u00e9\\u20AC"',
        '"\\ud83d\\ude00"',
        '"\\u0000"',
    ]:
        assert plain(obj(*base(), f'"s":{value}')), value
    for value in ['"\\ud800"', '"\\udc00"', '"\\ud800\\u0041"', '"\\ud800\\ud800"', '"\\ude00\\ud83d"',
                  '"\\ud83d"', '"\\x41"', '"\\a"', '"\\u12"', '"\\u12g4"', '"\\U0041"', '"\\']:  # fmt: skip
        assert not plain(obj(*base(), f'"s":{value}')), value


def test_scan_utf8():
    for raw in ["é", "€", "😀", "\uffff", "\U0010ffff", "\u2028", "\x7f"]:
        assert plain(obj(*base(), '"s":"' + raw + '"')), raw
        assert plain(obj(*base(event=f'"event":"{raw}"'))), raw
    bad = [
        b"\xc0\xaf",  # overlong '/'
        b"\xc1\xbf",
        b"\xe0\x80\xaf",  # overlong, 3 bytes
        b"\xf0\x80\x80\xaf",  # overlong, 4 bytes
        b"\xed\xa0\x80",  # U+D800 encoded
        b"\xed\xbf\xbf",  # U+DFFF encoded
        b"\xf4\x90\x80\x80",  # beyond U+10FFFF
        b"\xe2\x82",  # truncated
        b"\xf0\x9f\x98",
        b"\xc3",
        b"\x80",  # a lone continuation byte
        b"\xbf",
        b"\xc3\x28",  # continuation missing
        b"\xe2\x28\xa1",
    ]
    bad += [bytes([b]) for b in range(0xF5, 0x100)]
    for raw in bad:
        assert not plain(b'{"s":"' + raw + b'",' + obj(*base())[1:]), raw
        assert not plain(obj(*base()) + raw), raw
    assert not plain(obj(*base())[:-1] + b',"\xe9":1}')  # latin-1 in a key


def test_scan_control_characters():
    for c in list(range(0x20)):
        if c == 0x0A:
            continue
        line = obj(*base(), '"s":"a' + chr(c) + 'b"')
        assert not plain(line), c
    assert plain(obj(*base(), '"s":"a\x7fb"'))
    assert not plain(obj(*base()) + b"\x00")
    assert not plain(b"\x00" + obj(*base()))


def test_scan_depth_64_is_plain_65_is_not():
    def nested(depth: int, open_: str, close: str) -> bytes:
        # the top-level object is depth 1
        return obj(*base(), '"d":' + open_ * (depth - 1) + close * (depth - 1))

    assert plain(nested(64, "[", "]"))
    assert not plain(nested(65, "[", "]"))
    deep = obj(*base(), '"d":' + '{"a":' * 63 + "1" + "}" * 63)
    assert plain(deep)
    assert not plain(obj(*base(), '"d":' + '{"a":' * 64 + "1" + "}" * 64))
    assert not plain(obj(*base(), '"d":' + "[" * 100000 + "]" * 100000))


def test_scan_not_one_object():
    good = obj(*base())
    for line in [
        good + b"x",
        good + b"}",
        good + b" {}",
        good + b",",
        good[:-1],
        good[:-1] + b",}",
        good[:-1] + b", }",
        b"{,}",
        b"{ , " + good[1:],
        b"[" + good + b"]",
        good[:1] + b"," + good[1:],
        good.replace(b":", b" ", 1),
        good.replace(b",", b",,", 1),
        b"\xef\xbb\xbf" + good,
        b'"just a string"',
        b"1",
        b"{}",
        b"null",
    ]:
        assert not plain(line), line


def test_scan_every_truncation_stops_at_the_newline():
    # The scan uses the newline as its only bound: each prefix of a line with every
    # construct, as the last line of an exact-size buffer (AddressSanitizer in .ci/run
    # catches a read past it).
    line = obj(
        *base(),
        '"a":[true,false,null,-1.5e-3,0,1E+2,{"k":"\\ud83d\\ude00\\u00e9\\n\\/"}]',
        '"s":"é€😀\\"" , "z" : { } ',
    )
    assert plain(line)
    for i in range(1, len(line)):
        assert _ingest.scan_lines(exact(line[:i] + b"\n"), None) == [(0, i)], line[:i]


def test_scan_line_items_exclude_the_newline_runs_include_it():
    data = lines(b"garbage", rec(1), b"{", rec(2))
    at = offsets(data)
    items = _ingest.scan_lines(data, None)
    assert items[0] == at[0] and data[slice(*items[0])] == b"garbage"
    assert data[items[1][0] : items[1][1]] == rec(1) + b"\n"
    assert items[2] == at[2] and data[slice(*items[2])] == b"{"


def test_scan_arguments():
    data = lines(rec(1), b"x", rec(2))
    want = _ingest.scan_lines(data, 100)
    for buf in (bytearray(data), memoryview(data), memoryview(b"  " + data)[2:]):
        assert _ingest.scan_lines(buf, 100) == want
    assert _ingest.scan_lines(data=data, peer_pid=None) == _ingest.scan_lines(data, 100)
    with pytest.raises(ValueError, match=r"^scan_lines: data must end with a newline"):
        _ingest.scan_lines(data + b"x", None)
    with pytest.raises(ValueError, match=r"^scan_lines: data must end with a newline"):
        _ingest.scan_lines(b"x", None)
    with pytest.raises(TypeError, match=r"^scan_lines: data must be a bytes-like object, not str"):
        _ingest.scan_lines(data.decode(), None)
    with pytest.raises(TypeError, match=r"^scan_lines: peer_pid must be an int, not str"):
        _ingest.scan_lines(data, "100")
    with pytest.raises(OverflowError, match=r"^scan_lines: peer_pid does not fit"):
        _ingest.scan_lines(data, 2**63)
    with pytest.raises(TypeError):
        _ingest.scan_lines(data)


# ---- scan_lines against the parsers, on mutated records ---------------------------------

try:
    import orjson
except ImportError:  # pragma: no cover - a dependency, but the check can run without it
    orjson = None

KEYS7 = ("v", "run", "seq", "pid", "kind", "event", "ts")
INT64 = range(-(2**63), 2**63)
FLOAT_RE = re.compile(r"-?(\d+)(?:\.\d+)?(?:[eE]([-+]?\d+))?$")


class NotPlain(Exception):
    pass


def _int64(s: str) -> int:
    if int(s) not in INT64:
        raise NotPlain(s)
    return int(s)


def _float(s: str) -> float:
    m = FLOAT_RE.match(s)
    assert m, s
    if len(m.group(1)) + int(m.group(2) or 0) > 308:  # the scan's bound: finite anywhere
        raise NotPlain(s)
    return float(s)


def _reject(s: str) -> None:
    raise NotPlain(s)


def _depth(x: object) -> int:
    if isinstance(x, dict):
        return 1 + max(map(_depth, x.values()), default=0)
    if isinstance(x, list):
        return 1 + max(map(_depth, x), default=0)
    return 0


def _has_surrogate(x: object) -> bool:
    if isinstance(x, str):
        return any(0xD800 <= ord(c) <= 0xDFFF for c in x)
    if isinstance(x, dict):
        return any(_has_surrogate(k) or _has_surrogate(v) for k, v in x.items())
    if isinstance(x, list):
        return any(map(_has_surrogate, x))
    return False


def reference(line: bytes, peer_pid: int | None) -> tuple | None:
    """The rules for a plain line, on top of the standard parser: (run, seq, pid,
    event, ts) or None. Escapes are invisible after parsing, so this is exact for
    lines without a backslash and more lenient than the scan for the others."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        return None
    objects: list[list] = []

    def pairs_hook(pairs: list) -> dict:
        objects.append(pairs)  # inner objects first: the top level comes last
        return dict(pairs)

    try:
        record = json.loads(
            text,
            object_pairs_hook=pairs_hook,
            parse_int=_int64,
            parse_float=_float,
            parse_constant=_reject,
        )
    except (ValueError, NotPlain, RecursionError):
        return None
    if not isinstance(record, dict) or _depth(record) > 64 or _has_surrogate(record):
        return None
    keys = [k for k, _ in objects[-1]]
    if any(keys.count(k) != 1 for k in KEYS7):
        return None
    r = record
    if not (
        type(r["v"]) is int
        and r["v"] == 1
        and type(r["run"]) is str
        and r["run"]
        and type(r["seq"]) is int
        and r["seq"] >= 1
        and type(r["pid"]) is int
        and (peer_pid is None or r["pid"] == peer_pid)
        and r["kind"] == "event"
        and type(r["event"]) is str
        and type(r["ts"]) is int
    ):
        return None
    return r["run"], r["seq"], r["pid"], r["event"], r["ts"]


FUZZ_VALUES = [
    "é",
    "€ 😀",
    "\u2028",
    "\x7f",
    "tab\there",
    'quote"back\\slash',
    "\ud83d\ude00",
    "\udc00",
    "x\ud800y",
    12,
    -7,
    0,
    2**62,
    -(2**63),
    2**63 - 1,
    2**63,
    -(2**63) - 1,
    2**64,
    1.5,
    -0.0,
    1e300,
    1e308,
    1.7e308,
    2.5e-300,
    None,
    True,
    False,
    [],
    {},
    [1, [2, [3, {"k": "v"}]]],
    {"a": {"b": [None, "x"]}},
]
TOKENS = [
    b'"',
    b"\\",
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b" ",
    b"\t",
    b"\r",
    b"\\u",
    b"\\ud800",
    b"\\udc00",
    b"\\u0072",
    b"\\ud83d\\ude00",
    b"NaN",
    b"-Infinity",
    b"1e999",
    b"1e308",
    b"9223372036854775808",
    b"-9223372036854775809",
    b"9223372036854775807",
    b"12345678901234567890",
    b"0.5e-999",
    b"01",
    b"-",
    b"true",
    b"nul",
    b"\xed\xa0\x80",
    b"\xc0\xaf",
    b"\xe2\x82",
    b"\xf4\x90\x80\x80",
    b"\xf5",
    b"\xff",
    b"\x80",
    b"\xc3\xa9",
    b"\xf0\x9f\x98\x80",
    b"\x00",
    b"\x1f",
    b'"seq":2,',
    b'"run":"r9",',
    b'"kind":"start",',
    b'"v":1,',
    b'"ts":1,',
    b'"pid":1,',
    b'"event":"x",',
    b'"kind":"event",',
    b",}",
    b",]",
    b"[" * 70,
    b"]" * 70,
]
FLIP_BYTES = (
    b'"\\{}[],:0123456789-+.eEtfnul \t\r\x00\x1f\x7f\x80\xbf\xc0\xc2\xe0\xed\xf0\xf4\xf5\xff'
)


def fuzz_record(rng: random.Random, run: str, seq: int, pid: int) -> bytes:
    d: dict = {"v": 1, "seq": seq, "run": run, "pid": pid, "ts": T0 + rng.randrange(-5, 10**6)}
    d.update(kind="event", event=rng.choice(["open", "import", "é", "a b", ""]))
    for i in range(rng.randrange(4)):
        d[f"x{i}"] = rng.choice(FUZZ_VALUES)
    items = list(d.items())
    rng.shuffle(items)
    text = json.dumps(
        dict(items),
        ensure_ascii=rng.random() < 0.5,
        separators=rng.choice([(",", ":"), (", ", ": "), (" ,", " :\t")]),
    )
    return text.encode("utf-8", "surrogatepass")


# Whole values put in place of a member's value (op 7 below).
VALUES = [
    b"1",
    b"0",
    b"-1",
    b"9223372036854775807",
    b"9223372036854775808",
    b"-9223372036854775808",
    b"-9223372036854775809",
    b"1.0",
    b"1e308",
    b"1e309",
    b"true",
    b"null",
    b'"event"',
    b'"\\u0065vent"',
    b'"r1"',
    b'"r\\u0031"',
    b'""',
    b"[]",
    b"{}",
    b"NaN",
]
SCALAR = rb'-?[0-9.eE+]+|"[^"\\]*"|true|false|null'


def mutate(rng: random.Random, line: bytes) -> bytes:
    b = bytearray(line)
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        op = rng.randrange(9)
        i = rng.randrange(len(b) + 1)
        if op == 0 and b:  # flip one byte
            i = min(i, len(b) - 1)
            b[i] = rng.choice(FLIP_BYTES) if rng.random() < 0.8 else rng.randrange(256)
        elif op == 1:
            b[i:i] = rng.choice(TOKENS)
        elif op == 2:
            del b[i : i + rng.randrange(1, 8)]
        elif op == 3:
            del b[i:]
        elif op == 4:  # repeat one of the seven keys, or another member
            key = rng.choice((*KEYS7, "x0", "zz"))
            if rng.random() < 0.3:  # spelled with an escape: the same key to a parser
                key = f"\\u{ord(key[0]):04x}{key[1:]}"
            b[1:1] = f'"{key}":{json.dumps(rng.choice([1, 2, "r1", "event"]))},'.encode()
        elif op == 5:  # something in front of a value
            key = rng.choice(KEYS7).encode()
            j = b.find(b'"' + key + b'":')
            if j >= 0:
                j += len(key) + 3
                b[j:j] = rng.choice([b"1", b"-", b"0", b'"', b"2.5", b"[", b"9" * 19])
        elif op == 6:  # a token next to a quote: often inside a string
            quotes = [j for j, c in enumerate(b) if c == 0x22]
            if quotes:
                j = rng.choice(quotes) + rng.choice([0, 1])
                b[j:j] = rng.choice(TOKENS)
        elif op == 7:  # a member's whole value replaced
            key = re.escape(rng.choice((*KEYS7, "x0")).encode())
            m = re.search(rb'"%s":\s*(%s)' % (key, SCALAR), b)
            if m:
                b[m.start(1) : m.end(1)] = rng.choice(VALUES)
        else:  # a comma before the end of the object or of a container
            ends = [j for j, c in enumerate(b) if c in b"}]"]
            if ends:
                j = rng.choice(ends)
                b[j:j] = rng.choice([b",", b", "])
    return bytes(b).replace(b"\n", b" ") if rng.random() < 0.9 else bytes(b)


def check_items(data: bytes, items: list, peer_pid: int | None, stats: dict) -> None:
    """Coverage, order, plain lines valid for both parsers, and the run fields."""
    nonempty = [(s, e) for s, e in offsets(data) if s != e]
    k = 0  # next non-empty line to be covered
    prev_run = None
    for item in items:
        if len(item) == 2:
            assert item == nonempty[k], (item, nonempty[k])
            line = data[item[0] : item[1]]
            ref = reference(line, peer_pid)
            if ref is not None and b"\\" not in line:
                raise AssertionError(f"plain line not found: {line!r}")
            k += 1
            prev_run = None
            stats["line"] += 1
            continue
        (
            start,
            end,
            run,
            first_seq,
            last_seq,
            count,
            last_event,
            first_ts,
            last_ts,
            events,
            kinds,
        ) = item
        assert start == nonempty[k][0] and count >= 1
        chunk = data[start:end]
        assert chunk.endswith(b"\n") and b"\n\n" not in chunk
        group = chunk.split(b"\n")[:-1]
        assert len(group) == count and all(nonempty[k + i][1] + 1 <= end for i in range(count))
        assert end == nonempty[k + count - 1][1] + 1
        k += count
        fields = []
        for line in group:
            record = json.loads(line)
            if orjson is not None:
                assert orjson.loads(line) == record
            ref = reference(line, peer_pid)
            assert ref is not None, line
            assert ref == (
                record["run"],
                record["seq"],
                record["pid"],
                record["event"],
                record["ts"],
            )
            fields.append(ref)
        assert {f[0] for f in fields} == {run}
        assert [f[1] for f in fields] == list(range(first_seq, last_seq + 1))
        assert len({f[2] for f in fields}) == 1
        assert fields[-1][3] == last_event
        assert events == tuple(dict.fromkeys(f[3] for f in fields)) and len(events) <= 8
        assert kinds == bytes(events.index(f[3]) for f in fields)
        assert (first_ts, last_ts) == (min(f[4] for f in fields), max(f[4] for f in fields))
        if prev_run is not None:  # maximal: it could not have extended the run before it
            p_end, p_run, p_last_seq, p_pid, p_events = prev_run
            assert not (
                p_end == start
                and p_run == run
                and p_last_seq + 1 == first_seq
                and p_pid == fields[0][2]
                and (len(p_events) < 8 or fields[0][3] in p_events)
            )
        prev_run = (end, run, last_seq, fields[0][2], events)
        stats["run"] += 1
        stats["plain"] += count
    assert k == len(nonempty)


def test_scan_lines_against_the_parsers_on_mutated_records():
    rng = random.Random(20240611)
    stats = {"line": 0, "run": 0, "plain": 0}
    for _ in range(3000):
        pid = rng.choice([100, 101])
        peer_pid = rng.choice([None, 100, 100, 101])
        out: list[bytes] = []
        seq, run = rng.randrange(1, 5), rng.choice(["r1", "r2", "é", "00ff"])
        for _ in range(rng.randrange(1, 9)):
            if rng.random() < 0.15:
                run, seq = rng.choice(["r1", "r2"]), rng.randrange(1, 5)
            if rng.random() < 0.1:
                seq += rng.choice([-1, 0, 2])
            line = fuzz_record(rng, run, max(seq, 1), pid if rng.random() < 0.9 else 100)
            if rng.random() < 0.5:
                line = mutate(rng, line)
            out.append(line)
            if rng.random() < 0.05:
                out.append(b"")
            seq += 1
        data = lines(*out)
        items = _ingest.scan_lines(data, peer_pid)
        check_items(data, items, peer_pid, stats)
        assert _ingest.scan_lines(exact(data), peer_pid) == items
    # The mutations must leave enough of both kinds for the check to mean something.
    assert stats["plain"] > 2000 and stats["line"] > 3000, stats


def test_the_sha256_named_is_the_one_linked():
    # doctor reports which SHA-256 seals; it must be the one the build linked.
    linked = subprocess.run(["ldd", _ingest.__file__], capture_output=True, text=True).stdout
    want = "openssl" if "libcrypto" in linked else "builtin"
    assert want == _ingest.SHA256
