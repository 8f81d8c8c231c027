/* visible.c - CUDA_VISIBLE_DEVICES (see visible.h). No allocation and no state: it runs inside cuInit and
 * nvmlInit of the simulated and the remote driver. */
#include "common/visible.h"
#include "common/strutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* The device that entry tok names: its index, -1 for none, -2 for an ambiguous UUID prefix. */
static int lookup(const char *tok, int n, gp_visible_uuid_fn uuid, const void *arg)
{
    if (strncmp(tok, "GPU-", 4) != 0) {
        char *end;
        long v = strtol(tok, &end, 10);
        return end != tok && *end == '\0' && v >= 0 && v < n ? (int)v : -1;
    }
    size_t len = strlen(tok);
    int found = -1;
    for (int i = 0; i < n; i++) {
        char buf[GP_VISIBLE_UUID_LEN];
        if (strncasecmp(uuid(arg, i, buf), tok, len) == 0) {
            if (found >= 0)
                return -2;
            found = i;
        }
    }
    return found;
}

int gp_visible_devices(const char *spec, int n, gp_visible_uuid_fn uuid, const void *arg, int *order)
{
    if (spec == NULL) {
        for (int i = 0; i < n; i++)
            order[i] = i;
        return n;
    }
    int count = 0;
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", spec);
    char *save = NULL;
    for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        int found = lookup(gp_str_trim(tok), n, uuid, arg);
        for (int j = 0; j < count && found >= 0; j++)
            if (order[j] == found)
                found = -1; /* a repeated device */
        if (found < 0)
            break;
        order[count++] = found;
    }
    return count;
}
