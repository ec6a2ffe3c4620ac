/* ferry._fastcall: the calls of plain messages and the worker's request and reply without
 * ctypes.
 *
 * Why it exists: through ctypes, `Client.call(array)` spends ~5 µs in Python around a round
 * trip that takes ~4 µs from C (argument objects, the buffer address, building the reply
 * array), and every further tensor of a message tens of µs more (message.py's general path:
 * a ctypes crossing per tensor, names encoded, descriptors turned into arrays one attribute
 * at a time). This module does the same work in C for every *plain* message: up to
 * FC_MAX_TENSORS C-contiguous numeric arrays, one (`input`/`output`) or named (a dict) or,
 * for replies, several in order (a tuple or list). It links nothing: message.py hands it the
 * addresses of the libferry functions that ctypes loaded, so both paths use the same library
 * instance and handles, and the library does every check it does for the general path (names,
 * dtypes, shapes, sizes). Anything else — strings, bytes, tables, big-endian or strided
 * arrays, other objects — is left untouched (the functions return None) for message.py,
 * whose errors name the problem. Built by `make build`; when it is absent client.py and
 * serving.py use ctypes.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#define NPY_NO_DEPRECATED_API NPY_1_7_API_VERSION
#include <numpy/arrayobject.h>
#include <string.h>

#include "ferry.h"

/* Most tensors a message may have to take the compiled path; more go through message.py. */
#define FC_MAX_TENSORS 16
/* The name of a table's schema tensor (ferry.table): tables are message.py's. */
#define FC_TABLE "ferry.table"
/* Reply metadata saying the tensors are a tuple of outputs, in order (docs/protocol.md). */
#define FC_OUTPUTS_KEY "ferry.outputs"
#define FC_OUTPUTS_TUPLE "tuple"

typedef int (*call_array_fn)(ferry_client *, int64_t, const char *, int, int, const int64_t *, const void *, size_t, int64_t,
                             ferry_call **, const ferry_message **, ferry_tensor *, size_t, size_t *);
typedef int (*begin_fn)(ferry_client *, int64_t, ferry_call **);
typedef ferry_writer *(*call_writer_fn)(ferry_call *);
typedef int (*put_tensor_fn)(ferry_writer *, const char *, int, int, const int64_t *, const void *, size_t);
typedef int (*set_meta_fn)(ferry_writer *, const char *, const char *);
typedef int (*poll_fn)(ferry_call *, int64_t, const ferry_message **, ferry_tensor *, size_t, size_t *);
typedef int (*check_fn)(const ferry_call *);
typedef void (*free_fn)(ferry_call *);
typedef size_t (*meta_count_fn)(const ferry_message *);
typedef int (*meta_fn)(const ferry_message *, size_t, const char **, size_t *, const char **, size_t *);
typedef int (*next_fn)(ferry_worker *, int64_t, ferry_job **, ferry_tensor *, size_t, size_t *);
typedef ferry_writer *(*job_writer_fn)(ferry_job *);
typedef int (*job_reply_fn)(ferry_job *);

/* The libferry functions (bind()). */
static struct {
    call_array_fn call_array;
    begin_fn call_begin;
    call_writer_fn call_writer;
    put_tensor_fn put_tensor;
    put_tensor_fn put_tensor_ref;
    set_meta_fn set_meta;
    poll_fn poll;
    check_fn check;
    free_fn free;
    meta_count_fn meta_count;
    meta_fn meta;
    next_fn next;
    job_writer_fn job_writer;
    job_reply_fn job_reply;
} fc;
static int fc_bound;
/* numpy dtype per FERRY_DTYPE_* code (None where a reply needs the general reader). */
static PyObject *fc_dtypes;
/* "output_0" ... as str and as C text: the names of a tuple's outputs. */
static PyObject *fc_output_names[FC_MAX_TENSORS];
static char fc_output_cnames[FC_MAX_TENSORS][16];

/* bind(functions, dtypes): `functions` maps libferry function names to their addresses
 * (from ctypes); `dtypes` is the numpy dtype per FERRY_DTYPE_* code. */
static PyObject *fc_bind(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *functions, *dtypes;
    if (!PyArg_ParseTuple(args, "O!O!", &PyDict_Type, &functions, &PyTuple_Type, &dtypes)) return NULL;
    struct { const char *name; void **slot; } table[] = {
        {"ferry_call_array", (void **)&fc.call_array},   {"ferry_call_begin", (void **)&fc.call_begin},
        {"ferry_call_writer", (void **)&fc.call_writer}, {"ferry_writer_put_tensor", (void **)&fc.put_tensor},
        {"ferry_writer_set_meta", (void **)&fc.set_meta}, {"ferry_call_poll", (void **)&fc.poll},
        {"ferry_call_check", (void **)&fc.check},        {"ferry_call_free", (void **)&fc.free},
        {"ferry_message_meta_count", (void **)&fc.meta_count}, {"ferry_message_meta", (void **)&fc.meta},
        {"ferry_worker_next", (void **)&fc.next},        {"ferry_job_writer", (void **)&fc.job_writer},
        {"ferry_job_reply", (void **)&fc.job_reply},     {"ferry_writer_put_tensor_ref", (void **)&fc.put_tensor_ref},
    };
    void *found[sizeof table / sizeof table[0]];
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++) {
        PyObject *a = PyDict_GetItemString(functions, table[i].name);
        found[i] = a ? PyLong_AsVoidPtr(a) : NULL;
        if (PyErr_Occurred()) return NULL;
        if (!found[i]) return PyErr_Format(PyExc_ValueError, "no address for %s", table[i].name);
    }
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++) *table[i].slot = found[i];
    for (int i = 0; i < FC_MAX_TENSORS; i++) {
        snprintf(fc_output_cnames[i], sizeof fc_output_cnames[i], "output_%d", i);
        if (!fc_output_names[i] && !(fc_output_names[i] = PyUnicode_InternFromString(fc_output_cnames[i]))) return NULL;
    }
    Py_INCREF(dtypes);
    Py_XSETREF(fc_dtypes, dtypes);
    fc_bound = 1;
    Py_RETURN_NONE;
}

#define FC_REQUIRE_BOUND(ret)                                                               \
    if (!fc_bound) {                                                                        \
        PyErr_SetString(PyExc_RuntimeError, "_fastcall.bind() was not called");             \
        return ret;                                                                         \
    }

/* The wire code of a plain array: an exact ndarray, C-contiguous, native byte order, at most
 * FERRY_MAX_DIMS dimensions, of bool, int8-64, uint8-64 or float16/32/64. 0: not plain. */
static int fc_plain_code(PyObject *obj) {
    if (!PyArray_CheckExact(obj)) return 0;
    PyArrayObject *a = (PyArrayObject *)obj;
    if (PyArray_NDIM(a) > FERRY_MAX_DIMS || !PyArray_IS_C_CONTIGUOUS(a) || !PyArray_ISNOTSWAPPED(a)) return 0;
    PyArray_Descr *d = PyArray_DESCR(a);
    if (PyDataType_HASFIELDS(d) || PyDataType_HASSUBARRAY(d)) return 0;
    npy_intp size = PyArray_ITEMSIZE(a);
    switch (d->kind) {
    case 'b': return size == 1 ? FERRY_DTYPE_BOOL : 0;
    case 'i': return size == 1 ? FERRY_DTYPE_INT8 : size == 2 ? FERRY_DTYPE_INT16 : size == 4 ? FERRY_DTYPE_INT32 : size == 8 ? FERRY_DTYPE_INT64 : 0;
    case 'u': return size == 1 ? FERRY_DTYPE_UINT8 : size == 2 ? FERRY_DTYPE_UINT16 : size == 4 ? FERRY_DTYPE_UINT32 : size == 8 ? FERRY_DTYPE_UINT64 : 0;
    case 'f': return size == 2 ? FERRY_DTYPE_FLOAT16 : size == 4 ? FERRY_DTYPE_FLOAT32 : size == 8 ? FERRY_DTYPE_FLOAT64 : 0;
    default: return 0;
    }
}

/* A plain message to write: its tensors, each holding a reference to its array (a caller's
 * dict or list may change once the GIL is released) and to what keeps its name alive. */
typedef struct {
    Py_ssize_t n;
    int tuple;  /* several outputs in order: say so in the metadata */
    PyArrayObject *arrays[FC_MAX_TENSORS];
    PyObject *keep[FC_MAX_TENSORS];
    const char *names[FC_MAX_TENSORS];
    int codes[FC_MAX_TENSORS];
} fc_plan;

static void fc_plan_release(fc_plan *p) {
    for (Py_ssize_t i = 0; i < p->n; i++) {
        Py_XDECREF(p->arrays[i]);
        Py_XDECREF(p->keep[i]);
    }
    p->n = 0;
}

/* Adds one named array; 0 when it is not plain (the plan is released), -1 on error. */
static int fc_plan_add(fc_plan *p, PyObject *key, const char *cname, PyObject *value) {
    int code = fc_plain_code(value);
    if (!code) { fc_plan_release(p); return 0; }
    if (!cname) {
        Py_ssize_t len;
        if (!PyUnicode_CheckExact(key)) { fc_plan_release(p); return 0; }
        cname = PyUnicode_AsUTF8AndSize(key, &len);  /* cached in the str: no copy after the first */
        if (!cname) { PyErr_Clear(); fc_plan_release(p); return 0; }  /* e.g. a lone surrogate: message.py says so */
        if ((Py_ssize_t)strlen(cname) != len || !strcmp(cname, FC_TABLE)) { fc_plan_release(p); return 0; }
    }
    Py_INCREF(value);
    Py_XINCREF(key);
    p->arrays[p->n] = (PyArrayObject *)value;
    p->keep[p->n] = key;
    p->names[p->n] = cname;
    p->codes[p->n] = code;
    p->n++;
    return 1;
}

/* Plans `value` as a message: a plain array (named `single`), a dict of plain arrays, or, when
 * `several` is set, a tuple or list of them (output_0...). 1: planned; 0: not plain. */
static int fc_plan_value(fc_plan *p, PyObject *value, const char *single, int several) {
    p->n = 0;
    p->tuple = 0;
    if (PyArray_CheckExact(value)) return fc_plan_add(p, NULL, single, value);
    if (PyDict_CheckExact(value)) {
        Py_ssize_t size = PyDict_GET_SIZE(value), pos = 0;
        if (size < 1 || size > FC_MAX_TENSORS) return 0;
        PyObject *k, *v;
        while (PyDict_Next(value, &pos, &k, &v)) {
            int r = fc_plan_add(p, k, NULL, v);
            if (r <= 0) return r;
        }
        return 1;
    }
    if (several && (PyTuple_CheckExact(value) || PyList_CheckExact(value))) {
        Py_ssize_t size = PySequence_Fast_GET_SIZE(value);
        if (size < 1 || size > FC_MAX_TENSORS) return 0;
        for (Py_ssize_t i = 0; i < size; i++) {
            int r = fc_plan_add(p, NULL, fc_output_cnames[i], PySequence_Fast_GET_ITEM(value, i));
            if (r <= 0) return r;
        }
        p->tuple = 1;
        return 1;
    }
    return 0;
}

/* Writes the planned tensors (the library checks each and copies it, or with `by_ref`, where
 * the transport sends from the caller's memory, leaves a large one where it is until the call
 * is sent: only for a call sent before the plan is released); call without the GIL. */
static int fc_plan_write(const fc_plan *p, ferry_writer *w, int by_ref) {
    if (!w) return FERRY_EINVAL;
    for (Py_ssize_t i = 0; i < p->n; i++) {
        PyArrayObject *a = p->arrays[i];
        int64_t shape[FERRY_MAX_DIMS];
        int ndim = PyArray_NDIM(a);
        for (int d = 0; d < ndim; d++) shape[d] = PyArray_DIM(a, d);
        int rc = (by_ref ? fc.put_tensor_ref : fc.put_tensor)(w, p->names[i], p->codes[i], ndim, shape, PyArray_DATA(a), (size_t)PyArray_NBYTES(a));
        if (rc != FERRY_OK) return rc;
    }
    return p->tuple ? fc.set_meta(w, FC_OUTPUTS_KEY, FC_OUTPUTS_TUPLE) : FERRY_OK;
}

static int fc_is_table(const ferry_tensor *t) {
    return t->name_len == sizeof FC_TABLE - 1 && !memcmp(t->name, FC_TABLE, sizeof FC_TABLE - 1);
}

/* The numpy dtype of a numeric tensor (borrowed), or NULL. */
static PyObject *fc_descr(const ferry_tensor *t) {
    if (t->dtype <= 0 || t->dtype >= PyTuple_GET_SIZE(fc_dtypes) || t->ndim < 0 || t->ndim > FERRY_MAX_DIMS) return NULL;
    PyObject *d = PyTuple_GET_ITEM(fc_dtypes, t->dtype);
    return d == Py_None ? NULL : d;
}

/* The reply's outputs as the client returns them, copied out of the reply: one array, a
 * tuple (the reply's metadata says `ferry.outputs=tuple`) or a dict by name. NULL without an
 * exception when the reply is not plain (client.py reads it); NULL with one on failure. */
static PyObject *fc_read_reply(const ferry_message *reply, const ferry_tensor *ts, size_t count) {
    if (count < 1 || count > FC_MAX_TENSORS) return NULL;
    int tuple = 0;
    size_t metas = fc.meta_count(reply);
    for (size_t i = 0; i < metas; i++) {
        const char *k, *v;
        size_t kl, vl;
        if (fc.meta(reply, i, &k, &kl, &v, &vl) != FERRY_OK) return NULL;
        if (kl == sizeof FC_OUTPUTS_KEY - 1 && !memcmp(k, FC_OUTPUTS_KEY, kl)) {
            if (vl != sizeof FC_OUTPUTS_TUPLE - 1 || memcmp(v, FC_OUTPUTS_TUPLE, vl)) return NULL;
            tuple = 1;
        }
    }
    for (size_t i = 0; i < count; i++)
        if (!fc_descr(&ts[i]) || fc_is_table(&ts[i])) return NULL;
    PyObject *out = tuple ? PyTuple_New((Py_ssize_t)count) : count > 1 ? PyDict_New() : NULL;
    if ((tuple || count > 1) && !out) return NULL;
    for (size_t i = 0; i < count; i++) {
        const ferry_tensor *t = &ts[i];
        npy_intp dims[FERRY_MAX_DIMS];
        for (int d = 0; d < t->ndim; d++) dims[d] = (npy_intp)t->shape[d];
        PyObject *descr = fc_descr(t);
        Py_INCREF(descr);  /* PyArray_NewFromDescr steals it */
        PyObject *arr = PyArray_NewFromDescr(&PyArray_Type, (PyArray_Descr *)descr, t->ndim, dims, NULL, NULL, 0, NULL);
        if (!arr) { Py_XDECREF(out); return NULL; }
        /* The library checked nbytes against dtype and shape; check again before copying. */
        if ((size_t)PyArray_NBYTES((PyArrayObject *)arr) != t->nbytes) {
            Py_DECREF(arr);
            Py_XDECREF(out);
            return NULL;
        }
        if (t->nbytes) memcpy(PyArray_DATA((PyArrayObject *)arr), t->data, t->nbytes);
        if (!out) return arr;
        if (tuple) {
            PyTuple_SET_ITEM(out, (Py_ssize_t)i, arr);
            continue;
        }
        PyObject *name = PyUnicode_DecodeUTF8(t->name, (Py_ssize_t)t->name_len, NULL);
        int bad = !name || PyDict_SetItem(out, name, arr) < 0;
        Py_XDECREF(name);
        Py_DECREF(arr);
        if (bad) { Py_DECREF(out); return NULL; }
    }
    return out;
}

/* The shared end of a call: waits in steps (running signal handlers, e.g. Ctrl-C, between
 * them), then returns the reply's outputs (the call freed, *call_out NULL) or the status as
 * an int with the call left in *call_out for client.py (an error to raise, or a reply that is
 * not plain to read). */
static PyObject *fc_finish(int rc, ferry_call **call_out, const ferry_message **reply_out, ferry_tensor *tensors, size_t cap,
                           size_t *count_out, int64_t step_ms) {
    while (rc == FERRY_EAGAIN) {
        if (PyErr_CheckSignals() < 0) {
            fc.free(*call_out);  /* gives the call up properly */
            *call_out = NULL;
            return NULL;
        }
        ferry_call *call = *call_out;
        Py_BEGIN_ALLOW_THREADS
        rc = fc.poll(call, step_ms, reply_out, tensors, cap, count_out);
        Py_END_ALLOW_THREADS
    }
    if (rc != FERRY_OK || *count_out > cap) return PyLong_FromLong(rc);
    PyObject *out = fc_read_reply(*reply_out, tensors, *count_out);
    if (!out) {
        if (PyErr_Occurred()) return NULL;  /* client.py frees the call */
        return PyLong_FromLong(rc);
    }
    /* Copied: usable unless the segment lost its file meanwhile (then the call stays for
     * client.py to raise the library's error). */
    int intact = fc.check(*call_out);
    if (intact != FERRY_OK) { Py_DECREF(out); return PyLong_FromLong(intact); }
    fc.free(*call_out);
    *call_out = NULL;
    return out;
}

/* The out-parameters client.py keeps per thread. */
typedef struct {
    ferry_call **call_out;
    const ferry_message **reply_out;
    ferry_tensor *tensors;
    size_t cap;
    size_t *count_out;
} fc_outs;

static int fc_parse_outs(PyObject *const *args, fc_outs *o) {
    o->call_out = PyLong_AsVoidPtr(args[0]);
    o->reply_out = PyLong_AsVoidPtr(args[1]);
    o->tensors = PyLong_AsVoidPtr(args[2]);
    o->cap = PyLong_AsSize_t(args[3]);
    o->count_out = PyLong_AsVoidPtr(args[4]);
    if (PyErr_Occurred()) return -1;
    if (!o->call_out || !o->reply_out || !o->tensors || !o->count_out || o->cap < 1) {
        PyErr_SetString(PyExc_ValueError, "NULL argument");
        return -1;
    }
    return 0;
}

/* call(handle, timeout_ms, name, dtype_code, array, step_ms, call_out, reply_out, tensors, cap, count_out)
 *
 * The one-array call: ferry_call_array (begin, copy in, send, first wait) in one crossing.
 * Returns the reply's outputs when the reply is plain (see fc_read_reply; the call is freed
 * and *call_out set to NULL). Otherwise returns the status code as an int and leaves the call
 * (possibly NULL) in *call_out, with *reply_out, the tensors and *count_out filled as
 * ferry_call_poll fills them, for client.py to raise the error or read the reply and free
 * the call. */
static PyObject *fc_call(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 11) { PyErr_SetString(PyExc_TypeError, "call() takes 11 arguments"); return NULL; }
    FC_REQUIRE_BOUND(NULL)
    void *client = PyLong_AsVoidPtr(args[0]);
    long long timeout_ms = PyLong_AsLongLong(args[1]);
    const char *name = PyBytes_AsString(args[2]);
    int code = (int)PyLong_AsLong(args[3]);
    long long step_ms = PyLong_AsLongLong(args[5]);
    fc_outs o;
    if (PyErr_Occurred() || fc_parse_outs(args + 6, &o) < 0) return NULL;
    if (!client || !name) { PyErr_SetString(PyExc_ValueError, "NULL argument"); return NULL; }
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
    *o.call_out = NULL;
    Py_BEGIN_ALLOW_THREADS
    rc = fc.call_array(client, timeout_ms, name, code, view.ndim, shape, view.buf, (size_t)view.len, step_ms, o.call_out, o.reply_out,
                       o.tensors, o.cap, o.count_out);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);
    return fc_finish(rc, o.call_out, o.reply_out, o.tensors, o.cap, o.count_out, step_ms);
}

/* call_many(handle, timeout_ms, inputs, step_ms, call_out, reply_out, tensors, cap, count_out)
 *
 * A call whose inputs are a dict of up to FC_MAX_TENSORS plain arrays: begin, each array
 * copied into the slot by the library, send and wait, without a Python step per tensor.
 * Returns None when `inputs` is not such a dict (nothing was begun: client.py's general path
 * takes it); otherwise as call(). */
static PyObject *fc_call_many(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 9) { PyErr_SetString(PyExc_TypeError, "call_many() takes 9 arguments"); return NULL; }
    FC_REQUIRE_BOUND(NULL)
    void *client = PyLong_AsVoidPtr(args[0]);
    long long timeout_ms = PyLong_AsLongLong(args[1]);
    long long step_ms = PyLong_AsLongLong(args[3]);
    fc_outs o;
    if (PyErr_Occurred() || fc_parse_outs(args + 4, &o) < 0) return NULL;
    if (!client) { PyErr_SetString(PyExc_ValueError, "NULL argument"); return NULL; }
    fc_plan plan;
    int planned = fc_plan_value(&plan, args[2], NULL, 0);
    if (planned < 0) return NULL;
    if (!planned || plan.tuple) { fc_plan_release(&plan); Py_RETURN_NONE; }
    int rc;
    *o.call_out = NULL;
    Py_BEGIN_ALLOW_THREADS
    rc = fc.call_begin(client, timeout_ms, o.call_out);
    /* The plan holds every array until after the poll below sends the call. */
    if (rc == FERRY_OK) rc = fc_plan_write(&plan, fc.call_writer(*o.call_out), 1);
    if (rc == FERRY_OK) rc = fc.poll(*o.call_out, step_ms, o.reply_out, o.tensors, o.cap, o.count_out);
    Py_END_ALLOW_THREADS
    fc_plan_release(&plan);
    return fc_finish(rc, o.call_out, o.reply_out, o.tensors, o.cap, o.count_out, step_ms);
}

/* next(worker, timeout_ms, job_out, tensors, cap, count_out, origin, slot_size, bases, owners, single)
 *
 * ferry_worker_next with the GIL released. When the request is plain — 1 to FC_MAX_TENSORS
 * numeric tensors, no table, whose bytes lie wholly inside one slot k (bases[k] ...
 * bases[k] + slot_size) — returns (k, value): read-only arrays of those bytes whose base is
 * owners[k], as serving.py's ctypes path builds them; value is the one array when the request
 * has one tensor and `single` is set, else a dict by name. Otherwise returns the status code
 * as an int, with *job_out, the tensors and *count_out filled as ferry_worker_next fills
 * them, for serving.py's general path. */
static PyObject *fc_next_request(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 11) { PyErr_SetString(PyExc_TypeError, "next() takes 11 arguments"); return NULL; }
    FC_REQUIRE_BOUND(NULL)
    void *worker = PyLong_AsVoidPtr(args[0]);
    long long timeout_ms = PyLong_AsLongLong(args[1]);
    ferry_job **job_out = PyLong_AsVoidPtr(args[2]);
    ferry_tensor *tensors = PyLong_AsVoidPtr(args[3]);
    size_t cap = PyLong_AsSize_t(args[4]);
    size_t *count_out = PyLong_AsVoidPtr(args[5]);
    uintptr_t origin = (uintptr_t)PyLong_AsVoidPtr(args[6]);
    size_t slot_size = PyLong_AsSize_t(args[7]);
    PyObject *bases = args[8], *owners = args[9];
    int single = PyObject_IsTrue(args[10]);
    if (PyErr_Occurred()) return NULL;
    if (!worker || !job_out || !tensors || !count_out || cap < 1 || !slot_size || !PyTuple_Check(bases) || !PyTuple_Check(owners) ||
        PyTuple_GET_SIZE(bases) != PyTuple_GET_SIZE(owners)) {
        PyErr_SetString(PyExc_ValueError, "bad argument");
        return NULL;
    }
    int rc;
    *job_out = NULL;
    Py_BEGIN_ALLOW_THREADS
    rc = fc.next(worker, timeout_ms, job_out, tensors, cap, count_out);
    Py_END_ALLOW_THREADS
    size_t count = *count_out;
    if (rc != FERRY_OK || count < 1 || count > cap || count > FC_MAX_TENSORS) return PyLong_FromLong(rc);
    uintptr_t first = (uintptr_t)tensors[0].data;
    if (!first || first < origin) return PyLong_FromLong(rc);
    Py_ssize_t k = (Py_ssize_t)((first - origin) / slot_size);
    if (k >= PyTuple_GET_SIZE(bases)) return PyLong_FromLong(rc);
    uintptr_t base = (uintptr_t)PyLong_AsVoidPtr(PyTuple_GET_ITEM(bases, k));
    if (PyErr_Occurred()) return NULL;
    for (size_t i = 0; i < count; i++) {
        const ferry_tensor *t = &tensors[i];
        uintptr_t addr = (uintptr_t)t->data;
        if (!fc_descr(t) || fc_is_table(t) || !addr) return PyLong_FromLong(rc);
        /* The library validated the message; each view must still stay inside the slot's mapping. */
        if (addr < base || addr - base > slot_size || t->nbytes > slot_size - (addr - base)) return PyLong_FromLong(rc);
    }
    PyObject *owner = PyTuple_GET_ITEM(owners, k);
    int one = count == 1 && single;
    PyObject *value = one ? NULL : PyDict_New();
    if (!one && !value) return NULL;
    for (size_t i = 0; i < count; i++) {
        const ferry_tensor *t = &tensors[i];
        npy_intp dims[FERRY_MAX_DIMS];
        for (int d = 0; d < t->ndim; d++) dims[d] = (npy_intp)t->shape[d];
        PyObject *descr = fc_descr(t);
        Py_INCREF(descr);  /* PyArray_NewFromDescr steals it */
        PyObject *view = PyArray_NewFromDescr(&PyArray_Type, (PyArray_Descr *)descr, t->ndim, dims, NULL, (void *)t->data,
                                              NPY_ARRAY_C_CONTIGUOUS | NPY_ARRAY_ALIGNED, NULL);
        if (!view) { Py_XDECREF(value); return NULL; }
        if ((size_t)PyArray_NBYTES((PyArrayObject *)view) != t->nbytes) {
            Py_DECREF(view);
            Py_XDECREF(value);
            return PyLong_FromLong(rc);
        }
        PyArray_CLEARFLAGS((PyArrayObject *)view, NPY_ARRAY_WRITEABLE);
        Py_INCREF(owner);
        if (PyArray_SetBaseObject((PyArrayObject *)view, owner) < 0) {  /* steals owner */
            Py_DECREF(view);
            Py_XDECREF(value);
            return NULL;
        }
        if (one) { value = view; break; }
        PyObject *name = PyUnicode_DecodeUTF8(t->name, (Py_ssize_t)t->name_len, NULL);
        int bad = !name || PyDict_SetItem(value, name, view) < 0;
        Py_XDECREF(name);
        Py_DECREF(view);
        if (bad) { Py_DECREF(value); return NULL; }
    }
    PyObject *slot = PyLong_FromSsize_t(k);
    if (!slot) { Py_DECREF(value); return NULL; }
    PyObject *out = PyTuple_New(2);
    if (!out) { Py_DECREF(slot); Py_DECREF(value); return NULL; }
    PyTuple_SET_ITEM(out, 0, slot);
    PyTuple_SET_ITEM(out, 1, value);
    return out;
}

/* reply(job, result, finish[, model]): writes a plain result into the job's reply — one array (named
 * `output`), a dict of arrays by name, or a tuple or list of arrays (output_0..., with
 * `ferry.outputs=tuple` in the metadata) — each copied and checked by the library, with the
 * GIL released. With `finish`, also sends the reply (ferry_job_reply; the job is gone after
 * it, whatever it returned: a reply that failed reached the client as an error), and returns
 * 0. Without, returns 0 and leaves the job for serving.py to send (ferry_job_reply), or to
 * fail. A status other than 0 means the writing failed (e.g. too large for the slot): the job
 * is untouched and open, ferry_last_error() says why. None: `result` is not plain (nothing
 * was written; the job is untouched). */
static PyObject *fc_reply(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 3 && nargs != 4) { PyErr_SetString(PyExc_TypeError, "reply() takes 3 or 4 arguments"); return NULL; }
    FC_REQUIRE_BOUND(NULL)
    void *job = PyLong_AsVoidPtr(args[0]);
    int finish = PyObject_IsTrue(args[2]);
    /* The model's identity for the reply's metadata (ferry.model), or None. */
    const char *model = nargs == 4 && args[3] != Py_None ? PyBytes_AsString(args[3]) : NULL;
    if (PyErr_Occurred()) return NULL;
    if (!job) { PyErr_SetString(PyExc_ValueError, "bad argument"); return NULL; }
    fc_plan plan;
    int planned = fc_plan_value(&plan, args[1], "output", 1);
    if (planned < 0) return NULL;
    if (!planned) Py_RETURN_NONE;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    ferry_writer *w = fc.job_writer(job);
    rc = fc_plan_write(&plan, w, 0);
    if (rc == FERRY_OK && model) rc = fc.set_meta(w, "ferry.model", model);
    if (rc == FERRY_OK && finish) (void)fc.job_reply(job);
    Py_END_ALLOW_THREADS
    fc_plan_release(&plan);
    return PyLong_FromLong(rc);
}
/* write(writer, value) -> status | None: a plain value (one array named `input`, or a dict of
 * arrays) written through a borrowed ferry_writer, each tensor copied and checked by the
 * library; None when it is not plain (nothing written). For callers that begin and send
 * calls themselves (the asyncio client). */
static PyObject *fc_write(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 2) { PyErr_SetString(PyExc_TypeError, "write() takes 2 arguments"); return NULL; }
    FC_REQUIRE_BOUND(NULL)
    ferry_writer *w = PyLong_AsVoidPtr(args[0]);
    if (PyErr_Occurred()) return NULL;
    if (!w) { PyErr_SetString(PyExc_ValueError, "NULL writer"); return NULL; }
    fc_plan plan;
    int planned = fc_plan_value(&plan, args[1], "input", 0);
    if (planned < 0) return NULL;
    if (!planned) Py_RETURN_NONE;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = fc_plan_write(&plan, w, 0);  /* sent later, by the caller: copied now */
    Py_END_ALLOW_THREADS
    fc_plan_release(&plan);
    return PyLong_FromLong(rc);
}

/* read(reply, tensors, count) -> outputs | None: a reply's outputs as the client returns
 * them (see fc_read_reply), copied; None when the reply is not plain. `tensors` and `count`
 * as ferry_call_poll filled them. */
static PyObject *fc_read(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 3) { PyErr_SetString(PyExc_TypeError, "read() takes 3 arguments"); return NULL; }
    FC_REQUIRE_BOUND(NULL)
    const ferry_message *reply = PyLong_AsVoidPtr(args[0]);
    const ferry_tensor *tensors = PyLong_AsVoidPtr(args[1]);
    size_t count = PyLong_AsSize_t(args[2]);
    if (PyErr_Occurred()) return NULL;
    if (!reply || !tensors) { PyErr_SetString(PyExc_ValueError, "NULL argument"); return NULL; }
    PyObject *out = fc_read_reply(reply, tensors, count);
    if (!out && !PyErr_Occurred()) Py_RETURN_NONE;
    return out;
}

/* held(tensors, arg, result, slot_obj, slot_baseline) -> bool: whether anything besides the
 * worker's loop still holds a request's arrays after the model returned — a value of the dict
 * held elsewhere (beyond the dict, `arg` and `result` themselves or as the result's base), or
 * the slot object held by more views than the dict's. serving.py's check for a dict request
 * (the one-array check is two refcounts in Python); `slot_baseline` is the slot object's
 * count with no request array alive plus one (Worker._map_slot). */
static PyObject *fc_held(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 5 || !PyDict_Check(args[0])) { PyErr_SetString(PyExc_TypeError, "held(dict, arg, result, slot_obj, baseline)"); return NULL; }
    PyObject *tensors = args[0], *arg = args[1], *result = args[2], *slot_obj = args[3];
    Py_ssize_t baseline = PyLong_AsSsize_t(args[4]);
    if (baseline < 0 && PyErr_Occurred()) return NULL;
    PyObject *result_base = PyArray_Check(result) ? PyArray_BASE((PyArrayObject *)result) : NULL;
    Py_ssize_t pos = 0, direct = 0;
    PyObject *k, *v;
    while (PyDict_Next(tensors, &pos, &k, &v)) {
        Py_ssize_t expected = 1 + (v == arg) + (v == result) + (v == result_base);
        if (Py_REFCNT(v) > expected) Py_RETURN_TRUE;
        if (PyArray_Check(v) && PyArray_BASE((PyArrayObject *)v) == slot_obj) direct++;
    }
    if (Py_REFCNT(slot_obj) > baseline - 1 + direct) Py_RETURN_TRUE;
    Py_RETURN_FALSE;
}


/* ---- strings: numpy <U arrays <-> the wire's (u64 offsets, UTF-8 text) ------------------
 *
 * Why in C: numpy has no UTF-32 -> UTF-8 transcoder, and doing it with whole-array numpy
 * operations (message.py's fallback) makes ~10 passes over the data plus a Python str of every
 * character: ~95 ms each way for 1M 4-character strings, against ~2 ms to move 1M float64.
 * These two loops make one pass to size the output and one to fill it. */

/* pack_str(arr) -> (offsets uint64[n+1], text uint8[]) for a C-contiguous native <U array
 * (flattened; trailing NULs are numpy's padding and are dropped, as numpy does), or None when
 * a code point cannot be encoded. One pass into a worst-case buffer (4 bytes a character);
 * the text returned is a view of its used part. An all-ASCII string is a narrowing copy,
 * which the compiler vectorises. */
static PyObject *fc_pack_str(PyObject *Py_UNUSED(self), PyObject *arg) {
    if (!PyArray_Check(arg)) { PyErr_SetString(PyExc_TypeError, "pack_str takes a numpy array"); return NULL; }
    PyArrayObject *a = (PyArrayObject *)arg;
    PyArray_Descr *d = PyArray_DESCR(a);
    if (d->type_num != NPY_UNICODE || !PyArray_ISCARRAY_RO(a) || PyArray_ISBYTESWAPPED(a)) Py_RETURN_NONE;
    npy_intp n = PyArray_SIZE(a);
    npy_intp width = PyArray_ITEMSIZE(a) / 4;
    const uint32_t *cps = (const uint32_t *)PyArray_DATA(a);
    npy_intp dims1 = n + 1;
    if (width > 0 && n > (NPY_MAX_INTP / 4) / width) { PyErr_SetString(PyExc_MemoryError, "string array too large"); return NULL; }
    npy_intp cap = n * width * 4;
    PyArrayObject *offsets = (PyArrayObject *)PyArray_SimpleNew(1, &dims1, NPY_UINT64);
    if (!offsets) return NULL;
    PyArrayObject *buf = (PyArrayObject *)PyArray_SimpleNew(1, &cap, NPY_UINT8);
    if (!buf) { Py_DECREF(offsets); return NULL; }
    uint64_t *o = (uint64_t *)PyArray_DATA(offsets);
    uint8_t *t0 = (uint8_t *)PyArray_DATA(buf), *t = t0;
    int bad = 0, uniform = width > 0;
    o[0] = 0;
    Py_BEGIN_ALLOW_THREADS
    /* Codes, ids, tickers: every string ASCII and as long as the dtype is wide. Then the
     * text is one narrowing copy of the whole array and the offsets a multiplication. */
    for (npy_intp i = 0; i < n && uniform; i++) uniform = cps[i * width + width - 1] != 0;
    if (uniform) {
        uint32_t any = 0;
        npy_intp total = n * width;
        for (npy_intp k = 0; k < total; k++) any |= cps[k];
        if (any < 0x80) {
            for (npy_intp k = 0; k < total; k++) t0[k] = (uint8_t)cps[k];
            for (npy_intp i = 0; i <= n; i++) o[i] = (uint64_t)(i * width);
            t = t0 + total;
            n = 0;  /* done */
        }
    }
    for (npy_intp i = 0; i < n && !bad; i++) {
        const uint32_t *row = cps + i * width;
        npy_intp len = width;
        while (len > 0 && row[len - 1] == 0) len--;
        uint32_t any = 0;
        for (npy_intp k = 0; k < len; k++) any |= row[k];
        if (any < 0x80) {
            for (npy_intp k = 0; k < len; k++) t[k] = (uint8_t)row[k];
            t += len;
        } else {
            for (npy_intp k = 0; k < len; k++) {
                uint32_t c = row[k];
                if (c < 0x80) *t++ = (uint8_t)c;
                else if (c < 0x800) { *t++ = 0xC0 | (c >> 6); *t++ = 0x80 | (c & 0x3F); }
                else if (c >= 0xD800 && c <= 0xDFFF) { bad = 1; break; }
                else if (c < 0x10000) { *t++ = 0xE0 | (c >> 12); *t++ = 0x80 | ((c >> 6) & 0x3F); *t++ = 0x80 | (c & 0x3F); }
                else if (c <= 0x10FFFF) { *t++ = 0xF0 | (c >> 18); *t++ = 0x80 | ((c >> 12) & 0x3F); *t++ = 0x80 | ((c >> 6) & 0x3F); *t++ = 0x80 | (c & 0x3F); }
                else { bad = 1; break; }
            }
        }
        o[i + 1] = (uint64_t)(t - t0);
    }
    Py_END_ALLOW_THREADS
    if (bad) { Py_DECREF(offsets); Py_DECREF(buf); Py_RETURN_NONE; }
    PyObject *slice = PySlice_New(NULL, PyLong_FromSsize_t((Py_ssize_t)(t - t0)), NULL);
    if (!slice) { Py_DECREF(offsets); Py_DECREF(buf); return NULL; }
    PyObject *text = PyObject_GetItem((PyObject *)buf, slice);
    Py_DECREF(slice);
    Py_DECREF(buf);
    if (!text) { Py_DECREF(offsets); return NULL; }
    return Py_BuildValue("(NN)", offsets, text);
}

/* Decodes one UTF-8 sequence at s (< end) into *c; returns its length, 0 when malformed
 * (overlong, surrogate, past U+10FFFF, truncated): strict, like Python's decoder. */
static inline int fc_utf8_next(const uint8_t *s, const uint8_t *end, uint32_t *c) {
    uint8_t b = s[0];
    if (b < 0x80) { *c = b; return 1; }
    int n; uint32_t v, min;
    if ((b & 0xE0) == 0xC0) { n = 2; v = b & 0x1F; min = 0x80; }
    else if ((b & 0xF0) == 0xE0) { n = 3; v = b & 0x0F; min = 0x800; }
    else if ((b & 0xF8) == 0xF0) { n = 4; v = b & 0x07; min = 0x10000; }
    else return 0;
    if (end - s < n) return 0;
    for (int k = 1; k < n; k++) {
        if ((s[k] & 0xC0) != 0x80) return 0;
        v = (v << 6) | (s[k] & 0x3F);
    }
    if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) return 0;
    *c = v;
    return n;
}

/* unpack_str(offsets_addr, text_addr, text_len, count) -> a <U{width} array of `count`
 * strings (width: the longest, in characters), or None when it would not be exact (a string
 * ending in NUL, which fixed-width numpy strings drop) or too large. The text was validated
 * (the library checks every string tensor it reads, and packed columns are checked when
 * written); the offsets are checked again here, and a malformed byte still cannot make this
 * read or write out of bounds (it decodes as U+FFFD). Pass 1 counts characters (bytes that
 * are not continuation bytes), pass 2 widens ASCII strings and decodes the others. */
static PyObject *fc_unpack_str(PyObject *Py_UNUSED(self), PyObject *args) {
    unsigned long long oaddr, taddr, tlen;
    Py_ssize_t count;
    if (!PyArg_ParseTuple(args, "KKKn", &oaddr, &taddr, &tlen, &count)) return NULL;
    if (count < 0) { PyErr_SetString(PyExc_ValueError, "negative count"); return NULL; }
    const uint64_t *o = (const uint64_t *)(uintptr_t)oaddr;
    const uint8_t *text = (const uint8_t *)(uintptr_t)taddr;
    npy_intp width = 0;
    int err = 0, nul = 0;
    int ascii = 0;
    Py_BEGIN_ALLOW_THREADS
    if (count > 0 && o[0] != 0) err = 1;
    for (Py_ssize_t i = 0; i < count && !err; i++) {  /* offsets, longest in bytes, trailing NULs */
        uint64_t a = o[i], b = o[i + 1];
        if (b < a || b > tlen) { err = 1; break; }
        if (b > a && text[b - 1] == 0) nul = 1;
        if ((npy_intp)(b - a) > width) width = (npy_intp)(b - a);
    }
    if (!err && count > 0) {
        /* All ASCII (the common case): characters are bytes. Otherwise count characters
         * (bytes that are not continuation bytes) string by string. */
        uint8_t any = 0;
        uint64_t used = o[count];
        for (uint64_t k = 0; k < used; k++) any |= text[k];
        ascii = any < 0x80;
        if (!ascii) {
            width = 0;
            for (Py_ssize_t i = 0; i < count; i++) {
                npy_intp cont = 0;
                for (uint64_t k = o[i]; k < o[i + 1]; k++) cont += (text[k] & 0xC0) == 0x80;
                npy_intp chars = (npy_intp)(o[i + 1] - o[i]) - cont;
                if (chars > width) width = chars;
            }
        }
    }
    Py_END_ALLOW_THREADS
    if (err) { PyErr_SetString(PyExc_ValueError, "string offsets out of order or past the text"); return NULL; }
    if (nul) Py_RETURN_NONE;
    if (width == 0) width = 1;  /* numpy's <U1 holds empty strings, as np.array([""]) does */
    if ((uint64_t)count * (uint64_t)width * 4 > ((uint64_t)1 << 32)) Py_RETURN_NONE;
    PyArray_Descr *d = PyArray_DescrNewFromType(NPY_UNICODE);
    if (!d) return NULL;
#if NPY_ABI_VERSION >= 0x02000000
    PyDataType_SET_ELSIZE(d, width * 4);
#else
    d->elsize = (int)(width * 4);
#endif
    npy_intp dims = count;
    PyArrayObject *out = (PyArrayObject *)PyArray_Empty(1, &dims, d, 0);
    if (!out) return NULL;
    uint32_t *dst = (uint32_t *)PyArray_DATA(out);
    Py_BEGIN_ALLOW_THREADS
    if (ascii && count > 0 && o[count] == (uint64_t)count * (uint64_t)width) {
        /* Every string as long as the longest: one widening copy of the whole text. */
        npy_intp total = (npy_intp)o[count];
        int same = 1;
        for (Py_ssize_t i = 0; i <= count && same; i++) same = o[i] == (uint64_t)i * (uint64_t)width;
        if (same) {
            for (npy_intp k = 0; k < total; k++) dst[k] = text[k];
            count = 0;  /* done */
        }
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        const uint8_t *s = text + o[i], *end = text + o[i + 1];
        uint32_t *row = dst + i * width;
        npy_intp k = 0, nb = end - s;
        uint8_t any = 0;
        for (npy_intp j = 0; j < nb; j++) any |= s[j];
        if (any < 0x80) {
            for (; k < nb; k++) row[k] = s[k];
        } else {
            while (s < end && k < width) {
                uint32_t c = 0xFFFD;
                int step = fc_utf8_next(s, end, &c);
                if (!step) { step = 1; c = 0xFFFD; }
                s += step;
                row[k++] = c;
            }
        }
        for (; k < width; k++) row[k] = 0;
    }
    Py_END_ALLOW_THREADS
    return (PyObject *)out;
}

static PyMethodDef fc_methods[] = {
    {"bind", fc_bind, METH_VARARGS, "bind(functions, dtypes): the libferry functions by name and the numpy dtype per code."},
    {"call", (PyCFunction)(void (*)(void))fc_call, METH_FASTCALL, "One-array call; see _fastcall.c."},
    {"call_many", (PyCFunction)(void (*)(void))fc_call_many, METH_FASTCALL, "A call with a dict of plain arrays; None when it is not one."},
    {"next", (PyCFunction)(void (*)(void))fc_next_request, METH_FASTCALL, "The next request, as views when it is plain."},
    {"reply", (PyCFunction)(void (*)(void))fc_reply, METH_FASTCALL, "Writes (and sends) a plain result; None when it is not one."},
    {"write", (PyCFunction)(void (*)(void))fc_write, METH_FASTCALL, "Writes a plain value through a writer; None when it is not plain."},
    {"read", (PyCFunction)(void (*)(void))fc_read, METH_FASTCALL, "A plain reply's outputs, copied; None when it is not plain."},
    {"held", (PyCFunction)(void (*)(void))fc_held, METH_FASTCALL, "Whether a dict request's arrays are held beyond the worker's loop."},
    {"pack_str", fc_pack_str, METH_O, "pack_str(arr) -> (offsets, text) of a <U array, or None."},
    {"unpack_str", fc_unpack_str, METH_VARARGS, "unpack_str(offsets_addr, text_addr, text_len, count) -> <U array, or None."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef fc_module = {
    PyModuleDef_HEAD_INIT, "_fastcall", "Plain messages (arrays, dicts and tuples of arrays) called, taken and answered in C.", -1, fc_methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__fastcall(void) {
    import_array();
    return PyModule_Create(&fc_module);
}
