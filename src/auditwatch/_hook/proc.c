/* Process identity and lifecycle: run ids, the start and exit records, exit paths
 * (normal exit, os._exit, SIGTERM) and the child side of fork(). */
#include "aw.h"

#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

aw_process aw_proc;

static char prefix[256];
static size_t prefix_len;
static __thread pid_t tid_cache;

long long aw_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

pid_t aw_gettid(void) {
    if (tid_cache == 0)
        tid_cache = (pid_t)syscall(SYS_gettid);
    return tid_cache;
}

const char *aw_proc_prefix(size_t *len) {
    *len = prefix_len;
    return prefix;
}

static void new_run_id(char out[33]) {
    unsigned char raw[16];
    size_t got = getrandom(raw, sizeof raw, GRND_NONBLOCK) == (ssize_t)sizeof raw ? sizeof raw : 0;
    int fd = got < sizeof raw ? open("/dev/urandom", O_RDONLY | O_CLOEXEC) : -1;
    if (fd >= 0) {
        while (got < sizeof raw) {
            ssize_t r = read(fd, raw + got, sizeof raw - got);
            if (r <= 0 && errno != EINTR)
                break;
            if (r > 0)
                got += (size_t)r;
        }
        close(fd);
    }
    if (got < sizeof raw) {
        /* No entropy source: still unique enough to link records, not secret. */
        unsigned long long x = (unsigned long long)aw_now_ns() ^ ((unsigned long long)getpid() << 32);
        for (size_t i = 0; i < sizeof raw; i++) {
            x = x * 6364136223846793005ULL + 1442695040888963407ULL;
            raw[i] = (unsigned char)(x >> 56);
        }
    }
    static const char X[] = "0123456789abcdef";
    for (size_t i = 0; i < sizeof raw; i++) {
        out[2 * i] = X[raw[i] >> 4];
        out[2 * i + 1] = X[raw[i] & 15];
    }
    out[32] = '\0';
}

static void build_prefix(void) {
    if (aw_proc.parent_run[0])
        prefix_len = (size_t)snprintf(prefix, sizeof prefix,
                                      ",\"run\":\"%s\",\"parent_run\":\"%s\",\"pid\":%d,\"installed\":\"%s\"",
                                      aw_proc.run, aw_proc.parent_run, (int)aw_proc.pid,
                                      aw_proc.installed);
    else
        prefix_len = (size_t)snprintf(prefix, sizeof prefix,
                                      ",\"run\":\"%s\",\"parent_run\":null,\"pid\":%d,\"installed\":\"%s\"",
                                      aw_proc.run, (int)aw_proc.pid, aw_proc.installed);
}

/* Children inherit the link to this run through the environment. The pid says that
 * this process has the recorder: _auditwatch_boot (auditwatch.pth) loads it in a
 * subinterpreter, or after the launcher, whatever else asks for auditing there. */
static void export_run(void) {
    char pid[24];
    snprintf(pid, sizeof pid, "%d", (int)getpid());
    setenv("AUDITWATCH_PARENT_RUN", aw_proc.run, 1);
    setenv("AUDITWATCH_LOADED_PID", pid, 1);
}

/* ---- start record -------------------------------------------------------------- */

static void put_file_string(aw_buf *b, const char *path, int nul_list) {
    char buf[16384];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    ssize_t n = fd >= 0 ? read(fd, buf, sizeof buf) : -1;
    if (fd >= 0)
        close(fd);
    if (n < 0) {
        aw_buf_puts(b, nul_list ? "[]" : "null");
        return;
    }
    if (!nul_list) {
        aw_buf_cstr(b, buf, (size_t)n);
        return;
    }
    aw_buf_putc(b, '[');
    ssize_t start = 0;
    int first = 1;
    for (ssize_t i = 0; i < n; i++) {
        if (buf[i] == '\0') {
            if (!first)
                aw_buf_putc(b, ',');
            aw_buf_cstr(b, buf + start, (size_t)(i - start));
            first = 0;
            start = i + 1;
        }
    }
    aw_buf_putc(b, ']');
}

/* The name of uid: /etc/passwd first, then the system's user database (NSS). Asking
 * NSS first costs some 55 us in every process (it looks for nscd's socket twice and
 * reads nsswitch.conf before it reads the same file); /etc/passwd alone about 10. */
static void put_user_name(aw_buf *b, uid_t uid) {
    struct passwd pw, *res = NULL;
    char pwbuf[4096];
#ifdef __GLIBC__
    FILE *f = fopen("/etc/passwd", "re");
    if (f != NULL) {
        /* res is NULL again at the end of the file (and on a line too long) */
        while (fgetpwent_r(f, &pw, pwbuf, sizeof pwbuf, &res) == 0 && res != NULL) {
            /* "+name" and "-name" lines are NIS directives, not users */
            if (pw.pw_uid == uid && pw.pw_name[0] != '+' && pw.pw_name[0] != '-')
                break;
        }
        fclose(f);
    }
#endif
    if (res == NULL)
        getpwuid_r(uid, &pw, pwbuf, sizeof pwbuf, &res); /* res stays NULL on failure */
    if (res != NULL && pw.pw_name)
        aw_buf_cstr(b, pw.pw_name, strlen(pw.pw_name));
    else
        aw_buf_puts(b, "null");
}

void aw_proc_start_record(void) {
    char storage[4096];
    aw_buf b;
    aw_buf_init(&b, storage, sizeof storage);
    aw_buf_puts(&b, "\"ts\":");
    aw_buf_int(&b, aw_now_ns());
    aw_buf_puts(&b, ",\"kind\":\"start\",\"proc\":{\"exe\":");
    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe);
    if (n >= 0)
        aw_buf_cstr(&b, exe, (size_t)n);
    else
        aw_buf_puts(&b, "null");
    aw_buf_puts(&b, ",\"argv\":");
    put_file_string(&b, "/proc/self/cmdline", 1);
    aw_buf_puts(&b, ",\"cwd\":");
    char cwd[4096];
    if (getcwd(cwd, sizeof cwd))
        aw_buf_cstr(&b, cwd, strlen(cwd));
    else
        aw_buf_puts(&b, "null");
    uid_t uid = getuid();
    aw_buf_puts(&b, ",\"uid\":");
    aw_buf_int(&b, (long long)uid);
    aw_buf_puts(&b, ",\"gid\":");
    aw_buf_int(&b, (long long)getgid());
    aw_buf_puts(&b, ",\"user\":");
    put_user_name(&b, uid);
    aw_buf_puts(&b, ",\"ppid\":");
    aw_buf_int(&b, (long long)getppid());
    aw_buf_puts(&b, ",\"python\":");
    const char *ver = Py_GetVersion();
    aw_buf_cstr(&b, ver, strlen(ver));
    aw_buf_puts(&b, ",\"fork\":");
    aw_buf_puts(&b, aw_proc.forked ? "true" : "false");
    struct utsname u;
    aw_buf_puts(&b, ",\"host\":");
    if (uname(&u) == 0)
        aw_buf_cstr(&b, u.nodename, strlen(u.nodename));
    else
        aw_buf_puts(&b, "null");
    aw_buf_putc(&b, '}');
    if (!b.oom)
        aw_ring_put(b.p, b.len, AW_PUT_KEEP); /* sent at once by aw_writer_ensure */
    aw_buf_free(&b);
}

/* ---- exit paths ---------------------------------------------------------------- */

static atomic_int exit_written;

int aw_proc_claim_exit(void) {
    if (!atomic_load(&aw_proc.active))
        return AW_EXIT_NONE;
    return atomic_exchange(&exit_written, 1) ? AW_EXIT_TAKEN : AW_EXIT_OURS;
}

void aw_proc_exit_body(aw_buf *b, const char *how, int code, int sig) {
    aw_buf_puts(b, "\"ts\":");
    aw_buf_int(b, aw_now_ns());
    aw_buf_puts(b, ",\"kind\":\"exit\",\"status\":{\"how\":\"");
    aw_buf_puts(b, how);
    if (sig) {
        aw_buf_puts(b, "\",\"signal\":");
        aw_buf_int(b, sig);
    } else {
        aw_buf_puts(b, "\",\"code\":");
        aw_buf_int(b, code);
    }
    aw_buf_puts(b, "}");
}

void aw_proc_exit_record(const char *how, int code, int sig) {
    switch (aw_proc_claim_exit()) {
    case AW_EXIT_NONE:
        return;
    case AW_EXIT_TAKEN:
        /* Another exit path got here first (os._exit racing SIGTERM, as when a pool
         * terminates workers that are finishing): let its record drain before
         * this path lets the process die. */
        aw_writer_stop(aw_opts.flush_timeout + 3.0);
        return;
    }
    aw_hasher_drain(); /* records of files read as code come before the exit record */
    aw_writer_ensure();
    char storage[256];
    aw_buf b;
    aw_buf_init(&b, storage, sizeof storage);
    aw_proc_exit_body(&b, how, code, sig);
    aw_ring_put(b.p, b.len, AW_PUT_KEEP);
    aw_buf_free(&b);
    aw_writer_stop(aw_opts.flush_timeout + 3.0);
}

static void on_process_exit(int status, void *arg) {
    (void)arg;
    aw_proc_exit_record("exit", status, 0);
}

/* SIGTERM: the handler asks the writer thread for the exit record and the drain
 * (aw_ring_term: it only stores and posts, async-signal-safe) and waits for them,
 * then restores the default action and the signal terminates the process as it
 * would have. Installed only when SIGTERM has its default action; a program that
 * installs its own handler replaces ours and exits through its own path. The writer
 * does it, not a thread of its own: a second thread cost every process about
 * 0.1 ms of start-up (docs/performance.md, "One thread").
 *
 * The exit path needs the ring's locks. When the signal lands on a thread that
 * holds one (os._exit writing its exit record as a pool terminates its workers),
 * waiting in the handler would wait on itself: the handler then only marks the
 * termination as deferred, and the thread finishes it as it releases its last lock
 * (aw_proc_deferred_term), outside the handler. */
static int fork_pending;
static __thread volatile sig_atomic_t term_deferred;
/* Some thread has a deferred termination: lets aw_unlock skip the thread-local
 * check (a TLS lookup in another unit) on every record. Lock-free, so the handler
 * may set it. */
atomic_int aw_term_pending;

/* Drain through the writer, then die of the signal. Async-signal-safe. */
static void terminate_by(int sig) {
    aw_ring_term(sig, aw_opts.flush_timeout + 1.0);
    signal(sig, SIG_DFL);
    raise(sig); /* delivered when the handler returns, or at once outside it */
}

static void on_sigterm(int sig) {
    int saved = errno;
    if (aw_ring_locks_held()) {
        term_deferred = sig;
        atomic_store(&aw_term_pending, 1);
    } else
        terminate_by(sig);
    errno = saved;
}

int aw_proc_term_deferred(void) { return term_deferred != 0; }

void aw_proc_deferred_term(void) {
    int sig = term_deferred;
    if (sig) {
        term_deferred = 0;
        terminate_by(sig);
    }
}

static void install_sigterm(void) {
    struct sigaction old;
    if (sigaction(SIGTERM, NULL, &old) != 0 || old.sa_handler != SIG_DFL ||
        (old.sa_flags & SA_SIGINFO))
        return;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigterm;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGTERM, &sa, NULL);
}

/* ---- install and fork ------------------------------------------------------------ */

int aw_proc_install(const char *installed, char *err, size_t errlen) {
    aw_proc.installed = installed;
    aw_proc.pid = getpid();
    new_run_id(aw_proc.run);
    const char *parent = getenv("AUDITWATCH_PARENT_RUN");
    aw_proc.parent_run[0] = '\0';
    if (parent && strlen(parent) == 32 && strspn(parent, "0123456789abcdef") == 32)
        memcpy(aw_proc.parent_run, parent, 33);
    build_prefix();
    export_run();
    if (aw_ring_init(aw_opts.ring_bytes) < 0) {
        snprintf(err, errlen, "cannot allocate the %zu-byte ring", aw_opts.ring_bytes);
        return -1;
    }
    aw_ring_register_atfork();
    atomic_store(&aw_proc.active, 1);
    if (aw_opts.sigterm)
        install_sigterm();
    if (aw_writer_ensure() < 0) {
        snprintf(err, errlen, "cannot start the writer thread");
        return -1;
    }
    on_exit(on_process_exit, NULL);
    return 0;
}

/* Runs in the child right after fork(), often in a child that is about to exec: it
 * must not allocate, start threads or touch the environment (an exec'd program
 * would inherit a run id that never recorded anything). The child's identity is
 * made at its first record, by aw_proc_prepare_run(). */
void aw_proc_after_fork_child(void) {
    tid_cache = 0;
    term_deferred = 0;
    atomic_store(&aw_term_pending, 0);
    fork_pending = 1;
    atomic_store(&exit_written, 0);
}

void aw_proc_prepare_run(void) {
    if (fork_pending) {
        fork_pending = 0;
        memcpy(aw_proc.parent_run, aw_proc.run, 33);
        new_run_id(aw_proc.run);
        aw_proc.pid = getpid();
        aw_proc.forked = 1;
        build_prefix();
        export_run();
    }
}
