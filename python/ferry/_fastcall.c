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
typedef int (*check_fn)(const ferry_call *);

static call_array_fn fc_call_array;
static poll_fn fc_poll;
static free_fn fc_free;
static next_fn fc_next;
static reply_tensor_fn fc_reply_tensor;
static check_fn fc_check;
/* numpy dtype per FERRY_DTYPE_* code (None where a reply needs the general reader). */
static PyObject *fc_dtypes;

/* bind(call_array, poll, free, worker_next, job_reply_tensor, dtypes): the libferry functions
 * to use (addresses from ctypes) and the numpy dtype per FERRY_DTYPE_* code. */
static PyObject *fc_bind(PyObject *self, PyObject *args) {
    (void)self;
    unsigned long long a, p, f, n, r, c;
    PyObject *dtypes;
    if (!PyArg_ParseTuple(args, "KKKKKKO!", &a, &p, &f, &n, &r, &c, &PyTuple_Type, &dtypes)) return NULL;
    if (!a || !p || !f || !n || !r || !c) { PyErr_SetString(PyExc_ValueError, "NULL function address"); return NULL; }
    fc_check = (check_fn)(uintptr_t)c;
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
        /* Copied: usable unless the segment lost its file meanwhile (then the call stays for
         * client.py to raise the library's error). */
        int intact = fc_check(*call_out);
        if (intact != FERRY_OK) { Py_DECREF(out); return PyLong_FromLong(intact); }
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
    {"bind", fc_bind, METH_VARARGS, "bind(call_array, poll, free, worker_next, job_reply_tensor, call_check, dtypes): what to call."},
    {"call", (PyCFunction)(void (*)(void))fc_call, METH_FASTCALL, "One-array call; see _fastcall.c."},
    {"next", (PyCFunction)(void (*)(void))fc_next_request, METH_FASTCALL, "The next request, as a view when it is one array."},
    {"reply", (PyCFunction)(void (*)(void))fc_reply, METH_FASTCALL, "Reply with one plain array; None when it is not one."},
    {"pack_str", fc_pack_str, METH_O, "pack_str(arr) -> (offsets, text) of a <U array, or None."},
    {"unpack_str", fc_unpack_str, METH_VARARGS, "unpack_str(offsets_addr, text_addr, text_len, count) -> <U array, or None."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef fc_module = {
    PyModuleDef_HEAD_INIT, "_fastcall", "The one-array call and the worker's one-array request and reply in C.", -1, fc_methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__fastcall(void) {
    import_array();
    return PyModule_Create(&fc_module);
}
