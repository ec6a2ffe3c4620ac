/* A C worker (the "reverse direction"): serves URL and answers every request with its
 * tensors doubled (uint8 +1, float32 ×2), until a request carries metadata "stop". */
#include <stdio.h>
#include <string.h>

#include <ferry.h>

int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: %s URL\n", argv[0]); return 2; }
    ferry_worker *worker = NULL;
    if (ferry_worker_new(argv[1], NULL, &worker) != FERRY_OK) { fprintf(stderr, "%s\n", ferry_last_error()); return 1; }
    printf("serving\n");
    fflush(stdout);
    int stop = 0, rc = FERRY_OK;
    while (!stop) {
        ferry_job *job = NULL;
        rc = ferry_worker_recv(worker, 200, &job);
        if (rc == FERRY_ETIMEDOUT) continue;
        if (rc != FERRY_OK) break;
        const ferry_message *req = NULL;
        if (ferry_job_request(job, &req) != FERRY_OK) { ferry_job_fail(job, FERRY_EMALFORMED, ferry_last_error()); continue; }
        for (size_t i = 0; i < ferry_message_meta_count(req); i++) {
            const char *k, *v;
            size_t kl, vl;
            if (ferry_message_meta(req, i, &k, &kl, &v, &vl) == FERRY_OK && kl == 4 && memcmp(k, "stop", 4) == 0) stop = 1;
        }
        ferry_writer *w = ferry_job_writer(job);
        int ok = 1;
        for (size_t i = 0; ok && i < ferry_message_tensor_count(req); i++) {
            ferry_tensor t;
            char name[256];
            void *out = NULL;
            size_t n = 0;
            ferry_message_tensor(req, i, &t);
            if (t.name_len >= sizeof name || (t.dtype != FERRY_DTYPE_UINT8 && t.dtype != FERRY_DTYPE_FLOAT32)) { ok = 0; break; }
            memcpy(name, t.name, t.name_len);
            name[t.name_len] = 0;
            if (ferry_writer_add_tensor(w, name, t.dtype, t.ndim, t.shape, &out, &n) != FERRY_OK) { ok = 0; break; }
            if (t.dtype == FERRY_DTYPE_UINT8) {
                for (size_t k = 0; k < n; k++) ((unsigned char *)out)[k] = (unsigned char)(((const unsigned char *)t.data)[k] + 1);
            } else {
                for (size_t k = 0; k < n / 4; k++) ((float *)out)[k] = ((const float *)t.data)[k] * 2;
            }
        }
        if (ok) ferry_job_reply(job); else ferry_job_fail(job, FERRY_EREMOTE, "only uint8 and float32 tensors");
    }
    if (rc != FERRY_OK && rc != FERRY_ETIMEDOUT) fprintf(stderr, "worker stops: %s\n", ferry_last_error());
    ferry_worker_free(worker);
    return rc == FERRY_OK || rc == FERRY_ECLOSED || rc == FERRY_ETIMEDOUT ? 0 : 1;
}
