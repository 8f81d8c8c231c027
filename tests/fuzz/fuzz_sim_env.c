/* fuzz_sim_env.c - libFuzzer target for what the simulated GPU reads from its environment: the device spec
 * (GPUPOOL_SIM_GPUS) and CUDA_VISIBLE_DEVICES. The first byte picks the parser. Visible devices must be
 * distinct, in range, and never more than there are. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sim/shared.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static gp_shm *fake_host(void)
{
    static gp_shm *shm;
    if (shm == NULL) {
        shm = calloc(1, sizeof *shm);
        shm->ndev = 4;
        const char *uuids[] = {
            "GPU-3f6c3ee0-a638-41ab-93c3-6e9a61a1850c", "GPU-78abab60-f77d-466f-b858-40fe91a2b521",
            "GPU-78abcdef-0000-4000-8000-000000000000", "GPU-00000000-1111-4222-8333-444444444444"};
        for (int i = 0; i < 4; i++)
            strcpy(shm->dev[i].uuid, uuids[i]);
    }
    return shm;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    char *s = malloc(size);
    memcpy(s, data + 1, size - 1);
    s[size - 1] = '\0';
    if (data[0] & 1) {
        gp_sim_spec spec;
        gp_err err;
        if (gp_sim_spec_parse(s, &spec, &err) == 0) {
            if (spec.ndev < 0 || spec.ndev > GP_SIM_MAX_DEVICES)
                abort();
            for (int i = 0; i < spec.ndev; i++)
                if (spec.model[i] == NULL)
                    abort();
        }
    } else {
        int phys[GP_SIM_MAX_DEVICES];
        gp_shm *shm = fake_host();
        int n = gp_sim_visible_devices(s, shm, phys);
        if (n < 0 || n > (int)shm->ndev)
            abort();
        for (int i = 0; i < n; i++) {
            if (phys[i] < 0 || phys[i] >= (int)shm->ndev)
                abort();
            for (int j = 0; j < i; j++)
                if (phys[i] == phys[j])
                    abort();
        }
    }
    free(s);
    return 0;
}
