// Stream example in C++ (seed 002: a camera in C++, readers anywhere):
//
//   stream publish NAME [FRAMES] [WIDTH] [HEIGHT]
//   stream subscribe NAME [FRAMES] [every|latest]
//
// Frame n: a [HEIGHT, WIDTH, 3] uint8 tensor "frame" whose row r holds (n + r) % 256 in
// every byte, with metadata n=<n> (see stream.py).
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>

#include <ferry.hpp>

// Capture timestamps are CLOCK_MONOTONIC nanoseconds (steady_clock on Linux): the clock
// subscribers measure age on.
static uint64_t now_ns() {
    return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
        std::chrono::steady_clock::now().time_since_epoch()).count());
}

static void publish(const std::string& name, long frames, int64_t width, int64_t height) {
    ferry_options opts;
    ferry_options_init(&opts);
    opts.slots = 8;
    opts.slot_size = width * height * 3 + (1 << 16);
    ferry::Publisher pub(name, &opts);
    for (int i = 0; i < 2000 && pub.subscribers() == 0; i++) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    for (long n = 0; n < frames; n++) {
        ferry::Writer w = pub.loan(10000);
        auto image = w.add<uint8_t>("frame", {height, width, 3});  // filled in shared memory
        for (int64_t r = 0; r < height; r++)
            std::memset(image.data() + r * width * 3, static_cast<int>((n + r) % 256), static_cast<size_t>(width * 3));
        w.meta("n", std::to_string(n).c_str());
        pub.publish(now_ns());
    }
    std::printf("published %ld frames of %lldx%lld\n", frames, static_cast<long long>(width), static_cast<long long>(height));
}

static int subscribe(const std::string& name, long frames, bool every) {
    ferry::Subscriber sub(name, every);
    long got = 0, bad = 0;
    double age_ms = 0;
    for (;;) {
        std::optional<ferry::Frame> frame;
        try {
            frame = sub.receive(10000);
        } catch (const ferry::ChannelClosed&) {
            break;
        }
        if (!frame) throw ferry::Timeout(FERRY_ETIMEDOUT, "no frame within 10 s");
        ferry::Message msg = frame->message();
        long n = std::stol(std::string(msg.meta("n").value_or("-1")));
        auto t = msg.find("frame");
        bool ok = t && t->shape.ndim == 3 && n >= 0;
        if (ok) {
            auto px = t->as<uint8_t>();
            int64_t row = t->shape.dims[1] * 3;
            for (int64_t r = 0; ok && r < t->shape.dims[0]; r++)
                for (int64_t c = 0; c < row; c++)
                    if (px[static_cast<size_t>(r * row + c)] != static_cast<uint8_t>((n + r) % 256)) { ok = false; break; }
        }
        bad += !ok;
        got++;
        age_ms += static_cast<double>(frame->age_ns()) / 1e6;
        if (n == frames - 1) break;
    }
    ferry_stream_stats st = sub.stats();
    std::printf("received %ld frames, dropped %llu, %.0f fps, age mean %.2f ms, %ld wrong\n", got,
                static_cast<unsigned long long>(st.dropped), st.fps, got ? age_ms / static_cast<double>(got) : 0.0, bad);
    return bad == 0 ? 0 : 1;
}

int main(int argc, char** argv) {
    std::string role = argc > 1 ? argv[1] : "subscribe", name = argc > 2 ? argv[2] : "camera";
    long frames = argc > 3 ? std::stol(argv[3]) : 300;
    try {
        if (role == "publish") {
            publish(name, frames, argc > 4 ? std::stoll(argv[4]) : 1920, argc > 5 ? std::stoll(argv[5]) : 1080);
            return 0;
        }
        return subscribe(name, frames, !(argc > 4 && std::string(argv[4]) == "latest"));
    } catch (const ferry::Error& e) {
        std::fprintf(stderr, "ferry: %s: %s\n", e.code_name(), e.what());
        return 1;
    }
}
