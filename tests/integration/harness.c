/* harness.c - see harness.h. */
#include "harness.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/http.h"
#include "common/timeutil.h"

static pid_t g_pids[64];
static int g_npids;

static void track(pid_t p)
{
    if (g_npids < 64)
        g_pids[g_npids++] = p;
}

static pid_t g_work_pids[64]; /* the workloads among them */
static int g_nwork;

static void untrack(pid_t p)
{
    for (int i = 0; i < g_npids; i++)
        if (g_pids[i] == p)
            g_pids[i] = g_pids[--g_npids];
    for (int i = 0; i < g_nwork; i++)
        if (g_work_pids[i] == p)
            g_work_pids[i] = g_work_pids[--g_nwork];
}

void h_work_kill_all(void)
{
    while (g_nwork > 0) {
        pid_t p = g_work_pids[0];
        kill(p, SIGKILL);
        waitpid(p, NULL, 0);
        untrack(p);
    }
}

void h_cleanup(void)
{
    for (int i = 0; i < g_npids; i++) {
        kill(g_pids[i], SIGKILL);
        waitpid(g_pids[i], NULL, 0);
    }
    g_npids = 0;
    g_nwork = 0;
}

void h_sim_host(const char *spec)
{
    setenv("GPUPOOL_SIM_GPUS", spec, 1);
    char state[128];
    snprintf(state, sizeof state, "/dev/shm/gpupool-test-%d-sim", (int)getpid());
    unlink(state);
    setenv("GPUPOOL_SIM_STATE", state, 1);
}

void h_tmpdir(char *out, size_t len, const char *tag)
{
    static int seq;
    snprintf(out, len, "/tmp/gpupool-test-%d-%s-%d", (int)getpid(), tag, seq++);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", out);
    if (system(cmd) != 0 || mkdir(out, 0755) != 0)
        fail_msg("cannot make %s", out);
}

void h_daemon_start(h_agent *a, const char *const *argv, const char *sock, const char *log)
{
    snprintf(a->sock, sizeof a->sock, "%s", sock);
    snprintf(a->log, sizeof a->log, "%s", log);
    a->tcp_port = 0;
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 2);
            dup2(fd, 1);
        }
        execv(GPUPOOL_BIN, (char *const *)argv);
        _exit(127);
    }
    a->pid = pid;
    track(pid);
    for (int i = 0; i < 300; i++) {
        json_t *o = NULL;
        if (h_api(a, "GET", "/healthz", NULL, &o) == 200) {
            json_decref(o);
            /* the TCP port, when there is one, is in the log */
            FILE *f = fopen(log, "r");
            char line[512];
            while (f && fgets(line, sizeof line, f)) {
                char *p = strstr(line, "TCP port ");
                if (p)
                    a->tcp_port = atoi(p + 9);
            }
            if (f)
                fclose(f);
            return;
        }
        json_decref(o);
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) {
            untrack(pid);
            char cmd[400];
            snprintf(cmd, sizeof cmd, "cat '%s' >&2", log);
            if (system(cmd) != 0)
                fprintf(stderr, "(no log)\n");
            fail_msg("gpupool %s exited during start-up (status %#x)", argv[1], st);
        }
        gp_sleep_ns(50000000);
    }
    fail_msg("gpupool %s did not answer /healthz within 15 s", argv[1]);
}

void h_agent_start(h_agent *a, const char *run_dir, const char *const *extra)
{
    memset(a, 0, sizeof *a);
    snprintf(a->run_dir, sizeof a->run_dir, "%s", run_dir);
    const char *argv[32] = {"gpupool", "agent", "--sim", "--run-dir", run_dir, "--log-level", "info"};
    int n = 7;
    for (int i = 0; extra && extra[i] && n < 31; i++)
        argv[n++] = extra[i];
    argv[n] = NULL;
    char sock[300], log[300];
    snprintf(sock, sizeof sock, "%s/agent.sock", run_dir);
    snprintf(log, sizeof log, "%s/agent.log", run_dir);
    h_daemon_start(a, argv, sock, log);
}

void h_controller_start(h_agent *a, const char *data_dir, const char *const *extra)
{
    memset(a, 0, sizeof *a);
    snprintf(a->run_dir, sizeof a->run_dir, "%s", data_dir);
    const char *argv[32] = {"gpupool",      "controller",  "--data-dir",  data_dir,
                            "--listen-tcp", "127.0.0.1:0", "--log-level", "info"};
    int n = 8;
    for (int i = 0; extra && extra[i] && n < 31; i++)
        argv[n++] = extra[i];
    argv[n] = NULL;
    char sock[300], log[300];
    snprintf(sock, sizeof sock, "%s/controller.sock", data_dir);
    snprintf(log, sizeof log, "%s/controller.log", data_dir);
    h_daemon_start(a, argv, sock, log);
}

void h_agent_kill(h_agent *a, int sig)
{
    if (a->pid <= 0)
        return;
    kill(a->pid, sig);
    waitpid(a->pid, NULL, 0);
    untrack(a->pid);
    a->pid = 0;
}

static long call(const char *url, const char *method, const char *body, const char *token, json_t **out,
                 char **raw)
{
    gp_http_result r = {0};
    gp_err err = {0};
    gp_http_client_opts o = {.timeout_ms = 10000, .bearer = token};
    if (out)
        *out = NULL;
    if (raw)
        *raw = NULL;
    if (gp_http_call(method, url, body, NULL, &o, &r, &err) < 0)
        return 0;
    if (out && r.body)
        *out = json_loads(r.body, 0, NULL);
    if (raw) {
        *raw = r.body;
        r.body = NULL;
    }
    long st = r.status;
    gp_http_result_free(&r);
    return st;
}

long h_api(const h_agent *a, const char *method, const char *path, const char *body, json_t **out)
{
    char url[800];
    snprintf(url, sizeof url, "unix:%s:%s", a->sock, path);
    return call(url, method, body, NULL, out, NULL);
}

long h_api_raw(const h_agent *a, const char *path, char **raw)
{
    char url[800];
    snprintf(url, sizeof url, "unix:%s:%s", a->sock, path);
    return call(url, "GET", NULL, NULL, NULL, raw);
}

long h_api_tcp(int port, const char *method, const char *path, const char *body, const char *token,
               json_t **out, char **raw)
{
    char url[800];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", port, path);
    return call(url, method, body, token, out, raw);
}

void h_work_start(h_work *w, json_t *env, int gpu)
{
    memset(w, 0, sizeof *w);
    int p[2];
    if (pipe(p) != 0)
        fail_msg("pipe");
    pid_t pid = fork();
    if (pid == 0) {
        dup2(p[1], 1);
        close(p[0]);
        const char *k;
        json_t *v;
        json_object_foreach(env, k, v) setenv(k, json_string_value(v), 1);
        char g[16];
        snprintf(g, sizeof g, "%d", gpu);
        execl(GP_BUSY, "gp_busy", "--gpu", g, "--kernel-ms", "2", (char *)NULL);
        _exit(127);
    }
    close(p[1]);
    fcntl(p[0], F_SETFL, O_NONBLOCK);
    w->pid = pid;
    w->fd = p[0];
    track(pid);
    if (g_nwork < 64)
        g_work_pids[g_nwork++] = pid;
}

void h_work_poll(h_work *w)
{
    char buf[4096];
    for (;;) {
        ssize_t r = read(w->fd, buf, sizeof buf - 1);
        if (r <= 0)
            return;
        buf[r] = '\0';
        char *s = buf;
        for (char *nl; (nl = strchr(s, '\n')) != NULL; s = nl + 1) {
            *nl = '\0';
            char line[256];
            snprintf(line, sizeof line, "%.120s%.120s", w->part, s);
            w->part[0] = '\0';
            unsigned long long t, c;
            if (sscanf(line, "%llu %llu", &t, &c) != 2)
                continue;
            if (w->n == w->cap) {
                w->cap = w->cap ? w->cap * 2 : 256;
                w->t = realloc(w->t, w->cap * sizeof *w->t);
                w->count = realloc(w->count, w->cap * sizeof *w->count);
            }
            w->t[w->n] = t;
            w->count[w->n++] = c;
        }
        snprintf(w->part + strlen(w->part), sizeof w->part - strlen(w->part), "%s", s);
    }
}

/* The completed count at time t, interpolated between samples. */
static double count_at(const h_work *w, uint64_t t)
{
    if (w->n == 0)
        return 0;
    if (t <= w->t[0])
        return (double)w->count[0];
    for (size_t i = 1; i < w->n; i++)
        if (w->t[i] >= t) {
            double f = (double)(t - w->t[i - 1]) / (double)(w->t[i] - w->t[i - 1]);
            return (double)w->count[i - 1] + f * (double)(w->count[i] - w->count[i - 1]);
        }
    return (double)w->count[w->n - 1];
}

double h_work_share(h_work *w, uint64_t t0, uint64_t t1, double kernel_ms)
{
    /* a loaded machine may delay the workload's report a little: wait for it, up to a bound */
    h_work_poll(w);
    for (int i = 0; i < 50 && (w->n == 0 || w->t[w->n - 1] < t1); i++) {
        gp_sleep_ns(100000000);
        h_work_poll(w);
    }
    if (w->n == 0 || w->t[w->n - 1] < t1)
        fail_msg("workload %d has not reported up to the end of the window (5 s later)", (int)w->pid);
    return (count_at(w, t1) - count_at(w, t0)) * kernel_ms * 1e6 / (double)(t1 - t0);
}

uint64_t h_work_count(h_work *w)
{
    h_work_poll(w);
    return w->n ? w->count[w->n - 1] : 0;
}

void h_work_stop(h_work *w)
{
    if (w->pid > 0) {
        kill(w->pid, SIGKILL);
        waitpid(w->pid, NULL, 0);
        untrack(w->pid);
    }
    if (w->fd > 0)
        close(w->fd);
    free(w->t);
    free(w->count);
    memset(w, 0, sizeof *w);
}

int h_free_port(void)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof a) != 0 ||
        getsockname(s, (struct sockaddr *)&a, &len) != 0)
        fail_msg("no free port");
    close(s);
    return ntohs(a.sin_port);
}
