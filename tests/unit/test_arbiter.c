/* test_arbiter.c - ag_share_split, the agent's rule for sharing a GPU's compute between its slots: requests
 * are kept, unused requests are lent, spare capacity follows demand by QoS weight up to each limit. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "agent/internal.h"

#define NEAR(x, y) assert_true((x) > (y)-1e-6 && (x) < (y) + 1e-6)

static ag_claim claim(double req, double lim, double demand, uint32_t qos)
{
    return (ag_claim){.request = req, .limit = lim, .demand = demand, .weight = ag_qos_weight(qos)};
}

static void equal_qos_splits_the_spare_evenly(void **state)
{
    (void)state;
    ag_claim c[] = {claim(0.3, 0.6, 0.6, GP_QOS_MEDIUM), claim(0.5, 1.0, 1.0, GP_QOS_MEDIUM)};
    ag_share_split(c, 2, 1.0);
    NEAR(c[0].eff, 0.4);
    NEAR(c[1].eff, 0.6);
}

static void an_idle_slot_lends_its_request_but_keeps_it(void **state)
{
    (void)state;
    ag_claim c[] = {claim(0.3, 0.6, 0.0, GP_QOS_MEDIUM), claim(0.5, 1.0, 1.0, GP_QOS_MEDIUM)};
    ag_share_split(c, 2, 1.0);
    NEAR(c[0].eff, 0.3); /* it may start at its request at once */
    NEAR(c[1].eff, 1.0); /* the other bursts to its limit */
}

static void higher_qos_gets_more_of_the_spare(void **state)
{
    (void)state;
    ag_claim c[] = {claim(0.4, 0.8, 0.8, GP_QOS_HIGH), claim(0.2, 1.0, 1.0, GP_QOS_LOW)};
    ag_share_split(c, 2, 1.0);
    NEAR(c[0].eff, 0.4 + 0.4 * 4 / 5);
    NEAR(c[1].eff, 0.2 + 0.4 * 1 / 5);
    assert_true(ag_qos_weight(GP_QOS_CRITICAL) > ag_qos_weight(GP_QOS_HIGH));
    assert_true(ag_qos_weight(GP_QOS_HIGH) > ag_qos_weight(GP_QOS_MEDIUM));
    assert_true(ag_qos_weight(GP_QOS_MEDIUM) > ag_qos_weight(GP_QOS_LOW));
}

static void what_a_limit_stops_goes_to_the_others(void **state)
{
    (void)state;
    ag_claim c[] = {claim(0.1, 0.2, 0.2, GP_QOS_CRITICAL), claim(0.1, 1.0, 1.0, GP_QOS_LOW)};
    ag_share_split(c, 2, 1.0);
    NEAR(c[0].eff, 0.2);
    NEAR(c[1].eff, 0.8);
}

static void a_light_user_is_not_given_what_it_does_not_use(void **state)
{
    (void)state;
    /* a uses 10% of its 50% request (demand 0.125 with headroom): the rest of its request is lent */
    ag_claim c[] = {claim(0.5, 1.0, 0.125, GP_QOS_MEDIUM), claim(0.2, 1.0, 1.0, GP_QOS_MEDIUM)};
    ag_share_split(c, 2, 1.0);
    NEAR(c[0].eff, 0.5);
    NEAR(c[1].eff, 0.875);
}

static void unmanaged_use_shrinks_the_capacity(void **state)
{
    (void)state;
    ag_claim c[] = {claim(0.2, 1.0, 1.0, GP_QOS_MEDIUM), claim(0.2, 1.0, 1.0, GP_QOS_MEDIUM)};
    ag_share_split(c, 2, 0.5);
    NEAR(c[0].eff, 0.25);
    NEAR(c[1].eff, 0.25);
}

static void requests_hold_even_when_oversubscribed(void **state)
{
    (void)state;
    ag_claim c[] = {claim(0.6, 1.0, 1.0, GP_QOS_MEDIUM), claim(0.6, 1.0, 1.0, GP_QOS_LOW)};
    ag_share_split(c, 2, 1.0);
    NEAR(c[0].eff, 0.6);
    NEAR(c[1].eff, 0.6);
}

static void an_idle_slot_without_request_keeps_a_foothold(void **state)
{
    (void)state;
    ag_claim c[] = {claim(0, 1.0, 0, GP_QOS_MEDIUM), claim(0, 0.005, 0, GP_QOS_MEDIUM)};
    ag_share_split(c, 2, 1.0);
    NEAR(c[0].eff, 0.01);
    NEAR(c[1].eff, 0.005); /* never above the limit */
}

static void nothing_to_share_is_fine(void **state)
{
    (void)state;
    ag_share_split(NULL, 0, 1.0);
    ag_claim c[] = {claim(0.3, 0.9, 0.9, GP_QOS_HIGH)};
    ag_share_split(c, 1, 0.0);
    NEAR(c[0].eff, 0.3);
}

static void capacity_no_one_wants_goes_to_the_busy_up_to_their_limits(void **state)
{
    (void)state;
    /* a busy slot whose own host side holds it at 70% (it uses what it has, but shows no wait for more) and
     * an idle one: the spare nobody demands still goes to the busy one, up to its limit */
    ag_claim c[] = {claim(0.5, 1.0, 0.7, GP_QOS_MEDIUM), claim(0.3, 0.6, 0.0, GP_QOS_MEDIUM)};
    c[0].active = true;
    ag_share_split(c, 2, 1.0);
    NEAR(c[0].eff, 1.0);
    NEAR(c[1].eff, 0.3); /* the idle one keeps its request */
    /* two busy ones: demands first, then the rest by weight, none past its limit */
    ag_claim d[] = {claim(0.2, 0.5, 0.3, GP_QOS_MEDIUM), claim(0.2, 1.0, 0.3, GP_QOS_MEDIUM)};
    d[0].active = d[1].active = true;
    ag_share_split(d, 2, 1.0);
    NEAR(d[0].eff, 0.5);
    NEAR(d[1].eff, 0.5);
    /* an inactive slot gets no more than it demands */
    ag_claim e[] = {claim(0.2, 1.0, 0.3, GP_QOS_MEDIUM)};
    ag_share_split(e, 1, 1.0);
    NEAR(e[0].eff, 0.3);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(equal_qos_splits_the_spare_evenly),
        cmocka_unit_test(an_idle_slot_lends_its_request_but_keeps_it),
        cmocka_unit_test(higher_qos_gets_more_of_the_spare),
        cmocka_unit_test(what_a_limit_stops_goes_to_the_others),
        cmocka_unit_test(a_light_user_is_not_given_what_it_does_not_use),
        cmocka_unit_test(unmanaged_use_shrinks_the_capacity),
        cmocka_unit_test(requests_hold_even_when_oversubscribed),
        cmocka_unit_test(an_idle_slot_without_request_keeps_a_foothold),
        cmocka_unit_test(nothing_to_share_is_fine),
        cmocka_unit_test(capacity_no_one_wants_goes_to_the_busy_up_to_their_limits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
