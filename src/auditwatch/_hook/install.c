/* Installing the recorder: configuration from arguments or the environment, then
 * the hook. Needs no Python objects, so the launcher can call it before
 * Py_Initialize (bootstrap.c) as well as the module after it. */
#include "aw.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static atomic_int installed;

int aw_installed(void) { return atomic_load(&installed); }

/* "key=value;key=value" -> aw_opts / aw_default_limits. */
static int parse_options(const char *spec, char *err, size_t errlen) {
    char *copy = strdup(spec ? spec : "");
    if (!copy) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    int rc = 0;
    char *save = NULL;
    for (char *item = strtok_r(copy, ";", &save); item; item = strtok_r(NULL, ";", &save)) {
        while (*item == ' ')
            item++;
        if (!*item)
            continue;
        char *eq = strchr(item, '=');
        if (!eq) {
            snprintf(err, errlen, "AUDITWATCH_OPTIONS: bad option '%.100s': expected KEY=VALUE", item);
            rc = -1;
            break;
        }
        *eq = '\0';
        const char *key = item, *val = eq + 1;
        char *end = NULL;
        errno = 0;
        double num = strtod(val, &end);
        int numeric = end != val && *end == '\0' && errno == 0;
        if (strcmp(key, "policy") == 0) {
            if (strcmp(val, "wait") == 0)
                aw_opts.policy = AW_POLICY_WAIT;
            else if (strcmp(val, "drop") == 0)
                aw_opts.policy = AW_POLICY_DROP;
            else {
                snprintf(err, errlen, "AUDITWATCH_OPTIONS: policy=%.50s: expected wait or drop", val);
                rc = -1;
                break;
            }
            continue;
        }
        if (strcmp(key, "spool") == 0) {
            if (strlen(val) >= sizeof aw_opts.spool_dir) {
                snprintf(err, errlen, "AUDITWATCH_OPTIONS: spool: path too long");
                rc = -1;
                break;
            }
            strcpy(aw_opts.spool_dir, val);
            continue;
        }
        if (!numeric || num < 0) {
            snprintf(err, errlen, "AUDITWATCH_OPTIONS: %.50s=%.50s: expected a non-negative number", key, val);
            rc = -1;
            break;
        }
        if (strcmp(key, "heartbeat") == 0 && num > 0)
            aw_opts.heartbeat = num;
        else if (strcmp(key, "flush_timeout") == 0)
            aw_opts.flush_timeout = num;
        else if (strcmp(key, "ring") == 0)
            aw_opts.ring_bytes = (size_t)num;
        else if (strcmp(key, "sigterm") == 0)
            aw_opts.sigterm = num != 0;
        else if (strcmp(key, "max_str") == 0 && num >= 16)
            aw_default_limits.max_str = (Py_ssize_t)num;
        else if (strcmp(key, "max_bytes") == 0 && num >= 0)
            aw_default_limits.max_bytes = (Py_ssize_t)num;
        else if (strcmp(key, "max_items") == 0 && num >= 1)
            aw_default_limits.max_items = (Py_ssize_t)num;
        else if (strcmp(key, "max_depth") == 0 && num >= 1 && num <= 32)
            aw_default_limits.max_depth = (int)num;
        else {
            snprintf(err, errlen,
                     "AUDITWATCH_OPTIONS: unknown or out-of-range option '%.50s' (known: policy, spool, heartbeat, "
                     "flush_timeout, ring, sigterm, max_str>=16, max_bytes, max_items>=1, max_depth 1-32)",
                     key);
            rc = -1;
            break;
        }
    }
    free(copy);
    return rc;
}

int aw_install(const char *stage, const char *sink, const char *events, const char *options,
               const char *deny, char *err, size_t errlen) {
    if (atomic_exchange(&installed, 1)) {
        snprintf(err, errlen, "auditwatch is already recording this process (run %s)", aw_proc.run);
        return -2;
    }
    if (!sink)
        sink = getenv("AUDITWATCH_SINK");
    if (!events)
        events = getenv("AUDITWATCH_EVENTS");
    if (!options)
        options = getenv("AUDITWATCH_OPTIONS");
    if (!deny)
        deny = getenv("AUDITWATCH_DENY");
    int rc = -1;
    if (sink && strlen(sink) >= sizeof aw_opts.sink) {
        snprintf(err, errlen, "AUDITWATCH_SINK: path too long");
    } else if (sink && *sink && strncmp(sink, "unix:", 5) != 0 && strncmp(sink, "file:", 5) != 0) {
        snprintf(err, errlen,
                 "AUDITWATCH_SINK '%.200s' is not understood: use unix:/path/to/socket or "
                 "file:/path/to/records.jsonl",
                 sink);
    } else if (parse_options(options, err, errlen) < 0) {
        /* message names the option */
    } else if (aw_table_configure(events, err, errlen) < 0) {
        /* message names the entry */
    } else if (aw_deny_configure(deny, err, errlen) < 0) {
        /* message names the rule */
    } else {
        strcpy(aw_opts.sink, sink ? sink : "");
        rc = aw_proc_install(stage, err, errlen) < 0 ? -2 : 0;
    }
    if (rc < 0) {
        atomic_store(&installed, 0);
        return rc;
    }
    /* Files read as code are on record from here on (the launcher: from before
     * start-up). Set before our audit hook exists, so that its setopencodehook event
     * is not taken for the program's. A program that already set one keeps it
     * (status() then says open_code: False). */
    aw_opencode_install(NULL, err, errlen);
    err[0] = '\0';
    if (PySys_AddAuditHook(aw_audit_hook, NULL) < 0) {
        atomic_store(&aw_proc.active, 0);
        snprintf(err, errlen, "PySys_AddAuditHook failed");
        return -3;
    }
    return 0;
}
