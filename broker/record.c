/* Result records: the JSON object stored at <ns>:{q}:result:<id> (CONTRACT
 * "Results and states"). Field order is fixed so records read the same in
 * redis-cli as in docs/protocol.md. One record is written per task, so the
 * record is written straight into one buffer (jsonw.c). */
#include <stdlib.h>
#include "broker/internal.h"

/* A timestamp: ms since epoch, or null when unknown. */
static void put_time(broker_jbuf *b, int64_t ms) {
  if (ms > 0) broker_jbuf_int(b, ms);
  else BROKER_JBUF_LIT(b, "null");
}

int broker_record_encode(const broker_outcome *o, char **out, size_t *len) {
  broker_jbuf b = {NULL, 0, 0, false};
  BROKER_JBUF_LIT(&b, "{\"id\":");
  broker_jbuf_string(&b, o->id);
  BROKER_JBUF_LIT(&b, ",\"task\":");
  broker_jbuf_string(&b, o->task);
  BROKER_JBUF_LIT(&b, ",\"queue\":");
  broker_jbuf_string(&b, o->queue);
  BROKER_JBUF_LIT(&b, ",\"state\":");
  broker_jbuf_string(&b, celer_state_name(o->state));
  BROKER_JBUF_LIT(&b, ",\"attempt\":");
  broker_jbuf_int(&b, o->attempt);
  BROKER_JBUF_LIT(&b, ",\"redeliveries\":");
  broker_jbuf_int(&b, o->redeliveries);
  if (o->state == CELER_SUCCEEDED) {
    BROKER_JBUF_LIT(&b, ",\"result\":");
    broker_jbuf_json(&b, o->result);
  } else {
    BROKER_JBUF_LIT(&b, ",\"error\":{\"type\":");
    broker_jbuf_string(&b, o->error_type ? o->error_type : "TaskError");
    BROKER_JBUF_LIT(&b, ",\"message\":");
    broker_jbuf_string(&b, o->error_message ? o->error_message : "");
    BROKER_JBUF_LIT(&b, "}");
  }
  if (o->errors) {
    BROKER_JBUF_LIT(&b, ",\"errors\":");
    broker_jbuf_json(&b, o->errors);
  }
  if (o->state == CELER_RETRYING) {
    BROKER_JBUF_LIT(&b, ",\"next_run_at\":");
    put_time(&b, o->next_run_at);
  }
  BROKER_JBUF_LIT(&b, ",\"enqueued_at\":");
  put_time(&b, o->enqueued_at);
  BROKER_JBUF_LIT(&b, ",\"started_at\":");
  put_time(&b, o->started_at);
  BROKER_JBUF_LIT(&b, ",\"finished_at\":");
  put_time(&b, o->finished_at);
  BROKER_JBUF_LIT(&b, ",\"worker\":");
  broker_jbuf_string(&b, o->worker);
  if (o->entry_id) {
    BROKER_JBUF_LIT(&b, ",\"entry\":");
    broker_jbuf_string(&b, o->entry_id);
  }
  BROKER_JBUF_LIT(&b, "}");
  char *s = broker_jbuf_finish(&b, len);
  if (s == NULL) return CELER_ENOMEM;
  *out = s;
  return 0;
}
