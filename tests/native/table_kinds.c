/* Every column kind from C to a Python model and back: the model (tests/models/tables.py)
 * echoes the DataFrame it built, with the pandas dtype it saw per column in "seen", which this
 * program prints for the test to check. Every value and null that comes back is compared. */
#include <stdio.h>
#include <string.h>

#include <ferry.h>

#define ROWS 5

static int fail(int rc) {
    fprintf(stderr, "ferry: %s: %s\n", ferry_status_name(rc), ferry_last_error());
    return 1;
}

int main(int argc, char **argv) {
    ferry_client *client = NULL;
    ferry_call *call = NULL;
    const ferry_message *reply = NULL;
    int rc = ferry_client_new(argc > 1 ? argv[1] : "shm://tables", NULL, &client);
    if (rc == FERRY_OK) rc = ferry_call_begin(client, 30000, &call);
    if (rc != FERRY_OK) return fail(rc);
    ferry_writer *w = ferry_call_writer(call);
    void *price = NULL, *n = NULL, *ok = NULL;
    int64_t *at = NULL, *dur = NULL;
    uint8_t *n_valid = NULL, *at_valid = NULL;
    const char *names[ROWS] = {"a", NULL, "ß", "😀", ""};
    const uint8_t names_valid[ROWS] = {1, 0, 1, 1, 1};
    if (rc == FERRY_OK) rc = ferry_writer_begin_table(w, ROWS);
    if (rc == FERRY_OK) rc = ferry_writer_add_column(w, "price", FERRY_DTYPE_FLOAT64, 0, &price, NULL);
    if (rc == FERRY_OK) rc = ferry_writer_add_column(w, "n", FERRY_DTYPE_INT64, 1, &n, &n_valid);
    if (rc == FERRY_OK) rc = ferry_writer_add_column(w, "ok", FERRY_DTYPE_BOOL, 0, &ok, NULL);
    if (rc == FERRY_OK) rc = ferry_writer_add_time_column(w, "at", FERRY_COLUMN_DATETIME, "ms", "Europe/Paris", 1, &at, &at_valid);
    if (rc == FERRY_OK) rc = ferry_writer_add_time_column(w, "dur", FERRY_COLUMN_TIMEDELTA, "s", NULL, 0, &dur, NULL);
    if (rc == FERRY_OK) rc = ferry_writer_put_string_column(w, "name", names, NULL, names_valid);
    if (rc != FERRY_OK) return fail(rc);
    for (int i = 0; i < ROWS; i++) {
        ((double *)price)[i] = 1.5 * i;
        ((int64_t *)n)[i] = (int64_t)1 << 53 | i; /* not representable as float64 */
        ((uint8_t *)ok)[i] = (uint8_t)(i % 2);
        at[i] = 1774747800000 + 3600000 * (int64_t)i; /* 2026-03-29 01:30 UTC onwards (a DST change in Paris) */
        dur[i] = -7 + i;
    }
    n_valid[2] = 0;
    at_valid[4] = 0;
    /* Misuse is an error, not a corrupt table. */
    void *dummy = NULL;
    if (ferry_writer_add_column(w, "price", FERRY_DTYPE_FLOAT64, 0, &dummy, NULL) != FERRY_EINVAL) return 2;
    if (ferry_writer_add_time_column(w, "bad", FERRY_COLUMN_DATETIME, "weeks", NULL, 0, &at, NULL) != FERRY_EINVAL) return 2;
    if ((rc = ferry_writer_end_table(w)) != FERRY_OK) return fail(rc);
    if ((rc = ferry_call_send(call)) != FERRY_OK) return fail(rc);
    if ((rc = ferry_call_wait(call, 30000, &reply)) != FERRY_OK) return fail(rc);

    int64_t rows = 0;
    size_t cols = 0;
    if ((rc = ferry_message_table(reply, &rows, &cols)) != FERRY_OK) return fail(rc);
    if (rows != ROWS || cols != 8) { fprintf(stderr, "rows %lld cols %zu\n", (long long)rows, cols); return 3; }
    ferry_column c;
    int bad = 0;
    rc = ferry_message_find_column(reply, "n", &c);
    bad |= rc || c.kind != FERRY_COLUMN_MASKED || c.valid == NULL || c.valid[2] != 0 || c.valid[1] != 1 ||
           ((const int64_t *)c.data)[3] != ((int64_t)1 << 53 | 3);
    rc = ferry_message_find_column(reply, "at", &c);
    bad |= rc || c.kind != FERRY_COLUMN_DATETIME || strcmp(c.unit, "ms") != 0 || c.tz_len != 12 || memcmp(c.tz, "Europe/Paris", 12) != 0 ||
           c.valid == NULL || c.valid[4] != 0 || ((const int64_t *)c.data)[1] != 1774747800000 + 3600000;
    rc = ferry_message_find_column(reply, "dur", &c);
    bad |= rc || c.kind != FERRY_COLUMN_TIMEDELTA || strcmp(c.unit, "s") != 0 || ((const int64_t *)c.data)[0] != -7;
    rc = ferry_message_find_column(reply, "name", &c);
    bad |= rc || c.kind != FERRY_COLUMN_STRING || c.valid == NULL || c.valid[1] != 0 ||
           c.offsets[3] - c.offsets[2] != 2 || memcmp(c.text + c.offsets[2], "ß", 2) != 0 || c.offsets[5] - c.offsets[4] != 0;
    rc = ferry_message_find_column(reply, "ok", &c);
    bad |= rc || c.kind != FERRY_COLUMN_NUMERIC || c.dtype != FERRY_DTYPE_BOOL || ((const uint8_t *)c.data)[1] != 1;
    rc = ferry_message_find_column(reply, "seen", &c);
    bad |= rc || c.kind != FERRY_COLUMN_STRING;
    if (bad) { fprintf(stderr, "a column came back wrong\n"); return 4; }
    for (int64_t i = 0; i < rows; i++) printf("%.*s\n", (int)(c.offsets[i + 1] - c.offsets[i]), c.text + c.offsets[i]);
    if (ferry_message_find_column(reply, "nope", &c) != FERRY_EINVAL) return 5;
    ferry_call_free(call);
    ferry_client_free(client);
    return 0;
}
