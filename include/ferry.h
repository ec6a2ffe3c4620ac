/*
 * ferry.h — the C interface of libferry: hand tensors to a model in another process.
 *
 * Conventions (stable across minor versions):
 *   - Every symbol starts with `ferry_`, every macro with `FERRY_`.
 *   - Functions that can fail return an `int` status: FERRY_OK (0) or a positive FERRY_E*
 *     code. On failure `ferry_last_error()` describes what went wrong, in the calling thread.
 *   - Objects are opaque handles created by `ferry_<type>_new` (or `_begin`/`_recv`) through an
 *     out-parameter and destroyed by `ferry_<type>_free`. `_free` accepts NULL.
 *   - Ownership: a handle returned through an out-parameter belongs to the caller until it is
 *     freed or consumed (ferry_job_reply / ferry_job_fail consume the job). Pointers returned
 *     inside a `ferry_message` or `ferry_tensor` are borrowed: they point into shared memory or
 *     the caller's buffer and stay valid until the handle that owns them is freed.
 *   - Strings passed in are NUL-terminated UTF-8 and copied if kept. Names returned are
 *     (pointer, length) pairs and not NUL-terminated.
 *   - Threads: a `ferry_client` may be shared by any number of threads (each call claims its
 *     own slot; several calls may be in flight). Every other handle (call, job, message,
 *     writer, encoder, worker, publisher, subscriber, frame) is used by one thread at a time;
 *     different handles may be used from different threads. `ferry_last_error` is per thread.
 *   - Timeouts are in milliseconds; a negative timeout means the channel's default
 *     (10 s unless the URL says `timeout_ms=`). No call blocks without a bound.
 */
#ifndef FERRY_H
#define FERRY_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define FERRY_VERSION_MAJOR 0
#define FERRY_VERSION_MINOR 1
#define FERRY_VERSION_PATCH 0
/** Version as one number, e.g. 100 for 0.1.0: MAJOR*10000 + MINOR*100 + PATCH. */
#define FERRY_VERSION_NUMBER (FERRY_VERSION_MAJOR * 10000 + FERRY_VERSION_MINOR * 100 + FERRY_VERSION_PATCH)

/* ---- status codes ------------------------------------------------------------------- */
/* BEGIN GENERATED: status (scripts/gen_tables.py) */
#define FERRY_OK 0        /**< Success. */
#define FERRY_EINVAL 1    /**< An argument is invalid (NULL, out of range, inconsistent, or a call in the wrong order). */
#define FERRY_EMALFORMED 2/**< A message or segment failed validation: bad magic, length, offset or value. */
#define FERRY_ETOOBIG 3   /**< The payload does not fit in a slot; the error names the setting to raise. */
#define FERRY_ETIMEDOUT 4 /**< The deadline passed (for ferry_worker_recv: no request came). */
#define FERRY_EPEERDIED 5 /**< The worker serving the request died before it replied. */
#define FERRY_ENOSERVER 6 /**< Nothing serves the channel (never started, or gone). */
#define FERRY_EBUSY 7     /**< Every slot stayed in use until the deadline. */
#define FERRY_ECLOSED 8   /**< The channel was closed by its server. */
#define FERRY_ESYSTEM 9   /**< A system call failed; the message carries the call and errno text. */
#define FERRY_EREMOTE 10  /**< The model raised an error; its text, type and traceback come with it (ferry_call_error). */
#define FERRY_EPERM 11    /**< The operating system refused access (permissions, a segment of another user). */
#define FERRY_EVERSION 12 /**< The peer speaks another version of the format. */
#define FERRY_EAGAIN 13   /**< Not yet: the call is still in flight (ferry_call_poll); not an error. */
#define FERRY_EDISCONNECTED 14/**< The connection to a remote gateway was lost or refused; calls in flight on it failed, the next call reconnects. */
#define FERRY_EPROTOCOL 15/**< A remote peer broke the wire protocol (bad frame, failed authentication step); the connection was closed. */
/* END GENERATED */

/* ---- element types (wire codes; see docs/protocol.md) --------------------------------- */
/* BEGIN GENERATED: dtypes (scripts/gen_tables.py) */
#define FERRY_DTYPE_BOOL 1
#define FERRY_DTYPE_INT8 2
#define FERRY_DTYPE_INT16 3
#define FERRY_DTYPE_INT32 4
#define FERRY_DTYPE_INT64 5
#define FERRY_DTYPE_UINT8 6
#define FERRY_DTYPE_UINT16 7
#define FERRY_DTYPE_UINT32 8
#define FERRY_DTYPE_UINT64 9
#define FERRY_DTYPE_FLOAT16 10
#define FERRY_DTYPE_FLOAT32 11
#define FERRY_DTYPE_FLOAT64 12
#define FERRY_DTYPE_BYTES 13
#define FERRY_DTYPE_STRING 14
#define FERRY_DTYPE_UTF32 15
#define FERRY_DTYPE_FIXED_BYTES 16
#define FERRY_DTYPE_BFLOAT16 17
/* END GENERATED */

/** Most dimensions of a tensor. */
#define FERRY_MAX_DIMS 8

/* ---- wait strategies ------------------------------------------------------------------ */
#define FERRY_WAIT_DEFAULT 0        /**< Whatever the URL says (hybrid if nothing). */
#define FERRY_WAIT_SPIN 1           /**< Busy-poll: lowest latency, one core per waiter. */
#define FERRY_WAIT_FUTEX 2          /**< Sleep at once: no CPU, slower wake-up. */
#define FERRY_WAIT_SPIN_FUTEX 3     /**< Spin for spin_us, then sleep. */

/** Opaque handles. */
typedef struct ferry_client ferry_client;   /**< A connection to a channel (calling side). */
typedef struct ferry_call ferry_call;       /**< One request in flight, owning a slot. */
typedef struct ferry_worker ferry_worker;   /**< A serving process's hold on a channel. */
typedef struct ferry_job ferry_job;         /**< One request taken by a worker. */
typedef struct ferry_message ferry_message; /**< A validated, read-only message view. */
typedef struct ferry_writer ferry_writer;   /**< Writes a message in place (borrowed). */
typedef struct ferry_encoder ferry_encoder; /**< Builds a message in its own buffer. */

/** A tensor inside a message. All pointers are borrowed from the message's owner. */
typedef struct ferry_tensor {
    const char *name;               /**< UTF-8 name, NOT NUL-terminated. */
    size_t name_len;                /**< Name length in bytes. */
    int32_t dtype;                  /**< FERRY_DTYPE_*. */
    int32_t ndim;                   /**< 0..FERRY_MAX_DIMS; 0 is a scalar. */
    int64_t shape[FERRY_MAX_DIMS];  /**< Dimensions; entries past ndim are 0. */
    const void *data;               /**< Row-major data, 64-byte aligned. */
    size_t nbytes;                  /**< Data length in bytes. */
    /** Room to grow without changing the size of the struct (arrays of it cross the ABI):
     *  the library sets these to 0 today; later versions give them meanings that 0 keeps. */
    uint64_t reserved[4];
} ferry_tensor;

/**
 * Options for growth: set `struct_size = sizeof(ferry_options)` (ferry_options_init does it)
 * and only the fields you need. Zero fields keep what the URL says.
 */
typedef struct ferry_options {
    size_t struct_size;   /**< sizeof(ferry_options) as the caller compiled it. */
    int32_t slots;        /**< Slots when creating a channel (default 8). */
    int64_t slot_size;    /**< Bytes per slot when creating (default 4 MiB). */
    int32_t wait;         /**< FERRY_WAIT_*. */
    int64_t spin_us;      /**< Spin time for FERRY_WAIT_SPIN_FUTEX. */
    int64_t timeout_ms;   /**< Default per-call timeout. */
} ferry_options;

/* ---- library ------------------------------------------------------------------------- */

/** The library version as "MAJOR.MINOR.PATCH" (static storage). */
const char *ferry_version(void);
/** FERRY_VERSION_NUMBER of the loaded library (to compare with the header's). */
int ferry_version_number(void);
/** Text of the last error in this thread ("" if none). Valid until the next ferry call. */
const char *ferry_last_error(void);
/** Constant name of a status code, e.g. "FERRY_ETIMEDOUT". */
const char *ferry_status_name(int status);
/** Fills `opts` with zeros and the right struct_size. */
void ferry_options_init(ferry_options *opts);

/* ---- client: the calling side ---------------------------------------------------------- */

/**
 * Connects to the channel at `url` (e.g. "shm://digits"). `opts` may be NULL.
 * Returns FERRY_ENOSERVER when nothing serves it. Caller frees with ferry_client_free.
 */
int ferry_client_new(const char *url, const ferry_options *opts, ferry_client **out);
/** Disconnects. Calls of this client must be freed first. NULL is ignored. */
void ferry_client_free(ferry_client *client);
/**
 * The last failure of an operation on `client` (FERRY_OK if the last one succeeded) and its
 * message (may be NULL; "" when none; valid until the next operation on the client). Like
 * hiredis's err/errstr: per handle, beside the thread's ferry_last_error().
 */
int ferry_client_error(const ferry_client *client, const char **message);

/**
 * Starts a call: claims a slot (waiting up to timeout_ms for one) and returns the call,
 * whose writer places the request directly in shared memory. Free with ferry_call_free.
 */
int ferry_call_begin(ferry_client *client, int64_t timeout_ms, ferry_call **out);
/**
 * Who serves the client's channel: `*model` is the serving model's identity (its file,
 * function, content hash and version as its server gave them; "" when none was given), asked
 * within `timeout_ms`. The text stays valid until the next call of this function on the
 * client. shm:// reads it from the channel; tcp:// has it from the gateway's handshake;
 * redis:// asks Redis (the nodes' model and version). Each reply also names its model in
 * metadata `ferry.model`.
 */
int ferry_client_server_info(ferry_client *client, int64_t timeout_ms, const char **model);
/**
 * ferry_call_begin that never waits (for event loops): FERRY_EAGAIN at once, with `*out`
 * NULL, when every request buffer is in use; otherwise as ferry_call_begin, the call's
 * deadline `timeout_ms` from now. Since 0.1.0 (FERRY_VERSION_NUMBER 100).
 */
int ferry_call_try_begin(ferry_client *client, int64_t timeout_ms, ferry_call **out);
/** The call's request writer (borrowed; valid until ferry_call_send). */
ferry_writer *ferry_call_writer(ferry_call *call);
/** Finishes the request and hands it to a worker. */
int ferry_call_send(ferry_call *call);
/**
 * Waits for the reply; `*reply` (borrowed, valid until ferry_call_free) views it in place.
 * FERRY_EREMOTE when the model failed (message in ferry_last_error), FERRY_EPEERDIED when
 * the worker died, FERRY_ETIMEDOUT after the deadline.
 */
int ferry_call_wait(ferry_call *call, int64_t timeout_ms, const ferry_message **reply);
/**
 * ferry_call_send, ferry_call_wait and ferry_message_tensors in one call (the bindings' fast
 * path): on FERRY_OK `*reply` is as for ferry_call_wait and `*count` tells how many tensors
 * it has; they are in `tensors` if `*count <= cap`.
 */
int ferry_call_finish(ferry_call *call, int64_t timeout_ms, const ferry_message **reply,
                      ferry_tensor *tensors, size_t cap, size_t *count);
/**
 * Sends the call if it is not sent yet, then waits at most `wait_ms` for the reply:
 * FERRY_OK with `*reply` (and the descriptors, as ferry_call_finish), or FERRY_EAGAIN when
 * it has not come yet and the call's deadline has not passed — the call stays in flight,
 * poll again. At the call's deadline it fails as ferry_call_wait does. For callers that must
 * stay interruptible (a Python client honouring Ctrl-C polls in 100 ms steps).
 */
int ferry_call_poll(ferry_call *call, int64_t wait_ms, const ferry_message **reply,
                    ferry_tensor *tensors, size_t cap, size_t *count);
/**
 * The last failure of an operation on `call` (FERRY_OK if the last one succeeded), with its
 * message and, for FERRY_EREMOTE, the model's error type and detail (e.g. its traceback,
 * bounded to 16 KiB). Each out-parameter may be NULL; strings are "" when absent and stay
 * valid until the next operation on the call or its free.
 */
int ferry_call_error(const ferry_call *call, const char **message, const char **type, const char **detail);
/** One-array calls in one crossing (for bindings where each call into the library costs):
 *  ferry_call_begin, one tensor copied in (ferry_writer_put_tensor), then ferry_call_poll for
 *  up to wait_ms. `*out` receives the call whenever it was begun (free it in every case);
 *  FERRY_EAGAIN means sent and still in flight: go on with ferry_call_poll. */
int ferry_call_array(ferry_client *client, int64_t timeout_ms, const char *name, int dtype, int ndim, const int64_t *shape,
                     const void *data, size_t nbytes, int64_t wait_ms, ferry_call **out, const ferry_message **reply,
                     ferry_tensor *tensors, size_t cap, size_t *count);
/**
 * After copying a reply out of shared memory (ferry_call_wait/poll's `*reply`): FERRY_OK, or
 * FERRY_ECLOSED when another process truncated the channel's segment while it was read (the
 * lost pages read as zeros here instead of killing the process with SIGBUS): do not use the
 * copy. Readers that keep views see such pages turn to zeros.
 */
int ferry_call_check(const ferry_call *call);
/**
 * Frees the call. A call still in flight is given up: withdrawn if no worker took it, else
 * left to its worker, which frees the slot when done. NULL is ignored.
 */
void ferry_call_free(ferry_call *call);

/* ---- worker: the serving side ----------------------------------------------------------- */

/**
 * Serves the channel at `url`: creates it, joins the processes already serving it, or
 * reclaims it from dead ones. `opts` may be NULL. Free with ferry_worker_free (the last
 * serving process removes the channel).
 */
int ferry_worker_new(const char *url, const ferry_options *opts, ferry_worker **out);
/** Stops serving. NULL is ignored. */
void ferry_worker_free(ferry_worker *worker);
/** The last failure of an operation on `worker`, as ferry_client_error. */
int ferry_worker_error(const ferry_worker *worker, const char **message);
/** Number of slots of the channel and bytes per slot. */
int ferry_worker_slots(ferry_worker *worker, size_t *count, size_t *slot_size);
/**
 * Where slot `index` is mapped in this process now (`*data`, slot_size bytes), for bindings
 * that view requests in place. A slot moves when a kept request is preserved
 * (ferry_job_preserve); every request's tensor pointers lie inside its slot's current mapping.
 */
int ferry_worker_slot(ferry_worker *worker, size_t index, const void **data);
/** Requests on their way: slots clients are writing (`writing`) and requests published but not
 *  taken yet (`queued`); either may be NULL. A batching worker stops gathering when both are 0. */
int ferry_worker_pending(ferry_worker *worker, size_t *writing, size_t *queued);
/**
 * Waits up to timeout_ms for a request. FERRY_ETIMEDOUT when none came (not an error for a
 * serving loop) — also earlier than timeout_ms when a signal handler ran in the waiting
 * thread, so a loop that checks a stop flag set by SIGTERM sees it at once —, FERRY_ECLOSED
 * when the channel closed. On FERRY_OK the caller owns `*job`
 * and must answer it with ferry_job_reply or ferry_job_fail.
 */
int ferry_worker_recv(ferry_worker *worker, int64_t timeout_ms, ferry_job **job);
/**
 * ferry_worker_recv, then ferry_job_request and ferry_message_tensors in one call (the
 * bindings' fast path): on FERRY_OK `*job` is owned by the caller and `*count` tells how
 * many tensors the request has; they are in `tensors` if `*count <= cap` (else call
 * ferry_message_tensors with a larger array). A malformed request returns FERRY_EMALFORMED
 * with `*job` set: answer it with ferry_job_fail.
 */
int ferry_worker_next(ferry_worker *worker, int64_t timeout_ms, ferry_job **job,
                      ferry_tensor *tensors, size_t cap, size_t *count);
/** Dynamic batching in one call: waits up to timeout_ms for a request, then takes more, up
 *  to `max`, while requests are queued or being written (for at most gather_us more). Each
 *  job taken belongs to the caller (`jobs[i]`); `tensors[i]` (may be NULL) describes its first
 *  tensor, `counts[i]` (may be NULL) its tensor count; `taken` receives how many. A request
 *  that fails validation is answered with the error and not returned. */
int ferry_worker_next_batch(ferry_worker *worker, int64_t timeout_ms, int64_t gather_us, size_t max, ferry_job **jobs,
                            ferry_tensor *tensors, size_t *counts, size_t *taken);
/** Answers `n` jobs from one result of sum(rows) rows along axis 0: job i gets the next
 *  rows[i] rows as tensor `name`. Consumes every job (a bad result fails them all). */
int ferry_jobs_reply_rows(ferry_job *const *jobs, size_t n, const char *name, int dtype, int ndim, const int64_t *shape,
                          const void *data, const int64_t *rows);
/** The job's request (borrowed, valid until the job is answered). FERRY_EMALFORMED if bad. */
int ferry_job_request(ferry_job *job, const ferry_message **request);
/** The job's reply writer (borrowed; valid until the job is answered). */
ferry_writer *ferry_job_writer(ferry_job *job);
/** Sends the reply and frees the job (also on error). */
int ferry_job_reply(ferry_job *job);
/**
 * Replies with one tensor copied from `data` and frees the job (the fast path for a model
 * returning one array). On failure the client gets an error reply, and the job is freed too.
 */
int ferry_job_reply_tensor(ferry_job *job, const char *name, int dtype, int ndim, const int64_t *shape,
                           const void *data, size_t nbytes);
/** Sends an error reply (status and message) and frees the job. */
int ferry_job_fail(ferry_job *job, int status, const char *message);
/**
 * ferry_job_fail with the error's type (e.g. "ValueError") and detail (e.g. a traceback;
 * its last 16 KiB are kept), both optional (NULL): the client reads them with
 * ferry_call_error. Strings must be UTF-8 (invalid bytes are replaced: this is text for people).
 */
int ferry_job_fail_ex(ferry_job *job, int status, const char *type, const char *message, const char *detail);
/**
 * Keeps the request's bytes for views that outlive the job (a model that stores its input):
 * call before replying. In this process only, the request's pages are replaced by a private
 * copy at the same addresses, so pointers into the request stay valid and unchanged while
 * the slot is reused; the slot is mapped afresh elsewhere for later requests. `*kept` and
 * `*kept_len` (may be NULL) give the kept range: pass `*kept` to ferry_preserved_release
 * when nothing points into it any more. It outlives ferry_worker_free.
 */
int ferry_job_preserve(ferry_job *job, const void **kept, size_t *kept_len);
/** Gives back a range kept by ferry_job_preserve. FERRY_EINVAL if it is not one. */
int ferry_preserved_release(const void *kept);

/**
 * Removes the segment of `url`'s channel if every process serving it died (a crash leaves it
 * in /dev/shm; the next server reclaims it anyway). `*removed` (may be NULL) is 1 if one was
 * removed, 0 if there was none or it is still served.
 */
int ferry_channel_reclaim(const char *url, int *removed);

/** Slot states, as counted by ferry_channel_census (docs/protocol.md, "Slot state machine"). */
enum {
    FERRY_SLOT_FREE = 0, FERRY_SLOT_CLAIMED = 1, FERRY_SLOT_READY = 2, FERRY_SLOT_BUSY = 3,
    FERRY_SLOT_DONE = 4, FERRY_SLOT_ABANDONED = 5, FERRY_SLOT_STATES = 6
};

/**
 * Counts the slots of `url`'s channel by state into `counts[FERRY_SLOT_STATES]`, attaching as a
 * client. With `recover` non-zero it first frees what dead processes held (as every client
 * and worker does when it needs a slot), so the counts show what live processes hold.
 */
int ferry_channel_census(const char *url, int recover, size_t *counts);

/* ---- writing messages ------------------------------------------------------------------- */

/**
 * Reserves a tensor in the message and returns where to write its `nbytes` bytes in
 * `*data` (64-byte aligned, in shared memory for calls and jobs): fill it in place.
 * FERRY_ETOOBIG when it does not fit.
 */
int ferry_writer_add_tensor(ferry_writer *w, const char *name, int dtype, int ndim,
                            const int64_t *shape, void **data, size_t *nbytes);
/** Adds a tensor by copying `nbytes` bytes from `data` (must match dtype and shape). */
int ferry_writer_put_tensor(ferry_writer *w, const char *name, int dtype, int ndim,
                            const int64_t *shape, const void *data, size_t nbytes);
/**
 * Like ferry_writer_put_tensor, but the bytes may be read when the call is *sent*
 * (ferry_call_send, or the first ferry_call_poll/ferry_call_wait), not now: over a transport
 * that sends from the caller's memory (tcp://) a large tensor is not copied into the request
 * but written to the socket from `data` (scatter-gather). `data` must stay valid and
 * unchanged until the call is sent. Elsewhere (shm://, small tensors) it copies at once.
 * For a job's reply writer it is ferry_writer_put_tensor.
 */
int ferry_writer_put_tensor_ref(ferry_writer *w, const char *name, int dtype, int ndim,
                                const int64_t *shape, const void *data, size_t nbytes);
/** Adds a string tensor: `count` UTF-8 strings with byte lengths `lengths`. */
int ferry_writer_put_strings(ferry_writer *w, const char *name, int ndim, const int64_t *shape,
                             const char *const *strings, const size_t *lengths, size_t count);
/** Adds or replaces a metadata entry. */
/**
 * Adds a string tensor of `shape` from packed UTF-8 — the wire layout itself: `offsets`
 * holds count + 1 ascending byte offsets (the first 0, the last `text_len`) into `text`,
 * the strings concatenated. For whole columns at once (no per-string call); every string
 * is checked to be valid UTF-8.
 */
int ferry_writer_put_strings_packed(ferry_writer *writer, const char *name, int ndim, const int64_t *shape,
                                    const uint64_t *offsets, const char *text, size_t text_len);
int ferry_writer_set_meta(ferry_writer *w, const char *key, const char *value);

/** A standalone message builder with `capacity` bytes of its own. Free with ferry_encoder_free. */
int ferry_encoder_new(size_t capacity, ferry_encoder **out);
/** The encoder's writer (borrowed). */
ferry_writer *ferry_encoder_writer(ferry_encoder *enc);
/** Finishes the message; `*data`/`*len` (borrowed) hold its bytes until the encoder is freed. */
int ferry_encoder_finish(ferry_encoder *enc, const void **data, size_t *len);
/** Frees the encoder. NULL is ignored. */
void ferry_encoder_free(ferry_encoder *enc);

/* ---- reading messages ------------------------------------------------------------------- */

/**
 * Validates `len` bytes at `data` as a message. The view borrows `data` (keep it alive)
 * and must be freed with ferry_message_free. FERRY_EMALFORMED / FERRY_EVERSION if bad.
 */
int ferry_message_decode(const void *data, size_t len, ferry_message **out);
/** Frees a view made by ferry_message_decode (only those). NULL is ignored. */
void ferry_message_free(ferry_message *msg);
/** Number of tensors. */
size_t ferry_message_tensor_count(const ferry_message *msg);
/** Tensor `index` into `*out`. FERRY_EINVAL if out of range. */
int ferry_message_tensor(const ferry_message *msg, size_t index, ferry_tensor *out);
/** Fills up to `cap` tensors into `out` and their count into `*count` (all at once). */
int ferry_message_tensors(const ferry_message *msg, ferry_tensor *out, size_t cap, size_t *count);
/** The tensor called `name` into `*out`; FERRY_EINVAL if there is none. */
int ferry_message_find(const ferry_message *msg, const char *name, ferry_tensor *out);
/** Number of metadata entries. */
size_t ferry_message_meta_count(const ferry_message *msg);
/** Metadata entry `index` (borrowed, not NUL-terminated). */
int ferry_message_meta(const ferry_message *msg, size_t index, const char **key, size_t *key_len,
                       const char **value, size_t *value_len);
/** Reply status of the message (0 for success). */
int ferry_message_status(const ferry_message *msg);
/** Start of the message's bytes and its length (borrowed). */
int ferry_message_bytes(const ferry_message *msg, const void **data, size_t *len);

/** Checks a shared-memory segment header of a file of `file_size` bytes (for tools/fuzzing). */
int ferry_segment_validate(const void *header, size_t len, size_t file_size);

/* ---- tables: equal-length named columns (docs/protocol.md, "Tables") -------------------- */
/*
 * A table is an ordinary message: one 1-D tensor per column, a bool "<name>.valid" tensor for
 * a column with nulls, and a schema tensor "ferry.table". A Python model receives it as a
 * pandas DataFrame (numeric columns without a copy) and may answer with one.
 * Writing: ferry_writer_begin_table, then columns, then ferry_writer_end_table.
 */
#define FERRY_COLUMN_NUMERIC 0   /**< Numeric or bool values. */
#define FERRY_COLUMN_MASKED 1    /**< Numeric or bool values with nulls (pandas Int64, boolean, …). */
#define FERRY_COLUMN_DATETIME 2  /**< int64 counts of `unit` since the epoch, UTC; `tz` to display. */
#define FERRY_COLUMN_TIMEDELTA 3 /**< int64 counts of `unit`. */
#define FERRY_COLUMN_STRING 4    /**< UTF-8 strings: rows + 1 u64 offsets, then the text. */

/** One column of a received table. All pointers are borrowed from the message. */
typedef struct ferry_column {
    const char *name;        /**< UTF-8 name, NOT NUL-terminated. */
    size_t name_len;         /**< Name length in bytes. */
    int32_t kind;            /**< FERRY_COLUMN_*. */
    int32_t dtype;           /**< FERRY_DTYPE_* of the values (INT64 for times, STRING for strings). */
    int64_t rows;            /**< Number of rows. */
    const void *data;        /**< The values (numeric and times); for strings, see offsets/text. */
    size_t nbytes;           /**< Bytes at data. */
    const uint8_t *valid;    /**< One byte per row, 1 where a value is present; NULL: no nulls. */
    const uint64_t *offsets; /**< Strings: rows + 1 byte offsets into text; NULL otherwise. */
    const char *text;        /**< Strings: the UTF-8 text (string i is text[offsets[i]..offsets[i+1]]). */
    char unit[4];            /**< Time unit ("s", "ms", "us", "ns"), NUL-terminated; "" otherwise. */
    const char *tz;          /**< Time zone of a zoned datetime, NOT NUL-terminated; NULL otherwise. */
    size_t tz_len;           /**< Its length. */
    uint64_t reserved[4];    /**< 0 today. */
} ferry_column;

/** Starts writing a table of `rows` rows into the message. */
int ferry_writer_begin_table(ferry_writer *w, int64_t rows);
/** Adds a numeric or bool column; `data` receives its `rows` values to fill in place. With
 *  `nullable`, `valid` (required then) receives one byte per row, all 1: set 0 for nulls. */
int ferry_writer_add_column(ferry_writer *w, const char *name, int dtype, int nullable, void **data, uint8_t **valid);
/** Adds a FERRY_COLUMN_DATETIME or FERRY_COLUMN_TIMEDELTA column of int64 counts of `unit`
 *  ("s", "ms", "us", "ns"); `tz` (datetimes only, may be NULL) names a time zone. */
int ferry_writer_add_time_column(ferry_writer *w, const char *name, int kind, const char *unit, const char *tz,
                                 int nullable, int64_t **data, uint8_t **valid);
/** Adds a string column of `rows` strings (`lengths` may be NULL for NUL-terminated ones;
 *  `valid` may be NULL when nothing is null; a null's string is ignored and may be NULL).
 *  Every string must be valid UTF-8. */
int ferry_writer_put_string_column(ferry_writer *w, const char *name, const char *const *strings, const size_t *lengths,
                                   const uint8_t *valid);
/** Ends the table (writes its schema). */
int ferry_writer_end_table(ferry_writer *w);
/** Whether `msg` is a table and its size: FERRY_EINVAL when it is not one, FERRY_EMALFORMED
 *  when its schema does not match its tensors. */
int ferry_message_table(const ferry_message *msg, int64_t *rows, size_t *columns);
/** Column `index` of a table. */
int ferry_message_column(const ferry_message *msg, size_t index, ferry_column *out);
/** The column named `name` of a table (FERRY_EINVAL if there is none). */
int ferry_message_find_column(const ferry_message *msg, const char *name, ferry_column *out);

/* ---- streams: one publisher, many subscribers (docs/protocol.md, "Streams") ------------ */
/*
 * A stream is a ring of frame slots in shared memory (e.g. one camera). The publisher loans
 * a slot, writes a message into it in place, and publishes it with a sequence number and a
 * capture timestamp. A subscriber receives the newest frame (FERRY_STREAM_LATEST: older
 * unseen frames are dropped and counted) or every frame in order (FERRY_STREAM_EVERY: the
 * publisher waits for it). A subscriber gets only frames published after it attached; each
 * is received or counted as dropped (received + dropped == published since attach, once it
 * has caught up). A received frame pins its slot until ferry_frame_free, so its
 * bytes are read in place and never rewritten meanwhile.
 * URLs: "shm://NAME?slots=8&slot_size=4M&wait=hybrid&timeout_ms=10000", or the bare NAME.
 */
typedef struct ferry_publisher ferry_publisher;   /**< The writing side of a stream. */
typedef struct ferry_subscriber ferry_subscriber; /**< A reading side of a stream. */
typedef struct ferry_frame ferry_frame;           /**< One received frame (pins its slot). */

#define FERRY_STREAM_LATEST 0 /**< Take the newest frame; skipped ones count as dropped. */
#define FERRY_STREAM_EVERY 1  /**< Take every frame in order; the publisher waits for this subscriber. */

/** What a frame is, besides its message. */
typedef struct ferry_frame_info {
    uint64_t sequence;       /**< 1, 2, …; gaps are frames this subscriber did not take. */
    uint64_t timestamp_ns;   /**< Capture time given by the publisher (CLOCK_MONOTONIC). */
    uint64_t received_ns;    /**< When this subscriber received it (CLOCK_MONOTONIC). */
    uint64_t age_ns;         /**< received_ns - timestamp_ns: end-to-end age. */
    uint64_t dropped_before; /**< Frames skipped since the previous one this subscriber took. */
    uint64_t slot;           /**< The slot holding it (see ferry_subscriber_slot). */
    uint64_t reserved[2];    /**< 0 today. */
} ferry_frame_info;

/** A subscriber's counters. */
typedef struct ferry_stream_stats {
    uint64_t received;   /**< Frames received. */
    uint64_t dropped;    /**< Frames skipped (latest mode) or lost on joining (every mode). */
    double fps;          /**< Frames per second over the last 30 received (0 before two). */
    uint64_t reserved[4];/**< 0 today. */
} ferry_stream_stats;

/** Creates the stream as its publisher (FERRY_EBUSY if a live publisher has it; a stream
 *  left by a dead one is reclaimed). `opts` may set slots, slot_size, wait, timeout_ms. */
int ferry_publisher_new(const char *url, const ferry_options *opts, ferry_publisher **out);
/** Ends the stream: subscribers take what is left, then get FERRY_ECLOSED. Accepts NULL. */
void ferry_publisher_free(ferry_publisher *pub);
/** Claims a free slot and returns a writer into it (borrowed, valid until publish/cancel).
 *  Waits up to timeout_ms while every-frame subscribers lag, then FERRY_EBUSY. */
int ferry_publisher_loan(ferry_publisher *pub, int64_t timeout_ms, ferry_writer **writer);
/** Publishes the loaned frame with a capture timestamp (CLOCK_MONOTONIC ns; 0: now);
 *  `sequence` (may be NULL) receives its sequence number. */
int ferry_publisher_publish(ferry_publisher *pub, uint64_t timestamp_ns, uint64_t *sequence);
/** Gives the loaned slot back unpublished. */
int ferry_publisher_cancel(ferry_publisher *pub);
/** Live subscribers. */
int ferry_publisher_subscribers(ferry_publisher *pub, size_t *count);

/** Attaches to a published stream (FERRY_ENOSERVER if nothing publishes it). `mode` is
 *  FERRY_STREAM_LATEST or FERRY_STREAM_EVERY. */
int ferry_subscriber_new(const char *url, int mode, ferry_subscriber **out);
/** Leaves the stream. Frames still held lose their pins: free them first. Accepts NULL. */
void ferry_subscriber_free(ferry_subscriber *sub);
/** Waits up to timeout_ms for a frame newer than the last one taken. FERRY_ETIMEDOUT when
 *  none came, FERRY_ECLOSED once the stream ended and nothing is left, FERRY_EPEERDIED when
 *  the publisher died. On success `frame` belongs to the caller (ferry_frame_free);
 *  `message` (may be NULL) is borrowed from it; up to `cap` tensor descriptors are filled
 *  and `count` (may be NULL) receives the number of tensors. */
int ferry_subscriber_recv(ferry_subscriber *sub, int64_t timeout_ms, ferry_frame **frame,
                          const ferry_message **message, ferry_tensor *tensors, size_t cap, size_t *count);
/** The subscriber's counters. */
int ferry_subscriber_stats(const ferry_subscriber *sub, ferry_stream_stats *out);
/** Slots in the stream and bytes per slot. */
int ferry_subscriber_slots(const ferry_subscriber *sub, size_t *count, size_t *slot_size);
/** Where slot `index` is mapped in this process now (it moves when a frame is preserved). */
int ferry_subscriber_slot(const ferry_subscriber *sub, size_t index, const void **data);
/** Sequence, timestamps, drops and slot of a frame. */
int ferry_frame_describe(const ferry_frame *frame, ferry_frame_info *out);
/** The frame's message (borrowed from the frame). */
int ferry_frame_message(const ferry_frame *frame, const ferry_message **out);
/** Keeps the frame's bytes readable after ferry_frame_free (a private copy at the same
 *  addresses, this process only); give them back with ferry_preserved_release. */
int ferry_frame_preserve(ferry_frame *frame, const void **kept, size_t *kept_len);
/** Releases the frame's slot to the publisher. Accepts NULL. */
void ferry_frame_free(ferry_frame *frame);

#ifdef __cplusplus
}
#endif
#endif /* FERRY_H */
