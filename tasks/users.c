/* The users module: user accounts in a SQLite database (CELER_USERS_DB).
 *   users.create  kwargs username, email; optional notify (true: enqueue a
 *                 welcome notify.send as a follow-up), notify_url (the
 *                 welcome goes to this webhook; without it, to the log
 *                 channel). Result {"id", "username", "email",
 *                 "created_at"} and "welcome" (the notification's task id)
 *                 when one was enqueued. Idempotent by task id: the same
 *                 task id run again returns the user it created.
 *   users.get     kwargs id (integer) or username: that user's row.
 * Bad input, a taken username or email, an unknown user: FAILED at once,
 * no retry, with a message naming the field. Database trouble (busy past
 * the timeout, I/O): retried with backoff.
 *
 * One connection per worker child, opened on first use (after the fork:
 * SQLite connections must not cross a fork), in WAL mode with a busy
 * timeout, with its statements prepared once. Writes run in BEGIN
 * IMMEDIATE transactions: a transaction that starts by reading and then
 * writes can fail at once with SQLITE_BUSY under concurrency, where an
 * immediate one waits its turn through the busy timeout. */
#include <ctype.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>
#include <sqlite3.h>
#include "celer/task.h"

/* How long a statement waits for another writer before giving up: far
 * longer than any single insert holds the lock, short enough that a
 * stuck database shows up as retries rather than a hung worker. */
#define USERS_BUSY_TIMEOUT_MS 10000
/* Username: 3 to 32 characters; a name longer than that is not a handle. */
#define USERS_NAME_MIN 3
#define USERS_NAME_MAX 32
/* Email: RFC 5321 limits (254 for the path, 64 for the local part, 63
 * per domain label). */
#define USERS_EMAIL_MAX 254
#define USERS_LOCAL_MAX 64
#define USERS_LABEL_MAX 63
/* Retry delay when the database is busy past the timeout. */
#define USERS_BUSY_RETRY_MS 500
/* Pause between two tries of set-up SQL that found the database busy. */
#define USERS_OPEN_POLL_MS 10
/* Longest url accepted for a welcome webhook. */
#define USERS_URL_MAX 2048

static const char SCHEMA[] =
    "CREATE TABLE IF NOT EXISTS users ("
    " id INTEGER PRIMARY KEY,"
    " username TEXT NOT NULL UNIQUE COLLATE NOCASE,"
    " email TEXT NOT NULL UNIQUE COLLATE NOCASE,"
    " created_at INTEGER NOT NULL,"
    " task_id TEXT UNIQUE)";

enum {
  ST_BEGIN,
  ST_COMMIT,
  ST_ROLLBACK,
  ST_BY_TASK,
  ST_BY_NAME,
  ST_BY_EMAIL,
  ST_BY_ID,
  ST_INSERT,
  ST_COUNT
};
static const char *const SQL[ST_COUNT] = {
    [ST_BEGIN] = "BEGIN IMMEDIATE",
    [ST_COMMIT] = "COMMIT",
    [ST_ROLLBACK] = "ROLLBACK",
    [ST_BY_TASK] = "SELECT id, username, email, created_at FROM users WHERE task_id = ?1",
    [ST_BY_NAME] = "SELECT id, username, email, created_at FROM users WHERE username = ?1",
    [ST_BY_EMAIL] = "SELECT id, username, email, created_at FROM users WHERE email = ?1",
    [ST_BY_ID] = "SELECT id, username, email, created_at FROM users WHERE id = ?1",
    [ST_INSERT] = "INSERT INTO users (username, email, created_at, task_id) "
                  "VALUES (?1, ?2, ?3, ?4)",
};

/* This process's connection; pid tells a child that it inherited the
 * parent's (never used across a fork: it is dropped, not closed). */
static struct {
  sqlite3 *db;
  pid_t pid;
  sqlite3_stmt *st[ST_COUNT];
} conn;

static void close_db(void) {
  for (int i = 0; i < ST_COUNT; i++) sqlite3_finalize(conn.st[i]);
  sqlite3_close(conn.db);
  memset(&conn, 0, sizeof conn);
}

/* Fails the task retryably with the database's own message. */
static int db_error(celer_task_ctx *ctx, const char *doing) {
  const char *msg = conn.db ? sqlite3_errmsg(conn.db) : "cannot open";
  int code = conn.db ? sqlite3_errcode(conn.db) : SQLITE_CANTOPEN;
  int64_t delay = code == SQLITE_BUSY || code == SQLITE_LOCKED ? USERS_BUSY_RETRY_MS : -1;
  return celer_task_retry(ctx, delay, "DatabaseError", "users database: %s: %s", doing, msg);
}

static int64_t now_ms(void);

/* Runs set-up SQL, waiting out SQLITE_BUSY: switching to WAL and creating
 * the schema can meet another child doing the same at the same moment,
 * in places where SQLite does not call the busy handler. */
static int exec_patient(const char *sql) {
  int64_t until = now_ms() + USERS_BUSY_TIMEOUT_MS;
  int rc;
  while ((rc = sqlite3_exec(conn.db, sql, NULL, NULL, NULL)) == SQLITE_BUSY && now_ms() < until)
    usleep(USERS_OPEN_POLL_MS * 1000);
  return rc;
}

/* The connection, opened on first use in this process. NULL after failing
 * the task. */
static sqlite3 *users_db(celer_task_ctx *ctx) {
  if (conn.db && conn.pid == getpid()) return conn.db;
  if (conn.db) memset(&conn, 0, sizeof conn); /* the parent's: leave it be */
  const char *path = getenv("CELER_USERS_DB");
  if (path == NULL || path[0] == '\0') {
    celer_task_fail(ctx, "ConfigError",
                    "CELER_USERS_DB is not set: it names the SQLite file of the users database");
    return NULL;
  }
  int rc = sqlite3_open_v2(path, &conn.db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL);
  if (rc == SQLITE_OK) rc = sqlite3_busy_timeout(conn.db, USERS_BUSY_TIMEOUT_MS);
  if (rc == SQLITE_OK) rc = exec_patient("PRAGMA journal_mode=WAL");
  if (rc == SQLITE_OK) rc = exec_patient("PRAGMA synchronous=NORMAL");
  if (rc == SQLITE_OK) rc = exec_patient(SCHEMA);
  for (int i = 0; rc == SQLITE_OK && i < ST_COUNT; i++)
    rc = sqlite3_prepare_v3(conn.db, SQL[i], -1, SQLITE_PREPARE_PERSISTENT, &conn.st[i], NULL);
  if (rc != SQLITE_OK) {
    db_error(ctx, "opening");
    close_db();
    return NULL;
  }
  conn.pid = getpid();
  celer_task_log(ctx, CELER_TASK_DEBUG, "users database %s opened", path);
  return conn.db;
}

/* Runs a statement that returns no rows. SQLITE_DONE or an error code. */
static int exec_st(int which) {
  int rc = sqlite3_step(conn.st[which]);
  sqlite3_reset(conn.st[which]);
  return rc;
}

/* Looks one user up with statement `which` (its parameters bound). *user
 * gets a new object, or NULL when there is none. Returns SQLITE_OK or an
 * error code. */
static int fetch_user(int which, json_t **user) {
  sqlite3_stmt *s = conn.st[which];
  *user = NULL;
  int rc = sqlite3_step(s);
  if (rc == SQLITE_ROW) {
    *user = json_pack("{sIsssssI}", "id", (json_int_t)sqlite3_column_int64(s, 0), "username",
                      (const char *)sqlite3_column_text(s, 1), "email",
                      (const char *)sqlite3_column_text(s, 2), "created_at",
                      (json_int_t)sqlite3_column_int64(s, 3));
    rc = *user ? SQLITE_OK : SQLITE_NOMEM;
  } else if (rc == SQLITE_DONE) {
    rc = SQLITE_OK;
  }
  sqlite3_reset(s);
  sqlite3_clear_bindings(s);
  return rc;
}

/* ---- validation ---- */

static int check_username(celer_task_ctx *ctx, const char *u) {
  size_t n = strlen(u);
  if (n < USERS_NAME_MIN || n > USERS_NAME_MAX)
    return celer_task_fail(ctx, "ValidationError",
                           "kwargs.username: must be %d to %d characters, got %zu",
                           USERS_NAME_MIN, USERS_NAME_MAX, n);
  if (!isalpha((unsigned char)u[0]) || !isascii((unsigned char)u[0]))
    return celer_task_fail(ctx, "ValidationError", "kwargs.username: must start with a letter");
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)u[i];
    if (!(isascii(c) && (isalnum(c) || c == '_' || c == '.' || c == '-')))
      return celer_task_fail(ctx, "ValidationError",
                             "kwargs.username: only letters, digits, '_', '.' and '-' are "
                             "allowed (character %zu is not)", i + 1);
  }
  return 0;
}

static bool local_char(unsigned char c) {
  return isascii(c) && (isalnum(c) || strchr("!#$%&'*+/=?^_`{|}~.-", c) != NULL);
}

/* Checks one domain label [A-Za-z0-9-], not starting or ending with '-'. */
static bool good_label(const char *l, size_t n) {
  if (n == 0 || n > USERS_LABEL_MAX || l[0] == '-' || l[n - 1] == '-') return false;
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)l[i];
    if (!(isascii(c) && (isalnum(c) || c == '-'))) return false;
  }
  return true;
}

static int bad_email(celer_task_ctx *ctx, const char *why) {
  return celer_task_fail(ctx, "ValidationError", "kwargs.email: not a valid address: %s", why);
}

static int check_email(celer_task_ctx *ctx, const char *e) {
  size_t n = strlen(e);
  if (n > USERS_EMAIL_MAX) return bad_email(ctx, "longer than 254 characters");
  const char *at = strchr(e, '@');
  if (at == NULL) return bad_email(ctx, "no '@'");
  if (strchr(at + 1, '@')) return bad_email(ctx, "more than one '@'");
  size_t local = (size_t)(at - e);
  if (local == 0) return bad_email(ctx, "nothing before the '@'");
  if (local > USERS_LOCAL_MAX) return bad_email(ctx, "more than 64 characters before the '@'");
  for (size_t i = 0; i < local; i++)
    if (!local_char((unsigned char)e[i]))
      return bad_email(ctx, "a character before the '@' is not allowed");
  if (e[0] == '.' || e[local - 1] == '.' || strstr(e, "..") != NULL)
    return bad_email(ctx, "a '.' at the start or end of the name, or two in a row");
  const char *domain = at + 1;
  if (strchr(domain, '.') == NULL) return bad_email(ctx, "the domain has no '.'");
  const char *label = domain, *last = domain;
  for (const char *p = domain;; p++) {
    if (*p == '.' || *p == '\0') {
      if (!good_label(label, (size_t)(p - label)))
        return bad_email(ctx, "the domain is not a host name");
      last = label;
      if (*p == '\0') break;
      label = p + 1;
    }
  }
  for (const char *p = last; *p; p++)
    if (!isalpha((unsigned char)*p)) return bad_email(ctx, "the top-level domain is not letters");
  if (strlen(last) < 2) return bad_email(ctx, "the top-level domain is one letter");
  return 0;
}

/* ---- users.create ---- */

static int64_t now_ms(void) {
  struct timeval tv;
  gettimeofday(&tv, NULL);
  return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

/* Inside the transaction: the user this task created before, or a new
 * one. Returns 0 with *user set, or -1 after failing the task (the
 * caller rolls back). */
static int create_in_tx(celer_task_ctx *ctx, const char *username, const char *email,
                        json_t **user) {
  const char *task_id = celer_task_id(ctx);
  sqlite3_bind_text(conn.st[ST_BY_TASK], 1, task_id, -1, SQLITE_STATIC);
  if (fetch_user(ST_BY_TASK, user) != SQLITE_OK) return db_error(ctx, "reading");
  if (*user) {
    celer_task_log(ctx, CELER_TASK_INFO, "user %s was created by this task before: returned",
                   json_string_value(json_object_get(*user, "username")));
    return 0;
  }
  json_t *taken = NULL;
  sqlite3_bind_text(conn.st[ST_BY_NAME], 1, username, -1, SQLITE_STATIC);
  if (fetch_user(ST_BY_NAME, &taken) != SQLITE_OK) return db_error(ctx, "reading");
  if (taken) {
    json_decref(taken);
    return celer_task_fail(ctx, "UserExists", "kwargs.username: '%s' is already taken",
                           username);
  }
  sqlite3_bind_text(conn.st[ST_BY_EMAIL], 1, email, -1, SQLITE_STATIC);
  if (fetch_user(ST_BY_EMAIL, &taken) != SQLITE_OK) return db_error(ctx, "reading");
  if (taken) {
    json_decref(taken);
    return celer_task_fail(ctx, "UserExists", "kwargs.email: '%s' is already registered",
                           email);
  }
  sqlite3_stmt *ins = conn.st[ST_INSERT];
  int64_t created = now_ms();
  sqlite3_bind_text(ins, 1, username, -1, SQLITE_STATIC);
  sqlite3_bind_text(ins, 2, email, -1, SQLITE_STATIC);
  sqlite3_bind_int64(ins, 3, created);
  sqlite3_bind_text(ins, 4, task_id, -1, SQLITE_STATIC);
  int rc = sqlite3_step(ins);
  sqlite3_reset(ins);
  sqlite3_clear_bindings(ins);
  if (rc != SQLITE_DONE) return db_error(ctx, "inserting");
  *user = json_pack("{sIsssssI}", "id", (json_int_t)sqlite3_last_insert_rowid(conn.db),
                    "username", username, "email", email, "created_at", (json_int_t)created);
  if (*user == NULL) return celer_task_fail(ctx, "MemoryError", "out of memory");
  celer_task_log(ctx, CELER_TASK_INFO, "user %s created", username);
  return 0;
}

/* Enqueues the welcome notification as a follow-up; adds its id to user.
 * 0 or -1 after failing the task. */
static int welcome(celer_task_ctx *ctx, const char *username, const char *email,
                   const char *url, json_t *user) {
  json_t *kw = json_pack("{ssssssso}", "channel", url ? "webhook" : "log", "to", email,
                         "subject", "Welcome", "message", json_sprintf("Welcome, %s!", username));
  if (kw && url) json_object_set_new(kw, "url", json_string(url));
  if (kw == NULL) return celer_task_fail(ctx, "MemoryError", "out of memory");
  char id[CELER_ID_MAX + 1];
  int rc = celer_task_enqueue(ctx, "notify.send", NULL, kw, NULL, id);
  json_decref(kw);
  if (rc != 0) return -1;
  json_object_set_new(user, "welcome", json_string(id));
  return 0;
}

static int create(celer_task_ctx *ctx, const json_t *args, const json_t *kwargs,
                  json_t **result) {
  const char *username, *email, *url = NULL;
  int notify = 0;
  if (celer_arg_string(ctx, kwargs, "username", &username) != 0 ||
      celer_arg_string(ctx, kwargs, "email", &email) != 0 ||
      celer_arg_bool_opt(ctx, kwargs, "notify", &notify) < 0 ||
      celer_arg_string_opt(ctx, kwargs, "notify_url", &url) < 0)
    return -1;
  if (check_username(ctx, username) != 0 || check_email(ctx, email) != 0) return -1;
  if (url && (strlen(url) > USERS_URL_MAX ||
              (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0)))
    return celer_task_fail(ctx, "ValidationError",
                           "kwargs.notify_url: must be an http:// or https:// URL of at most "
                           "%d characters", USERS_URL_MAX);
  if (users_db(ctx) == NULL) return -1;
  if (exec_st(ST_BEGIN) != SQLITE_DONE) return db_error(ctx, "starting a transaction");
  json_t *user = NULL;
  if (create_in_tx(ctx, username, email, &user) != 0) {
    exec_st(ST_ROLLBACK);
    return -1;
  }
  if (exec_st(ST_COMMIT) != SQLITE_DONE) {
    /* Keep the message before the rollback replaces it. */
    db_error(ctx, "committing");
    exec_st(ST_ROLLBACK);
    json_decref(user);
    return -1;
  }
  if (notify && welcome(ctx, username, email, url, user) != 0) {
    json_decref(user);
    return -1;
  }
  *result = user;
  return 0;
}

/* ---- users.get ---- */

static int get(celer_task_ctx *ctx, const json_t *args, const json_t *kwargs,
               json_t **result) {
  int64_t id = 0;
  const char *username = NULL;
  int has_id = celer_arg_int_opt(ctx, kwargs, "id", &id);
  int has_name = celer_arg_string_opt(ctx, kwargs, "username", &username);
  if (has_id < 0 || has_name < 0) return -1;
  if ((has_id == 0) == (has_name == 0))
    return celer_task_fail(ctx, "ArgumentError", "kwargs: give exactly one of id and username");
  if (users_db(ctx) == NULL) return -1;
  int which = has_id == 0 ? ST_BY_ID : ST_BY_NAME;
  if (which == ST_BY_ID) sqlite3_bind_int64(conn.st[ST_BY_ID], 1, id);
  else sqlite3_bind_text(conn.st[ST_BY_NAME], 1, username, -1, SQLITE_STATIC);
  json_t *user = NULL;
  if (fetch_user(which, &user) != SQLITE_OK) return db_error(ctx, "reading");
  if (user == NULL) {
    if (which == ST_BY_ID)
      return celer_task_fail(ctx, "NotFound", "kwargs.id: no user has id %lld", (long long)id);
    return celer_task_fail(ctx, "NotFound", "kwargs.username: no user is named '%s'", username);
  }
  *result = user;
  return 0;
}

/* Closes this process's connection when the module is unloaded (or the
 * process exits), so the database sees a clean close and nothing the
 * connection holds outlives the code that owns it. */
__attribute__((destructor)) static void users_fini(void) {
  if (conn.db && conn.pid == getpid()) close_db();
}

static int init(celer_registry *reg) {
  if (sqlite3_threadsafe() == 0) return -1;
  if (celer_register(reg, &(celer_task_def){.name = "users.create", .handler = create}) != 0)
    return -1;
  return celer_register(reg, &(celer_task_def){.name = "users.get", .handler = get});
}

CELER_MODULE("users", "1.0", init);
