/* _auditwatch: the Python binding of the native recorder.
 *
 * A top-level extension, not a submodule of the package, so that an audited process
 * starts with one import (bootstrap.c). Deliberately small: install once, read
 * counters, flush, exit. There is no
 * function to stop recording, change the event table or remove the hook: once
 * installed, nothing inside the process can switch it off from Python.
 */
#include "aw.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

extern atomic_int aw_probe_seen, aw_probing;
unsigned long long aw_hook_reentrant(void);
unsigned long long aw_hook_denied(void);


/* Install and prove that the hook is called: 0, or -1 with a Python exception set. */
int aw_install_probed(const char *how, const char *sink, const char *events, const char *options,
                      const char *deny) {
    if (aw_installed()) {
        PyErr_Format(PyExc_RuntimeError, "auditwatch is already recording this process (run %s)",
                     aw_proc.run);
        return -1;
    }
    char err[512] = "";
    int rc = aw_install(how, sink, events, options, deny, err, sizeof err);
    if (rc == -3)
        return -1; /* another hook refused: its exception is set */
    if (rc < 0) {
        PyErr_Format(rc == -2 ? PyExc_RuntimeError : PyExc_ValueError, "auditwatch: %s", err);
        return -1;
    }
    /* PySys_AddAuditHook returns success when an existing hook refuses it with a
     * RuntimeError: prove that ours is called before saying it is installed. */
    atomic_store(&aw_probing, 1);
    int probe = PySys_Audit("auditwatch.install", "s", aw_proc.installed);
    atomic_store(&aw_probing, 0);
    if (probe < 0)
        return -1;
    if (!atomic_load(&aw_probe_seen)) {
        atomic_store(&aw_proc.active, 0);
        PyErr_SetString(PyExc_RuntimeError,
                        "auditwatch: another audit hook refused the installation of auditwatch's "
                        "hook; install auditwatch before it (site start-up or the launcher)");
        return -1;
    }
    return 0;
}

static PyObject *hook_install(PyObject *module, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"installed", "sink", "events", "options", "deny", NULL};
    const char *how = "late", *sink = NULL, *events = NULL, *options = NULL, *deny = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|szzzz:install", kwlist, &how, &sink, &events,
                                     &options, &deny))
        return NULL;
    if (strcmp(how, "site") != 0 && strcmp(how, "late") != 0) {
        PyErr_Format(PyExc_ValueError, "installed must be 'site' or 'late', not '%.50s'", how);
        return NULL;
    }
    if (aw_install_probed(strcmp(how, "site") == 0 ? "site" : "late", sink, events, options, deny) < 0 ||
        aw_finish_interpreter(module) < 0)
        return NULL;
    return PyUnicode_FromString(aw_proc.run);
}

static PyObject *hook_status(PyObject *self, PyObject *noargs) {
    (void)self, (void)noargs;
    if (!aw_installed())
        return Py_BuildValue("{s:O}", "installed", Py_None);
    aw_counters c;
    aw_ring_counters(&c);
    static const char *states[] = {"none", "sink", "spool", "lost"};
    const char *state = c.sink_state >= 0 && c.sink_state < 4 ? states[c.sink_state] : "?";
    return Py_BuildValue("{s:s,s:s,s:s,s:i,s:s,s:s,s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:s,s:s,s:O,"
                         "s:K}",
                         "installed", aw_proc.installed, "run", aw_proc.run, "parent_run",
                         aw_proc.parent_run, "pid", (int)aw_proc.pid, "sink", aw_opts.sink,
                         "policy", aw_opts.policy == AW_POLICY_DROP ? "drop" : "wait", "queued",
                         (unsigned long long)c.queued, "written", (unsigned long long)c.written,
                         "dropped", (unsigned long long)c.dropped, "spooled",
                         (unsigned long long)c.spooled, "lost", (unsigned long long)c.lost,
                         "heartbeats", (unsigned long long)c.heartbeats, "reentrant",
                         aw_hook_reentrant(), "denied", aw_hook_denied(), "ack_timeouts",
                         (unsigned long long)c.ack_timeouts, "sink_state", state,
                         "sink_error", c.sink_error, "open_code",
                         aw_opencode_installed() ? Py_True : Py_False, "hashed_off_thread",
                         aw_hasher_hashed());
}

static PyObject *hook_flush(PyObject *self, PyObject *args) {
    (void)self;
    double timeout = 5.0;
    if (!PyArg_ParseTuple(args, "|d:flush", &timeout))
        return NULL;
    if (!aw_installed())
        Py_RETURN_FALSE;
    /* A flush marker: every record queued before it has left once it has, the
     * records of files read as code that were still being hashed included. */
    aw_hasher_drain();
    aw_hasher_collect();
    uint64_t ticket = aw_record_event("auditwatch.flush", NULL, "flush", NULL,
                                      AW_PUT_RELEASE_GIL | AW_PUT_FLUSH);
    int rc = aw_ring_flush(ticket, timeout, 1);
    return PyBool_FromLong(rc == 0);
}

static PyObject *hook_exit(PyObject *self, PyObject *arg) {
    (void)self;
    /* os._exit() replacement: the exit record leaves before the process does. */
    int overflow = 0;
    long code = PyLong_AsLongAndOverflow(arg, &overflow);
    if (code == -1 && PyErr_Occurred())
        return NULL;
    if (aw_installed())
        aw_proc_exit_record("os._exit", (int)code, 0);
    _exit((int)code);
}

static PyObject *hook_encode_args(PyObject *self, PyObject *args) {
    (void)self;
    /* Exposes the encoder to tests: the same code the hook runs on event arguments. */
    PyObject *tuple;
    if (!PyArg_ParseTuple(args, "O!:encode_args", &PyTuple_Type, &tuple))
        return NULL;
    aw_buf b;
    aw_buf_init(&b, NULL, 0);
    aw_encode_args(&b, tuple, &aw_default_limits, NULL);
    PyObject *res = b.oom ? PyErr_NoMemory() : PyUnicode_DecodeUTF8(b.p, (Py_ssize_t)b.len, "strict");
    aw_buf_free(&b);
    return res;
}

static PyObject *hook_sha256(PyObject *self, PyObject *args) {
    (void)self;
    /* For tests: the hook's SHA-256, with the CPU's SHA extensions when it has them,
     * or the portable rounds (portable=True), to compare with hashlib. */
    Py_buffer view;
    int portable = 0;
    if (!PyArg_ParseTuple(args, "y*|p:_sha256", &view, &portable))
        return NULL;
    char hex[65];
    int used = aw_sha256_hex_choosing(view.buf, (size_t)view.len, hex, !portable);
    PyBuffer_Release(&view);
    return Py_BuildValue("(sO)", hex, used ? Py_True : Py_False);
}

static PyObject *hook_default_events(PyObject *self, PyObject *noargs) {
    (void)self, (void)noargs;
    return PyUnicode_FromString(aw_table_default_spec());
}

static PyMethodDef methods[] = {
    {"install", (PyCFunction)(void (*)(void))hook_install, METH_VARARGS | METH_KEYWORDS,
     "install(installed='late', sink=None, events=None, options=None, deny=None) -> run id\n\n"
     "Register the native audit hook. None takes the value from the environment\n"
     "(AUDITWATCH_SINK, _EVENTS, _OPTIONS, _DENY). Once per process. Then os._exit\n"
     "leaves an exit record, and os.environ and forked children carry the run."},
    {"status", hook_status, METH_NOARGS, "Counters of the recorder (a new dict each call)."},
    {"flush", hook_flush, METH_VARARGS,
     "flush(timeout=5.0) -> bool: wait until every record so far has left the process."},
    {"exit", hook_exit, METH_O, "exit(code): write the exit record, then _exit(code)."},
    {"bootstrap", aw_bootstrap, METH_NOARGS,
     "bootstrap(): what auditwatch.pth runs at site start-up when auditing is asked for."},
    {"_after_fork_in_child", aw_after_fork_in_child, METH_NOARGS,
     "Registered with os.register_at_fork: the forked child starts its own run."},
    {"encode_args", hook_encode_args, METH_VARARGS,
     "encode_args(tuple) -> str: the JSON the hook would record for these arguments."},
    {"_sha256", hook_sha256, METH_VARARGS,
     "_sha256(data, portable=False) -> (hex, whether the SHA extensions did the rounds)."},
    {"default_events", hook_default_events, METH_NOARGS,
     "The built-in event table entries, applied after the configured ones."},
    {NULL, NULL, 0, NULL},
};

/* Multi-phase init: the module has no per-interpreter state (the recorder is one
 * per process, its shared state behind mutexes and atomics), so it can be imported
 * in subinterpreters, including those with their own GIL, where the bootstrap
 * finds it already installed. */
static PyModuleDef_Slot slots[] = {
#if PY_VERSION_HEX >= 0x030C0000
    {Py_mod_multiple_interpreters, Py_MOD_PER_INTERPRETER_GIL_SUPPORTED},
#endif
    {0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_auditwatch",
    "Native core of auditwatch: the audit hook, argument encoding, ring and writer thread.", 0,
    methods, slots, NULL, NULL, NULL,
};

/* Exported explicitly: before 3.9 PyMODINIT_FUNC does not override -fvisibility=hidden. */
__attribute__((visibility("default"))) PyMODINIT_FUNC PyInit__auditwatch(void) {
    return PyModuleDef_Init(&module);
}
