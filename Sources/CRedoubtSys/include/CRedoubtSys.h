#ifndef CREDOUBTSYS_H
#define CREDOUBTSYS_H
/* Thin wrappers over Linux calls that Swift cannot import (variadic ioctl), and the
   system headers Glibc's Swift module leaves out (xattrs): `import CRedoubtSys` gives
   llistxattr, lgetxattr, lsetxattr, flistxattr, fgetxattr, fsetxattr. */
#include <stdint.h>
#include <sys/types.h>
#include <sys/xattr.h>

/* FS_IOC_GETFLAGS into *flags; returns 0 or -1 with errno set. */
int redoubt_fs_get_flags(int fd, int *flags);
/* FS_IOC_SETFLAGS from flags; returns 0 or -1 with errno set. */
int redoubt_fs_set_flags(int fd, int flags);
/* FS_IMMUTABLE_FL and FS_APPEND_FL. */
int redoubt_fs_immutable_fl(void);
int redoubt_fs_append_fl(void);
/* Starts writeback of count bytes at offset without waiting for it (sync_file_range with
   SYNC_FILE_RANGE_WRITE, which Glibc's Swift module leaves out): a later fsync then waits
   only for what is still in flight. Returns 0 or -1 with errno set. */
int redoubt_start_writeback(int fd, int64_t offset, int64_t count);
/* CRC-32C register update over count bytes (start 0xFFFFFFFF, complement at the end);
   hardware-accelerated where the CPU allows. */
#include <stddef.h>
uint32_t redoubt_crc32c_update(uint32_t state, const void *bytes, size_t count);

/* Magnetic tape through the Linux st driver (<sys/mtio.h>). */
enum redoubt_mt_operation {
    REDOUBT_MT_REWIND,       /* MTREW */
    REDOUBT_MT_WRITE_EOF,    /* MTWEOF: one filemark; flushes the drive's buffer */
    REDOUBT_MT_UNLOAD,       /* MTOFFL: rewind and eject */
    REDOUBT_MT_SET_BLOCK,    /* MTSETBLK: count = block size, 0 = variable */
};
/* MTIOCTOP; 0, or -1 with errno set. */
int redoubt_mt_op(int fd, enum redoubt_mt_operation op, int count);

typedef struct {
    int online, write_protected, at_eod;
} redoubt_mt_status;
/* MTIOCGET; 0, or -1 with errno set (ENOTTY: not a tape device). */
int redoubt_mt_get_status(int fd, redoubt_mt_status *out);
#endif
