/* ferry._fastcall: the one-array call and the worker's one-array request and reply
 * without ctypes.
 *
 * Why it exists: through ctypes, `Client.call(array)` spends ~5 µs in Python around a round
 * trip that takes ~4 µs from C (argument objects, the buffer address, building the reply
 * array). This module does the same work as the ctypes path in client.py — one
 * ferry_call_array crossing, polling in 100 ms steps so signal handlers run, copying a
 * one-tensor reply into a new numpy array — in C. It links nothing: message.py hands it the
 * addresses of the libferry functions that ctypes loaded, so both paths use the same library
 * instance and handles. The worker's loop (serving.py) has the same two crossings per request
 * (take the next request and view its array; reply with one array), each ~1 µs through
 * ctypes: `next` and `reply` below do them in C, with the same checks and the same numpy
 * view (same base object, read-only) as the ctypes path. Built by `make build`; when it is
 * absent client.py and serving.py use ctypes.
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
typedef int (*next_fn)(ferry_worker *, int64_t, ferry_job **, ferry_tensor *, size_t, size_t *);
typedef int (*reply_tensor_fn)(ferry_job *, const char *, int, int, const int64_t *, const void *, size_t);

static call_array_fn fc_call_array;
static poll_fn fc_poll;
static free_fn fc_free;
static next_fn fc_next;
static reply_tensor_fn fc_reply_tensor;
/* numpy dtype per FERRY_DTYPE_* code (None where a reply needs the general reader). */
static PyObject *fc_dtypes;

/* bind(call_array, poll, free, worker_next, job_reply_tensor, dtypes): the libferry functions
 * to use (addresses from ctypes) and the numpy dtype per FERRY_DTYPE_* code. */
static PyObject *fc_bind(PyObject *self, PyObject *args) {
    (void)self;
    unsigned long long a, p, f, n, r;
    PyObject *dtypes;
    if (!PyArg_ParseTuple(args, "KKKKKO!", &a, &p, &f, &n, &r, &PyTuple_Type, &dtypes)) return NULL;
    if (!a || !p || !f || !n || !r) { PyErr_SetString(PyExc_ValueError, "NULL function address"); return NULL; }
    fc_call_array = (call_array_fn)(uintptr_t)a;
    fc_poll = (poll_fn)(uintptr_t)p;
    fc_free = (free_fn)(uintptr_t)f;
    fc_next = (next_fn)(uintptr_t)n;
    fc_reply_tensor = (reply_tensor_fn)(uintptr_t)r;
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

/* next(worker, timeout_ms, job_out, tensors, cap, count_out, origin, slot_size, bases, owners)
 *
 * ferry_worker_next with the GIL released. When the request is one numeric tensor whose
 * bytes lie wholly inside slot k (bases[k] ... bases[k] + slot_size), returns (k, view): a
 * read-only array of those bytes whose base is owners[k], as serving.py's ctypes path
 * builds it. Otherwise returns the status code as an int, with *job_out, the tensors and
 * *count_out filled as ferry_worker_next fills them, for serving.py's general path. */
static PyObject *fc_next_request(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 10) { PyErr_SetString(PyExc_TypeError, "next() takes 10 arguments"); return NULL; }
    if (!fc_next || !fc_dtypes) { PyErr_SetString(PyExc_RuntimeError, "_fastcall.bind() was not called"); return NULL; }
    void *worker = PyLong_AsVoidPtr(args[0]);
    long long timeout_ms = PyLong_AsLongLong(args[1]);
    ferry_job **job_out = PyLong_AsVoidPtr(args[2]);
    ferry_tensor *tensors = PyLong_AsVoidPtr(args[3]);
    size_t cap = PyLong_AsSize_t(args[4]);
    size_t *count_out = PyLong_AsVoidPtr(args[5]);
    uintptr_t origin = (uintptr_t)PyLong_AsVoidPtr(args[6]);
    size_t slot_size = PyLong_AsSize_t(args[7]);
    PyObject *bases = args[8], *owners = args[9];
    if (PyErr_Occurred()) return NULL;
    if (!worker || !job_out || !tensors || !count_out || cap < 1 || !slot_size || !PyTuple_Check(bases) || !PyTuple_Check(owners) ||
        PyTuple_GET_SIZE(bases) != PyTuple_GET_SIZE(owners)) {
        PyErr_SetString(PyExc_ValueError, "bad argument");
        return NULL;
    }
    int rc;
    *job_out = NULL;
    Py_BEGIN_ALLOW_THREADS
    rc = fc_next(worker, timeout_ms, job_out, tensors, cap, count_out);
    Py_END_ALLOW_THREADS
    if (rc != FERRY_OK || *count_out != 1) return PyLong_FromLong(rc);
    const ferry_tensor *t = &tensors[0];
    PyObject *descr = (t->dtype > 0 && t->dtype < PyTuple_GET_SIZE(fc_dtypes)) ? PyTuple_GET_ITEM(fc_dtypes, t->dtype) : Py_None;
    if (descr == Py_None || t->ndim < 0 || t->ndim > FERRY_MAX_DIMS || !t->data) return PyLong_FromLong(rc);
    uintptr_t addr = (uintptr_t)t->data;
    if (addr < origin) return PyLong_FromLong(rc);
    Py_ssize_t k = (Py_ssize_t)((addr - origin) / slot_size);
    if (k >= PyTuple_GET_SIZE(bases)) return PyLong_FromLong(rc);
    uintptr_t base = (uintptr_t)PyLong_AsVoidPtr(PyTuple_GET_ITEM(bases, k));
    if (PyErr_Occurred()) return NULL;
    /* The library validated the message; the view must still stay inside the slot's mapping. */
    if (addr < base || addr - base > slot_size || t->nbytes > slot_size - (addr - base)) return PyLong_FromLong(rc);
    npy_intp dims[FERRY_MAX_DIMS];
    for (int i = 0; i < t->ndim; i++) dims[i] = (npy_intp)t->shape[i];
    PyObject *owner = PyTuple_GET_ITEM(owners, k);
    Py_INCREF(descr);  /* PyArray_NewFromDescr steals it */
    PyObject *view = PyArray_NewFromDescr(&PyArray_Type, (PyArray_Descr *)descr, t->ndim, dims, NULL, (void *)addr,
                                          NPY_ARRAY_C_CONTIGUOUS | NPY_ARRAY_ALIGNED, NULL);
    if (!view) return NULL;
    if ((size_t)PyArray_NBYTES((PyArrayObject *)view) != t->nbytes) {
        Py_DECREF(view);
        return PyLong_FromLong(rc);
    }
    PyArray_CLEARFLAGS((PyArrayObject *)view, NPY_ARRAY_WRITEABLE);
    Py_INCREF(owner);
    if (PyArray_SetBaseObject((PyArrayObject *)view, owner) < 0) {  /* steals owner */
        Py_DECREF(view);
        return NULL;
    }
    PyObject *slot = PyLong_FromSsize_t(k);
    if (!slot) { Py_DECREF(view); return NULL; }
    PyObject *out = PyTuple_New(2);
    if (!out) { Py_DECREF(slot); Py_DECREF(view); return NULL; }
    PyTuple_SET_ITEM(out, 0, slot);
    PyTuple_SET_ITEM(out, 1, view);
    return out;
}

/* reply(job, name, array, codes): ferry_job_reply_tensor with the GIL released, when `array`
 * is a C-contiguous ndarray of a dtype in `codes` (numpy dtype -> FERRY_DTYPE_*) with at most
 * FERRY_MAX_DIMS dimensions; returns the status code. None: `array` needs the general path
 * (the job is untouched). */
static PyObject *fc_reply(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 4) { PyErr_SetString(PyExc_TypeError, "reply() takes 4 arguments"); return NULL; }
    if (!fc_reply_tensor) { PyErr_SetString(PyExc_RuntimeError, "_fastcall.bind() was not called"); return NULL; }
    void *job = PyLong_AsVoidPtr(args[0]);
    const char *name = PyBytes_AsString(args[1]);
    if (PyErr_Occurred()) return NULL;
    if (!job || !name || !PyDict_Check(args[3])) { PyErr_SetString(PyExc_ValueError, "bad argument"); return NULL; }
    if (!PyArray_CheckExact(args[2])) Py_RETURN_NONE;
    PyArrayObject *a = (PyArrayObject *)args[2];
    int ndim = PyArray_NDIM(a);
    if (ndim > FERRY_MAX_DIMS || !PyArray_IS_C_CONTIGUOUS(a)) Py_RETURN_NONE;
    PyObject *code_obj = PyDict_GetItemWithError(args[3], (PyObject *)PyArray_DESCR(a));
    if (!code_obj) {
        if (PyErr_Occurred()) return NULL;
        Py_RETURN_NONE;
    }
    int code = (int)PyLong_AsLong(code_obj);
    if (PyErr_Occurred()) return NULL;
    int64_t shape[FERRY_MAX_DIMS];
    for (int i = 0; i < ndim; i++) shape[i] = PyArray_DIM(a, i);
    const void *data = PyArray_DATA(a);
    size_t nbytes = (size_t)PyArray_NBYTES(a);
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = fc_reply_tensor(job, name, code, ndim, shape, data, nbytes);
    Py_END_ALLOW_THREADS
    return PyLong_FromLong(rc);
}

static PyMethodDef fc_methods[] = {
    {"bind", fc_bind, METH_VARARGS, "bind(call_array, poll, free, worker_next, job_reply_tensor, dtypes): what to call."},
    {"call", (PyCFunction)(void (*)(void))fc_call, METH_FASTCALL, "One-array call; see _fastcall.c."},
    {"next", (PyCFunction)(void (*)(void))fc_next_request, METH_FASTCALL, "The next request, as a view when it is one array."},
    {"reply", (PyCFunction)(void (*)(void))fc_reply, METH_FASTCALL, "Reply with one plain array; None when it is not one."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef fc_module = {
    PyModuleDef_HEAD_INIT, "_fastcall", "The one-array call and the worker's one-array request and reply in C.", -1, fc_methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__fastcall(void) {
    import_array();
    return PyModule_Create(&fc_module);
}
