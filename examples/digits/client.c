/* C client: reads nine 28×28 digit images (raw bytes) and prints the model's labels. */
#include <stdio.h>
#include <string.h>

#include <ferry.h>

int main(int argc, char **argv) {
    const char *url = argc > 1 ? argv[1] : "shm://digits";
    static unsigned char images[9 * 28 * 28];
    if (argc > 2) {
        FILE *f = fopen(argv[2], "rb");
        if (!f || fread(images, 1, sizeof images, f) != sizeof images) { fprintf(stderr, "cannot read %s\n", argv[2]); return 1; }
        fclose(f);
    }
    ferry_client *client = NULL;
    ferry_call *call = NULL;
    const ferry_message *reply = NULL;
    ferry_tensor labels;
    int rc = ferry_client_new(url, NULL, &client);
    if (rc == FERRY_OK) rc = ferry_call_begin(client, 30000, &call);
    if (rc == FERRY_OK) {
        const int64_t shape[3] = {9, 28, 28};
        void *slot = NULL; /* the request tensor, in shared memory: write the pixels there */
        rc = ferry_writer_add_tensor(ferry_call_writer(call), "digits", FERRY_DTYPE_UINT8, 3, shape, &slot, NULL);
        if (rc == FERRY_OK) memcpy(slot, images, sizeof images);
    }
    if (rc == FERRY_OK) rc = ferry_call_send(call);
    if (rc == FERRY_OK) rc = ferry_call_wait(call, 30000, &reply);
    if (rc == FERRY_OK) rc = ferry_message_tensor(reply, 0, &labels);
    if (rc == FERRY_OK && (labels.dtype != FERRY_DTYPE_INT64 || labels.ndim != 1 || labels.shape[0] != 9)) {
        fprintf(stderr, "unexpected reply\n");
        rc = FERRY_EMALFORMED;
    }
    if (rc == FERRY_OK) {
        const int64_t *v = (const int64_t *)labels.data;
        printf("labels:");
        for (int i = 0; i < 9; i++) printf(" %lld", (long long)v[i]);
        printf("\n");
    } else {
        fprintf(stderr, "ferry: %s: %s\n", ferry_status_name(rc), ferry_last_error());
    }
    ferry_call_free(call);
    ferry_client_free(client);
    return rc == FERRY_OK ? 0 : 1;
}
