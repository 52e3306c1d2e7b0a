#include "CMallocTune.h"

/* Any libc header defines __GLIBC__ on glibc (via <features.h>); test it only after one. */
#include <stdlib.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

void redoubt_tune_malloc(void) {
#ifdef __GLIBC__
    /* Why: glibc serves allocations >= 128 KiB with mmap by default; sealing or
       compressing 1 MiB chunks into fresh buffers, or building 41 MiB packs, then
       page-faults on every call. Keep them on the heap and keep freed memory. */
    mallopt(M_MMAP_THRESHOLD, 64 << 20);
    /* Keep up to 32 MiB free per arena (one pack buffer), and few arenas: NIO and the
       concurrency pool run many threads, and each arena keeps its own free memory. */
    mallopt(M_TRIM_THRESHOLD, 32 << 20);
    mallopt(M_ARENA_MAX, 4);
#endif
}
