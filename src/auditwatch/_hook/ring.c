/* Ring buffer, writer thread and sink.
 *
 * Recording threads (holding some interpreter's GIL) append record bodies to a byte
 * ring under a mutex. One native writer thread, which never touches the Python API
 * and so never needs a GIL, takes them out in order, numbers them (seq), adds the
 * per-process prefix and writes them to the sink: the collector's Unix socket, or a
 * file. While it is parked, a thread that needs its records out (the start record,
 * an indicator, the exit drain) does that work itself: "the writer role", below.
 * When the sink fails the writer switches to a spool file and nothing is lost; when
 * that fails too, what could not be written is counted.
 *
 * The writer role reads entries outside the mutex: producers only ever write into
 * free space and only the role's holder frees space, so [tail, head) is stable once
 * head has been read under the mutex.
 */
#include "aw.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <poll.h>
#include <semaphore.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

aw_options aw_opts = {"", "", 4u << 20, AW_POLICY_WAIT, 5.0, 2.0, 1};

/* The writer's naps: a record waits in the ring at most NAP_S once the writer is
 * awake, so that a burst gathers into one write; after NAPS naps with nothing to
 * do it sleeps until a record wakes it (see writer_main). Three: an audited start-up
 * took as few wake-ups of the writer as with eight (startup_interrupts.py), and
 * each nap costs the writer's CPU about 17 us here. */
#define NAP_S 0.001
#define NAPS 3
#define BATCH_BYTES (256 << 10) /* flush the output buffer past this size */
#define SINK_FD_MIN 200         /* keep our fds out of the way of programs' own */
#define UNACKED_MAX ((size_t)8 << 20) /* see "acknowledgements" */
#define ACK_EVERY_BYTES ((size_t)256 << 10)
#define ACK_EVERY_NS 100000000LL

static struct {
    pthread_mutex_t mu;
    pthread_cond_t not_full, flushed, stopped;
    sem_t wake; /* the parked writer's: a semaphore, so that a signal handler may post */
    char *data;
    uint64_t cap, head, tail; /* bytes; head and tail only grow */
    uint64_t put_ticket, done_ticket;
    uint64_t flush_ticket; /* the last record someone waits for: acked when it is sent */
    uint64_t dropped_pending;
    int writer_waiting, dozing, wake_posted, stop, writer_done;
    int role_taken; /* a thread other than the writer serves (see "the writer role") */
    atomic_int writer_running;
    pthread_t writer;
    aw_counters c;
} R = {.mu = PTHREAD_MUTEX_INITIALIZER,
       .not_full = PTHREAD_COND_INITIALIZER,
       .flushed = PTHREAD_COND_INITIALIZER,
       .stopped = PTHREAD_COND_INITIALIZER};

static pthread_mutex_t start_mu = PTHREAD_MUTEX_INITIALIZER;

/* SIGTERM (aw_ring_term): the signal asked for, and the writer's answer. */
static atomic_int term_sig, writer_gone;
static sem_t term_done;

/* Acknowledgement state (see "acknowledgements" below): writer thread only. */
static aw_buf unacked; /* whole lines sent but not yet confirmed */
static uint64_t unacked_seq, acked_seq, ack_asked_seq;
static long long ack_asked_ns;
static char ack_pending[256];
static size_t ack_pending_len;

/* Sink state: touched by the writer thread only (and by fork/exit with it stopped). */
static struct {
    int fd, spool_fd;
    dev_t dev;
    ino_t ino;
    uint64_t seq;
} S = {-1, -1, 0, 0, 0};

/* The writer's buffers start in static storage: a thread's first malloc makes it a
 * malloc arena (four system calls, two of them munmaps that interrupt the program's
 * thread on its CPU), a measurable part of a short process's start-up. They move to
 * the heap only past these sizes: a burst over a batch, a collector slow to ack. */
static char out_storage[BATCH_BYTES + (64 << 10)];
static char unacked_storage[ACK_EVERY_BYTES + BATCH_BYTES];

int aw_ring_init(size_t bytes) {
    aw_buf_init(&unacked, unacked_storage, sizeof unacked_storage);
    if (sem_init(&R.wake, 0, 0) != 0 || sem_init(&term_done, 0, 0) != 0)
        return -1;
    if (bytes < (1u << 20))
        bytes = 1u << 20;
    R.data = malloc(bytes);
    if (!R.data)
        return -1;
    R.cap = bytes;
    return 0;
}

/* For the condition variables, which wait on CLOCK_REALTIME. */
static void deadline_in(struct timespec *ts, double seconds) {
    aw_deadline(ts, CLOCK_REALTIME, seconds);
}

/* Wait for a post of s at most `seconds` (on AW_NAP_CLOCK); 0 when posted.
 * Async-signal-safe: the SIGTERM handler waits with it too. */
static int sem_wait_for(sem_t *s, double seconds) {
    struct timespec dl;
    aw_deadline(&dl, AW_NAP_CLOCK, seconds);
    int rc;
#ifdef AW_HAVE_CLOCKWAIT
    while ((rc = sem_clockwait(s, AW_NAP_CLOCK, &dl)) != 0 && errno == EINTR)
        ;
#else
    while ((rc = sem_timedwait(s, &dl)) != 0 && errno == EINTR)
        ;
#endif
    return rc;
}

/* With R.mu held: whether to wake the parked writer, and if so, the caller posts
 * R.wake (after unlocking when it can: the writer's first act is to take R.mu).
 * One post at a time is outstanding; park() takes back one that came too late. */
static int wake_due(void) {
    if (!R.writer_waiting || R.wake_posted)
        return 0;
    R.wake_posted = 1;
    return 1;
}

static void wake_writer(void) {
    if (wake_due())
        sem_post(&R.wake);
}

/* SIGTERM may land on a thread that holds one of these locks, and the exit path
 * needs them: the handler must not wait for the drain then (it would wait on
 * itself). Each thread counts the locks it holds, so the handler can tell and
 * defer the termination to the moment the last one is released. The handler reads
 * that thread-local count only while some thread is inside a lock (the global
 * count): a thread that never took one may not have our TLS block allocated yet,
 * and allocating it is not async-signal-safe. */
static __thread int locks_held;
static atomic_int threads_locking;

int aw_ring_locks_held(void) {
    return atomic_load_explicit(&threads_locking, memory_order_acquire) ? locks_held : 0;
}

/* held: this thread's locks_held, looked up once by a caller that locks often
 * (each use of a thread-local costs a __tls_get_addr call in a dlopen'ed module). */
static inline void count_in(int *held) {
    if ((*held)++ == 0)
        atomic_fetch_add_explicit(&threads_locking, 1, memory_order_acq_rel);
}

static inline void count_out(int *held) {
    if (--*held == 0) {
        atomic_fetch_sub_explicit(&threads_locking, 1, memory_order_acq_rel);
        if (atomic_load_explicit(&aw_term_pending, memory_order_relaxed))
            aw_proc_deferred_term();
    }
}

static inline void lock_counted(pthread_mutex_t *m, int *held) {
    count_in(held);
    pthread_mutex_lock(m);
}

static inline void unlock_counted(pthread_mutex_t *m, int *held) {
    pthread_mutex_unlock(m);
    count_out(held);
}

void aw_lock(pthread_mutex_t *m) { lock_counted(m, &locks_held); }
void aw_unlock(pthread_mutex_t *m) { unlock_counted(m, &locks_held); }

/* Release the GIL around a wait when it is safe to: never without a thread state,
 * never during finalization (a daemon thread re-taking the GIL then would exit). */
static PyThreadState *maybe_release_gil(int may) {
    if (!may)
        return NULL;
    PyThreadState *ts = AW_TSTATE();
    if (ts == NULL || AW_FINALIZING() || !PyGILState_Check())
        return NULL;
    return PyEval_SaveThread();
}

static void ring_copy_in(uint64_t at, const void *src, size_t n) {
    uint64_t off = at % R.cap;
    size_t first = (size_t)(R.cap - off) < n ? (size_t)(R.cap - off) : n;
    memcpy(R.data + off, src, first);
    if (first < n)
        memcpy(R.data, (const char *)src + first, n - first);
}

static void ring_copy_out(uint64_t at, void *dst, size_t n) {
    uint64_t off = at % R.cap;
    size_t first = (size_t)(R.cap - off) < n ? (size_t)(R.cap - off) : n;
    memcpy(dst, R.data + off, first);
    if (first < n)
        memcpy((char *)dst + first, R.data, n - first);
}

/* A ring entry is a 32-bit length, then the body; the length's top bit says the body
 * starts with an aw_stamp for the writer to format. */
#define STAMPED_BIT 0x80000000u

uint64_t aw_ring_put(const char *body, size_t n, int flags) {
    if (n >= STAMPED_BIT || ((flags & AW_PUT_STAMPED) && n < sizeof(aw_stamp)))
        return 0;
    uint32_t len = (uint32_t)n | ((flags & AW_PUT_STAMPED) ? STAMPED_BIT : 0);
    uint64_t need = (uint64_t)n + sizeof len;
    if (R.data == NULL || need > R.cap)
        return 0;
    int may_release_gil = flags & AW_PUT_RELEASE_GIL;
    /* Start and exit records wait for room even under policy=drop, for a while. */
    int keep = flags & AW_PUT_KEEP;
    struct timespec keep_deadline;
    if (keep)
        deadline_in(&keep_deadline, aw_opts.flush_timeout + 3.0);
    PyThreadState *saved = NULL;
    int give_up = 0, term_wait = 0;
    int *volatile held = &locks_held;
    lock_counted(&R.mu, held);
    while (R.cap - (R.head - R.tail) < need) {
        int can_wait = atomic_load(&R.writer_running) && !R.stop && !give_up &&
                       (keep || aw_opts.policy == AW_POLICY_WAIT);
        if (!can_wait) {
            R.dropped_pending++;
            R.c.dropped++;
            wake_writer();
            unlock_counted(&R.mu, held);
            if (saved)
                PyEval_RestoreThread(saved);
            return 0;
        }
        if (saved == NULL && may_release_gil) {
            /* Waiting for room can take a while: let other threads run meanwhile. */
            unlock_counted(&R.mu, held);
            saved = maybe_release_gil(1);
            may_release_gil = 0;
            lock_counted(&R.mu, held);
            continue;
        }
        wake_writer();
        if (keep || term_wait) {
            if (pthread_cond_timedwait(&R.not_full, &R.mu, &keep_deadline) == ETIMEDOUT) {
                /* the sink is stuck: give up as a drop, counted */
                give_up = term_wait;
                keep = 0;
            }
        } else {
            /* Wait in slices: a SIGTERM deferred while we hold the lock must not
             * wait for room forever (see lock()). */
            struct timespec slice;
            deadline_in(&slice, 0.1);
            pthread_cond_timedwait(&R.not_full, &R.mu, &slice);
            if (aw_proc_term_deferred()) {
                term_wait = 1;
                deadline_in(&keep_deadline, aw_opts.flush_timeout);
            }
        }
    }
    ring_copy_in(R.head, &len, sizeof len);
    ring_copy_in(R.head + sizeof len, body, n);
    R.head += need;
    uint64_t ticket = ++R.put_ticket;
    R.c.queued++;
    /* Asked for with the record, under the same lock: a writer that takes this
     * record also sees that it must be acknowledged. (Asked for later, by
     * aw_ring_flush alone, a writer past its linger could send it unconfirmed and
     * the caller would return at once.) */
    int flush = flags & AW_PUT_FLUSH;
    if (flush)
        R.flush_ticket = ticket;
    /* A dozing writer comes by within NAP_S: waking it would cost more than the
     * wait (a cross-CPU wake-up). A record waited for is served by its caller itself
     * when the writer is parked (aw_ring_flush): waking the writer for it would only
     * make it wait its turn. */
    int post = !flush && !R.dozing && wake_due();
    unlock_counted(&R.mu, held);
    if (post)
        sem_post(&R.wake);
    if (saved)
        PyEval_RestoreThread(saved);
    return ticket;
}

/* The writer waits flush_timeout for the collector's ack, then spools: give it a
 * moment more, so that the record is acknowledged or on disk when this returns. */
int aw_flush_indicator(uint64_t ticket) {
    return aw_ring_flush(ticket, aw_opts.flush_timeout + 1.0, 1);
}

void aw_ring_counters(aw_counters *out) {
    aw_lock(&R.mu);
    *out = R.c;
    aw_unlock(&R.mu);
}

/* ---- sink ------------------------------------------------------------------ */

/* The held-lock count of the thread in the writer role (below), through which the
 * sink code takes R.mu. The writer thread's is a local: the first use of a
 * thread-local variable of a dlopen'ed module allocates its block with malloc, and
 * a thread's first malloc creates a malloc arena, with munmaps that interrupt the
 * program's own threads on their CPUs. The writer thread never needs the per-thread
 * count for SIGTERM: it blocks every signal. */
static int *role_held;

static void role_lock(void) { lock_counted(&R.mu, role_held); }
static void role_unlock(void) { unlock_counted(&R.mu, role_held); }

static void set_sink_error(const char *what, const char *path) {
    role_lock();
    snprintf(R.c.sink_error, sizeof R.c.sink_error, "%s %.180s: %.60s", what, path, strerror(errno));
    role_unlock();
}

static void set_sink_state(int state) {
    role_lock();
    R.c.sink_state = state;
    role_unlock();
}

/* Move fd above the range programs usually manage themselves; remember its identity
 * so a program that closes it and reuses the number never gets our records. */
static int adopt_fd(int fd, int *out) {
    int high = fcntl(fd, F_DUPFD_CLOEXEC, SINK_FD_MIN);
    if (high >= 0) {
        close(fd);
        fd = high;
    }
    struct stat st;
    if (fstat(fd, &st) < 0) {
        close(fd);
        return -1;
    }
    S.dev = st.st_dev;
    S.ino = st.st_ino;
    *out = fd;
    return 0;
}

static int fd_is_ours(int fd) {
    struct stat st;
    return fd >= 0 && fstat(fd, &st) == 0 && st.st_dev == S.dev && st.st_ino == S.ino;
}

static int sink_open(void) {
    const char *sink = aw_opts.sink;
    int fd = -1;
    if (strncmp(sink, "unix:", 5) == 0) {
        struct sockaddr_un addr;
        memset(&addr, 0, sizeof addr);
        addr.sun_family = AF_UNIX;
        if (strlen(sink + 5) >= sizeof addr.sun_path) {
            errno = ENAMETOOLONG;
            set_sink_error("connect", sink + 5);
            return -1;
        }
        strcpy(addr.sun_path, sink + 5);
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
            set_sink_error("connect", sink + 5);
            if (fd >= 0)
                close(fd);
            return -1;
        }
    } else if (strncmp(sink, "file:", 5) == 0) {
        fd = open(sink + 5, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
        if (fd < 0) {
            set_sink_error("open", sink + 5);
            return -1;
        }
    } else {
        return -1;
    }
    if (adopt_fd(fd, &S.fd) < 0)
        return -1;
    ack_pending_len = 0; /* a new connection: nothing half-read from the old one */
    set_sink_state(1);
    return 0;
}

static void spool_path(char *path, size_t n);

static int spool_open(void) {
    if (!aw_opts.spool_dir[0])
        return -1;
    char path[1200];
    mkdir(aw_opts.spool_dir, 0700);
    spool_path(path, sizeof path);
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        set_sink_error("open spool", path);
        return -1;
    }
    int high = fcntl(fd, F_DUPFD_CLOEXEC, SINK_FD_MIN);
    if (high >= 0) {
        close(fd);
        fd = high;
    }
    S.spool_fd = fd;
    set_sink_state(2);
    return 0;
}

static long long monotonic_ns(void);

/* A thread other than the writer that serves (R.role_taken, "the writer role"
 * below) is the program's: a collector that stops reading must not hold it for
 * longer than flush_timeout; the batch then goes to the spool file. The writer
 * thread's own sends block, and aw_writer_stop bounds the wait for them. Read
 * without the mutex: only the role's holder writes to the sink, and the writer
 * serves only while no one has taken the role. */
static int write_all(int fd, const char *p, size_t n, int is_socket) {
    int serving_inline = R.role_taken;
    long long deadline = 0;
    while (n) {
        ssize_t w = !is_socket ? write(fd, p, n)
                               : send(fd, p, n, MSG_NOSIGNAL | (serving_inline ? MSG_DONTWAIT : 0));
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) && serving_inline) {
            long long now = monotonic_ns();
            if (deadline == 0)
                deadline = now + (long long)(aw_opts.flush_timeout * 1e9);
            struct pollfd pfd = {fd, POLLOUT, 0};
            if (now >= deadline || poll(&pfd, 1, (int)((deadline - now) / 1000000LL) + 1) == 0) {
                errno = ETIMEDOUT;
                return -1;
            }
            continue;
        }
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Write a batch of complete lines; returns how many records could not be written. */
static int is_unix_sink(void) { return strncmp(aw_opts.sink, "unix:", 5) == 0; }

static long long monotonic_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void spool_path(char *path, size_t n) {
    snprintf(path, n, "%s/%s-%d.jsonl", aw_opts.spool_dir, aw_proc.run, (int)aw_proc.pid);
}

static void close_sink(void) {
    if (fd_is_ours(S.fd))
        close(S.fd);
    S.fd = -1;
}

static int await_ack(uint64_t seq);

/* While spooling, try the collector again (at most once a second). On success the
 * spool file is sent first, then removed: records arrive in order, and the ones
 * that had already arrived before the failure are dropped by the collector, which
 * keeps the highest seq per run. */
static void try_reconnect(void) {
    static long long last;
    long long now = monotonic_ns();
    if (!is_unix_sink() || S.fd >= 0 || now - last < 1000000000LL)
        return;
    last = now;
    if (sink_open() < 0)
        return;
    if (S.spool_fd < 0)
        return;
    char path[1200], chunk[65536];
    spool_path(path, sizeof path);
    int rfd = open(path, O_RDONLY | O_CLOEXEC);
    ssize_t got = 0;
    while (rfd >= 0 && (got = read(rfd, chunk, sizeof chunk)) > 0)
        if (write_all(S.fd, chunk, (size_t)got, 1) < 0)
            break;
    if (rfd >= 0)
        close(rfd);
    /* The spool file goes only once the collector confirms it stored what was
     * replayed: the replay is in no unacked buffer, so a collector that takes it and
     * never stores it would otherwise lose it. */
    if (rfd < 0 || got != 0 || await_ack(S.seq) < 0) {
        close_sink(); /* replay failed: keep spooling, try again later */
        set_sink_state(2);
        return;
    }
    close(S.spool_fd);
    S.spool_fd = -1;
    unlink(path);
}

/* Where a batch went. */
enum { TO_SINK, TO_SPOOL, TO_NOWHERE };

static int spool_write(const char *p, size_t n) {
    if (S.spool_fd < 0 && spool_open() < 0)
        return -1;
    if (write_all(S.spool_fd, p, n, 0) == 0)
        return 0;
    set_sink_error("write spool", aw_opts.spool_dir);
    close(S.spool_fd);
    S.spool_fd = -1;
    return -1;
}

static void give_up_connection(void);

/* Write a batch of complete lines to the sink, else to the spool file. */
static int sink_write(const char *p, size_t n, uint64_t records) {
    int where = TO_NOWHERE;
    if (S.fd < 0)
        try_reconnect();
    if (S.fd >= 0) {
        if (fd_is_ours(S.fd) && write_all(S.fd, p, n, is_unix_sink()) == 0) {
            where = TO_SINK;
        } else {
            /* A partial line may have reached the collector; the spool gets the
             * whole batch, and the collector de-duplicates by (run, seq). */
            set_sink_error("write", aw_opts.sink);
            give_up_connection();
        }
    }
    if (where == TO_NOWHERE && spool_write(p, n) == 0)
        where = TO_SPOOL;
    role_lock();
    if (where == TO_NOWHERE) {
        R.c.lost += records;
        R.c.sink_state = 3;
    } else {
        R.c.written += records;
        if (where == TO_SPOOL) {
            R.c.spooled += records;
            R.c.sink_state = 2;
        } else {
            R.c.sink_state = 1;
        }
    }
    role_unlock();
    return where;
}

/* ---- acknowledgements ----------------------------------------------------------
 * A record the kernel accepted has not necessarily been stored: the collector may
 * die with it in its socket buffer or in an uncommitted batch. So every batch sent
 * is kept (the "unacked" buffer) until the collector confirms it stored everything
 * up to the batch's last seq. The writer asks for that now and then (every
 * ACK_EVERY_BYTES or ACK_EVERY_NS), at once after an indicator, and at exit. If the
 * connection fails, what was never confirmed goes to the spool file ahead of the
 * new records, and is replayed from there; the collector drops what it already has. */



/* Take the acks the collector has sent so far (waiting up to timeout_ms for one);
 * -1 when the connection is gone. */
static int read_acks(int timeout_ms) {
    struct pollfd pfd = {S.fd, POLLIN, 0};
    int r = poll(&pfd, 1, timeout_ms);
    if (r < 0)
        return errno == EINTR ? 0 : -1;
    if (r == 0)
        return 0;
    if (ack_pending_len >= sizeof ack_pending - 1)
        ack_pending_len = 0; /* not an ack stream: discard */
    ssize_t got =
        recv(S.fd, ack_pending + ack_pending_len, sizeof ack_pending - 1 - ack_pending_len, 0);
    if (got < 0)
        return errno == EINTR || errno == EAGAIN ? 0 : -1;
    if (got == 0)
        return -1;
    ack_pending_len += (size_t)got;
    ack_pending[ack_pending_len] = '\0';
    char *line = ack_pending, *nl;
    while ((nl = strchr(line, '\n')) != NULL) {
        *nl = '\0';
        const char *at = strstr(line, "\"ack\":");
        if (at) {
            uint64_t v = strtoull(at + 6, NULL, 10);
            if (v > acked_seq)
                acked_seq = v;
        }
        line = nl + 1;
    }
    ack_pending_len = (size_t)(ack_pending + ack_pending_len - line);
    memmove(ack_pending, line, ack_pending_len);
    if (acked_seq >= unacked_seq)
        unacked.len = 0;
    return 0;
}

static int ask_ack(uint64_t seq) {
    char ctl[64];
    int n = snprintf(ctl, sizeof ctl, "{\"ctl\":\"ack\",\"seq\":%llu}\n", (unsigned long long)seq);
    if (write_all(S.fd, ctl, (size_t)n, 1) < 0)
        return -1;
    ack_asked_seq = seq;
    ack_asked_ns = monotonic_ns();
    return 0;
}

/* The connection is gone or stuck: what it never confirmed goes to the spool. */
static void give_up_connection(void) {
    close_sink();
    if (unacked.len)
        spool_write(unacked.p, unacked.len);
    unacked.len = 0;
    set_sink_state(2);
}

/* Ask for an ack of everything sent so far and wait for it (bounded by
 * flush_timeout). 0 when confirmed. */
static int await_ack(uint64_t seq) {
    if (S.fd < 0)
        return -1;
    if (ask_ack(seq) < 0) {
        give_up_connection();
        return -1;
    }
    long long deadline = monotonic_ns() + (long long)(aw_opts.flush_timeout * 1e9);
    while (acked_seq < seq) {
        long long left = deadline - monotonic_ns();
        if (left <= 0)
            return -1;
        if (read_acks((int)(left / 1000000LL) + 1) < 0) {
            give_up_connection();
            return -1;
        }
    }
    return 0;
}

/* After a batch went out on the socket: keep it until confirmed, ask now and then,
 * and never keep more than UNACKED_MAX. */
static void track_sent(const char *p, size_t n) {
    if (S.fd < 0 || !is_unix_sink())
        return;
    if (read_acks(0) < 0) {
        give_up_connection();
        return;
    }
    aw_buf_put(&unacked, p, n);
    unacked_seq = S.seq;
    if (unacked.oom) {
        unacked.len = 0; /* cannot keep a copy: spool this batch instead */
        unacked.oom = 0;
        spool_write(p, n);
        return;
    }
    if (unacked.len >= UNACKED_MAX) {
        if (await_ack(S.seq) < 0 && S.fd >= 0)
            give_up_connection(); /* the collector is stuck */
        return;
    }
    if (ack_asked_seq < S.seq &&
        (unacked.len >= ACK_EVERY_BYTES || monotonic_ns() - ack_asked_ns >= ACK_EVERY_NS) &&
        ask_ack(S.seq) < 0)
        give_up_connection();
}

/* ---- writer thread ---------------------------------------------------------- */

static void out_record_head(aw_buf *out) {
    size_t plen;
    const char *prefix = aw_proc_prefix(&plen);
    aw_buf_puts(out, "{\"v\":1,\"seq\":");
    aw_buf_uint(out, ++S.seq);
    aw_buf_put(out, prefix, plen);
    aw_buf_putc(out, ',');
}

static void out_stamp(aw_buf *out, const aw_stamp *s) {
    aw_buf_puts(out, "\"ts\":");
    aw_buf_int(out, s->ts);
    aw_buf_puts(out, ",\"tid\":");
    aw_buf_int(out, s->tid);
    aw_buf_puts(out, ",\"interp\":");
    aw_buf_int(out, s->interp);
    aw_buf_putc(out, ',');
}

static void out_meta_record(aw_buf *out, const char *kind, const char *key1, uint64_t v1,
                            const char *key2, uint64_t v2) {
    out_record_head(out);
    aw_buf_puts(out, "\"ts\":");
    aw_buf_int(out, aw_now_ns());
    aw_buf_puts(out, ",\"kind\":\"");
    aw_buf_puts(out, kind);
    aw_buf_puts(out, "\",\"");
    aw_buf_puts(out, key1);
    aw_buf_puts(out, "\":");
    aw_buf_uint(out, v1);
    aw_buf_puts(out, ",\"");
    aw_buf_puts(out, key2);
    aw_buf_puts(out, "\":");
    aw_buf_uint(out, v2);
    aw_buf_puts(out, "}\n");
}

/* ---- the writer role -----------------------------------------------------------
 * One thread at a time formats records and writes the sink: the writer thread, or,
 * while the writer thread is parked (asleep until woken, or dozing between passes),
 * a thread that needs its records out before it goes on: the thread that
 * starts the recorder (the start record), a flush indicator, the exit drain. That
 * thread takes the role (R.role_taken) and serves the ring itself: waking the writer
 * and waiting to be woken in turn cost two cross-thread hand-offs, tens of
 * microseconds of wall clock each, several times in every process
 * (docs/performance.md, "Serving from the waiting thread"). The writer checks
 * role_taken after every wait, under the mutex, before it serves; the role counts
 * as a held lock, so a SIGTERM that lands meanwhile is deferred to its release. */

static uint64_t total_dropped; /* the role's holder only */

/* With R.mu held: there is something to serve. */
static int pending(void) { return R.head != R.tail || R.dropped_pending; }

/* With R.mu held: the writer thread waits while another thread holds the role. */
static void await_role(void) {
    while (R.role_taken)
        pthread_cond_wait(&R.flushed, &R.mu);
}

/* Serve what is queued now: format, write, track; then `last`, when given, as one
 * more record, acknowledged (the exit record the writer writes for SIGTERM). Called
 * and returns with R.mu held (counted in *held); the I/O runs without it. */
static void serve(aw_buf *out, int heartbeat, const aw_buf *last, int *held) {
    role_held = held;
    uint64_t head = R.head, tail = R.tail, ticket = R.put_ticket;
    uint64_t dropped = R.dropped_pending;
    /* A ticket, not a flag: a request already served cannot make a later batch wait
     * for an ack nobody waits for. */
    int want_ack = R.flush_ticket > R.done_ticket || last != NULL;
    R.dropped_pending = 0;
    unlock_counted(&R.mu, held);

    uint64_t records = 0;
    while (tail < head) {
        uint32_t len;
        ring_copy_out(tail, &len, sizeof len);
        uint64_t body = tail + sizeof len, end = body + (len & ~STAMPED_BIT);
        out_record_head(out);
        if (len & STAMPED_BIT) { /* aw_ring_put checked that the stamp is there */
            aw_stamp stamp;
            ring_copy_out(body, &stamp, sizeof stamp);
            out_stamp(out, &stamp);
            body += sizeof stamp;
        }
        char *dst = aw_buf_extend(out, (size_t)(end - body));
        if (dst)
            ring_copy_out(body, dst, (size_t)(end - body));
        aw_buf_put(out, "}\n", 2);
        tail = end;
        records++;
        if (out->len >= BATCH_BYTES && tail < head) {
            if (sink_write(out->p, out->len, records) == TO_SINK)
                track_sent(out->p, out->len);
            out->len = 0;
            records = 0;
            lock_counted(&R.mu, held);
            R.tail = tail;
            pthread_cond_broadcast(&R.not_full);
            unlock_counted(&R.mu, held);
        }
    }
    if (dropped) {
        total_dropped += dropped;
        out_meta_record(out, "drop", "dropped", dropped, "total_dropped", total_dropped);
        records++;
    }
    if (heartbeat) {
        lock_counted(&R.mu, held);
        uint64_t ack_timeouts = R.c.ack_timeouts;
        R.c.heartbeats++;
        unlock_counted(&R.mu, held);
        out_meta_record(out, "heartbeat", "pending", 0, "ack_timeouts", ack_timeouts);
        records++;
    }
    if (last) {
        out_record_head(out);
        aw_buf_put(out, last->p, last->len);
        aw_buf_put(out, "}\n", 2);
        records++;
    }
    if (out->len) {
        int where = sink_write(out->p, out->len, records);
        if (where == TO_SINK)
            track_sent(out->p, out->len);
        if (want_ack && where == TO_SINK && is_unix_sink() && S.fd >= 0 && await_ack(S.seq) < 0) {
            /* Not confirmed in time: keep a copy on disk too (the collector drops
             * duplicates), and count the delay. */
            if (unacked.len)
                spool_write(unacked.p, unacked.len);
            unacked.len = 0;
            lock_counted(&R.mu, held);
            R.c.ack_timeouts++;
            unlock_counted(&R.mu, held);
        }
    }
    out->len = 0;
    out->oom = 0;

    lock_counted(&R.mu, held);
    R.tail = tail;
    R.done_ticket = ticket;
    pthread_cond_broadcast(&R.not_full);
    pthread_cond_broadcast(&R.flushed);
}

/* Leaving: everything sent must be confirmed, or be on disk. With R.mu held. */
static void leave(int *held) {
    role_held = held;
    unlock_counted(&R.mu, held);
    if (unacked.len && S.fd >= 0 && await_ack(unacked_seq) < 0 && unacked.len) {
        spool_write(unacked.p, unacked.len);
        unacked.len = 0;
    }
    lock_counted(&R.mu, held);
    R.writer_done = 1;
    pthread_cond_broadcast(&R.flushed);
    pthread_cond_broadcast(&R.stopped);
}

/* With R.mu held: take the role if the writer thread is parked or not started yet. */
static int take_role(int *held) {
    if (R.role_taken || R.writer_done ||
        (atomic_load(&R.writer_running) && !R.writer_waiting))
        return 0;
    R.role_taken = 1;
    count_in(held);
    return 1;
}

/* With R.mu held; returns without it. What arrived meanwhile is the writer's. */
static void give_role(int *held) {
    R.role_taken = 0;
    pthread_cond_broadcast(&R.flushed);
    /* Stopped (writer_done): the process is leaving, and the parked writer with it. */
    if (!R.dozing && !R.writer_done && pending())
        wake_writer();
    unlock_counted(&R.mu, held);
    count_out(held);
}

/* The writer thread waits (R.mu held, counted in *held) until woken or for
 * `seconds`. Dozing, only what cannot wait for its next pass wakes it: a full ring,
 * the exit. ETIMEDOUT, or 0 when woken (possibly by a stale post: callers look). */
static int park(double seconds, int dozing, int *held) {
    R.writer_waiting = 1;
    R.dozing = dozing;
    unlock_counted(&R.mu, held);
    int rc = sem_wait_for(&R.wake, seconds);
    lock_counted(&R.mu, held);
    R.writer_waiting = 0;
    R.dozing = 0;
    if (R.wake_posted) {
        R.wake_posted = 0;
        if (rc != 0)
            sem_trywait(&R.wake); /* posted after the time-out */
    }
    return rc == 0 ? 0 : ETIMEDOUT;
}

/* SIGTERM asked for the exit record (aw_ring_term). With R.mu held; 1 when this
 * wrote it and stopped, 0 when the writer carries on: another exit path is writing
 * it (and will stop the writer) or nothing is recorded. The writer cannot put it in
 * the ring: with the ring full it would wait for itself. */
static int write_term_exit(aw_buf *out, int *held) {
    switch (aw_proc_claim_exit()) {
    case AW_EXIT_TAKEN:
        return 0;
    case AW_EXIT_NONE:
        sem_post(&term_done);
        return 0;
    }
    /* Records of files read as code come first: serve while the hasher finishes
     * (it queues into the ring), as long as the handler waits. */
    long long until = monotonic_ns() + (long long)(aw_opts.flush_timeout * 1e9);
    for (;;) {
        await_role();
        if (pending())
            serve(out, 0, NULL, held);
        unlock_counted(&R.mu, held); /* the hasher takes its lock before R.mu */
        int hashing = aw_hasher_unfinished() != 0;
        lock_counted(&R.mu, held);
        if (!hashing || monotonic_ns() >= until)
            break;
        park(NAP_S, 1, held);
    }
    char storage[256];
    aw_buf body;
    aw_buf_init(&body, storage, sizeof storage);
    aw_proc_exit_body(&body, "signal", 0, atomic_load(&term_sig));
    R.stop = 1;
    await_role();
    serve(out, 0, &body, held);
    aw_buf_free(&body);
    leave(held);
    return 1;
}

static void *writer_main(void *arg) {
    (void)arg;
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL); /* signals are the program's business */

    aw_buf out;
    aw_buf_init(&out, out_storage, sizeof out_storage);
    int own_locks = 0, *held = &own_locks; /* not locks_held: see role_held */

    lock_counted(&R.mu, held);
    int naps = NAPS, term_taken = 0; /* start-up is busy: begin awake */
    for (;;) {
        if (!term_taken && atomic_load(&term_sig)) {
            term_taken = 1;
            if (write_term_exit(&out, held))
                break;
        }
        int heartbeat = 0, slept = 0;
        if (!pending() && !R.stop && !R.writer_done) {
            if (naps > 0) {
                /* Awake: come back for what the program records meanwhile rather than
                 * have it wake us (tens of microseconds of its time in a VM). */
                naps--;
                park(NAP_S, 1, held);
            } else {
                heartbeat = park(aw_opts.heartbeat, 0, held) == ETIMEDOUT && !pending();
                slept = 1;
                /* Woken by the first record of a burst: let the burst gather. A record
                 * waited for is served by its waiter meanwhile (take_role). */
                if (!heartbeat && !R.stop && !R.writer_done && !atomic_load(&term_sig))
                    park(NAP_S, 1, held);
            }
        }
        await_role();
        if (R.writer_done) /* the exit drain was served by the thread that stopped us */
            break;
        if (!pending() && !heartbeat) {
            if (R.stop) {
                leave(held);
                break;
            }
            continue;
        }
        serve(&out, heartbeat, NULL, held);
        /* Found while awake: the program is busy, stay awake. A lone record woke us:
         * one nap, then sleep (a record every few milliseconds would otherwise cost
         * the writer NAPS wake-ups each, for nothing). */
        naps = heartbeat ? 0 : slept ? 1 : NAPS;
    }
    unlock_counted(&R.mu, held);
    aw_buf_free(&out);
    /* A SIGTERM handler waits for this when it asked: tell it we are done, or, if it
     * asks from now on, that nobody will answer (aw_ring_term). */
    atomic_store(&writer_gone, 1);
    if (atomic_load(&term_sig))
        sem_post(&term_done);
    return NULL;
}

/* Serve from this thread, the role held, until the record of ticket is out (or the
 * ring is empty): what other threads queue meanwhile is the writer's. */
static void serve_until(uint64_t ticket, int *held) {
    char storage[8192];
    aw_buf out;
    aw_buf_init(&out, storage, sizeof storage);
    while (R.done_ticket < ticket && pending())
        serve(&out, 0, NULL, held);
    aw_buf_free(&out);
}

int aw_writer_ensure(void) {
    if (atomic_load_explicit(&R.writer_running, memory_order_acquire))
        return 0;
    aw_lock(&start_mu);
    int rc = 0;
    if (!atomic_load(&R.writer_running)) {
        aw_proc_prepare_run();
        /* No writer thread yet, and start_mu held: the role is this thread's. */
        int *held = &locks_held;
        lock_counted(&R.mu, held);
        R.stop = 0;
        R.writer_done = 0;
        take_role(held);
        role_held = held;
        unlock_counted(&R.mu, held);
        if (sink_open() < 0 && spool_open() < 0)
            set_sink_state(3);
        /* The collector learns of the process before any of its code runs: a process
         * killed at once (SIGKILL) is still on record, as missing. This thread sends
         * the start record before the writer exists; the kernel has it when this
         * returns (its ack is asked for with the next batch, and what is never
         * confirmed is spooled as usual). */
        aw_proc_start_record();
        lock_counted(&R.mu, held);
        serve_until(UINT64_MAX, held);
        give_role(held);
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setstacksize(&attr, 256 << 10);
        rc = pthread_create(&R.writer, &attr, writer_main, NULL);
        pthread_attr_destroy(&attr);
        if (rc == 0) {
            pthread_detach(R.writer);
            atomic_store_explicit(&R.writer_running, 1, memory_order_release);
        }
    }
    aw_unlock(&start_mu);
    return rc == 0 ? 0 : -1;
}

/* When the writer is parked, serve the records up to ticket from this thread (see
 * "the writer role"), without the GIL when allowed: an ack may take up to
 * flush_timeout. 1 when this thread served them or they were out already, with
 * *out saying whether they are; 0 when the writer or another holder of the role
 * will. */
static int serve_here(uint64_t ticket, int may_release_gil, int *out) {
    int *held = &locks_held;
    lock_counted(&R.mu, held);
    if (R.done_ticket >= ticket || !take_role(held)) {
        *out = R.done_ticket >= ticket;
        unlock_counted(&R.mu, held);
        return *out;
    }
    unlock_counted(&R.mu, held);
    PyThreadState *saved = maybe_release_gil(may_release_gil);
    lock_counted(&R.mu, held);
    serve_until(ticket, held);
    *out = R.done_ticket >= ticket;
    give_role(held);
    if (saved)
        PyEval_RestoreThread(saved);
    return 1;
}

int aw_ring_flush(uint64_t ticket, double timeout, int may_release_gil) {
    if (ticket == 0 || !atomic_load(&R.writer_running))
        return ticket == 0 ? 0 : -1;
    int out;
    if (serve_here(ticket, may_release_gil, &out))
        return out ? 0 : -1;
    PyThreadState *saved = maybe_release_gil(may_release_gil);
    struct timespec dl;
    deadline_in(&dl, timeout);
    int rc = 0;
    aw_lock(&R.mu);
    /* The writer is busy, or someone else serves: the record asked for its ack when
     * it was queued (AW_PUT_FLUSH), so only the wait is left. */
    while (R.done_ticket < ticket && !R.writer_done) {
        if (pthread_cond_timedwait(&R.flushed, &R.mu, &dl) == ETIMEDOUT) {
            rc = -1;
            break;
        }
    }
    if (R.done_ticket < ticket)
        rc = -1;
    aw_unlock(&R.mu);
    if (saved)
        PyEval_RestoreThread(saved);
    return rc;
}

void aw_ring_send(uint64_t ticket) {
    int out;
    /* Not served here: the writer is busy, and its next pass takes the records. */
    if (ticket != 0 && atomic_load(&R.writer_running))
        serve_here(ticket, 1, &out);
}

/* Wait for the writer to drain everything and stop; or, when it is parked, drain
 * from here and stop it. A slow collector is waited for as long as records keep
 * leaving (up to STOP_MAX_S); timeout is how long no progress at all is tolerated. */
#define STOP_MAX_S 120.0

void aw_writer_stop(double timeout) {
    if (!atomic_load(&R.writer_running))
        return;
    int *held = &locks_held;
    lock_counted(&R.mu, held);
    R.stop = 1;
    if (take_role(held)) {
        serve_until(UINT64_MAX, held);
        leave(held);
        give_role(held);
        return;
    }
    wake_writer();
    struct timespec dl, hard;
    deadline_in(&dl, timeout);
    deadline_in(&hard, STOP_MAX_S);
    uint64_t tail = R.tail;
    while (!R.writer_done) {
        if (pthread_cond_timedwait(&R.stopped, &R.mu, &dl) != ETIMEDOUT)
            continue;
        struct timespec now;
        clock_gettime(CLOCK_REALTIME, &now);
        if (R.tail == tail || now.tv_sec >= hard.tv_sec)
            break; /* stuck, or waited long enough */
        tail = R.tail;
        deadline_in(&dl, timeout);
    }
    unlock_counted(&R.mu, held);
}

void aw_ring_term(int sig, double seconds) {
    if (!atomic_load(&R.writer_running))
        return;
    atomic_store(&term_sig, sig);
    /* A writer that leaves sets writer_gone, then looks at term_sig: it posts
     * term_done, or we see it gone here and do not wait. */
    if (atomic_load(&writer_gone))
        return;
    sem_post(&R.wake);
    sem_wait_for(&term_done, seconds);
}

/* ---- fork ---------------------------------------------------------------------
 * prepare: hold the ring mutex so the child gets a consistent ring; the writer
 * thread does not exist in the child, so the child drops the parent's queued
 * records (the parent still writes them), closes the parent's sink and starts its
 * own writer lazily, with a new run id, at its first record. */

static void atfork_prepare(void) {
    aw_hasher_atfork_prepare();
    aw_table_lock();
    aw_lock(&start_mu);
    aw_lock(&R.mu);
}

static void atfork_parent(void) {
    aw_table_unlock();
    aw_unlock(&R.mu);
    aw_unlock(&start_mu);
    aw_hasher_atfork_parent();
}

static void atfork_child(void) {
    aw_hasher_atfork_child();
    pthread_mutex_unlock(&R.mu);
    pthread_mutex_unlock(&start_mu);
    locks_held = 0;
    atomic_store(&threads_locking, 0);
    aw_table_unlock();
    sem_init(&R.wake, 0, 0);
    sem_init(&term_done, 0, 0);
    atomic_store(&term_sig, 0);
    atomic_store(&writer_gone, 0);
    pthread_cond_init(&R.not_full, NULL);
    pthread_cond_init(&R.flushed, NULL);
    pthread_cond_init(&R.stopped, NULL);
    R.head = R.tail = 0;
    R.put_ticket = R.done_ticket = R.flush_ticket = 0;
    R.dropped_pending = 0;
    R.writer_waiting = R.dozing = R.wake_posted = R.stop = R.writer_done = R.role_taken = 0;
    total_dropped = 0;
    memset(&R.c, 0, sizeof R.c);
    atomic_store(&R.writer_running, 0);
    if (S.fd >= 0)
        close(S.fd);
    if (S.spool_fd >= 0)
        close(S.spool_fd);
    S.fd = S.spool_fd = -1;
    S.seq = 0;
    /* The parent's unconfirmed batches are the parent's to deliver. The buffer was
     * allocated before fork(): forget it rather than free it (free() may not be
     * safe in a child that is about to exec). */
    aw_buf_init(&unacked, unacked_storage, sizeof unacked_storage);
    unacked_seq = acked_seq = ack_asked_seq = 0;
    ack_pending_len = 0;
    aw_proc_after_fork_child();
}

void aw_ring_register_atfork(void) { pthread_atfork(atfork_prepare, atfork_parent, atfork_child); }
