#define _GNU_SOURCE
#include "CRedoubtSys.h"
#include <fcntl.h>
#include <sys/ioctl.h>
#include <linux/fs.h>

int redoubt_fs_get_flags(int fd, int *flags) { return ioctl(fd, FS_IOC_GETFLAGS, flags); }
int redoubt_fs_set_flags(int fd, int flags) { return ioctl(fd, FS_IOC_SETFLAGS, &flags); }
int redoubt_fs_immutable_fl(void) { return FS_IMMUTABLE_FL; }
int redoubt_fs_append_fl(void) { return FS_APPEND_FL; }
int redoubt_start_writeback(int fd, int64_t offset, int64_t count) {
    return sync_file_range(fd, offset, count, SYNC_FILE_RANGE_WRITE);
}

#include <sys/mtio.h>

int redoubt_mt_op(int fd, enum redoubt_mt_operation op, int count) {
    struct mtop m = { .mt_count = count };
    switch (op) {
    case REDOUBT_MT_REWIND: m.mt_op = MTREW; break;
    case REDOUBT_MT_WRITE_EOF: m.mt_op = MTWEOF; break;
    case REDOUBT_MT_UNLOAD: m.mt_op = MTOFFL; break;
    case REDOUBT_MT_SET_BLOCK: m.mt_op = MTSETBLK; break;
    default: return -1;
    }
    return ioctl(fd, MTIOCTOP, &m);
}

int redoubt_mt_get_status(int fd, redoubt_mt_status *out) {
    struct mtget g;
    if (ioctl(fd, MTIOCGET, &g) != 0) return -1;
    out->online = GMT_ONLINE(g.mt_gstat) != 0;
    out->write_protected = GMT_WR_PROT(g.mt_gstat) != 0;
    out->at_eod = GMT_EOD(g.mt_gstat) != 0;
    return 0;
}

/* CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), the block checksum of the media
   format (docs/FORMAT.md §13.2). The state is the raw register: start with 0xFFFFFFFF and
   complement the result. SSE4.2's crc32 instruction where the CPU has it (8 bytes per
   instruction), else a table. */
#include <stdint.h>
#include <string.h>

static uint32_t crc32c_table[256];
static int crc32c_table_ready;

static uint32_t crc32c_soft(uint32_t c, const uint8_t *p, size_t n) {
    if (!__atomic_load_n(&crc32c_table_ready, __ATOMIC_ACQUIRE)) {
        for (uint32_t i = 0; i < 256; i++) {
            uint32_t v = i;
            for (int k = 0; k < 8; k++) v = (v & 1) ? (v >> 1) ^ 0x82F63B78u : v >> 1;
            crc32c_table[i] = v;
        }
        __atomic_store_n(&crc32c_table_ready, 1, __ATOMIC_RELEASE);
    }
    while (n--) c = crc32c_table[(c ^ *p++) & 0xFF] ^ (c >> 8);
    return c;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2")))
static uint32_t crc32c_hw(uint32_t c, const uint8_t *p, size_t n) {
    uint64_t c64 = c;
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        c64 = __builtin_ia32_crc32di(c64, w);
        p += 8; n -= 8;
    }
    c = (uint32_t)c64;
    while (n--) c = __builtin_ia32_crc32qi(c, *p++);
    return c;
}
#endif

uint32_t redoubt_crc32c_update(uint32_t state, const void *bytes, size_t count) {
#if defined(__x86_64__)
    if (__builtin_cpu_supports("sse4.2")) return crc32c_hw(state, (const uint8_t *)bytes, count);
#endif
    return crc32c_soft(state, (const uint8_t *)bytes, count);
}
