/* The key layout. Every key of a queue carries the hash tag {queue}, so one
 * queue lives in one Redis Cluster slot and its scripts touch one slot. */
#include <stdio.h>
#include "broker/broker.h"

void broker_key(char *buf, const char *ns, const char *queue, const char *part,
                const char *id) {
  snprintf(buf, BROKER_KEY_MAX + 1, "%s:{%s}:%s%s", ns, queue, part, id ? id : "");
}

void broker_queues_key(char *buf, const char *ns) {
  snprintf(buf, BROKER_KEY_MAX + 1, "%s:queues", ns);
}
