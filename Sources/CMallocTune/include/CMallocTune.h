#ifndef REDOUBT_CMALLOCTUNE_H
#define REDOUBT_CMALLOCTUNE_H

/// Raises glibc's mmap threshold (64 MiB) so that buffers of a few MiB allocated per chunk
/// or per pack are served from the heap and reused, instead of being mmap'ed and
/// page-faulted on every call; keeps free memory held back small (4 MiB trim threshold,
/// two arenas). Call once at start-up, before threads.
/// Does nothing on other C libraries.
void redoubt_tune_malloc(void);

#endif
