/* discovery.c - the host's GPUs as NVML shows them: identity, model and TFLOPS, memory, utilization,
 * temperature, power, health (XID events and ECC counters) and processes, refreshed by the agent's loop.
 *
 * A GPU is identified by its UUID everywhere else in the agent (NVML indices can change across reboots).
 * Health: a GPU turns unhealthy on an XID that means the GPU or its memory can no longer be trusted, or on
 * uncorrectable (double-bit) ECC errors; the reason is kept for the API and metrics. Facts NVML does not give
 * (NOT_SUPPORTED) stay zero; nothing here fails because a sensor is missing.
 */
#include "agent/internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* XIDs after which NVIDIA's guidance is to drain the GPU: uncorrectable ECC (48, 94, 95), row-remapping
 * failure (63, 64), fallen off the bus (79), NVLink (74), GSP errors (119, 120), and the "reset required"
 * family (92 high single-bit ECC rate). Others are counted but leave the GPU healthy. */
static bool xid_fatal(unsigned xid)
{
    static const unsigned fatal[] = {48, 63, 64, 74, 79, 92, 94, 95, 119, 120};
    for (size_t i = 0; i < sizeof fatal / sizeof fatal[0]; i++)
        if (fatal[i] == xid)
            return true;
    return false;
}

static void set_unhealthy(ag_gpu *g, const char *why)
{
    if (g->healthy)
        gp_log(GP_LOG_ERROR, AG_LOG, "GPU %d (%s) is unhealthy: %s", g->index, g->uuid, why);
    g->healthy = false;
    snprintf(g->health, sizeof g->health, "%s", why);
}

int ag_discover(gp_agent *a, gp_err *err)
{
    gp_nvml *n = &a->nvml;
    unsigned count = 0;
    nvmlReturn_t r = n->DeviceGetCount(&count);
    if (r != NVML_SUCCESS)
        return gp_err_set(err, GP_ERR_IO, "NVML cannot count the GPUs: %s", n->ErrorString(r));
    if (count > AG_MAX_GPUS) {
        gp_log(GP_LOG_WARN, AG_LOG, "%u GPUs; managing the first %d", count, AG_MAX_GPUS);
        count = AG_MAX_GPUS;
    }
    if (n->EventSetCreate && n->EventSetCreate(&a->events) != NVML_SUCCESS)
        a->events = NULL;
    a->ngpus = 0;
    for (unsigned i = 0; i < count; i++) {
        ag_gpu *g = &a->gpus[a->ngpus];
        memset(g, 0, sizeof *g);
        g->index = (int)i;
        if ((r = n->DeviceGetHandleByIndex(i, &g->h)) != NVML_SUCCESS) {
            gp_log(GP_LOG_ERROR, AG_LOG, "GPU %u: NVML gives no handle (%s); skipping it", i,
                   n->ErrorString(r));
            continue;
        }
        n->DeviceGetUUID(g->h, g->uuid, sizeof g->uuid);
        n->DeviceGetName(g->h, g->name, sizeof g->name);
        nvmlPciInfo_t pci;
        if (n->DeviceGetPciInfo(g->h, &pci) == NVML_SUCCESS)
            snprintf(g->bus_id, sizeof g->bus_id, "%s", pci.busId);
        g->model = gp_model_find(g->name);
        g->tflops = g->model ? g->model->fp16_tflops : 0;
        if (!g->model)
            gp_log(
                GP_LOG_WARN, AG_LOG,
                "GPU %u \"%s\" is not in the model table (data/gpu-models.csv): its TFLOPS are unknown, so "
                "workloads on it must ask for compute in percent",
                i, g->name);
        g->healthy = true;
        if (a->events && n->DeviceRegisterEvents) {
            unsigned long long supported = 0;
            if (n->DeviceGetSupportedEventTypes &&
                n->DeviceGetSupportedEventTypes(g->h, &supported) == NVML_SUCCESS &&
                (supported & nvmlEventTypeXidCriticalError))
                n->DeviceRegisterEvents(g->h, nvmlEventTypeXidCriticalError, a->events);
        }
        g->window_start_ns = 0;
        a->ngpus++;
    }
    ag_refresh(a);
    return 0;
}

static void drain_events(gp_agent *a)
{
    if (!a->events || !a->nvml.EventSetWait)
        return;
    for (int k = 0; k < 64; k++) {
        nvmlEventData_t ev;
        if (a->nvml.EventSetWait(a->events, &ev, 0) != NVML_SUCCESS)
            return;
        for (int i = 0; i < a->ngpus; i++) {
            ag_gpu *g = &a->gpus[i];
            if (g->h != ev.device || !(ev.eventType & nvmlEventTypeXidCriticalError))
                continue;
            g->xid_count++;
            g->last_xid = (unsigned)ev.eventData;
            gp_log(GP_LOG_WARN, AG_LOG, "GPU %d (%s): XID %u", g->index, g->uuid, g->last_xid);
            if (xid_fatal(g->last_xid)) {
                char why[64];
                snprintf(why, sizeof why, "XID %u", g->last_xid);
                set_unhealthy(g, why);
            }
        }
    }
}

void ag_refresh(gp_agent *a)
{
    gp_nvml *n = &a->nvml;
    drain_events(a);
    for (int i = 0; i < a->ngpus; i++) {
        ag_gpu *g = &a->gpus[i];
        nvmlMemory_t m;
        if (n->DeviceGetMemoryInfo(g->h, &m) == NVML_SUCCESS) {
            g->mem_total = m.total;
            g->mem_used = m.used;
        }
        nvmlUtilization_t u;
        if (n->DeviceGetUtilizationRates(g->h, &u) == NVML_SUCCESS) {
            g->util_gpu = u.gpu;
            g->util_mem = u.memory;
        }
        unsigned t = 0;
        if (n->DeviceGetTemperature &&
            n->DeviceGetTemperature(g->h, NVML_TEMPERATURE_GPU, &t) == NVML_SUCCESS)
            g->temp_c = t;
        unsigned mw = 0;
        if (n->DeviceGetPowerUsage && n->DeviceGetPowerUsage(g->h, &mw) == NVML_SUCCESS)
            g->power_w = mw / 1000.0;
        nvmlEnableState_t cur, pend;
        if (n->DeviceGetEccMode && n->DeviceGetEccMode(g->h, &cur, &pend) == NVML_SUCCESS &&
            cur == NVML_FEATURE_ENABLED && n->DeviceGetTotalEccErrors) {
            unsigned long long c = 0;
            if (n->DeviceGetTotalEccErrors(g->h, NVML_MEMORY_ERROR_TYPE_CORRECTED, NVML_VOLATILE_ECC, &c) ==
                NVML_SUCCESS)
                g->ecc_sbe = c;
            if (n->DeviceGetTotalEccErrors(g->h, NVML_MEMORY_ERROR_TYPE_UNCORRECTED, NVML_VOLATILE_ECC, &c) ==
                NVML_SUCCESS) {
                g->ecc_dbe = c;
                if (c > 0)
                    set_unhealthy(g, "uncorrectable ECC errors");
            }
        }
        unsigned np = 0;
        if (n->DeviceGetComputeRunningProcesses(g->h, &np, NULL) == NVML_ERROR_INSUFFICIENT_SIZE || np == 0)
            g->nprocs = np;
    }
    a->last_discovery_ns = gp_now_ns();
}

int ag_gpu_find(const gp_agent *a, const char *s)
{
    if (s == NULL || *s == '\0')
        return -1;
    char *end;
    long idx = strtol(s, &end, 10);
    if (*end == '\0' && end != s) {
        for (int i = 0; i < a->ngpus; i++)
            if (a->gpus[i].index == idx)
                return i;
        return -1;
    }
    for (int i = 0; i < a->ngpus; i++)
        if (strcmp(a->gpus[i].uuid, s) == 0)
            return i;
    return -1;
}

void ag_discovery_close(gp_agent *a)
{
    if (a->events && a->nvml.EventSetFree)
        a->nvml.EventSetFree(a->events);
    a->events = NULL;
    for (int i = 0; i < a->ngpus; i++)
        gp_u64map_free(&a->gpus[i].seen);
}
