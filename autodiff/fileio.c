/* fileio.c: opening input files without blocking, and replacing output files atomically without following links. */
#include "services.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* What a file that is not a regular one is, for messages. */
static const char *kind_of(mode_t m)
{
    return S_ISDIR(m)    ? "a directory"
           : S_ISFIFO(m) ? "a FIFO"
           : S_ISCHR(m)  ? "a character device"
           : S_ISBLK(m)  ? "a block device"
           : S_ISSOCK(m) ? "a socket"
           : S_ISLNK(m)  ? "a symbolic link"
                         : "not a regular file";
}

ad_status ad__open_read(const char *fn, const char *path, int *fd, uint64_t *size, char *err, size_t errlen)
{
    *fd = -1;
    struct stat sb;
    /* stat first: a FIFO or a device is refused before it is opened (opening a FIFO blocks until a
    ** writer comes; opening some devices has effects of its own) */
    if (stat(path, &sb) != 0) return ad__file_error(err, errlen, AD_ERR_IO, fn, path, "cannot open: %s", strerror(errno));
    if (!S_ISREG(sb.st_mode))
        return ad__file_error(err, errlen, AD_ERR_IO, fn, path, "%s, not a regular file", kind_of(sb.st_mode));
    /* O_NONBLOCK: should the path become a FIFO between the stat and the open, the open does not wait */
    int f = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    if (f < 0) return ad__file_error(err, errlen, AD_ERR_IO, fn, path, "cannot open: %s", strerror(errno));
    if (fstat(f, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        int e = errno;
        close(f);
        return ad__file_error(err, errlen, AD_ERR_IO, fn, path, "%s", S_ISREG(sb.st_mode) ? strerror(e) : "not a regular file");
    }
    int fl = fcntl(f, F_GETFL);
    if (fl >= 0) fcntl(f, F_SETFL, fl & ~O_NONBLOCK);
    *fd = f;
    *size = (uint64_t)sb.st_size;
    return AD_OK;
}

ad_status ad__check_target(const char *fn, const char *path, char *err, size_t errlen)
{
    struct stat sb;
    if (lstat(path, &sb) == 0) {
        if (!S_ISREG(sb.st_mode))
            return ad__file_error(err, errlen, AD_ERR_IO, fn, path, "exists and is %s; refusing to replace it",
                                  kind_of(sb.st_mode));
        return AD_OK;
    }
    if (errno != ENOENT) return ad__file_error(err, errlen, AD_ERR_IO, fn, path, "cannot stat: %s", strerror(errno));
    return AD_OK;
}

/* The directory part of path ("." when there is none) into a new string. */
static char *dir_of(const char *path)
{
    const char *slash = strrchr(path, '/');
    size_t len = !slash ? 1 : slash == path ? 1 : (size_t)(slash - path);
    char *d = ad__malloc(len + 1);
    if (!d) return NULL;
    memcpy(d, !slash ? "." : path, len);
    d[len] = '\0';
    return d;
}

ad_status ad__save_begin(ad__save *s, const char *fn, const char *path, char *err, size_t errlen)
{
    *s = (ad__save){-1, false, NULL, NULL, path, fn};
    ad_status st = ad__check_target(fn, path, err, errlen);
    if (st != AD_OK) return st;
    struct stat old;
    bool replacing = lstat(path, &old) == 0;
    size_t tl = strlen(path) + 48;
    s->tmp = ad__malloc(tl);
    s->dir = dir_of(path);
    if (!s->tmp || !s->dir) {
        ad__save_abort(s);
        return ad__file_error(err, errlen, AD_ERR_NOMEM, fn, path, "out of memory");
    }
    /* O_EXCL | O_NOFOLLOW: never an existing file, never through a link planted at the name;
    ** a name that is taken (a killed save's leftover, or a link) is passed over for the next */
    for (unsigned k = 0;; k++) {
        if (k == 0)
            snprintf(s->tmp, tl, "%s.tmp.%ld", path, (long)getpid());
        else {
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            snprintf(s->tmp, tl, "%s.tmp.%ld.%lx", path, (long)getpid(),
                     (unsigned long)((uint64_t)ts.tv_nsec * 2654435761u + k));
        }
        s->fd = open(s->tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, replacing ? 0600 : 0666);
        if (s->fd >= 0 || errno != EEXIST || k == 100) break;
    }
    if (s->fd < 0) {
        st = ad__file_error(err, errlen, AD_ERR_IO, fn, path, "open(%s): %s", s->tmp, strerror(errno));
        ad__save_abort(s); /* nothing created: nothing removed */
        return st;
    }
    s->created = true;
    /* the replaced file's permissions carry over (a 0600 checkpoint stays 0600) */
    if (replacing && fchmod(s->fd, old.st_mode & 07777) != 0) {
        int e = errno;
        ad__save_abort(s);
        return ad__file_error(err, errlen, AD_ERR_IO, fn, path, "fchmod: %s", strerror(e));
    }
    return AD_OK;
}

bool ad__write_all(int fd, const void *buf, size_t n)
{
    const unsigned char *p = buf;
    while (n > 0) {
        size_t chunk = n > (1u << 30) ? 1u << 30 : n;
        ssize_t k = write(fd, p, chunk);
        if (k < 0) {
            if (errno == EINTR) continue;
            return false;
        }
        if (k == 0) {
            errno = EIO;
            return false;
        }
        p += k;
        n -= (size_t)k;
    }
    return true;
}

ad_status ad__save_commit(ad__save *s, char *err, size_t errlen)
{
    const char *fn = s->fn, *path = s->path;
    ad_status st = AD_OK;
    if (fsync(s->fd) != 0) {
        st = ad__file_error(err, errlen, AD_ERR_IO, fn, path, "fsync(%s): %s", s->tmp, strerror(errno));
        ad__save_abort(s);
        return st;
    }
    int c = close(s->fd);
    s->fd = -1;
    if (c != 0 && errno != EINTR) {
        st = ad__file_error(err, errlen, AD_ERR_IO, fn, path, "close(%s): %s", s->tmp, strerror(errno));
        ad__save_abort(s);
        return st;
    }
    /* the target may have become something else since ad__save_begin: check again just before */
    st = ad__check_target(fn, path, err, errlen);
    if (st != AD_OK) {
        ad__save_abort(s);
        return st;
    }
    if (rename(s->tmp, path) != 0) {
        st = ad__file_error(err, errlen, AD_ERR_IO, fn, path, "rename(%s, %s): %s", s->tmp, path, strerror(errno));
        ad__save_abort(s);
        return st;
    }
    s->created = false; /* renamed: nothing to remove any more */
    int dfd = open(s->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) {
        st = ad__file_error(err, errlen, AD_ERR_IO, fn, path, "open(%s): %s", s->dir, strerror(errno));
    } else {
        /* some file systems cannot fsync a directory (EINVAL): the rename stands */
        if (fsync(dfd) != 0 && errno != EINVAL)
            st = ad__file_error(err, errlen, AD_ERR_IO, fn, path, "fsync(%s): %s", s->dir, strerror(errno));
        close(dfd);
    }
    ad__save_abort(s);
    return st;
}

void ad__save_abort(ad__save *s)
{
    int e = errno;
    if (s->fd >= 0) close(s->fd);
    s->fd = -1;
    if (s->created) unlink(s->tmp);
    s->created = false;
    ad__free(s->tmp);
    ad__free(s->dir);
    s->tmp = s->dir = NULL;
    errno = e;
}
