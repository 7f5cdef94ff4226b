/* auditwatch._ingest: the collector's hot loops in C.
 *
 * Imported by the collector only, never inside an audited process (that is the
 * _auditwatch extension's place). Each function works on a whole chunk of records
 * per call, so the Python overhead is paid per chunk, not per record.
 */
#ifndef AW_INGEST_H
#define AW_INGEST_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

#include "../_hook/sha256.h"

/* seal.c */
PyObject *aw_seal_chunk(PyObject *self, PyObject *args, PyObject *kwargs);
/* scan.c */
PyObject *aw_scan_lines(PyObject *self, PyObject *args, PyObject *kwargs);

/* A Python int as int64_t, without calling Python code (no __index__): -1 with
 * TypeError naming `what` when obj is not an int, -1 with OverflowError when it
 * does not fit. */
int aw_int64_arg(PyObject *obj, const char *func, const char *what, int64_t *out);

#endif
