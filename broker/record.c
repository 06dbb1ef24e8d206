/* Result records: the JSON object stored at <ns>:{q}:result:<id> (CONTRACT
 * "Results and states"). Field order is fixed so records read the same in
 * redis-cli as in docs/protocol.md. */
#include <stdlib.h>
#include <string.h>
#include "broker/broker.h"

static int set_time(json_t *o, const char *key, int64_t ms) {
  return json_object_set_new(o, key, ms > 0 ? json_integer(ms) : json_null());
}

/* Strings in a record may come from hostile input or from a handler's
 * message: invalid UTF-8 is stored with each non-ASCII byte as '?' rather
 * than losing the record. */
static json_t *safe_string(const char *s) {
  json_t *v = json_string(s);
  if (v != NULL) return v;
  char *copy = strdup(s);
  if (copy == NULL) return NULL;
  for (char *p = copy; *p; p++)
    if ((unsigned char)*p >= 0x80) *p = '?';
  v = json_string(copy);
  free(copy);
  return v;
}

static int set_string(json_t *o, const char *key, const char *s) {
  return json_object_set_new(o, key, s ? safe_string(s) : json_null());
}

int broker_record_encode(const broker_outcome *o, char **out, size_t *len) {
  json_t *rec = json_object();
  if (rec == NULL) return CELER_ENOMEM;
  int bad = 0;
  bad |= set_string(rec, "id", o->id);
  bad |= set_string(rec, "task", o->task);
  bad |= set_string(rec, "queue", o->queue);
  bad |= set_string(rec, "state", celer_state_name(o->state));
  bad |= json_object_set_new(rec, "attempt", json_integer(o->attempt));
  bad |= json_object_set_new(rec, "redeliveries", json_integer(o->redeliveries));
  if (o->state == CELER_SUCCEEDED) {
    /* json_object_set takes its own reference; the caller keeps result. */
    bad |= json_object_set(rec, "result", o->result ? (json_t *)o->result : json_null());
  } else {
    json_t *err = json_object();
    bad |= err == NULL;
    if (err) {
      bad |= set_string(err, "type", o->error_type ? o->error_type : "TaskError");
      bad |= set_string(err, "message", o->error_message ? o->error_message : "");
      bad |= json_object_set_new(rec, "error", err);
    }
  }
  if (o->errors) bad |= json_object_set(rec, "errors", (json_t *)o->errors);
  if (o->state == CELER_RETRYING) bad |= set_time(rec, "next_run_at", o->next_run_at);
  bad |= set_time(rec, "enqueued_at", o->enqueued_at);
  bad |= set_time(rec, "started_at", o->started_at);
  bad |= set_time(rec, "finished_at", o->finished_at);
  bad |= set_string(rec, "worker", o->worker);
  if (o->entry_id) bad |= set_string(rec, "entry", o->entry_id);
  char *s = bad ? NULL : json_dumps(rec, JSON_COMPACT | JSON_PRESERVE_ORDER);
  json_decref(rec);
  if (s == NULL) return CELER_ENOMEM;
  *out = s;
  if (len) *len = strlen(s);
  return 0;
}
