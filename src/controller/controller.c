/* controller.c - the controller's life cycle: configuration, start (store, model, API), the monitor thread
 * (nodes that stop reporting are marked lost) and stop.
 */
#include "controller/internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

const char *const gp_controller_config_keys[] = {
    "data_dir",    "api.unix",      "api.tcp",   "api.token", "api.tls.cert",
    "api.tls.key", "nodes.timeout", "log.level", NULL,
};

void gp_controller_config_defaults(gp_controller_config *c)
{
    memset(c, 0, sizeof *c);
    const char *home = getenv("HOME");
    if (geteuid() == 0)
        snprintf(c->data_dir, sizeof c->data_dir, "/var/lib/gpupool");
    else if (home && *home)
        snprintf(c->data_dir, sizeof c->data_dir, "%.200s/.local/share/gpupool", home);
    else
        snprintf(c->data_dir, sizeof c->data_dir, "/tmp/gpupool-%u", (unsigned)geteuid());
    snprintf(c->tcp_addr, sizeof c->tcp_addr, "127.0.0.1:9400");
    c->node_timeout_ms = 30000;
}

int gp_controller_config_apply(gp_controller_config *c, const gp_config *kv, gp_err *err)
{
    if (gp_config_check(kv, gp_controller_config_keys, err) < 0)
        return -1;
    if (gp_config_str_copy(kv, "data_dir", c->data_dir, sizeof c->data_dir, err) < 0 ||
        gp_config_str_copy(kv, "api.unix", c->unix_path, sizeof c->unix_path, err) < 0 ||
        gp_config_str_copy(kv, "api.tcp", c->tcp_addr, sizeof c->tcp_addr, err) < 0 ||
        gp_config_str_copy(kv, "api.token", c->token, sizeof c->token, err) < 0 ||
        gp_config_str_copy(kv, "api.tls.cert", c->tls_cert, sizeof c->tls_cert, err) < 0 ||
        gp_config_str_copy(kv, "api.tls.key", c->tls_key, sizeof c->tls_key, err) < 0 ||
        gp_config_duration_ms(kv, "nodes.timeout", &c->node_timeout_ms, err) < 0)
        return -1;
    if (c->node_timeout_ms < 500 || c->node_timeout_ms > 3600000)
        return gp_err_set(err, GP_ERR_RANGE, "nodes.timeout must be between 500ms and 1h");
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
    if (strcmp(c->tcp_addr, "none") == 0)
        c->tcp_addr[0] = '\0';
    return 0;
}

static void *monitor(void *arg)
{
    gp_controller *c = arg;
    pthread_mutex_lock(&c->mu);
    while (!atomic_load(&c->stop)) {
        cn_check_nodes(c, gp_now_ns());
        uint64_t next = gp_now_ns() + 250000000ull;
        struct timespec ts = {.tv_sec = (time_t)(next / 1000000000ull),
                              .tv_nsec = (long)(next % 1000000000ull)};
        pthread_cond_timedwait(&c->changed, &c->mu, &ts);
    }
    pthread_mutex_unlock(&c->mu);
    return NULL;
}

int gp_controller_start(const gp_controller_config *cfg, gp_controller **out, gp_err *err)
{
    gp_controller *c = calloc(1, sizeof *c);
    if (c == NULL)
        return gp_err_set(err, GP_ERR_NOMEM, "out of memory");
    c->cfg = *cfg;
    if (c->cfg.unix_path[0] == '\0')
        snprintf(c->cfg.unix_path, sizeof c->cfg.unix_path, "%.250s/controller.sock", cfg->data_dir);
    pthread_mutex_init(&c->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&c->changed, &ca);
    pthread_condattr_destroy(&ca);
    if (mkdir(cfg->data_dir, 0700) < 0 && errno != EEXIST) {
        gp_err_set(err, GP_ERR_IO, "cannot create the data directory %s: %s", cfg->data_dir, strerror(errno));
        gp_controller_stop(c);
        return -1;
    }
    char db[400];
    snprintf(db, sizeof db, "%.250s/controller.db", cfg->data_dir);
    c->alloc = gp_alloc_new();
    if (c->alloc == NULL || gp_store_open(db, &c->store, err) < 0) {
        if (c->alloc == NULL)
            gp_err_set(err, GP_ERR_NOMEM, "out of memory");
        gp_controller_stop(c);
        return -1;
    }
    pthread_mutex_lock(&c->mu);
    int rc = cn_load(c, err);
    pthread_mutex_unlock(&c->mu);
    if (rc < 0) {
        gp_err_wrap(err, "loading %s: ", db);
        gp_controller_stop(c);
        return -1;
    }
    gp_http_opts ho = {.unix_path = c->cfg.unix_path,
                       .tcp_addr = c->cfg.tcp_addr[0] ? c->cfg.tcp_addr : NULL,
                       .tls_cert = c->cfg.tls_cert[0] ? c->cfg.tls_cert : NULL,
                       .tls_key = c->cfg.tls_key[0] ? c->cfg.tls_key : NULL,
                       .max_conns = 1024};
    if (gp_http_start(&ho, cn_api_handle, c, &c->http, err) < 0) {
        gp_err_wrap(err, "starting the controller's API: ");
        gp_controller_stop(c);
        return -1;
    }
    if (pthread_create(&c->monitor, NULL, monitor, c) != 0) {
        gp_err_set(err, GP_ERR_IO, "cannot start the controller's monitor thread");
        gp_controller_stop(c);
        return -1;
    }
    c->monitor_started = true;
    gp_log(GP_LOG_INFO, CN_LOG, "controller on %s%s%s, data in %s", c->cfg.unix_path,
           c->cfg.tcp_addr[0] ? " and " : "", c->cfg.tcp_addr, cfg->data_dir);
    *out = c;
    return 0;
}

int gp_controller_tcp_port(const gp_controller *c)
{
    return c->http ? gp_http_port(c->http) : 0;
}

const char *gp_controller_socket(const gp_controller *c)
{
    return c->cfg.unix_path;
}

void gp_controller_stop(gp_controller *c)
{
    if (c == NULL)
        return;
    /* wake long-polls first, so the server's stop does not wait out their timeouts */
    pthread_mutex_lock(&c->mu);
    atomic_store(&c->stop, true);
    pthread_cond_broadcast(&c->changed);
    pthread_mutex_unlock(&c->mu);
    gp_http_stop(c->http);
    if (c->monitor_started)
        pthread_join(c->monitor, NULL);
    pthread_mutex_lock(&c->mu);
    if (c->work_index)
        cn_unload(c);
    pthread_mutex_unlock(&c->mu);
    gp_store_close(c->store);
    gp_alloc_free(c->alloc);
    pthread_mutex_destroy(&c->mu);
    pthread_cond_destroy(&c->changed);
    free(c);
}
