#include "CMallocTune.h"

/* Any libc header defines __GLIBC__ on glibc (via <features.h>); test it only after one. */
#include <stdlib.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

void redoubt_tune_malloc(void) {
#ifdef __GLIBC__
    /* Why: glibc serves allocations >= 128 KiB with mmap by default; sealing or
       compressing 1 MiB chunks into fresh buffers then page-faults on every call, so
       chunk-sized buffers stay on the heap. Pack-sized ones (a restore's downloads, 15 to
       17 MiB each) are mapped and unmapped: on the heap, the ones freed between live ones
       could not be trimmed, and a kernel-tree restore peaked at 185 to 188 MiB against
       171 to 175 with this threshold, in the same time (first backup: 125 to 128 MiB
       against 131 to 132, same time). */
    mallopt(M_MMAP_THRESHOLD, 4 << 20);
    /* Keep at most 4 MiB free per arena, and two arenas: NIO and the concurrency pool run
       many threads, and each arena keeps its own free memory. Pack buffers are recycled
       by the pipeline, not by malloc, so a low threshold costs no speed; measured on the
       benchmark corpus, 32 MiB and four arenas held 27 MiB more in a first backup and
       6 to 9 MiB more in a restore, for the same times. */
    mallopt(M_TRIM_THRESHOLD, 4 << 20);
    mallopt(M_ARENA_MAX, 2);
#endif
}
