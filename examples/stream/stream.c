/* Stream example in C: publish a synthetic camera, or subscribe and check every frame.
 *
 *   stream publish NAME [FRAMES] [WIDTH] [HEIGHT]
 *   stream subscribe NAME [FRAMES] [every|latest]
 *
 * Frame n: a [HEIGHT, WIDTH, 3] uint8 tensor "frame" whose row r holds (n + r) % 256 in
 * every byte, with metadata n=<n> (see stream.py). */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <ferry.h>

/* Capture timestamps are CLOCK_MONOTONIC nanoseconds: the clock subscribers measure age on. */
static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void pause_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int fail(int rc) {
    fprintf(stderr, "ferry: %s: %s\n", ferry_status_name(rc), ferry_last_error());
    return 1;
}

static int publish(const char *name, long frames, int64_t width, int64_t height) {
    ferry_options opts;
    ferry_options_init(&opts);
    opts.slots = 8;
    opts.slot_size = width * height * 3 + (1 << 16);
    ferry_publisher *pub = NULL;
    int rc = ferry_publisher_new(name, &opts, &pub);
    if (rc != FERRY_OK) return fail(rc);
    size_t subs = 0;
    for (int i = 0; i < 2000 && subs == 0; i++) { /* wait up to 10 s for a reader */
        ferry_publisher_subscribers(pub, &subs);
        if (subs == 0) pause_ms(5);
    }
    const int64_t shape[3] = {height, width, 3};
    for (long n = 0; n < frames && rc == FERRY_OK; n++) {
        ferry_writer *w = NULL;
        void *data = NULL;
        rc = ferry_publisher_loan(pub, 10000, &w);
        if (rc == FERRY_OK) rc = ferry_writer_add_tensor(w, "frame", FERRY_DTYPE_UINT8, 3, shape, &data, NULL);
        if (rc == FERRY_OK) {
            for (int64_t r = 0; r < height; r++) memset((uint8_t *)data + r * width * 3, (int)((n + r) % 256), (size_t)(width * 3));
            char text[32];
            snprintf(text, sizeof text, "%ld", n);
            rc = ferry_writer_set_meta(w, "n", text);
        }
        if (rc == FERRY_OK) rc = ferry_publisher_publish(pub, now_ns(), NULL);
    }
    if (rc != FERRY_OK) fail(rc);
    ferry_publisher_free(pub); /* ends the stream; readers still take what is left */
    if (rc == FERRY_OK) printf("published %ld frames of %lldx%lld\n", frames, (long long)width, (long long)height);
    return rc == FERRY_OK ? 0 : 1;
}

static int subscribe(const char *name, long frames, int every) {
    ferry_subscriber *sub = NULL;
    int rc = ferry_subscriber_new(name, every ? FERRY_STREAM_EVERY : FERRY_STREAM_LATEST, &sub);
    if (rc != FERRY_OK) return fail(rc);
    long got = 0, bad = 0, last = -1;
    uint64_t age_sum = 0;
    for (;;) {
        ferry_frame *frame = NULL;
        const ferry_message *msg = NULL;
        ferry_tensor t;
        size_t count = 0;
        rc = ferry_subscriber_recv(sub, 10000, &frame, &msg, &t, 1, &count);
        /* Closed: the publisher ended the stream (after its last frame), or the stream broke
         * (its shared memory was truncated): an error unless the last frame came. */
        if (rc == FERRY_ECLOSED && last == frames - 1) { rc = FERRY_OK; break; }
        if (rc != FERRY_OK) break;
        ferry_frame_info info;
        ferry_frame_describe(frame, &info);
        long n = -1;
        for (size_t i = 0; i < ferry_message_meta_count(msg); i++) {
            const char *k, *v;
            size_t kl, vl;
            if (ferry_message_meta(msg, i, &k, &kl, &v, &vl) == FERRY_OK && kl == 1 && k[0] == 'n') n = strtol(v, NULL, 10);
        }
        int ok = count == 1 && t.dtype == FERRY_DTYPE_UINT8 && t.ndim == 3 && t.shape[2] == 3 && n >= 0;
        for (int64_t r = 0; ok && r < t.shape[0]; r++) {
            const uint8_t *row = (const uint8_t *)t.data + r * t.shape[1] * 3;
            for (int64_t c = 0; c < t.shape[1] * 3; c++)
                if (row[c] != (uint8_t)((n + r) % 256)) { ok = 0; break; }
        }
        bad += !ok;
        got++;
        last = n;
        age_sum += info.age_ns;
        ferry_frame_free(frame); /* the slot goes back to the publisher */
        if (n == frames - 1) break;
    }
    ferry_stream_stats st;
    ferry_subscriber_stats(sub, &st);
    ferry_subscriber_free(sub);
    if (rc != FERRY_OK) return fail(rc);
    printf("received %ld frames, dropped %llu, %.0f fps, age mean %.2f ms, %ld wrong\n", got,
           (unsigned long long)st.dropped, st.fps, got ? (double)age_sum / (double)got / 1e6 : 0.0, bad);
    return bad == 0 ? 0 : 1;
}

int main(int argc, char **argv) {
    const char *role = argc > 1 ? argv[1] : "subscribe";
    const char *name = argc > 2 ? argv[2] : "camera";
    long frames = argc > 3 ? atol(argv[3]) : 300;
    if (strcmp(role, "publish") == 0)
        return publish(name, frames, argc > 4 ? atoll(argv[4]) : 1920, argc > 5 ? atoll(argv[5]) : 1080);
    return subscribe(name, frames, !(argc > 4 && strcmp(argv[4], "latest") == 0));
}
