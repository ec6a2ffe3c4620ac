/* C client: sends a stock table column by column (ferry_writer_begin_table …), a pandas
 * DataFrame on the Python side, and reads back the per-symbol summary table it answers. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ferry.h>

static const char *SYMS[3] = {"AAA", "BBB", "CCC"};

int main(int argc, char **argv) {
    const char *url = argc > 1 ? argv[1] : "shm://table";
    int64_t rows = argc > 2 ? atoll(argv[2]) : 1000;
    ferry_client *client = NULL;
    ferry_call *call = NULL;
    const ferry_message *reply = NULL;
    int rc = ferry_client_new(url, NULL, &client);
    if (rc == FERRY_OK) rc = ferry_call_begin(client, 30000, &call);
    ferry_writer *w = call ? ferry_call_writer(call) : NULL;
    void *date = NULL, *open = NULL, *close = NULL, *volume = NULL;
    /* Columns are filled in place, in shared memory. */
    if (rc == FERRY_OK) rc = ferry_writer_begin_table(w, rows);
    if (rc == FERRY_OK) rc = ferry_writer_add_column(w, "date", FERRY_DTYPE_INT64, 0, &date, NULL);
    if (rc == FERRY_OK) rc = ferry_writer_add_column(w, "open", FERRY_DTYPE_FLOAT64, 0, &open, NULL);
    if (rc == FERRY_OK) rc = ferry_writer_add_column(w, "close", FERRY_DTYPE_FLOAT64, 0, &close, NULL);
    if (rc == FERRY_OK) rc = ferry_writer_add_column(w, "volume", FERRY_DTYPE_INT64, 0, &volume, NULL);
    const char **sym = malloc(sizeof(char *) * (size_t)(rows > 0 ? rows : 1));
    if (rc == FERRY_OK) {
        for (int64_t i = 0; i < rows; i++) {
            ((int64_t *)date)[i] = 20260101 + i;
            ((double *)open)[i] = 100 + 0.25 * (double)i;
            ((double *)close)[i] = 100 + 0.5 * (double)i;
            ((int64_t *)volume)[i] = 1000 + i;
            sym[i] = SYMS[i % 3];
        }
        rc = ferry_writer_put_string_column(w, "sym", sym, NULL, NULL);
    }
    if (rc == FERRY_OK) rc = ferry_writer_end_table(w);
    if (rc == FERRY_OK) rc = ferry_call_send(call);
    if (rc == FERRY_OK) rc = ferry_call_wait(call, 30000, &reply);
    /* The reply is a table too: sym, rows, mean_close, total_volume, one row per symbol. */
    int64_t n = 0;
    ferry_column c_sym, c_rows, c_mean, c_volume;
    if (rc == FERRY_OK) rc = ferry_message_table(reply, &n, NULL);
    if (rc == FERRY_OK) rc = ferry_message_find_column(reply, "sym", &c_sym);
    if (rc == FERRY_OK) rc = ferry_message_find_column(reply, "rows", &c_rows);
    if (rc == FERRY_OK) rc = ferry_message_find_column(reply, "mean_close", &c_mean);
    if (rc == FERRY_OK) rc = ferry_message_find_column(reply, "total_volume", &c_volume);
    int ok = rc == FERRY_OK && n == 3 && c_sym.kind == FERRY_COLUMN_STRING && c_rows.dtype == FERRY_DTYPE_INT64 &&
             c_mean.dtype == FERRY_DTYPE_FLOAT64 && c_volume.dtype == FERRY_DTYPE_INT64;
    for (int64_t k = 0; ok && k < 3; k++) {
        int64_t count = 0, vol = 0;
        double sum = 0;
        for (int64_t i = k; i < rows; i += 3) count++, vol += 1000 + i, sum += 100 + 0.5 * (double)i;
        size_t len = (size_t)(c_sym.offsets[k + 1] - c_sym.offsets[k]);
        const char *s = c_sym.text + c_sym.offsets[k];
        ok = len == 3 && memcmp(s, SYMS[k], 3) == 0 && ((const int64_t *)c_rows.data)[k] == count &&
             ((const int64_t *)c_volume.data)[k] == vol && fabs(((const double *)c_mean.data)[k] - sum / (double)count) < 1e-9;
        if (ok) printf("%s%.*s=%lld", k ? " " : "table: ", (int)len, s, (long long)count);
    }
    if (rc != FERRY_OK) {
        fprintf(stderr, "ferry: %s: %s\n", ferry_status_name(rc), ferry_last_error());
    } else if (!ok) {
        fprintf(stderr, "wrong per-symbol summary\n");
        rc = FERRY_EMALFORMED;
    } else {
        printf("\n");
    }
    free(sym);
    ferry_call_free(call);
    ferry_client_free(client);
    return rc == FERRY_OK ? 0 : 1;
}
