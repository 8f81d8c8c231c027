/* store.c - SQLite behind store.h.
 *
 * Schema (version 1): meta(k PRIMARY KEY, v) holding 'schema' and 'revision'; docs(kind, key, rev, doc,
 * PRIMARY KEY(kind, key)). A transaction takes the next revision at BEGIN IMMEDIATE (one writer at a time)
 * and stores it in meta with its writes, so the revision and the documents commit together.
 */
#include "controller/store.h"

#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "common/json.h"

#define SCHEMA_VERSION 1

struct gp_store {
    sqlite3 *db;
    uint64_t revision; /* committed */
    uint64_t pending;  /* the open transaction's, 0 when none */
    sqlite3_stmt *put, *del, *get, *each, *setrev;
};

static int db_err(gp_store *s, gp_err *err, const char *what)
{
    int code = sqlite3_errcode(s->db);
    const char *hint = code == SQLITE_FULL ? " (the disk is full: free space and retry; nothing was changed)"
                       : code == SQLITE_IOERR   ? " (an I/O error: check the disk; nothing was changed)"
                       : code == SQLITE_CORRUPT ? " (the store file is corrupt: restore it from a backup)"
                       : code == SQLITE_BUSY
                           ? " (another process holds the store: is a second controller running?)"
                           : "";
    return gp_err_set(err, code == SQLITE_FULL || code == SQLITE_IOERR ? GP_ERR_IO : GP_ERR_INTERNAL,
                      "store: %s: %s%s", what, sqlite3_errmsg(s->db), hint);
}

static int exec(gp_store *s, const char *sql, gp_err *err)
{
    char *msg = NULL;
    if (sqlite3_exec(s->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        int rc = db_err(s, err, sql);
        sqlite3_free(msg);
        return rc;
    }
    return 0;
}

static int prepare(gp_store *s, const char *sql, sqlite3_stmt **st, gp_err *err)
{
    if (sqlite3_prepare_v3(s->db, sql, -1, SQLITE_PREPARE_PERSISTENT, st, NULL) != SQLITE_OK)
        return db_err(s, err, "preparing a statement");
    return 0;
}

static int64_t meta_int(gp_store *s, const char *k, int64_t dflt)
{
    sqlite3_stmt *st;
    int64_t v = dflt;
    if (sqlite3_prepare_v2(s->db, "SELECT v FROM meta WHERE k = ?", -1, &st, NULL) != SQLITE_OK)
        return dflt;
    sqlite3_bind_text(st, 1, k, -1, SQLITE_STATIC);
    if (sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

int gp_store_open(const char *path, gp_store **out, gp_err *err)
{
    gp_store *s = calloc(1, sizeof *s);
    if (s == NULL)
        return gp_err_set(err, GP_ERR_NOMEM, "out of memory");
    if (sqlite3_open_v2(path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                        NULL) != SQLITE_OK) {
        gp_err_set(err, GP_ERR_IO, "store: cannot open %s: %s", path,
                   s->db ? sqlite3_errmsg(s->db) : "out of memory");
        sqlite3_close(s->db);
        free(s);
        return -1;
    }
    sqlite3_busy_timeout(s->db, 5000);
    /* A file that is not SQLite, or a corrupt one, fails here or at the integrity check, before anything is
     * written to it. */
    sqlite3_stmt *st = NULL;
    int bad = 0;
    if (sqlite3_prepare_v2(s->db, "PRAGMA quick_check", -1, &st, NULL) != SQLITE_OK)
        bad = 1;
    else if (sqlite3_step(st) != SQLITE_ROW || strcmp((const char *)sqlite3_column_text(st, 0), "ok") != 0)
        bad = 1;
    sqlite3_finalize(st);
    if (bad) {
        gp_err_set(
            err, GP_ERR_INVALID,
            "store: %s is not a usable gpupool store (%s); it was left untouched - restore a backup, or "
            "move it away to start empty",
            path, sqlite3_errmsg(s->db));
        sqlite3_close(s->db);
        free(s);
        return -1;
    }
    if (exec(s, "PRAGMA journal_mode=WAL", err) < 0 || exec(s, "PRAGMA synchronous=FULL", err) < 0 ||
        exec(s,
             "CREATE TABLE IF NOT EXISTS meta(k TEXT PRIMARY KEY, v INTEGER NOT NULL);"
             "CREATE TABLE IF NOT EXISTS docs(kind TEXT NOT NULL, key TEXT NOT NULL, rev INTEGER NOT NULL, "
             "doc TEXT NOT NULL, PRIMARY KEY(kind, key)) WITHOUT ROWID;",
             err) < 0) {
        gp_store_close(s);
        return -1;
    }
    int64_t schema = meta_int(s, "schema", -1);
    if (schema == -1) {
        if (exec(s, "INSERT INTO meta VALUES('schema', 1), ('revision', 0)", err) < 0) {
            gp_store_close(s);
            return -1;
        }
    } else if (schema != SCHEMA_VERSION) {
        gp_err_set(err, GP_ERR_INVALID, "store: %s has schema version %lld; this controller reads version %d",
                   path, (long long)schema, SCHEMA_VERSION);
        gp_store_close(s);
        return -1;
    }
    s->revision = (uint64_t)meta_int(s, "revision", 0);
    if (prepare(
            s,
            "INSERT INTO docs(kind, key, rev, doc) VALUES(?, ?, ?, ?) ON CONFLICT(kind, key) DO UPDATE SET "
            "rev = excluded.rev, doc = excluded.doc",
            &s->put, err) < 0 ||
        prepare(s, "DELETE FROM docs WHERE kind = ? AND key = ?", &s->del, err) < 0 ||
        prepare(s, "SELECT doc, rev FROM docs WHERE kind = ? AND key = ?", &s->get, err) < 0 ||
        prepare(s, "SELECT key, doc, rev FROM docs WHERE kind = ? ORDER BY key", &s->each, err) < 0 ||
        prepare(s, "UPDATE meta SET v = ? WHERE k = 'revision'", &s->setrev, err) < 0) {
        gp_store_close(s);
        return -1;
    }
    *out = s;
    return 0;
}

void gp_store_close(gp_store *s)
{
    if (s == NULL)
        return;
    if (s->pending)
        gp_store_rollback(s);
    sqlite3_finalize(s->put);
    sqlite3_finalize(s->del);
    sqlite3_finalize(s->get);
    sqlite3_finalize(s->each);
    sqlite3_finalize(s->setrev);
    sqlite3_close(s->db);
    free(s);
}

int gp_store_begin(gp_store *s, gp_err *err)
{
    if (s->pending)
        return gp_err_set(err, GP_ERR_INTERNAL, "store: a transaction is already open");
    if (exec(s, "BEGIN IMMEDIATE", err) < 0)
        return -1;
    s->pending = s->revision + 1;
    return 0;
}

int gp_store_commit(gp_store *s, gp_err *err)
{
    if (!s->pending)
        return gp_err_set(err, GP_ERR_INTERNAL, "store: no transaction to commit");
    sqlite3_reset(s->setrev);
    sqlite3_bind_int64(s->setrev, 1, (sqlite3_int64)s->pending);
    if (sqlite3_step(s->setrev) != SQLITE_DONE) {
        int rc = db_err(s, err, "recording the revision");
        gp_store_rollback(s);
        return rc;
    }
    if (sqlite3_exec(s->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
        int rc = db_err(s, err, "committing");
        gp_store_rollback(s);
        return rc;
    }
    s->revision = s->pending;
    s->pending = 0;
    return 0;
}

void gp_store_rollback(gp_store *s)
{
    if (!s->pending)
        return;
    sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
    s->pending = 0;
}

int gp_store_put(gp_store *s, const char *kind, const char *key, const json_t *doc, gp_err *err)
{
    if (!s->pending)
        return gp_err_set(err, GP_ERR_INTERNAL, "store: a write outside a transaction");
    char *text = json_dumps(doc, JSON_COMPACT | JSON_SORT_KEYS);
    if (text == NULL)
        return gp_err_set(err, GP_ERR_NOMEM, "store: cannot serialise a %s document", kind);
    sqlite3_reset(s->put);
    sqlite3_bind_text(s->put, 1, kind, -1, SQLITE_STATIC);
    sqlite3_bind_text(s->put, 2, key, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s->put, 3, (sqlite3_int64)s->pending);
    sqlite3_bind_text(s->put, 4, text, -1, free);
    int rc = sqlite3_step(s->put) == SQLITE_DONE ? 0 : db_err(s, err, "writing a document");
    sqlite3_clear_bindings(s->put);
    return rc;
}

int gp_store_del(gp_store *s, const char *kind, const char *key, gp_err *err)
{
    if (!s->pending)
        return gp_err_set(err, GP_ERR_INTERNAL, "store: a write outside a transaction");
    sqlite3_reset(s->del);
    sqlite3_bind_text(s->del, 1, kind, -1, SQLITE_STATIC);
    sqlite3_bind_text(s->del, 2, key, -1, SQLITE_STATIC);
    if (sqlite3_step(s->del) != SQLITE_DONE)
        return db_err(s, err, "deleting a document");
    if (sqlite3_changes(s->db) == 0)
        return gp_err_set(err, GP_ERR_NOT_FOUND, "no %s \"%s\"", kind, key);
    return 0;
}

json_t *gp_store_get(gp_store *s, const char *kind, const char *key, uint64_t *rev)
{
    sqlite3_reset(s->get);
    sqlite3_bind_text(s->get, 1, kind, -1, SQLITE_STATIC);
    sqlite3_bind_text(s->get, 2, key, -1, SQLITE_STATIC);
    json_t *doc = NULL;
    if (sqlite3_step(s->get) == SQLITE_ROW) {
        const char *text = (const char *)sqlite3_column_text(s->get, 0);
        doc = text ? json_loads(text, 0, NULL) : NULL;
        if (rev)
            *rev = (uint64_t)sqlite3_column_int64(s->get, 1);
    }
    sqlite3_reset(s->get);
    return doc;
}

int gp_store_each(gp_store *s, const char *kind, gp_store_each_fn fn, void *ctx, gp_err *err)
{
    sqlite3_reset(s->each);
    sqlite3_bind_text(s->each, 1, kind, -1, SQLITE_STATIC);
    int rc, stop = 0;
    while (!stop && (rc = sqlite3_step(s->each)) == SQLITE_ROW) {
        const char *key = (const char *)sqlite3_column_text(s->each, 0);
        const char *text = (const char *)sqlite3_column_text(s->each, 1);
        json_error_t je;
        json_t *doc = text ? json_loads(text, 0, &je) : NULL;
        if (doc == NULL) {
            sqlite3_reset(s->each);
            return gp_err_set(err, GP_ERR_INVALID,
                              "store: %s \"%s\" is not valid JSON (%s); the store is damaged", kind,
                              key ? key : "?", text ? je.text : "empty");
        }
        stop = fn(ctx, key, doc, (uint64_t)sqlite3_column_int64(s->each, 2));
        json_decref(doc);
    }
    if (!stop && rc != SQLITE_DONE) {
        int r = db_err(s, err, "reading documents");
        sqlite3_reset(s->each);
        return r;
    }
    sqlite3_reset(s->each);
    return 0;
}

uint64_t gp_store_revision(const gp_store *s)
{
    return s->revision;
}
