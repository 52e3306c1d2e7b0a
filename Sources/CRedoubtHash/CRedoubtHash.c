#include "CRedoubtHash.h"

#include <string.h>
#if defined(__x86_64__)
#include <cpuid.h>
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

static const uint32_t IV[8] = {
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
};

#define ROTR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void portable_blocks(uint32_t h[8], const uint8_t *p, size_t blocks) {
    while (blocks--) {
        uint32_t w[64];
        for (int t = 0; t < 16; t++)
            w[t] = (uint32_t)p[4 * t] << 24 | (uint32_t)p[4 * t + 1] << 16 | (uint32_t)p[4 * t + 2] << 8 | p[4 * t + 3];
        for (int t = 16; t < 64; t++) {
            uint32_t s0 = ROTR(w[t - 15], 7) ^ ROTR(w[t - 15], 18) ^ (w[t - 15] >> 3);
            uint32_t s1 = ROTR(w[t - 2], 17) ^ ROTR(w[t - 2], 19) ^ (w[t - 2] >> 10);
            w[t] = w[t - 16] + s0 + w[t - 7] + s1;
        }
        uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], hh = h[7];
        for (int t = 0; t < 64; t++) {
            uint32_t t1 = hh + (ROTR(e, 6) ^ ROTR(e, 11) ^ ROTR(e, 25)) + ((e & f) ^ (~e & g)) + K[t] + w[t];
            uint32_t t2 = (ROTR(a, 2) ^ ROTR(a, 13) ^ ROTR(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
            hh = g; g = f; f = e; e = d + t1; d = c; c = b; b = a; a = t1 + t2;
        }
        h[0] += a; h[1] += b; h[2] += c; h[3] += d; h[4] += e; h[5] += f; h[6] += g; h[7] += hh;
        p += 64;
    }
}

#if defined(__x86_64__)
#define SHA_TARGET __attribute__((target("sha,sse4.1,ssse3")))

/* State words a..h to and from the (ABEF, CDGH) register pair SHA256RNDS2 works on. */
SHA_TARGET static inline void ni_load(const uint32_t h[8], __m128i *abef, __m128i *cdgh) {
    __m128i cdab = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)h), 0xB1);
    __m128i efgh = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)(h + 4)), 0x1B);
    *abef = _mm_alignr_epi8(cdab, efgh, 8);
    *cdgh = _mm_blend_epi16(efgh, cdab, 0xF0);
}

SHA_TARGET static inline void ni_store(uint32_t h[8], __m128i abef, __m128i cdgh) {
    __m128i feba = _mm_shuffle_epi32(abef, 0x1B);
    __m128i dchg = _mm_shuffle_epi32(cdgh, 0xB1);
    _mm_storeu_si128((__m128i *)h, _mm_blend_epi16(feba, dchg, 0xF0));
    _mm_storeu_si128((__m128i *)(h + 4), _mm_alignr_epi8(dchg, feba, 8));
}

/* Rounds 4i..4i+3 of one block at p. m holds the last four schedule groups: for i >= 4
   group i = msg2(msg1(group i-4, group i-3) + words 4i-7..4i-4, group i-1). */
#define NI_GROUP(i, m, abef, cdgh, p)                                                                  \
    do {                                                                                               \
        if ((i) < 4) {                                                                                 \
            m[(i) & 3] = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)((p) + 16 * (i))), bswap); \
        } else {                                                                                       \
            __m128i s = _mm_sha256msg1_epu32(m[(i) & 3], m[((i) + 1) & 3]);                            \
            s = _mm_add_epi32(s, _mm_alignr_epi8(m[((i) + 3) & 3], m[((i) + 2) & 3], 4));              \
            m[(i) & 3] = _mm_sha256msg2_epu32(s, m[((i) + 3) & 3]);                                    \
        }                                                                                              \
        __m128i wk = _mm_add_epi32(m[(i) & 3], _mm_loadu_si128((const __m128i *)(K + 4 * (i))));       \
        cdgh = _mm_sha256rnds2_epu32(cdgh, abef, wk);                                                  \
        abef = _mm_sha256rnds2_epu32(abef, cdgh, _mm_shuffle_epi32(wk, 0x0E));                         \
    } while (0)

SHA_TARGET static void ni_blocks(uint32_t h[8], const uint8_t *p, size_t blocks) {
    const __m128i bswap = _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL);
    __m128i abef, cdgh;
    ni_load(h, &abef, &cdgh);
    while (blocks--) {
        __m128i m[4], abef0 = abef, cdgh0 = cdgh;
#pragma clang loop unroll(full)
        for (int i = 0; i < 16; i++) NI_GROUP(i, m, abef, cdgh, p);
        abef = _mm_add_epi32(abef, abef0);
        cdgh = _mm_add_epi32(cdgh, cdgh0);
        p += 64;
    }
    ni_store(h, abef, cdgh);
}

SHA_TARGET static void ni_blocks2(uint32_t ha[8], const uint8_t *pa, uint32_t hb[8], const uint8_t *pb, size_t blocks) {
    const __m128i bswap = _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL);
    __m128i abefA, cdghA, abefB, cdghB;
    ni_load(ha, &abefA, &cdghA);
    ni_load(hb, &abefB, &cdghB);
    while (blocks--) {
        __m128i ma[4], mb[4], a0 = abefA, c0 = cdghA, b0 = abefB, d0 = cdghB;
#pragma clang loop unroll(full)
        for (int i = 0; i < 16; i++) {
            NI_GROUP(i, ma, abefA, cdghA, pa);
            NI_GROUP(i, mb, abefB, cdghB, pb);
        }
        abefA = _mm_add_epi32(abefA, a0);
        cdghA = _mm_add_epi32(cdghA, c0);
        abefB = _mm_add_epi32(abefB, b0);
        cdghB = _mm_add_epi32(cdghB, d0);
        pa += 64;
        pb += 64;
    }
    ni_store(ha, abefA, cdghA);
    ni_store(hb, abefB, cdghB);
}

static int cpu_has_sha(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return 0;
    int sha = (b >> 29) & 1;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return 0;
    return sha && (c & bit_SSE4_1) && (c & bit_SSSE3);
}
#endif

/* 0 unknown, 1 SHA extensions, 2 portable */
static int mode;

static int use_hw(void) {
    int m = __atomic_load_n(&mode, __ATOMIC_RELAXED);
    if (m == 0) {
#if defined(__x86_64__)
        m = cpu_has_sha() ? 1 : 2;
#else
        m = 2;
#endif
        __atomic_store_n(&mode, m, __ATOMIC_RELAXED);
    }
    return m == 1;
}

int redoubt_sha256_accelerated(void) { return use_hw(); }

void redoubt_sha256_set_portable(int portable) {
    __atomic_store_n(&mode, portable ? 2 : 0, __ATOMIC_RELAXED);
}

static void blocks(uint32_t h[8], const uint8_t *p, size_t n) {
#if defined(__x86_64__)
    if (use_hw()) { ni_blocks(h, p, n); return; }
#endif
    portable_blocks(h, p, n);
}

static void blocks2(uint32_t ha[8], const uint8_t *pa, uint32_t hb[8], const uint8_t *pb, size_t n) {
#if defined(__x86_64__)
    if (use_hw()) { ni_blocks2(ha, pa, hb, pb, n); return; }
#endif
    portable_blocks(ha, pa, n);
    portable_blocks(hb, pb, n);
}

void redoubt_sha256_init(redoubt_sha256_ctx *ctx) {
    memcpy(ctx->h, IV, sizeof IV);
    ctx->length = 0;
}

/* Completes a partial block from *p; afterwards the context is block-aligned or *n is 0. */
static void top_up(redoubt_sha256_ctx *ctx, const uint8_t **p, size_t *n) {
    size_t used = (size_t)(ctx->length % 64);
    if (used == 0 || *n == 0) return;
    size_t take = 64 - used < *n ? 64 - used : *n;
    memcpy(ctx->buffer + used, *p, take);
    ctx->length += take;
    *p += take;
    *n -= take;
    if (used + take == 64) blocks(ctx->h, ctx->buffer, 1);
}

/* Hashes the whole blocks of a block-aligned context's input and buffers the rest. */
static void absorb_tail(redoubt_sha256_ctx *ctx, const uint8_t *p, size_t n) {
    size_t whole = n / 64;
    if (whole) blocks(ctx->h, p, whole);
    memcpy(ctx->buffer, p + whole * 64, n % 64);
    ctx->length += n;
}

void redoubt_sha256_update(redoubt_sha256_ctx *ctx, const void *bytes, size_t count) {
    const uint8_t *p = bytes;
    top_up(ctx, &p, &count);
    if (count) absorb_tail(ctx, p, count);
}

void redoubt_sha256_update2(redoubt_sha256_ctx *a, const void *pa, size_t na,
                            redoubt_sha256_ctx *b, const void *pb, size_t nb) {
    const uint8_t *qa = pa, *qb = pb;
    top_up(a, &qa, &na);
    top_up(b, &qb, &nb);
    /* After top_up a context is block-aligned unless its input ran out (n == 0). */
    size_t common = (na / 64 < nb / 64) ? na / 64 : nb / 64;
    if (common) {
        blocks2(a->h, qa, b->h, qb, common);
        a->length += common * 64;
        b->length += common * 64;
        qa += common * 64; na -= common * 64;
        qb += common * 64; nb -= common * 64;
    }
    if (na) absorb_tail(a, qa, na);
    if (nb) absorb_tail(b, qb, nb);
}

void redoubt_sha256_final(redoubt_sha256_ctx *ctx, uint8_t digest[32]) {
    uint64_t bits = ctx->length * 8;
    size_t used = (size_t)(ctx->length % 64);
    ctx->buffer[used++] = 0x80;
    if (used > 56) {
        memset(ctx->buffer + used, 0, 64 - used);
        blocks(ctx->h, ctx->buffer, 1);
        used = 0;
    }
    memset(ctx->buffer + used, 0, 56 - used);
    for (int i = 0; i < 8; i++) ctx->buffer[56 + i] = (uint8_t)(bits >> (56 - 8 * i));
    blocks(ctx->h, ctx->buffer, 1);
    for (int i = 0; i < 8; i++) {
        digest[4 * i] = (uint8_t)(ctx->h[i] >> 24);
        digest[4 * i + 1] = (uint8_t)(ctx->h[i] >> 16);
        digest[4 * i + 2] = (uint8_t)(ctx->h[i] >> 8);
        digest[4 * i + 3] = (uint8_t)ctx->h[i];
    }
}
