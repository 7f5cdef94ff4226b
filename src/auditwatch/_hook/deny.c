/* Deny rules evaluated in the hook: the event name plus per-argument tests (exact,
 * prefix, glob, CIDR) joined by "and", compiled from the rules by the collector
 * side and passed in AUDITWATCH_DENY. The decision runs in C on values read from
 * the argument objects' C storage: no Python code runs, and nothing in the process
 * can change the rules after start-up.
 *
 * AUDITWATCH_DENY: one rule per line, fields separated by tabs, each field
 * percent-encoded (%09 tab, %0A newline, %25 percent):
 *     RULE  MODE  EVENT  ARG:OP:VALUE ...
 * MODE is enforce or monitor; OP is eq, prefix, glob or cidr.
 *
 * Paths: a value that looks like a path (the rule's value starts with '/') is made
 * absolute against the working directory and lexically normalised ("//", "/./",
 * "/../") before prefix and glob tests. Symbolic links are not resolved: a deny rule
 * is a guardrail, not a security boundary (docs/threat-model.md).
 */
#include "aw.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_RULES 256
#define MAX_TESTS 8
/* Argument bytes a test looks at: hostile code can pass huge strings, and no path or
 * host is this long (a glob anchored at the end may miss past it: documented). */
#define MAX_VALUE (1 << 20)

enum { OP_EQ, OP_PREFIX, OP_GLOB, OP_CIDR };

typedef struct {
    int arg, op;
    char *value;
    size_t len;
    aw_glob glob; /* OP_GLOB */
    int family, bits; /* cidr */
    unsigned char net[16];
} deny_test;

typedef struct {
    char *rule, *event;
    int enforce;
    int ntests;
    deny_test tests[MAX_TESTS];
} deny_rule;

static deny_rule rules[MAX_RULES];
static int nrules;

static char *decode_field(const char *s, size_t n) {
    char *out = malloc(n + 1);
    if (!out)
        return NULL;
    size_t j = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '%' && i + 2 < n) {
            char hex[3] = {s[i + 1], s[i + 2], 0};
            char *end;
            long v = strtol(hex, &end, 16);
            if (end == hex + 2) {
                out[j++] = (char)v;
                i += 2;
                continue;
            }
        }
        out[j++] = s[i];
    }
    out[j] = '\0';
    return out;
}

static int parse_cidr(deny_test *t, char *err, size_t errlen) {
    char addr[64];
    const char *slash = strchr(t->value, '/');
    size_t alen = slash ? (size_t)(slash - t->value) : strlen(t->value);
    if (alen >= sizeof addr)
        goto bad;
    memcpy(addr, t->value, alen);
    addr[alen] = '\0';
    if (inet_pton(AF_INET, addr, t->net) == 1) {
        t->family = AF_INET;
        t->bits = 32;
    } else if (inet_pton(AF_INET6, addr, t->net) == 1) {
        t->family = AF_INET6;
        t->bits = 128;
    } else {
        goto bad;
    }
    if (slash) {
        char *end;
        long bits = strtol(slash + 1, &end, 10);
        if (*end || bits < 0 || bits > t->bits)
            goto bad;
        t->bits = (int)bits;
    }
    return 0;
bad:
    snprintf(err, errlen, "AUDITWATCH_DENY: '%.80s' is not a network (ADDRESS/BITS)", t->value);
    return -1;
}

static int parse_test(deny_test *t, const char *s, size_t n, char *err, size_t errlen) {
    char *field = decode_field(s, n);
    if (!field) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    char *c1 = strchr(field, ':');
    char *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
    char *end = NULL;
    long arg = c1 ? strtol(field, &end, 10) : -1;
    if (!c1 || !c2 || end != c1 || arg < 0 || arg > 64) {
        snprintf(err, errlen, "AUDITWATCH_DENY: bad test '%.80s': expected ARG:OP:VALUE", field);
        free(field);
        return -1;
    }
    *c2 = '\0';
    const char *op = c1 + 1;
    t->arg = (int)arg;
    if (strcmp(op, "eq") == 0)
        t->op = OP_EQ;
    else if (strcmp(op, "prefix") == 0)
        t->op = OP_PREFIX;
    else if (strcmp(op, "glob") == 0)
        t->op = OP_GLOB;
    else if (strcmp(op, "cidr") == 0)
        t->op = OP_CIDR;
    else {
        snprintf(err, errlen, "AUDITWATCH_DENY: unknown test '%.20s' (eq, prefix, glob, cidr)", op);
        free(field);
        return -1;
    }
    t->value = strdup(c2 + 1);
    free(field);
    if (!t->value) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    t->len = strlen(t->value);
    if (t->op == OP_GLOB)
        aw_glob_init(&t->glob, t->value);
    return t->op == OP_CIDR ? parse_cidr(t, err, errlen) : 0;
}

static int parse_line(const char *line, size_t n, char *err, size_t errlen) {
    if (nrules == MAX_RULES) {
        snprintf(err, errlen, "AUDITWATCH_DENY: more than %d rules", MAX_RULES);
        return -1;
    }
    deny_rule *r = &rules[nrules];
    memset(r, 0, sizeof *r);
    const char *fields[3 + MAX_TESTS];
    size_t lens[3 + MAX_TESTS];
    int nf = 0;
    const char *p = line, *end = line + n;
    while (p <= end && nf < 3 + MAX_TESTS) {
        const char *tab = memchr(p, '\t', (size_t)(end - p));
        const char *stop = tab ? tab : end;
        fields[nf] = p;
        lens[nf] = (size_t)(stop - p);
        nf++;
        if (!tab)
            break;
        p = tab + 1;
    }
    if (nf < 3 || (p < end && memchr(p, '\t', (size_t)(end - p)))) {
        snprintf(err, errlen,
                 "AUDITWATCH_DENY: bad rule line '%.80s': expected RULE, MODE, EVENT and at most %d "
                 "tests, tab-separated",
                 line, MAX_TESTS);
        return -1;
    }
    r->rule = decode_field(fields[0], lens[0]);
    char *mode = decode_field(fields[1], lens[1]);
    r->event = decode_field(fields[2], lens[2]);
    if (!r->rule || !mode || !r->event) {
        free(mode);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    int ok_mode = strcmp(mode, "enforce") == 0 || strcmp(mode, "monitor") == 0;
    r->enforce = strcmp(mode, "enforce") == 0;
    free(mode);
    if (!ok_mode) {
        snprintf(err, errlen, "AUDITWATCH_DENY: rule '%.80s': mode must be enforce or monitor",
                 r->rule);
        return -1;
    }
    for (int i = 3; i < nf; i++)
        if (parse_test(&r->tests[r->ntests++], fields[i], lens[i], err, errlen) < 0)
            return -1;
    nrules++;
    return 0;
}

int aw_deny_configure(const char *spec, char *err, size_t errlen) {
    if (!spec)
        return 0;
    const char *p = spec;
    while (*p) {
        const char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p) : strlen(p);
        if (n && parse_line(p, n, err, errlen) < 0)
            return -1;
        p += n + (nl ? 1 : 0);
    }
    return 0;
}

int aw_deny_candidates(const char *event, int *out, int max) {
    int n = 0;
    for (int i = 0; i < nrules && n < max; i++)
        if (strcmp(rules[i].event, event) == 0)
            out[n++] = i;
    return n;
}

/* ---- reading an argument ------------------------------------------------------- */

/* The argument as bytes: str as UTF-8 (lone surrogates from surrogateescape back to
 * their byte, others as U+FFFD), bytes as they are, an exact int in decimal. */
static int arg_bytes(PyObject *o, aw_buf *b) {
    if (PyUnicode_Check(o)) {
#if PY_VERSION_HEX < 0x030C0000
        if (PyUnicode_READY(o) < 0) {
            PyErr_Clear();
            return -1;
        }
#endif
        int kind = PyUnicode_KIND(o);
        const void *data = PyUnicode_DATA(o);
        Py_ssize_t n = PyUnicode_GET_LENGTH(o);
        if (n > MAX_VALUE)
            n = MAX_VALUE;
        if (aw_buf_reserve(b, (size_t)n * 4) < 0)
            return -1;
        char *d = b->p + b->len;
        for (Py_ssize_t i = 0; i < n; i++) {
            Py_UCS4 c = PyUnicode_READ(kind, data, i);
            if (c >= 0xdc80 && c <= 0xdcff) {
                *d++ = (char)(c - 0xdc00);
            } else if (c >= 0xd800 && c <= 0xdfff) {
                *d++ = (char)0xef, *d++ = (char)0xbf, *d++ = (char)0xbd;
            } else if (c < 0x80) {
                *d++ = (char)c;
            } else if (c < 0x800) {
                *d++ = (char)(0xc0 | (c >> 6)), *d++ = (char)(0x80 | (c & 0x3f));
            } else if (c < 0x10000) {
                *d++ = (char)(0xe0 | (c >> 12)), *d++ = (char)(0x80 | ((c >> 6) & 0x3f));
                *d++ = (char)(0x80 | (c & 0x3f));
            } else {
                *d++ = (char)(0xf0 | (c >> 18)), *d++ = (char)(0x80 | ((c >> 12) & 0x3f));
                *d++ = (char)(0x80 | ((c >> 6) & 0x3f)), *d++ = (char)(0x80 | (c & 0x3f));
            }
        }
        b->len = (size_t)(d - b->p);
        return 0;
    }
    if (PyBytes_Check(o) || PyByteArray_Check(o)) {
        int is_bytes = PyBytes_Check(o);
        size_t n = (size_t)(is_bytes ? PyBytes_GET_SIZE(o) : PyByteArray_GET_SIZE(o));
        aw_buf_put(b, is_bytes ? PyBytes_AS_STRING(o) : PyByteArray_AS_STRING(o),
                   n > MAX_VALUE ? MAX_VALUE : n);
        return b->oom ? -1 : 0;
    }
    if (PyLong_CheckExact(o)) {
        int overflow = 0;
        long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
        if (overflow || (v == -1 && PyErr_Occurred())) {
            PyErr_Clear();
            return -1;
        }
        aw_buf_int(b, v);
        return 0;
    }
    return -1;
}

/* Make a path absolute (against the working directory) and remove "//", "/./" and
 * "/../" lexically, in place in b (which must hold a NUL-terminated string). */
static void normalise_path(aw_buf *b) {
    if (b->len == 0 || b->p[0] != '/') {
        char cwd[4096];
        if (!getcwd(cwd, sizeof cwd))
            return;
        size_t cl = strlen(cwd);
        if (aw_buf_reserve(b, cl + 2) < 0)
            return;
        memmove(b->p + cl + 1, b->p, b->len + 1);
        memcpy(b->p, cwd, cl);
        b->p[cl] = '/';
        b->len += cl + 1;
    }
    char *s = b->p, *out = b->p;
    size_t n = b->len, i = 0;
    while (i < n) {
        while (i < n && s[i] == '/')
            i++;
        size_t start = i;
        while (i < n && s[i] != '/')
            i++;
        size_t len = i - start;
        if (len == 0 || (len == 1 && s[start] == '.'))
            continue;
        if (len == 2 && s[start] == '.' && s[start + 1] == '.') {
            while (out > b->p && *--out != '/')
                ;
            continue;
        }
        *out++ = '/';
        memmove(out, s + start, len);
        out += len;
    }
    if (out == b->p)
        *out++ = '/';
    if (n && s[n - 1] == '/' && out > b->p + 1)
        *out++ = '/';
    *out = '\0';
    b->len = (size_t)(out - b->p);
}

static int in_network(const deny_test *t, const char *host) {
    unsigned char addr[16];
    int family = strchr(host, ':') ? AF_INET6 : AF_INET;
    if (family != t->family || inet_pton(family, host, addr) != 1)
        return 0;
    int full = t->bits / 8, rest = t->bits % 8;
    if (memcmp(addr, t->net, (size_t)full) != 0)
        return 0;
    if (rest) {
        unsigned char mask = (unsigned char)(0xff << (8 - rest));
        if ((addr[full] & mask) != (t->net[full] & mask))
            return 0;
    }
    return 1;
}

static int test_matches(const deny_test *t, PyObject *args) {
    if (!args || !PyTuple_Check(args) || t->arg >= PyTuple_GET_SIZE(args))
        return 0;
    PyObject *o = PyTuple_GET_ITEM(args, t->arg);
    if (t->op == OP_CIDR && (PyTuple_Check(o) || PyList_Check(o))) {
        /* (host, port[, ...]) socket addresses: test the host */
        Py_ssize_t n = PyTuple_Check(o) ? PyTuple_GET_SIZE(o) : PyList_GET_SIZE(o);
        if (n < 1)
            return 0;
        o = PyTuple_Check(o) ? PyTuple_GET_ITEM(o, 0) : PyList_GET_ITEM(o, 0);
    }
    char storage[1024];
    aw_buf b;
    aw_buf_init(&b, storage, sizeof storage);
    int match = 0;
    if (arg_bytes(o, &b) == 0 && aw_buf_reserve(&b, 1) == 0) {
        b.p[b.len] = '\0';
        if (memchr(b.p, '\0', b.len) == NULL) { /* an embedded NUL is never a path */
            if ((t->op == OP_PREFIX || t->op == OP_GLOB) && t->value[0] == '/')
                normalise_path(&b);
            switch (t->op) {
            case OP_EQ:
                match = b.len == t->len && memcmp(b.p, t->value, b.len) == 0;
                break;
            case OP_PREFIX:
                match = b.len >= t->len && memcmp(b.p, t->value, t->len) == 0;
                break;
            case OP_GLOB:
                match = aw_glob_match(&t->glob, b.p);
                break;
            case OP_CIDR:
                match = in_network(t, b.p);
                break;
            }
        }
    }
    aw_buf_free(&b);
    return match;
}

const char *aw_deny_check(const int *cands, int n, PyObject *args, int *enforce) {
    for (int i = 0; i < n; i++) {
        const deny_rule *r = &rules[cands[i]];
        int all = 1;
        for (int t = 0; t < r->ntests && all; t++)
            all = test_matches(&r->tests[t], args);
        if (all) {
            *enforce = r->enforce;
            return r->rule;
        }
    }
    return NULL;
}
