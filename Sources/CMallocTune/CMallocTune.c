#include "CMallocTune.h"

#ifdef __GLIBC__
#include <malloc.h>
#endif

void redoubt_tune_malloc(void) {
#ifdef __GLIBC__
    /* Why: glibc serves allocations >= 128 KiB with mmap by default; sealing or
       compressing 1 MiB chunks into fresh buffers then page-faults on every call. */
    mallopt(M_MMAP_THRESHOLD, 64 << 20);
    mallopt(M_TRIM_THRESHOLD, 256 << 20);
#endif
}
