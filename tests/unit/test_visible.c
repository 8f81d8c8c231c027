/* test_visible.c - CUDA_VISIBLE_DEVICES: ordinals, UUID prefixes, and where a list stops. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "common/visible.h"

#define NDEV 4

/* Devices 0 and 1 share the prefix "GPU-ab"; device 2's UUID is compared without regard to case. */
static const char *const g_uuid[NDEV] = {
    "GPU-ab120000-1111-4111-8111-111111111111",
    "GPU-ab340000-2222-4222-8222-222222222222",
    "GPU-cd560000-3333-4333-8333-333333333333",
    "GPU-ef780000-4444-4444-8444-444444444444",
};

/* Writes into out, as the remote client does with the worker's binary UUIDs. */
static const char *uuid_of(const void *arg, int i, char out[GP_VISIBLE_UUID_LEN])
{
    const char *const *u = arg;
    snprintf(out, GP_VISIBLE_UUID_LEN, "%s", u[i]);
    return out;
}

/* Parses spec over the four devices; order[] is filled with -7 first so that unwritten entries show. */
static int visible(const char *spec, int order[NDEV])
{
    for (int i = 0; i < NDEV; i++)
        order[i] = -7;
    return gp_visible_devices(spec, NDEV, uuid_of, g_uuid, order);
}

static void unset_shows_every_device_in_order(void **state)
{
    (void)state;
    int order[NDEV];
    assert_int_equal(visible(NULL, order), NDEV);
    for (int i = 0; i < NDEV; i++)
        assert_int_equal(order[i], i);
}

static void empty_shows_no_device(void **state)
{
    (void)state;
    int order[NDEV];
    assert_int_equal(visible("", order), 0);
    assert_int_equal(visible("  ", order), 0);
    assert_int_equal(order[0], -7);
}

static void ordinals_keep_the_order_given(void **state)
{
    (void)state;
    int order[NDEV];
    assert_int_equal(visible("2,0", order), 2);
    assert_int_equal(order[0], 2);
    assert_int_equal(order[1], 0);
    assert_int_equal(visible(" 3 ,\t1 ", order), 2); /* blanks around an entry do not count */
    assert_int_equal(order[0], 3);
    assert_int_equal(order[1], 1);
    assert_int_equal(visible("3,2,1,0", order), 4);
    assert_int_equal(order[3], 0);
}

static void uuid_prefixes_name_devices(void **state)
{
    (void)state;
    int order[NDEV];
    assert_int_equal(visible("GPU-cd,GPU-AB34,1", order), 2); /* device 1 twice: the list stops */
    assert_int_equal(order[0], 2);
    assert_int_equal(order[1], 1);
    assert_int_equal(visible(g_uuid[3], order), 1); /* a whole UUID */
    assert_int_equal(order[0], 3);
    assert_int_equal(visible("0,GPU-ef780000-4444-4444-8444-4444444444440", order),
                     1); /* one digit too many */
    assert_int_equal(order[0], 0);
}

static void ambiguous_prefix_ends_the_list(void **state)
{
    (void)state;
    int order[NDEV];
    assert_int_equal(visible("3,GPU-ab,2", order), 1);
    assert_int_equal(order[0], 3);
    assert_int_equal(order[1], -7);
    assert_int_equal(visible("GPU-", order), 0); /* names them all */
    assert_int_equal(visible("GPU-ab1", order), 1);
    assert_int_equal(order[0], 0);
}

static void repeated_device_ends_the_list(void **state)
{
    (void)state;
    int order[NDEV];
    assert_int_equal(visible("1,GPU-ab34,2", order), 1);
    assert_int_equal(order[0], 1);
    assert_int_equal(visible("0,1,0,2", order), 2);
    assert_int_equal(order[2], -7);
}

static void bad_entry_ends_the_list(void **state)
{
    (void)state;
    int order[NDEV];
    assert_int_equal(visible("1,x,2", order), 1);
    assert_int_equal(order[0], 1);
    assert_int_equal(order[1], -7);
    assert_int_equal(visible("2,4", order), 1); /* past the last device */
    assert_int_equal(visible("-1", order), 0);
    assert_int_equal(visible("1a", order), 0);
    assert_int_equal(visible("gpu-ab12", order), 0); /* "GPU-" itself is case-sensitive */
    assert_int_equal(visible("GPU-99", order), 0);   /* a prefix of no device */
}

static void no_devices_shows_none(void **state)
{
    (void)state;
    int order[1] = {-7};
    assert_int_equal(gp_visible_devices("0", 0, uuid_of, g_uuid, order), 0);
    assert_int_equal(gp_visible_devices(NULL, 0, uuid_of, g_uuid, order), 0);
    assert_int_equal(order[0], -7);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(unset_shows_every_device_in_order), cmocka_unit_test(empty_shows_no_device),
        cmocka_unit_test(ordinals_keep_the_order_given),     cmocka_unit_test(uuid_prefixes_name_devices),
        cmocka_unit_test(ambiguous_prefix_ends_the_list),    cmocka_unit_test(repeated_device_ends_the_list),
        cmocka_unit_test(bad_entry_ends_the_list),           cmocka_unit_test(no_devices_shows_none),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
