/* A C host of libpinned.a: prints the version and exercises the error
 * channel. Build (from the repository root, after `cargo build --release`):
 *
 *   cc -std=c11 -Wall -Wextra -Iinclude examples/c-host/main.c \
 *      target/release/libpinned.a -lgcc_s -lutil -lrt -lpthread -lm -ldl -lc \
 *      -o c-host
 */
#include <stdio.h>
#include <string.h>

#include "pinned.h"

int main(void) {
    printf("pinned version %s\n", pinned_version());

    char message[256];
    size_t full_len = 12345;
    pinned_status status = pinned_last_error(message, sizeof message, &full_len);
    if (status != PINNED_OK || full_len != 0 || message[0] != '\0') {
        fprintf(stderr, "expected no error yet, got status %u len %zu\n",
                (unsigned)status, full_len);
        return 1;
    }
    status = pinned_last_error(NULL, 8, NULL);
    if (status != PINNED_NULL_ARGUMENT) {
        fprintf(stderr, "a NULL buffer must be refused, got status %u\n", (unsigned)status);
        return 1;
    }
    printf("null buffer refused with status %u\n", (unsigned)status);
    printf("c-host ok\n");
    return 0;
}
