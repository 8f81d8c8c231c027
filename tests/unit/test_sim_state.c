/* test_sim_state.c - the simulated GPU's host-wide state (src/sim/shared.c): device specs, process entries
 * owned through kernel-held locks, memory charged across processes, and reclaim when an owner dies by
 * SIGKILL or execs, with no lock left held by the dead. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "sim/shared.h"

static char g_path[256];

static int setup(void **state)
{
    (void)state;
    snprintf(g_path, sizeof g_path, "/dev/shm/gpupool-unit-state-%d", (int)getpid());
    setenv("GPUPOOL_SIM_STATE", g_path, 1);
    unlink(g_path);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    unlink(g_path);
    return 0;
}

static void spec_counts_models_and_normalises(void **state)
{
    (void)state;
    gp_sim_spec s;
    gp_err err;
    assert_int_equal(gp_sim_spec_parse("2xH100-SXM-80GB, a100-40gb", &s, &err), 0);
    assert_int_equal(s.ndev, 3);
    assert_string_equal(s.text, "H100-SXM-80GB,H100-SXM-80GB,A100-40GB");
    assert_int_equal(gp_sim_spec_parse(NULL, &s, &err), 0);
    assert_int_equal(s.ndev, 1); /* default: one H100 */
    assert_int_equal(gp_sim_spec_parse("0", &s, &err), 0);
    assert_int_equal(s.ndev, 0);
}

static void spec_errors_say_what_is_known(void **state)
{
    (void)state;
    gp_sim_spec s;
    gp_err err;
    assert_int_equal(gp_sim_spec_parse("2xH300", &s, &err), -1);
    assert_non_null(strstr(err.msg, "unknown GPU model \"H300\""));
    assert_non_null(strstr(err.msg, "H100-SXM-80GB"));
    assert_int_equal(gp_sim_spec_parse("17xT4", &s, &err), -1);
    assert_non_null(strstr(err.msg, "more than 16"));
    assert_int_equal(gp_sim_spec_parse("0xT4", &s, &err), -1);
    assert_int_equal(gp_sim_spec_parse("5xT4,99999999999999999999xT4", &s, &err),
                     -1); /* found by fuzz_sim_env */
    assert_non_null(strstr(err.msg, "more than 16"));
}

static void spec_file_is_read_with_comments(void **state)
{
    (void)state;
    char file[256];
    snprintf(file, sizeof file, "/tmp/gpupool-unit-spec-%d", (int)getpid());
    FILE *f = fopen(file, "w");
    fprintf(f, "# two kinds\n2xL4\nT4\n");
    fclose(f);
    char env[300];
    snprintf(env, sizeof env, "@%s", file);
    setenv("GPUPOOL_SIM_GPUS", env, 1);
    gp_sim_spec s;
    gp_err err;
    assert_int_equal(gp_sim_spec_from_env(&s, &err), 0);
    assert_int_equal(s.ndev, 3);
    unlink(file);
    assert_int_equal(gp_sim_spec_from_env(&s, &err), -1);
    assert_non_null(strstr(err.msg, "cannot open"));
    unsetenv("GPUPOOL_SIM_GPUS");
}

static void devices_get_stable_identities(void **state)
{
    (void)state;
    gp_sim_spec s;
    gp_err err;
    gp_sim_spec_parse("2xH100-SXM-80GB", &s, &err);
    gp_shm_handle a, b;
    assert_int_equal(gp_shm_open(&a, &s, &err), 0);
    char uuid0[48];
    strcpy(uuid0, a.shm->dev[0].uuid);
    assert_int_equal(strncmp(uuid0, "GPU-", 4), 0);
    assert_int_equal(strlen(uuid0), 40);
    assert_string_not_equal(a.shm->dev[0].uuid, a.shm->dev[1].uuid);
    assert_string_equal(a.shm->dev[0].pci_bus_id, "00000000:18:00.0");
    gp_shm_close(&a);
    unlink(g_path);
    assert_int_equal(gp_shm_open(&b, &s, &err), 0); /* recreated from scratch: same identity */
    assert_string_equal(b.shm->dev[0].uuid, uuid0);
    gp_shm_close(&b);
}

static void memory_is_charged_up_to_capacity_and_never_below_zero(void **state)
{
    (void)state;
    gp_sim_spec s;
    gp_err err;
    gp_sim_spec_parse("T4", &s, &err);
    gp_shm_handle h;
    assert_int_equal(gp_shm_open(&h, &s, &err), 0);
    assert_int_equal(gp_shm_proc_claim(&h, &err), 0);
    uint64_t cap = h.shm->dev[0].model.vram_bytes;
    assert_int_equal(gp_shm_mem_charge(&h, 0, cap - 100), 0);
    assert_int_equal(gp_shm_mem_charge(&h, 0, 101), -1);
    assert_int_equal(gp_shm_mem_charge(&h, 0, 100), 0);
    assert_int_equal(gp_shm_mem_used(h.shm, 0), cap);
    gp_shm_mem_uncharge(&h, 0, cap + 5000); /* more than held: clamps at zero */
    assert_int_equal(gp_shm_mem_used(h.shm, 0), 0);
    gp_shm_close(&h);
}

/* A child claims an entry and charges `bytes`, then either waits to be killed, execs, or exits. */
static pid_t spawn_holder(uint64_t bytes, const char *then, int *ready_fd)
{
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    if (pid == 0) {
        close(fds[0]);
        gp_sim_spec s;
        gp_err err;
        gp_sim_spec_parse("T4", &s, &err);
        gp_shm_handle h;
        if (gp_shm_open(&h, &s, &err) < 0 || gp_shm_proc_claim(&h, &err) < 0 ||
            gp_shm_mem_charge(&h, 0, bytes) < 0)
            _exit(3);
        if (write(fds[1], "r", 1) != 1)
            _exit(4);
        if (strcmp(then, "exec") == 0)
            execl("/bin/sleep", "sleep", "30", (char *)NULL); /* the state fd is close-on-exec */
        if (strcmp(then, "exit") == 0)
            _exit(0); /* no clean-up at all, as a crash would */
        pause();
        _exit(0);
    }
    close(fds[1]);
    char c;
    assert_int_equal(read(fds[0], &c, 1), 1);
    *ready_fd = fds[0];
    return pid;
}

static void killed_process_memory_is_reclaimed(void **state)
{
    (void)state;
    gp_sim_spec s;
    gp_err err;
    gp_sim_spec_parse("T4", &s, &err);
    gp_shm_handle h;
    assert_int_equal(gp_shm_open(&h, &s, &err), 0);
    int fd;
    pid_t pid = spawn_holder(1ull << 30, "wait", &fd);
    assert_int_equal(gp_shm_mem_used(h.shm, 0), 1ull << 30);
    assert_int_equal(gp_shm_reap(&h), 0); /* alive: nothing to reclaim */
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    assert_int_equal(gp_shm_reap(&h), 1);
    assert_int_equal(gp_shm_mem_used(h.shm, 0), 0);
    assert_int_equal(gp_shm_reap(&h), 0); /* and only once */
    close(fd);
    gp_shm_close(&h);
}

static void exec_and_exit_release_the_entry_too(void **state)
{
    (void)state;
    gp_sim_spec s;
    gp_err err;
    gp_sim_spec_parse("T4", &s, &err);
    gp_shm_handle h;
    assert_int_equal(gp_shm_open(&h, &s, &err), 0);
    int fd;
    pid_t pid = spawn_holder(1ull << 20, "exec", &fd);
    usleep(100000);                       /* let it exec */
    assert_int_equal(gp_shm_reap(&h), 1); /* still running as /bin/sleep, but no longer a CUDA process */
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    close(fd);
    pid = spawn_holder(1ull << 20, "exit", &fd);
    waitpid(pid, NULL, 0);
    assert_int_equal(gp_shm_reap(&h), 1);
    assert_int_equal(gp_shm_mem_used(h.shm, 0), 0);
    close(fd);
    gp_shm_close(&h);
}

static void claim_reuses_entries_of_the_dead(void **state)
{
    (void)state;
    gp_sim_spec s;
    gp_err err;
    gp_sim_spec_parse("T4", &s, &err);
    for (int i = 0; i < GP_SIM_MAX_PROCS + 8; i++) { /* more processes than entries, one after another */
        int fd;
        pid_t pid = spawn_holder(4096, "exit", &fd);
        waitpid(pid, NULL, 0);
        close(fd);
    }
    gp_shm_handle h;
    assert_int_equal(gp_shm_open(&h, &s, &err), 0);
    assert_int_equal(gp_shm_proc_claim(&h, &err), 0);
    gp_shm_reap(&h);
    assert_int_equal(gp_shm_mem_used(h.shm, 0), 0);
    gp_shm_close(&h);
}

static void another_spec_in_use_is_refused_with_advice(void **state)
{
    (void)state;
    gp_sim_spec t4, l4;
    gp_err err;
    gp_sim_spec_parse("T4", &t4, &err);
    gp_sim_spec_parse("L4", &l4, &err);
    gp_shm_handle a, b;
    assert_int_equal(gp_shm_open(&a, &t4, &err), 0);
    assert_int_equal(gp_shm_proc_claim(&a, &err), 0);
    assert_int_equal(gp_shm_open(&b, &l4, &err), -1);
    assert_int_equal(err.code, GP_ERR_CONFLICT);
    assert_non_null(strstr(err.msg, "GPUPOOL_SIM_STATE"));
    gp_shm_close(&a);
    assert_int_equal(gp_shm_open(&b, &l4, &err), 0); /* nobody uses it any more: re-initialised */
    assert_string_equal(b.shm->dev[0].model.key, "L4");
    gp_shm_close(&b);
}

static void timeline_serialises_reservations_and_counts_busy_time(void **state)
{
    (void)state;
    gp_sim_spec s;
    gp_err err;
    gp_sim_spec_parse("T4", &s, &err);
    gp_shm_handle h;
    assert_int_equal(gp_shm_open(&h, &s, &err), 0);
    assert_int_equal(gp_shm_proc_claim(&h, &err), 0);
    uint64_t t0 = 1000000000ull;
    uint64_t e1 = gp_shm_reserve(&h, 0, GP_ENGINE_COMPUTE, t0, 500, 100);
    uint64_t e2 = gp_shm_reserve(&h, 0, GP_ENGINE_COMPUTE, t0, 300, 0); /* queued behind the first */
    assert_int_equal(e1, t0 + 500);
    assert_int_equal(e2, t0 + 800);
    uint64_t busy, membusy;
    gp_shm_busy_now(h.shm, 0, t0 + 900, &busy, &membusy);
    assert_int_equal(busy, 800);
    gp_shm_busy_now(h.shm, 0, t0 + 600, &busy, &membusy);
    assert_int_equal(busy, 600); /* 200 of the 800 still lie ahead */
    /* the process's own count grows as its work elapses, not when it is reserved */
    assert_int_equal(atomic_load(&h.shm->proc[h.proc].busy_ns[0]), 0);
    gp_shm_tick(&h, 0, t0 + 600);
    assert_int_equal(atomic_load(&h.shm->proc[h.proc].busy_ns[0]), 500);
    gp_shm_tick(&h, 0, t0 + 900);
    assert_int_equal(atomic_load(&h.shm->proc[h.proc].busy_ns[0]), 800);
    gp_shm_close(&h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(spec_counts_models_and_normalises, setup, teardown),
        cmocka_unit_test_setup_teardown(spec_errors_say_what_is_known, setup, teardown),
        cmocka_unit_test_setup_teardown(spec_file_is_read_with_comments, setup, teardown),
        cmocka_unit_test_setup_teardown(devices_get_stable_identities, setup, teardown),
        cmocka_unit_test_setup_teardown(memory_is_charged_up_to_capacity_and_never_below_zero, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(killed_process_memory_is_reclaimed, setup, teardown),
        cmocka_unit_test_setup_teardown(exec_and_exit_release_the_entry_too, setup, teardown),
        cmocka_unit_test_setup_teardown(claim_reuses_entries_of_the_dead, setup, teardown),
        cmocka_unit_test_setup_teardown(another_spec_in_use_is_refused_with_advice, setup, teardown),
        cmocka_unit_test_setup_teardown(timeline_serialises_reservations_and_counts_busy_time, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
