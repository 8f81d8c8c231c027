/* models.h - the GPU model table (data/gpu-models.csv, embedded at build time).
 *
 * The simulated GPU builds its devices from these rows and the allocator converts TFLOPS into a share of a
 * GPU with fp16_tflops (ARCHITECTURE.md, Units). Lookups accept the short key ("H100-SXM-80GB") or the NVML
 * name ("NVIDIA H100 80GB HBM3"), case-insensitively. The table is parsed once, is read-only afterwards and
 * lives for the whole process; pointers returned here are never freed.
 */
#ifndef GP_COMMON_MODELS_H
#define GP_COMMON_MODELS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"

typedef struct gp_model {
    char key[32];
    char nvml_name[96];
    uint64_t vram_bytes;
    double fp16_tflops;
    int sms;
    int cc_major, cc_minor;
    double mem_bw_gbs;
    double link_gbs;
    int pcie_gen, pcie_width;
    int bus_bits;
    uint64_t l2_bytes;
    int sm_mhz, mem_mhz;
    int power_w, idle_w;
    bool mig;
    bool ecc;
    uint64_t ctx_bytes;
    char arch[16];
    char brand[16];
    unsigned pci_id; /* PCI device id; the vendor id is 0x10DE */
} gp_model;

/* Parses CSV text in the format of data/gpu-models.csv ('#' comments, a header line, one row per model).
 * On success *out is a malloc'ed array the caller frees. */
int gp_models_parse(const char *text, size_t len, gp_model **out, size_t *count, gp_err *err);

/* The built-in table. Never fails after a successful build (the build checks the file parses). */
size_t gp_models_count(void);
const gp_model *gp_model_at(size_t i);

/* Finds a model by key or NVML name; NULL if unknown. */
const gp_model *gp_model_find(const char *key_or_name);

/* Writes "T4, A10, ..." (the known keys) into buf, for error messages. Returns buf. */
char *gp_models_keys(char *buf, size_t len);

#endif
