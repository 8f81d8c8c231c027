/* agent.c - the agent's life cycle: configuration, start (NVML, adoption of the run directory, API), the loop
 * thread (arbitration every period, discovery every discovery period) and stop.
 *
 * Stopping leaves every slot in place: workloads never depend on the agent being up, only on their slot
 * files, so a stop, a crash or `kill -9` changes nothing for them; their shares stay as last set until a
 * new agent adopts the slots and resumes arbitration.
 */
#include "agent/internal.h"
#include "common/paths.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

const char *const gp_agent_config_keys[] = {
    "run_dir",
    "node.name",
    "gpus.mode",
    "vgpu.library",
    "api.unix",
    "api.tcp",
    "api.token",
    "api.tls.cert",
    "api.tls.key",
    "arbiter.period",
    "discovery.period",
    "log.level",
    "controller.url",
    "controller.token",
    "controller.pool",
    "worker.address",
    "worker.token_file",
    "controller.heartbeat",
    NULL,
};

void gp_agent_config_defaults(gp_agent_config *c)
{
    memset(c, 0, sizeof *c);
    const char *xdg = getenv("XDG_RUNTIME_DIR");
    if (geteuid() == 0)
        snprintf(c->run_dir, sizeof c->run_dir, "/run/gpupool");
    else if (xdg && *xdg)
        snprintf(c->run_dir, sizeof c->run_dir, "%s/gpupool", xdg);
    else
        snprintf(c->run_dir, sizeof c->run_dir, "/tmp/gpupool-%u", (unsigned)geteuid());
    if (gethostname(c->node_name, sizeof c->node_name) != 0)
        snprintf(c->node_name, sizeof c->node_name, "localhost");
    c->node_name[sizeof c->node_name - 1] = '\0';
    for (char *p = c->node_name; *p; p++) /* node names are DNS names: lower case */
        if (*p >= 'A' && *p <= 'Z')
            *p = (char)(*p - 'A' + 'a');
    /* the vGPU library beside the binary: <prefix>/bin/gpupool -> <prefix>/lib/libgpupool-vgpu.so */
    gp_install_path("lib/libgpupool-vgpu.so", c->vgpu_lib, sizeof c->vgpu_lib);
    c->nvml_mode = GP_NVML_AUTO;
    c->period_ms = 100;
    c->discovery_ms = 1000;
    snprintf(c->pool, sizeof c->pool, "default");
    c->heartbeat_ms = 2000;
}

int gp_agent_config_apply(gp_agent_config *c, const gp_config *kv, gp_err *err)
{
    if (gp_config_check(kv, gp_agent_config_keys, err) < 0)
        return -1;
    if (gp_config_str_copy(kv, "run_dir", c->run_dir, sizeof c->run_dir, err) < 0 ||
        gp_config_str_copy(kv, "node.name", c->node_name, sizeof c->node_name, err) < 0 ||
        gp_config_str_copy(kv, "vgpu.library", c->vgpu_lib, sizeof c->vgpu_lib, err) < 0 ||
        gp_config_str_copy(kv, "api.unix", c->unix_path, sizeof c->unix_path, err) < 0 ||
        gp_config_str_copy(kv, "api.tcp", c->tcp_addr, sizeof c->tcp_addr, err) < 0 ||
        gp_config_str_copy(kv, "api.token", c->token, sizeof c->token, err) < 0 ||
        gp_config_str_copy(kv, "api.tls.cert", c->tls_cert, sizeof c->tls_cert, err) < 0 ||
        gp_config_str_copy(kv, "api.tls.key", c->tls_key, sizeof c->tls_key, err) < 0 ||
        gp_config_str_copy(kv, "controller.url", c->controller_url, sizeof c->controller_url, err) < 0 ||
        gp_config_str_copy(kv, "controller.token", c->controller_token, sizeof c->controller_token, err) <
            0 ||
        gp_config_str_copy(kv, "controller.pool", c->pool, sizeof c->pool, err) < 0 ||
        gp_config_str_copy(kv, "worker.address", c->worker_addr, sizeof c->worker_addr, err) < 0 ||
        gp_config_str_copy(kv, "worker.token_file", c->worker_tokens, sizeof c->worker_tokens, err) < 0 ||
        gp_config_duration_ms(kv, "controller.heartbeat", &c->heartbeat_ms, err) < 0)
        return -1;
    if (c->heartbeat_ms < 100 || c->heartbeat_ms > 60000)
        return gp_err_set(err, GP_ERR_RANGE, "controller.heartbeat must be between 100ms and 1m");
    if ((c->worker_addr[0] != '\0') != (c->worker_tokens[0] != '\0'))
        return gp_err_set(err, GP_ERR_INVALID,
                          "worker.address and worker.token_file go together: give both (the node runs "
                          "`gpupool worker --token-file FILE`) or neither");
    const char *mode = gp_config_get(kv, "gpus.mode");
    if (mode) {
        if (strcmp(mode, "auto") == 0)
            c->nvml_mode = GP_NVML_AUTO;
        else if (strcmp(mode, "real") == 0)
            c->nvml_mode = GP_NVML_REAL;
        else if (strcmp(mode, "sim") == 0 || strcmp(mode, "simulated") == 0)
            c->nvml_mode = GP_NVML_SIM;
        else
            return gp_err_set(err, GP_ERR_INVALID, "gpus.mode: \"%s\" is not auto, real or sim", mode);
    }
    if (gp_config_duration_ms(kv, "arbiter.period", &c->period_ms, err) < 0 ||
        gp_config_duration_ms(kv, "discovery.period", &c->discovery_ms, err) < 0)
        return -1;
    if (c->period_ms < 10 || c->period_ms > 10000)
        return gp_err_set(err, GP_ERR_RANGE, "arbiter.period must be between 10ms and 10s");
    if (c->discovery_ms < 100 || c->discovery_ms > 600000)
        return gp_err_set(err, GP_ERR_RANGE, "discovery.period must be between 100ms and 10m");
    const char *lvl = gp_config_get(kv, "log.level");
    if (lvl) {
        int l = gp_log_level_parse(lvl);
        if (l < 0)
            return gp_err_set(err, GP_ERR_INVALID, "log.level: \"%s\" is not error, warn, info or debug",
                              lvl);
        gp_log_set_level((gp_log_level)l);
    }
    if ((c->tls_cert[0] != '\0') != (c->tls_key[0] != '\0'))
        return gp_err_set(err, GP_ERR_INVALID, "api.tls.cert and api.tls.key go together");
    return 0;
}

static void *loop(void *arg)
{
    gp_agent *a = arg;
    uint64_t period = a->cfg.period_ms * 1000000ull, next = gp_now_ns();
    while (!atomic_load(&a->stop)) {
        uint64_t now = gp_now_ns();
        pthread_mutex_lock(&a->mu);
        if (now - a->last_discovery_ns >= a->cfg.discovery_ms * 1000000ull)
            ag_refresh(a);
        ag_arbitrate(a, now);
        pthread_mutex_unlock(&a->mu);
        next += period;
        if (next < now) /* fell behind (suspended?): do not try to catch up */
            next = now + period;
        struct timespec ts = {.tv_sec = (time_t)(next / 1000000000ull),
                              .tv_nsec = (long)(next % 1000000000ull)};
        pthread_mutex_lock(&a->stop_mu);
        while (!atomic_load(&a->stop) && pthread_cond_timedwait(&a->stop_cv, &a->stop_mu, &ts) != ETIMEDOUT) {
        }
        pthread_mutex_unlock(&a->stop_mu);
    }
    return NULL;
}

int gp_agent_start(const gp_agent_config *c, gp_agent **out, gp_err *err)
{
    gp_agent *a = calloc(1, sizeof *a);
    if (a == NULL)
        return gp_err_set(err, GP_ERR_NOMEM, "out of memory");
    a->cfg = *c;
    a->start_realtime_ns = gp_realtime_ns();
    pthread_mutex_init(&a->mu, NULL);
    pthread_mutex_init(&a->stop_mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&a->stop_cv, &ca);
    pthread_condattr_destroy(&ca);
    snprintf(a->slots_dir, sizeof a->slots_dir, "%s/slots", c->run_dir);
    if (a->cfg.unix_path[0] == '\0')
        snprintf(a->cfg.unix_path, sizeof a->cfg.unix_path, "%s/agent.sock", c->run_dir);
    if (access(a->cfg.vgpu_lib, R_OK) != 0)
        gp_log(GP_LOG_WARN, AG_LOG,
               "the vGPU library %s is not readable: workloads started with the environment this agent gives "
               "will fail to load it (set vgpu.library)",
               a->cfg.vgpu_lib[0] ? a->cfg.vgpu_lib : "(not found)");
    if (gp_nvml_load(&a->nvml, c->nvml_mode, err) < 0) {
        free(a);
        return -1;
    }
    pthread_mutex_lock(&a->mu);
    int rc = ag_discover(a, err);
    if (rc == 0)
        rc = ag_slots_adopt(a, err);
    pthread_mutex_unlock(&a->mu);
    if (rc < 0) {
        gp_agent_stop(a);
        return -1;
    }
    gp_http_opts ho = {.unix_path = a->cfg.unix_path,
                       .tcp_addr = a->cfg.tcp_addr[0] ? a->cfg.tcp_addr : NULL,
                       .tls_cert = a->cfg.tls_cert[0] ? a->cfg.tls_cert : NULL,
                       .tls_key = a->cfg.tls_key[0] ? a->cfg.tls_key : NULL};
    if (gp_http_start(&ho, ag_api_handle, a, &a->http, err) < 0) {
        gp_err_wrap(err, "starting the agent's API: ");
        gp_agent_stop(a);
        return -1;
    }
    if (pthread_create(&a->loop, NULL, loop, a) != 0) {
        gp_err_set(err, GP_ERR_IO, "cannot start the agent's loop thread: %s", strerror(errno));
        gp_agent_stop(a);
        return -1;
    }
    a->loop_started = true;
    if (ag_reconcile_start(a, err) < 0) {
        gp_agent_stop(a);
        return -1;
    }
    gp_log(GP_LOG_INFO, AG_LOG, "agent on %s: %d GPU(s)%s, %zu slot set(s), API on %s%s%s", a->cfg.node_name,
           a->ngpus, a->nvml.simulated ? " (simulated)" : "", a->nsets, a->cfg.unix_path,
           a->cfg.tcp_addr[0] ? " and " : "", a->cfg.tcp_addr);
    *out = a;
    return 0;
}

bool gp_agent_simulated(const gp_agent *a)
{
    return a->nvml.simulated;
}

int gp_agent_tcp_port(const gp_agent *a)
{
    return a->http ? gp_http_port(a->http) : 0;
}

void gp_agent_stop(gp_agent *a)
{
    if (a == NULL)
        return;
    pthread_mutex_lock(&a->stop_mu);
    atomic_store(&a->stop, true);
    pthread_cond_broadcast(&a->stop_cv);
    pthread_mutex_unlock(&a->stop_mu);
    ag_reconcile_stop(a);
    gp_http_stop(a->http);
    a->http = NULL;
    if (a->loop_started)
        pthread_join(a->loop, NULL);
    pthread_mutex_lock(&a->mu);
    ag_sets_close(a);
    ag_discovery_close(a);
    pthread_mutex_unlock(&a->mu);
    gp_nvml_unload(&a->nvml);
    pthread_mutex_destroy(&a->mu);
    pthread_mutex_destroy(&a->stop_mu);
    pthread_cond_destroy(&a->stop_cv);
    free(a);
}
