/* auditwatch._ingest: module definition and the helpers its functions share. */
#include "ingest.h"
#include "hash.h"

int aw_int64_arg(PyObject *obj, const char *func, const char *what, int64_t *out) {
    /* PyLong_Check first: PyLong_AsLongLong would call __index__ on anything else. */
    if (!PyLong_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "%s: %s must be an int, not %.100s", func, what,
                     Py_TYPE(obj)->tp_name);
        return -1;
    }
    int overflow = 0;
    long long v = PyLong_AsLongLongAndOverflow(obj, &overflow);
    if (overflow) {
        PyErr_Format(PyExc_OverflowError, "%s: %s does not fit in a signed 64-bit integer",
                     func, what);
        return -1;
    }
    if (v == -1 && PyErr_Occurred())
        return -1;
    *out = (int64_t)v;
    return 0;
}

static PyMethodDef methods[] = {
    {"seal_chunk", (PyCFunction)(void (*)(void))aw_seal_chunk, METH_VARARGS | METH_KEYWORDS,
     "seal_chunk(raw, n, first_pos, prev, peer, key) -> bytes\n\n"
     "Hash chain and MACs of n newline-terminated records (newlines not hashed) at\n"
     "positions first_pos.. as store/seal.py defines them. prev: the 32-byte hash of\n"
     "position first_pos - 1; peer: (uid, gid, pid) or None. Returns\n"
     "prev_hash || hash || mac (3 x 32 bytes) per record."},
    {"scan_lines", (PyCFunction)(void (*)(void))aw_scan_lines, METH_VARARGS | METH_KEYWORDS,
     "scan_lines(data, peer_pid) -> list\n\n"
     "Split complete lines into runs of plain events, (start, end, run, first_seq,\n"
     "last_seq, count, last_event, first_ts, last_ts, events, kinds) with\n"
     "data[start:end] the lines, events their distinct event names (at most 8) and\n"
     "kinds one byte per line, its event's index in events; and other lines,\n"
     "(start, end) without the newline. Empty lines give no item."},
    {NULL, NULL, 0, NULL},
};

/* SHA256: which SHA-256 seals ("openssl" or "builtin"), for doctor and the docs. */
static int exec_module(PyObject *m) {
    return PyModule_AddStringConstant(m, "SHA256", AW_HASH_IMPL);
}

/* Multi-phase init, no module state: the functions keep nothing between calls, so
 * the module works the same in every (sub)interpreter. */
static PyModuleDef_Slot slots[] = {
    {Py_mod_exec, (void *)exec_module},
#if PY_VERSION_HEX >= 0x030C0000
    {Py_mod_multiple_interpreters, Py_MOD_PER_INTERPRETER_GIL_SUPPORTED},
#endif
    {0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "auditwatch._ingest",
    "The collector's hot loops: sealing chunks of records and scanning lines.", 0,
    methods, slots, NULL, NULL, NULL,
};

/* Exported explicitly: before 3.9 PyMODINIT_FUNC does not override -fvisibility=hidden. */
__attribute__((visibility("default"))) PyMODINIT_FUNC PyInit__ingest(void) {
    return PyModuleDef_Init(&module);
}
