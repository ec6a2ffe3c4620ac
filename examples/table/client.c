/* C client: sends a stock table as columns (one tensor per column) and checks the summary
 * computed by pandas on the Python side. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include <ferry.h>

int main(int argc, char **argv) {
    const char *url = argc > 1 ? argv[1] : "shm://table";
    int64_t rows = argc > 2 ? atoll(argv[2]) : 1000;
    ferry_client *client = NULL;
    ferry_call *call = NULL;
    const ferry_message *reply = NULL;
    int rc = ferry_client_new(url, NULL, &client);
    if (rc == FERRY_OK) rc = ferry_call_begin(client, 30000, &call);
    const int64_t shape[1] = {rows};
    void *date = NULL, *open = NULL, *close = NULL, *volume = NULL;
    ferry_writer *w = call ? ferry_call_writer(call) : NULL;
    /* Columns are filled in place, in shared memory. */
    if (rc == FERRY_OK) rc = ferry_writer_add_tensor(w, "date", FERRY_DTYPE_INT64, 1, shape, &date, NULL);
    if (rc == FERRY_OK) rc = ferry_writer_add_tensor(w, "open", FERRY_DTYPE_FLOAT64, 1, shape, &open, NULL);
    if (rc == FERRY_OK) rc = ferry_writer_add_tensor(w, "close", FERRY_DTYPE_FLOAT64, 1, shape, &close, NULL);
    if (rc == FERRY_OK) rc = ferry_writer_add_tensor(w, "volume", FERRY_DTYPE_INT64, 1, shape, &volume, NULL);
    if (rc == FERRY_OK) {
        for (int64_t i = 0; i < rows; i++) {
            ((int64_t *)date)[i] = 20260101 + i;
            ((double *)open)[i] = 100 + 0.25 * (double)i;
            ((double *)close)[i] = 100 + 0.5 * (double)i;
            ((int64_t *)volume)[i] = 1000 + i;
        }
        rc = ferry_call_send(call);
    }
    if (rc == FERRY_OK) rc = ferry_call_wait(call, 30000, &reply);
    ferry_tensor t_rows, t_mean, t_volume;
    if (rc == FERRY_OK) rc = ferry_message_find(reply, "rows", &t_rows);
    if (rc == FERRY_OK) rc = ferry_message_find(reply, "mean_close", &t_mean);
    if (rc == FERRY_OK) rc = ferry_message_find(reply, "total_volume", &t_volume);
    if (rc == FERRY_OK) {
        int64_t n = *(const int64_t *)t_rows.data, vol = *(const int64_t *)t_volume.data;
        double mean = *(const double *)t_mean.data;
        printf("columns: rows=%lld mean_close=%.2f total_volume=%lld\n", (long long)n, mean, (long long)vol);
        if (n != rows || fabs(mean - (100 + 0.5 * (double)(rows - 1) / 2)) > 1e-9 || vol != 1000 * rows + rows * (rows - 1) / 2) {
            fprintf(stderr, "wrong summary\n");
            rc = FERRY_EMALFORMED;
        }
    } else {
        fprintf(stderr, "ferry: %s: %s\n", ferry_status_name(rc), ferry_last_error());
    }
    ferry_call_free(call);
    ferry_client_free(client);
    return rc == FERRY_OK ? 0 : 1;
}
