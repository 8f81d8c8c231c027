/* util.c - small helpers of the simulator: pointer vectors. */
#include "sim/sim.h"

#include <stdlib.h>

int gp_ptrvec_push(gp_ptrvec *v, void *p)
{
    if (v->n == v->cap) {
        size_t ncap = v->cap ? v->cap * 2 : 8;
        void **nv = realloc(v->v, ncap * sizeof *nv);
        if (nv == NULL)
            return -1;
        v->v = nv;
        v->cap = ncap;
    }
    v->v[v->n++] = p;
    return 0;
}

void gp_ptrvec_remove(gp_ptrvec *v, const void *p)
{
    for (size_t i = 0; i < v->n; i++)
        if (v->v[i] == p) {
            v->v[i] = v->v[--v->n];
            return;
        }
}

void gp_ptrvec_free(gp_ptrvec *v)
{
    free(v->v);
    v->v = NULL;
    v->n = v->cap = 0;
}
