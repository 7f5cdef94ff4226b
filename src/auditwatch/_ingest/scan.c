/* scan_lines: find runs of plain event lines, so that the collector handles them per
 * run instead of parsing and checking every line in Python.
 *
 * A line is plain when it is one JSON object (RFC 8259, strictly: UTF-8 without
 * surrogates, no raw control characters in strings, only JSON escapes, no lone
 * surrogate escapes, depth <= 64, no integer beyond 64 bits, no float that overflows
 * to infinity) whose top level holds, once each, "v": 1, a non-empty "run" and an
 * "event" string without escapes, an integer "seq" >= 1, "pid" (the sender's when
 * given) and "ts", and "kind": "event". Every rule errs on the side of "not plain":
 * a line the scan refuses still goes through the Python path, which gives its
 * verdict with its reasons; a line it accepts must be one that json.loads and
 * orjson.loads both take, with the values read here. tests/test_ingest.py checks
 * that against both parsers on mutated lines.
 *
 * The scan reads each line once, and relies on the '\n' ending it as a sentinel:
 * no rule accepts a '\n' inside a line, and every read of p[k] follows accepted
 * reads of p[0..k-1], so no read goes past the newline. data must end with one.
 */
#include "ingest.h"

#include <stdlib.h>
#include <string.h>

#define F "scan_lines"
#define MAX_DEPTH 64      /* containers, the top-level object included */
#define MAX_FLOAT_POW10 308

/* String bytes that stand for themselves: printable ASCII but '"' (0x22) and '\\'
 * (0x5c). Everything else is an escape, a UTF-8 sequence, the end or an error. */
static const unsigned char STR_PLAIN[256] = {
    [0x20 ... 0x21] = 1,
    [0x23 ... 0x5b] = 1,
    [0x5d ... 0x7f] = 1,
};

#define IS_DIGIT(c) ((unsigned)((c) - '0') < 10)

enum { V_OTHER, V_STR, V_INT };

/* What the top level needs to know about a member's value. */
typedef struct {
    int type;
    int esc; /* V_STR: it has a backslash escape */
    const unsigned char *s;
    size_t len;
    int64_t i; /* V_INT */
} scalar;

static inline const unsigned char *skip_ws(const unsigned char *p) {
    while (*p == ' ' || *p == '\t' || *p == '\r') /* not '\n': it ends the line */
        p++;
    return p;
}

static inline int hex(unsigned c) {
    if (IS_DIGIT(c))
        return (int)(c - '0');
    c |= 0x20;
    return c >= 'a' && c <= 'f' ? (int)(c - 'a' + 10) : -1;
}

/* Four hex digits, or -1. Stops at the first non-hex byte (the sentinel rule). */
static int hex4(const unsigned char *p) {
    int v = 0;
    for (int i = 0; i < 4; i++) {
        int h = hex(p[i]);
        if (h < 0)
            return -1;
        v = v << 4 | h;
    }
    return v;
}

/* p just after a backslash. */
static const unsigned char *scan_escape(const unsigned char *p) {
    switch (*p) {
    case '"': case '\\': case '/': case 'b': case 'f': case 'n': case 'r': case 't':
        return p + 1;
    case 'u': {
        int u = hex4(p + 1);
        if (u < 0 || (u >= 0xDC00 && u <= 0xDFFF))
            return NULL;
        p += 5;
        if (u < 0xD800 || u > 0xDBFF)
            return p;
        /* A high surrogate must pair with a low one: alone, json.loads makes a str
         * that cannot be encoded and orjson refuses the line. */
        if (p[0] != '\\' || p[1] != 'u')
            return NULL;
        int lo = hex4(p + 2);
        return lo >= 0xDC00 && lo <= 0xDFFF ? p + 6 : NULL;
    }
    default:
        return NULL;
    }
}

#define CONT(c) (((c) & 0xC0) == 0x80)

/* One UTF-8 sequence (RFC 3629: shortest form, no surrogates, at most U+10FFFF) at p,
 * whose first byte is >= 0x80. */
static const unsigned char *scan_utf8(const unsigned char *p) {
    unsigned c = p[0];
    if (c < 0xC2) /* a continuation byte, or an overlong 2-byte form */
        return NULL;
    if (c < 0xE0)
        return CONT(p[1]) ? p + 2 : NULL;
    if (c < 0xF0) {
        unsigned lo = c == 0xE0 ? 0xA0 : 0x80; /* E0 80..9F: overlong */
        unsigned hi = c == 0xED ? 0x9F : 0xBF; /* ED A0..BF: surrogates */
        if (p[1] < lo || p[1] > hi)
            return NULL;
        return CONT(p[2]) ? p + 3 : NULL;
    }
    if (c < 0xF5) {
        unsigned lo = c == 0xF0 ? 0x90 : 0x80; /* F0 80..8F: overlong */
        unsigned hi = c == 0xF4 ? 0x8F : 0xBF; /* F4 90..: beyond U+10FFFF */
        if (p[1] < lo || p[1] > hi || !CONT(p[2]))
            return NULL;
        return CONT(p[3]) ? p + 4 : NULL;
    }
    return NULL;
}

/* p just after the opening quote; returns the byte after the closing one. */
static const unsigned char *scan_string(const unsigned char *p, int *esc) {
    for (;;) {
        while (STR_PLAIN[*p])
            p++;
        unsigned c = *p;
        if (c == '"')
            return p + 1;
        if (c == '\\') {
            *esc = 1;
            p = scan_escape(p + 1);
        } else if (c >= 0x80) {
            p = scan_utf8(p);
        } else {
            return NULL; /* a control character, the line's '\n' included */
        }
        if (p == NULL)
            return NULL;
    }
}

static const unsigned char *scan_number(const unsigned char *p, scalar *sc) {
    int neg = *p == '-';
    p += neg;
    const unsigned char *digits = p;
    if (*p == '0')
        p++;
    else if (*p >= '1' && *p <= '9')
        do
            p++;
        while (IS_DIGIT(*p));
    else
        return NULL;
    size_t ndig = (size_t)(p - digits);
    int is_float = 0;
    long exp = 0;
    if (*p == '.') {
        if (!IS_DIGIT(p[1]))
            return NULL;
        p += 2;
        while (IS_DIGIT(*p))
            p++;
        is_float = 1;
    }
    if (*p == 'e' || *p == 'E') {
        p++;
        int eneg = *p == '-';
        if (*p == '+' || *p == '-')
            p++;
        if (!IS_DIGIT(*p))
            return NULL;
        do {
            if (exp < 100000) /* saturates; the bound below is far smaller */
                exp = exp * 10 + (*p - '0');
            p++;
        } while (IS_DIGIT(*p));
        exp = eneg ? -exp : exp;
        is_float = 1;
    }
    sc->type = V_OTHER;
    if (is_float) {
        /* |x| < 10**(ndig + exp) <= 10**308 < DBL_MAX: finite in every parser (orjson
         * refuses a number that overflows, json.loads makes it inf). Underflow only
         * rounds towards zero, which both accept. */
        if (ndig > 100000 || (long)ndig + exp > MAX_FLOAT_POW10)
            return NULL;
        return p;
    }
    /* Beyond 64 bits json.loads makes an int SQLite cannot take, and orjson a float
     * or an error. Up to 18 digits always fits; 19 (nanosecond timestamps have 19)
     * are compared with the limit, in uint64_t where 19 digits cannot overflow. */
    if (ndig > 19)
        return NULL;
    uint64_t v = 0;
    for (const unsigned char *q = digits; q < p; q++)
        v = v * 10 + (uint64_t)(*q - '0');
    if (v > (uint64_t)INT64_MAX + neg)
        return NULL;
    sc->type = V_INT;
    sc->i = !neg ? (int64_t)v : v > (uint64_t)INT64_MAX ? INT64_MIN : -(int64_t)v;
    return p;
}

static const unsigned char *scan_value(const unsigned char *p, int depth, scalar *sc);

/* p just after '{' or '['; depth counts this container. */
static const unsigned char *scan_object(const unsigned char *p, int depth) {
    p = skip_ws(p);
    if (*p == '}')
        return p + 1;
    for (;;) {
        int esc = 0;
        scalar sc;
        if (*p != '"' || (p = scan_string(p + 1, &esc)) == NULL)
            return NULL;
        p = skip_ws(p);
        if (*p != ':')
            return NULL;
        if ((p = scan_value(skip_ws(p + 1), depth, &sc)) == NULL)
            return NULL;
        p = skip_ws(p);
        if (*p == '}')
            return p + 1;
        if (*p != ',')
            return NULL;
        p = skip_ws(p + 1);
    }
}

static const unsigned char *scan_array(const unsigned char *p, int depth) {
    p = skip_ws(p);
    if (*p == ']')
        return p + 1;
    for (;;) {
        scalar sc;
        if ((p = scan_value(p, depth, &sc)) == NULL)
            return NULL;
        p = skip_ws(p);
        if (*p == ']')
            return p + 1;
        if (*p != ',')
            return NULL;
        p = skip_ws(p + 1);
    }
}

/* One value at p, inside a container at `depth`. */
static const unsigned char *scan_value(const unsigned char *p, int depth, scalar *sc) {
    sc->type = V_OTHER;
    switch (*p) {
    case '"':
        sc->type = V_STR;
        sc->esc = 0;
        sc->s = p + 1;
        p = scan_string(p + 1, &sc->esc);
        if (p != NULL)
            sc->len = (size_t)(p - 1 - sc->s);
        return p;
    case '{':
        return depth < MAX_DEPTH ? scan_object(p + 1, depth + 1) : NULL;
    case '[':
        return depth < MAX_DEPTH ? scan_array(p + 1, depth + 1) : NULL;
    case 't':
        return p[1] == 'r' && p[2] == 'u' && p[3] == 'e' ? p + 4 : NULL;
    case 'f':
        return p[1] == 'a' && p[2] == 'l' && p[3] == 's' && p[4] == 'e' ? p + 5 : NULL;
    case 'n':
        return p[1] == 'u' && p[2] == 'l' && p[3] == 'l' ? p + 4 : NULL;
    case '-': case '0': case '1': case '2': case '3': case '4':
    case '5': case '6': case '7': case '8': case '9':
        return scan_number(p, sc);
    default:
        return NULL; /* NaN, Infinity and anything else */
    }
}

/* ---- the top level ------------------------------------------------------- */

enum { K_V = 1, K_RUN = 2, K_SEQ = 4, K_PID = 8, K_KIND = 16, K_EVENT = 32, K_TS = 64 };
#define K_ALL 127

static int key_id(const unsigned char *k, size_t n) {
    switch (n) {
    case 1:
        return k[0] == 'v' ? K_V : 0;
    case 2:
        return memcmp(k, "ts", 2) == 0 ? K_TS : 0;
    case 3:
        return memcmp(k, "run", 3) == 0   ? K_RUN
               : memcmp(k, "seq", 3) == 0 ? K_SEQ
               : memcmp(k, "pid", 3) == 0 ? K_PID
                                          : 0;
    case 4:
        return memcmp(k, "kind", 4) == 0 ? K_KIND : 0;
    case 5:
        return memcmp(k, "event", 5) == 0 ? K_EVENT : 0;
    default:
        return 0;
    }
}

typedef struct {
    const unsigned char *run, *event;
    size_t run_len, event_len;
    int64_t seq, pid, ts;
} fields;

/* The line starting at p: its '\n' when it is plain (f filled in), else NULL. */
static const unsigned char *scan_plain(const unsigned char *p, int check_pid, int64_t peer_pid,
                                       fields *f) {
    p = skip_ws(p);
    if (*p != '{')
        return NULL;
    p = skip_ws(p + 1);
    unsigned seen = 0;
    while (*p != '}') {
        int esc = 0;
        const unsigned char *key = p + 1;
        if (*p != '"' || (p = scan_string(key, &esc)) == NULL)
            return NULL;
        /* A key with escapes may spell one of ours ("\u0072un"): not plain. */
        if (esc)
            return NULL;
        int id = key_id(key, (size_t)(p - 1 - key));
        p = skip_ws(p);
        if (*p != ':')
            return NULL;
        scalar sc;
        if ((p = scan_value(skip_ws(p + 1), 1, &sc)) == NULL)
            return NULL;
        if (id) {
            /* Parsers keep the last of repeated keys; the scan would have to as well. */
            if (seen & (unsigned)id)
                return NULL;
            seen |= (unsigned)id;
            int is_str = sc.type == V_STR && !sc.esc, is_int = sc.type == V_INT;
            switch (id) {
            case K_V:
                if (!is_int || sc.i != 1)
                    return NULL;
                break;
            case K_RUN:
                if (!is_str || sc.len == 0)
                    return NULL;
                f->run = sc.s, f->run_len = sc.len;
                break;
            case K_SEQ:
                if (!is_int || sc.i < 1)
                    return NULL;
                f->seq = sc.i;
                break;
            case K_PID:
                if (!is_int || (check_pid && sc.i != peer_pid))
                    return NULL;
                f->pid = sc.i;
                break;
            case K_KIND:
                if (!is_str || sc.len != 5 || memcmp(sc.s, "event", 5) != 0)
                    return NULL;
                break;
            case K_EVENT:
                if (!is_str)
                    return NULL;
                f->event = sc.s, f->event_len = sc.len;
                break;
            default: /* K_TS */
                if (!is_int)
                    return NULL;
                f->ts = sc.i;
            }
        }
        p = skip_ws(p);
        if (*p == ',') {
            p = skip_ws(p + 1);
            if (*p != '"') /* a trailing comma */
                return NULL;
        } else if (*p != '}') {
            return NULL;
        }
    }
    p = skip_ws(p + 1);
    return *p == '\n' && seen == K_ALL ? p : NULL;
}

/* ---- lines to items ------------------------------------------------------ */

/* A run of plain lines (count > 0) or another line (count == 0). Offsets into data:
 * a run spans its lines with their newlines, a line excludes its newline. */
#define MAX_EVENTS 8 /* distinct event names a run lists; a ninth starts a new run */

typedef struct {
    Py_ssize_t start, end, count;
    /* Its lines' event indexes, items.kinds[kinds_at .. + count]: contiguous, since
     * a plain line only ever extends the newest item. */
    size_t kinds_at;
    Py_ssize_t run_at, run_len;
    Py_ssize_t ev_at[MAX_EVENTS], ev_len[MAX_EVENTS]; /* the distinct event names */
    int n_ev, last_ev;
    int64_t first_seq, last_seq, first_ts, last_ts, pid;
} item;

/* Which of the run's distinct event names the line's is, or -1. */
static int event_index(const item *r, const unsigned char *data, const unsigned char *ev,
                       size_t len) {
    for (int i = 0; i < r->n_ev; i++)
        if (r->ev_len[i] == (Py_ssize_t)len && memcmp(data + r->ev_at[i], ev, len) == 0)
            return i;
    return -1;
}

typedef struct {
    item *v;
    size_t len, cap;
    unsigned char *kinds; /* per plain line, in order: its index in its run's names */
    size_t kinds_len, kinds_cap;
    int oom;
} items;

static item *push(items *it) {
    if (it->len == it->cap) {
        size_t cap = it->cap ? 2 * it->cap : 256;
        item *v = cap <= SIZE_MAX / sizeof *v ? realloc(it->v, cap * sizeof *v) : NULL;
        if (v == NULL) {
            it->oom = 1;
            return NULL;
        }
        it->v = v, it->cap = cap;
    }
    return &it->v[it->len++];
}

static int push_kind(items *it, int ev) {
    if (it->kinds_len == it->kinds_cap) {
        size_t cap = it->kinds_cap ? 2 * it->kinds_cap : 4096;
        unsigned char *k = realloc(it->kinds, cap);
        if (k == NULL) {
            it->oom = 1;
            return -1;
        }
        it->kinds = k, it->kinds_cap = cap;
    }
    it->kinds[it->kinds_len++] = (unsigned char)ev;
    return 0;
}

/* No Python object touched: runs without the GIL for bytes. */
static void scan_all(const unsigned char *data, size_t len, int check_pid, int64_t peer_pid,
                     items *out) {
    const unsigned char *p = data, *end = data + len;
    item *run = NULL; /* the run the next plain line may extend (the last item) */
    while (p < end) {
        if (*p == '\n') { /* an empty line: no item, and it ends the run */
            p++;
            run = NULL;
            continue;
        }
        fields f = {NULL, NULL, 0, 0, 0, 0, 0}; /* all set when the line is plain */
        const unsigned char *nl = scan_plain(p, check_pid, peer_pid, &f);
        if (nl == NULL) {
            nl = memchr(p, '\n', (size_t)(end - p)); /* found: data ends with '\n' */
            item *it = push(out);
            if (it == NULL)
                return;
            it->start = p - data, it->end = nl - data, it->count = 0;
            run = NULL;
            p = nl + 1;
            continue;
        }
        int extends = run != NULL && run->last_seq < INT64_MAX && f.seq == run->last_seq + 1 &&
                      f.pid == run->pid && (Py_ssize_t)f.run_len == run->run_len &&
                      memcmp(f.run, data + run->run_at, f.run_len) == 0;
        int ev = extends ? event_index(run, data, f.event, f.event_len) : -1;
        if (extends && (ev >= 0 || run->n_ev < MAX_EVENTS)) {
            run->end = nl + 1 - data;
            run->count++;
            run->last_seq = f.seq;
            if (ev < 0) {
                ev = run->n_ev++;
                run->ev_at[ev] = f.event - data, run->ev_len[ev] = (Py_ssize_t)f.event_len;
            }
            run->last_ev = ev;
            if (push_kind(out, ev) < 0)
                return;
            run->first_ts = f.ts < run->first_ts ? f.ts : run->first_ts;
            run->last_ts = f.ts > run->last_ts ? f.ts : run->last_ts;
        } else {
            /* A new run also when only the pid differs (possible when the sender's is
             * unknown): the item does not carry it, so one run has one pid. */
            if ((run = push(out)) == NULL)
                return;
            run->start = p - data, run->end = nl + 1 - data, run->count = 1;
            run->kinds_at = out->kinds_len;
            if (push_kind(out, 0) < 0)
                return;
            run->run_at = f.run - data, run->run_len = (Py_ssize_t)f.run_len;
            run->ev_at[0] = f.event - data, run->ev_len[0] = (Py_ssize_t)f.event_len;
            run->n_ev = 1, run->last_ev = 0;
            run->first_seq = run->last_seq = f.seq;
            run->first_ts = run->last_ts = f.ts;
            run->pid = f.pid;
        }
        p = nl + 1;
    }
}

/* A tuple of the n new references in v; on any NULL among them, or failure, none
 * is kept. */
static PyObject *tuple_of(PyObject **v, int n) {
    PyObject *t = NULL;
    for (int i = 0; i < n; i++)
        if (v[i] == NULL)
            goto fail;
    if ((t = PyTuple_New(n)) == NULL)
        goto fail;
    for (int i = 0; i < n; i++)
        PyTuple_SET_ITEM(t, i, v[i]);
    return t;
fail:
    for (int i = 0; i < n; i++)
        Py_XDECREF(v[i]);
    return NULL;
}

static PyObject *build_list(const char *data, const items *it) {
    PyObject *list = PyList_New((Py_ssize_t)it->len);
    PyObject *run_str = NULL; /* the last run's str: consecutive runs often share it */
    const item *run_of = NULL;
    if (list == NULL)
        return NULL;
    for (size_t k = 0; k < it->len; k++) {
        const item *x = &it->v[k];
        PyObject *t;
        if (x->count == 0) {
            PyObject *v[2] = {PyLong_FromSsize_t(x->start), PyLong_FromSsize_t(x->end)};
            t = tuple_of(v, 2);
        } else {
            if (run_of == NULL || run_of->run_len != x->run_len ||
                memcmp(data + run_of->run_at, data + x->run_at, (size_t)x->run_len) != 0) {
                Py_XDECREF(run_str);
                /* Valid UTF-8 without escapes: the bytes are the string. */
                run_str = PyUnicode_FromStringAndSize(data + x->run_at, x->run_len);
                if (run_str == NULL)
                    goto fail;
                run_of = x;
            }
            PyObject *events = PyTuple_New(x->n_ev);
            if (events == NULL)
                goto fail;
            for (int i = 0; i < x->n_ev; i++) {
                PyObject *name = PyUnicode_FromStringAndSize(data + x->ev_at[i], x->ev_len[i]);
                if (name == NULL) {
                    Py_DECREF(events);
                    goto fail;
                }
                PyTuple_SET_ITEM(events, i, name);
            }
            PyObject *last_event = PyTuple_GET_ITEM(events, x->last_ev);
            Py_INCREF(last_event);
            Py_INCREF(run_str);
            PyObject *v[11] = {
                PyLong_FromSsize_t(x->start),
                PyLong_FromSsize_t(x->end),
                run_str,
                PyLong_FromLongLong(x->first_seq),
                PyLong_FromLongLong(x->last_seq),
                PyLong_FromSsize_t(x->count),
                last_event,
                PyLong_FromLongLong(x->first_ts),
                PyLong_FromLongLong(x->last_ts),
                events,
                PyBytes_FromStringAndSize((const char *)it->kinds + x->kinds_at, x->count),
            };
            t = tuple_of(v, 11);
        }
        if (t == NULL)
            goto fail;
        PyList_SET_ITEM(list, (Py_ssize_t)k, t);
    }
    Py_XDECREF(run_str);
    return list;
fail:
    Py_XDECREF(run_str);
    Py_DECREF(list); /* the unset slots are NULL, which list_dealloc skips */
    return NULL;
}

PyObject *aw_scan_lines(PyObject *self, PyObject *args, PyObject *kwargs) {
    (void)self;
    static char *kwlist[] = {"data", "peer_pid", NULL};
    PyObject *data_o, *pid_o;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO:" F, kwlist, &data_o, &pid_o))
        return NULL;
    int64_t peer_pid = 0;
    int check_pid = pid_o != Py_None;
    if (check_pid && aw_int64_arg(pid_o, F, "peer_pid", &peer_pid) < 0)
        return NULL;
    if (!PyObject_CheckBuffer(data_o)) {
        PyErr_Format(PyExc_TypeError, F ": data must be a bytes-like object, not %.100s",
                     Py_TYPE(data_o)->tp_name);
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(data_o, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    PyObject *result = NULL;
    items it = {NULL, 0, 0, NULL, 0, 0, 0};
    const unsigned char *data = view.buf;
    if (view.len > 0 && data[view.len - 1] != '\n') {
        PyErr_SetString(PyExc_ValueError, F ": data must end with a newline (complete lines)");
        goto done;
    }
    if (PyBytes_CheckExact(data_o)) {
        /* Immutable, and held by view: scan without the GIL. Other buffers (bytearray)
         * could be written by another thread meanwhile; they keep it. */
        Py_BEGIN_ALLOW_THREADS
        scan_all(data, (size_t)view.len, check_pid, peer_pid, &it);
        Py_END_ALLOW_THREADS
    } else {
        scan_all(data, (size_t)view.len, check_pid, peer_pid, &it);
    }
    if (it.oom)
        PyErr_NoMemory();
    else
        result = build_list(view.buf, &it);
done:
    free(it.v);
    free(it.kinds);
    PyBuffer_Release(&view);
    return result;
}
