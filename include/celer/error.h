/* Celer error convention: every fallible function returns 0 (CELER_OK) or
 * one of the negative CELER_E* codes below. Objects that own a broker
 * connection also keep a human-readable message (see celer_client_errstr). */
#ifndef CELER_ERROR_H
#define CELER_ERROR_H

#if defined(CELER_BUILDING_LIBRARY) || defined(CELER_EXPORTING)
#define CELER_API __attribute__((visibility("default")))
#else
#define CELER_API
#endif

/* Size of every error-message buffer Celer fills in, terminator included. */
#define CELER_ERRSTR_LEN 256

enum {
  CELER_OK = 0,
  CELER_EINVAL = -1,     /* invalid argument or malformed input */
  CELER_ENOMEM = -2,     /* out of memory */
  CELER_ECONNECT = -3,   /* broker unreachable or the connection broke */
  CELER_EAUTH = -4,      /* broker refused authentication or the database */
  CELER_EPROTO = -5,     /* broker answered something unexpected */
  CELER_ENOTFOUND = -6,  /* no such task, record or queue */
  CELER_ETIMEDOUT = -7,  /* a deadline passed */
  CELER_ETOOBIG = -8,    /* a value is over a configured limit */
  CELER_EIO = -9,        /* local file I/O failed */
  CELER_ESCRIPT = -10,   /* a broker script failed */
};

/* Returns a static, constant sentence for a CELER_E* code. */
CELER_API const char *celer_strerror(int code);

#endif
