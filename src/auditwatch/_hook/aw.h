/* auditwatch native core: shared declarations.
 *
 * The audit hook runs next to hostile code. Everything in this directory follows
 * three rules: never run Python code on an event argument, never lose a record
 * without counting it, and never block forever while holding the GIL.
 */
#ifndef AW_H
#define AW_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdatomic.h>
#include <stddef.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>

#include "sha256.h" /* aw_sha256_hex; shared with auditwatch._ingest */

#ifndef Py_IS_TYPE /* 3.8 */
#define Py_IS_TYPE(o, t) (Py_TYPE(o) == (t))
#endif

/* The writer's and the hasher's naps are timed on the monotonic clock where glibc
 * can (2.30 and later: sem_clockwait, pthread_cond_clockwait): a 1 ms nap must not
 * last as long as the wall clock is set back (a virtual machine resumed, NTP
 * stepping), while the program, counting on the nap, does not wake the thread. */
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 30))
#define AW_NAP_CLOCK CLOCK_MONOTONIC
#define AW_HAVE_CLOCKWAIT 1
#else
#define AW_NAP_CLOCK CLOCK_REALTIME
#endif
/* The absolute time `seconds` from now on clk: a deadline for a timed wait (the
 * condition variables wait on CLOCK_REALTIME, the naps on AW_NAP_CLOCK). */
static inline void aw_deadline(struct timespec *ts, clockid_t clk, double seconds) {
    clock_gettime(clk, ts);
    long long ns = ts->tv_nsec + (long long)(seconds * 1e9);
    ts->tv_sec += (time_t)(ns / 1000000000LL);
    ts->tv_nsec = (long)(ns % 1000000000LL);
}

/* ---- growable byte buffer (encode.c) ------------------------------------ */

typedef struct {
    char *p;
    size_t len;
    size_t cap;
    int heap; /* p was malloc'ed (else it points at caller storage) */
    int oom;  /* an allocation failed: content is incomplete */
} aw_buf;

void aw_buf_init(aw_buf *b, char *storage, size_t cap);
void aw_buf_free(aw_buf *b);
/* Make room for n more bytes; -1 (and b->oom set) when memory ran out. */
int aw_buf_reserve_slow(aw_buf *b, size_t n);

static inline int aw_buf_reserve(aw_buf *b, size_t n) {
    if (b->len + n <= b->cap && !b->oom)
        return 0;
    return aw_buf_reserve_slow(b, n);
}

static inline void aw_buf_put(aw_buf *b, const char *s, size_t n) {
    if (n == 0 || aw_buf_reserve(b, n) < 0)
        return;
    memcpy(b->p + b->len, s, n);
    b->len += n;
}

static inline void aw_buf_putc(aw_buf *b, char c) {
    if (aw_buf_reserve(b, 1) < 0)
        return;
    b->p[b->len++] = c;
}

static inline void aw_buf_puts(aw_buf *b, const char *s) { aw_buf_put(b, s, strlen(s)); }

/* Append n bytes to be filled by the caller; NULL when out of memory. */
static inline char *aw_buf_extend(aw_buf *b, size_t n) {
    if (aw_buf_reserve(b, n) < 0)
        return NULL;
    b->len += n;
    return b->p + b->len - n;
}

void aw_buf_int(aw_buf *b, long long v);
void aw_buf_uint(aw_buf *b, unsigned long long v);
/* A JSON string from C bytes; invalid UTF-8 becomes \udcXX (surrogateescape). */
void aw_buf_cstr(aw_buf *b, const char *s, size_t n);

/* ---- argument encoding (encode.c) --------------------------------------- */

typedef struct {
    Py_ssize_t max_str;   /* characters of a str */
    Py_ssize_t max_bytes; /* bytes of a bytes or bytearray */
    Py_ssize_t max_items; /* items of a container */
    int max_depth;        /* container nesting */
    size_t budget;        /* bytes for the whole args array */
} aw_limits;

extern aw_limits aw_default_limits;

/* 64 bytes where a hash goes that the hasher thread writes in later. */
#define AW_HEX_PLACEHOLDER "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"

/* A code object's bytecode whose SHA-256 the hasher thread writes into the record
 * later (hasher.c), so a large module body is not hashed on the importing thread. */
typedef struct {
    PyObject *bytes; /* new reference to the bytecode, or NULL: nothing deferred */
    size_t hex_at;   /* offset of the 64-byte placeholder in the record's buffer */
} aw_deferred_hash;

/* Encode an args tuple as a JSON array. Never calls Python code, never raises.
 * defer: NULL, or where the first large bytecode's hash is left to the hasher. */
void aw_encode_args(aw_buf *b, PyObject *args, const aw_limits *lim, aw_deferred_hash *defer);
/* Encode the innermost Python frame of the current thread as a JSON object or null. */
void aw_encode_where(aw_buf *b, PyThreadState *ts);

/* ---- event table (table.c) ---------------------------------------------- */

enum aw_action {
    AW_IGNORE = 0,
    AW_RECORD = 1,
    AW_FLUSH = 2,   /* record, then wait until it has left the process */
    AW_DENY = 3,    /* record, flush, then refuse the operation */
    AW_MONITOR = 4, /* a deny rule in monitor mode matched: record and flush only */
};

#define AW_MAX_DENY 8 /* deny rules per event name */

typedef struct {
    int action;
    const char *rule; /* the config entry or deny rule that decided */
    int ndeny;        /* deny rules to test against the arguments */
    const int *deny;
    int scratch[AW_MAX_DENY];
    /* "kind":"event","event":"NAME" as a record states it, made once per name the
     * table caches (NULL otherwise): encoding the name was a tenth of the work of
     * recording an event. */
    const char *event_json;
} aw_decision;

/* ---- globs (glob.c) ------------------------------------------------------ */

/* A glob decided as fnmatch(3) without flags decides it, plain names and a final
 * '*' without calling it. text is the caller's and must outlive the aw_glob. */
enum { AW_GLOB_EXACT, AW_GLOB_PREFIX, AW_GLOB_FNMATCH };
typedef struct {
    const char *text;
    size_t fixed; /* AW_GLOB_PREFIX: the length before the '*' */
    int kind;
} aw_glob;
void aw_glob_init(aw_glob *g, const char *text);
int aw_glob_match(const aw_glob *g, const char *s);

/* Parse "action:glob,action:glob,..." (first match wins) in front of the defaults.
 * Returns 0, or -1 with a message in err. */
int aw_table_configure(const char *spec, char *err, size_t errlen);
/* What to do with an event name, before looking at its arguments. */
void aw_table_lookup(const char *event, aw_decision *d);
/* Held across fork() so that the child never inherits a locked table. */
void aw_table_lock(void);
void aw_table_unlock(void);

/* ---- deny rules (deny.c) ------------------------------------------------- */

int aw_deny_configure(const char *spec, char *err, size_t errlen);
int aw_deny_candidates(const char *event, int *out, int max);
/* The first candidate rule whose tests all match the arguments, or NULL. */
const char *aw_deny_check(const int *cands, int n, PyObject *args, int *enforce);
const char *aw_table_default_spec(void);

/* ---- ring, writer thread and sink (ring.c) ------------------------------ */

enum aw_policy { AW_POLICY_WAIT = 0, AW_POLICY_DROP = 1 };

typedef struct {
    char sink[1024];      /* "unix:/path", "file:/path", "" = spool only */
    char spool_dir[1024]; /* where records go when the sink fails */
    size_t ring_bytes;
    int policy;
    double heartbeat;     /* seconds of silence before a heartbeat record */
    double flush_timeout; /* seconds an indicator waits for its record to leave */
    int sigterm;          /* flush and write an exit record on SIGTERM */
} aw_options;

extern aw_options aw_opts;

int aw_ring_init(size_t bytes);
/* When, where and in which interpreter an event happened, as binary values: the
 * recording thread copies them, and the writer thread formats them as the record's
 * "ts", "tid" and "interp" members (the first step of moving encoding off the hook). */
typedef struct {
    int64_t ts;
    int64_t tid;
    int64_t interp;
} aw_stamp;
/* Queue one record body (JSON members after the common prefix, without braces).
 * Returns the ticket of the record (> 0), or 0 when it was dropped. */
#define AW_PUT_RELEASE_GIL 1 /* may release the GIL while waiting for room */
#define AW_PUT_KEEP 2        /* a start or exit record: wait even under policy=drop */
#define AW_PUT_STAMPED 4     /* the body starts with an aw_stamp (aw_format_event) */
#define AW_PUT_FLUSH 8       /* the caller will wait for it (aw_ring_flush): ask for an ack */
uint64_t aw_ring_put(const char *body, size_t n, int flags);

/* Wait until every record up to ticket has left the process (or timeout). 0 = done.
 * The ticket's record must have been queued with AW_PUT_FLUSH: that is what makes
 * its batch wait for the collector's ack. A parked writer is not woken: the caller
 * sends the batch itself. */
int aw_ring_flush(uint64_t ticket, double timeout, int may_release_gil);
/* Send the records up to ticket now, without waiting for the collector's ack. */
void aw_ring_send(uint64_t ticket);
/* Flush for an indicator (flush, deny, monitor), bounded by flush_timeout. */
int aw_flush_indicator(uint64_t ticket);
/* Open the sink, send the start record and start the writer thread, if this process
 * has none yet. */
int aw_writer_ensure(void);
/* Stop the writer after draining everything, bounded by timeout seconds. */
void aw_writer_stop(double timeout);
/* Async-signal-safe: have the writer thread write the exit record of a termination
 * by sig and drain, and wait for that at most `seconds`. Returns at once when this
 * process has no writer thread. */
void aw_ring_term(int sig, double seconds);

typedef struct {
    uint64_t queued, written, dropped, spooled, lost, heartbeats, reentrant, denied, ack_timeouts;
    int sink_state; /* 0 none, 1 connected sink, 2 spooling, 3 lost */
    char sink_error[256];
} aw_counters;
void aw_ring_counters(aw_counters *out);

/* ---- process identity and lifecycle (proc.c) ---------------------------- */

typedef struct {
    char run[33];
    char parent_run[33]; /* "" = none */
    const char *installed;
    pid_t pid;
    int forked; /* this run began with fork() */
    atomic_int active;
} aw_process;

extern aw_process aw_proc;

int aw_proc_install(const char *installed, char *err, size_t errlen);
void aw_proc_exit_record(const char *how, int code, int sig);
/* Who writes the exit record: the caller (first to ask), another exit path already
 * doing so, or nobody (not recording). */
enum { AW_EXIT_OURS, AW_EXIT_TAKEN, AW_EXIT_NONE };
int aw_proc_claim_exit(void);
/* The body of an exit record (`how`: exit, os._exit, exec, signal). */
void aw_proc_exit_body(aw_buf *b, const char *how, int code, int sig);
pid_t aw_gettid(void);
long long aw_now_ns(void);
/* Common prefix of every record after seq: ,"run":..,"pid":..,"installed":.. */
const char *aw_proc_prefix(size_t *len);
void aw_proc_start_record(void);
void aw_proc_after_fork_child(void);
/* Make this run's identity (after fork) before its first record. */
void aw_proc_prepare_run(void);
/* SIGTERM that arrived while this thread held a ring lock: finish it now. */
void aw_proc_deferred_term(void);
extern atomic_int aw_term_pending; /* set by the SIGTERM handler when it defers */
int aw_proc_term_deferred(void);
int aw_ring_locks_held(void);
/* Lock a mutex the exit path needs (counted per thread: see ring.c). */
void aw_lock(pthread_mutex_t *m);
void aw_unlock(pthread_mutex_t *m);
/* Hashing off the importing thread (hasher.c): files read as code and large
 * bytecode, when worth says the size makes it cheaper than hashing in place. submit
 * queues the formatted record in b (an aw_stamp, then JSON, as
 * aw_format_event makes it) whose 64-byte placeholder at hex_at the hasher fills
 * with the hash of data. keep: the bytes object data belongs to, which gets a
 * reference (GIL held) that aw_hasher_collect gives back once the hash is made;
 * accepted in the main interpreter only. NULL: data is malloc'ed. 0 queued, and b's
 * memory (and data when keep is NULL) is the hasher's; -1 nothing was taken. */
int aw_hasher_submit(aw_buf *b, size_t hex_at, char *data, size_t size, PyObject *keep);
int aw_hasher_worth(size_t size);
extern atomic_int aw_hasher_done; /* 1: finished jobs hold references */
unsigned long long aw_hasher_hashed(void); /* records the hasher thread hashed */
void aw_hasher_release(void);
/* Give back the references of finished jobs, when there are any and this thread
 * runs the main interpreter with the GIL: at every recorded event, open-code hook
 * and flush, so a process that stops reading code keeps none. */
static inline void aw_hasher_collect(void) {
    if (atomic_load_explicit(&aw_hasher_done, memory_order_relaxed))
        aw_hasher_release();
}
/* The calling thread has a thread state of the main interpreter (opencode.c). */
int aw_in_main_interpreter(void);
void aw_hasher_drain(void);
/* Jobs not yet in the ring (for the writer thread, which must not wait on them). */
size_t aw_hasher_unfinished(void);
void aw_hasher_atfork_prepare(void);
void aw_hasher_atfork_parent(void);
void aw_hasher_atfork_child(void);
void aw_ring_register_atfork(void);

/* ---- installation (install.c) --------------------------------------------- */

/* Configure (NULL = from the environment) and register the hook; usable before
 * Py_Initialize. 0, or -1 bad configuration, -2 cannot start, -3 hook refused
 * (a Python exception is set). */
int aw_install(const char *stage, const char *sink, const char *events, const char *options,
               const char *deny, char *err, size_t errlen);
int aw_installed(void);
/* The same from Python (module.c): proves the hook is called; 0, or -1 with an
 * exception set. */
int aw_install_probed(const char *how, const char *sink, const char *events, const char *options,
                      const char *deny);

/* ---- start-up (bootstrap.c) ------------------------------------------------ */

PyObject *aw_bootstrap(PyObject *module, PyObject *noargs);
/* The Python side of an installed recorder in this interpreter (os._exit, os.environ,
 * the fork handler); idempotent. 0, or -1 with an exception set. */
int aw_finish_interpreter(PyObject *module);
PyObject *aw_after_fork_in_child(PyObject *module, PyObject *noargs);

/* ---- the hook (hook.c) --------------------------------------------------- */

int aw_audit_hook(const char *event, PyObject *args, void *userdata);
/* The open-code hook (opencode.c): register it (manifest NULL for none); 0 or -1
 * with a message in err. */
int aw_opencode_install(const char *manifest_file, char *err, size_t errlen);
int aw_opencode_installed(void);

/* Provenance and start-up policies for compile and cpython.run_* (opencode.c);
 * returns the action, possibly turned into a denial. Called only for an event whose
 * name starts with 'c' and whose action is not ignore (the hook tests that first). */
int aw_code_event(const char *event, PyObject *args, int action, const char **rule);
/* Record an event as the table decided (name: how the record states the action).
 * An indicator (action flush and above) has left the process when this returns, and
 * so have the records of files read as code before it that were still being hashed:
 * an exec replaces the image. */
void aw_record_decided(const char *event, const char *event_json, PyObject *args, int action,
                       const char *name, const char *rule, const aw_limits *lim);
/* Format one event record into b without queueing it (GIL held): an aw_stamp, then
 * the JSON members from "kind" on. Queue it with AW_PUT_STAMPED. event_json: the
 * table's encoding of the name (aw_decision), or NULL to encode it here. */
void aw_format_event(aw_buf *b, const char *event, const char *event_json, PyObject *args,
                     const char *action, const char *rule, const aw_limits *lim,
                     aw_deferred_hash *defer);
/* "kind":"event","event":NAME (and "event_len" for a name cut short) into b. */
void aw_format_event_name(aw_buf *b, const char *event);
/* Encode and queue one event record (put_flags: AW_PUT_*); returns the ticket (0 if
 * dropped). */
uint64_t aw_record_event(const char *event, PyObject *args, const char *action, const char *rule,
                         int put_flags);

/* PyThreadState without the fatal error when there is none (pre-init, C threads). */
#if PY_VERSION_HEX >= 0x030D0000
#define AW_TSTATE() PyThreadState_GetUnchecked()
#else
#define AW_TSTATE() _PyThreadState_UncheckedGet()
#endif

/* The interpreter is finalizing: no program code of its own runs any more. */
#if PY_VERSION_HEX >= 0x030D0000
#define AW_FINALIZING() Py_IsFinalizing()
#else
#define AW_FINALIZING() _Py_IsFinalizing()
#endif

#endif
