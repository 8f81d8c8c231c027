/* config.c - daemon configuration: one YAML mapping flattened to dotted keys, flags on top (see config.h).
 *
 * libyaml's event parser drives a small stack of open mappings and sequences; every scalar value becomes one
 * key/value pair remembering "file:line". The parse fills a private table first and moves it into the
 * caller's only when the whole document was accepted, so a bad file changes nothing. YAML features that make
 * a value mean something other than what it says (aliases, anchors, tags, several documents) are refused.
 * Keys are unique: a file that sets one twice is an error; gp_config_set (flags) replaces.
 */
#include "common/config.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <yaml.h>

#include "common/quantity.h"

#define MAX_FILE   (1u << 20) /* gp_config_load's bound */
#define MAX_DEPTH  64         /* nested mappings/sequences */
#define MAX_KEY    512        /* a flattened key, in bytes */
#define MAX_SEQ_IX 1000000    /* items in one sequence */

/* ---- the key/value table ---- */

/* Writes "name:line" into where, cutting the name from the left when it does not fit so that the line
 * number (the useful part) survives. */
static void format_where(char *where, size_t len, const char *name, unsigned long line)
{
    char num[24];
    int n = snprintf(num, sizeof num, ":%lu", line);
    size_t nl = strlen(name), room = len - 1 - (size_t)n;
    if (nl > room && room > 3)
        snprintf(where, len, "...%s%s", name + nl - (room - 3), num);
    else
        snprintf(where, len, "%.*s%s", (int)(nl > room ? room : nl), name, num);
}

static gp_config_kv *find(const gp_config *c, const char *key)
{
    for (size_t i = c->n; i-- > 0;)
        if (strcmp(c->kv[i].key, key) == 0)
            return &c->kv[i];
    return NULL;
}

static int reserve(gp_config *c, size_t more, gp_err *err)
{
    if (c->cap - c->n >= more)
        return 0;
    size_t cap = c->cap ? c->cap : 16;
    while (cap - c->n < more)
        cap *= 2;
    gp_config_kv *kv = realloc(c->kv, cap * sizeof *kv);
    if (kv == NULL)
        return gp_err_set(err, GP_ERR_NOMEM, "config: out of memory");
    c->kv = kv;
    c->cap = cap;
    return 0;
}

/* Appends a pair (copies of key and value). */
static int append(gp_config *c, const char *key, size_t klen, const char *value, size_t vlen,
                  const char *where, gp_err *err)
{
    if (reserve(c, 1, err) != 0)
        return -1;
    gp_config_kv *kv = &c->kv[c->n];
    kv->key = strndup(key, klen);
    kv->value = strndup(value, vlen);
    if (kv->key == NULL || kv->value == NULL) {
        free(kv->key);
        free(kv->value);
        return gp_err_set(err, GP_ERR_NOMEM, "config: out of memory");
    }
    snprintf(kv->where, sizeof kv->where, "%s", where);
    c->n++;
    return 0;
}

/* ---- YAML to pairs ---- */

typedef struct frame {
    bool is_map;
    bool want_key;       /* map: the next scalar is a key */
    size_t base;         /* length of the path naming this node */
    size_t index;        /* seq: the next item's index */
    unsigned long kline; /* map: line of the current key */
} frame;

typedef struct flattener {
    const char *name;
    gp_config out;
    frame stack[MAX_DEPTH];
    int depth;
    char path[MAX_KEY + 32];
    size_t plen;
} flattener;

static int yaml_fail(flattener *f, gp_err *err, const yaml_mark_t *m, gp_code code, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static int yaml_fail(flattener *f, gp_err *err, const yaml_mark_t *m, gp_code code, const char *fmt, ...)
{
    char msg[GP_ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    char where[160];
    format_where(where, sizeof where, f->name, (unsigned long)m->line + 1);
    return gp_err_set(err, code, "%s: %s", where, msg);
}

/* Anchors, tags and aliases make a value mean something other than what it says: refused. */
static int refuse_features(flattener *f, const yaml_event_t *ev, gp_err *err)
{
    const yaml_char_t *anchor = NULL, *tag = NULL;
    switch (ev->type) {
    case YAML_ALIAS_EVENT:
        return yaml_fail(f, err, &ev->start_mark, GP_ERR_INVALID,
                         "aliases (*%.40s) are not supported: write the value out in full",
                         (const char *)ev->data.alias.anchor);
    case YAML_SCALAR_EVENT:
        anchor = ev->data.scalar.anchor;
        tag = ev->data.scalar.tag;
        break;
    case YAML_SEQUENCE_START_EVENT:
        anchor = ev->data.sequence_start.anchor;
        tag = ev->data.sequence_start.tag;
        break;
    case YAML_MAPPING_START_EVENT:
        anchor = ev->data.mapping_start.anchor;
        tag = ev->data.mapping_start.tag;
        break;
    default: return 0;
    }
    if (anchor)
        return yaml_fail(f, err, &ev->start_mark, GP_ERR_INVALID,
                         "anchors (&%.40s) are not supported: write each value out in full",
                         (const char *)anchor);
    if (tag) {
        /* Shown as written: libyaml expands "!!str" to "tag:yaml.org,2002:str". */
        static const char std[] = "tag:yaml.org,2002:";
        const char *t = (const char *)tag;
        bool short_form = strncmp(t, std, sizeof std - 1) == 0;
        return yaml_fail(f, err, &ev->start_mark, GP_ERR_INVALID,
                         "tags (%s%.40s) are not supported: remove the tag and write the plain value",
                         short_form ? "!!" : "", short_form ? t + sizeof std - 1 : t);
    }
    return 0;
}

/* A key is a name: printable, without the characters the flattening itself uses for sequences. */
static int check_key(flattener *f, const yaml_event_t *ev, gp_err *err)
{
    const char *k = (const char *)ev->data.scalar.value;
    size_t n = ev->data.scalar.length;
    if (n == 0)
        return yaml_fail(f, err, &ev->start_mark, GP_ERR_INVALID, "an empty key: give the option a name");
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)k[i];
        if (ch < 0x20 || ch == 0x7f || ch == '[' || ch == ']' || ch == ' ')
            return yaml_fail(
                f, err, &ev->start_mark, GP_ERR_INVALID,
                "key \"%.60s\": option names cannot contain spaces, brackets or control characters", k);
    }
    if (k[0] == '.' || k[n - 1] == '.' || strstr(k, ".."))
        return yaml_fail(f, err, &ev->start_mark, GP_ERR_INVALID,
                         "key \"%.60s\": dots separate names, so a name cannot start or end with one", k);
    return 0;
}

/* Appends text to the path (with a '.' before a map key below the root). */
static int path_push(flattener *f, const yaml_mark_t *m, const char *sep, const char *text, size_t n,
                     gp_err *err)
{
    size_t s = strlen(sep);
    if (f->plen + s + n > MAX_KEY)
        return yaml_fail(f, err, m, GP_ERR_INVALID, "key \"%.60s...\" is longer than %d bytes", f->path,
                         MAX_KEY);
    memcpy(f->path + f->plen, sep, s);
    memcpy(f->path + f->plen + s, text, n);
    f->plen += s + n;
    f->path[f->plen] = '\0';
    return 0;
}

/* Sets the path to name the node that comes next at the top frame: base + key (maps: already done when the
 * key was read) or base + "[i]" (sequences). Returns the line to attribute a scalar value to. */
static int path_for_value(flattener *f, const yaml_mark_t *m, unsigned long *line, gp_err *err)
{
    frame *top = &f->stack[f->depth - 1];
    if (top->is_map) {
        *line = top->kline;
        return 0;
    }
    if (top->index >= MAX_SEQ_IX)
        return yaml_fail(f, err, m, GP_ERR_INVALID, "a sequence longer than %d items", MAX_SEQ_IX);
    f->plen = top->base;
    char ix[24];
    int n = snprintf(ix, sizeof ix, "[%zu]", top->index);
    *line = (unsigned long)m->line + 1;
    return path_push(f, m, "", ix, (size_t)n, err);
}

/* After a value (scalar or a whole nested node) at the top frame. */
static void value_done(flattener *f)
{
    if (f->depth == 0)
        return;
    frame *top = &f->stack[f->depth - 1];
    if (top->is_map)
        top->want_key = true;
    else
        top->index++;
}

static bool is_yaml_null(const yaml_event_t *ev)
{
    if (ev->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return false;
    const char *v = (const char *)ev->data.scalar.value;
    return !*v || !strcmp(v, "~") || !strcmp(v, "null") || !strcmp(v, "Null") || !strcmp(v, "NULL");
}

static int on_scalar(flattener *f, const yaml_event_t *ev, gp_err *err)
{
    const char *text = (const char *)ev->data.scalar.value;
    size_t len = ev->data.scalar.length;
    if (f->depth == 0) {
        if (is_yaml_null(ev)) /* "---" alone, or a file of comments: nothing is set */
            return 0;
        return yaml_fail(f, err, &ev->start_mark, GP_ERR_INVALID,
                         "the document must be a mapping of option names to values (\"name: value\" lines), "
                         "not a single value");
    }
    if (memchr(text, '\0', len))
        return yaml_fail(f, err, &ev->start_mark, GP_ERR_INVALID, "a NUL character in a %s",
                         f->stack[f->depth - 1].want_key ? "key" : "value");
    frame *top = &f->stack[f->depth - 1];
    if (top->is_map && top->want_key) {
        if (check_key(f, ev, err) != 0)
            return -1;
        f->plen = top->base;
        if (path_push(f, &ev->start_mark, top->base ? "." : "", text, len, err) != 0)
            return -1;
        top->kline = (unsigned long)ev->start_mark.line + 1;
        top->want_key = false;
        return 0;
    }
    unsigned long line;
    if (path_for_value(f, &ev->start_mark, &line, err) != 0)
        return -1;
    char where[160];
    format_where(where, sizeof where, f->name, line);
    /* A YAML null ("key:" with nothing after it) is recorded as an empty value: the key is still checked
     * against the known ones, and typed getters say it has no value. */
    if (is_yaml_null(ev))
        len = 0;
    if (append(&f->out, f->path, f->plen, text, len, where, err) != 0)
        return -1;
    value_done(f);
    return 0;
}

static int on_start(flattener *f, const yaml_event_t *ev, bool is_map, gp_err *err)
{
    if (f->depth == 0 && !is_map)
        return yaml_fail(f, err, &ev->start_mark, GP_ERR_INVALID,
                         "the document must be a mapping of option names to values (\"name: value\" lines), "
                         "not a sequence");
    if (f->depth > 0) {
        frame *top = &f->stack[f->depth - 1];
        if (top->is_map && top->want_key)
            return yaml_fail(f, err, &ev->start_mark, GP_ERR_INVALID, "a key must be a plain name, not a %s",
                             is_map ? "mapping" : "sequence");
        unsigned long line;
        if (path_for_value(f, &ev->start_mark, &line, err) != 0)
            return -1;
    }
    if (f->depth == MAX_DEPTH)
        return yaml_fail(f, err, &ev->start_mark, GP_ERR_INVALID, "nested deeper than %d levels", MAX_DEPTH);
    size_t base = f->depth ? f->plen : 0;
    f->stack[f->depth++] = (frame){.is_map = is_map, .want_key = is_map, .base = base};
    return 0;
}

static void parser_error(flattener *f, const yaml_parser_t *p, const char *text, size_t len, gp_err *err)
{
    char where[160];
    format_where(where, sizeof where, f->name, (unsigned long)p->problem_mark.line + 1);
    const char *hint = "";
    if (p->problem_mark.index < len && text[p->problem_mark.index] == '\t')
        hint = " (YAML indents with spaces, not tabs)";
    if (p->error == YAML_MEMORY_ERROR) {
        gp_err_set(err, GP_ERR_NOMEM, "%s: out of memory while parsing", f->name);
        return;
    }
    gp_err_set(err, GP_ERR_INVALID, "%s:%lu: %s%s%s%s", where, (unsigned long)p->problem_mark.column + 1,
               p->problem ? p->problem : "invalid YAML", p->context ? " " : "", p->context ? p->context : "",
               hint);
}

/* Qsort order for duplicate detection: by key, then by position in the file. */
static int cmp_kv_ptr(const void *a, const void *b)
{
    const gp_config_kv *x = *(const gp_config_kv *const *)a, *y = *(const gp_config_kv *const *)b;
    int c = strcmp(x->key, y->key);
    return c ? c : (x < y ? -1 : x > y);
}

/* A file that sets one key twice is almost always a mistake (two edits, or "a.b" and "a: {b}"): refused,
 * naming the first duplicate in file order. O(n log n): a large file must not take minutes. */
static int check_duplicates(const gp_config *c, gp_err *err)
{
    if (c->n < 2)
        return 0;
    const gp_config_kv **v = malloc(c->n * sizeof *v);
    if (v == NULL)
        return gp_err_set(err, GP_ERR_NOMEM, "config: out of memory");
    for (size_t i = 0; i < c->n; i++)
        v[i] = &c->kv[i];
    qsort(v, c->n, sizeof *v, cmp_kv_ptr);
    const gp_config_kv *first = NULL, *second = NULL;
    for (size_t i = 1; i < c->n; i++)
        if (strcmp(v[i - 1]->key, v[i]->key) == 0 && (second == NULL || v[i] < second)) {
            first = v[i - 1];
            second = v[i];
        }
    free(v);
    if (second)
        return gp_err_set(err, GP_ERR_INVALID, "%s: \"%.100s\" is set again (it was set at %s): keep one",
                          second->where, second->key, first->where);
    return 0;
}

static int flatten(flattener *f, const char *text, size_t len, gp_err *err)
{
    yaml_parser_t p;
    if (!yaml_parser_initialize(&p))
        return gp_err_set(err, GP_ERR_NOMEM, "%s: out of memory", f->name);
    yaml_parser_set_input_string(&p, (const unsigned char *)text, len);
    int rc = 0, docs = 0;
    bool done = false;
    while (!done && rc == 0) {
        yaml_event_t ev;
        if (!yaml_parser_parse(&p, &ev)) {
            parser_error(f, &p, text, len, err);
            rc = -1;
            break;
        }
        rc = refuse_features(f, &ev, err);
        if (rc == 0) {
            switch (ev.type) {
            case YAML_DOCUMENT_START_EVENT:
                if (++docs > 1)
                    rc = yaml_fail(f, err, &ev.start_mark, GP_ERR_INVALID,
                                   "a second document (\"---\"): a configuration file holds one");
                break;
            case YAML_SCALAR_EVENT: rc = on_scalar(f, &ev, err); break;
            case YAML_SEQUENCE_START_EVENT: rc = on_start(f, &ev, false, err); break;
            case YAML_MAPPING_START_EVENT: rc = on_start(f, &ev, true, err); break;
            case YAML_SEQUENCE_END_EVENT:
            case YAML_MAPPING_END_EVENT:
                f->depth--;
                value_done(f);
                break;
            case YAML_STREAM_END_EVENT: done = true; break;
            default: break;
            }
        }
        yaml_event_delete(&ev);
    }
    yaml_parser_delete(&p);
    if (rc == 0)
        rc = check_duplicates(&f->out, err);
    return rc;
}

/* Moves every pair of src into c (replacing equal keys); cannot fail once the room is reserved. */
static int merge(gp_config *c, gp_config *src, gp_err *err)
{
    if (reserve(c, src->n, err) != 0)
        return -1;
    for (size_t i = 0; i < src->n; i++) {
        gp_config_kv *old = c->n ? find(c, src->kv[i].key) : NULL;
        if (old) {
            free(old->key);
            free(old->value);
            *old = src->kv[i];
        } else {
            c->kv[c->n++] = src->kv[i];
        }
    }
    free(src->kv);
    *src = (gp_config){0};
    return 0;
}

int gp_config_parse(gp_config *c, const char *text, size_t len, const char *name, gp_err *err)
{
    flattener *f = calloc(1, sizeof *f);
    if (f == NULL)
        return gp_err_set(err, GP_ERR_NOMEM, "config: out of memory");
    f->name = name ? name : "config";
    int rc = flatten(f, text ? text : "", text ? len : 0, err);
    if (rc == 0)
        rc = merge(c, &f->out, err);
    gp_config_free(&f->out);
    free(f);
    return rc;
}

int gp_config_load(gp_config *c, const char *path, gp_err *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return gp_err_set(err, errno == ENOENT ? GP_ERR_NOT_FOUND : GP_ERR_IO, "config file %s: %s", path,
                          strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return gp_err_set(err, GP_ERR_INVALID, "config file %s: not a regular file", path);
    }
    if (st.st_size > (off_t)MAX_FILE) {
        close(fd);
        return gp_err_set(err, GP_ERR_RANGE, "config file %s: %lld bytes, more than the %u allowed", path,
                          (long long)st.st_size, MAX_FILE);
    }
    char *buf = malloc((size_t)st.st_size + 1);
    if (buf == NULL) {
        close(fd);
        return gp_err_set(err, GP_ERR_NOMEM, "config file %s: out of memory", path);
    }
    size_t got = 0;
    while (got < (size_t)st.st_size) {
        ssize_t r = read(fd, buf + got, (size_t)st.st_size - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            int e = errno;
            free(buf);
            close(fd);
            return gp_err_set(err, GP_ERR_IO, "config file %s: %s", path, strerror(e));
        }
        if (r == 0)
            break; /* shrank while we read: parse what is there */
        got += (size_t)r;
    }
    close(fd);
    buf[got] = '\0';
    int rc = gp_config_parse(c, buf, got, path, err);
    free(buf);
    return rc;
}

int gp_config_set(gp_config *c, const char *key, const char *value, const char *where, gp_err *err)
{
    if (key == NULL || *key == '\0')
        return gp_err_set(err, GP_ERR_INVALID, "%s: an option needs a name", where ? where : "config");
    if (value == NULL)
        return gp_err_set(err, GP_ERR_INVALID, "%s: option \"%s\" needs a value", where ? where : "config",
                          key);
    gp_config_kv *old = find(c, key);
    if (old) {
        char *v = strdup(value);
        if (v == NULL)
            return gp_err_set(err, GP_ERR_NOMEM, "config: out of memory");
        free(old->value);
        old->value = v;
        snprintf(old->where, sizeof old->where, "%s", where ? where : "(flag)");
        return 0;
    }
    return append(c, key, strlen(key), value, strlen(value), where ? where : "(flag)", err);
}

void gp_config_free(gp_config *c)
{
    if (c == NULL)
        return;
    for (size_t i = 0; i < c->n; i++) {
        free(c->kv[i].key);
        free(c->kv[i].value);
    }
    free(c->kv);
    *c = (gp_config){0};
}

const char *gp_config_get(const gp_config *c, const char *key)
{
    const gp_config_kv *kv = find(c, key);
    return kv ? kv->value : NULL;
}

/* ---- checking keys ---- */

/* Does key match pattern, where "[]" in the pattern stands for "[N]" (N decimal digits) in the key? */
static bool key_matches(const char *key, const char *pat)
{
    while (*pat) {
        if (pat[0] == '[' && pat[1] == ']') {
            if (*key != '[' || !isdigit((unsigned char)key[1]))
                return false;
            key++;
            while (isdigit((unsigned char)*key))
                key++;
            if (*key != ']')
                return false;
            key++;
            pat += 2;
            continue;
        }
        if (*key != *pat)
            return false;
        key++;
        pat++;
    }
    return *key == '\0';
}

/* Edit distance, bounded: only small ones matter for "did you mean". */
static size_t distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > 64 || lb > 64)
        return 99;
    size_t row[65];
    for (size_t j = 0; j <= lb; j++)
        row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t up = row[j];
            size_t best = diag + (a[i - 1] != b[j - 1]);
            if (row[j] + 1 < best)
                best = row[j] + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[lb];
}

int gp_config_check(const gp_config *c, const char *const *known, gp_err *err)
{
    for (size_t i = 0; i < c->n; i++) {
        const char *key = c->kv[i].key;
        bool ok = false;
        for (const char *const *k = known; k && *k && !ok; k++)
            ok = key_matches(key, *k);
        if (ok)
            continue;
        const char *best = NULL;
        size_t bd = 3; /* suggest only a near miss */
        for (const char *const *k = known; k && *k; k++) {
            size_t d = distance(key, *k);
            if (d < bd) {
                bd = d;
                best = *k;
            }
        }
        if (best)
            return gp_err_set(err, GP_ERR_INVALID, "%s: unknown option \"%.100s\" (did you mean \"%s\"?)",
                              c->kv[i].where, key, best);
        return gp_err_set(err, GP_ERR_INVALID,
                          "%s: unknown option \"%.100s\" (check the spelling and the nesting)",
                          c->kv[i].where, key);
    }
    return 0;
}

/* ---- typed getters ---- */

/* Finds key for a typed getter: 1 with *out set when it has a value, 0 when absent, -1 when it is there but
 * empty ("key:" alone) - a typed option left blank is a mistake, not a request for the default. */
static int lookup_value(const gp_config *c, const char *key, const char *expect, const gp_config_kv **out,
                        gp_err *err)
{
    *out = find(c, key);
    if (*out == NULL)
        return 0;
    if ((*out)->value[0] == '\0')
        return gp_err_set(err, GP_ERR_INVALID, "%s: %s has no value: give %s, or remove the line",
                          (*out)->where, key, expect);
    return 1;
}

int gp_config_str(const gp_config *c, const char *key, const char **out, gp_err *err)
{
    (void)err;
    const gp_config_kv *kv = find(c, key);
    if (kv)
        *out = kv->value;
    return 0;
}

int gp_config_str_copy(const gp_config *c, const char *key, char *dst, size_t len, gp_err *err)
{
    const char *v = NULL;
    if (gp_config_str(c, key, &v, err) < 0)
        return -1;
    if (v == NULL)
        return 0;
    if (strlen(v) >= len)
        return gp_err_set(err, GP_ERR_INVALID, "%s: \"%s\" is longer than %zu characters", key, v, len - 1);
    snprintf(dst, len, "%s", v);
    return 0;
}

int gp_config_bool(const gp_config *c, const char *key, bool *out, gp_err *err)
{
    const gp_config_kv *kv;
    int rc = lookup_value(c, key, "true or false", &kv, err);
    if (rc <= 0)
        return rc;
    static const char *const yes[] = {"true", "yes", "on", "1"}, *const no[] = {"false", "no", "off", "0"};
    for (size_t i = 0; i < sizeof yes / sizeof *yes; i++) {
        if (strcasecmp(kv->value, yes[i]) == 0) {
            *out = true;
            return 0;
        }
        if (strcasecmp(kv->value, no[i]) == 0) {
            *out = false;
            return 0;
        }
    }
    return gp_err_set(err, GP_ERR_INVALID, "%s: %s: \"%.60s\" is not a boolean (use true or false)",
                      kv->where, key, kv->value);
}

int gp_config_u64(const gp_config *c, const char *key, uint64_t min, uint64_t max, uint64_t *out, gp_err *err)
{
    const gp_config_kv *kv;
    int rc = lookup_value(c, key, "a whole number", &kv, err);
    if (rc <= 0)
        return rc;
    const char *s = kv->value;
    uint64_t v = 0;
    for (const char *p = s; *p; p++) {
        if (!isdigit((unsigned char)*p))
            return gp_err_set(err, GP_ERR_INVALID, "%s: %s: \"%.60s\" is not a whole number", kv->where, key,
                              s);
        unsigned d = (unsigned)(*p - '0');
        if (v > (UINT64_MAX - d) / 10)
            return gp_err_set(err, GP_ERR_RANGE, "%s: %s: \"%.60s\" is too large (at most %llu)", kv->where,
                              key, s, (unsigned long long)max);
        v = v * 10 + d;
    }
    if (v < min || v > max)
        return gp_err_set(err, GP_ERR_RANGE, "%s: %s: %llu is out of range [%llu, %llu]", kv->where, key,
                          (unsigned long long)v, (unsigned long long)min, (unsigned long long)max);
    *out = v;
    return 0;
}

int gp_config_bytes(const gp_config *c, const char *key, uint64_t *out, gp_err *err)
{
    const gp_config_kv *kv;
    int rc = lookup_value(c, key, "a size such as 8Gi", &kv, err);
    if (rc <= 0)
        return rc;
    uint64_t v;
    if (gp_quantity_parse_bytes(kv->value, key, &v, err) != 0)
        return gp_err_wrap(err, "%s", kv->where);
    *out = v;
    return 0;
}

int gp_config_duration_ms(const gp_config *c, const char *key, uint64_t *out, gp_err *err)
{
    const gp_config_kv *kv;
    int rc = lookup_value(c, key, "a duration such as 30s", &kv, err);
    if (rc <= 0)
        return rc;
    uint64_t v;
    if (gp_duration_parse_ms(kv->value, key, &v, err) != 0)
        return gp_err_wrap(err, "%s", kv->where);
    *out = v;
    return 0;
}

/* Durations are exact: the digits form an integer N with F digits after the point, and the value is
 * N * unit / 10^F milliseconds, which must be whole. */
int gp_duration_parse_ms(const char *s, const char *what, uint64_t *out, gp_err *err)
{
    const char *w = what ? what : "duration";
    if (s == NULL || *s == '\0')
        return gp_err_set(err, GP_ERR_INVALID, "%s: empty duration (use e.g. 250ms, 30s, 5m or 1h)", w);
    if (*s == '-')
        return gp_err_set(err, GP_ERR_INVALID, "%s \"%.60s\": a duration cannot be negative", w, s);
    const char *p = s;
    uint64_t whole = 0, frac = 0, frac_scale = 1;
    bool any = false;
    for (; isdigit((unsigned char)*p); p++, any = true) {
        unsigned d = (unsigned)(*p - '0');
        if (whole > (UINT64_MAX - d) / 10)
            return gp_err_set(err, GP_ERR_RANGE, "%s \"%.60s\": too large", w, s);
        whole = whole * 10 + d;
    }
    if (*p == '.') {
        p++;
        for (; isdigit((unsigned char)*p); p++, any = true) {
            if (frac_scale == 1000000000u) {
                if (*p != '0')
                    return gp_err_set(err, GP_ERR_INVALID, "%s \"%.60s\": finer than a millisecond", w, s);
                continue;
            }
            frac = frac * 10 + (uint64_t)(*p - '0');
            frac_scale *= 10;
        }
    }
    if (!any)
        return gp_err_set(err, GP_ERR_INVALID,
                          "%s \"%.60s\": expected a number with a unit, such as 250ms, 30s, 5m or 1h", w, s);
    static const struct {
        const char *unit;
        uint64_t ms;
    } units[] = {{"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000}, {"", 1000}};
    for (size_t i = 0; i < sizeof units / sizeof *units; i++) {
        if (strcmp(p, units[i].unit) != 0)
            continue;
        uint64_t m = units[i].ms;
        if (whole > UINT64_MAX / m)
            return gp_err_set(err, GP_ERR_RANGE, "%s \"%.60s\": too large", w, s);
        /* frac < 10^9 and m <= 3.6e6: the product fits in 64 bits. */
        uint64_t fm = frac * m;
        if (fm % frac_scale != 0)
            return gp_err_set(err, GP_ERR_INVALID, "%s \"%.60s\": finer than a millisecond", w, s);
        uint64_t v = whole * m;
        if (v > UINT64_MAX - fm / frac_scale)
            return gp_err_set(err, GP_ERR_RANGE, "%s \"%.60s\": too large", w, s);
        *out = v + fm / frac_scale;
        return 0;
    }
    return gp_err_set(err, GP_ERR_INVALID, "%s \"%.60s\": unknown unit \"%.20s\" (use ms, s, m or h)", w, s,
                      p);
}
