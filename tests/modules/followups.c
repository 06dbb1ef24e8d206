/* A module for the follow-up tests (never installed).
 *   fu.spawn  kwargs n (integer), task (default "test.noop"), queue,
 *             countdown_ms, then (optional) fail or retry (true): enqueues
 *             n follow-ups, then succeeds (result: their ids), fails for
 *             good, or asks for a retry.
 *   fu.bad    asks for a follow-up with an invalid task name: the run
 *             fails with the reason.
 *   fu.target a task whose registration names a queue ("fu-home"), for
 *             the follow-ups' default queue. */
#include "celer/task.h"

static int spawn(celer_task_ctx *ctx, const json_t *args, const json_t *kwargs,
                 json_t **result) {
  int64_t n = 0, countdown = 0;
  const char *task = "test.noop", *queue = NULL;
  int fail = 0, retry = 0;
  if (celer_arg_int(ctx, kwargs, "n", &n) != 0 ||
      celer_arg_string_opt(ctx, kwargs, "task", &task) < 0 ||
      celer_arg_string_opt(ctx, kwargs, "queue", &queue) < 0 ||
      celer_arg_int_opt(ctx, kwargs, "countdown_ms", &countdown) < 0 ||
      celer_arg_bool_opt(ctx, kwargs, "fail", &fail) < 0 ||
      celer_arg_bool_opt(ctx, kwargs, "retry", &retry) < 0)
    return -1;
  json_t *ids = json_array();
  for (int64_t i = 0; i < n; i++) {
    char id[CELER_ID_MAX + 1];
    json_t *kw = json_pack("{sI}", "i", (json_int_t)i);
    celer_followup_options o = {.queue = queue, .countdown_ms = countdown};
    int rc = celer_task_enqueue(ctx, task, NULL, kw, &o, id);
    json_decref(kw);
    if (rc != 0) {
      json_decref(ids);
      return -1;
    }
    json_array_append_new(ids, json_string(id));
  }
  if (fail) {
    json_decref(ids);
    return celer_task_fail(ctx, "Planned", "failing after %lld follow-ups", (long long)n);
  }
  if (retry) {
    json_decref(ids);
    return celer_task_retry(ctx, 50, "Planned", "retrying after %lld follow-ups", (long long)n);
  }
  celer_task_log(ctx, CELER_TASK_INFO, "%lld follow-ups", (long long)n);
  *result = ids;
  return 0;
}

static int bad(celer_task_ctx *ctx, const json_t *args, const json_t *kwargs,
               json_t **result) {
  if (celer_task_enqueue(ctx, "no spaces allowed", NULL, NULL, NULL, NULL) != 0) return -1;
  return 0;
}

static int target(celer_task_ctx *ctx, const json_t *args, const json_t *kwargs,
                  json_t **result) {
  return 0;
}

static int init(celer_registry *reg) {
  if (celer_register(reg, &(celer_task_def){.name = "fu.spawn", .handler = spawn,
                                            .max_retries = 1}) != 0 ||
      celer_register(reg, &(celer_task_def){.name = "fu.bad", .handler = bad}) != 0)
    return -1;
  return celer_register(reg, &(celer_task_def){.name = "fu.target", .handler = target,
                                               .queue = "fu-home"});
}

CELER_MODULE("followups", "1.0", init);
