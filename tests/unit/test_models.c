/* test_models.c - the GPU model table: the built-in rows the issue requires, lookups, and a parser that
 * refuses a malformed table with a message naming the line. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/models.h"

static void builtin_table_has_the_required_models(void **state)
{
    (void)state;
    const char *keys[] = {"T4",   "A10",           "A100-40GB",      "A100-80GB", "L4",
                          "L40S", "H100-SXM-80GB", "H100-PCIE-80GB", "H200",      "RTX-4090"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        const gp_model *m = gp_model_find(keys[i]);
        if (m == NULL)
            fail_msg("model %s missing", keys[i]);
        assert_true(m->vram_bytes > (1ull << 30));
        assert_true(m->fp16_tflops > 10);
        assert_true(m->sms > 0);
        assert_true(m->mem_bw_gbs > 100);
        assert_true(m->cc_major >= 7);
    }
}

static void h100_row_has_its_published_figures(void **state)
{
    (void)state;
    const gp_model *m = gp_model_find("H100-SXM-80GB");
    assert_non_null(m);
    assert_string_equal(m->nvml_name, "NVIDIA H100 80GB HBM3");
    assert_int_equal(m->vram_bytes, 81559ull << 20);
    assert_true(m->fp16_tflops == 989);
    assert_int_equal(m->sms, 132);
    assert_int_equal(m->cc_major, 9);
    assert_int_equal(m->cc_minor, 0);
    assert_int_equal(m->pci_id, 0x2330);
    assert_true(m->mig);
}

static void lookup_by_nvml_name_and_case_insensitive(void **state)
{
    (void)state;
    assert_ptr_equal(gp_model_find("NVIDIA A100-SXM4-40GB"), gp_model_find("A100-40GB"));
    assert_ptr_equal(gp_model_find("h200"), gp_model_find("H200"));
    assert_null(gp_model_find("H300"));
    assert_null(gp_model_find(NULL));
    char keys[512];
    assert_non_null(strstr(gp_models_keys(keys, sizeof keys), "H100-SXM-80GB"));
}

static const char *HEADER =
    "key,nvml_name,vram_mib,fp16_tflops,sms,cc,mem_bw_gbs,link_gbs,pcie_gen,pcie_width,"
    "bus_bits,l2_mib,sm_mhz,mem_mhz,power_w,idle_w,mig,ecc,ctx_mib,arch,brand,pci_id\n";
static const char *ROW =
    "X1,Test GPU,1024,10,4,8.0,100,10,4,16,128,2,1000,1000,100,10,0,1,64,ampere,nvidia,1234\n";

static const char *parse_fails(const char *text)
{
    static gp_err err;
    gp_model *m = NULL;
    size_t n = 0;
    assert_int_equal(gp_models_parse(text, strlen(text), &m, &n, &err), -1);
    assert_null(m);
    return err.msg;
}

static void parser_reads_comments_header_and_rows(void **state)
{
    (void)state;
    char text[1024];
    snprintf(text, sizeof text, "# a comment\n\n%s%s", HEADER, ROW);
    gp_model *m = NULL;
    size_t n = 0;
    gp_err err;
    assert_int_equal(gp_models_parse(text, strlen(text), &m, &n, &err), 0);
    assert_int_equal(n, 1);
    assert_string_equal(m[0].key, "X1");
    assert_int_equal(m[0].vram_bytes, 1ull << 30);
    assert_int_equal(m[0].ctx_bytes, 64ull << 20);
    assert_int_equal(m[0].pci_id, 0x1234);
    free(m);
}

static void parser_refuses_malformed_tables(void **state)
{
    (void)state;
    char text[1024];
    assert_non_null(strstr(parse_fails("# only comments\n"), "no rows"));
    assert_non_null(strstr(parse_fails("key,name\n"), "columns"));
    snprintf(text, sizeof text, "%s%s%s", HEADER, ROW, ROW);
    assert_non_null(strstr(parse_fails(text), "appears twice"));
    snprintf(text, sizeof text, "%sX2,Bad,lots,10,4,8.0,100,10,4,16,128,2,1000,1000,100,10,0,1,64,a,b,1\n",
             HEADER);
    assert_non_null(strstr(parse_fails(text), "vram_mib"));
    snprintf(text, sizeof text, "%sX2,Bad,1024,10,4,eight,100,10,4,16,128,2,1000,1000,100,10,0,1,64,a,b,1\n",
             HEADER);
    assert_non_null(strstr(parse_fails(text), "cc"));
    snprintf(text, sizeof text, "%sX2,Bad,1024,10,4,8.0,100,10,4,16,128,2,1000,1000,100,10,0,1,64,a,b,zz\n",
             HEADER);
    assert_non_null(strstr(parse_fails(text), "pci_id"));
    snprintf(text, sizeof text, "%s",
             "kee,nvml_name,vram_mib,fp16_tflops,sms,cc,mem_bw_gbs,link_gbs,pcie_gen,"
             "pcie_width,bus_bits,l2_mib,sm_mhz,mem_mhz,power_w,idle_w,mig,ecc,ctx_mib,"
             "arch,brand,pci_id\n");
    assert_non_null(strstr(parse_fails(text), "header"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(builtin_table_has_the_required_models),
        cmocka_unit_test(h100_row_has_its_published_figures),
        cmocka_unit_test(lookup_by_nvml_name_and_case_insensitive),
        cmocka_unit_test(parser_reads_comments_header_and_rows),
        cmocka_unit_test(parser_refuses_malformed_tables),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
