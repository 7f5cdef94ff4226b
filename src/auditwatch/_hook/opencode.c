/* Code provenance: the open-code hook, the full text of compiled strings, the main
 * script, and the policies that need more than an event-table entry (verified code
 * from a manifest, interactive start-up).
 *
 * Two entry points (the launcher sets the hook up through bootstrap.c):
 *  - aw_opencode_hook(): the PyFile_SetOpenCodeHook hook. CPython calls it for every
 *    file read as code (importlib's source and bytecode reads, zipimport archives,
 *    .pth files in site, runpy). It reads the file in C, hashes it, records
 *    `auditwatch.open_code` [path, size, sha256] and returns an io.BytesIO of the
 *    exact bytes it hashed, so what runs is what is on record (no time-of-check to
 *    time-of-use gap). In manifest mode a file whose hash is not listed is refused
 *    with PermissionError naming the file and its hash, after the attempt is recorded
 *    and flushed.
 *  - aw_code_event(): called by the audit hook right after the event-table lookup
 *    (one line in hook.c). For `compile` and `cpython.run_command` it records
 *    `auditwatch.code` [sha256, nbytes, origin, text|null] with the text up to
 *    `AUDITWATCH_CODE_MAX` characters (default 262144, bounded by a quarter of the
 *    ring), once per distinct text per process run (later ones carry null); for
 *    `cpython.run_file` it hashes the main script (which CPython reads without the
 *    open-code hook) and applies the manifest; for `cpython.run_stdin` it applies
 *    the `auditwatch.mode.interactive` / `auditwatch.mode.stdin` table entries,
 *    telling the REPL (stdin is a terminal) from a piped script, and records the
 *    text of a piped or redirected script (capture_stdin).
 *
 * Nothing here runs Python code on an event argument or a path handed to the hook:
 * a str subclass is copied to an exact str in C, paths are encoded in C, files are
 * read with open/read. The only Python-level object called is _io.BytesIO, the
 * same dependency CPython's default open_code has on _io.open, looked up once per
 * interpreter and kept where Python code cannot swap it (bytesio_type).
 */
#include "aw.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_CODE_FILE ((size_t)1 << 30) /* refuse to hash more than 1 GiB */

/* The "kind" and "event" members of this file's records, as aw_format_event_name
 * writes them (the names need no escaping): every import makes one, at start-up
 * hundreds. */
#define OPEN_CODE_JSON "\"kind\":\"event\",\"event\":\"auditwatch.open_code\""
#define CODE_JSON "\"kind\":\"event\",\"event\":\"auditwatch.code\""

/* The table's action for an event name (arguments are not looked at here). */
static int table_action(const char *event, const char **rule) {
    aw_decision d;
    aw_table_lookup(event, &d);
    *rule = d.rule;
    return d.action == AW_MONITOR ? AW_FLUSH : d.action;
}

/* ---- configuration ------------------------------------------------------------ */

static void sent_prepare(void);
static void sent_release(void);
static pthread_once_t config_once = PTHREAD_ONCE_INIT;
static aw_limits code_limits;

static void config_init(void) {
    Py_ssize_t max = 256 * 1024;
    const char *env = getenv("AUDITWATCH_CODE_MAX");
    if (env && *env) {
        char *end = NULL;
        long long v = strtoll(env, &end, 10);
        if (end && *end == '\0' && v >= 0)
            max = (Py_ssize_t)v;
    }
    /* A record must fit the ring with room to spare (a record larger than the ring
     * cannot be queued at all): the encoder cuts and marks the text past this. */
    size_t budget = aw_opts.ring_bytes / 4;
    if (budget < 64 * 1024)
        budget = 64 * 1024;
    code_limits = aw_default_limits;
    code_limits.max_str = max;
    code_limits.max_bytes = max;
    code_limits.budget = budget;
    pthread_atfork(sent_prepare, sent_release, sent_release);
}

/* ---- manifest ------------------------------------------------------------------- */

static char (*manifest)[65];
static size_t manifest_n;
static char manifest_path[1024];

static int hexcmp(const void *a, const void *b) { return strcmp((const char *)a, (const char *)b); }

static int is_hex64(const char *p) {
    for (int i = 0; i < 64; i++)
        if (!((p[i] >= '0' && p[i] <= '9') || (p[i] >= 'a' && p[i] <= 'f')))
            return 0;
    return 1;
}

/* The manifest is JSON written by `auditwatch manifest build`; every string value of
 * a "sha256" member is an allowed hash. Scanned, not parsed: the hook has no JSON
 * parser and needs none for a file of this shape. */
static int manifest_load(const char *path, char *err, size_t errlen) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0) {
        snprintf(err, errlen, "cannot read the manifest %.900s: %s", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    size_t size = (size_t)st.st_size;
    char *text = malloc(size + 1);
    size_t got = 0;
    while (text && got < size) {
        ssize_t r = read(fd, text + got, size - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    close(fd);
    if (!text || got != size) {
        free(text);
        snprintf(err, errlen, "cannot read the manifest %.900s", path);
        return -1;
    }
    text[size] = '\0';
    size_t cap = 1024, n = 0;
    char(*list)[65] = malloc(cap * sizeof *list);
    static const char KEY[] = "\"sha256\"";
    for (char *p = list ? strstr(text, KEY) : NULL; p; p = strstr(p, KEY)) {
        p += sizeof KEY - 1;
        while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
            p++;
        if (*p != ':')
            continue;
        p++;
        while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
            p++;
        if (*p != '"' || (size_t)(text + size - p) < 66 || !is_hex64(p + 1) || p[65] != '"')
            continue;
        if (n == cap) {
            char(*bigger)[65] = realloc(list, 2 * cap * sizeof *list);
            if (!bigger)
                break;
            list = bigger;
            cap *= 2;
        }
        memcpy(list[n], p + 1, 64);
        list[n][64] = '\0';
        n++;
        p += 66;
    }
    free(text);
    if (!list || n == 0) {
        free(list);
        snprintf(err, errlen, "the manifest %.900s lists no sha256 hashes", path);
        return -1;
    }
    qsort(list, n, sizeof *list, hexcmp);
    manifest = list;
    manifest_n = n;
    snprintf(manifest_path, sizeof manifest_path, "%s", path);
    return 0;
}

static int manifest_allows(const char *hex) {
    return manifest == NULL || bsearch(hex, manifest, manifest_n, sizeof *manifest, hexcmp) != NULL;
}

/* ---- reading a file in C ---------------------------------------------------------- */

/* Read fd to its end into a new buffer (*data, *size; the caller frees it); hint is
 * the expected size. 0 at the end of the data; EFBIG when max bytes were read
 * and more may follow (the bytes read are still returned); else an errno value
 * (nothing returned). Runs without the GIL. */
static int read_all(int fd, size_t hint, size_t max, char **data, size_t *size) {
    size_t cap = hint > 0 && hint < max ? hint + 1 : (max < 65536 ? max : 65536);
    char *buf = malloc(cap);
    size_t len = 0;
    int rc = 0;
    while (buf) {
        if (len == cap) {
            if (cap >= max) {
                rc = EFBIG;
                break;
            }
            size_t grown = cap * 2 < max ? cap * 2 : max;
            char *bigger = realloc(buf, grown);
            if (!bigger) {
                rc = ENOMEM;
                break;
            }
            buf = bigger;
            cap = grown;
        }
        ssize_t r = read(fd, buf + len, cap - len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            rc = errno;
            break;
        }
        if (r == 0)
            break;
        len += (size_t)r;
    }
    if (!buf)
        return ENOMEM;
    if (rc && rc != EFBIG) {
        free(buf);
        return rc;
    }
    *data = buf;
    *size = len;
    return rc;
}

/* Open a file to read as code: 0 with *fd and *st, or an errno value. */
static int open_code_file(const char *path, int *fd, struct stat *st) {
    *fd = open(path, O_RDONLY | O_CLOEXEC);
    if (*fd < 0)
        return errno;
    int rc = fstat(*fd, st) < 0                                            ? errno
             : S_ISDIR(st->st_mode)                                        ? EISDIR
             : S_ISREG(st->st_mode) && (uint64_t)st->st_size > MAX_CODE_FILE ? EFBIG
                                                                           : 0;
    if (rc != 0)
        close(*fd);
    return rc;
}

/* Read fd into buf, exactly n bytes unless the file ends first: *got. 0, or an
 * errno value; EFBIG when the file has more than n bytes. Runs without the GIL. */
static int read_exactly(int fd, char *buf, size_t n, size_t *got) {
    size_t len = 0;
    for (;;) {
        char extra;
        ssize_t r = len < n ? read(fd, buf + len, n - len) : read(fd, &extra, 1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return errno;
        if (r == 0)
            break;
        if (len == n)
            return EFBIG; /* it grew since fstat */
        len += (size_t)r;
    }
    *got = len;
    return 0;
}

/* Path str (any str subclass) -> exact str copy and file-system bytes, in C only. */
static int path_arg(PyObject *path, PyObject **exact, PyObject **fs) {
    if (path == NULL || !PyUnicode_Check(path)) {
        PyErr_Format(PyExc_TypeError, "'path' must be 'str', not '%.200s'",
                     path ? Py_TYPE(path)->tp_name : "NULL");
        return -1;
    }
    *exact = PyUnicode_FromObject(path); /* exact str: a copy for subclasses, no Python code */
    if (*exact == NULL)
        return -1;
    *fs = PyUnicode_EncodeFSDefault(*exact);
    if (*fs == NULL) {
        Py_CLEAR(*exact);
        return -1;
    }
    if (strlen(PyBytes_AS_STRING(*fs)) != (size_t)PyBytes_GET_SIZE(*fs)) {
        Py_CLEAR(*exact);
        Py_CLEAR(*fs);
        PyErr_SetString(PyExc_ValueError, "embedded null byte");
        return -1;
    }
    return 0;
}

static __thread char deny_rule[1400];

/* Record a code file under the action and rule the table gave; returns AW_DENY
 * (rule in deny_rule, already flushed) when the manifest refuses it, else action. */
static int record_code_file(PyObject *exact, size_t size, const char *hex, int action,
                            const char *rule) {
    if (!manifest_allows(hex)) {
        snprintf(deny_rule, sizeof deny_rule, "manifest %.900s", manifest_path);
        action = AW_DENY;
        rule = deny_rule;
    }
    if (action == AW_IGNORE)
        return action;
    static const char *NAMES[] = {"ignore", "record", "flush", "deny"};
    PyObject *args = Py_BuildValue("(Ons)", exact, (Py_ssize_t)size, hex);
    if (args == NULL) {
        PyErr_Clear();
        return action;
    }
    aw_record_decided("auditwatch.open_code", OPEN_CODE_JSON, args, action, NAMES[action],
                      action == AW_DENY ? rule : NULL, &aw_default_limits);
    Py_DECREF(args);
    return action;
}

int aw_in_main_interpreter(void) {
    PyThreadState *ts = AW_TSTATE();
    if (ts == NULL)
        return 0;
#if PY_VERSION_HEX >= 0x03090000
    return PyThreadState_GetInterpreter(ts) == PyInterpreterState_Main();
#else
    return ts->interp == PyInterpreterState_Main();
#endif
}

/* Read a file as code (path as bytes), the GIL released while reading: files can be
 * large or slow. 0 with *bytes, the exact bytes Python gets; *data is their copy
 * for the hasher (malloc'ed) or NULL when *bytes is read into directly: only in the
 * main interpreter (aw_hasher_collect gives the hasher's references back there), and
 * only for a regular file that keeps the size fstat gave. -1 with an exception. */
static int read_code_file(PyObject *fs, PyObject *exact, PyObject **bytes, char **data,
                          size_t *size) {
    const char *cpath = PyBytes_AS_STRING(fs);
    int fd = -1, err;
    struct stat st;
    Py_BEGIN_ALLOW_THREADS
    err = open_code_file(cpath, &fd, &st); /* on error fd is closed */
    Py_END_ALLOW_THREADS
    *data = NULL;
    *bytes = NULL;
    if (err == 0 && S_ISREG(st.st_mode) && aw_in_main_interpreter()) {
        *bytes = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)st.st_size);
        if (*bytes == NULL) {
            close(fd);
            return -1;
        }
        char *into = PyBytes_AS_STRING(*bytes);
        size_t want = (size_t)st.st_size, got = 0;
        Py_BEGIN_ALLOW_THREADS
        err = read_exactly(fd, into, want, &got);
        if (err == EFBIG) /* it grew: read it again, whole, into a growing buffer */
            err = lseek(fd, 0, SEEK_SET) < 0 ? errno : EAGAIN;
        Py_END_ALLOW_THREADS
        if (err == 0) {
            close(fd);
            if (got < want && _PyBytes_Resize(bytes, (Py_ssize_t)got) < 0)
                return -1; /* *bytes is NULL, MemoryError set */
            *size = got;
            return 0;
        }
        Py_CLEAR(*bytes);
        if (err == EAGAIN)
            err = 0;
        else
            close(fd);
    }
    if (err == 0) {
        Py_BEGIN_ALLOW_THREADS
        size_t hint = S_ISREG(st.st_mode) ? (size_t)st.st_size : 0;
        err = read_all(fd, hint, MAX_CODE_FILE, data, size);
        if (err == EFBIG)
            free(*data);
        close(fd);
        Py_END_ALLOW_THREADS
    }
    if (err) {
        *data = NULL;
        errno = err;
        PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, exact);
        return -1;
    }
    *bytes = PyBytes_FromStringAndSize(*data, (Py_ssize_t)*size);
    if (*bytes == NULL) {
        free(*data);
        *data = NULL;
        return -1;
    }
    return 0;
}

/* ---- the open-code hook ------------------------------------------------------------- */

/* The open_code record with a placeholder where the hash goes, for the hasher
 * thread (hasher.c); takes *data when queued. 0 queued, -1 not (hash in place). */
static int queue_open_code(PyObject *exact, size_t size, char **data, PyObject *bytes) {
    PyObject *args = Py_BuildValue("(Ons)", exact, (Py_ssize_t)size, AW_HEX_PLACEHOLDER);
    if (args == NULL) {
        PyErr_Clear();
        return -1;
    }
    aw_writer_ensure();
    aw_buf b;
    aw_buf_init(&b, NULL, 0);
    aw_format_event(&b, "auditwatch.open_code", OPEN_CODE_JSON, args, "record", NULL,
                    &aw_default_limits, NULL);
    Py_DECREF(args);
    /* The args array ends at the first `"],"where":` after the binary stamp (inside a
     * JSON string a quote is escaped): the placeholder is the 64 bytes before it. */
    static const char END[] = "\"],\"where\":";
    size_t json = sizeof(aw_stamp);
    char *end = b.oom || b.len < json ? NULL
                                      : memmem(b.p + json, b.len - json, END, sizeof END - 1);
    size_t at = end ? (size_t)(end - b.p) - 64 : 0;
    if (end == NULL || end - (b.p + json) < 64 || memcmp(b.p + at, AW_HEX_PLACEHOLDER, 64) != 0 ||
        aw_hasher_submit(&b, at, *data ? *data : PyBytes_AS_STRING(bytes), size,
                         *data ? NULL : bytes) < 0) {
        aw_buf_free(&b);
        return -1;
    }
    *data = NULL;
    return 0;
}

/* _io.BytesIO (new reference), kept in the interpreter's own dict from the first
 * file read as code on, during site start-up: later files neither look it up in
 * sys.modules again (about 1,500 instructions a file fewer, callgrind) nor call
 * whatever sys.modules['_io'] has become since. That dict is C's alone (Python code cannot
 * reach it) and goes with its interpreter, so each interpreter keeps its own. */
static PyObject *bytesio_type(void) {
    PyThreadState *ts = AW_TSTATE();
#if PY_VERSION_HEX >= 0x03090000
    PyInterpreterState *interp = ts ? PyThreadState_GetInterpreter(ts) : NULL;
#else
    PyInterpreterState *interp = ts ? ts->interp : NULL;
#endif
    PyObject *kept = interp ? PyInterpreterState_GetDict(interp) : NULL;
    PyObject *type = kept ? PyDict_GetItemString(kept, "auditwatch.BytesIO") : NULL;
    if (type != NULL) {
        Py_INCREF(type);
        return type;
    }
    PyObject *io = PyImport_ImportModuleLevel("_io", NULL, NULL, NULL, 0);
    if (io == NULL)
        return NULL;
    type = PyObject_GetAttrString(io, "BytesIO");
    Py_DECREF(io);
    if (type != NULL && kept != NULL && PyDict_SetItemString(kept, "auditwatch.BytesIO", type) < 0)
        PyErr_Clear(); /* kept next time, or looked up again */
    return type;
}

static PyObject *aw_opencode_hook(PyObject *path, void *userdata) {
    (void)userdata;
    PyObject *exact = NULL, *fs = NULL, *result = NULL, *bytes = NULL;
    if (path_arg(path, &exact, &fs) < 0)
        return NULL;
    char *data = NULL; /* a copy of bytes' content for the hasher, or NULL */
    size_t size = 0;
    aw_hasher_collect(); /* references to earlier files, hashed since */
    if (read_code_file(fs, exact, &bytes, &data, &size) < 0)
        goto done;
    const char *rule = NULL;
    int action = atomic_load(&aw_proc.active) ? table_action("auditwatch.open_code", &rule)
                                               : AW_IGNORE; /* the install was refused */
    /* Without a manifest nothing needs the hash when the event is ignored, and
     * nothing waits for it when it is only recorded: a large file's is made off this
     * thread. */
    int hash_here = manifest != NULL ||
                    (action != AW_IGNORE &&
                     (action != AW_RECORD || !aw_hasher_worth(size) ||
                      queue_open_code(exact, size, &data, bytes) < 0));
    if (hash_here) {
        char hex[65];
        aw_sha256_hex(PyBytes_AS_STRING(bytes), size, hex);
        if (record_code_file(exact, size, hex, action, rule) == AW_DENY) {
            if (manifest_allows(hex))
                PyErr_Format(PyExc_PermissionError,
                             "auditwatch: opening %U as code denied by '%.200s'", exact,
                             "auditwatch.open_code");
            else
                PyErr_Format(PyExc_PermissionError,
                             "auditwatch: %U (sha256 %s) is not in the manifest %s: refused to "
                             "open it as code",
                             exact, hex, manifest_path);
            goto done;
        }
    }
    PyObject *bytesio = bytesio_type();
    if (bytesio != NULL) {
        result = PyObject_CallFunctionObjArgs(bytesio, bytes, NULL);
        Py_DECREF(bytesio);
    }
done:
    free(data);
    Py_XDECREF(bytes);
    Py_XDECREF(exact);
    Py_XDECREF(fs);
    return result;
}

static atomic_int opencode_set;

/* Register the open-code hook (before Py_Initialize, or later from the module).
 * manifest: NULL or "" for none. 0, or -1 with a message in err. */
int aw_opencode_install(const char *manifest_file, char *err, size_t errlen) {
    pthread_once(&config_once, config_init);
    if (manifest_file && *manifest_file && manifest == NULL &&
        manifest_load(manifest_file, err, errlen) < 0)
        return -1;
    if (atomic_exchange(&opencode_set, 1))
        return 0;
    if (PyFile_SetOpenCodeHook(aw_opencode_hook, NULL) < 0) {
        atomic_store(&opencode_set, 0); /* the program's own hook stays: not ours */
        if (Py_IsInitialized())
            PyErr_Clear();
        snprintf(err, errlen, "another open-code hook is already installed");
        return -1;
    }
    return 0;
}

int aw_opencode_installed(void) { return atomic_load(&opencode_set); }

/* ---- compiled texts ------------------------------------------------------------------ */

#define SENT_SLOTS 8192 /* power of two */
static uint64_t sent[SENT_SLOTS];
static int sent_n;
static pthread_mutex_t sent_mu = PTHREAD_MUTEX_INITIALIZER;

/* 1 when this text (by hash) was already sent whole by this process run. */
static int seen_before(const char *hex) {
    uint64_t key = 0;
    for (int i = 0; i < 16; i++)
        key = key << 4 | (uint64_t)(hex[i] <= '9' ? hex[i] - '0' : hex[i] - 'a' + 10);
    if (key == 0)
        key = 1;
    int seen = 0;
    pthread_mutex_lock(&sent_mu);
    for (uint64_t i = key & (SENT_SLOTS - 1), probes = 0; probes < SENT_SLOTS;
         i = (i + 1) & (SENT_SLOTS - 1), probes++) {
        /* Read with a write access (a compare-and-swap of 0 for 0, which compilers
         * keep): a plain read of an untouched page maps the zero page, and the
         * insert after it costs a copy and a TLB flush on every CPU the process ran
         * on (the same as the event table's slots, table.c). */
        uint64_t v = 0;
        __atomic_compare_exchange_n(&sent[i], &v, 0, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
        if (v == key) {
            seen = 1;
            break;
        }
        if (v == 0) {
            if (sent_n < SENT_SLOTS / 2) {
                sent[i] = key;
                sent_n++;
            }
            break;
        }
    }
    pthread_mutex_unlock(&sent_mu);
    return seen;
}

/* A forked child keeps the set (its parent's texts are in the same code store) but
 * must not inherit a locked mutex. */
static void sent_prepare(void) { pthread_mutex_lock(&sent_mu); }
static void sent_release(void) { pthread_mutex_unlock(&sent_mu); }

/* Record the text of source (str, bytes or bytearray). */
static void record_code_text(PyObject *source, PyObject *origin) {
    const char *data = NULL;
    Py_ssize_t n = 0;
    PyObject *encoded = NULL;
    if (PyUnicode_Check(source)) {
        /* Pure C for str and its subclasses; lone surrogates are kept (surrogatepass)
         * so the hash is of exactly the characters compiled. */
        encoded = PyUnicode_AsEncodedString(source, "utf-8", "surrogatepass");
        if (encoded == NULL) {
            PyErr_Clear();
            return;
        }
        data = PyBytes_AS_STRING(encoded);
        n = PyBytes_GET_SIZE(encoded);
    } else if (PyBytes_Check(source)) {
        data = PyBytes_AS_STRING(source);
        n = PyBytes_GET_SIZE(source);
    } else if (PyByteArray_Check(source)) {
        data = PyByteArray_AS_STRING(source);
        n = PyByteArray_GET_SIZE(source);
    } else {
        return; /* an AST object or None: the compile record describes it */
    }
    char hex[65];
    aw_sha256_hex(data, (size_t)n, hex);
    int again = seen_before(hex);
    PyObject *args = Py_BuildValue("(snOO)", hex, n, origin ? origin : Py_None,
                                   again ? Py_None : source);
    Py_XDECREF(encoded);
    if (args == NULL) {
        PyErr_Clear();
        return;
    }
    const char *rule = NULL;
    int action = table_action("auditwatch.code", &rule);
    if (action != AW_IGNORE) {
        static const char *NAMES[] = {"ignore", "record", "flush", "flush"};
        aw_record_decided("auditwatch.code", CODE_JSON, args, action, NAMES[action], NULL,
                          &code_limits);
    }
    Py_DECREF(args);
}

/* The main script: CPython opens it without the open-code hook. */
static int main_script(PyObject *filename) {
    PyObject *exact = NULL, *fs = NULL;
    if (path_arg(filename, &exact, &fs) < 0) {
        PyErr_Clear();
        return AW_RECORD;
    }
    PyObject *bytes = NULL;
    char *data = NULL;
    size_t size = 0;
    int action = AW_RECORD;
    if (read_code_file(fs, exact, &bytes, &data, &size) < 0) {
        PyErr_Clear(); /* CPython reports an unreadable script itself */
    } else {
        char hex[65];
        aw_sha256_hex(PyBytes_AS_STRING(bytes), size, hex);
        free(data);
        Py_DECREF(bytes);
        const char *rule = NULL;
        int file_action = table_action("auditwatch.open_code", &rule);
        if (record_code_file(exact, size, hex, file_action, rule) == AW_DENY &&
            !manifest_allows(hex)) {
            PyObject *u = PyUnicode_AsUTF8String(exact);
            if (u == NULL)
                PyErr_Clear();
            /* Hash and file first: the hook's message keeps the rule's first 200 bytes. */
            snprintf(deny_rule, sizeof deny_rule, "sha256 %s of %.600s is not in manifest %.600s",
                     hex, u ? PyBytes_AS_STRING(u) : "?", manifest_path);
            Py_XDECREF(u);
            action = AW_DENY;
        }
    }
    Py_DECREF(exact);
    Py_DECREF(fs);
    return action;
}

/* ---- a script read from stdin ---------------------------------------------------------
 * `python < script.py`, `curl ... | python -`: CPython parses the script straight
 * from the stream and hands no hook its text. At cpython.run_stdin nothing has read
 * fd 0 yet, so read the script here, first, and give it back unchanged: a regular
 * file is read and rewound; a pipe is read to its end and replaced on fd 0 by a new
 * pipe that holds the same bytes (fed by a thread when they are more than a pipe
 * holds, with whatever is past stdin_max() copied through). Sockets and character
 * devices are left alone: replacing them would change what the program sees. */

/* Bytes of a stdin script read to hash and record it (AUDITWATCH_STDIN_MAX). */
static size_t stdin_max(void) {
    const char *env = getenv("AUDITWATCH_STDIN_MAX");
    char *end = NULL;
    long long v = env && *env ? strtoll(env, &end, 10) : -1;
    return v > 0 && end && *end == '\0' ? (size_t)v : (size_t)16 << 20;
}

typedef struct {
    char *data;
    size_t len;
    int from, to; /* copy the rest of `from` (or -1) after data, into `to` */
} feed_job;

static void write_fully(int fd, const char *p, size_t n) {
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return; /* the reader went away: nothing left to give */
        p += w;
        n -= (size_t)w;
    }
}

static void *feed_stdin(void *arg) {
    feed_job *job = arg;
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);
    write_fully(job->to, job->data, job->len);
    if (job->from >= 0) {
        char chunk[65536];
        for (;;) {
            ssize_t r = read(job->from, chunk, sizeof chunk);
            if (r < 0 && errno == EINTR)
                continue;
            if (r <= 0)
                break;
            write_fully(job->to, chunk, (size_t)r);
        }
        close(job->from);
    }
    close(job->to);
    free(job->data);
    free(job);
    return NULL;
}

/* Put data (and, when more, the rest of the original stream, rest: a duplicate of
 * fd 0) back on fd 0 through the pipe p. Takes ownership of data and of rest. Runs
 * without the GIL. */
static void refeed_stdin(int p[2], int rest, char *data, size_t len, int more) {
    if (!more) {
        close(rest);
        rest = -1;
    }
    int room = fcntl(p[1], F_GETPIPE_SZ);
    if (!more && room >= 0 && (size_t)room < len)
        room = fcntl(p[1], F_SETPIPE_SZ, (int)(len < INT32_MAX ? len : INT32_MAX));
    dup2(p[0], 0);
    close(p[0]);
    if (!more && room >= 0 && (size_t)room >= len) {
        write_fully(p[1], data, len);
        close(p[1]);
        free(data);
        return;
    }
    feed_job *job = malloc(sizeof *job);
    pthread_t t;
    if (job) {
        *job = (feed_job){data, len, rest, p[1]};
        if (pthread_create(&t, NULL, feed_stdin, job) == 0) {
            pthread_detach(t);
            return;
        }
        free(job);
    }
    /* No thread: give back what fits, so the script is cut rather than hung. */
    write_fully(p[1], data, room > 0 && (size_t)room < len ? (size_t)room : len);
    close(p[1]);
    if (rest >= 0)
        close(rest);
    free(data);
}

static void capture_stdin(void) {
    struct stat st;
    if (fstat(0, &st) < 0 || !(S_ISREG(st.st_mode) || S_ISFIFO(st.st_mode)))
        return;
    char *data = NULL;
    size_t len = 0;
    int rc;
    PyObject *text = NULL;
    if (S_ISREG(st.st_mode)) {
        off_t at = lseek(0, 0, SEEK_CUR);
        if (at < 0)
            return;
        Py_BEGIN_ALLOW_THREADS
        rc = read_all(0, st.st_size > at ? (size_t)(st.st_size - at) : 0, stdin_max(), &data, &len);
        lseek(0, at, SEEK_SET);
        Py_END_ALLOW_THREADS
        if (rc == 0)
            text = PyBytes_FromStringAndSize(data, (Py_ssize_t)len);
        if (rc == 0 || rc == EFBIG)
            free(data);
    } else {
        /* Everything needed to give the script back is made before taking it. */
        int p[2];
        if (pipe2(p, O_CLOEXEC) < 0)
            return;
        int rest = fcntl(0, F_DUPFD_CLOEXEC, 3); /* the stream past the cap */
        if (rest < 0) {
            close(p[0]);
            close(p[1]);
            return;
        }
        Py_BEGIN_ALLOW_THREADS
        rc = read_all(0, 0, stdin_max(), &data, &len);
        Py_END_ALLOW_THREADS
        if (rc == 0)
            text = PyBytes_FromStringAndSize(data, (Py_ssize_t)len);
        Py_BEGIN_ALLOW_THREADS
        if (rc == 0 || rc == EFBIG) {
            refeed_stdin(p, rest, data, len, rc == EFBIG);
        } else {
            close(p[0]); /* a read error: CPython will meet it too */
            close(p[1]);
            close(rest);
        }
        Py_END_ALLOW_THREADS
    }
    PyObject *origin = text ? PyUnicode_FromString("<stdin>") : NULL;
    if (origin)
        record_code_text(text, origin);
    PyErr_Clear();
    Py_XDECREF(text);
    Py_XDECREF(origin);
}

int aw_code_event(const char *event, PyObject *args, int action, const char **rule) {
    /* The hook calls this only for a name starting with 'c' that is not ignored. */
    if (args == NULL || !PyTuple_Check(args))
        return action;
    int is_compile = strcmp(event, "compile") == 0;
    if (!is_compile && strncmp(event, "cpython.run_", 12) != 0)
        return action;
    pthread_once(&config_once, config_init);
    PyThreadState *ts = AW_TSTATE();
    if (ts == NULL)
        return action;
    PyObject *et = NULL, *ev = NULL, *etb = NULL;
    if (PyErr_Occurred())
        PyErr_Fetch(&et, &ev, &etb);
    Py_ssize_t nargs = PyTuple_GET_SIZE(args);
    const char *what = event + 12;
    if (is_compile && nargs >= 1) {
        record_code_text(PyTuple_GET_ITEM(args, 0), nargs >= 2 ? PyTuple_GET_ITEM(args, 1) : NULL);
    } else if (strcmp(what, "command") == 0 && nargs >= 1) {
        PyObject *origin = PyUnicode_FromString("-c");
        record_code_text(PyTuple_GET_ITEM(args, 0), origin);
        Py_XDECREF(origin);
    } else if (strcmp(what, "file") == 0 && nargs >= 1) {
        if (main_script(PyTuple_GET_ITEM(args, 0)) == AW_DENY) {
            action = AW_DENY;
            *rule = deny_rule;
        }
    } else if (strcmp(what, "stdin") == 0) {
        const char *mode = isatty(0) ? "auditwatch.mode.interactive" : "auditwatch.mode.stdin";
        const char *mode_rule = NULL;
        if (table_action(mode, &mode_rule) == AW_DENY) {
            action = AW_DENY;
            *rule = mode_rule;
        } else if (!isatty(0)) {
            capture_stdin();
        }
    }
    PyErr_Clear();
    if (et || ev || etb)
        PyErr_Restore(et, ev, etb);
    return action;
}
