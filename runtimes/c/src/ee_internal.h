/*
 * Declarations shared by the harness's source files (not part of the public API in ee.h).
 *   ee_session.c  sessions: graphs, buffers, zero-copy chaining, the run loop, logging
 *   ee_litert.c   loading libLiteRt.so (dlopen) and checking its version
 *   ee_file.c     reading model files whole and checking their size and checksum
 *   ee_decide.c   the exit decision maths (no LiteRT: unit-tested on its own)
 */
#ifndef EE_INTERNAL_H
#define EE_INTERNAL_H

#include "ee.h"
#include "litert_api.h"

/* Log through params->log_fn, or to stderr (warnings and errors) when there is none. */
void ee_log(const ee_session_params *p, ee_log_level level, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

int64_t ee_now_ns(void);

/* dlopen libLiteRt.so (params->litert_path, $EE_LITERT_LIB, then the loader's search path),
 * resolve every function the harness calls and check the version. On error *dl is NULL. */
ee_status ee_litert_open(const ee_session_params *p, void **dl, ee_litert_api *api);

/* Read `path` whole into a 64-byte aligned buffer (free with free()) and check that it has
 * `expect_bytes` bytes and FNV-1a `expect_fnv1a`: EE_ERR_IO when unreadable, EE_ERR_MODEL
 * when truncated, foreign or corrupt. LiteRT does not verify a model it is handed. */
ee_status ee_read_checked(const ee_session_params *p, const char *path, size_t expect_bytes, uint64_t expect_fnv1a,
                          void **out);

#endif /* EE_INTERNAL_H */
