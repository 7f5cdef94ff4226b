/* The floor for the benchmarks: an audit hook that does nothing. Whatever a real hook
 * costs above this is its own cost; this much is CPython's dispatch. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

static int null_hook(const char *event, PyObject *args, void *data) {
    (void)event, (void)args, (void)data;
    return 0;
}

static PyObject *install(PyObject *self, PyObject *noargs) {
    (void)self, (void)noargs;
    if (PySys_AddAuditHook(null_hook, NULL) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {{"install", install, METH_NOARGS, "Install the empty hook."},
                                {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "nullhook", NULL, -1, methods,
                                    NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit_nullhook(void) { return PyModule_Create(&module); }
