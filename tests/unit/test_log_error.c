/* test_log_error.c - log records are one line each with level, component and pid; the threshold filters;
 * gp_err carries a code and a message, and wrapping adds context in front. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/error.h"
#include "common/log.h"

/* Runs fn with stderr redirected to a pipe and returns what it wrote. */
static const char *capture(void (*fn)(void))
{
    static char buf[4096];
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    int saved = dup(STDERR_FILENO);
    dup2(fds[1], STDERR_FILENO);
    close(fds[1]);
    fn();
    dup2(saved, STDERR_FILENO);
    close(saved);
    ssize_t n = read(fds[0], buf, sizeof buf - 1);
    close(fds[0]);
    buf[n > 0 ? n : 0] = '\0';
    return buf;
}

static void log_warn_and_debug(void)
{
    gp_log(GP_LOG_WARN, "unit", "disk %s is %d%% full", "/var", 91);
    gp_log(GP_LOG_DEBUG, "unit", "not shown at the warn threshold");
}

static void one_line_per_record_with_level_component_and_pid(void **state)
{
    (void)state;
    gp_log_set_level(GP_LOG_WARN);
    const char *out = capture(log_warn_and_debug);
    char expect[64];
    snprintf(expect, sizeof expect, "warn unit[%d]: disk /var is 91%% full\n", (int)getpid());
    assert_non_null(strstr(out, expect));
    assert_null(strstr(out, "not shown"));
    assert_int_equal(strchr(out, '\n') - out + 1, (long)strlen(out)); /* exactly one line */
}

static void log_once(void)
{
    for (int i = 0; i < 3; i++)
        gp_log_once(GP_LOG_ERROR, "unit", "said once");
}

static void log_once_says_it_once(void **state)
{
    (void)state;
    const char *out = capture(log_once);
    assert_non_null(strstr(out, "said once"));
    assert_null(strstr(strstr(out, "said once") + 1, "said once"));
}

static void levels_parse(void **state)
{
    (void)state;
    assert_int_equal(gp_log_level_parse("debug"), GP_LOG_DEBUG);
    assert_int_equal(gp_log_level_parse("WARN"), GP_LOG_WARN);
    assert_int_equal(gp_log_level_parse("warning"), GP_LOG_WARN);
    assert_int_equal(gp_log_level_parse("loud"), -1);
    assert_int_equal(gp_log_level_parse(NULL), -1);
}

static void errors_carry_code_and_message_and_wrap(void **state)
{
    (void)state;
    gp_err err;
    gp_err_clear(&err);
    assert_int_equal(err.code, GP_OK);
    assert_int_equal(gp_err_set(&err, GP_ERR_NOT_FOUND, "pool %s does not exist", "a"), -1);
    assert_int_equal(err.code, GP_ERR_NOT_FOUND);
    assert_string_equal(err.msg, "pool a does not exist");
    gp_err_wrap(&err, "creating workload %d", 7);
    assert_string_equal(err.msg, "creating workload 7: pool a does not exist");
    assert_int_equal(err.code, GP_ERR_NOT_FOUND);
    assert_string_equal(gp_code_name(GP_ERR_NOT_FOUND), "not-found");
    assert_int_equal(gp_err_set(NULL, GP_ERR_INVALID, "ignored"), -1);
    char big[1000];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    gp_err_set(&err, GP_ERR_INVALID, "%s", big);
    assert_int_equal(strlen(err.msg), GP_ERR_MSG_MAX - 1); /* truncated, terminated */
    gp_err_wrap(&err, "ctx");
    assert_int_equal(strlen(err.msg), GP_ERR_MSG_MAX - 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(one_line_per_record_with_level_component_and_pid),
        cmocka_unit_test(log_once_says_it_once),
        cmocka_unit_test(levels_parse),
        cmocka_unit_test(errors_carry_code_and_message_and_wrap),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
