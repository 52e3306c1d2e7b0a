#ifndef CREDOUBTHASH_H
#define CREDOUBTHASH_H
/* SHA-256 (FIPS 180-4) with a two-message form. Pure: no I/O, no allocation.

   Why our own: SHA-256 bounds the write path (every byte is hashed twice: the keyed
   chunk ID over the plaintext and the pack ID over the sealed pack). With the x86 SHA
   extensions one message is limited by SHA256RNDS2's latency; hashing two independent
   messages in one loop fills some of the idle cycles (measured here: 1.44 GB/s for one,
   1.47-1.76 GB/s for two together; the round and shuffle instructions share a port).
   swift-crypto offers no such call.
   Callers check redoubt_sha256_accelerated() and use swift-crypto where it is 0: the
   portable code here is a reference for tests, not a fast path. */
#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint32_t h[8];
    uint64_t length;     /* bytes absorbed so far */
    uint8_t buffer[64];  /* the partial block: length % 64 bytes */
} redoubt_sha256_ctx;

/* 1 when the SHA extensions are used (and not disabled), else 0. */
int redoubt_sha256_accelerated(void);
/* Tests: 1 forces the portable code, 0 restores the CPU check. */
void redoubt_sha256_set_portable(int portable);

void redoubt_sha256_init(redoubt_sha256_ctx *ctx);
void redoubt_sha256_update(redoubt_sha256_ctx *ctx, const void *bytes, size_t count);
/* Same result as updating a with pa and b with pb one after the other; the blocks the
   two have in common are hashed together. a and b must be distinct contexts. */
void redoubt_sha256_update2(redoubt_sha256_ctx *a, const void *pa, size_t na,
                            redoubt_sha256_ctx *b, const void *pb, size_t nb);
/* Pads, writes the 32-byte digest; ctx must be initialised again before reuse. */
void redoubt_sha256_final(redoubt_sha256_ctx *ctx, uint8_t digest[32]);
#endif
