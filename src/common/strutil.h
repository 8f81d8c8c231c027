/* strutil.h - small string helpers the parsers of specs and environment variables share.
 *
 * Inline and free of state, so that every library, interposed ones included, can use them without linking.
 */
#ifndef GP_COMMON_STRUTIL_H
#define GP_COMMON_STRUTIL_H

#include <ctype.h>
#include <string.h>

/* s without the white space around it: cuts the end in place and returns a pointer into s. */
static inline char *gp_str_trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1]))
        *--e = '\0';
    return s;
}

#endif
