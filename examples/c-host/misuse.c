/* Every misuse of the C API gets a status code and a message, never a
 * crash. Each check prints "ok <what>" or "FAIL <what>"; exit status 0 when
 * all pass. Built and run by tests/c_host.rs (also under valgrind and
 * AddressSanitizer in CI). */
#include <stdio.h>
#include <string.h>

#include "pinned.h"

static int failures = 0;

static void expect(const char *what, pinned_status got, pinned_status want) {
    char message[256] = "";
    if (got != PINNED_OK) pinned_last_error(message, sizeof message, NULL);
    if (got == want) {
        printf("ok %s: %u %s\n", what, (unsigned)got, message);
    } else {
        printf("FAIL %s: got %u want %u (%s)\n", what, (unsigned)got, (unsigned)want, message);
        failures++;
    }
}

int main(void) {
    /* NULL handles and out-pointers. */
    expect("runtime_new(NULL)", pinned_runtime_new(NULL), PINNED_NULL_ARGUMENT);
    expect("add_partition(NULL runtime)", pinned_runtime_add_partition(NULL, NULL), PINNED_NULL_ARGUMENT);
    pinned_request r = 0;
    expect("acquire(NULL partition)", pinned_request_acquire(NULL, 0, &r), PINNED_NULL_ARGUMENT);
    expect("telemetry(NULL partition)", pinned_partition_telemetry(NULL, NULL), PINNED_NULL_ARGUMENT);
    expect("config_default(NULL)", pinned_partition_config_default(NULL), PINNED_NULL_ARGUMENT);
    pinned_runtime_free(NULL); /* ignored */

    /* Config strings that do not parse say where. */
    pinned_runtime *bad = NULL;
    expect("config with a syntax error",
           pinned_runtime_new_from_config("[[partition]\nname = 1", &bad), PINNED_INVALID_ARGUMENT);
    expect("config with an unknown field",
           pinned_runtime_new_from_config("{\"partition\": [{\"name\": \"a\", \"colour\": 1}]}", &bad),
           PINNED_INVALID_ARGUMENT);
    if (bad != NULL) { printf("FAIL output written on failure\n"); failures++; }

    pinned_runtime *runtime = NULL;
    expect("runtime_new", pinned_runtime_new(&runtime), PINNED_OK);

    /* A CPU list outside the machine, and a placement that is not one. */
    pinned_partition_config config;
    pinned_partition_config_default(&config);
    config.name = "far";
    config.cpus = "4000";
    expect("add partition on CPU 4000", pinned_runtime_add_partition(runtime, &config), PINNED_OK);
    size_t widths[] = {8, 16, 4};
    pinned_model_config model = {PINNED_MODEL_MLP, widths, 3, 1, NULL, PINNED_PRECISION_F32, 0};
    pinned_partition *partition = NULL;
    expect("load into a partition on CPU 4000",
           pinned_runtime_load_model(runtime, "far", &model, &partition), PINNED_BAD_PLACEMENT);
    config.name = "odd";
    config.cpus = "0";
    config.placement = "sideways";
    expect("placement 'sideways'", pinned_runtime_add_partition(runtime, &config), PINNED_BAD_PLACEMENT);
    expect("model into a partition that does not exist",
           pinned_runtime_load_model(runtime, "nowhere", &model, &partition), PINNED_INVALID_ARGUMENT);
    if (partition != NULL) { printf("FAIL partition written on failure\n"); failures++; }

    config.name = "mlp";
    config.cpus = "0";
    config.placement = NULL;
    config.slots = 2;
    expect("add partition mlp", pinned_runtime_add_partition(runtime, &config), PINNED_OK);
    expect("add partition mlp twice", pinned_runtime_add_partition(runtime, &config), PINNED_INVALID_ARGUMENT);
    pinned_model_config bad_model = {PINNED_MODEL_MLP, widths, 1, 1, NULL, PINNED_PRECISION_F32, 0};
    expect("MLP with one width", pinned_runtime_load_model(runtime, "mlp", &bad_model, &partition),
           PINNED_BAD_MODEL);
    pinned_model_config no_kind = {99, NULL, 0, 1, NULL, PINNED_PRECISION_F32, 0};
    expect("unknown model kind", pinned_runtime_load_model(runtime, "mlp", &no_kind, &partition),
           PINNED_INVALID_ARGUMENT);
    pinned_model_config missing = {PINNED_MODEL_MINILM, NULL, 0, 0, "/nonexistent/minilm", PINNED_PRECISION_F32, 0};
    expect("MiniLM from a directory that does not exist",
           pinned_runtime_load_model(runtime, "mlp", &missing, &partition), PINNED_BAD_MODEL);
    pinned_model_config no_path = {PINNED_MODEL_MINILM, NULL, 0, 0, NULL, PINNED_PRECISION_F32, 0};
    expect("MiniLM with a NULL path", pinned_runtime_load_model(runtime, "mlp", &no_path, &partition),
           PINNED_NULL_ARGUMENT);
    pinned_model_config bad_precision = {PINNED_MODEL_MINILM, NULL, 0, 0, "/x", 7, 0};
    expect("precision 7", pinned_runtime_load_model(runtime, "mlp", &bad_precision, &partition),
           PINNED_INVALID_ARGUMENT);
    expect("load mlp", pinned_runtime_load_model(runtime, "mlp", &model, &partition), PINNED_OK);

    /* Requests: handles never acquired, wrong sizes, double release. */
    float input[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    float output[4];
    expect("submit a handle never acquired", pinned_request_submit(partition, 12345, false), PINNED_WRONG_STATE);
    expect("submit handle 0", pinned_request_submit(partition, 0, false), PINNED_WRONG_STATE);
    expect("acquire", pinned_request_acquire(partition, 0, &r), PINNED_OK);
    expect("input of the wrong size", pinned_request_set_input(partition, r, input, 7), PINNED_BUFFER_TOO_SMALL);
    expect("NULL input", pinned_request_set_input(partition, r, NULL, 8), PINNED_NULL_ARGUMENT);
    expect("output before submit", pinned_request_get_output(partition, r, output, 4, NULL), PINNED_WRONG_STATE);
    expect("wait before submit", pinned_request_wait(partition, r, 1000), PINNED_WRONG_STATE);
    expect("set input", pinned_request_set_input(partition, r, input, 8), PINNED_OK);
    expect("submit", pinned_request_submit(partition, r, false), PINNED_OK);
    expect("wait", pinned_request_wait(partition, r, 5000000), PINNED_OK);
    expect("output into a short buffer", pinned_request_get_output(partition, r, output, 3, NULL),
           PINNED_BUFFER_TOO_SMALL);
    size_t written = 0;
    expect("output", pinned_request_get_output(partition, r, output, 4, &written), PINNED_OK);
    if (written != 4) { printf("FAIL written = %zu\n", written); failures++; }
    expect("release", pinned_request_release(partition, r), PINNED_OK);
    expect("double release", pinned_request_release(partition, r), PINNED_WRONG_STATE);
    float *in_place = NULL;
    size_t in_len = 0;
    expect("input buffer of a released request", pinned_request_input_buffer(partition, r, &in_place, &in_len),
           PINNED_WRONG_STATE);

    /* Zero-copy: write the input and read the output in place; the same
     * answer as the copying calls gave. */
    pinned_request z;
    expect("acquire for zero-copy", pinned_request_acquire(partition, 0, &z), PINNED_OK);
    expect("input buffer", pinned_request_input_buffer(partition, z, &in_place, &in_len), PINNED_OK);
    if (in_place == NULL || in_len != 8) { printf("FAIL input buffer %p %zu\n", (void *)in_place, in_len); failures++; }
    else memcpy(in_place, input, sizeof input);
    const float *out_place = NULL;
    size_t out_len = 0;
    expect("output buffer before submit", pinned_request_output_buffer(partition, z, &out_place, &out_len),
           PINNED_WRONG_STATE);
    expect("submit zero-copy", pinned_request_submit(partition, z, true), PINNED_OK);
    expect("NULL len", pinned_request_output_buffer(partition, z, &out_place, NULL), PINNED_NULL_ARGUMENT);
    expect("wait zero-copy", pinned_request_wait(partition, z, 5000000), PINNED_OK);
    expect("output buffer", pinned_request_output_buffer(partition, z, &out_place, &out_len), PINNED_OK);
    if (out_place == NULL || out_len != 4 || memcmp(out_place, output, sizeof output) != 0) {
        printf("FAIL zero-copy output differs from the copied one\n");
        failures++;
    }
    expect("release zero-copy", pinned_request_release(partition, z), PINNED_OK);
    expect("wait on a released request", pinned_request_wait(partition, r, 1000), PINNED_WRONG_STATE);

    /* No free slot: both held, a zero-timeout acquire says so at once. */
    pinned_request a, b, c;
    expect("acquire 1 of 2", pinned_request_acquire(partition, 0, &a), PINNED_OK);
    expect("acquire 2 of 2", pinned_request_acquire(partition, 0, &b), PINNED_OK);
    expect("acquire with no free slot", pinned_request_acquire(partition, 0, &c), PINNED_TIMEOUT);
    expect("release 1", pinned_request_release(partition, a), PINNED_OK);
    /* b stays held: pinned_runtime_free releases it. */

    char small[4];
    size_t full = 0;
    expect("info JSON into a small buffer", pinned_info_json(small, sizeof small, &full), PINNED_BUFFER_TOO_SMALL);
    char info[1 << 16];
    expect("info JSON", pinned_info_json(info, sizeof info, NULL), PINNED_OK);
    if (full == 0 || strncmp(info, "{\"pinned_version\"", 17) != 0) { printf("FAIL info JSON\n"); failures++; }

    pinned_runtime_free(runtime);
    printf(failures ? "misuse: %d FAILED\n" : "misuse: all ok\n", failures);
    return failures ? 1 : 0;
}
