/* ferry._fastcall: the Python client's one-array call without ctypes.
 *
 * Why it exists: through ctypes, `Client.call(array)` spends ~5 µs in Python around a round
 * trip that takes ~4 µs from C (argument objects, the buffer address, building the reply
 * array). This module does the same work as the ctypes path in client.py — one
 * ferry_call_array crossing, polling in 100 ms steps so signal handlers run, copying a
 * one-tensor reply into a new numpy array — in C. It links nothing: client.py hands it the
 * addresses of the libferry functions that ctypes loaded, so both paths use the same library
 * instance and handles. Built by `make build`; when it is absent client.py uses ctypes.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#define NPY_NO_DEPRECATED_API NPY_1_7_API_VERSION
#include <numpy/arrayobject.h>

#include "ferry.h"

typedef int (*call_array_fn)(ferry_client *, int64_t, const char *, int, int, const int64_t *, const void *, size_t, int64_t,
                             ferry_call **, const ferry_message **, ferry_tensor *, size_t, size_t *);
typedef int (*poll_fn)(ferry_call *, int64_t, const ferry_message **, ferry_tensor *, size_t, size_t *);
typedef void (*free_fn)(ferry_call *);

static call_array_fn fc_call_array;
static poll_fn fc_poll;
static free_fn fc_free;
/* numpy dtype per FERRY_DTYPE_* code (None where a reply needs the general reader). */
static PyObject *fc_dtypes;

static PyObject *fc_bind(PyObject *self, PyObject *args) {
    (void)self;
    unsigned long long a, p, f;
    PyObject *dtypes;
    if (!PyArg_ParseTuple(args, "KKKO!", &a, &p, &f, &PyTuple_Type, &dtypes)) return NULL;
    if (!a || !p || !f) { PyErr_SetString(PyExc_ValueError, "NULL function address"); return NULL; }
    fc_call_array = (call_array_fn)(uintptr_t)a;
    fc_poll = (poll_fn)(uintptr_t)p;
    fc_free = (free_fn)(uintptr_t)f;
    Py_INCREF(dtypes);
    Py_XSETREF(fc_dtypes, dtypes);
    Py_RETURN_NONE;
}

/* call(handle, timeout_ms, name, dtype_code, array, step_ms, call_out, reply_out, tensors, cap, count_out)
 *
 * Returns a new array when the reply is one numeric tensor (the call is freed and *call_out
 * set to NULL). Otherwise returns the status code as an int and leaves the call (possibly
 * NULL) in *call_out, with *reply_out, the tensors and *count_out filled as ferry_call_poll
 * fills them, for client.py to raise the error or read the reply and free the call. */
static PyObject *fc_call(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 11) { PyErr_SetString(PyExc_TypeError, "call() takes 11 arguments"); return NULL; }
    if (!fc_call_array || !fc_dtypes) { PyErr_SetString(PyExc_RuntimeError, "_fastcall.bind() was not called"); return NULL; }
    void *client = PyLong_AsVoidPtr(args[0]);
    long long timeout_ms = PyLong_AsLongLong(args[1]);
    const char *name = PyBytes_AsString(args[2]);
    int code = (int)PyLong_AsLong(args[3]);
    long long step_ms = PyLong_AsLongLong(args[5]);
    ferry_call **call_out = PyLong_AsVoidPtr(args[6]);
    const ferry_message **reply_out = PyLong_AsVoidPtr(args[7]);
    ferry_tensor *tensors = PyLong_AsVoidPtr(args[8]);
    size_t cap = PyLong_AsSize_t(args[9]);
    size_t *count_out = PyLong_AsVoidPtr(args[10]);
    if (PyErr_Occurred()) return NULL;
    if (!client || !name || !call_out || !reply_out || !tensors || !count_out || cap < 1) {
        PyErr_SetString(PyExc_ValueError, "NULL argument");
        return NULL;
    }
    /* PyBUF_ND asks for a C-contiguous buffer: anything else is refused, never copied here. */
    Py_buffer view;
    if (PyObject_GetBuffer(args[4], &view, PyBUF_ND) < 0) return NULL;
    if (view.ndim > FERRY_MAX_DIMS) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "too many dimensions");
        return NULL;
    }
    int64_t shape[FERRY_MAX_DIMS];
    for (int i = 0; i < view.ndim; i++) shape[i] = view.shape[i];
    int rc;
    *call_out = NULL;
    Py_BEGIN_ALLOW_THREADS
    rc = fc_call_array(client, timeout_ms, name, code, view.ndim, shape, view.buf, (size_t)view.len, step_ms, call_out, reply_out,
                       tensors, cap, count_out);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);
    /* Sent and in flight: wait in steps, running signal handlers (Ctrl-C) between them. */
    while (rc == FERRY_EAGAIN) {
        if (PyErr_CheckSignals() < 0) {
            fc_free(*call_out);  /* gives the call up properly */
            *call_out = NULL;
            return NULL;
        }
        ferry_call *call = *call_out;
        Py_BEGIN_ALLOW_THREADS
        rc = fc_poll(call, step_ms, reply_out, tensors, cap, count_out);
        Py_END_ALLOW_THREADS
    }
    if (rc != FERRY_OK || *count_out != 1) return PyLong_FromLong(rc);
    const ferry_tensor *t = &tensors[0];
    PyObject *descr = (t->dtype > 0 && t->dtype < PyTuple_GET_SIZE(fc_dtypes)) ? PyTuple_GET_ITEM(fc_dtypes, t->dtype) : Py_None;
    if (descr == Py_None || t->ndim < 0 || t->ndim > FERRY_MAX_DIMS) return PyLong_FromLong(rc);
    npy_intp dims[FERRY_MAX_DIMS];
    for (int i = 0; i < t->ndim; i++) dims[i] = (npy_intp)t->shape[i];
    Py_INCREF(descr);  /* PyArray_NewFromDescr steals it */
    PyObject *out = PyArray_NewFromDescr(&PyArray_Type, (PyArray_Descr *)descr, t->ndim, dims, NULL, NULL, 0, NULL);
    if (out) {
        /* The library checked nbytes against dtype and shape; check again before copying. */
        if ((size_t)PyArray_NBYTES((PyArrayObject *)out) != t->nbytes) {
            Py_DECREF(out);
            return PyLong_FromLong(rc);
        }
        if (t->nbytes) memcpy(PyArray_DATA((PyArrayObject *)out), t->data, t->nbytes);
    }
    fc_free(*call_out);
    *call_out = NULL;
    return out;
}

static PyMethodDef fc_methods[] = {
    {"bind", fc_bind, METH_VARARGS, "bind(call_array, poll, free, dtypes): the libferry functions to use."},
    {"call", (PyCFunction)(void (*)(void))fc_call, METH_FASTCALL, "One-array call; see _fastcall.c."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef fc_module = {
    PyModuleDef_HEAD_INIT, "_fastcall", "The one-array call in C (see client.py).", -1, fc_methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__fastcall(void) {
    import_array();
    return PyModule_Create(&fc_module);
}
