/* C client: streams synthetic 1080p BGR frames, each decoded straight into shared memory,
 * with the seed's {width, height, type} header; checks each result and prints fps. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <ferry.h>

enum { W = 1920, H = 1080, CV_8UC3 = 16 };

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    const char *url = argc > 1 ? argv[1] : "shm://frames";
    int count = argc > 2 ? atoi(argv[2]) : 200;
    ferry_client *client = NULL;
    int rc = ferry_client_new(url, NULL, &client);
    double start = now();
    for (int i = 0; rc == FERRY_OK && i < count; i++) {
        ferry_call *call = NULL;
        const ferry_message *reply = NULL;
        ferry_tensor means;
        rc = ferry_call_begin(client, 30000, &call);
        if (rc == FERRY_OK) {
            const int32_t header[3] = {W, H, CV_8UC3};
            const int64_t hshape[1] = {3};
            rc = ferry_writer_put_tensor(ferry_call_writer(call), "header", FERRY_DTYPE_INT32, 1, hshape, header, sizeof header);
        }
        if (rc == FERRY_OK) {
            const int64_t shape[3] = {H, W, 3};
            void *pixels = NULL;
            size_t n = 0;
            rc = ferry_writer_add_tensor(ferry_call_writer(call), "frame", FERRY_DTYPE_UINT8, 3, shape, &pixels, &n);
            if (rc == FERRY_OK) memset(pixels, (i * 7) % 256, n); /* "decode" into the slot */
        }
        if (rc == FERRY_OK) rc = ferry_call_send(call);
        if (rc == FERRY_OK) rc = ferry_call_wait(call, 30000, &reply);
        if (rc == FERRY_OK) rc = ferry_message_tensor(reply, 0, &means);
        if (rc == FERRY_OK) {
            const float *m = (const float *)means.data;
            if (means.dtype != FERRY_DTYPE_FLOAT32 || means.shape[0] != 3 || m[0] != (float)((i * 7) % 256)) {
                fprintf(stderr, "frame %d: wrong result\n", i);
                rc = FERRY_EMALFORMED;
            }
        }
        ferry_call_free(call);
    }
    if (rc != FERRY_OK) {
        fprintf(stderr, "ferry: %s: %s\n", ferry_status_name(rc), ferry_last_error());
    } else {
        printf("%d frames %dx%d, fps: %.1f\n", count, W, H, count / (now() - start));
    }
    ferry_client_free(client);
    return rc == FERRY_OK ? 0 : 1;
}
