/* local_sink.c — the local trace file (sinks.h) and the sink dispatcher.
 *
 * Atomicity: the JSON goes to a temp file in the target directory (same filesystem), is
 * fsync'ed, then published in one step. For automatic names we publish with link(), which fails
 * with EEXIST instead of replacing a file another run created in the meantime; then the next
 * name (trace_<id8>-1.json, ...) is tried, re-serializing so that run_config.sink.target always
 * names the file it is in. Filesystems without hard links fall back to an O_EXCL placeholder
 * plus rename(). An explicit --out FILE.json is replaced with rename(). */
#define _POSIX_C_SOURCE 200809L
#include "corevital/sinks.h"
#include "corevital/log.h"
#include "corevital/remote_sinks.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_SUFFIX 1000

cv_status cv_mkdir_p(const char *path, cv_error *err) {
    char buf[4096];
    int n = snprintf(buf, sizeof buf, "%s", path);
    if (n < 0 || (size_t)n >= sizeof buf) return cv_fail(err, CV_ERR_IO, "path too long: %s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(buf, 0777) != 0 && errno != EEXIST)
            return cv_fail(err, CV_ERR_IO, "cannot create directory %s: %s", buf, strerror(errno));
        *p = '/';
    }
    if (mkdir(buf, 0777) != 0 && errno != EEXIST)
        return cv_fail(err, CV_ERR_IO, "cannot create directory %s: %s", buf, strerror(errno));
    if (!cv_is_dir(buf)) return cv_fail(err, CV_ERR_IO, "%s exists and is not a directory", buf);
    return CV_OK;
}

static void fsync_dir(const char *dir) {
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        fsync(fd); /* best effort: makes the rename durable */
        close(fd);
    }
}

/* Write data to a new temp file in dir; its path goes to tmp. */
static cv_status write_temp(const char *dir, const char *data, size_t len, char *tmp, size_t tmpsz,
                            cv_error *err) {
    int n = snprintf(tmp, tmpsz, "%s/.corevital-trace-XXXXXX", dir);
    if (n < 0 || (size_t)n >= tmpsz) return cv_fail(err, CV_ERR_IO, "path too long: %s", dir);
    int fd = mkstemp(tmp);
    if (fd < 0)
        return cv_fail(err, CV_ERR_IO, "cannot create a temporary file in %s: %s", dir,
                       strerror(errno));
    /* mkstemp makes the file 0600; a trace is as readable as any file the user creates. */
    mode_t mask = umask(0);
    umask(mask);
    (void)fchmod(fd, 0666 & ~mask);
    size_t off = 0;
    while (off < len) {
        ssize_t w = write(fd, data + off, len - off);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            int e = errno;
            close(fd);
            unlink(tmp);
            return cv_fail(err, CV_ERR_IO, "cannot write %s: %s", tmp, strerror(e));
        }
        off += (size_t)w;
    }
    if (fsync(fd) != 0 || close(fd) != 0) {
        int e = errno;
        unlink(tmp);
        return cv_fail(err, CV_ERR_IO, "cannot write %s: %s", tmp, strerror(e));
    }
    return CV_OK;
}

/* Publish tmp as path without replacing an existing file. Returns 1 on success, 0 if path
 * exists (tmp removed), -1 on error (tmp removed, err filled). */
static int publish_exclusive(const char *tmp, const char *path, cv_error *err) {
    if (link(tmp, path) == 0) {
        unlink(tmp);
        return 1;
    }
    int e = errno;
    if (e == EEXIST) {
        unlink(tmp);
        return 0;
    }
    if (e == EPERM || e == ENOSYS || e == EOPNOTSUPP || e == EMLINK || e == EXDEV) {
        int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (fd < 0) {
            e = errno;
            unlink(tmp);
            if (e == EEXIST) return 0;
            cv_fail(err, CV_ERR_IO, "cannot create %s: %s", path, strerror(e));
            return -1;
        }
        close(fd);
        if (rename(tmp, path) == 0) return 1;
        e = errno;
        unlink(path);
    }
    unlink(tmp);
    cv_fail(err, CV_ERR_IO, "cannot write %s: %s", path, strerror(e));
    return -1;
}

/* Serialize rep with sink.target = path, into a temp file in dir. */
static cv_status prepare(cv_report *rep, const char *dir, const char *path, char *tmp, size_t tmpsz,
                         cv_error *err) {
    cv_status st = cv_report_set_str(&rep->run_config.sink.target, path, err);
    if (st != CV_OK) return st;
    char *json;
    size_t len;
    st = cv_report_to_json(rep, 2, &json, &len, err);
    if (st != CV_OK) return st;
    st = write_temp(dir, json, len, tmp, tmpsz, err);
    free(json);
    return st;
}

static cv_status copy_location(char *location, size_t size, const char *path, cv_error *err) {
    if (!location) return CV_OK;
    int n = snprintf(location, size, "%s", path);
    if (n < 0 || (size_t)n >= size)
        return cv_fail(err, CV_ERR_IO, "location buffer too small for %s", path);
    return CV_OK;
}

cv_status cv_local_sink_write(const char *output_dir, const char *out_file, cv_report *rep,
                              char *location, size_t location_size, cv_error *err) {
    char tmp[4200];
    cv_status st;
    if (out_file) {
        char dircopy[4096];
        int n = snprintf(dircopy, sizeof dircopy, "%s", out_file);
        if (n < 0 || (size_t)n >= sizeof dircopy)
            return cv_fail(err, CV_ERR_IO, "path too long: %s", out_file);
        const char *dir = dirname(dircopy);
        if ((st = cv_mkdir_p(dir, err)) != CV_OK) return st;
        if ((st = prepare(rep, dir, out_file, tmp, sizeof tmp, err)) != CV_OK) return st;
        if (rename(tmp, out_file) != 0) {
            int e = errno;
            unlink(tmp);
            return cv_fail(err, CV_ERR_IO, "cannot write %s: %s", out_file, strerror(e));
        }
        fsync_dir(dir);
        return copy_location(location, location_size, out_file, err);
    }

    if (!output_dir || !*output_dir) output_dir = ".";
    if ((st = cv_mkdir_p(output_dir, err)) != CV_OK) return st;
    for (int k = 0; k < MAX_SUFFIX; k++) {
        char name[64], path[4096];
        if (k == 0)
            snprintf(name, sizeof name, "trace_%.8s.json", rep->trace_id);
        else
            snprintf(name, sizeof name, "trace_%.8s-%d.json", rep->trace_id, k);
        if ((st = cv_path_join(path, sizeof path, output_dir, name, err)) != CV_OK) return st;
        struct stat sb;
        if (lstat(path, &sb) == 0) continue; /* taken: never clobber another run's trace */
        if ((st = prepare(rep, output_dir, path, tmp, sizeof tmp, err)) != CV_OK) return st;
        int r = publish_exclusive(tmp, path, err);
        if (r < 0) return err ? err->code : CV_ERR_IO;
        if (r == 0) continue; /* lost a race with another writer */
        fsync_dir(output_dir);
        return copy_location(location, location_size, path, err);
    }
    return cv_fail(err, CV_ERR_IO, "%s: trace_%.8s.json and %d alternatives already exist",
                   output_dir, rep->trace_id, MAX_SUFFIX - 1);
}

cv_status cv_sinks_write(const cv_config *cfg, cv_report *rep, char *location, size_t location_size,
                         cv_error *err) {
    cv_status st =
        cv_local_sink_write(cfg->sink.output_dir, cfg->out_path, rep, location, location_size, err);
    if (st != CV_OK) return st;
    if (!cfg->sink.type || strcmp(cfg->sink.type, "local_file") == 0) return CV_OK;
    /* The local trace is safe on disk; a remote failure only adds a warning to it. */
    cv_remote_opts ro;
    cv_error rerr = {0};
    char *json = NULL, remote[2048];
    cv_status rs = cv_remote_opts_from_config(cfg, &ro, &rerr);
    if (rs == CV_OK) rs = cv_read_file(location, &json, NULL, &rerr);
    if (rs == CV_OK) rs = cv_remote_send(&ro, json, NULL, remote, sizeof remote, &rerr);
    free(json);
    if (rs == CV_OK) {
        CV_INFO("Remote sink %s: delivered to %s", cfg->sink.type, remote);
        return CV_OK;
    }
    CV_WARN("remote sink %s failed: %s (the local trace is kept)", cfg->sink.type, rerr.msg);
    if (cv_report_add_warning(rep, "SINK_FAILED", "remote sink %s failed: %s", cfg->sink.type,
                              rerr.msg) == CV_OK) {
        char again[4096];
        snprintf(again, sizeof again, "%s", location);
        cv_local_sink_write(NULL, again, rep, location, location_size, err);
    }
    return CV_OK;
}

cv_status cv_remote_opts_from_config(const cv_config *cfg, cv_remote_opts *ro, cv_error *err) {
    memset(ro, 0, sizeof *ro);
    if (cv_remote_kind_parse(cfg->sink.type, &ro->kind) != 0)
        return cv_fail(err, CV_ERR_USAGE, "unknown sink type '%s'", cfg->sink.type);
    ro->url = cfg->sink.remote_url;
    ro->textfile_path = cfg->sink.prometheus_textfile;
    ro->gzip = cfg->sink.http_gzip;
    return CV_OK;
}
