/* A C host of libpinned.a: starts a runtime with one partition serving the
 * built-in MLP, drives it from 4 host threads, and prints the latency
 * percentiles it measured and those pinned's telemetry recorded.
 *
 * Build from the repository root after `cargo build --release`:
 *
 *   cc -std=c11 -O2 -Wall -Wextra -pthread -Iinclude examples/c-host/main.c \
 *      target/release/libpinned.a $(target/release/pinned link-flags) -o c-host
 *   ./c-host [requests-per-thread [width width ...]]
 *   ./c-host minilm MODEL_DIR [requests-per-thread [bf16|int8]]
 *
 * With no widths it serves the default MLP 1024-4096-1024-4096-1024. The
 * minilm form loads all-MiniLM-L6-v2 from MODEL_DIR (config.json +
 * model.safetensors) with a 128-token limit and embeds one tokenised
 * sentence per request (token ids, then the attention mask).
 */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pinned.h"

#define HOST_THREADS 4

static void die(const char *what, pinned_status status) {
    char message[512];
    pinned_last_error(message, sizeof message, NULL);
    fprintf(stderr, "%s failed with status %u: %s\n", what, (unsigned)status, message);
    exit(1);
}

#define CHECK(call)                          \
    do {                                     \
        pinned_status s_ = (call);           \
        if (s_ != PINNED_OK) die(#call, s_); \
    } while (0)

struct host_thread {
    pinned_partition *partition;
    size_t input_len, output_len;
    int requests;
    int id;
    double *latencies_us; /* one per request */
    double checksum;
};

static double now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

/* "placement decides latency." in the MiniLM vocabulary, with [CLS]/[SEP]. */
static const float SENTENCE[] = {101, 11073, 7288, 2397, 1012, 102};
static int serve_minilm = 0;

static void fill_input(float *input, size_t len, int i, int id) {
    if (!serve_minilm) {
        for (size_t j = 0; j < len; j++) input[j] = (float)((i + id + j) % 7) * 0.1f;
        return;
    }
    size_t max_seq = len / 2, n = sizeof SENTENCE / sizeof SENTENCE[0];
    memset(input, 0, len * sizeof *input);
    for (size_t j = 0; j < n && j < max_seq; j++) {
        input[j] = SENTENCE[j];          /* token ids */
        input[max_seq + j] = 1.0f;       /* attention mask */
    }
}

static void *serve(void *arg) {
    struct host_thread *t = arg;
    float *input = malloc(t->input_len * sizeof *input);
    float *output = malloc(t->output_len * sizeof *output);
    for (int i = 0; i < t->requests; i++) {
        fill_input(input, t->input_len, i, t->id);
        double start = now_us();
        pinned_request request;
        CHECK(pinned_request_acquire(t->partition, 1000000, &request));
        CHECK(pinned_request_set_input(t->partition, request, input, t->input_len));
        CHECK(pinned_request_submit(t->partition, request, true));
        CHECK(pinned_request_wait(t->partition, request, 10000000));
        size_t written = 0;
        CHECK(pinned_request_get_output(t->partition, request, output, t->output_len, &written));
        CHECK(pinned_request_release(t->partition, request));
        t->latencies_us[i] = now_us() - start;
        t->checksum += output[0];
    }
    free(input);
    free(output);
    return NULL;
}

static int by_value(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    pinned_model_config model = {PINNED_MODEL_MLP, NULL, 0, 1, NULL, PINNED_PRECISION_F32, 0};
    size_t widths[16];
    size_t n_widths = 0;
    int requests = 1000;
    if (argc > 2 && strcmp(argv[1], "minilm") == 0) {
        serve_minilm = 1;
        model.kind = PINNED_MODEL_MINILM;
        model.path = argv[2];
        model.max_seq = 128;
        requests = argc > 3 ? atoi(argv[3]) : 100;
        if (argc > 4) model.precision = strcmp(argv[4], "int8") == 0 ? PINNED_PRECISION_INT8 : PINNED_PRECISION_BF16;
    } else {
        requests = argc > 1 ? atoi(argv[1]) : 1000;
        for (int i = 2; i < argc && n_widths < 16; i++) widths[n_widths++] = (size_t)atoll(argv[i]);
        model.widths = n_widths ? widths : NULL;
        model.n_widths = n_widths;
    }
    if (requests <= 0 || n_widths == 1) {
        fprintf(stderr, "usage: %s [requests-per-thread [width width ...]]\n"
                        "       %s minilm MODEL_DIR [requests-per-thread [bf16|int8]]\n", argv[0], argv[0]);
        return 2;
    }
    printf("pinned version %s\n", pinned_version());

    pinned_runtime *runtime = NULL;
    CHECK(pinned_runtime_new(&runtime));
    pinned_partition_config config;
    CHECK(pinned_partition_config_default(&config));
    config.name = serve_minilm ? "minilm" : "mlp";
    config.cpus = "all";
    CHECK(pinned_runtime_add_partition(runtime, &config));
    pinned_partition *partition = NULL;
    CHECK(pinned_runtime_load_model(runtime, config.name, &model, &partition));
    size_t input_len, output_len;
    CHECK(pinned_partition_io_len(partition, &input_len, &output_len));
    printf("partition %s: %zu inputs, %zu outputs\n", config.name, input_len, output_len);

    struct host_thread threads[HOST_THREADS];
    pthread_t handles[HOST_THREADS];
    double *all = malloc(sizeof(double) * (size_t)requests * HOST_THREADS);
    for (int i = 0; i < HOST_THREADS; i++) {
        threads[i] = (struct host_thread){partition, input_len, output_len, requests, i,
                                          all + (size_t)i * requests, 0.0};
        pthread_create(&handles[i], NULL, serve, &threads[i]);
    }
    for (int i = 0; i < HOST_THREADS; i++) pthread_join(handles[i], NULL);

    size_t n = (size_t)requests * HOST_THREADS;
    qsort(all, n, sizeof *all, by_value);
    printf("host-measured latency over %zu requests from %d threads: p50 %.1f us, p99 %.1f us, max %.1f us\n",
           n, HOST_THREADS, all[n / 2], all[(size_t)(n * 0.99)], all[n - 1]);

    pinned_telemetry telemetry;
    CHECK(pinned_partition_telemetry(partition, &telemetry));
    printf("pinned telemetry: %llu requests, %llu batches, %u workers; total p50 %.1f us, p99 %.1f us; "
           "queue wait p50 %.1f us; service p50 %.1f us\n",
           (unsigned long long)telemetry.requests, (unsigned long long)telemetry.batches,
           telemetry.workers, telemetry.total.p50_ns / 1e3, telemetry.total.p99_ns / 1e3,
           telemetry.queue_wait.p50_ns / 1e3, telemetry.service.p50_ns / 1e3);
    for (uint32_t w = 0; w < telemetry.workers; w++) {
        pinned_worker_telemetry wt;
        CHECK(pinned_partition_worker_telemetry(partition, w, &wt));
        printf("  worker %u: %llu requests, last cpu %d, pinned %d, migrations %s\n", w,
               (unsigned long long)wt.requests, wt.last_cpu, (int)wt.pinned,
               wt.migrations == UINT64_MAX ? "unavailable" : "counted");
    }
    double checksum = 0;
    for (int i = 0; i < HOST_THREADS; i++) checksum += threads[i].checksum;
    printf("checksum %.6f\n", checksum);
    int ok = telemetry.requests == n;
    free(all);
    pinned_runtime_free(runtime);
    printf(ok ? "c-host ok\n" : "c-host: telemetry count mismatch\n");
    return ok ? 0 : 1;
}
