/* fuzz_slot.c - libFuzzer target: a slot file's contents, whatever they are, are either refused by
 * gp_slot_validate with a message or accepted with every invariant the vGPU library relies on holding.
 *
 * The input is laid over a zeroed slot. Unless the first byte says otherwise, the header is made plausible
 * (magic, version, size) and the identity checksum recomputed, so that the fuzzer gets past them and into
 * the fields behind them; the rest of the time the input is taken as it is. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/slot.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    bool raw = data[0] & 1;
    data++;
    size--;
    gp_slot *s = calloc(1, sizeof *s);
    memcpy(s, data, size < sizeof *s ? size : sizeof *s);
    size_t file_size = raw ? size : sizeof *s;
    if (!raw) {
        s->magic = GP_SLOT_MAGIC;
        s->version = GP_SLOT_VERSION;
        s->size = sizeof *s;
        s->ident_crc = gp_crc32(s, offsetof(gp_slot, ident_crc));
    }
    gp_err err = {0};
    if (gp_slot_validate(s, file_size, &err) == 0) {
        /* what the library then assumes */
        if (s->count == 0 || s->count > GP_SLOT_MAX_GPUS || s->index >= s->count)
            abort();
        if (memchr(s->gpu_uuid, '\0', sizeof s->gpu_uuid) == NULL || strncmp(s->gpu_uuid, "GPU-", 4) != 0)
            abort();
        uint32_t share = gp_slot_share_ppm(s);
        if (share == 0 || share > GP_SLOT_FULL_PPM)
            abort();
        if (atomic_load(&s->vram_limit) == 0 || atomic_load(&s->proc_hw) > GP_SLOT_MAX_PROCS)
            abort();
        (void)gp_slot_vram_used(s); /* reads only the entries it may */
        (void)gp_qos_name(atomic_load(&s->qos));
    } else if (err.msg[0] == '\0') {
        abort(); /* a refusal always says why */
    }
    free(s);
    return 0;
}
