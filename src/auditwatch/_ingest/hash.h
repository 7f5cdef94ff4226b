/* The SHA-256 that seals records: OpenSSL's libcrypto when the build found it, else
 * the portable one in _hook/sha256.c.
 *
 * Sealing hashes every byte the collector stores, on the path that sets the
 * collector's throughput. libcrypto (already loaded by every Python with hashlib)
 * picks assembly for the CPU at run time; on the x86-64 development machine it takes
 * a quarter of the portable code's time (docs/performance.md). setup.py defines
 * AW_WITH_OPENSSL when its headers and library link. */
#ifndef AW_INGEST_HASH_H
#define AW_INGEST_HASH_H

#include <stddef.h>

#ifdef AW_WITH_OPENSSL
/* The one-shot SHA256_* calls are deprecated in OpenSSL 3 in favour of EVP, whose
 * per-record context copy costs more than the record's hash. They remain part of
 * the 3.x API. */
#define OPENSSL_SUPPRESS_DEPRECATED 1
#include <openssl/sha.h>

typedef SHA256_CTX aw_hash_ctx;
#define AW_HASH_IMPL "openssl"

static inline void aw_hash_init(aw_hash_ctx *c) { SHA256_Init(c); }
static inline void aw_hash_update(aw_hash_ctx *c, const void *data, size_t n) {
    SHA256_Update(c, data, n);
}
static inline void aw_hash_final(aw_hash_ctx *c, unsigned char out[32]) { SHA256_Final(out, c); }
#else
#include "../_hook/sha256.h"

typedef aw_sha256_ctx aw_hash_ctx;
#define AW_HASH_IMPL "builtin"

static inline void aw_hash_init(aw_hash_ctx *c) { aw_sha256_init(c); }
static inline void aw_hash_update(aw_hash_ctx *c, const void *data, size_t n) {
    aw_sha256_update(c, data, n);
}
static inline void aw_hash_final(aw_hash_ctx *c, unsigned char out[32]) { aw_sha256_final(c, out); }
#endif

#endif
