/* A C client of a model with several outputs: sends one float32 array (x = 0, 1, ..., n-1)
 * and prints the reply's tensors by index — name, dtype, shape, first value — and the
 * `ferry.outputs` metadata (docs/protocol.md: "tuple" when the model returned a tuple or list
 * of arrays). With a second argument `info`, prints who serves the channel instead
 * (ferry_client_server_info). tests/test_fastcall.py and test_one_model.py check what it prints. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <ferry.h>

int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: %s URL\n", argv[0]); return 2; }
    ferry_client *client = NULL;
    if (ferry_client_new(argv[1], NULL, &client) != FERRY_OK) { printf("error %s\n", ferry_last_error()); return 1; }
    if (argc > 2 && !strcmp(argv[2], "info")) {  /* who serves the channel (ferry_client_server_info) */
        const char *model = NULL;
        int rc = ferry_client_server_info(client, 5000, &model);
        if (rc == FERRY_OK) printf("model %s\n", model); else printf("error %s %s\n", ferry_status_name(rc), ferry_last_error());
        ferry_client_free(client);
        return rc == FERRY_OK ? 0 : 1;
    }
    float x[6] = {0, 1, 2, 3, 4, 5};
    const int64_t shape[1] = {6};
    ferry_call *call = NULL;
    const ferry_message *reply = NULL;
    int rc = ferry_call_begin(client, 10000, &call);
    if (rc == FERRY_OK) rc = ferry_writer_put_tensor(ferry_call_writer(call), "input", FERRY_DTYPE_FLOAT32, 1, shape, x, sizeof x);
    if (rc == FERRY_OK) rc = ferry_call_send(call);
    if (rc == FERRY_OK) rc = ferry_call_wait(call, -1, &reply);
    if (rc != FERRY_OK) {
        printf("error %d %s\n", rc, ferry_last_error());
        ferry_call_free(call);
        ferry_client_free(client);
        return 1;
    }
    const char *outputs = "-";
    size_t outputs_len = 1;
    for (size_t i = 0; i < ferry_message_meta_count(reply); i++) {
        const char *k, *v;
        size_t kl, vl;
        if (ferry_message_meta(reply, i, &k, &kl, &v, &vl) == FERRY_OK && kl == strlen("ferry.outputs") && !memcmp(k, "ferry.outputs", kl)) {
            outputs = v;
            outputs_len = vl;
        }
    }
    printf("outputs %.*s\n", (int)outputs_len, outputs);
    for (size_t i = 0; i < ferry_message_tensor_count(reply); i++) {
        ferry_tensor t;
        if (ferry_message_tensor(reply, i, &t) != FERRY_OK) return 1;
        printf("%zu %.*s dtype=%d shape=", i, (int)t.name_len, t.name, t.dtype);
        for (int d = 0; d < t.ndim; d++) printf(d ? "x%lld" : "%lld", (long long)t.shape[d]);
        if (t.dtype == FERRY_DTYPE_FLOAT32 && t.nbytes >= 4) printf(" first=%g", (double)((const float *)t.data)[0]);
        /* bfloat16: raw 2-byte values, the upper half of a float32's bits (1.0 is 0x3f80) */
        if (t.dtype == FERRY_DTYPE_BFLOAT16 && t.nbytes >= 4) printf(" raw1=0x%04x", ((const uint16_t *)t.data)[1]);
        printf("\n");
    }
    ferry_call_free(call);
    ferry_client_free(client);
    return 0;
}
