/* fuzz_quantity.c - libFuzzer target: any bytes given to the quantity parser are either refused with a
 * message or parsed to a value that formats and parses back to itself. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/quantity.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    if (!s)
        return 0;
    memcpy(s, data, size);
    s[size] = '\0';
    uint64_t v = 0;
    gp_err err;
    if (gp_quantity_parse_bytes(s, "fuzz", &v, &err) == 0) {
        char buf[64];
        uint64_t back = 0;
        if (gp_quantity_parse_bytes(gp_quantity_format_bytes(v, buf, sizeof buf), NULL, &back, NULL) != 0 ||
            back != v)
            abort();
        gp_bytes_human(v, buf, sizeof buf);
    } else if (err.msg[0] == '\0') {
        abort(); /* a refusal always says why */
    }
    free(s);
    return 0;
}
