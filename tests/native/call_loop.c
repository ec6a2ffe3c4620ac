/* A C client that calls URL over and over with a small uint8 tensor (and, given a second
 * argument, metadata asking the test model to sleep that many seconds), printing "ok" after
 * its first answer, until a call fails: then it prints the status name and the library's text
 * and exits 1. The truncation tests use it to see that a C client gets an error, not SIGBUS. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ferry.h>

int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: %s URL [SLEEP_SECONDS]\n", argv[0]); return 2; }
    ferry_client *client = NULL;
    if (ferry_client_new(argv[1], NULL, &client) != FERRY_OK) { printf("error %s\n", ferry_last_error()); return 1; }
    unsigned char data[16] = {1, 2, 3};
    const int64_t shape[1] = {16};
    double sleep_seconds = argc > 2 ? atof(argv[2]) : 0;
    for (long i = 0;; i++) {
        ferry_call *call = NULL;
        int rc = ferry_call_begin(client, 10000, &call);
        if (rc == FERRY_OK) rc = ferry_writer_put_tensor(ferry_call_writer(call), "x", FERRY_DTYPE_UINT8, 1, shape, data, sizeof data);
        if (rc == FERRY_OK && sleep_seconds > 0) {
            double s = sleep_seconds;
            rc = ferry_writer_put_tensor(ferry_call_writer(call), "sleep", FERRY_DTYPE_FLOAT64, 0, shape, &s, sizeof s);
        }
        const ferry_message *reply = NULL;
        if (rc == FERRY_OK) rc = ferry_call_send(call);
        if (rc == FERRY_OK) rc = ferry_call_wait(call, -1, &reply);
        if (rc == FERRY_OK) rc = ferry_call_check(call);
        if (rc != FERRY_OK) {
            printf("error %d %s\n", rc, ferry_last_error());
            fflush(stdout);
            ferry_call_free(call);
            ferry_client_free(client);
            return 1;
        }
        ferry_call_free(call);
        if (i == 0) { printf("ok\n"); fflush(stdout); }
    }
}
