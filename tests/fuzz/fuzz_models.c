/* fuzz_models.c - libFuzzer target: the GPU model table parser accepts or refuses any text without
 * crashing, and every accepted row is sane. */
#include <stdint.h>
#include <stdlib.h>

#include "common/models.h"

/* The built-in table is not under test here. */
const char gp_models_csv[] = "";
const size_t gp_models_csv_len = 0;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    gp_model *m = NULL;
    size_t n = 0;
    gp_err err;
    if (gp_models_parse((const char *)data, size, &m, &n, &err) == 0) {
        for (size_t i = 0; i < n; i++)
            if (m[i].key[0] == '\0' || m[i].vram_bytes == 0 || m[i].sms <= 0 || m[i].pci_id == 0)
                abort();
        free(m);
    } else if (m != NULL || err.msg[0] == '\0') {
        abort();
    }
    return 0;
}
