/* quantity.c - Kubernetes-style byte quantities (see quantity.h).
 *
 * The number is kept exact: all its digits form an integer N with F digits after the point, and the value
 * is N * multiplier / 10^F, computed in 128 bits and required to divide exactly.
 */
#include "common/quantity.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

typedef unsigned __int128 u128;

#define MAX_DIGITS 36 /* 10^36 < 2^128 */

static const struct {
    const char *suffix;
    unsigned shift; /* binary: multiplier 2^shift */
    unsigned exp10; /* decimal: multiplier 10^exp10 */
} suffixes[] = {
    {"Ki", 10, 0}, {"Mi", 20, 0}, {"Gi", 30, 0}, {"Ti", 40, 0}, {"Pi", 50, 0}, {"Ei", 60, 0},
    {"k", 0, 3},   {"M", 0, 6},   {"G", 0, 9},   {"T", 0, 12},  {"P", 0, 15},  {"E", 0, 18},
};

static u128 pow10_128(unsigned e)
{
    u128 v = 1;
    while (e--)
        v *= 10;
    return v;
}

static int bad(gp_err *err, const char *what, const char *s, const char *why)
{
    return gp_err_set(err, GP_ERR_INVALID, "%s%s\"%s\": %s", what ? what : "", what ? " " : "", s, why);
}

int gp_quantity_parse_bytes(const char *s, const char *what, uint64_t *out, gp_err *err)
{
    if (s == NULL || *s == '\0')
        return bad(err, what, s ? s : "", "empty quantity (use e.g. 8Gi, 512Mi or 4G)");
    const char *p = s;
    if (*p == '+')
        p++;
    else if (*p == '-')
        return bad(err, what, s, "a size cannot be negative");

    u128 n = 0;
    unsigned digits = 0, frac = 0;
    int seen_point = 0, any_digit = 0;
    for (; *p; p++) {
        if (*p == '.') {
            if (seen_point)
                return bad(err, what, s, "more than one decimal point");
            seen_point = 1;
            continue;
        }
        if (!isdigit((unsigned char)*p))
            break;
        any_digit = 1;
        if (digits == 0 && *p == '0' && !seen_point)
            continue; /* leading zeros carry no value */
        if (++digits > MAX_DIGITS)
            return bad(err, what, s, "too many digits");
        n = n * 10 + (u128)(*p - '0');
        if (seen_point)
            frac++;
    }
    if (!any_digit)
        return bad(err, what, s, "expected a number first (use e.g. 8Gi, 512Mi or 4G)");

    u128 mult = 1;
    unsigned div10 = frac;
    const char *suffix = p;
    if (*suffix != '\0') {
        int found = 0;
        for (size_t i = 0; i < sizeof suffixes / sizeof suffixes[0]; i++) {
            if (strcmp(suffix, suffixes[i].suffix) == 0) {
                mult = suffixes[i].shift ? ((u128)1 << suffixes[i].shift) : pow10_128(suffixes[i].exp10);
                found = 1;
                break;
            }
        }
        if (!found && (suffix[0] == 'e' || suffix[0] == 'E') && suffix[1] != '\0') {
            const char *q = suffix + 1;
            int neg = 0;
            if (*q == '+' || *q == '-')
                neg = (*q++ == '-');
            unsigned e = 0;
            const char *start = q;
            while (isdigit((unsigned char)*q) && e < 1000)
                e = e * 10 + (unsigned)(*q++ - '0');
            if (q != start && *q == '\0') {
                if (neg)
                    div10 += e;
                else if (e > 38)
                    return gp_err_set(err, GP_ERR_RANGE, "%s%s\"%s\": too large (at most 16Ei)",
                                      what ? what : "", what ? " " : "", s);
                else
                    mult = pow10_128(e);
                found = 1;
            }
        }
        if (!found) {
            char msg[160];
            snprintf(msg, sizeof msg, "unknown unit \"%s\" (use Ki, Mi, Gi, Ti, or k, M, G, T)", suffix);
            return bad(err, what, s, msg);
        }
    }

    /* value = n * mult / 10^div10, exactly. Divide first where the division is exact, to avoid overflow. */
    while (div10 > 0 && n % 10 == 0) {
        n /= 10;
        div10--;
    }
    while (div10 > 0 && mult % 10 == 0) {
        mult /= 10;
        div10--;
    }
    if (n != 0 && mult > ((u128)-1) / n)
        return gp_err_set(err, GP_ERR_RANGE, "%s%s\"%s\": too large (at most 16Ei)", what ? what : "",
                          what ? " " : "", s);
    u128 v = n * mult;
    if (div10 > 0) {
        if (div10 > MAX_DIGITS)
            return bad(err, what, s, "not a whole number of bytes");
        u128 d = pow10_128(div10);
        if (v % d != 0)
            return bad(err, what, s, "not a whole number of bytes");
        v /= d;
    }
    if (v > (u128)UINT64_MAX)
        return gp_err_set(err, GP_ERR_RANGE, "%s%s\"%s\": too large (at most 16Ei)", what ? what : "",
                          what ? " " : "", s);
    *out = (uint64_t)v;
    return 0;
}

char *gp_quantity_format_bytes(uint64_t bytes, char *buf, size_t len)
{
    static const char *const bin[] = {"Ei", "Pi", "Ti", "Gi", "Mi", "Ki"};
    if (bytes != 0) {
        for (int i = 0; i < 6; i++) {
            unsigned shift = (unsigned)(60 - 10 * i);
            if ((bytes & ((1ull << shift) - 1)) == 0) {
                snprintf(buf, len, "%llu%s", (unsigned long long)(bytes >> shift), bin[i]);
                return buf;
            }
        }
    }
    snprintf(buf, len, "%llu", (unsigned long long)bytes);
    return buf;
}

char *gp_bytes_human(uint64_t bytes, char *buf, size_t len)
{
    static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
    double v = (double)bytes;
    int u = 0;
    while (v >= 1024.0 && u < 6) {
        v /= 1024.0;
        u++;
    }
    if (u == 0)
        snprintf(buf, len, "%llu B", (unsigned long long)bytes);
    else if (v == (double)(uint64_t)v)
        snprintf(buf, len, "%llu %s", (unsigned long long)v, units[u]);
    else
        snprintf(buf, len, "%.1f %s", v, units[u]);
    return buf;
}
