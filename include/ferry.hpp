// ferry.hpp — header-only C++17 wrapper over ferry.h (and nothing else).
//
//   ferry::Client client("shm://digits");
//   auto call = client.begin();
//   auto pixels = call.writer().add<uint8_t>("images", {9, 28, 28});   // in shared memory
//   std::copy(src, src + pixels.size(), pixels.begin());
//   auto reply = call.send_and_wait(1000);
//   auto labels = reply.at(0).as<int64_t>();
//
// Handles are move-only RAII types; failures throw ferry::Error (or a subclass per status
// code); tensor views never copy. Thread safety is that of the C API: a Client may be
// shared by threads; every other object is used by one thread at a time.
#ifndef FERRY_HPP
#define FERRY_HPP

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "ferry.h"

namespace ferry {

// ---- errors -------------------------------------------------------------------------------

/// Base of every Ferry exception; code() is the FERRY_E* status.
class Error : public std::runtime_error {
public:
    Error(int code, const std::string& what) : std::runtime_error(what), code_(code) {}
    int code() const noexcept { return code_; }
    const char* code_name() const noexcept { return ferry_status_name(code_); }

private:
    int code_;
};
// BEGIN GENERATED: errors (scripts/gen_tables.py)
struct InvalidArgument : Error { using Error::Error; };
struct MalformedMessage : Error { using Error::Error; };
struct PayloadTooLarge : Error { using Error::Error; };
struct Timeout : Error { using Error::Error; };
struct WorkerDied : Error { using Error::Error; };
struct NoServer : Error { using Error::Error; };
struct Busy : Error { using Error::Error; };
struct ChannelClosed : Error { using Error::Error; };
struct SystemError : Error { using Error::Error; };
struct RemoteError : Error { using Error::Error; };
struct PermissionDenied : Error { using Error::Error; };
struct VersionMismatch : Error { using Error::Error; };
struct Again : Error { using Error::Error; };
struct Disconnected : Error { using Error::Error; };
struct ProtocolError : Error { using Error::Error; };

/// Throws the exception for a non-zero status, with ferry_last_error() as its text.
inline void check(int rc) {
    if (rc == FERRY_OK) return;
    std::string text = ferry_last_error();
    switch (rc) {
    case FERRY_EINVAL: throw InvalidArgument(rc, text);
    case FERRY_EMALFORMED: throw MalformedMessage(rc, text);
    case FERRY_ETOOBIG: throw PayloadTooLarge(rc, text);
    case FERRY_ETIMEDOUT: throw Timeout(rc, text);
    case FERRY_EPEERDIED: throw WorkerDied(rc, text);
    case FERRY_ENOSERVER: throw NoServer(rc, text);
    case FERRY_EBUSY: throw Busy(rc, text);
    case FERRY_ECLOSED: throw ChannelClosed(rc, text);
    case FERRY_ESYSTEM: throw SystemError(rc, text);
    case FERRY_EREMOTE: throw RemoteError(rc, text);
    case FERRY_EPERM: throw PermissionDenied(rc, text);
    case FERRY_EVERSION: throw VersionMismatch(rc, text);
    case FERRY_EAGAIN: throw Again(rc, text);
    case FERRY_EDISCONNECTED: throw Disconnected(rc, text);
    case FERRY_EPROTOCOL: throw ProtocolError(rc, text);
    default: throw Error(rc, text);
    }
}
// END GENERATED

// ---- element types ----------------------------------------------------------------------

/// Wire dtype of a C++ scalar type.
template <class T> struct dtype_of;
template <> struct dtype_of<bool> { static constexpr int value = FERRY_DTYPE_BOOL; };
template <> struct dtype_of<int8_t> { static constexpr int value = FERRY_DTYPE_INT8; };
template <> struct dtype_of<int16_t> { static constexpr int value = FERRY_DTYPE_INT16; };
template <> struct dtype_of<int32_t> { static constexpr int value = FERRY_DTYPE_INT32; };
template <> struct dtype_of<int64_t> { static constexpr int value = FERRY_DTYPE_INT64; };
template <> struct dtype_of<uint8_t> { static constexpr int value = FERRY_DTYPE_UINT8; };
template <> struct dtype_of<uint16_t> { static constexpr int value = FERRY_DTYPE_UINT16; };
template <> struct dtype_of<uint32_t> { static constexpr int value = FERRY_DTYPE_UINT32; };
template <> struct dtype_of<uint64_t> { static constexpr int value = FERRY_DTYPE_UINT64; };
template <> struct dtype_of<float> { static constexpr int value = FERRY_DTYPE_FLOAT32; };
template <> struct dtype_of<double> { static constexpr int value = FERRY_DTYPE_FLOAT64; };

/// Bytes per element of a fixed-size dtype (per code unit for fixed-width strings; 0 for
/// packed strings and invalid codes).
inline size_t item_size(int dtype) noexcept {
    switch (dtype) {
    case FERRY_DTYPE_BOOL: case FERRY_DTYPE_INT8: case FERRY_DTYPE_UINT8: case FERRY_DTYPE_BYTES:
    case FERRY_DTYPE_FIXED_BYTES: return 1;
    case FERRY_DTYPE_INT16: case FERRY_DTYPE_UINT16: case FERRY_DTYPE_FLOAT16: return 2;
    case FERRY_DTYPE_INT32: case FERRY_DTYPE_UINT32: case FERRY_DTYPE_FLOAT32: case FERRY_DTYPE_UTF32: return 4;
    case FERRY_DTYPE_INT64: case FERRY_DTYPE_UINT64: case FERRY_DTYPE_FLOAT64: return 8;
    default: return 0;
    }
}

/// A minimal std::span for C++17: a pointer and a count, no ownership.
template <class T> class Span {
public:
    Span() = default;
    Span(T* data, size_t size) : data_(data), size_(size) {}
    T* data() const noexcept { return data_; }
    size_t size() const noexcept { return size_; }
    bool empty() const noexcept { return size_ == 0; }
    T* begin() const noexcept { return data_; }
    T* end() const noexcept { return data_ + size_; }
    T& operator[](size_t i) const noexcept { return data_[i]; }

private:
    T* data_ = nullptr;
    size_t size_ = 0;
};

/// Dimensions of a tensor (at most FERRY_MAX_DIMS).
struct Shape {
    int ndim = 0;
    int64_t dims[FERRY_MAX_DIMS] = {};
    Shape() = default;
    Shape(std::initializer_list<int64_t> d) {
        if (d.size() > FERRY_MAX_DIMS) throw InvalidArgument(FERRY_EINVAL, "more than 8 dimensions");
        for (int64_t v : d) dims[ndim++] = v;
    }
    int64_t elements() const noexcept {
        int64_t n = 1;
        for (int i = 0; i < ndim; i++) n *= dims[i];
        return n;
    }
};

/// A tensor over memory someone else owns: a received tensor, or your own buffer to send.
struct TensorView {
    std::string_view name;
    int dtype = FERRY_DTYPE_UINT8;
    Shape shape;
    const void* data = nullptr;
    size_t nbytes = 0;

    /// View of `count` elements of type T at `data` with `shape`.
    template <class T> static TensorView of(const T* data, Shape shape) {
        TensorView v;
        v.dtype = dtype_of<T>::value;
        v.shape = shape;
        v.data = data;
        v.nbytes = static_cast<size_t>(shape.elements()) * sizeof(T);
        return v;
    }

    /// The elements as T; throws InvalidArgument if T does not match the dtype.
    template <class T> Span<const T> as() const {
        if (dtype_of<T>::value != dtype) throw InvalidArgument(FERRY_EINVAL, "tensor dtype does not match the requested type");
        return Span<const T>(static_cast<const T*>(data), nbytes / sizeof(T));
    }

    /// Number of strings of a fixed-width string tensor (UTF32, FIXED_BYTES): all dimensions
    /// but the last, which is the width.
    int64_t strings() const {
        if ((dtype != FERRY_DTYPE_UTF32 && dtype != FERRY_DTYPE_FIXED_BYTES) || shape.ndim < 1)
            throw InvalidArgument(FERRY_EINVAL, "not a fixed-width string tensor");
        int64_t n = 1;
        for (int i = 0; i + 1 < shape.ndim; i++) n *= shape.dims[i];
        return n;
    }

    /// String `i` of a UTF32 tensor (numpy's `<U`), NUL padding removed.
    std::u32string_view utf32(int64_t i) const {
        if (dtype != FERRY_DTYPE_UTF32) throw InvalidArgument(FERRY_EINVAL, "not a utf32 tensor");
        return fixed<char32_t>(i);
    }

    /// String `i` of a FIXED_BYTES tensor (numpy's `S`), NUL padding removed.
    std::string_view fixed_bytes(int64_t i) const {
        if (dtype != FERRY_DTYPE_FIXED_BYTES) throw InvalidArgument(FERRY_EINVAL, "not a fixed_bytes tensor");
        auto s = fixed<char>(i);
        return std::string_view(s.data(), s.size());
    }

private:
    template <class C> std::basic_string_view<C> fixed(int64_t i) const {
        if (i < 0 || i >= strings()) throw InvalidArgument(FERRY_EINVAL, "string index out of range");
        size_t width = static_cast<size_t>(shape.dims[shape.ndim - 1]);
        const C* p = static_cast<const C*>(data) + static_cast<size_t>(i) * width;
        size_t n = width;
        while (n > 0 && p[n - 1] == 0) n--;
        return std::basic_string_view<C>(p, n);
    }
};

/// OpenCV depth codes (CV_8U … CV_16F), so cv::Mat-like buffers map to dtypes without OpenCV.
inline int dtype_from_cv_depth(int depth) {
    switch (depth) {
    case 0: return FERRY_DTYPE_UINT8;
    case 1: return FERRY_DTYPE_INT8;
    case 2: return FERRY_DTYPE_UINT16;
    case 3: return FERRY_DTYPE_INT16;
    case 4: return FERRY_DTYPE_INT32;
    case 5: return FERRY_DTYPE_FLOAT32;
    case 6: return FERRY_DTYPE_FLOAT64;
    case 7: return FERRY_DTYPE_FLOAT16;
    default: throw InvalidArgument(FERRY_EINVAL, "unknown OpenCV depth");
    }
}

/// Views an image buffer (rows × cols × channels, continuous) as a tensor: [rows, cols,
/// channels], or [rows, cols] for one channel. `cv_depth` is the OpenCV depth (CV_8U = 0).
inline TensorView image_view(const void* data, int rows, int cols, int channels, int cv_depth) {
    TensorView v;
    v.dtype = dtype_from_cv_depth(cv_depth);
    v.shape = channels == 1 ? Shape{rows, cols} : Shape{rows, cols, channels};
    v.data = data;
    if (rows < 0 || cols < 0 || channels < 1) throw InvalidArgument(FERRY_EINVAL, "negative image size or no channels");
    v.nbytes = static_cast<size_t>(rows) * static_cast<size_t>(cols) * static_cast<size_t>(channels) * item_size(v.dtype);
    return v;
}

/// Views anything shaped like cv::Mat (data, rows, cols, channels(), depth(), isContinuous()).
template <class Mat> TensorView mat_view(const Mat& m) {
    if (!m.isContinuous()) throw InvalidArgument(FERRY_EINVAL, "the image is not continuous; clone() it first");
    return image_view(m.data, m.rows, m.cols, m.channels(), m.depth());
}

// ---- messages -------------------------------------------------------------------------------

/// One column of a received table (borrowed from its message).
class Column {
public:
    explicit Column(const ferry_column& c) : c_(c) {}
    std::string_view name() const noexcept { return std::string_view(c_.name, c_.name_len); }
    int kind() const noexcept { return c_.kind; }  ///< FERRY_COLUMN_*
    int dtype() const noexcept { return c_.dtype; }
    int64_t rows() const noexcept { return c_.rows; }
    bool is_null(int64_t row) const noexcept { return c_.valid != nullptr && c_.valid[row] == 0; }
    /// Time unit ("s", "ms", "us", "ns") of a datetime or timedelta column; "" otherwise.
    std::string_view unit() const noexcept { return std::string_view(c_.unit); }
    /// Time zone of a zoned datetime column; "" otherwise.
    std::string_view tz() const noexcept { return c_.tz ? std::string_view(c_.tz, c_.tz_len) : std::string_view(); }
    /// The values as T (int64_t for datetimes and timedeltas); throws if T does not match.
    template <class T> Span<const T> as() const {
        if (dtype_of<T>::value != c_.dtype) throw InvalidArgument(FERRY_EINVAL, "column dtype does not match the requested type");
        return Span<const T>(static_cast<const T*>(c_.data), static_cast<size_t>(c_.rows));
    }
    /// String `row` of a string column (empty for a null).
    std::string_view string(int64_t row) const {
        if (c_.kind != FERRY_COLUMN_STRING) throw InvalidArgument(FERRY_EINVAL, "not a string column");
        if (row < 0 || row >= c_.rows) throw InvalidArgument(FERRY_EINVAL, "row out of range");
        const uint64_t a = c_.offsets[row], b = c_.offsets[row + 1];
        return std::string_view(c_.text + a, static_cast<size_t>(b - a));
    }
    const ferry_column& get() const noexcept { return c_; }

private:
    ferry_column c_;
};

/// A received message (borrowed from its Call or Job).
class Message {
public:
    explicit Message(const ferry_message* m) : m_(m) {}
    size_t size() const noexcept { return ferry_message_tensor_count(m_); }
    TensorView at(size_t i) const {
        ferry_tensor t;
        check(ferry_message_tensor(m_, i, &t));
        return convert(t);
    }
    std::optional<TensorView> find(const char* name) const {
        ferry_tensor t;
        if (ferry_message_find(m_, name, &t) != FERRY_OK) return std::nullopt;
        return convert(t);
    }
    std::optional<std::string_view> meta(std::string_view key) const {
        for (size_t i = 0; i < ferry_message_meta_count(m_); i++) {
            const char *k, *v;
            size_t kl, vl;
            check(ferry_message_meta(m_, i, &k, &kl, &v, &vl));
            if (std::string_view(k, kl) == key) return std::string_view(v, vl);
        }
        return std::nullopt;
    }
    /// True when the message is a table (FERRY_EMALFORMED surfaces from column access).
    bool is_table() const noexcept { return ferry_message_table(m_, nullptr, nullptr) == FERRY_OK; }
    int64_t table_rows() const {
        int64_t rows = 0;
        check(ferry_message_table(m_, &rows, nullptr));
        return rows;
    }
    size_t column_count() const {
        size_t n = 0;
        check(ferry_message_table(m_, nullptr, &n));
        return n;
    }
    Column column(size_t i) const {
        ferry_column c;
        check(ferry_message_column(m_, i, &c));
        return Column(c);
    }
    std::optional<Column> find_column(const char* name) const {
        ferry_column c;
        if (ferry_message_find_column(m_, name, &c) != FERRY_OK) return std::nullopt;
        return Column(c);
    }
    const ferry_message* get() const noexcept { return m_; }

private:
    static TensorView convert(const ferry_tensor& t) {
        TensorView v;
        v.name = std::string_view(t.name, t.name_len);
        v.dtype = t.dtype;
        v.shape.ndim = t.ndim;
        for (int i = 0; i < t.ndim; i++) v.shape.dims[i] = t.shape[i];
        v.data = t.data;
        v.nbytes = t.nbytes;
        return v;
    }
    const ferry_message* m_;
};

/// Writes a message in place (borrowed from its Call or Job).
class Writer {
public:
    explicit Writer(ferry_writer* w) : w_(w) {}
    /// Reserves a tensor and returns its elements in shared memory to fill in place.
    template <class T> Span<T> add(const char* name, Shape shape) {
        void* data = nullptr;
        size_t n = 0;
        check(ferry_writer_add_tensor(w_, name, dtype_of<T>::value, shape.ndim, shape.dims, &data, &n));
        return Span<T>(static_cast<T*>(data), n / sizeof(T));
    }
    /// Copies an existing buffer in as a tensor.
    void put(const char* name, const TensorView& v) {
        check(ferry_writer_put_tensor(w_, name, v.dtype, v.shape.ndim, v.shape.dims, v.data, v.nbytes));
    }
    void meta(const char* key, const char* value) { check(ferry_writer_set_meta(w_, key, value)); }

    /// Tables: begin_table(rows), columns, end_table(); a Python model gets a DataFrame.
    void begin_table(int64_t rows) { check(ferry_writer_begin_table(w_, rows)); rows_ = rows; }
    /// A numeric or bool column to fill in place.
    template <class T> Span<T> add_column(const char* name) {
        void* data = nullptr;
        check(ferry_writer_add_column(w_, name, dtype_of<T>::value, 0, &data, nullptr));
        return Span<T>(static_cast<T*>(data), static_cast<size_t>(rows_));
    }
    /// A numeric or bool column with nulls: the values, and one byte per row (1: present) to set 0 for a null.
    template <class T> std::pair<Span<T>, uint8_t*> add_nullable_column(const char* name) {
        void* data = nullptr;
        uint8_t* valid = nullptr;
        check(ferry_writer_add_column(w_, name, dtype_of<T>::value, 1, &data, &valid));
        return {Span<T>(static_cast<T*>(data), static_cast<size_t>(rows_)), valid};
    }
    /// A datetime column of int64 counts of `unit` since the epoch (UTC), shown in `tz` if given.
    Span<int64_t> add_datetime_column(const char* name, const char* unit, const char* tz = nullptr) {
        int64_t* data = nullptr;
        check(ferry_writer_add_time_column(w_, name, FERRY_COLUMN_DATETIME, unit, tz, 0, &data, nullptr));
        return Span<int64_t>(data, static_cast<size_t>(rows_));
    }
    /// A string column; `valid` (optional, one byte per row) marks nulls with 0.
    template <class Strings> void put_string_column(const char* name, const Strings& values, const uint8_t* valid = nullptr) {
        std::vector<const char*> ptrs;
        std::vector<size_t> lens;
        for (const auto& v : values) {
            std::string_view sv(v);
            ptrs.push_back(sv.data());
            lens.push_back(sv.size());
        }
        check(ferry_writer_put_string_column(w_, name, ptrs.data(), lens.data(), valid));
    }
    void end_table() { check(ferry_writer_end_table(w_)); }
    ferry_writer* get() const noexcept { return w_; }

private:
    ferry_writer* w_;
    int64_t rows_ = 0;
};

// ---- client side ----------------------------------------------------------------------------

/// One request in flight; owns a slot until destroyed.
class Call {
public:
    explicit Call(ferry_call* c) : c_(c) {}
    Call(Call&& o) noexcept : c_(std::exchange(o.c_, nullptr)) {}
    Call& operator=(Call&& o) noexcept { if (this != &o) { ferry_call_free(c_); c_ = std::exchange(o.c_, nullptr); } return *this; }
    Call(const Call&) = delete;
    Call& operator=(const Call&) = delete;
    ~Call() { ferry_call_free(c_); }

    Writer writer() { return Writer(ferry_call_writer(c_)); }
    void send() { check(ferry_call_send(c_)); }
    /// Waits for the reply; valid while this Call lives.
    Message wait(int64_t timeout_ms = -1) {
        const ferry_message* m = nullptr;
        check(ferry_call_wait(c_, timeout_ms, &m));
        return Message(m);
    }
    Message send_and_wait(int64_t timeout_ms = -1) { send(); return wait(timeout_ms); }

private:
    ferry_call* c_;
};

/// A connection to a channel, e.g. Client("shm://digits").
class Client {
public:
    explicit Client(const std::string& url, const ferry_options* opts = nullptr) { check(ferry_client_new(url.c_str(), opts, &c_)); }
    Client(Client&& o) noexcept : c_(std::exchange(o.c_, nullptr)) {}
    Client& operator=(Client&& o) noexcept { if (this != &o) { ferry_client_free(c_); c_ = std::exchange(o.c_, nullptr); } return *this; }
    Client(const Client&) = delete;
    Client& operator=(const Client&) = delete;
    ~Client() { ferry_client_free(c_); }

    /// Claims a slot for a request (waits up to timeout_ms for a free one).
    Call begin(int64_t timeout_ms = -1) {
        ferry_call* c = nullptr;
        check(ferry_call_begin(c_, timeout_ms, &c));
        return Call(c);
    }
    /// Sends named views (copied into the slot) and returns the call holding the reply.
    Call call(std::initializer_list<std::pair<const char*, TensorView>> inputs, int64_t timeout_ms = -1) {
        Call c = begin(timeout_ms);
        Writer w = c.writer();
        for (const auto& in : inputs) w.put(in.first, in.second);
        c.send();
        return c;
    }

private:
    ferry_client* c_ = nullptr;
};

// ---- worker side ----------------------------------------------------------------------------

/// A request taken by a worker; answered exactly once (an unanswered job fails on destruction).
class Job {
public:
    explicit Job(ferry_job* j) : j_(j) {}
    Job(Job&& o) noexcept : j_(std::exchange(o.j_, nullptr)) {}
    Job& operator=(Job&& o) noexcept {
        if (this != &o) {
            if (j_) ferry_job_fail(j_, FERRY_EREMOTE, "the worker dropped the request");
            j_ = std::exchange(o.j_, nullptr);
        }
        return *this;
    }
    Job(const Job&) = delete;
    Job& operator=(const Job&) = delete;
    ~Job() { if (j_) ferry_job_fail(j_, FERRY_EREMOTE, "the worker dropped the request"); }

    Message request() const {
        const ferry_message* m = nullptr;
        check(ferry_job_request(j_, &m));
        return Message(m);
    }
    Writer writer() { return Writer(ferry_job_writer(j_)); }
    void reply() { check(ferry_job_reply(std::exchange(j_, nullptr))); }
    void fail(const std::string& message, int code = FERRY_EREMOTE) { ferry_job_fail(std::exchange(j_, nullptr), code, message.c_str()); }

private:
    ferry_job* j_;
};

/// Serves a channel (creates it, or joins the processes serving it).
class Worker {
public:
    explicit Worker(const std::string& url, const ferry_options* opts = nullptr) { check(ferry_worker_new(url.c_str(), opts, &w_)); }
    Worker(Worker&& o) noexcept : w_(std::exchange(o.w_, nullptr)) {}
    Worker& operator=(Worker&&) = delete;
    Worker(const Worker&) = delete;
    Worker& operator=(const Worker&) = delete;
    ~Worker() { ferry_worker_free(w_); }

    /// The next request, or nullopt when none came within timeout_ms.
    std::optional<Job> receive(int64_t timeout_ms) {
        ferry_job* j = nullptr;
        int rc = ferry_worker_recv(w_, timeout_ms, &j);
        if (rc == FERRY_ETIMEDOUT) return std::nullopt;
        check(rc);
        return Job(j);
    }

    /// Calls handler(request, writer) for each request until `running()` is false; an
    /// exception from the handler becomes an error reply.
    template <class Handler, class Running> void serve(Handler handler, Running running) {
        while (running()) {
            std::optional<Job> job;
            try {
                job = receive(200);
            } catch (const ChannelClosed&) {
                return;
            }
            if (!job) continue;
            try {
                Writer w = job->writer();
                handler(job->request(), w);
                job->reply();
            } catch (const std::exception& e) {
                job->fail(e.what());
            }
        }
    }

private:
    ferry_worker* w_ = nullptr;
};

// ---- streams --------------------------------------------------------------------------------

/// One received frame; pins its slot (the publisher writes elsewhere) until destroyed.
class Frame {
public:
    explicit Frame(ferry_frame* f) : f_(f) {
        int rc = ferry_frame_describe(f_, &info_);
        if (rc != FERRY_OK) { ferry_frame_free(std::exchange(f_, nullptr)); check(rc); }
    }
    Frame(Frame&& o) noexcept : f_(std::exchange(o.f_, nullptr)), info_(o.info_) {}
    Frame& operator=(Frame&& o) noexcept { if (this != &o) { ferry_frame_free(f_); f_ = std::exchange(o.f_, nullptr); info_ = o.info_; } return *this; }
    Frame(const Frame&) = delete;
    Frame& operator=(const Frame&) = delete;
    ~Frame() { ferry_frame_free(f_); }

    uint64_t sequence() const noexcept { return info_.sequence; }
    uint64_t timestamp_ns() const noexcept { return info_.timestamp_ns; }
    /// End-to-end age when received (receipt minus capture time).
    uint64_t age_ns() const noexcept { return info_.age_ns; }
    /// Frames skipped since the previous one this subscriber took.
    uint64_t dropped_before() const noexcept { return info_.dropped_before; }
    /// The frame's message, read in place (valid while this Frame lives).
    Message message() const {
        const ferry_message* m = nullptr;
        check(ferry_frame_message(f_, &m));
        return Message(m);
    }

private:
    ferry_frame* f_;
    ferry_frame_info info_{};
};

/// The writing side of a stream, e.g. Publisher("cam0"): creates it; destroying it ends it.
class Publisher {
public:
    explicit Publisher(const std::string& url, const ferry_options* opts = nullptr) { check(ferry_publisher_new(url.c_str(), opts, &p_)); }
    Publisher(Publisher&& o) noexcept : p_(std::exchange(o.p_, nullptr)) {}
    Publisher& operator=(Publisher&&) = delete;
    Publisher(const Publisher&) = delete;
    Publisher& operator=(const Publisher&) = delete;
    ~Publisher() { ferry_publisher_free(p_); }

    /// Claims a free slot; fill the frame through the writer, then publish() (or cancel()).
    Writer loan(int64_t timeout_ms = -1) {
        ferry_writer* w = nullptr;
        check(ferry_publisher_loan(p_, timeout_ms, &w));
        return Writer(w);
    }
    /// Publishes the loaned frame; timestamp_ns is the capture time (CLOCK_MONOTONIC, 0: now).
    uint64_t publish(uint64_t timestamp_ns = 0) {
        uint64_t seq = 0;
        check(ferry_publisher_publish(p_, timestamp_ns, &seq));
        return seq;
    }
    void cancel() { check(ferry_publisher_cancel(p_)); }
    size_t subscribers() const {
        size_t n = 0;
        check(ferry_publisher_subscribers(p_, &n));
        return n;
    }

private:
    ferry_publisher* p_ = nullptr;
};

/// A reading side of a stream: the newest frame each time, or every frame (`every`).
class Subscriber {
public:
    explicit Subscriber(const std::string& url, bool every = false) {
        check(ferry_subscriber_new(url.c_str(), every ? FERRY_STREAM_EVERY : FERRY_STREAM_LATEST, &s_));
    }
    Subscriber(Subscriber&& o) noexcept : s_(std::exchange(o.s_, nullptr)) {}
    Subscriber& operator=(Subscriber&&) = delete;
    Subscriber(const Subscriber&) = delete;
    Subscriber& operator=(const Subscriber&) = delete;
    ~Subscriber() { ferry_subscriber_free(s_); }

    /// The next frame, or nullopt when none came within timeout_ms. Throws ChannelClosed
    /// once the stream ended, WorkerDied when its publisher died.
    std::optional<Frame> receive(int64_t timeout_ms = -1) {
        ferry_frame* f = nullptr;
        int rc = ferry_subscriber_recv(s_, timeout_ms, &f, nullptr, nullptr, 0, nullptr);
        if (rc == FERRY_ETIMEDOUT) return std::nullopt;
        check(rc);
        return Frame(f);
    }
    ferry_stream_stats stats() const {
        ferry_stream_stats st{};
        check(ferry_subscriber_stats(s_, &st));
        return st;
    }

private:
    ferry_subscriber* s_ = nullptr;
};

}  // namespace ferry

#endif  // FERRY_HPP
