/* Hashing files read as code, and large bytecode, off the importing thread.
 *
 * SHA-256 of every module file, and of the bytecode of every module body that is
 * exec'd, is most of what auditing adds to a start-up that imports many modules.
 * When nothing waits for the hash (no manifest, and the event is recorded rather
 * than flushed or denied), the open-code hook, and the hook for an `exec` (encode.c,
 * hook.c), for data past the size of aw_hasher_worth, format the record with a
 * placeholder where the hash goes and hand it, with the bytes, to this thread, which
 * hashes them, writes the hash in and queues the record. The record keeps the time
 * of its event; it reaches the ring a little later than the events after it. The
 * exit record and every indicator wait for the queue to empty (aw_hasher_drain).
 *
 * Needs no GIL. In the main interpreter the bytes are the buffer of the `bytes`
 * object handed to Python (no copy); the job holds a reference to it, taken and
 * given back only with the GIL: a finished job waits on the done list until the
 * main interpreter's next recorded event, open-code hook or flush
 * (aw_hasher_collect). Elsewhere the job owns a malloc'ed copy. */
#include "aw.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Bytes waiting to be hashed; past this, the caller hashes in place. */
#define QUEUE_MAX ((size_t)64 << 20)
#define DRAIN_MAX_S 60
/* After a job the thread naps NAPS times NAP_S for the next one, which the
 * importing thread then queues without waking it: a wake-up on another CPU costs
 * that thread tens of microseconds in a VM, and an import-heavy start-up queued a
 * job every few milliseconds (docs/performance.md, "One thread"). */
#define NAP_S 0.001
#define NAPS 3

typedef struct job {
    struct job *next;
    char *record;  /* the formatted record, hash placeholder at hex_at */
    size_t len, hex_at;
    char *data;    /* the bytes that were handed to Python */
    size_t size;
    PyObject *keep; /* data's owner (a bytes object), or NULL: data is malloc'ed */
} job;

static struct {
    pthread_mutex_t mu;
    pthread_cond_t work, idle;
    job *head, *tail;
    job *done;           /* finished jobs whose `keep` needs the GIL to be released */
    size_t queued_bytes; /* of the jobs not yet in the ring */
    size_t unfinished;   /* jobs not yet in the ring, the one being hashed included */
    int running;
    int dozing; /* napping between jobs: comes back without being woken */
} H = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, PTHREAD_COND_INITIALIZER,
       NULL, NULL, NULL, 0, 0, 0, 0};

static atomic_ullong hashed; /* records whose hash this thread made */

unsigned long long aw_hasher_hashed(void) { return atomic_load(&hashed); }

static void *hasher_main(void *arg) {
    (void)arg;
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL); /* signals are the program's business */
    pthread_mutex_lock(&H.mu);
    int naps = 0;
    for (;;) {
        while (H.head == NULL) {
            if (naps == 0) {
                pthread_cond_wait(&H.work, &H.mu);
                continue;
            }
            naps--;
            struct timespec nap;
            aw_deadline(&nap, AW_NAP_CLOCK, NAP_S);
            H.dozing = 1;
#ifdef AW_HAVE_CLOCKWAIT
            pthread_cond_clockwait(&H.work, &H.mu, AW_NAP_CLOCK, &nap);
#else
            pthread_cond_timedwait(&H.work, &H.mu, &nap);
#endif
            H.dozing = 0;
        }
        naps = NAPS;
        job *j = H.head;
        H.head = j->next;
        if (H.head == NULL)
            H.tail = NULL;
        pthread_mutex_unlock(&H.mu);

        char hex[65];
        aw_sha256_hex(j->data, j->size, hex);
        memcpy(j->record + j->hex_at, hex, 64);
        aw_ring_put(j->record, j->len, AW_PUT_STAMPED); /* from aw_format_event */
        free(j->record);
        atomic_fetch_add_explicit(&hashed, 1, memory_order_relaxed);

        pthread_mutex_lock(&H.mu);
        H.queued_bytes -= j->size;
        if (j->keep != NULL) { /* its owner goes back with the GIL */
            j->next = H.done;
            H.done = j;
            atomic_store_explicit(&aw_hasher_done, 1, memory_order_relaxed);
        } else {
            free(j->data);
            free(j);
        }
        if (--H.unfinished == 0)
            pthread_cond_broadcast(&H.idle);
    }
    return NULL;
}

/* fork (called from the ring's fork handlers, ring.c): the child does not have the
 * thread, and the queued records are the parent's, which the parent still writes.
 * The child forgets the jobs rather than free them, like the ring's buffers. */
void aw_hasher_atfork_prepare(void) { aw_lock(&H.mu); }
void aw_hasher_atfork_parent(void) { aw_unlock(&H.mu); }
void aw_hasher_atfork_child(void) {
    H.head = H.tail = H.done = NULL; /* the references are the parent's too: leaked */
    atomic_store(&aw_hasher_done, 0);
    H.queued_bytes = H.unfinished = 0;
    H.running = H.dozing = 0;
    pthread_mutex_unlock(&H.mu); /* the ring's child handler resets the lock count */
    pthread_cond_init(&H.work, NULL);
    pthread_cond_init(&H.idle, NULL);
}

/* Whether hashing this many bytes on the hasher thread saves the caller time.
 * Queueing the job and giving its reference back later cost about 900 instructions
 * (callgrind, the 25-import start-up), and a job for a sleeping hasher costs a
 * futex wake-up and a context switch. Hashing in place costs about 500 a hash plus
 * 2,700 a 64-byte block with the portable rounds (callgrind on _auditwatch._sha256),
 * or about 150 with the SHA extensions (counted in compress_shani: valgrind does not
 * run them), where 16 KiB take about 38,000: below that, handing files over cost the
 * 25-import start-up more CPU and context switches than it saved, for no gain in
 * wall clock (perf stat; docs/performance.md). */
#define DEFER_HASH_MIN_PORTABLE 64
#define DEFER_HASH_MIN_FAST (16 << 10)

int aw_hasher_worth(size_t size) {
    return size >= (aw_sha256_fast() ? DEFER_HASH_MIN_FAST : DEFER_HASH_MIN_PORTABLE);
}

int aw_hasher_submit(aw_buf *b, size_t hex_at, char *data, size_t size, PyObject *keep) {
    /* keep's reference can only go back in the main interpreter (aw_hasher_release). */
    if (b->oom || hex_at + 64 > b->len || (keep != NULL && !aw_in_main_interpreter()))
        return -1;
    char *record = b->heap ? b->p : malloc(b->len);
    job *j = record ? malloc(sizeof *j) : NULL;
    if (j == NULL) {
        if (!b->heap)
            free(record);
        return -1;
    }
    if (!b->heap)
        memcpy(record, b->p, b->len);
    *j = (job){NULL, record, b->len, hex_at, data, size, keep};
    aw_lock(&H.mu);
    if (H.queued_bytes + size > QUEUE_MAX) {
        aw_unlock(&H.mu);
        if (!b->heap)
            free(record);
        free(j);
        return -1;
    }
    if (!H.running) {
        pthread_t t;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setstacksize(&attr, 128 << 10);
        int rc = pthread_create(&t, &attr, hasher_main, NULL);
        pthread_attr_destroy(&attr);
        if (rc != 0) {
            aw_unlock(&H.mu);
            if (!b->heap)
                free(record);
            free(j);
            return -1;
        }
        pthread_detach(t);
        H.running = 1;
    }
    if (H.tail)
        H.tail->next = j;
    else
        H.head = j;
    H.tail = j;
    H.queued_bytes += size;
    H.unfinished++;
    Py_XINCREF(keep); /* the GIL is held: the caller is a hook */
    if (!H.dozing)
        pthread_cond_signal(&H.work);
    aw_unlock(&H.mu);
    if (b->heap) { /* the record's memory is the job's now */
        b->p = NULL;
        b->heap = 0;
        b->len = b->cap = 0;
    }
    return 0;
}

atomic_int aw_hasher_done;

/* Through aw_hasher_collect: the references belong to the main interpreter. */
void aw_hasher_release(void) {
    if (!aw_in_main_interpreter())
        return;
    aw_lock(&H.mu);
    job *done = H.done;
    H.done = NULL;
    atomic_store_explicit(&aw_hasher_done, 0, memory_order_relaxed);
    aw_unlock(&H.mu);
    while (done != NULL) {
        job *next = done->next;
        Py_DECREF(done->keep);
        free(done);
        done = next;
    }
}

size_t aw_hasher_unfinished(void) {
    /* Not aw_lock: the writer thread keeps no per-thread lock count (ring.c). */
    pthread_mutex_lock(&H.mu);
    size_t n = H.unfinished;
    pthread_mutex_unlock(&H.mu);
    return n;
}

void aw_hasher_drain(void) {
    aw_lock(&H.mu);
    if (H.unfinished) {
        if (H.dozing) /* waited for: no nap */
            pthread_cond_signal(&H.work);
        struct timespec dl;
        aw_deadline(&dl, CLOCK_REALTIME, DRAIN_MAX_S);
        while (H.unfinished && pthread_cond_timedwait(&H.idle, &H.mu, &dl) != ETIMEDOUT)
            ; /* on time-out, go on: the exit record must not wait forever */
    }
    aw_unlock(&H.mu);
}
