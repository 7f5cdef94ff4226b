/* SHA-256 (FIPS 180-4), for hashing bytecode and code text inside the hook, where
 * calling hashlib would run Python code, and for sealing records in the collector
 * (auditwatch._ingest). No Python API here: both extensions compile this file. */
#include "sha256.h"

#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <cpuid.h>
#if defined(__has_include)
#if __has_include(<sys/platform/x86.h>)
#include <sys/platform/x86.h>
#endif
#endif
#include <immintrin.h>
#endif

static const uint32_t K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

#define ROR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static inline uint32_t load_be32(const unsigned char *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return __builtin_bswap32(v);
}

/* The schedule lives in a 16-word window computed as the rounds need it, and the
 * rounds are unrolled so the working variables rotate by renaming, not by moves:
 * 18 % fewer instructions than the textbook loop (callgrind, 2.4 MB of bytecode). */
#define S0(x) (ROR(x, 2) ^ ROR(x, 13) ^ ROR(x, 22))
#define S1(x) (ROR(x, 6) ^ ROR(x, 11) ^ ROR(x, 25))
#define s0(x) (ROR(x, 7) ^ ROR(x, 18) ^ ((x) >> 3))
#define s1(x) (ROR(x, 17) ^ ROR(x, 19) ^ ((x) >> 10))
#define CH(x, y, z) ((z) ^ ((x) & ((y) ^ (z))))
#define MAJ(x, y, z) (((x) & (y)) | ((z) & ((x) | (y))))
#define W(i) (w[(i) & 15] += s1(w[((i) - 2) & 15]) + w[((i) - 7) & 15] + s0(w[((i) - 15) & 15]))
#define ROUND(a, b, c, d, e, f, g, h, k, x)                                                       \
    do {                                                                                          \
        uint32_t t1 = h + S1(e) + CH(e, f, g) + (k) + (x);                                        \
        d += t1;                                                                                  \
        h = t1 + S0(a) + MAJ(a, b, c);                                                            \
    } while (0)
#define EIGHT(i, x)                                                                               \
    ROUND(a, b, cc, d, e, f, g, h, K[(i) + 0], x((i) + 0));                                       \
    ROUND(h, a, b, cc, d, e, f, g, K[(i) + 1], x((i) + 1));                                       \
    ROUND(g, h, a, b, cc, d, e, f, K[(i) + 2], x((i) + 2));                                       \
    ROUND(f, g, h, a, b, cc, d, e, K[(i) + 3], x((i) + 3));                                       \
    ROUND(e, f, g, h, a, b, cc, d, K[(i) + 4], x((i) + 4));                                       \
    ROUND(d, e, f, g, h, a, b, cc, K[(i) + 5], x((i) + 5));                                       \
    ROUND(cc, d, e, f, g, h, a, b, K[(i) + 6], x((i) + 6));                                       \
    ROUND(b, cc, d, e, f, g, h, a, K[(i) + 7], x((i) + 7))
#define FIRST(i) w[i]

static inline __attribute__((always_inline)) void compress1(aw_sha256_ctx *c,
                                                           const unsigned char *p) {
    uint32_t w[16];
    for (int i = 0; i < 16; i++)
        w[i] = load_be32(p + 4 * i);
    uint32_t a = c->h[0], b = c->h[1], cc = c->h[2], d = c->h[3];
    uint32_t e = c->h[4], f = c->h[5], g = c->h[6], h = c->h[7];
    EIGHT(0, FIRST);
    EIGHT(8, FIRST);
    EIGHT(16, W);
    EIGHT(24, W);
    EIGHT(32, W);
    EIGHT(40, W);
    EIGHT(48, W);
    EIGHT(56, W);
    c->h[0] += a, c->h[1] += b, c->h[2] += cc, c->h[3] += d;
    c->h[4] += e, c->h[5] += f, c->h[6] += g, c->h[7] += h;
}

/* The same rounds compiled a second time for x86-64 CPUs with BMI1/BMI2, picked at
 * run time: rorx rotates into a new register, so the many rotations need no copies
 * (1.3x the throughput on a Xeon without SHA extensions). */
static void compress_plain(aw_sha256_ctx *c, const unsigned char *p, size_t blocks) {
    for (; blocks; blocks--, p += 64)
        compress1(c, p);
}

#if defined(__x86_64__) && defined(__GNUC__)
__attribute__((target("bmi,bmi2"))) static void compress_bmi2(aw_sha256_ctx *c,
                                                              const unsigned char *p,
                                                              size_t blocks) {
    for (; blocks; blocks--, p += 64)
        compress1(c, p);
}
#endif

#if defined(__x86_64__) && defined(__GNUC__)
/* With the SHA extensions: sha256rnds2 does two rounds, sha256msg1/msg2 extend the
 * schedule four words at a time. The state is kept as the instructions want it, in
 * two registers: A,B,E,F and C,D,G,H (each highest word first). */
__attribute__((target("sha,sse4.1"))) static void compress_shani(aw_sha256_ctx *c,
                                                                 const unsigned char *p,
                                                                 size_t blocks) {
    const __m128i BSWAP = _mm_set_epi64x(0x0c0d0e0f08090a0bLL, 0x0405060700010203LL);
    __m128i abcd = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)&c->h[0]), 0xB1);
    __m128i efgh = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)&c->h[4]), 0x1B);
    __m128i abef = _mm_alignr_epi8(abcd, efgh, 8);
    __m128i cdgh = _mm_blend_epi16(efgh, abcd, 0xF0);
    for (; blocks; blocks--, p += 64) {
        __m128i abef0 = abef, cdgh0 = cdgh, m[4];
        for (int i = 0; i < 4; i++)
            m[i] = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(p + 16 * i)), BSWAP);
        for (int i = 0; i < 16; i++) { /* rounds 4i .. 4i+3 */
            if (i >= 4) { /* W[4i..]: m holds W[4i-16..], W[4i-12..], W[4i-8..], W[4i-4..] */
                __m128i x = _mm_sha256msg1_epu32(m[i & 3], m[(i + 1) & 3]);
                x = _mm_add_epi32(x, _mm_alignr_epi8(m[(i + 3) & 3], m[(i + 2) & 3], 4));
                m[i & 3] = _mm_sha256msg2_epu32(x, m[(i + 3) & 3]);
            }
            __m128i wk = _mm_add_epi32(m[i & 3], _mm_loadu_si128((const __m128i *)&K[4 * i]));
            cdgh = _mm_sha256rnds2_epu32(cdgh, abef, wk);
            abef = _mm_sha256rnds2_epu32(abef, cdgh, _mm_shuffle_epi32(wk, 0x0E));
        }
        abef = _mm_add_epi32(abef, abef0);
        cdgh = _mm_add_epi32(cdgh, cdgh0);
    }
    __m128i feba = _mm_shuffle_epi32(abef, 0x1B);
    __m128i dchg = _mm_shuffle_epi32(cdgh, 0xB1);
    _mm_storeu_si128((__m128i *)&c->h[0], _mm_blend_epi16(feba, dchg, 0xF0));
    _mm_storeu_si128((__m128i *)&c->h[4], _mm_alignr_epi8(dchg, feba, 8));
}

/* What the CPU offers. glibc (2.33 on) answers from what its loader found at
 * start-up; otherwise three CPUID instructions. Not __builtin_cpu_supports: libgcc's
 * version runs a dozen at load, and in a virtual machine each CPUID traps to the
 * hypervisor, some 15 us apiece on the machine of docs/performance.md. */
static void cpu_features(int *sha, int *bmi2) {
#ifdef CPU_FEATURE_ACTIVE
    *sha = CPU_FEATURE_ACTIVE(SHA) && CPU_FEATURE_ACTIVE(SSE4_1) && CPU_FEATURE_ACTIVE(SSSE3);
    *bmi2 = CPU_FEATURE_ACTIVE(BMI1) && CPU_FEATURE_ACTIVE(BMI2);
#else
    unsigned a, b, c, d;
    *sha = *bmi2 = 0;
    if (__get_cpuid_max(0, NULL) < 7)
        return;
    __cpuid(1, a, b, c, d);
    int sse = (c & bit_SSE4_1) && (c & bit_SSSE3);
    __cpuid_count(7, 0, a, b, c, d);
    *sha = sse && (b & bit_SHA);
    *bmi2 = (b & bit_BMI) && (b & bit_BMI2);
#endif
}
#endif

enum { IMPL_UNKNOWN, IMPL_PLAIN, IMPL_BMI2, IMPL_SHANI, IMPL_BMI2_SHANI };
static atomic_int impl; /* chosen once; a race only makes the same choice twice */

static int chosen(void) {
    int how = atomic_load_explicit(&impl, memory_order_relaxed);
    if (how != IMPL_UNKNOWN)
        return how;
    how = IMPL_PLAIN;
#if defined(__x86_64__) && defined(__GNUC__)
    int sha, bmi2;
    cpu_features(&sha, &bmi2);
    if (sha)
        how = bmi2 ? IMPL_BMI2_SHANI : IMPL_SHANI;
    else if (bmi2)
        how = IMPL_BMI2;
#endif
    atomic_store_explicit(&impl, how, memory_order_relaxed);
    return how;
}

/* extensions 0: the portable rounds even on a CPU with the SHA extensions (tests).
 * Returns 1 when the SHA extensions did the rounds. */
static int compress_with(aw_sha256_ctx *c, const unsigned char *p, size_t blocks,
                         int extensions) {
    int how = chosen();
#if defined(__x86_64__) && defined(__GNUC__)
    if (how >= IMPL_SHANI && extensions) {
        compress_shani(c, p, blocks);
        return 1;
    }
    if (how == IMPL_BMI2 || how == IMPL_BMI2_SHANI) {
        compress_bmi2(c, p, blocks);
        return 0;
    }
#endif
    (void)how, (void)extensions;
    compress_plain(c, p, blocks);
    return 0;
}

static void compress(aw_sha256_ctx *c, const unsigned char *p, size_t blocks) {
    compress_with(c, p, blocks, 1);
}

static const uint32_t H0[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                               0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};

void aw_sha256_init(aw_sha256_ctx *c) {
    memcpy(c->h, H0, sizeof H0);
    c->bits = 0;
    c->fill = 0;
}

void aw_sha256_update(aw_sha256_ctx *c, const void *data, size_t n) {
    if (n == 0)
        return; /* data may be NULL then */
    const unsigned char *p = (const unsigned char *)data;
    c->bits += (uint64_t)n * 8;
    if (c->fill) {
        size_t take = 64 - c->fill < n ? 64 - c->fill : n;
        memcpy(c->block + c->fill, p, take);
        c->fill += take;
        p += take;
        n -= take;
        if (c->fill < 64)
            return;
        compress(c, c->block, 1);
        c->fill = 0;
    }
    /* Whole blocks straight from the input, without a copy. */
    if (n >= 64) {
        compress(c, p, n / 64);
        p += n / 64 * 64;
        n %= 64;
    }
    if (n) {
        memcpy(c->block, p, n);
        c->fill = n;
    }
}

void aw_sha256_final(aw_sha256_ctx *c, unsigned char out[32]) {
    size_t fill = c->fill;
    c->block[fill++] = 0x80;
    if (fill > 56) { /* no room for the length: pad this block, the length goes in the next */
        memset(c->block + fill, 0, 64 - fill);
        compress(c, c->block, 1);
        fill = 0;
    }
    memset(c->block + fill, 0, 56 - fill);
    for (int i = 0; i < 8; i++)
        c->block[63 - i] = (unsigned char)(c->bits >> (8 * i));
    compress(c, c->block, 1);
    for (int i = 0; i < 8; i++) {
        out[4 * i] = (unsigned char)(c->h[i] >> 24);
        out[4 * i + 1] = (unsigned char)(c->h[i] >> 16);
        out[4 * i + 2] = (unsigned char)(c->h[i] >> 8);
        out[4 * i + 3] = (unsigned char)c->h[i];
    }
}

static int hex_with(const void *data, size_t n, char out[65], int extensions) {
    int used = 0;
    aw_sha256_ctx c;
    memcpy(c.h, H0, sizeof H0);
    c.bits = (uint64_t)n * 8;
    const unsigned char *p = (const unsigned char *)data;
    if (n >= 64) {
        used = compress_with(&c, p, n / 64, extensions);
        p += n / 64 * 64;
        n %= 64;
    }
    unsigned char tail[128];
    memset(tail, 0, sizeof tail);
    if (n)
        memcpy(tail, p, n);
    tail[n] = 0x80;
    size_t total = n + 9 <= 64 ? 64 : 128;
    for (int i = 0; i < 8; i++)
        tail[total - 1 - i] = (unsigned char)(c.bits >> (8 * i));
    used |= compress_with(&c, tail, total / 64, extensions);
    static const char X[] = "0123456789abcdef";
    for (int i = 0; i < 8; i++)
        for (int j = 0; j < 4; j++) {
            unsigned char byte = (unsigned char)(c.h[i] >> (24 - 8 * j));
            out[8 * i + 2 * j] = X[byte >> 4];
            out[8 * i + 2 * j + 1] = X[byte & 15];
        }
    out[64] = '\0';
    return used;
}

void aw_sha256_hex(const void *data, size_t n, char out[65]) { hex_with(data, n, out, 1); }

int aw_sha256_fast(void) { return chosen() >= IMPL_SHANI; }

int aw_sha256_hex_choosing(const void *data, size_t n, char out[65], int extensions) {
    return hex_with(data, n, out, extensions);
}
