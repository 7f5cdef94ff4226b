/* The event table: event name -> action (ignore, record, flush, deny).
 *
 * The configuration is a list of "action:glob" entries, first match wins, ending in
 * the defaults. Matching globs on every event would cost too much, so each name is
 * decided once and cached in an open-addressing table that readers probe without a
 * lock (with subinterpreters that own their GIL, two hooks can run at once).
 * Slots are only ever filled, never changed or freed, and a filled slot is published
 * with a release store of its place in the index. When the cache is full (hostile
 * code can invent names with sys.audit), lookups fall back to matching the globs:
 * slower, still right.
 *
 * The index is small and the slots fill in order: a slot's page is first touched by
 * a write. Probing a large table of slots read untouched pages first, which maps the
 * shared zero page, and the insert that followed had the kernel copy it and flush
 * the TLB of every CPU the process ran on: an interprocessor interrupt, tens of
 * microseconds in a virtual machine, a dozen times in a start-up (docs/performance.md,
 * "One thread"). The index's own two pages are written at configure time.
 */
#include "aw.h"

#include <pthread.h>
#include <string.h>

#define MAX_ENTRIES 256
#define INDEX 4096 /* power of two */
#define SLOTS (INDEX / 2)

typedef struct {
    aw_glob glob;
    char *text; /* "deny:os.system", reported as the rule that decided */
    int action;
} entry;

typedef struct {
    const char *name;
    uint32_t hash;
    uint32_t len;
    uint64_t head, tail; /* the words hash_name read: the whole name up to 16 bytes */
    int action;
    const char *rule;
    int ndeny;
    int deny[AW_MAX_DENY]; /* deny rules naming this event (deny.c) */
    char *json;            /* aw_decision.event_json */
} slot;

static entry entries[MAX_ENTRIES];
static int n_entries;
/* 0, or 1 + the slot of a name: published with a release store, once. */
static _Atomic uint16_t index_of[INDEX];
static slot slots[SLOTS];
static int n_slots;
static pthread_mutex_t insert_mu = PTHREAD_MUTEX_INITIALIZER;

/* Events too frequent to be worth a record in the default configuration: each is
 * raised by ordinary library code many times per second (id() in copy/pickle,
 * frame lookups in logging and typing, sleep loops). Documented in docs/config.md. */
static const char DEFAULT_SPEC[] =
    "ignore:builtins.id,"
    "ignore:sys._getframe,"
    "ignore:sys._getframemodulename,"
    "ignore:time.sleep,"
    "flush:sys.addaudithook,"
    "flush:setopencodehook,"
    "flush:code.__new__,"
    "flush:sys.settrace,"
    "flush:sys.setprofile,"
    "flush:sys.monitoring.*,"
    "flush:gc.get_objects,"
    "flush:gc.get_referrers,"
    "flush:gc.get_referents,"
    "flush:ctypes.dlopen,"
    "flush:cpython.PyInterpreterState_New,"
    "flush:os.exec,"
    "flush:os.fork,"
    "flush:cpython._PySys_ClearAuditHooks,"
    "record:*";

const char *aw_table_default_spec(void) { return DEFAULT_SPEC; }

static int parse_action(const char *s, size_t n) {
    static const char *names[] = {"ignore", "record", "flush", "deny"};
    for (int i = 0; i < 4; i++)
        if (strlen(names[i]) == n && memcmp(names[i], s, n) == 0)
            return i;
    return -1;
}

static int add_spec(const char *spec, char *err, size_t errlen) {
    const char *p = spec;
    while (*p) {
        const char *end = strchr(p, ',');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        while (n && (*p == ' ' || *p == '\t'))
            p++, n--;
        while (n && (p[n - 1] == ' ' || p[n - 1] == '\t'))
            n--;
        if (n) {
            const char *colon = memchr(p, ':', n);
            int action = colon ? parse_action(p, (size_t)(colon - p)) : -1;
            if (action < 0 || colon + 1 == p + n) {
                snprintf(err, errlen,
                         "AUDITWATCH_EVENTS: bad event entry '%.*s': expected ACTION:GLOB with ACTION one of "
                         "ignore, record, flush, deny",
                         (int)n, p);
                return -1;
            }
            if (n_entries == MAX_ENTRIES) {
                snprintf(err, errlen, "AUDITWATCH_EVENTS: too many event entries (at most %d)", MAX_ENTRIES);
                return -1;
            }
            entry *e = &entries[n_entries];
            e->text = strndup(p, n);
            char *glob = strndup(colon + 1, (size_t)(p + n - colon - 1));
            if (!e->text || !glob) {
                snprintf(err, errlen, "out of memory");
                return -1;
            }
            e->action = action;
            aw_glob_init(&e->glob, glob);
            n_entries++;
        }
        p = end ? end + 1 : p + n;
    }
    return 0;
}

int aw_table_configure(const char *spec, char *err, size_t errlen) {
    for (int i = 0; i < INDEX; i++) /* see the top of this file */
        atomic_store_explicit(&index_of[i], 0, memory_order_relaxed);
    if (spec && *spec && add_spec(spec, err, errlen) < 0)
        return -1;
    return add_spec(DEFAULT_SPEC, err, errlen);
}

static int match(const char *event, const char **rule) {
    for (int i = 0; i < n_entries; i++) {
        if (aw_glob_match(&entries[i].glob, event)) {
            *rule = entries[i].text;
            return entries[i].action;
        }
    }
    *rule = NULL;
    return AW_RECORD;
}

static char *name_json(const char *event) {
    char storage[512];
    aw_buf b;
    aw_buf_init(&b, storage, sizeof storage);
    aw_format_event_name(&b, event);
    char *out = b.oom ? NULL : strndup(b.p, b.len);
    aw_buf_free(&b);
    return out;
}

static inline uint64_t load64(const char *p) {
    uint64_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline uint64_t load32(const char *p) {
    uint32_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* Every event pays for this lookup, ignored ones included, so the hash reads a
 * name's length and at most its first and last eight bytes (overlapping when it is
 * shorter): about 20 instructions, where FNV-1a over every byte cost 4 to 5 a byte
 * (docs/performance.md, "The event table's hash"). Up to 16 bytes those words are
 * the whole name, so comparing them (and the length) is the exact comparison; a
 * longer name is compared with memcmp as well. Names that share the words and the
 * length only probe further. */
static uint32_t hash_name(const char *s, size_t n, uint64_t *head, uint64_t *tail) {
    uint64_t a, b;
    if (n >= 8) {
        a = load64(s);
        b = load64(s + n - 8);
    } else if (n >= 4) {
        a = load32(s);
        b = load32(s + n - 4);
    } else {
        a = n ? ((uint64_t)(unsigned char)s[0] << 16 | (uint64_t)(unsigned char)s[n / 2] << 8 |
                 (unsigned char)s[n - 1])
              : 0;
        b = 0;
    }
    uint64_t h = (a ^ 0x9E3779B97F4A7C15ull) * 0xBF58476D1CE4E5B9ull;
    h ^= (b ^ n) * 0x94D049BB133111EBull;
    h ^= h >> 31;
    h *= 0xD6E8FEB86659FD93ull;
    *head = a;
    *tail = b;
    return (uint32_t)(h ^ (h >> 32));
}

/* The slot of event (n bytes, hashed to h, a and b by hash_name), or NULL with *at
 * the index cell where it would go. Lock-free: a slot is complete before its cell is
 * published. The index is never more than half full, so an empty cell ends every
 * probe. */
static inline const slot *find(const char *event, size_t n, uint32_t h, uint64_t a, uint64_t b,
                               uint32_t *at) {
    for (uint32_t i = h & (INDEX - 1);; i = (i + 1) & (INDEX - 1)) {
        uint16_t k = atomic_load_explicit(&index_of[i], memory_order_acquire);
        if (k == 0) {
            *at = i;
            return NULL;
        }
        const slot *sl = &slots[k - 1];
        if (sl->hash == h && sl->len == n && sl->head == a && sl->tail == b &&
            (n <= 16 || memcmp(sl->name, event, n) == 0))
            return sl;
    }
}

void aw_table_lookup(const char *event, aw_decision *d) {
    size_t n = strlen(event);
    uint64_t a, b;
    uint32_t h = hash_name(event, n, &a, &b), i;
    const slot *sl = find(event, n, h, a, b, &i);
    if (sl != NULL) {
        d->action = sl->action;
        d->rule = sl->rule;
        d->ndeny = sl->ndeny;
        d->deny = sl->deny;
        d->event_json = sl->json;
        return;
    }
    const char *rule_text;
    int action = match(event, &rule_text);
    d->action = action;
    d->rule = rule_text;
    d->ndeny = aw_deny_candidates(event, d->scratch, AW_MAX_DENY);
    d->deny = d->scratch;
    d->event_json = NULL;
    if (n > 256)
        return; /* not worth a slot: hostile code can invent long names */
    pthread_mutex_lock(&insert_mu);
    /* Look again under the lock: another thread may have inserted it meanwhile. */
    char *copy = n_slots < SLOTS && find(event, n, h, a, b, &i) == NULL ? strdup(event) : NULL;
    if (copy) {
        slot *fill = &slots[n_slots];
        fill->name = copy;
        fill->hash = h;
        fill->len = (uint32_t)n;
        fill->head = a;
        fill->tail = b;
        fill->action = action;
        fill->rule = rule_text;
        fill->ndeny = d->ndeny;
        memcpy(fill->deny, d->scratch, sizeof fill->deny);
        fill->json = name_json(event); /* NULL when out of memory: encoded per record */
        atomic_store_explicit(&index_of[i], (uint16_t)(n_slots + 1), memory_order_release);
        n_slots++;
    }
    pthread_mutex_unlock(&insert_mu);
}

void aw_table_lock(void) { pthread_mutex_lock(&insert_mu); }
void aw_table_unlock(void) { pthread_mutex_unlock(&insert_mu); }
