/* test_hub.c — cv_hub_resolve against a local stand-in Hub (tests/servers/hub_server.py).
 *
 * Each test gets a fresh temporary HF_HUB_CACHE / HF_HOME and, where it needs one, its own server
 * on 127.0.0.1 (free port, read back from a file). The server writes a manifest (commits, etags,
 * file contents) and a request log (method, path, Host, Authorization, Range), which the tests
 * use to check the cache layout and what went over the wire. Servers are killed in teardown, by
 * an atexit handler, and exit by themselves when their parent process goes away. */
#define _GNU_SOURCE
#include "corevital/hub.h"
#include "corevital/log.h"

#include <check.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAXP 8192

typedef struct {
    pid_t pid;
    int port;
    char endpoint[64];
    char log[MAXP];
    cJSON *manifest;
} hub_server;

static char g_base[900]; /* temporary directory of this run, removed at exit */
static pid_t g_main_pid;
static char g_root[1024];  /* per-test temporary directory, inside g_base */
static char g_cache[1100]; /* HF_HUB_CACHE */
static char g_home[1100];  /* HF_HOME */
static hub_server g_srv;   /* the test's server (pid 0 when none) */

/* ---- process and file helpers ---------------------------------------------------------------- */

static pid_t g_started[16];
static int g_nstarted;

static void kill_started(void) {
    for (int i = 0; i < g_nstarted; i++)
        if (g_started[i] > 0) {
            kill(g_started[i], SIGKILL);
            waitpid(g_started[i], NULL, 0);
            g_started[i] = 0;
        }
    g_nstarted = 0;
}

static void server_stop(hub_server *s) {
    if (s->pid > 0) {
        kill(s->pid, SIGKILL);
        waitpid(s->pid, NULL, 0);
        for (int i = 0; i < g_nstarted; i++)
            if (g_started[i] == s->pid) g_started[i] = 0;
    }
    s->pid = 0;
    cJSON_Delete(s->manifest);
    s->manifest = NULL;
}

static char *slurp(const char *path) {
    char *text = NULL;
    cv_error err;
    return cv_read_file(path, &text, NULL, &err) == CV_OK ? text : NULL;
}

/* Start the server; `repo_dir` ("ORG/NAME=DIR", may be NULL) also serves a local directory. */
static void server_start_with(hub_server *s, const char *repo_dir) {
    char port_file[MAXP], manifest[MAXP];
    snprintf(port_file, sizeof port_file, "%s/port", g_root);
    snprintf(manifest, sizeof manifest, "%s/manifest.json", g_root);
    snprintf(s->log, sizeof s->log, "%s/requests.log", g_root);
    unlink(port_file);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        execlp("python3", "python3", "tests/servers/hub_server.py", "--port-file", port_file,
               "--manifest", manifest, "--log", s->log, "--max-seconds", "60",
               repo_dir ? "--repo-dir" : (char *)NULL, repo_dir, (char *)NULL);
        _exit(127);
    }
    s->pid = pid;
    if (g_nstarted < 16) g_started[g_nstarted++] = pid;
    char *text = NULL;
    for (int i = 0; i < 1000 && !(text = slurp(port_file)); i++) { /* up to 10 s */
        int status;
        if (waitpid(pid, &status, WNOHANG) == pid) {
            s->pid = 0;
            ck_abort_msg("hub_server.py exited early (status %d); is python3 installed?", status);
        }
        usleep(10000);
    }
    ck_assert_msg(text != NULL, "hub_server.py did not start within 10 s");
    s->port = atoi(text);
    free(text);
    ck_assert_int_gt(s->port, 0);
    snprintf(s->endpoint, sizeof s->endpoint, "http://127.0.0.1:%d", s->port);
    text = slurp(manifest);
    ck_assert_ptr_nonnull(text);
    s->manifest = cJSON_Parse(text);
    free(text);
    ck_assert_ptr_nonnull(s->manifest);
    setenv("HF_ENDPOINT", s->endpoint, 1);
}

static void server_start(hub_server *s) {
    server_start_with(s, NULL);
}

static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    return remove(path);
}

static void setup(void) {
    snprintf(g_root, sizeof g_root, "%s/test-XXXXXX", g_base);
    ck_assert_ptr_nonnull(mkdtemp(g_root));
    snprintf(g_cache, sizeof g_cache, "%s/cache", g_root);
    snprintf(g_home, sizeof g_home, "%s/home", g_root);
    mkdir(g_home, 0777);
    setenv("HF_HUB_CACHE", g_cache, 1);
    setenv("HF_HOME", g_home, 1); /* never read the developer's real token file */
    const char *unset[] = {"HF_TOKEN",
                           "HUGGING_FACE_HUB_TOKEN",
                           "HF_TOKEN_PATH",
                           "HF_HUB_OFFLINE",
                           "TRANSFORMERS_OFFLINE",
                           "HUGGINGFACE_HUB_CACHE",
                           "HF_HUB_DISABLE_IMPLICIT_TOKEN",
                           "HF_ENDPOINT"};
    for (size_t i = 0; i < sizeof unset / sizeof unset[0]; i++) unsetenv(unset[i]);
    memset(&g_srv, 0, sizeof g_srv);
}

static void teardown(void) {
    server_stop(&g_srv);
    if (g_root[0]) nftw(g_root, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    g_root[0] = '\0';
}

/* ---- manifest and request-log queries ------------------------------------------------------ */

static const char *ref_commit(const char *repo, const char *ref) {
    cJSON *r = cJSON_GetObjectItem(cJSON_GetObjectItem(g_srv.manifest, "repos"), repo);
    const char *c = cJSON_GetStringValue(cJSON_GetObjectItem(cJSON_GetObjectItem(r, "refs"), ref));
    ck_assert_msg(c != NULL, "manifest has no %s@%s", repo, ref);
    return c;
}

static cJSON *file_info(const char *repo, const char *commit, const char *file) {
    cJSON *r = cJSON_GetObjectItem(cJSON_GetObjectItem(g_srv.manifest, "repos"), repo);
    cJSON *f =
        cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetObjectItem(r, "commits"), commit), file);
    ck_assert_msg(f != NULL, "manifest has no %s@%s/%s", repo, commit, file);
    return f;
}

static const char *file_etag(const char *repo, const char *commit, const char *file) {
    return cJSON_GetStringValue(cJSON_GetObjectItem(file_info(repo, commit, file), "etag"));
}

static const char *file_content(const char *repo, const char *commit, const char *file) {
    return cJSON_GetStringValue(cJSON_GetObjectItem(file_info(repo, commit, file), "content"));
}

/* Number of logged requests with this method whose path contains `path_sub` and, when `field`
 * is given, whose `field` equals `value` (value NULL: the field is null, i.e. header absent). */
static int log_count(const char *method, const char *path_sub, const char *field,
                     const char *value) {
    char *text = slurp(g_srv.log);
    if (!text) return 0;
    int n = 0;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        cJSON *e = cJSON_Parse(line);
        const char *m = cJSON_GetStringValue(cJSON_GetObjectItem(e, "method"));
        const char *p = cJSON_GetStringValue(cJSON_GetObjectItem(e, "path"));
        int ok = m && p && (!method || strcmp(m, method) == 0) && strstr(p, path_sub);
        if (ok && field) {
            const char *v = cJSON_GetStringValue(cJSON_GetObjectItem(e, field));
            ok = value ? (v && strncmp(v, value, strlen(value)) == 0) : v == NULL;
        }
        n += ok;
        cJSON_Delete(e);
    }
    free(text);
    return n;
}

/* ---- cache helpers --------------------------------------------------------------------------- */

static void repo_path(char *out, const char *repo, const char *suffix) {
    char folder[256] = "models--";
    size_t n = strlen(folder);
    for (const char *p = repo; *p && n + 3 < sizeof folder; p++) {
        if (*p == '/') folder[n++] = '-';
        folder[n++] = *p == '/' ? '-' : *p;
    }
    folder[n] = '\0';
    snprintf(out, MAXP, "%s/%s/%s", g_cache, folder, suffix);
}

static void assert_file_text(const char *path, const char *want) {
    char *got = slurp(path);
    ck_assert_msg(got != NULL, "cannot read %s", path);
    ck_assert_msg(strcmp(got, want) == 0, "%s has unexpected content", path);
    free(got);
}

static void assert_link(const char *repo, const char *commit, const char *file,
                        const char *want_target) {
    char rel[512], path[MAXP], target[MAXP];
    snprintf(rel, sizeof rel, "snapshots/%s/%s", commit, file);
    repo_path(path, repo, rel);
    ssize_t n = readlink(path, target, sizeof target - 1);
    ck_assert_msg(n > 0, "%s is not a symlink", path);
    target[n] = '\0';
    ck_assert_str_eq(target, want_target);
}

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    ck_assert_msg(f != NULL, "cannot write %s", path);
    fputs(text, f);
    fclose(f);
}

static void mkdirs(const char *path) {
    char buf[MAXP];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++)
        if (*p == '/') {
            *p = '\0';
            mkdir(buf, 0777);
            *p = '/';
        }
    mkdir(buf, 0777);
}

static int closed_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    close(fd); /* nothing listens there now */
    return ntohs(a.sin_port);
}

static cv_status resolve(const char *model, const char *rev, cv_hub_result *r, cv_error *e) {
    memset(e, 0, sizeof *e);
    return cv_hub_resolve(model, rev, r, e);
}

/* ---- tests ------------------------------------------------------------------------------------
 */

START_TEST(test_download_from_empty_cache) {
    server_start(&g_srv);
    cv_hub_result r;
    cv_error e;
    ck_assert_msg(resolve("test/tiny", NULL, &r, &e) == CV_OK, "%s", e.msg);
    const char *commit = ref_commit("test/tiny", "main");
    ck_assert_str_eq(r.commit, commit);
    ck_assert_int_eq(r.from_network, 1);
    char want[MAXP], path[MAXP], rel[256];
    snprintf(rel, sizeof rel, "snapshots/%s", commit);
    repo_path(want, "test/tiny", rel);
    ck_assert_str_eq(r.dir, want);
    /* refs/main holds the commit, without a newline, exactly as huggingface_hub writes it */
    repo_path(path, "test/tiny", "refs/main");
    assert_file_text(path, commit);
    const char *files[] = {"config.json", "generation_config.json", "tokenizer.json",
                           "tokenizer_config.json", "model.safetensors"};
    for (size_t i = 0; i < 5; i++) {
        char target[256];
        snprintf(target, sizeof target, "../../blobs/%s", file_etag("test/tiny", commit, files[i]));
        assert_link("test/tiny", commit, files[i], target);
        snprintf(path, sizeof path, "%s/%s", r.dir, files[i]);
        assert_file_text(path, file_content("test/tiny", commit, files[i]));
    }
    /* the LFS blob is keyed by its sha256 (X-Linked-Etag), a git file by its blob sha1 (ETag) */
    ck_assert_uint_eq(strlen(file_etag("test/tiny", commit, "model.safetensors")), 64);
    ck_assert_uint_eq(strlen(file_etag("test/tiny", commit, "config.json")), 40);
    /* absent optional files are remembered like huggingface_hub does, and not linked */
    snprintf(rel, sizeof rel, ".no_exist/%s/vocab.json", commit);
    repo_path(path, "test/tiny", rel);
    ck_assert(cv_is_file(path));
    snprintf(path, sizeof path, "%s/vocab.json", r.dir);
    ck_assert(access(path, F_OK) != 0);
    /* the per-blob lock file lives in <cache>/.locks/models--ORG--NAME/<etag>.lock */
    snprintf(path, sizeof path, "%s/.locks/models--test--tiny/%s.lock", g_cache,
             file_etag("test/tiny", commit, "model.safetensors"));
    ck_assert(cv_is_file(path));
    snprintf(rel, sizeof rel, "blobs/%s.incomplete",
             file_etag("test/tiny", commit, "model.safetensors"));
    repo_path(path, "test/tiny", rel);
    ck_assert(access(path, F_OK) != 0);

    /* a second online run downloads nothing and needs one HEAD (config.json gives the commit;
     * the rest are files of a known commit, or known to be missing) */
    int before = log_count(NULL, "/", NULL, NULL);
    ck_assert_msg(resolve("test/tiny", "main", &r, &e) == CV_OK, "%s", e.msg);
    ck_assert_int_eq(r.from_network, 0);
    ck_assert_str_eq(r.dir, want);
    ck_assert_int_eq(log_count(NULL, "/", NULL, NULL) - before, 1);
}
END_TEST

START_TEST(test_offline_from_filled_cache) {
    server_start(&g_srv);
    cv_hub_result r, r2;
    cv_error e;
    ck_assert_msg(resolve("test/tiny", NULL, &r, &e) == CV_OK, "%s", e.msg);
    server_stop(&g_srv);
    setenv("HF_HUB_OFFLINE", "1", 1);
    ck_assert_msg(resolve("test/tiny", NULL, &r2, &e) == CV_OK, "%s", e.msg);
    ck_assert_str_eq(r2.dir, r.dir);
    ck_assert_str_eq(r2.commit, r.commit);
    ck_assert_int_eq(r2.from_network, 0);
    /* a revision that was never fetched is a clear error, not another snapshot */
    ck_assert_int_eq(resolve("test/tiny", "dev", &r2, &e), CV_ERR_IO);
    ck_assert_ptr_nonnull(strstr(e.msg, "HF_HUB_OFFLINE=1"));
    ck_assert_ptr_nonnull(strstr(e.msg, "revision 'dev'"));
    ck_assert_int_eq(resolve("test/other", NULL, &r2, &e), CV_ERR_IO);
    ck_assert_ptr_nonnull(strstr(e.msg, "not in the Hugging Face cache"));
    /* without HF_HUB_OFFLINE an unreachable endpoint also falls back to a complete snapshot */
    unsetenv("HF_HUB_OFFLINE");
    char endpoint[64];
    snprintf(endpoint, sizeof endpoint, "http://127.0.0.1:%d", closed_port());
    setenv("HF_ENDPOINT", endpoint, 1);
    ck_assert_msg(resolve("test/tiny", NULL, &r2, &e) == CV_OK, "%s", e.msg);
    ck_assert_str_eq(r2.dir, r.dir);
}
END_TEST

/* Lay out test/tiny@main by hand exactly as huggingface_hub does, then resolve it. */
static void lay_out_by_hand(const char *repo, const char *ref) {
    const char *commit = ref_commit(repo, ref);
    char path[MAXP], rel[512], link_target[256];
    repo_path(path, repo, "blobs");
    mkdirs(path);
    snprintf(rel, sizeof rel, "snapshots/%s", commit);
    repo_path(path, repo, rel);
    mkdirs(path);
    repo_path(path, repo, "refs");
    mkdirs(path);
    snprintf(rel, sizeof rel, "refs/%s", ref);
    repo_path(path, repo, rel);
    write_text(path, commit);
    const char *files[] = {"config.json", "generation_config.json", "tokenizer.json",
                           "tokenizer_config.json", "model.safetensors"};
    for (size_t i = 0; i < 5; i++) {
        const char *etag = file_etag(repo, commit, files[i]);
        snprintf(rel, sizeof rel, "blobs/%s", etag);
        repo_path(path, repo, rel);
        write_text(path, file_content(repo, commit, files[i]));
        snprintf(rel, sizeof rel, "snapshots/%s/%s", commit, files[i]);
        repo_path(path, repo, rel);
        snprintf(link_target, sizeof link_target, "../../blobs/%s", etag);
        ck_assert_int_eq(symlink(link_target, path), 0);
    }
}

START_TEST(test_hand_laid_cache_reused) {
    server_start(&g_srv);
    lay_out_by_hand("test/tiny", "main");
    const char *commit = ref_commit("test/tiny", "main");
    char blob[MAXP], rel[256];
    snprintf(rel, sizeof rel, "blobs/%s", file_etag("test/tiny", commit, "model.safetensors"));
    repo_path(blob, "test/tiny", rel);
    struct stat before, after;
    ck_assert_int_eq(stat(blob, &before), 0);

    cv_hub_result r;
    cv_error e;
    ck_assert_msg(resolve("test/tiny", NULL, &r, &e) == CV_OK, "%s", e.msg);
    ck_assert_str_eq(r.commit, commit);
    ck_assert_int_eq(r.from_network, 0);
    ck_assert_int_eq(log_count("GET", "/", NULL, NULL), 0);
    ck_assert_int_eq(stat(blob, &after), 0);
    ck_assert_int_eq(before.st_ino, after.st_ino);
    ck_assert_int_eq(before.st_mtime, after.st_mtime);
    snprintf(rel, sizeof rel, "snapshots/%s", commit);
    char want[MAXP];
    repo_path(want, "test/tiny", rel);
    ck_assert_str_eq(r.dir, want);

    /* offline, by branch and by commit hash */
    server_stop(&g_srv);
    setenv("HF_HUB_OFFLINE", "1", 1);
    ck_assert_msg(resolve("test/tiny", "main", &r, &e) == CV_OK, "%s", e.msg);
    ck_assert_str_eq(r.dir, want);
    char commit_copy[64];
    snprintf(commit_copy, sizeof commit_copy, "%s", r.commit);
    ck_assert_msg(resolve("test/tiny", commit_copy, &r, &e) == CV_OK, "%s", e.msg);
    ck_assert_str_eq(r.dir, want);
}
END_TEST

START_TEST(test_revision_branch_tag_commit) {
    server_start(&g_srv);
    cv_hub_result r;
    cv_error e;
    const char *dev = ref_commit("test/tiny", "dev"), *main_c = ref_commit("test/tiny", "main");
    ck_assert_str_ne(dev, main_c);
    ck_assert_msg(resolve("test/tiny", "dev", &r, &e) == CV_OK, "%s", e.msg);
    ck_assert_str_eq(r.commit, dev);
    char path[MAXP];
    snprintf(path, sizeof path, "%s/config.json", r.dir);
    assert_file_text(path, file_content("test/tiny", dev, "config.json"));
    repo_path(path, "test/tiny", "refs/dev");
    assert_file_text(path, dev);

    ck_assert_msg(resolve("test/tiny", "v1.0", &r, &e) == CV_OK, "%s", e.msg);
    ck_assert_str_eq(r.commit, main_c);
    repo_path(path, "test/tiny", "refs/v1.0");
    assert_file_text(path, main_c);

    /* a cached commit needs no request at all and writes no ref */
    int before = log_count(NULL, "/", NULL, NULL);
    char dev_copy[64];
    snprintf(dev_copy, sizeof dev_copy, "%s", dev);
    ck_assert_msg(resolve("test/tiny", dev_copy, &r, &e) == CV_OK, "%s", e.msg);
    ck_assert_str_eq(r.commit, dev);
    ck_assert_int_eq(log_count(NULL, "/", NULL, NULL), before);
    char rel[128];
    snprintf(rel, sizeof rel, "refs/%s", dev);
    repo_path(path, "test/tiny", rel);
    ck_assert(access(path, F_OK) != 0);

    /* a commit not yet cached is downloaded by hash */
    ck_assert_msg(resolve("test/sharded", ref_commit("test/sharded", "main"), &r, &e) == CV_OK,
                  "%s", e.msg);
    ck_assert_int_eq(r.from_network, 1);

    ck_assert_int_eq(resolve("test/tiny", "nope", &r, &e), CV_ERR_NET);
    ck_assert_ptr_nonnull(strstr(e.msg, "revision 'nope' of model 'test/tiny' not found"));
    ck_assert_ptr_nonnull(strstr(e.msg, "HTTP 404"));
}
END_TEST

START_TEST(test_unknown_repo_404) {
    server_start(&g_srv);
    cv_hub_result r;
    cv_error e;
    ck_assert_int_eq(resolve("test/missing", NULL, &r, &e), CV_ERR_NET);
    char want[256];
    snprintf(want, sizeof want,
             "no directory test/missing, and the Hub: model 'test/missing' not found on %s "
             "(HTTP 404)",
             g_srv.endpoint);
    ck_assert_str_eq(e.msg, want);
    ck_assert_int_eq(resolve("no/such/dir", NULL, &r, &e), CV_ERR_IO);
    ck_assert_ptr_nonnull(strstr(e.msg, "neither a local directory"));
}
END_TEST

START_TEST(test_gated_token_and_redirect_drops_auth) {
    server_start(&g_srv);
    cv_hub_result r;
    cv_error e;
    ck_assert_int_eq(resolve("test/gated", NULL, &r, &e), CV_ERR_NET);
    ck_assert_ptr_nonnull(strstr(e.msg, "HTTP 401"));
    ck_assert_ptr_nonnull(strstr(e.msg, "set HF_TOKEN"));
    char path[MAXP];
    repo_path(path, "test/gated", "snapshots");
    ck_assert(!cv_is_dir(path));

    setenv("HF_TOKEN", "hf_wrong_secret", 1);
    ck_assert_int_eq(resolve("test/gated", NULL, &r, &e), CV_ERR_NET);
    ck_assert_ptr_nonnull(strstr(e.msg, "token from HF_TOKEN"));
    ck_assert_ptr_null(strstr(e.msg, "hf_wrong_secret")); /* the token is never printed */

    const char *token = cJSON_GetStringValue(cJSON_GetObjectItem(g_srv.manifest, "token"));
    setenv("HF_TOKEN", token, 1);
    ck_assert_msg(resolve("test/gated", NULL, &r, &e) == CV_OK, "%s", e.msg);
    ck_assert_int_eq(r.from_network, 1);
    char bearer[128];
    snprintf(bearer, sizeof bearer, "Bearer %s", token);
    /* the Hub (127.0.0.1) got the token; the CDN it redirected to (localhost) did not */
    ck_assert_int_ge(log_count("GET", "/test/gated/resolve/", "authorization", bearer), 1);
    ck_assert_int_ge(log_count("GET", "/test/gated/resolve/", "host", "127.0.0.1:"), 1);
    ck_assert_int_eq(log_count("GET", "/_cdn/", "host", "localhost:"), 1);
    ck_assert_int_eq(log_count("GET", "/_cdn/", "authorization", NULL), 1);
    ck_assert_int_eq(log_count("GET", "/_cdn/", NULL, NULL), 1);
    snprintf(path, sizeof path, "%s/model.safetensors", r.dir);
    assert_file_text(path, file_content("test/gated", r.commit, "model.safetensors"));
    /* nothing in the cache holds the token */
    repo_path(path, "test/gated", "refs/main");
    assert_file_text(path, r.commit);
}
END_TEST

START_TEST(test_token_file) {
    server_start(&g_srv);
    char path[MAXP];
    snprintf(path, sizeof path, "%s/token", g_home);
    char text[128];
    snprintf(text, sizeof text, "%s\n",
             cJSON_GetStringValue(cJSON_GetObjectItem(g_srv.manifest, "token")));
    write_text(path, text);
    cv_hub_result r;
    cv_error e;
    ck_assert_msg(resolve("test/gated", NULL, &r, &e) == CV_OK, "%s", e.msg);
    setenv("HF_HUB_DISABLE_IMPLICIT_TOKEN", "1", 1);
    setenv("HF_HUB_CACHE", g_root, 1); /* a different, empty cache */
    ck_assert_int_eq(resolve("test/gated", NULL, &r, &e), CV_ERR_NET);
}
END_TEST

START_TEST(test_dropped_connection_resumes) {
    server_start(&g_srv);
    const char *commit = ref_commit("test/dropper", "main");
    const char *etag = file_etag("test/dropper", commit, "model.safetensors");
    cv_hub_result r;
    cv_error e;
    ck_assert_int_eq(resolve("test/dropper", NULL, &r, &e), CV_ERR_NET);
    ck_assert_ptr_nonnull(strstr(e.msg, "interrupted"));
    char part[MAXP], rel[256], link[MAXP];
    snprintf(rel, sizeof rel, "blobs/%s.incomplete", etag);
    repo_path(part, "test/dropper", rel);
    struct stat st;
    ck_assert_int_eq(stat(part, &st), 0);
    ck_assert_int_eq(st.st_size, 65536 / 2); /* the server sent half, then closed */
    snprintf(rel, sizeof rel, "snapshots/%s/model.safetensors", commit);
    repo_path(link, "test/dropper", rel);
    ck_assert(lstat(link, &st) != 0);

    ck_assert_msg(resolve("test/dropper", NULL, &r, &e) == CV_OK, "%s", e.msg);
    ck_assert_int_eq(log_count("GET", "/_cdn/", "range", "bytes=32768-"), 1);
    ck_assert(access(part, F_OK) != 0);
    char path[MAXP];
    snprintf(path, sizeof path, "%s/model.safetensors", r.dir);
    assert_file_text(path, file_content("test/dropper", commit, "model.safetensors"));
}
END_TEST

/* Three processes fetching the same model into one empty cache: each blob is downloaded once
 * (the others wait on its .locks file, then find it), and all three resolve the same snapshot. */
START_TEST(test_concurrent_processes_share_locks) {
    server_start(&g_srv);
    pid_t kids[3];
    for (int i = 0; i < 3; i++) {
        kids[i] = fork();
        ck_assert_int_ge(kids[i], 0);
        if (kids[i] == 0) {
            cv_hub_result r;
            cv_error e;
            _exit(resolve("test/tiny", NULL, &r, &e) == CV_OK ? 0 : 1);
        }
    }
    for (int i = 0; i < 3; i++) {
        int status = 0;
        ck_assert_int_eq(waitpid(kids[i], &status, 0), kids[i]);
        ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    ck_assert_int_eq(log_count("GET", "/_cdn/", NULL, NULL), 1);
    ck_assert_int_eq(log_count("GET", "/config.json", NULL, NULL), 1);
    cv_hub_result r;
    cv_error e;
    ck_assert_msg(resolve("test/tiny", NULL, &r, &e) == CV_OK, "%s", e.msg);
    ck_assert_int_eq(r.from_network, 0);
    char path[MAXP];
    snprintf(path, sizeof path, "%s/model.safetensors", r.dir);
    assert_file_text(path, file_content("test/tiny", r.commit, "model.safetensors"));
}
END_TEST

static void assert_not_linked(const char *repo) {
    const char *commit = ref_commit(repo, "main");
    const char *etag = file_etag(repo, commit, "model.safetensors");
    char path[MAXP], rel[256];
    struct stat st;
    snprintf(rel, sizeof rel, "blobs/%s", etag);
    repo_path(path, repo, rel);
    ck_assert(lstat(path, &st) != 0);
    snprintf(rel, sizeof rel, "blobs/%s.incomplete", etag);
    repo_path(path, repo, rel);
    ck_assert(lstat(path, &st) != 0);
    snprintf(rel, sizeof rel, "snapshots/%s/model.safetensors", commit);
    repo_path(path, repo, rel);
    ck_assert(lstat(path, &st) != 0);
}

START_TEST(test_hash_and_size_mismatch_not_linked) {
    server_start(&g_srv);
    cv_hub_result r;
    cv_error e;
    ck_assert_int_eq(resolve("test/badhash", NULL, &r, &e), CV_ERR_NET);
    ck_assert_ptr_nonnull(strstr(e.msg, "sha256"));
    ck_assert_ptr_nonnull(strstr(e.msg, "not linked"));
    assert_not_linked("test/badhash");
    ck_assert_int_eq(resolve("test/badsize", NULL, &r, &e), CV_ERR_NET);
    ck_assert_ptr_nonnull(strstr(e.msg, "expected 900 bytes, got 800"));
    assert_not_linked("test/badsize");
}
END_TEST

START_TEST(test_bin_only_unsupported) {
    server_start(&g_srv);
    cv_hub_result r;
    cv_error e;
    ck_assert_int_eq(resolve("test/binonly", NULL, &r, &e), CV_ERR_UNSUPPORTED);
    ck_assert_ptr_nonnull(strstr(e.msg, "has only PyTorch .bin (pickle) weights"));
    ck_assert_ptr_nonnull(strstr(e.msg, "safetensors"));
    ck_assert_int_eq(log_count("GET", "pytorch_model.bin", NULL, NULL), 0);
}
END_TEST

START_TEST(test_no_network) {
    char endpoint[64];
    snprintf(endpoint, sizeof endpoint, "http://127.0.0.1:%d", closed_port());
    setenv("HF_ENDPOINT", endpoint, 1);
    cv_hub_result r;
    cv_error e;
    ck_assert_int_eq(resolve("test/tiny", NULL, &r, &e), CV_ERR_NET);
    char want[128];
    snprintf(want, sizeof want, "no directory test/tiny, and the Hub: cannot reach %s: ", endpoint);
    ck_assert_msg(strncmp(e.msg, want, strlen(want)) == 0, "%s", e.msg);
    ck_assert_ptr_nonnull(strstr(e.msg, "set HF_HUB_OFFLINE=1 to use the cache only"));
}
END_TEST

START_TEST(test_sharded_index) {
    server_start(&g_srv);
    cv_hub_result r;
    cv_error e;
    ck_assert_msg(resolve("test/sharded", NULL, &r, &e) == CV_OK, "%s", e.msg);
    const char *files[] = {"model.safetensors.index.json", "model-00001-of-00002.safetensors",
                           "model-00002-of-00002.safetensors"};
    for (size_t i = 0; i < 3; i++) {
        char path[MAXP], target[256];
        snprintf(path, sizeof path, "%s/%s", r.dir, files[i]);
        assert_file_text(path, file_content("test/sharded", r.commit, files[i]));
        snprintf(target, sizeof target, "../../blobs/%s",
                 file_etag("test/sharded", r.commit, files[i]));
        assert_link("test/sharded", r.commit, files[i], target);
    }
    /* each shard is fetched once although the weight map names shard 1 twice */
    ck_assert_int_eq(log_count("GET", "model-00001-of-00002", NULL, NULL), 1);
    /* offline, the index is checked for every shard */
    char path[MAXP];
    snprintf(path, sizeof path, "%s/model-00002-of-00002.safetensors", r.dir);
    ck_assert_int_eq(unlink(path), 0);
    setenv("HF_HUB_OFFLINE", "1", 1);
    ck_assert_int_eq(resolve("test/sharded", NULL, &r, &e), CV_ERR_IO);
    ck_assert_ptr_nonnull(strstr(e.msg, "model-00002-of-00002.safetensors is missing"));
}
END_TEST

START_TEST(test_disk_full) {
    if (access("/dev/full", W_OK) != 0) return; /* Linux only */
    server_start(&g_srv);
    const char *commit = ref_commit("test/tiny", "main");
    char path[MAXP], rel[256];
    repo_path(path, "test/tiny", "blobs");
    mkdirs(path);
    /* every write into this .incomplete file fails with ENOSPC */
    snprintf(rel, sizeof rel, "blobs/%s.incomplete",
             file_etag("test/tiny", commit, "model.safetensors"));
    repo_path(path, "test/tiny", rel);
    ck_assert_int_eq(symlink("/dev/full", path), 0);
    cv_hub_result r;
    cv_error e;
    ck_assert_int_eq(resolve("test/tiny", NULL, &r, &e), CV_ERR_IO);
    ck_assert_ptr_nonnull(strstr(e.msg, "disk full"));
    snprintf(rel, sizeof rel, "snapshots/%s/model.safetensors", commit);
    repo_path(path, "test/tiny", rel);
    struct stat st;
    ck_assert(lstat(path, &st) != 0);
}
END_TEST

START_TEST(test_renamed_repo_relative_redirect) {
    server_start(&g_srv);
    cv_hub_result r;
    cv_error e;
    ck_assert_msg(resolve("test/oldname", NULL, &r, &e) == CV_OK, "%s", e.msg);
    ck_assert_str_eq(r.commit, ref_commit("test/tiny", "main"));
    ck_assert_ptr_nonnull(strstr(r.dir, "/models--test--oldname/snapshots/"));
    char path[MAXP];
    snprintf(path, sizeof path, "%s/config.json", r.dir);
    assert_file_text(path, file_content("test/tiny", r.commit, "config.json"));
}
END_TEST

/* The bundled tiny GPT-2 served as a Hub repo arrives byte for byte (binary safetensors). */
START_TEST(test_real_model_directory_served) {
    server_start_with(&g_srv, "test/gpt2-tiny=tests/fixtures/gpt2-tiny");
    cv_hub_result r;
    cv_error e;
    ck_assert_msg(resolve("test/gpt2-tiny", NULL, &r, &e) == CV_OK, "%s", e.msg);
    const char *files[] = {"config.json", "generation_config.json", "tokenizer.json",
                           "tokenizer_config.json", "model.safetensors"};
    for (size_t i = 0; i < 5; i++) {
        char got_path[MAXP], want_path[MAXP];
        snprintf(got_path, sizeof got_path, "%s/%s", r.dir, files[i]);
        snprintf(want_path, sizeof want_path, "tests/fixtures/gpt2-tiny/%s", files[i]);
        char *got = NULL, *want = NULL;
        size_t ngot = 0, nwant = 0;
        ck_assert_int_eq(cv_read_file(got_path, &got, &ngot, &e), CV_OK);
        ck_assert_int_eq(cv_read_file(want_path, &want, &nwant, &e), CV_OK);
        ck_assert_uint_eq(ngot, nwant);
        ck_assert_msg(memcmp(got, want, ngot) == 0, "%s differs from the fixture", files[i]);
        free(got);
        free(want);
    }
    char path[MAXP];
    snprintf(path, sizeof path, "%s/ref.safetensors", r.dir); /* not a file CoreVital asks for */
    ck_assert(access(path, F_OK) != 0);
}
END_TEST

START_TEST(test_local_directory_and_names) {
    cv_hub_result r;
    cv_error e;
    ck_assert_int_eq(resolve(g_root, NULL, &r, &e), CV_OK);
    ck_assert_str_eq(r.dir, g_root);
    ck_assert_str_eq(r.commit, "");
    ck_assert_int_eq(r.from_network, 0);
    ck_assert(cv_hub_valid_repo_id("gpt2"));
    ck_assert(cv_hub_valid_repo_id("google/flan-t5-small"));
    ck_assert(cv_hub_valid_repo_id("meta-llama/Llama-3.2-1B"));
    ck_assert(!cv_hub_valid_repo_id("a/b/c"));
    ck_assert(!cv_hub_valid_repo_id("../x"));
    ck_assert(!cv_hub_valid_repo_id("a--b/c"));
    ck_assert(!cv_hub_valid_repo_id("org/name.git"));
    ck_assert(!cv_hub_valid_repo_id("/abs"));
    ck_assert(!cv_hub_valid_repo_id(""));
    char dir[MAXP], home[MAXP];
    snprintf(home, sizeof home, "%s", getenv("HOME") ? getenv("HOME") : "");
    setenv("HF_HUB_CACHE", "~/hfcache", 1);
    setenv("HOME", "/home/someone", 1);
    ck_assert_int_eq(cv_hub_cache_dir(dir, sizeof dir, &e), CV_OK);
    ck_assert_str_eq(dir, "/home/someone/hfcache");
    if (home[0]) setenv("HOME", home, 1);
    unsetenv("HF_HUB_CACHE");
    setenv("HF_HOME", "/x/hf", 1);
    ck_assert_int_eq(cv_hub_cache_dir(dir, sizeof dir, &e), CV_OK);
    ck_assert_str_eq(dir, "/x/hf/hub");
    ck_assert_int_eq(resolve("test/tiny", "../../etc", &r, &e), CV_ERR_USAGE);
}
END_TEST

/* Runs at exit of the test process (or of a forked test that failed before its teardown). */
static void cleanup_at_exit(void) {
    kill_started();
    if (g_root[0]) nftw(g_root, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    if (getpid() == g_main_pid) nftw(g_base, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

int main(void) {
    cv_log_set_level(CV_LOG_ERROR);
    const char *tmp = getenv("TMPDIR");
    snprintf(g_base, sizeof g_base, "%s/cv-hub-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(g_base)) {
        perror("mkdtemp");
        return EXIT_FAILURE;
    }
    g_main_pid = getpid();
    atexit(cleanup_at_exit);
    Suite *s = suite_create("hub");
    TCase *tc = tcase_create("hub");
    tcase_set_timeout(tc, 30);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_download_from_empty_cache);
    tcase_add_test(tc, test_offline_from_filled_cache);
    tcase_add_test(tc, test_hand_laid_cache_reused);
    tcase_add_test(tc, test_revision_branch_tag_commit);
    tcase_add_test(tc, test_unknown_repo_404);
    tcase_add_test(tc, test_gated_token_and_redirect_drops_auth);
    tcase_add_test(tc, test_token_file);
    tcase_add_test(tc, test_dropped_connection_resumes);
    tcase_add_test(tc, test_concurrent_processes_share_locks);
    tcase_add_test(tc, test_hash_and_size_mismatch_not_linked);
    tcase_add_test(tc, test_bin_only_unsupported);
    tcase_add_test(tc, test_no_network);
    tcase_add_test(tc, test_sharded_index);
    tcase_add_test(tc, test_disk_full);
    tcase_add_test(tc, test_renamed_repo_relative_redirect);
    tcase_add_test(tc, test_real_model_directory_served);
    tcase_add_test(tc, test_local_directory_and_names);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    kill_started();
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
