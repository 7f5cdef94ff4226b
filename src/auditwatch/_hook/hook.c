/* The audit hook: registered with PySys_AddAuditHook, so it is global to the
 * runtime (every interpreter, every thread) and lives in C memory that Python code
 * cannot reach. */
#include "aw.h"

#include <string.h>

#define MAX_EVENT_NAME 512

static __thread int in_hook;
atomic_int aw_probe_seen, aw_probing;
static atomic_ullong reentrant, denied;

static const char *ACTION_NAMES[] = {"ignore", "record", "flush", "deny", "monitor"};

static long long interp_id(PyThreadState *ts) {
    if (ts == NULL)
        return -1;
#if PY_VERSION_HEX >= 0x03090000
    PyInterpreterState *interp = PyThreadState_GetInterpreter(ts);
#else
    PyInterpreterState *interp = ts->interp;
#endif
    return interp ? (long long)PyInterpreterState_GetID(interp) : -1;
}

static uint64_t aw_record_event_with(const char *event, const char *event_json, PyObject *args,
                                     const char *action, const char *rule, const aw_limits *lim,
                                     int put_flags);

uint64_t aw_record_event(const char *event, PyObject *args, const char *action, const char *rule,
                         int put_flags) {
    return aw_record_event_with(event, NULL, args, action, rule, &aw_default_limits, put_flags);
}

void aw_record_decided(const char *event, const char *event_json, PyObject *args, int action,
                       const char *name, const char *rule, const aw_limits *lim) {
    int indicator = action >= AW_FLUSH;
    /* While the interpreter finalizes (cpython._PySys_ClearAuditHooks, raised just
     * before CPython clears every hook, ours included), the exit record and the exit
     * drain follow, and the drain waits for the ack of everything: a flush there
     * sends its records at once without waiting for the ack itself, one collector
     * round trip per process fewer. A denial still waits: it refuses an operation. */
    int send_only = action == AW_FLUSH && AW_FINALIZING();
    if (indicator)
        aw_hasher_drain();
    int wait = indicator && !send_only;
    uint64_t ticket = aw_record_event_with(event, event_json, args, name, rule, lim,
                                           AW_PUT_RELEASE_GIL | (wait ? AW_PUT_FLUSH : 0));
    if (wait)
        aw_flush_indicator(ticket);
    else if (send_only)
        aw_ring_send(ticket);
}

void aw_format_event_name(aw_buf *b, const char *event) {
    aw_buf_puts(b, "\"kind\":\"event\",\"event\":");
    size_t n = strlen(event);
    aw_buf_cstr(b, event, n > MAX_EVENT_NAME ? MAX_EVENT_NAME : n);
    if (n > MAX_EVENT_NAME) {
        aw_buf_puts(b, ",\"event_len\":");
        aw_buf_uint(b, n);
    }
}

void aw_format_event(aw_buf *b, const char *event, const char *event_json, PyObject *args,
                     const char *action, const char *rule, const aw_limits *lim,
                     aw_deferred_hash *defer) {
    PyThreadState *ts = AW_TSTATE();
    aw_stamp stamp = {aw_now_ns(), (int64_t)aw_gettid(), interp_id(ts)};
    char *at = aw_buf_extend(b, sizeof stamp);
    if (at)
        memcpy(at, &stamp, sizeof stamp);
    if (event_json)
        aw_buf_puts(b, event_json);
    else
        aw_format_event_name(b, event);
    aw_buf_puts(b, ",\"args\":");
    aw_encode_args(b, args, lim, defer);
    aw_buf_puts(b, ",\"where\":");
    aw_encode_where(b, ts);
    aw_buf_puts(b, ",\"action\":\"");
    aw_buf_puts(b, action);
    aw_buf_putc(b, '"');
    if (rule) {
        aw_buf_puts(b, ",\"rule\":");
        aw_buf_cstr(b, rule, strlen(rule));
    }
}

/* Hand a record with a deferred bytecode hash to the hasher; 0 queued. Otherwise
 * (a subinterpreter, queue full, out of memory) the hash is written in here and the
 * caller queues the record. */
static int queue_hashed(aw_buf *b, aw_deferred_hash *d) {
    char *data = PyBytes_AS_STRING(d->bytes);
    size_t size = (size_t)PyBytes_GET_SIZE(d->bytes);
    if (aw_hasher_submit(b, d->hex_at, data, size, d->bytes) == 0)
        return 0;
    char hex[65];
    aw_sha256_hex(data, size, hex);
    memcpy(b->p + d->hex_at, hex, 64);
    return -1;
}

static uint64_t aw_record_event_with(const char *event, const char *event_json, PyObject *args,
                                     const char *action, const char *rule, const aw_limits *lim,
                                     int put_flags) {
    aw_writer_ensure();
    char storage[2048];
    aw_buf b;
    aw_buf_init(&b, storage, sizeof storage);
    /* A large bytecode's hash (an exec of a module body) can be left to the hasher
     * thread when nothing waits for this record. */
    aw_deferred_hash defer = {NULL, 0};
    aw_format_event(&b, event, event_json, args, action, rule, lim,
                    (put_flags & AW_PUT_FLUSH) ? NULL : &defer);
    uint64_t ticket = 0;
    if (!b.oom && (defer.bytes == NULL || queue_hashed(&b, &defer) < 0))
        ticket = aw_ring_put(b.p, b.len, AW_PUT_STAMPED | put_flags);
    Py_XDECREF(defer.bytes);
    aw_buf_free(&b);
    return ticket;
}

int aw_audit_hook(const char *event, PyObject *args, void *userdata) {
    (void)userdata;
    if (!atomic_load_explicit(&aw_proc.active, memory_order_relaxed))
        return 0;
    aw_decision d;
    aw_table_lookup(event, &d);
    int action = d.action;
    const char *rule = d.rule;
    if (d.ndeny) {
        int enforce = 0;
        const char *hit = aw_deny_check(d.deny, d.ndeny, args, &enforce);
        if (hit) {
            action = enforce ? AW_DENY : AW_MONITOR;
            rule = hit;
        }
    }
    /* Provenance and the PEP 551 policies: compile and cpython.run_* only. The
     * cheap test is here, so that other events skip the call. */
    if (event[0] == 'c' && action != AW_IGNORE)
        action = aw_code_event(event, args, action, &rule);
    if (atomic_load_explicit(&aw_probing, memory_order_relaxed) &&
        strcmp(event, "auditwatch.install") == 0) {
        /* The installation probe is on record whatever the table says. */
        atomic_store(&aw_probe_seen, 1);
        action = AW_RECORD;
        rule = NULL;
    }
    if (action == AW_IGNORE)
        return 0;
    /* One thread-local lookup for all uses (in a dlopen'ed module each is a call);
     * volatile keeps the compiler from computing the address again instead. */
    int *volatile busy = &in_hook;
    if (*busy) {
        /* Nothing we call raises events; if that ever changes, do not recurse. */
        atomic_fetch_add(&reentrant, 1);
        return 0;
    }
    *busy = 1;

    /* Keep an exception the caller already has pending: encoding may clear errors. */
    PyThreadState *ts = AW_TSTATE();
    PyObject *et = NULL, *ev = NULL, *etb = NULL;
    if (ts && PyErr_Occurred())
        PyErr_Fetch(&et, &ev, &etb);
    /* Files read as code that the hasher is done with: a process that stops
     * importing must not keep the last of them. */
    aw_hasher_collect();

    aw_record_decided(event, d.event_json, args, action, ACTION_NAMES[action],
                      action >= AW_DENY ? rule : NULL, &aw_default_limits);

    /* Leave the error state as we found it: an allocation that failed while making
     * the record (a frame object, a hash) must not surface as the event's error. */
    if (et || ev || etb)
        PyErr_Restore(et, ev, etb);
    else if (ts && PyErr_Occurred())
        PyErr_Clear();
    *busy = 0;
    if (action == AW_DENY && ts) {
        atomic_fetch_add(&denied, 1);
        PyErr_Format(PyExc_PermissionError, "auditwatch: '%.200s' denied by rule '%.200s'",
                     event, rule ? rule : "config");
        return -1;
    }
    return 0;
}

unsigned long long aw_hook_reentrant(void) { return atomic_load(&reentrant); }
unsigned long long aw_hook_denied(void) { return atomic_load(&denied); }
