/* Argument encoding: Python objects to JSON without running any Python code.
 *
 * Only exact built-in types are read by value, through the C structures. A subclass
 * is read as its base type would be (the storage is the base type's C object) and
 * flagged with its type name; everything else is described by its type name.
 * No repr/str/__fspath__/__eq__/__hash__/__len__, no attribute lookup, no iteration
 * protocol: nothing here can reach Python code, so nothing here can raise.
 */
#include "aw.h"

#include <frameobject.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

aw_limits aw_default_limits = {1024, 256, 64, 4, 64 * 1024};

/* ---- buffer ------------------------------------------------------------- */

void aw_buf_init(aw_buf *b, char *storage, size_t cap) {
    b->p = storage;
    b->len = 0;
    b->cap = cap;
    b->heap = 0;
    b->oom = 0;
}

void aw_buf_free(aw_buf *b) {
    if (b->heap)
        free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
    b->heap = 0;
}

int aw_buf_reserve_slow(aw_buf *b, size_t n) {
    if (b->oom)
        return -1;
    if (b->len + n <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + n) {
        if (cap > ((size_t)1 << 40)) {
            b->oom = 1;
            return -1;
        }
        cap *= 2;
    }
    char *p;
    if (b->heap) {
        p = realloc(b->p, cap);
    } else {
        p = malloc(cap);
        if (p && b->len)
            memcpy(p, b->p, b->len);
    }
    if (!p) {
        b->oom = 1;
        return -1;
    }
    b->p = p;
    b->cap = cap;
    b->heap = 1;
    return 0;
}

static const char PAIRS[] = "0001020304050607080910111213141516171819"
                            "2021222324252627282930313233343536373839"
                            "4041424344454647484950515253545556575859"
                            "6061626364656667686970717273747576777879"
                            "8081828384858687888990919293949596979899";

/* Decimal digits straight into the buffer, two at a time from a table, in 32-bit
 * arithmetic where the value allows: a timestamp (19 digits) is most of a record's
 * numbers, and this is the recording thread's hot path. */
static inline char *put_2(char *d, uint32_t v) { /* exactly 2 digits, v < 100 */
    memcpy(d, PAIRS + v * 2, 2);
    return d + 2;
}

static inline char *put_4(char *d, uint32_t v) { /* exactly 4 digits, v < 10^4 */
    return put_2(put_2(d, v / 100), v % 100);
}

static inline char *put_8(char *d, uint32_t v) { /* exactly 8 digits, v < 10^8 */
    return put_4(put_4(d, v / 10000), v % 10000);
}

static inline char *put_upto4(char *d, uint32_t v) { /* v < 10^4, no leading zeros */
    if (v < 10) {
        *d = (char)('0' + v);
        return d + 1;
    }
    if (v < 100)
        return put_2(d, v);
    if (v < 1000) {
        *d = (char)('0' + v / 100);
        return put_2(d + 1, v % 100);
    }
    return put_4(d, v);
}

static inline char *put_upto8(char *d, uint32_t v) { /* v < 10^8, no leading zeros */
    if (v < 10000)
        return put_upto4(d, v);
    return put_4(put_upto4(d, v / 10000), v % 10000);
}

void aw_buf_uint(aw_buf *b, unsigned long long v) {
    if (aw_buf_reserve(b, 20) < 0)
        return;
    char *d = b->p + b->len;
    if (v < 100000000u) {
        d = put_upto8(d, (uint32_t)v);
    } else if (v < 10000000000000000u) {
        d = put_upto8(d, (uint32_t)(v / 100000000u));
        d = put_8(d, (uint32_t)(v % 100000000u));
    } else {
        unsigned long long low = v % 10000000000000000u;
        d = put_upto4(d, (uint32_t)(v / 10000000000000000u)); /* at most 1844 */
        d = put_8(d, (uint32_t)(low / 100000000u));
        d = put_8(d, (uint32_t)(low % 100000000u));
    }
    b->len = (size_t)(d - b->p);
}

void aw_buf_int(aw_buf *b, long long v) {
    if (v < 0) {
        aw_buf_putc(b, '-');
        aw_buf_uint(b, (unsigned long long)(-(v + 1)) + 1u);
    } else {
        aw_buf_uint(b, (unsigned long long)v);
    }
}

static const char HEX[] = "0123456789abcdef";

/* JSON for one code point written at d (room for 6 bytes); returns bytes written.
 * Lone surrogates stay \udXXX escapes, as Python's json module writes them. */
static inline size_t write_codepoint(char *d, Py_UCS4 c) {
    static const char SHORT[32] = {0, 0, 0, 0, 0, 0, 0, 0, 'b', 't', 'n', 0, 'f', 'r', 0, 0,
                                   0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    if (c < 0x80) {
        if (c >= 0x20 && c != '"' && c != '\\' && c != 0x7f) {
            d[0] = (char)c;
            return 1;
        }
        if (c == '"' || c == '\\') {
            d[0] = '\\';
            d[1] = (char)c;
            return 2;
        }
        if (c < 0x20 && SHORT[c]) {
            d[0] = '\\';
            d[1] = SHORT[c];
            return 2;
        }
    } else if (c < 0x800) {
        d[0] = (char)(0xc0 | (c >> 6));
        d[1] = (char)(0x80 | (c & 0x3f));
        return 2;
    } else if (c < 0xd800 || (c > 0xdfff && c < 0x10000)) {
        d[0] = (char)(0xe0 | (c >> 12));
        d[1] = (char)(0x80 | ((c >> 6) & 0x3f));
        d[2] = (char)(0x80 | (c & 0x3f));
        return 3;
    } else if (c >= 0x10000) {
        d[0] = (char)(0xf0 | (c >> 18));
        d[1] = (char)(0x80 | ((c >> 12) & 0x3f));
        d[2] = (char)(0x80 | ((c >> 6) & 0x3f));
        d[3] = (char)(0x80 | (c & 0x3f));
        return 4;
    }
    /* other controls, DEL and lone surrogates */
    d[0] = '\\';
    d[1] = 'u';
    d[2] = HEX[(c >> 12) & 15];
    d[3] = HEX[(c >> 8) & 15];
    d[4] = HEX[(c >> 4) & 15];
    d[5] = HEX[c & 15];
    return 6;
}

/* Length of the valid UTF-8 sequence at s (n bytes left), or 0 if invalid. */
static size_t utf8_seq(const unsigned char *s, size_t n, Py_UCS4 *cp) {
    unsigned char c = s[0];
    size_t len;
    Py_UCS4 v, min;
    if (c < 0x80) {
        *cp = c;
        return 1;
    } else if ((c & 0xe0) == 0xc0) {
        len = 2, v = c & 0x1f, min = 0x80;
    } else if ((c & 0xf0) == 0xe0) {
        len = 3, v = c & 0x0f, min = 0x800;
    } else if ((c & 0xf8) == 0xf0) {
        len = 4, v = c & 0x07, min = 0x10000;
    } else {
        return 0;
    }
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        v = (v << 6) | (s[i] & 0x3f);
    }
    if (v < min || v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff))
        return 0;
    *cp = v;
    return len;
}

/* Bytes that stand for themselves inside a JSON string: printable ASCII but '"', '\\'. */
static const unsigned char PLAIN[256] = {
    ['\x20'] = 1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0x20-0x2f, '"' is 0 */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,            /* 0x30-0x3f */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,            /* 0x40-0x4f */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1,            /* 0x50-0x5f, '\\' is 0 */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,            /* 0x60-0x6f */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0,            /* 0x70-0x7f, DEL is 0 */
};

/* Length of the leading run of PLAIN bytes. Sixteen at a time with SSE2 (every
 * x86-64 has it): the signed "less than 0x20" compare also catches bytes from 0x80 up,
 * which are negative as signed chars. Then eight at a time, where a word is plain
 * when no byte is below 0x20, '"', '\\', DEL or above 0x7f (each test is the exact
 * "some byte is zero / below n" bit trick, so a word it passes is wholly plain). */
static inline size_t plain_run(const unsigned char *s, size_t n) {
    size_t i = 0;
#if defined(__SSE2__)
    const __m128i quote = _mm_set1_epi8('"'), bslash = _mm_set1_epi8('\\');
    const __m128i del = _mm_set1_epi8(0x7f), space = _mm_set1_epi8(0x20);
    for (; i + 16 <= n; i += 16) {
        __m128i w = _mm_loadu_si128((const __m128i *)(const void *)(s + i));
        __m128i escaped = _mm_or_si128(_mm_cmpeq_epi8(w, quote), _mm_cmpeq_epi8(w, bslash));
        __m128i other = _mm_or_si128(_mm_cmpeq_epi8(w, del), _mm_cmplt_epi8(w, space));
        __m128i bad = _mm_or_si128(escaped, other);
        unsigned mask = (unsigned)_mm_movemask_epi8(bad);
        if (mask)
            return i + (size_t)__builtin_ctz(mask);
    }
#endif
    const uint64_t ones = 0x0101010101010101u, high = 0x8080808080808080u;
    for (; i + 8 <= n; i += 8) {
        uint64_t w, q, bs, dl;
        memcpy(&w, s + i, 8);
        q = w ^ (ones * '"');
        bs = w ^ (ones * '\\');
        dl = w ^ (ones * 0x7f);
        uint64_t hit = ((w - ones * 0x20) & ~w) | ((q - ones) & ~q) | ((bs - ones) & ~bs) |
                       ((dl - ones) & ~dl) | w;
        if (hit & high)
            break;
    }
    while (i < n && PLAIN[s[i]])
        i++;
    return i;
}

void aw_buf_cstr(aw_buf *b, const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    if (aw_buf_reserve(b, n * 6 + 2) < 0)
        return;
    char *d = b->p + b->len;
    *d++ = '"';
    for (size_t i = 0; i < n;) {
        size_t plain = plain_run(u + i, n - i); /* most names and paths: all of it */
        memcpy(d, u + i, plain);
        d += plain;
        i += plain;
        if (i == n)
            break;
        Py_UCS4 cp;
        size_t k = utf8_seq(u + i, n - i, &cp);
        if (k == 0) {
            d += write_codepoint(d, 0xdc00u | u[i]); /* surrogateescape */
            i++;
        } else {
            d += write_codepoint(d, cp);
            i += k;
        }
    }
    *d++ = '"';
    b->len = (size_t)(d - b->p);
}

static int utf8_valid(const unsigned char *s, size_t n) {
    for (size_t i = 0; i < n;) {
        Py_UCS4 cp;
        size_t k = utf8_seq(s + i, n - i, &cp);
        if (k == 0)
            return 0;
        i += k;
    }
    return 1;
}

static void put_b64(aw_buf *b, const unsigned char *s, size_t n) {
    static const char T[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    if (aw_buf_reserve(b, (n + 2) / 3 * 4 + 2) < 0)
        return;
    char *d = b->p + b->len;
    *d++ = '"';
    size_t i = 0;
    for (; i + 3 <= n; i += 3, d += 4) {
        uint32_t v = (uint32_t)s[i] << 16 | (uint32_t)s[i + 1] << 8 | s[i + 2];
        d[0] = T[v >> 18];
        d[1] = T[(v >> 12) & 63];
        d[2] = T[(v >> 6) & 63];
        d[3] = T[v & 63];
    }
    if (n - i) {
        uint32_t v = (uint32_t)s[i] << 16 | (n - i == 2 ? (uint32_t)s[i + 1] << 8 : 0);
        d[0] = T[v >> 18];
        d[1] = T[(v >> 12) & 63];
        d[2] = n - i == 2 ? T[(v >> 6) & 63] : '=';
        d[3] = '=';
        d += 4;
    }
    *d++ = '"';
    b->len = (size_t)(d - b->p);
}

/* ---- values --------------------------------------------------------------- */

typedef struct {
    const aw_limits *lim;
    size_t start; /* b->len when the args array began: the budget counts from here */
    aw_deferred_hash *defer;
} enc_ctx;

static Py_ssize_t str_cap(aw_buf *b, const enc_ctx *cx) {
    size_t used = b->len - cx->start;
    size_t left = used >= cx->lim->budget ? 0 : cx->lim->budget - used;
    Py_ssize_t cap = cx->lim->max_str;
    /* A character takes at most 6 bytes of JSON: keep the whole record in budget. */
    if ((size_t)cap > left / 6)
        cap = (Py_ssize_t)(left / 6);
    return cap;
}

/* Type name from the type object's C field: never a Python-level lookup. */
static void put_type_name(aw_buf *b, PyObject *o) {
    const char *name = Py_TYPE(o)->tp_name;
    aw_buf_cstr(b, name ? name : "?", name ? strlen(name) : 1);
}


/* String content of a str object (exact or subclass), read from the C object.
 * Room for the worst case is reserved once, then characters are written directly. */
static void put_unicode_chars(aw_buf *b, PyObject *o, Py_ssize_t n) {
#if PY_VERSION_HEX < 0x030C0000
    /* Legacy (not ready) strings only exist before 3.12; readying is pure C. */
    if (PyUnicode_READY(o) < 0) {
        PyErr_Clear();
        aw_buf_put(b, "\"\"", 2);
        return;
    }
#endif
    if (aw_buf_reserve(b, (size_t)n * 6 + 2) < 0)
        return;
    char *d = b->p + b->len;
    *d++ = '"';
    int kind = PyUnicode_KIND(o);
    const void *data = PyUnicode_DATA(o);
    if (kind == PyUnicode_1BYTE_KIND) {
        const Py_UCS1 *s = (const Py_UCS1 *)data;
        for (size_t i = 0, len = (size_t)n; i < len;) {
            size_t plain = plain_run(s + i, len - i);
            memcpy(d, s + i, plain);
            d += plain;
            i += plain;
            if (i < len)
                d += write_codepoint(d, s[i++]);
        }
    } else if (kind == PyUnicode_2BYTE_KIND) {
        const Py_UCS2 *s = (const Py_UCS2 *)data;
        for (Py_ssize_t i = 0; i < n; i++)
            d += write_codepoint(d, s[i]);
    } else {
        const Py_UCS4 *s = (const Py_UCS4 *)data;
        for (Py_ssize_t i = 0; i < n; i++)
            d += write_codepoint(d, s[i]);
    }
    *d++ = '"';
    b->len = (size_t)(d - b->p);
}

static void put_str(aw_buf *b, PyObject *o, const enc_ctx *cx) {
    Py_ssize_t len = PyUnicode_GET_LENGTH(o);
    Py_ssize_t cap = str_cap(b, cx);
    int exact = PyUnicode_CheckExact(o);
    if (exact && len <= cap) {
        put_unicode_chars(b, o, len);
        return;
    }
    aw_buf_puts(b, "{\"$\":\"str\",\"v\":");
    put_unicode_chars(b, o, len <= cap ? len : cap);
    if (!exact) {
        aw_buf_puts(b, ",\"type\":");
        put_type_name(b, o);
    }
    if (len > cap) {
        aw_buf_puts(b, ",\"len\":");
        aw_buf_int(b, len);
        aw_buf_puts(b, ",\"trunc\":true");
    }
    aw_buf_putc(b, '}');
}

static void put_bytes_like(aw_buf *b, PyObject *o, const char *tag, const unsigned char *data,
                           Py_ssize_t len, int exact, const enc_ctx *cx) {
    Py_ssize_t cap = str_cap(b, cx);
    if (cap > cx->lim->max_bytes)
        cap = cx->lim->max_bytes;
    Py_ssize_t n = len <= cap ? len : cap;
    aw_buf_puts(b, "{\"$\":\"");
    aw_buf_puts(b, tag);
    aw_buf_puts(b, "\",\"len\":");
    aw_buf_int(b, len);
    if (utf8_valid(data, (size_t)n)) {
        aw_buf_puts(b, ",\"text\":");
        aw_buf_cstr(b, (const char *)data, (size_t)n);
    } else {
        aw_buf_puts(b, ",\"b64\":");
        put_b64(b, data, (size_t)n);
    }
    if (!exact) {
        aw_buf_puts(b, ",\"type\":");
        put_type_name(b, o);
    }
    if (len > cap)
        aw_buf_puts(b, ",\"trunc\":true");
    aw_buf_putc(b, '}');
}

static void put_long(aw_buf *b, PyObject *o) {
    int overflow = 0;
    long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
    if (!overflow && !(v == -1 && PyErr_Occurred())) {
        aw_buf_int(b, v);
        return;
    }
    PyErr_Clear();
    size_t bits = _PyLong_NumBits(o);
    if (bits == (size_t)-1)
        PyErr_Clear();
    aw_buf_puts(b, "{\"$\":\"int\",\"bits\":");
    aw_buf_uint(b, bits);
    if (bits != (size_t)-1 && bits <= 4096) {
        /* Exact int: PyNumber_ToBase is pure C (no __index__ on an exact int). */
        PyObject *hex = PyNumber_ToBase(o, 16);
        if (hex && PyUnicode_CheckExact(hex)) {
            aw_buf_puts(b, ",\"hex\":");
            put_unicode_chars(b, hex, PyUnicode_GET_LENGTH(hex));
        }
        Py_XDECREF(hex);
        PyErr_Clear();
    }
    aw_buf_putc(b, '}');
}

static void put_float(aw_buf *b, double d) {
    if (isnan(d)) {
        aw_buf_puts(b, "{\"$\":\"float\",\"v\":\"nan\"}");
    } else if (isinf(d)) {
        aw_buf_puts(b, d > 0 ? "{\"$\":\"float\",\"v\":\"inf\"}" : "{\"$\":\"float\",\"v\":\"-inf\"}");
    } else {
        char tmp[40];
        int n = snprintf(tmp, sizeof tmp, "%.17g", d);
        if (n > 0 && (size_t)n < sizeof tmp) {
            aw_buf_put(b, tmp, (size_t)n);
            if (!strpbrk(tmp, ".eE"))
                aw_buf_put(b, ".0", 2);
        } else {
            aw_buf_puts(b, "null");
        }
    }
}

static void put_value(aw_buf *b, PyObject *o, int depth, const enc_ctx *cx);

static void put_sequence(aw_buf *b, PyObject *o, PyObject **items, Py_ssize_t len, const char *tag,
                         int depth, const enc_ctx *cx) {
    Py_ssize_t n = len <= cx->lim->max_items ? len : cx->lim->max_items;
    int exact = Py_IS_TYPE(o, &PyTuple_Type) || Py_IS_TYPE(o, &PyList_Type);
    int wrap = !exact || n < len;
    if (wrap) {
        aw_buf_puts(b, "{\"$\":\"");
        aw_buf_puts(b, tag);
        aw_buf_puts(b, "\",\"items\":");
    }
    aw_buf_putc(b, '[');
    for (Py_ssize_t i = 0; i < n; i++) {
        if (i)
            aw_buf_putc(b, ',');
        put_value(b, items[i], depth + 1, cx);
    }
    aw_buf_putc(b, ']');
    if (wrap) {
        if (!exact) {
            aw_buf_puts(b, ",\"type\":");
            put_type_name(b, o);
        }
        if (n < len) {
            aw_buf_puts(b, ",\"len\":");
            aw_buf_int(b, len);
            aw_buf_puts(b, ",\"trunc\":true");
        }
        aw_buf_putc(b, '}');
    }
}

static void put_dict(aw_buf *b, PyObject *o, int depth, const enc_ctx *cx) {
    /* PyDict_Next walks the C table: no hashing, no comparisons, no Python code. */
    Py_ssize_t len = PyDict_GET_SIZE(o);
    Py_ssize_t pos = 0, n = 0;
    PyObject *k, *v;
    aw_buf_puts(b, "{\"$\":\"dict\",\"len\":");
    aw_buf_int(b, len);
    aw_buf_puts(b, ",\"items\":[");
    while (n < cx->lim->max_items && PyDict_Next(o, &pos, &k, &v)) {
        if (n++)
            aw_buf_putc(b, ',');
        aw_buf_putc(b, '[');
        put_value(b, k, depth + 1, cx);
        aw_buf_putc(b, ',');
        put_value(b, v, depth + 1, cx);
        aw_buf_putc(b, ']');
    }
    aw_buf_putc(b, ']');
    if (!PyDict_CheckExact(o)) {
        aw_buf_puts(b, ",\"type\":");
        put_type_name(b, o);
    }
    if (n < len)
        aw_buf_puts(b, ",\"trunc\":true");
    aw_buf_putc(b, '}');
}

static void put_code(aw_buf *b, PyCodeObject *co, const enc_ctx *cx) {
    aw_buf_puts(b, "{\"$\":\"code\",\"name\":");
#if PY_VERSION_HEX >= 0x030B0000
    PyObject *name = co->co_qualname;
#else
    PyObject *name = co->co_name;
#endif
    if (name && PyUnicode_Check(name))
        put_str(b, name, cx);
    else
        aw_buf_puts(b, "null");
    aw_buf_puts(b, ",\"file\":");
    if (co->co_filename && PyUnicode_Check(co->co_filename))
        put_str(b, co->co_filename, cx);
    else
        aw_buf_puts(b, "null");
    aw_buf_puts(b, ",\"line\":");
    aw_buf_int(b, co->co_firstlineno);
#if PY_VERSION_HEX >= 0x030B0000
    PyObject *bytecode = PyCode_GetCode(co); /* new reference; pure C */
#else
    PyObject *bytecode = co->co_code;
    Py_XINCREF(bytecode);
#endif
    if (bytecode && PyBytes_Check(bytecode)) {
        size_t n = (size_t)PyBytes_GET_SIZE(bytecode);
        aw_buf_puts(b, ",\"sha256\":\"");
        if (cx->defer && cx->defer->bytes == NULL && aw_hasher_worth(n)) {
            cx->defer->hex_at = b->len;
            aw_buf_put(b, AW_HEX_PLACEHOLDER, 64);
            cx->defer->bytes = bytecode; /* our reference goes to the caller */
            bytecode = NULL;
        } else {
            char hex[65];
            aw_sha256_hex(PyBytes_AS_STRING(bytecode), n, hex);
            aw_buf_put(b, hex, 64);
        }
        aw_buf_putc(b, '"');
    }
    Py_XDECREF(bytecode);
    PyErr_Clear();
    aw_buf_putc(b, '}');
}

static void put_tagged_type(aw_buf *b, const char *tag, PyObject *o) {
    aw_buf_puts(b, "{\"$\":\"");
    aw_buf_puts(b, tag);
    aw_buf_puts(b, "\",\"type\":");
    put_type_name(b, o);
    aw_buf_putc(b, '}');
}

static void put_value(aw_buf *b, PyObject *o, int depth, const enc_ctx *cx) {
    if (o == NULL || o == Py_None) {
        aw_buf_puts(b, "null");
    } else if (o == Py_True) {
        aw_buf_puts(b, "true");
    } else if (o == Py_False) {
        aw_buf_puts(b, "false");
    } else if (PyUnicode_Check(o)) {
        put_str(b, o, cx);
    } else if (PyLong_CheckExact(o)) {
        put_long(b, o);
    } else if (PyFloat_CheckExact(o)) {
        put_float(b, PyFloat_AS_DOUBLE(o));
    } else if (PyBytes_Check(o)) {
        put_bytes_like(b, o, "bytes", (const unsigned char *)PyBytes_AS_STRING(o),
                       PyBytes_GET_SIZE(o), PyBytes_CheckExact(o), cx);
    } else if (PyByteArray_Check(o)) {
        put_bytes_like(b, o, "bytearray", (const unsigned char *)PyByteArray_AS_STRING(o),
                       PyByteArray_GET_SIZE(o), PyByteArray_CheckExact(o), cx);
    } else if (PyCode_Check(o)) {
        put_code(b, (PyCodeObject *)o, cx);
    } else if (depth >= cx->lim->max_depth &&
               (PyTuple_Check(o) || PyList_Check(o) || PyDict_Check(o))) {
        put_tagged_type(b, "deep", o);
    } else if (PyTuple_Check(o)) {
        put_sequence(b, o, &PyTuple_GET_ITEM(o, 0), PyTuple_GET_SIZE(o), "tuple", depth, cx);
    } else if (PyList_Check(o)) {
        put_sequence(b, o, ((PyListObject *)o)->ob_item, PyList_GET_SIZE(o), "list", depth, cx);
    } else if (PyDict_Check(o)) {
        put_dict(b, o, depth, cx);
    } else if (PyType_Check(o)) {
        aw_buf_puts(b, "{\"$\":\"type\",\"name\":");
        const char *name = ((PyTypeObject *)o)->tp_name;
        aw_buf_cstr(b, name ? name : "?", name ? strlen(name) : 1);
        aw_buf_putc(b, '}');
    } else if (PyFunction_Check(o)) {
        PyObject *qn = ((PyFunctionObject *)o)->func_qualname;
        aw_buf_puts(b, "{\"$\":\"function\",\"name\":");
        if (qn && PyUnicode_Check(qn))
            put_str(b, qn, cx);
        else
            aw_buf_puts(b, "null");
        aw_buf_putc(b, '}');
    } else {
        put_tagged_type(b, "object", o);
    }
}

void aw_encode_args(aw_buf *b, PyObject *args, const aw_limits *lim, aw_deferred_hash *defer) {
    enc_ctx cx = {lim, b->len, defer};
    if (args == NULL || !PyTuple_Check(args)) {
        aw_buf_puts(b, "[]");
        return;
    }
    /* The args tuple itself is an array even when long: truncate items only. */
    Py_ssize_t len = PyTuple_GET_SIZE(args);
    aw_buf_putc(b, '[');
    for (Py_ssize_t i = 0; i < len; i++) {
        if (i)
            aw_buf_putc(b, ',');
        put_value(b, PyTuple_GET_ITEM(args, i), 1, &cx);
    }
    aw_buf_putc(b, ']');
}

/* ---- where ----------------------------------------------------------------
 * Computing a line number walks the code object's line table from its start, which
 * costs more than the rest of a record. A small per-thread cache maps (code object,
 * line table, instruction offset) to the line. It holds no references: an entry can
 * only be wrong if a code object and its line table are both freed and replaced at
 * the same addresses by a different function at the same offset, and then the cost
 * is a wrong line number in `where`, never a memory error. */

#define LINE_CACHE 64

typedef struct {
    const void *code, *table;
    int lasti, line;
} line_entry;

#if PY_VERSION_HEX >= 0x030A0000
/* A miss walks the line table, and CPython's own lookup (PyCode_Addr2Line) starts
 * every walk at the table's first entry: in a module body whose imports each raise
 * events, that is a walk from the top for every event. A per-thread entry per code
 * object keeps where its last walk stopped (a PyCodeAddressRange, set up the way
 * CPython's _PyLineTable_InitAddressRange does) and _PyCode_CheckLineNumber goes on
 * from there. It only walks forward, as CPython does from the start: an earlier
 * offset starts again from the top. The entry is used only while the code object
 * and its table are the ones it was made for, at the same addresses and size, so
 * its pointers stay inside the live table; a stale match costs a wrong line, never
 * a read outside it. */
#define WALK_CACHE 16

typedef struct {
    const void *code, *table, *end;
    PyCodeAddressRange range;
} walk_entry;
#endif

#define FRAG_CACHE 32
#define FRAG_MAX 320

typedef struct {
    const void *code, *file, *func;
    unsigned short len;
    char text[FRAG_MAX];
} frag_entry;

/* All of where's caches in one thread-local block: the extension is loaded with
 * dlopen, so each thread-local variable costs a __tls_get_addr call per use. */
typedef struct {
    line_entry lines[LINE_CACHE];
    frag_entry frags[FRAG_CACHE];
#if PY_VERSION_HEX >= 0x030A0000
    walk_entry walks[WALK_CACHE];
#endif
} where_caches;

static __thread where_caches where_cache;

#if PY_VERSION_HEX >= 0x030A0000
static int walked_line(walk_entry *walks, PyCodeObject *co, int addrq) {
    PyObject *table = co->co_linetable;
    if (addrq < 0 || table == NULL || !PyBytes_Check(table))
        return PyCode_Addr2Line(co, addrq);
    const char *start = PyBytes_AS_STRING(table);
    const char *end = start + PyBytes_GET_SIZE(table);
    walk_entry *e = &walks[((uintptr_t)co >> 4) & (WALK_CACHE - 1)];
    if (e->code != co || e->table != table || e->end != end || addrq < e->range.ar_start) {
        e->code = co;
        e->table = table;
        e->end = end;
        e->range.opaque.lo_next = (void *)start;
        e->range.opaque.limit = (void *)end;
        e->range.opaque.computed_line = co->co_firstlineno;
        e->range.ar_start = -1;
        e->range.ar_end = 0;
        e->range.ar_line = -1;
    }
    return _PyCode_CheckLineNumber(addrq, &e->range);
}
#endif

static int cached_line(where_caches *cache, PyFrameObject *f, PyCodeObject *co) {
#if PY_VERSION_HEX >= 0x030B0000
    int lasti = PyFrame_GetLasti(f); /* bytes */
#else
    int lasti = f->f_lasti; /* 3.10: code units */
#endif
#if PY_VERSION_HEX >= 0x030A0000
    const void *table = co->co_linetable;
#else
    const void *table = co->co_lnotab;
#endif
    size_t slot = (((uintptr_t)co >> 4) ^ (uintptr_t)lasti) & (LINE_CACHE - 1);
    line_entry *e = &cache->lines[slot];
    if (e->code == co && e->table == table && e->lasti == lasti)
        return e->line;
#if PY_VERSION_HEX >= 0x030B0000
    int line = walked_line(cache->walks, co, lasti);
#elif PY_VERSION_HEX >= 0x030A0000
    int line = walked_line(cache->walks, co, lasti < 0 ? lasti : lasti * 2);
#else
    int line = PyFrame_GetLineNumber(f);
#endif
    e->code = co;
    e->table = table;
    e->lasti = lasti;
    e->line = line;
    return line;
}

/* The '{"file":...,"func":...,"line":' part of `where` depends only on the code
 * object: a per-thread cache keeps it encoded, under the same identity rules as
 * the line cache above. Longer fragments are simply not cached. */

static void put_where_prefix(frag_entry *frag_cache, aw_buf *b, PyCodeObject *co) {
    static const aw_limits where_limits = {512, 0, 0, 0, 4096};
    PyObject *file = co ? co->co_filename : NULL;
#if PY_VERSION_HEX >= 0x030B0000
    PyObject *func = co ? co->co_qualname : NULL;
#else
    PyObject *func = co ? co->co_name : NULL;
#endif
    frag_entry *e = &frag_cache[((uintptr_t)co >> 4) & (FRAG_CACHE - 1)];
    if (co && e->code == co && e->file == file && e->func == func) {
        aw_buf_put(b, e->text, e->len);
        return;
    }
    size_t start = b->len;
    enc_ctx cx = {&where_limits, b->len};
    aw_buf_puts(b, "{\"file\":");
    if (file && PyUnicode_Check(file))
        put_str(b, file, &cx);
    else
        aw_buf_puts(b, "null");
    aw_buf_puts(b, ",\"func\":");
    if (func && PyUnicode_Check(func))
        put_str(b, func, &cx);
    else
        aw_buf_puts(b, "null");
    aw_buf_puts(b, ",\"line\":");
    size_t n = b->len - start;
    if (co && !b->oom && n <= FRAG_MAX) {
        e->code = co;
        e->file = file;
        e->func = func;
        e->len = (unsigned short)n;
        memcpy(e->text, b->p + start, n);
    }
}

void aw_encode_where(aw_buf *b, PyThreadState *ts) {
    if (ts == NULL) {
        aw_buf_puts(b, "null");
        return;
    }
#if PY_VERSION_HEX >= 0x03090000
    PyFrameObject *f = PyThreadState_GetFrame(ts); /* new reference */
    if (f == NULL) {
        aw_buf_puts(b, "null");
        return;
    }
    PyCodeObject *co = PyFrame_GetCode(f); /* new reference */
#else
    PyFrameObject *f = ts->frame;
    if (f == NULL) {
        aw_buf_puts(b, "null");
        return;
    }
    PyCodeObject *co = f->f_code;
#endif
    where_caches *volatile cache = &where_cache; /* one __tls_get_addr (see above) */
    int line = co ? cached_line(cache, f, co) : PyFrame_GetLineNumber(f);
    put_where_prefix(cache->frags, b, co);
    aw_buf_int(b, line);
    aw_buf_putc(b, '}');
#if PY_VERSION_HEX >= 0x03090000
    Py_XDECREF(co);
    Py_DECREF(f);
#endif
}
