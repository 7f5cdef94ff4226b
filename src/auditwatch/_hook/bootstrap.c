/* Start-up: what auditwatch.pth and the launcher run to switch auditing on.
 *
 * Every audited process pays for this, so it is all in the extension: auditwatch.pth
 * imports `_auditwatch_boot`, which imports `_auditwatch` (one top-level extension,
 * found in site-packages' finder cache) and calls bootstrap(); no module of the
 * auditwatch package is loaded. Importing
 * the package, `runtime` and the extension instead cost three times the
 * instructions of this (docs/performance.md, "Start-up").
 *
 *  - aw_config_read(): PREFIX/auditwatch.conf, "key = value" lines and '#'
 *    comments, written by `auditwatch install`; read the same way by the launcher.
 *  - aw_bootstrap(): decide (AUDITWATCH_SINK, else the config), install the hook,
 *    then aw_finish_interpreter(). A process that cannot be audited warns, and
 *    exits with status 70 when AUDITWATCH_REQUIRED=1 or a config asks for auditing.
 *  - aw_finish_interpreter(): the Python side of an installed recorder, once per
 *    interpreter: os.environ carries the run to children, os._exit leaves an exit
 *    record, a forked child starts its own run.
 *  - auditwatch_preinit_launcher(): exported for the launcher, before Py_Initialize.
 */
#include "aw.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define EX_SOFTWARE 70
#define CONFIG_NAME "auditwatch.conf"

/* ---- the installed config ------------------------------------------------------- */

typedef struct {
    char *sink, *events, *options, *deny, *manifest;
} aw_config;

static void config_free(aw_config *c) {
    free(c->sink), free(c->events), free(c->options), free(c->deny), free(c->manifest);
    memset(c, 0, sizeof *c);
}

static char *trim(char *s) {
    while (*s == ' ' || *s == '\t')
        s++;
    char *end = s + strlen(s);
    while (end > s && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\n' || end[-1] == '\r'))
        *--end = '\0';
    return s;
}

/* 0, or -1 with err naming the file (and line). Keys other than these five are for
 * the tools (doctor, uninstall); a missing key reads as empty, never as the
 * environment's: with a config the environment is not consulted. */
static int config_read(const char *path, aw_config *c, char *err, size_t errlen) {
    memset(c, 0, sizeof *c);
    FILE *f = fopen(path, "re");
    if (f == NULL) {
        snprintf(err, errlen, "cannot read %s: %s", path, strerror(errno));
        return -1;
    }
    char *line = NULL;
    size_t cap = 0;
    int lineno = 0, rc = 0;
    while (rc == 0 && getline(&line, &cap, f) >= 0) {
        lineno++;
        char *s = trim(line);
        if (*s == '\0' || *s == '#')
            continue;
        char *eq = strchr(s, '=');
        if (eq == NULL) {
            snprintf(err, errlen, "%s:%d: expected KEY = VALUE", path, lineno);
            rc = -1;
            break;
        }
        *eq = '\0';
        char *key = trim(s), *value = trim(eq + 1);
        char **slot = strcmp(key, "sink") == 0       ? &c->sink
                      : strcmp(key, "events") == 0   ? &c->events
                      : strcmp(key, "options") == 0  ? &c->options
                      : strcmp(key, "deny") == 0     ? &c->deny
                      : strcmp(key, "manifest") == 0 ? &c->manifest
                                                     : NULL;
        if (slot == NULL)
            continue;
        free(*slot);
        if ((*slot = strdup(value)) == NULL) {
            snprintf(err, errlen, "%s: out of memory", path);
            rc = -1;
        }
    }
    free(line);
    fclose(f);
    char **all[] = {&c->sink, &c->events, &c->options, &c->deny, &c->manifest};
    for (size_t i = 0; rc == 0 && i < sizeof all / sizeof *all; i++)
        if (*all[i] == NULL && (*all[i] = strdup("")) == NULL) {
            snprintf(err, errlen, "%s: out of memory", path);
            rc = -1;
        }
    if (rc == 0 && c->sink[0] == '\0') {
        snprintf(err, errlen, "%s: no sink = ... line", path);
        rc = -1;
    }
    if (rc < 0)
        config_free(c);
    return rc;
}

/* ---- the launcher ------------------------------------------------------------------- */

/* conf_path NULL: the environment (AUDITWATCH_SINK, _EVENTS, _OPTIONS, _DENY,
 * _MANIFEST). 0, or -1 with err set. */
__attribute__((visibility("default"))) int auditwatch_preinit_launcher(const char *conf_path,
                                                                      char *err, size_t errlen) {
    aw_config c = {NULL, NULL, NULL, NULL, NULL};
    if (conf_path != NULL && config_read(conf_path, &c, err, errlen) < 0)
        return -1;
    const char *manifest = conf_path != NULL ? c.manifest : getenv("AUDITWATCH_MANIFEST");
    int rc = aw_install("pre-init", c.sink, c.events, c.options, c.deny, err, errlen) == 0 &&
                     aw_opencode_install(manifest, err, errlen) == 0
                 ? 0
                 : -1;
    /* The recorder copied what it keeps; the manifest is loaded. */
    config_free(&c);
    return rc;
}

/* ---- each interpreter ----------------------------------------------------------------- */

static int set_parent_run(PyObject *os) {
    PyObject *environ = PyObject_GetAttrString(os, "environ");
    if (environ == NULL)
        return -1;
    /* The native code exported the run into the C environment; os.environ is a copy
     * made at start-up, and children started with env=os.environ read that. Into its
     * mapping of encoded names and values (os._Environ._data, as its __setitem__ would
     * encode them): os.environ[...] = ... would call putenv again and leave an
     * os.putenv record of auditwatch's own at the start of every run. */
    PyObject *key = PyUnicode_FromString("AUDITWATCH_PARENT_RUN");
    PyObject *run = key ? PyUnicode_FromString(aw_proc.run) : NULL;
    PyObject *data = run ? PyObject_GetAttrString(environ, "_data") : NULL;
    int rc = -1;
    if (data != NULL && PyDict_CheckExact(data)) {
        PyObject *k = PyUnicode_EncodeFSDefault(key);
        PyObject *v = k ? PyUnicode_EncodeFSDefault(run) : NULL;
        rc = v ? PyDict_SetItem(data, k, v) : -1;
        Py_XDECREF(v), Py_XDECREF(k);
    } else if (run != NULL) {
        PyErr_Clear(); /* not the mapping of os.py: through its own __setitem__ */
        rc = PyObject_SetItem(environ, key, run);
    }
    Py_XDECREF(data), Py_XDECREF(run), Py_XDECREF(key);
    Py_DECREF(environ);
    return rc;
}

/* os.register_at_fork(after_in_child=...): the child's run id is made by its first
 * record; make it now, so that os.environ carries it to the child's own children. */
PyObject *aw_after_fork_in_child(PyObject *module, PyObject *noargs) {
    (void)module, (void)noargs;
    if (aw_installed())
        aw_writer_ensure();
    PyObject *os = PyImport_ImportModule("os");
    int rc = os ? set_parent_run(os) : -1;
    Py_XDECREF(os);
    if (rc < 0)
        return NULL;
    Py_RETURN_NONE;
}

int aw_finish_interpreter(PyObject *module) {
    PyObject *os = PyImport_ImportModule("os");
    PyObject *posix = os ? PyImport_ImportModule("posix") : NULL;
    PyObject *exit_fn = posix ? PyObject_GetAttrString(module, "exit") : NULL;
    PyObject *current = exit_fn ? PyObject_GetAttrString(posix, "_exit") : NULL;
    int rc = current ? 0 : -1;
    if (current != NULL && current != exit_fn) { /* else: this interpreter is done */
        /* os._exit skips every exit handler: route it through the recorder so the
         * process still leaves an exit record. */
        rc = set_parent_run(os) < 0 || PyObject_SetAttrString(posix, "_exit", exit_fn) < 0 ||
                     PyObject_SetAttrString(os, "_exit", exit_fn) < 0
                 ? -1
                 : 0;
        PyObject *child = rc == 0 ? PyObject_GetAttrString(module, "_after_fork_in_child") : NULL;
        PyObject *reg = child ? PyObject_GetAttrString(os, "register_at_fork") : NULL;
        PyObject *kw = reg ? Py_BuildValue("{s:O}", "after_in_child", child) : NULL;
        PyObject *empty = kw ? PyTuple_New(0) : NULL;
        PyObject *res = empty ? PyObject_Call(reg, empty, kw) : NULL;
        if (res == NULL) {
            /* A subinterpreter without fork support refuses: nothing to register. */
            if (rc == 0 && PyErr_ExceptionMatches(PyExc_RuntimeError))
                PyErr_Clear();
            else
                rc = -1;
        }
        Py_XDECREF(res), Py_XDECREF(empty), Py_XDECREF(kw), Py_XDECREF(reg), Py_XDECREF(child);
    }
    Py_XDECREF(current), Py_XDECREF(exit_fn), Py_XDECREF(posix), Py_XDECREF(os);
    return rc;
}

/* ---- site start-up ------------------------------------------------------------------ */

static void flush_stderr(void) {
    PyObject *err = PySys_GetObject("stderr"); /* borrowed */
    PyObject *res = err && err != Py_None ? PyObject_CallMethod(err, "flush", NULL) : NULL;
    Py_XDECREF(res);
    PyErr_Clear();
}

static void exit_unaudited(const char *why) {
    PySys_WriteStderr("auditwatch: %s, exiting\n", why);
    flush_stderr();
    _exit(EX_SOFTWARE);
}

/* Warn; exit when auditing is required (the environment, or an installed config:
 * "every process here is audited", never run without). */
static void not_audited(const char *message, const char *config) {
    PySys_WriteStderr("auditwatch: WARNING: this process is NOT audited: %.900s\n", message);
    const char *required = getenv("AUDITWATCH_REQUIRED");
    if (required != NULL && strcmp(required, "1") == 0)
        exit_unaudited("AUDITWATCH_REQUIRED=1");
    if (config != NULL) {
        char why[PATH_MAX + 32];
        snprintf(why, sizeof why, "%.*s requires auditing", PATH_MAX, config);
        exit_unaudited(why);
    }
}

/* The message of the pending exception, cleared. */
static void take_error(char *out, size_t n) {
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyObject *text = value ? PyObject_Str(value) : NULL;
    const char *s = text ? PyUnicode_AsUTF8(text) : NULL;
    snprintf(out, n, "%s", s ? s : "unknown error");
    Py_XDECREF(text), Py_XDECREF(type), Py_XDECREF(value), Py_XDECREF(tb);
    PyErr_Clear();
}

/* PREFIX/auditwatch.conf into out, in the file-system encoding as os.path.exists in
 * _auditwatch_boot sees it; 0, or -1 when sys.prefix is not a usable str. */
static int config_path(char *out, size_t n) {
    PyObject *prefix = PySys_GetObject("prefix"); /* borrowed */
    PyObject *fs = prefix && PyUnicode_Check(prefix) ? PyUnicode_EncodeFSDefault(prefix) : NULL;
    int rc = fs != NULL && strlen(PyBytes_AS_STRING(fs)) == (size_t)PyBytes_GET_SIZE(fs) &&
                     snprintf(out, n, "%s/" CONFIG_NAME, PyBytes_AS_STRING(fs)) < (int)n
                 ? 0
                 : -1;
    Py_XDECREF(fs);
    PyErr_Clear();
    return rc;
}

/* Recording, but this interpreter's os._exit, os.environ or fork handler could not be
 * set: say what is not covered rather than stop a recorded process. */
static void finish_or_warn(PyObject *module) {
    if (aw_finish_interpreter(module) == 0)
        return;
    char err[512];
    take_error(err, sizeof err);
    PySys_WriteStderr("auditwatch: WARNING: recording, but os._exit and forked children are "
                      "not covered in this interpreter: %.400s\n",
                      err);
}

PyObject *aw_bootstrap(PyObject *module, PyObject *noargs) {
    (void)noargs;
    if (aw_installed()) {
        /* The launcher installed the hook before Python started, or this is a
         * subinterpreter: the process-wide hook covers it; finish the Python side. */
        finish_or_warn(module);
        Py_RETURN_NONE;
    }
    char config[PATH_MAX + 32], err[1024] = "";
    struct stat st;
    int asked_by_env = getenv("AUDITWATCH_SINK") != NULL;
    if (!asked_by_env && config_path(config, sizeof config) < 0) {
        /* _auditwatch_boot found a config there, or nothing asked (below): say so */
        not_audited("sys.prefix cannot be made into the path of auditwatch.conf", NULL);
        Py_RETURN_NONE;
    }
    int use_config = !asked_by_env && stat(config, &st) == 0;
    if (!use_config && !asked_by_env)
        Py_RETURN_NONE; /* not asked: an exec'd program that kept AUDITWATCH_LOADED_PID */
    aw_config c = {NULL, NULL, NULL, NULL, NULL};
    if (use_config && config_read(config, &c, err, sizeof err) == 0 && c.manifest[0] != '\0')
        snprintf(err, sizeof err, "%.900s: a manifest needs the launcher (auditwatch-python)",
                 config);
    if (err[0] == '\0' && aw_install_probed("site", c.sink, c.events, c.options, c.deny) < 0)
        take_error(err, sizeof err);
    config_free(&c);
    if (err[0] != '\0')
        not_audited(err, use_config ? config : NULL);
    else
        finish_or_warn(module);
    Py_RETURN_NONE;
}
