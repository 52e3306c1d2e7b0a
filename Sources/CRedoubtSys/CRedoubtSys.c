#include "CRedoubtSys.h"
#include <sys/ioctl.h>
#include <linux/fs.h>

int redoubt_fs_get_flags(int fd, int *flags) { return ioctl(fd, FS_IOC_GETFLAGS, flags); }
int redoubt_fs_set_flags(int fd, int flags) { return ioctl(fd, FS_IOC_SETFLAGS, &flags); }
int redoubt_fs_immutable_fl(void) { return FS_IMMUTABLE_FL; }
int redoubt_fs_append_fl(void) { return FS_APPEND_FL; }
