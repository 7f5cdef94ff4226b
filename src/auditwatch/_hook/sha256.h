/* SHA-256 (FIPS 180-4): the hook's one-shot hex digest and an incremental interface.
 *
 * Self-contained (no Python.h): sha256.c is compiled into _auditwatch and into
 * the collector's auditwatch._ingest, which must not depend on the hook's headers. */
#ifndef AW_SHA256_H
#define AW_SHA256_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint32_t h[8];
    uint64_t bits;           /* message length so far, in bits */
    unsigned char block[64]; /* a partial block waiting for more input */
    size_t fill;             /* bytes used in block */
} aw_sha256_ctx;

void aw_sha256_init(aw_sha256_ctx *c);
void aw_sha256_update(aw_sha256_ctx *c, const void *data, size_t n);
/* Writes the digest; c is spent afterwards (copy it first to continue from it). */
void aw_sha256_final(aw_sha256_ctx *c, unsigned char out[32]);

/* One shot, lower-case hex, NUL-terminated. */
void aw_sha256_hex(const void *data, size_t n, char out[65]);

/* 1 when the CPU's SHA extensions do the rounds (about four times the portable
 * rounds' speed). */
int aw_sha256_fast(void);

/* For tests, to compare the two: extensions 0 runs the portable rounds whatever the
 * CPU has. Returns 1 when the SHA extensions did the rounds. */
int aw_sha256_hex_choosing(const void *data, size_t n, char out[65], int extensions);

#endif
