/* seal_chunk: the store's hash chain and record MACs for a chunk of records.
 *
 * The formulas are store/seal.py's (its docstring; docs/store.md):
 *     hash[pos] = SHA-256("auditwatch/record/v1\0" || hash[pos-1] || u64(pos) || peer
 *                         || u64(len(raw)) || raw)
 *     mac[pos]  = HMAC-SHA256(key, "auditwatch/record-mac/v1\0" || hash[pos])
 * and the tests check every output byte against seal.Sealer.
 */
#include "ingest.h"
#include "hash.h"

#include <string.h>

#define F "seal_chunk"
#define OUT_PER_RECORD 96 /* prev hash, hash, MAC */

/* sizeof includes the terminating NUL, which is part of each label. */
static const char DOMAIN_RECORD[] = "auditwatch/record/v1";
static const char DOMAIN_MAC[] = "auditwatch/record-mac/v1";

/* States with the constant prefixes absorbed once per call; each record starts
 * from copies (a struct assignment) instead of re-hashing the pads. */
typedef struct {
    aw_hash_ctx record;    /* DOMAIN_RECORD */
    aw_hash_ctx mac_inner; /* key ^ ipad, then DOMAIN_MAC */
    aw_hash_ctx outer;     /* key ^ opad */
} sealer;

static void put_be64(unsigned char *p, uint64_t v) {
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (unsigned char)v;
}

static void sealer_init(sealer *s, const unsigned char *key, size_t keylen) {
    unsigned char k[64] = {0}, pad[64];
    if (keylen > 64) { /* RFC 2104: a long key is replaced by its hash */
        aw_hash_ctx c;
        aw_hash_init(&c);
        aw_hash_update(&c, key, keylen);
        aw_hash_final(&c, k);
    } else if (keylen) {
        memcpy(k, key, keylen);
    }
    for (int i = 0; i < 64; i++)
        pad[i] = k[i] ^ 0x36;
    aw_hash_init(&s->mac_inner);
    aw_hash_update(&s->mac_inner, pad, 64);
    aw_hash_update(&s->mac_inner, DOMAIN_MAC, sizeof DOMAIN_MAC);
    for (int i = 0; i < 64; i++)
        pad[i] = k[i] ^ 0x5c;
    aw_hash_init(&s->outer);
    aw_hash_update(&s->outer, pad, 64);
    aw_hash_init(&s->record);
    aw_hash_update(&s->record, DOMAIN_RECORD, sizeof DOMAIN_RECORD);
}

enum { SEAL_OK, SEAL_TOO_FEW, SEAL_TOO_MANY, SEAL_TRAILING };

typedef struct {
    int status;
    Py_ssize_t found; /* SEAL_TOO_FEW: complete records in raw */
    Py_ssize_t rest;  /* bytes after the last newline used */
} seal_result;

/* Pure C, no Python object: runs with or without the GIL. link holds u8 flag and the
 * peer at [8, 33); the position and the size are filled in per record. */
static void seal_records(const sealer *s, const unsigned char *raw, size_t len, Py_ssize_t n,
                         uint64_t pos, const unsigned char *prev, unsigned char link[41],
                         unsigned char *out, seal_result *res) {
    const unsigned char *p = raw, *end = raw + len;
    for (Py_ssize_t i = 0; i < n; i++, pos++) {
        const unsigned char *nl = p < end ? memchr(p, '\n', (size_t)(end - p)) : NULL;
        if (nl == NULL) {
            res->status = SEAL_TOO_FEW;
            res->found = i;
            res->rest = end - p;
            return;
        }
        size_t size = (size_t)(nl - p);
        put_be64(link, pos);
        put_be64(link + 33, (uint64_t)size);
        unsigned char *hash = out + 32, *mac = out + 64;
        memcpy(out, prev, 32);
        aw_hash_ctx c = s->record;
        aw_hash_update(&c, prev, 32);
        aw_hash_update(&c, link, 41);
        aw_hash_update(&c, p, size);
        aw_hash_final(&c, hash);
        unsigned char inner[32];
        c = s->mac_inner;
        aw_hash_update(&c, hash, 32);
        aw_hash_final(&c, inner);
        c = s->outer;
        aw_hash_update(&c, inner, 32);
        aw_hash_final(&c, mac);
        prev = hash;
        out += OUT_PER_RECORD;
        p = nl + 1;
    }
    res->rest = end - p;
    if (p == end)
        res->status = SEAL_OK;
    else
        res->status = memchr(p, '\n', (size_t)(end - p)) ? SEAL_TOO_MANY : SEAL_TRAILING;
}

static Py_ssize_t count_newlines(const unsigned char *p, Py_ssize_t len) {
    Py_ssize_t count = 0;
    const unsigned char *end = p + len;
    while (p < end && (p = memchr(p, '\n', (size_t)(end - p))) != NULL) {
        count++;
        p++;
    }
    return count;
}

/* n and first_pos: an int that does not fit is out of range, a ValueError like
 * any other out-of-range value. */
static int range_arg(PyObject *obj, const char *what, int64_t *out) {
    if (aw_int64_arg(obj, F, what, out) == 0)
        return 0;
    if (PyErr_ExceptionMatches(PyExc_OverflowError)) {
        PyErr_Clear();
        PyErr_Format(PyExc_ValueError, F ": %s must be between %d and 2**63 - 1", what,
                     strcmp(what, "n") == 0 ? 0 : 1);
    }
    return -1;
}

/* A bytes-like argument as a buffer, TypeError naming it otherwise. */
static int buffer_arg(PyObject *obj, const char *what, Py_buffer *view) {
    if (!PyObject_CheckBuffer(obj)) {
        PyErr_Format(PyExc_TypeError, F ": %s must be a bytes-like object, not %.100s", what,
                     Py_TYPE(obj)->tp_name);
        return -1;
    }
    return PyObject_GetBuffer(obj, view, PyBUF_SIMPLE);
}

PyObject *aw_seal_chunk(PyObject *self, PyObject *args, PyObject *kwargs) {
    (void)self;
    static char *kwlist[] = {"raw", "n", "first_pos", "prev", "peer", "key", NULL};
    PyObject *raw_o, *n_o, *pos_o, *prev_o, *peer_o, *key_o;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOOOOO:" F, kwlist, &raw_o, &n_o, &pos_o,
                                     &prev_o, &peer_o, &key_o))
        return NULL;

    int64_t n, first_pos;
    if (range_arg(n_o, "n", &n) < 0 || range_arg(pos_o, "first_pos", &first_pos) < 0)
        return NULL;
    if (n < 0) {
        PyErr_Format(PyExc_ValueError, F ": n must be >= 0, not %lld", (long long)n);
        return NULL;
    }
    if (first_pos < 1) {
        PyErr_Format(PyExc_ValueError, F ": first_pos must be >= 1, not %lld",
                     (long long)first_pos);
        return NULL;
    }
    if (n > 0 && first_pos - 1 > INT64_MAX - n) {
        PyErr_Format(PyExc_ValueError,
                     F ": the last position, first_pos + n - 1 = %lld + %lld - 1, is beyond "
                       "2**63 - 1",
                     (long long)first_pos, (long long)n);
        return NULL;
    }

    /* link = u64(pos) || u8(1) || i64(uid) || i64(gid) || i64(pid) || u64(size), or
     * with 25 zero bytes for the flag and the peer when it is unknown. */
    unsigned char link[41] = {0};
    if (peer_o != Py_None) {
        /* Exactly a tuple: seal.PeerCred is a tuple too, in (pid, uid, gid) order. */
        if (!PyTuple_CheckExact(peer_o) || PyTuple_GET_SIZE(peer_o) != 3) {
            PyErr_Format(PyExc_TypeError,
                         F ": peer must be None or a (uid, gid, pid) tuple, not %.100s",
                         Py_TYPE(peer_o)->tp_name);
            return NULL;
        }
        static const char *names[3] = {"peer uid", "peer gid", "peer pid"};
        link[8] = 1;
        for (int i = 0; i < 3; i++) {
            int64_t v;
            if (aw_int64_arg(PyTuple_GET_ITEM(peer_o, i), F, names[i], &v) < 0)
                return NULL;
            put_be64(link + 9 + 8 * i, (uint64_t)v); /* two's complement: big-endian i64 */
        }
    }

    unsigned char prev[32];
    Py_buffer view;
    if (buffer_arg(prev_o, "prev", &view) < 0)
        return NULL;
    if (view.len != 32) {
        PyErr_Format(PyExc_ValueError, F ": prev must be 32 bytes (a SHA-256 digest), not %zd",
                     view.len);
        PyBuffer_Release(&view);
        return NULL;
    }
    memcpy(prev, view.buf, 32);
    PyBuffer_Release(&view);

    sealer s;
    if (buffer_arg(key_o, "key", &view) < 0)
        return NULL;
    sealer_init(&s, view.buf, (size_t)view.len);
    PyBuffer_Release(&view);

    Py_buffer raw;
    if (buffer_arg(raw_o, "raw", &raw) < 0)
        return NULL;
    PyObject *result = NULL;
    seal_result res = {SEAL_OK, 0, 0};
    /* Each record needs at least its newline: this bounds the allocation by len(raw). */
    if (n > raw.len) {
        PyErr_Format(PyExc_ValueError,
                     F ": n is %lld but raw holds only %zd newline-terminated records",
                     (long long)n, count_newlines(raw.buf, raw.len));
        goto done;
    }
    if (n > PY_SSIZE_T_MAX / OUT_PER_RECORD) {
        PyErr_NoMemory();
        goto done;
    }
    result = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)n * OUT_PER_RECORD);
    if (result == NULL)
        goto done;

    unsigned char *out = (unsigned char *)PyBytes_AS_STRING(result);
    if (PyBytes_CheckExact(raw_o)) {
        /* bytes cannot change and `raw` holds a reference: hash without the GIL. Any
         * other exporter (a bytearray, a memoryview of one, a bytes subclass with its
         * own __buffer__ in 3.12+) may be written by another thread meanwhile: a data
         * race, and a seal over bytes that never existed together. Those keep the GIL. */
        Py_BEGIN_ALLOW_THREADS
        seal_records(&s, raw.buf, (size_t)raw.len, (Py_ssize_t)n, (uint64_t)first_pos, prev,
                     link, out, &res);
        Py_END_ALLOW_THREADS
    } else {
        seal_records(&s, raw.buf, (size_t)raw.len, (Py_ssize_t)n, (uint64_t)first_pos, prev,
                     link, out, &res);
    }
    switch (res.status) {
    case SEAL_OK:
        break;
    case SEAL_TOO_FEW:
        if (res.rest)
            PyErr_Format(PyExc_ValueError,
                         F ": n is %lld but raw holds only %zd newline-terminated records "
                           "(and %zd bytes without a newline at the end)",
                         (long long)n, res.found, res.rest);
        else
            PyErr_Format(PyExc_ValueError,
                         F ": n is %lld but raw holds only %zd newline-terminated records",
                         (long long)n, res.found);
        break;
    case SEAL_TOO_MANY:
        PyErr_Format(PyExc_ValueError, F ": raw holds more than n = %lld records", (long long)n);
        break;
    default:
        PyErr_Format(PyExc_ValueError,
                     F ": raw has %zd bytes without a newline after its n = %lld records",
                     res.rest, (long long)n);
    }
    if (res.status != SEAL_OK)
        Py_CLEAR(result);
done:
    PyBuffer_Release(&raw);
    return result;
}
