/* test_remote_sinks.c — the HTTP, Prometheus and Datadog sinks against real local servers:
 * tests/servers/sink_server.py (HTTP and Datadog; it validates payloads and injects 500s, 404s,
 * slow answers and dropped connections) and a Prometheus Pushgateway started with
 * tests/servers/start_pushgateway.sh (pushed metrics are read back from the gateway's /metrics).
 * The servers are started once per run on 127.0.0.1 and killed at the end, at exit, and (through
 * PR_SET_PDEATHSIG and the Python server's own timer) when this process dies. A missing
 * Pushgateway binary makes the Pushgateway tests fail with a message saying how to install it. */
#define _GNU_SOURCE
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <dirent.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <curl/curl.h>

#include "corevital/common.h"
#include "corevital/log.h"
#include "corevital/remote_sinks.h"
#include "sinks/remote_internal.h"

#define FIXTURE         "tests/fixtures/traces/sample_trace.json"
#define TRACE_ID        "3f2c9a1e-8b7d-4c6e-9f10-2a4b6c8d0e1f"
#define TEST_TOKEN      "tok-Secret-7f3a9c21"
#define TEST_DD_KEY     "ddkey-0123456789abcdef"
#define CREATED_EPOCH_S 1795687200.0 /* 2026-11-26T10:00:00Z */

/* ------------------------------------------------------------------ servers */

typedef struct {
    pid_t pid;
    int port;
    int out_fd;      /* read end of its stdout, kept open so a late write cannot SIGPIPE it */
    char error[512]; /* why it could not be started, or "" */
} server;

static server sink_srv, gateway;
static pid_t owner_pid; /* the process that started the servers */

static void stop_server(server *s) {
    if (s->out_fd > 0) close(s->out_fd);
    s->out_fd = 0;
    if (s->pid <= 0) return;
    kill(s->pid, SIGTERM);
    for (int i = 0; i < 100; i++) { /* up to 1 s, then SIGKILL */
        if (waitpid(s->pid, NULL, WNOHANG) == s->pid) {
            s->pid = 0;
            return;
        }
        usleep(10000);
    }
    kill(s->pid, SIGKILL);
    waitpid(s->pid, NULL, 0);
    s->pid = 0;
}

static void stop_all(void) {
    /* Check forks a child per test and children inherit atexit handlers: only the owner stops. */
    if (getpid() != owner_pid) return;
    stop_server(&sink_srv);
    stop_server(&gateway);
}

/* Start argv with stdout on a pipe; read "PORT <n>" from it (10 s at most). */
static int spawn_server(server *s, char *const argv[]) {
    int fds[2];
    s->pid = 0;
    s->port = 0;
    s->error[0] = '\0';
    if (pipe(fds) != 0) {
        snprintf(s->error, sizeof s->error, "pipe: %s", strerror(errno));
        return -1;
    }
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        snprintf(s->error, sizeof s->error, "fork: %s", strerror(errno));
        close(fds[0]);
        close(fds[1]);
        return -1;
    }
    if (pid == 0) {
        /* Die with the test process, whatever way it ends. */
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != parent) _exit(126);
        dup2(fds[1], STDOUT_FILENO);
        close(fds[0]);
        close(fds[1]);
        if (!getenv("SINK_TEST_VERBOSE")) {
            int devnull = open("/dev/null", O_WRONLY);
            /* keep stderr for start_pushgateway.sh's "not found" message: exit code 127 says it */
            if (devnull >= 0 && strstr(argv[0], "python")) dup2(devnull, STDERR_FILENO);
            if (devnull >= 0) close(devnull);
        }
        setenv("SINK_SERVER_EXPECT_TOKEN", TEST_TOKEN, 1);
        setenv("SINK_SERVER_DD_API_KEY", TEST_DD_KEY, 1);
        execvp(argv[0], argv);
        _exit(127);
    }
    close(fds[1]);
    s->pid = pid;
    char line[128];
    size_t len = 0;
    double deadline = cv_now_ms() + 10000;
    while (len + 1 < sizeof line && cv_now_ms() < deadline) {
        struct pollfd p = {fds[0], POLLIN, 0};
        if (poll(&p, 1, 100) <= 0) continue;
        ssize_t n = read(fds[0], line + len, 1);
        if (n <= 0) break;
        if (line[len] == '\n') break;
        len++;
    }
    line[len] = '\0';
    s->out_fd = fds[0];
    if (sscanf(line, "PORT %d", &s->port) != 1 || s->port <= 0) {
        /* Did it exit? 127 means the program (or the Pushgateway binary) is missing. */
        int status = 0, exited = 0;
        for (int i = 0; i < 100 && !exited; i++) {
            exited = waitpid(pid, &status, WNOHANG) == pid;
            if (!exited) usleep(10000);
        }
        if (!exited) stop_server(s);
        if (s->out_fd > 0) close(s->out_fd);
        s->out_fd = 0;
        s->pid = 0;
        s->port = 0;
        if (exited && WIFEXITED(status) && WEXITSTATUS(status) == 127)
            snprintf(s->error, sizeof s->error,
                     "%s %s exited with 127 (program not found): for the Pushgateway run "
                     "'apt-get install -y prometheus-pushgateway' or set PUSHGATEWAY_BIN",
                     argv[0], argv[1] ? argv[1] : "");
        else
            snprintf(s->error, sizeof s->error, "%s %s did not report its port (got '%s')", argv[0],
                     argv[1] ? argv[1] : "", line);
        return -1;
    }
    return 0;
}

/* GET url; returns the HTTP status (0 on failure); *body gets the malloc'd answer. */
static size_t collect(char *data, size_t size, size_t nmemb, void *userp) {
    char **buf = userp;
    size_t old = *buf ? strlen(*buf) : 0, n = size * nmemb;
    char *b = realloc(*buf, old + n + 1);
    if (!b) return 0;
    memcpy(b + old, data, n);
    b[old + n] = '\0';
    *buf = b;
    return n;
}

static long http_get(const char *url, char **body) {
    *body = NULL;
    CURL *c = curl_easy_init();
    if (!c) return 0;
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, body);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 3000L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    long status = 0;
    if (curl_easy_perform(c) == CURLE_OK) curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(c);
    return status;
}

static void start_gateway(void) {
    for (int attempt = 0; attempt < 3; attempt++) {
        char *argv[] = {"sh", "tests/servers/start_pushgateway.sh", NULL};
        if (spawn_server(&gateway, argv) != 0) return;
        char url[128];
        snprintf(url, sizeof url, "http://127.0.0.1:%d/-/ready", gateway.port);
        double deadline = cv_now_ms() + 8000;
        while (cv_now_ms() < deadline) {
            int status;
            if (waitpid(gateway.pid, &status, WNOHANG) == gateway.pid) {
                gateway.pid = 0;
                if (WIFEXITED(status) && WEXITSTATUS(status) == 127) {
                    snprintf(gateway.error, sizeof gateway.error,
                             "prometheus-pushgateway is not installed (apt-get install -y "
                             "prometheus-pushgateway, or set PUSHGATEWAY_BIN)");
                    return;
                }
                break; /* probably lost the port race: try again */
            }
            char *body = NULL;
            long st = http_get(url, &body);
            free(body);
            if (st == 200) return;
            usleep(50000);
        }
        stop_server(&gateway);
        snprintf(gateway.error, sizeof gateway.error,
                 "the Pushgateway did not become ready on 127.0.0.1:%d", gateway.port);
    }
}

static void servers_up(void) {
    curl_global_init(CURL_GLOBAL_DEFAULT);
    /* Local servers must never be reached through a proxy configured in the environment. */
    setenv("NO_PROXY", "127.0.0.1,localhost", 1);
    setenv("no_proxy", "127.0.0.1,localhost", 1);
    owner_pid = getpid();
    char *argv[] = {"python3", "tests/servers/sink_server.py", "--max-seconds", "120", NULL};
    spawn_server(&sink_srv, argv);
    start_gateway();
    atexit(stop_all);
}

static void servers_down(void) {
    stop_all();
}

#define REQUIRE_SINK_SERVER()                                                                      \
    ck_assert_msg(sink_srv.port > 0, "sink_server.py is not running: %s", sink_srv.error)
#define REQUIRE_GATEWAY()                                                                          \
    ck_assert_msg(gateway.port > 0 && gateway.pid > 0, "Pushgateway: %s", gateway.error)

/* ------------------------------------------------------------------ helpers */

/* Where scratch files go: $TMPDIR, else the system's temporary directory. */
static const char *tmp_base(void) {
    const char *t = getenv("TMPDIR");
    return t && t[0] ? t : P_tmpdir;
}

static char *trace_text;
static cJSON *trace_tree;

static void load_trace(void) {
    cv_error err = {0};
    ck_assert_msg(cv_read_file(FIXTURE, &trace_text, NULL, &err) == CV_OK, "%s", err.msg);
    trace_tree = cJSON_Parse(trace_text);
    ck_assert_msg(trace_tree != NULL, "%s does not parse", FIXTURE);
}

/* Per-test: a clean environment and a fresh copy of the fixture. */
static void setup(void) {
    unsetenv("DD_API_KEY");
    unsetenv("DD_SITE");
    unsetenv("COREVITAL_DATADOG_URL");
    unsetenv("COREVITAL_SINK_TOKEN");
    unsetenv("MY_SINK_TOKEN");
    cv_log_set_level(CV_LOG_ERROR); /* retry warnings would clutter the test output */
    load_trace();
}

static void teardown(void) {
    cJSON_Delete(trace_tree);
    free(trace_text);
    trace_tree = NULL;
    trace_text = NULL;
}

static cv_remote_opts fast_opts(cv_remote_kind kind, const char *url) {
    cv_remote_opts o;
    memset(&o, 0, sizeof o);
    o.kind = kind;
    o.url = url;
    o.connect_timeout_ms = 2000;
    o.total_timeout_ms = 5000;
    o.max_retries = 3;
    o.backoff_ms = 20;
    return o;
}

static void sink_url(char *out, size_t n, const char *path) {
    snprintf(out, n, "http://127.0.0.1:%d%s", sink_srv.port, path);
}

/* The records sink_server.py kept for a path prefix (a JSON array; caller deletes). */
static cJSON *records(const char *path) {
    char url[512], *body = NULL;
    snprintf(url, sizeof url, "http://127.0.0.1:%d/_requests%s", sink_srv.port, path);
    long st = http_get(url, &body);
    ck_assert_msg(st == 200, "GET %s answered %ld", url, st);
    cJSON *j = cJSON_Parse(body);
    free(body);
    ck_assert(cJSON_IsArray(j));
    return j;
}

static const char *rec_str(const cJSON *rec, const char *key) {
    const char *s = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(rec, key));
    ck_assert_msg(s != NULL, "record has no string '%s'", key);
    return s;
}

static int rec_true(const cJSON *rec, const char *key) {
    return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(rec, key));
}

static void assert_no_problems(const cJSON *rec) {
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(rec, "problems");
    ck_assert(cJSON_IsArray(p));
    if (cJSON_GetArraySize(p) > 0) {
        char *s = cJSON_PrintUnformatted(p);
        ck_abort_msg("server found problems: %.600s", s);
    }
}

/* 1 if text has a line exactly equal to line. */
static int has_line(const char *text, const char *line) {
    size_t n = strlen(line);
    for (const char *p = text; (p = strstr(p, line)) != NULL; p++)
        if ((p == text || p[-1] == '\n') && (p[n] == '\n' || p[n] == '\0')) return 1;
    return 0;
}

/* Find a sample of family name whose line contains every label in labels (NULL-terminated,
 * each written as name="value"); returns 1 and its value. */
static int find_sample(const char *text, const char *name, const char *const *labels,
                       double *value) {
    size_t nl = strlen(name);
    for (const char *line = text; line && *line;) {
        const char *end = strchr(line, '\n');
        size_t len = end ? (size_t)(end - line) : strlen(line);
        if (len > nl && strncmp(line, name, nl) == 0 && line[nl] == '{') {
            char buf[2048];
            if (len >= sizeof buf) len = sizeof buf - 1;
            memcpy(buf, line, len);
            buf[len] = '\0';
            int all = 1;
            for (const char *const *l = labels; *l; l++) {
                char want[512];
                snprintf(want, sizeof want, "%s", *l);
                /* a label is preceded by '{' or ',' and followed by ',' or '}' */
                char *hit = strstr(buf, want);
                if (!hit || (hit[-1] != '{' && hit[-1] != ',') ||
                    (hit[strlen(want)] != ',' && hit[strlen(want)] != '}'))
                    all = 0;
            }
            const char *close = strrchr(buf, '}');
            if (all && close) {
                *value = strtod(close + 1, NULL);
                return 1;
            }
        }
        line = end ? end + 1 : NULL;
    }
    return 0;
}

static double sample_or_nan(const char *text, const char *name, const char *stat) {
    const char *labels[] = {"model=\"gpt2\"", "device=\"cpu\"", "trace_id=\"" TRACE_ID "\"", stat,
                            NULL};
    if (!stat) labels[3] = NULL;
    double v;
    return find_sample(text, name, labels, &v) ? v : NAN;
}

/* ------------------------------------------------------------------ parsing and validation */

START_TEST(test_kind_parse) {
    cv_remote_kind k = CV_REMOTE_HTTP;
    ck_assert_int_eq(cv_remote_kind_parse("none", &k), 0);
    ck_assert_int_eq(k, CV_REMOTE_NONE);
    ck_assert_int_eq(cv_remote_kind_parse("http", &k), 0);
    ck_assert_int_eq(k, CV_REMOTE_HTTP);
    ck_assert_int_eq(cv_remote_kind_parse("prometheus", &k), 0);
    ck_assert_int_eq(k, CV_REMOTE_PROMETHEUS);
    ck_assert_int_eq(cv_remote_kind_parse("datadog", &k), 0);
    ck_assert_int_eq(k, CV_REMOTE_DATADOG);
    ck_assert_int_eq(cv_remote_kind_parse("HTTP", &k), -1);
    ck_assert_int_eq(cv_remote_kind_parse("statsd", &k), -1);
    ck_assert_int_eq(cv_remote_kind_parse("", &k), -1);
    ck_assert_int_eq(cv_remote_kind_parse(NULL, &k), -1);
    ck_assert_str_eq(cv_remote_kind_name(CV_REMOTE_PROMETHEUS), "prometheus");
}
END_TEST

START_TEST(test_validate) {
    cv_error err = {0};
    cv_remote_opts o = fast_opts(CV_REMOTE_NONE, NULL);
    ck_assert_int_eq(cv_remote_validate(&o, &err), CV_OK);

    o = fast_opts(CV_REMOTE_HTTP, NULL);
    ck_assert_int_eq(cv_remote_validate(&o, &err), CV_ERR_USAGE);
    ck_assert_msg(strstr(err.msg, "--remote_url") != NULL, "%s", err.msg);
    o.url = "";
    ck_assert_int_eq(cv_remote_validate(&o, &err), CV_ERR_USAGE);
    o.url = "ftp://example.com/x";
    ck_assert_int_eq(cv_remote_validate(&o, &err), CV_ERR_USAGE);
    o.url = "http://";
    ck_assert_int_eq(cv_remote_validate(&o, &err), CV_ERR_USAGE);
    o.url = "http://exa mple.com/x";
    ck_assert_int_eq(cv_remote_validate(&o, &err), CV_ERR_USAGE);
    o.url = "http://example.com:99999/x";
    ck_assert_int_eq(cv_remote_validate(&o, &err), CV_ERR_USAGE);
    o.url = "https://collector.example.com/traces";
    ck_assert_int_eq(cv_remote_validate(&o, &err), CV_OK);

    o = fast_opts(CV_REMOTE_PROMETHEUS, NULL);
    ck_assert_int_eq(cv_remote_validate(&o, &err), CV_ERR_USAGE);
    ck_assert_msg(strstr(err.msg, "Pushgateway") != NULL, "%s", err.msg);
    o.textfile_path = "metrics/corevital.prom";
    ck_assert_int_eq(cv_remote_validate(&o, &err), CV_OK);
    o.url = "localhost:9091";
    ck_assert_int_eq(cv_remote_validate(&o, &err), CV_ERR_USAGE);
    o.url = "http://localhost:9091";
    ck_assert_int_eq(cv_remote_validate(&o, &err), CV_OK);

    o = fast_opts(CV_REMOTE_DATADOG, NULL);
    ck_assert_int_eq(cv_remote_validate(&o, &err), CV_ERR_CONFIG);
    ck_assert_msg(strstr(err.msg, "DD_API_KEY") != NULL, "%s", err.msg);
    setenv("DD_API_KEY", "", 1);
    ck_assert_int_eq(cv_remote_validate(&o, &err), CV_ERR_CONFIG);
    setenv("DD_API_KEY", TEST_DD_KEY, 1);
    ck_assert_int_eq(cv_remote_validate(&o, &err), CV_OK);
    setenv("DD_SITE", "datadoghq.eu", 1);
    ck_assert_int_eq(cv_remote_validate(&o, &err), CV_OK);
    setenv("DD_SITE", "https://api.datadoghq.com", 1);
    ck_assert_int_eq(cv_remote_validate(&o, &err), CV_ERR_CONFIG);
    ck_assert_msg(strstr(err.msg, "DD_SITE") != NULL, "%s", err.msg);
    ck_assert_msg(strstr(err.msg, TEST_DD_KEY) == NULL, "API key leaked: %s", err.msg);
    unsetenv("DD_SITE");
    setenv("COREVITAL_DATADOG_URL", "127.0.0.1:1234", 1);
    ck_assert_int_eq(cv_remote_validate(&o, &err), CV_ERR_CONFIG);
    ck_assert_msg(strstr(err.msg, "COREVITAL_DATADOG_URL") != NULL, "%s", err.msg);
}
END_TEST

/* ------------------------------------------------------------------ rendering */

START_TEST(test_prometheus_render_values) {
    char *text = cv_prometheus_render(trace_tree);
    ck_assert_ptr_nonnull(text);
    /* Values worked out by hand from the fixture. */
    ck_assert_msg(has_line(text, "# TYPE corevital_logits_entropy_nats gauge"), "%.400s", text);
    ck_assert(has_line(text,
                       "corevital_prompt_tokens{model=\"gpt2\",device=\"cpu\",trace_id=\"" TRACE_ID
                       "\"} 3"));
    ck_assert(has_line(
        text,
        "corevital_generated_tokens{model=\"gpt2\",device=\"cpu\",trace_id=\"" TRACE_ID "\"} 2"));
    ck_assert(has_line(
        text, "corevital_total_steps{model=\"gpt2\",device=\"cpu\",trace_id=\"" TRACE_ID "\"} 5"));
    ck_assert_double_eq(sample_or_nan(text, "corevital_generation_elapsed_seconds", NULL), 0.125);
    ck_assert_double_eq(sample_or_nan(text, "corevital_run_created_timestamp_seconds", NULL),
                        CREATED_EPOCH_S);
    ck_assert_double_eq(sample_or_nan(text, "corevital_trace_warnings", NULL), 1);
    ck_assert(has_line(
        text, "corevital_logits_entropy_nats{model=\"gpt2\",device=\"cpu\",trace_id=\"" TRACE_ID
              "\",stat=\"mean\"} 2.5"));
    ck_assert_double_eq(sample_or_nan(text, "corevital_logits_entropy_nats", "stat=\"min\""), 2.0);
    ck_assert_double_eq(sample_or_nan(text, "corevital_logits_entropy_nats", "stat=\"max\""), 3.0);
    ck_assert_double_eq(
        sample_or_nan(text, "corevital_logits_top1_top2_margin_ratio", "stat=\"mean\""), 0.375);
    /* The null entropy_mean of step 1, layer 1 is skipped: (0.5 + 1.5 + 1.0) / 3. */
    ck_assert_double_eq(sample_or_nan(text, "corevital_attention_entropy_nats", "stat=\"mean\""),
                        1.0);
    ck_assert_double_eq(sample_or_nan(text, "corevital_attention_entropy_nats", "stat=\"min\""),
                        0.5);
    ck_assert_double_eq(sample_or_nan(text, "corevital_attention_entropy_nats", "stat=\"max\""),
                        1.5);
    ck_assert_double_eq(
        sample_or_nan(text, "corevital_attention_concentration_ratio", "stat=\"mean\""), 0.625);
    ck_assert_double_eq(
        sample_or_nan(text, "corevital_attention_concentration_ratio", "stat=\"min\""), 0.25);
    ck_assert_double_eq(sample_or_nan(text, "corevital_hidden_std", "stat=\"mean\""), 2.125);
    ck_assert_double_eq(sample_or_nan(text, "corevital_hidden_std", "stat=\"max\""), 4.0);
    ck_assert_double_eq(sample_or_nan(text, "corevital_hidden_l2_norm", "stat=\"mean\""), 25.0);
    /* No health flags, risk or performance in this trace: no such families. */
    ck_assert_ptr_null(strstr(text, "corevital_health_"));
    ck_assert_ptr_null(strstr(text, "corevital_risk_score"));
    ck_assert_ptr_null(strstr(text, "corevital_run_wall_seconds"));
    free(text);
}
END_TEST

/* Structural check of the exposition text: every line is HELP, TYPE or a sample; each family
 * has exactly one HELP and TYPE before its samples; sample names and label names are valid;
 * no series repeats. */
START_TEST(test_prometheus_render_syntax) {
    char *text = cv_prometheus_render(trace_tree);
    ck_assert_ptr_nonnull(text);
    ck_assert(strlen(text) > 0 && text[strlen(text) - 1] == '\n');
    char family[128] = "";
    int typed = 0, samples = 0;
    char **seen = calloc(512, sizeof *seen);
    int nseen = 0;
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        char name[128];
        if (strncmp(line, "# HELP ", 7) == 0) {
            ck_assert_int_eq(sscanf(line + 7, "%127s", name), 1);
            ck_assert_msg(strcmp(name, family) != 0, "second HELP for %s", name);
            snprintf(family, sizeof family, "%s", name);
            typed = 0;
        } else if (strncmp(line, "# TYPE ", 7) == 0) {
            char type[32];
            ck_assert_int_eq(sscanf(line + 7, "%127s %31s", name, type), 2);
            ck_assert_str_eq(name, family);
            ck_assert_str_eq(type, "gauge");
            typed = 1;
        } else {
            ck_assert_msg(line[0] != '#', "unexpected comment: %s", line);
            size_t n = strcspn(line, "{ ");
            ck_assert(n > 0 && n < sizeof name);
            memcpy(name, line, n);
            name[n] = '\0';
            ck_assert_msg(typed && strcmp(name, family) == 0, "sample outside its family: %s",
                          line);
            for (size_t i = 0; i < n; i++)
                ck_assert(name[i] == '_' || name[i] == ':' || (name[i] >= 'a' && name[i] <= 'z') ||
                          (name[i] >= 'A' && name[i] <= 'Z') ||
                          (i > 0 && name[i] >= '0' && name[i] <= '9'));
            ck_assert_msg(strncmp(name, "corevital_", 10) == 0, "%s", name);
            /* counters only end in _total; everything here is a gauge */
            ck_assert(n < 6 || strcmp(name + n - 6, "_total") != 0);
            const char *close = strrchr(line, '}');
            ck_assert(line[n] == '{' && close != NULL && close[1] == ' ');
            char *end;
            double v = strtod(close + 2, &end);
            ck_assert_msg(*end == '\0' && isfinite(v), "bad value in %s", line);
            /* the series key is everything before the value */
            seen[nseen] = strndup(line, (size_t)(close - line + 1));
            for (int i = 0; i < nseen; i++)
                ck_assert_msg(strcmp(seen[i], seen[nseen]) != 0, "series twice: %s", line);
            nseen++;
            samples++;
        }
    }
    ck_assert_int_ge(samples, 20);
    for (int i = 0; i < nseen; i++) free(seen[i]);
    free(seen);
    free(text);
}
END_TEST

START_TEST(test_prometheus_render_escaping_and_health) {
    cJSON *model = cJSON_GetObjectItemCaseSensitive(trace_tree, "model");
    cJSON_ReplaceItemInObjectCaseSensitive(model, "hf_id",
                                           cJSON_CreateString("org/we\"ird\\name\nx"));
    cJSON *ext = cJSON_GetObjectItemCaseSensitive(trace_tree, "extensions");
    cJSON *flags = cJSON_AddObjectToObject(ext, "health_flags");
    cJSON_AddFalseToObject(flags, "nan_detected");
    cJSON_AddTrueToObject(flags, "attention_collapse_detected");
    cJSON_AddNumberToObject(flags, "high_entropy_steps", 3);
    cJSON_AddStringToObject(flags, "note", "strings are not metrics");
    cJSON_AddNumberToObject(cJSON_AddObjectToObject(ext, "risk"), "risk_score", 0.25);
    cJSON_AddNumberToObject(cJSON_AddObjectToObject(ext, "performance"), "total_wall_time_ms",
                            1500);
    char *text = cv_prometheus_render(trace_tree);
    ck_assert_ptr_nonnull(text);
    const char *m =
        "{model=\"org/we\\\"ird\\\\name\\nx\",device=\"cpu\",trace_id=\"" TRACE_ID "\"}";
    char line[512];
    snprintf(line, sizeof line, "corevital_health_nan_detected%s 0", m);
    ck_assert_msg(has_line(text, line), "missing '%s' in\n%.400s", line, text);
    snprintf(line, sizeof line, "corevital_health_attention_collapse_detected%s 1", m);
    ck_assert(has_line(text, line));
    snprintf(line, sizeof line, "corevital_health_high_entropy_steps%s 3", m);
    ck_assert(has_line(text, line));
    snprintf(line, sizeof line, "corevital_risk_score%s 0.25", m);
    ck_assert(has_line(text, line));
    snprintf(line, sizeof line, "corevital_run_wall_seconds%s 1.5", m);
    ck_assert(has_line(text, line));
    ck_assert_ptr_null(strstr(text, "corevital_health_note"));
    ck_assert_ptr_null(strstr(text, "name\nx")); /* no raw newline inside a label */
    free(text);

    /* All statistics null: those families disappear instead of showing zeros. */
    cJSON *step;
    cJSON_ArrayForEach(step, cJSON_GetObjectItemCaseSensitive(trace_tree, "timeline")) {
        cJSON *ls = cJSON_GetObjectItemCaseSensitive(step, "logits_summary");
        cJSON_ReplaceItemInObjectCaseSensitive(ls, "entropy", cJSON_CreateNull());
    }
    text = cv_prometheus_render(trace_tree);
    ck_assert_ptr_null(strstr(text, "corevital_logits_entropy_nats"));
    ck_assert_ptr_nonnull(strstr(text, "corevital_logits_top1_top2_margin_ratio"));
    free(text);
    ck_assert_ptr_null(cv_prometheus_render(NULL));
}
END_TEST

static const cJSON *find_series(const cJSON *series, const char *metric, const char *stat_tag) {
    const cJSON *s;
    cJSON_ArrayForEach(s, series) {
        if (strcmp(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(s, "metric")), metric))
            continue;
        const cJSON *t;
        int has = stat_tag == NULL;
        cJSON_ArrayForEach(t, cJSON_GetObjectItemCaseSensitive(s, "tags")) {
            if (stat_tag && strcmp(t->valuestring, stat_tag) == 0) has = 1;
            if (!stat_tag && strncmp(t->valuestring, "stat:", 5) == 0) has = 0;
        }
        if (has) return s;
    }
    return NULL;
}

static double series_value(const cJSON *series, const char *metric, const char *stat_tag) {
    const cJSON *s = find_series(series, metric, stat_tag);
    ck_assert_msg(s != NULL, "no series %s %s", metric, stat_tag ? stat_tag : "");
    const cJSON *pt = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(s, "points"), 0);
    return cJSON_GetObjectItemCaseSensitive(pt, "value")->valuedouble;
}

/* Checks shared by the rendered body and the body the Datadog test server received. */
static void check_series_doc(const cJSON *doc, long timestamp) {
    const cJSON *series = cJSON_GetObjectItemCaseSensitive(doc, "series");
    ck_assert(cJSON_IsArray(series));
    ck_assert_int_ge(cJSON_GetArraySize(series), 20);
    const cJSON *s;
    cJSON_ArrayForEach(s, series) {
        ck_assert_int_eq(cJSON_GetObjectItemCaseSensitive(s, "type")->valueint, 3);
        const char *name = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(s, "metric"));
        ck_assert_msg(name && strncmp(name, "corevital.", 10) == 0, "%s", name ? name : "?");
        const cJSON *pts = cJSON_GetObjectItemCaseSensitive(s, "points");
        ck_assert_int_eq(cJSON_GetArraySize(pts), 1);
        const cJSON *pt = cJSON_GetArrayItem(pts, 0);
        if (timestamp > 0)
            ck_assert_double_eq(cJSON_GetObjectItemCaseSensitive(pt, "timestamp")->valuedouble,
                                (double)timestamp);
        const cJSON *tags = cJSON_GetObjectItemCaseSensitive(s, "tags");
        int model = 0, device = 0, tid = 0;
        const cJSON *t;
        cJSON_ArrayForEach(t, tags) {
            model += strcmp(t->valuestring, "model:gpt2") == 0;
            device += strcmp(t->valuestring, "device:cpu") == 0;
            tid += strcmp(t->valuestring, "trace_id:" TRACE_ID) == 0;
        }
        ck_assert_msg(model == 1 && device == 1 && tid == 1, "tags of %s", name);
    }
    ck_assert_double_eq(series_value(series, "corevital.prompt_tokens", NULL), 3);
    ck_assert_double_eq(series_value(series, "corevital.generation.elapsed_seconds", NULL), 0.125);
    ck_assert_double_eq(series_value(series, "corevital.logits.entropy_nats", "stat:mean"), 2.5);
    ck_assert_double_eq(series_value(series, "corevital.logits.entropy_nats", "stat:max"), 3.0);
    ck_assert_double_eq(series_value(series, "corevital.attention.entropy_nats", "stat:mean"), 1.0);
    ck_assert_double_eq(series_value(series, "corevital.hidden.std", "stat:min"), 0.75);
    /* the creation time is the point's timestamp, not a series of its own */
    ck_assert_ptr_null(find_series(series, "corevital.run_created_timestamp_seconds", NULL));
}

START_TEST(test_datadog_render) {
    char *text = cv_datadog_render(trace_tree, 1795687260L);
    ck_assert_ptr_nonnull(text);
    cJSON *doc = cJSON_Parse(text);
    ck_assert_ptr_nonnull(doc);
    check_series_doc(doc, 1795687260L);
    /* Same number of series as Prometheus samples, minus the creation timestamp. */
    char *prom = cv_prometheus_render(trace_tree);
    int samples = 0;
    for (const char *p = prom; (p = strchr(p, '\n')) != NULL; p++)
        if (p[1] && p[1] != '#') samples++;
    if (prom[0] != '#') samples++;
    ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(doc, "series")),
                     samples - 1);
    free(prom);
    cJSON_Delete(doc);
    free(text);
    ck_assert_ptr_null(cv_datadog_render(NULL, 0));
}
END_TEST

/* ------------------------------------------------------------------ HTTP sink */

START_TEST(test_http_post_plain) {
    REQUIRE_SINK_SERVER();
    char url[256], loc[512];
    cv_error err = {0};
    sink_url(url, sizeof url, "/ok/plain");
    cv_remote_opts o = fast_opts(CV_REMOTE_HTTP, url);
    ck_assert_msg(cv_remote_send(&o, trace_text, trace_tree, loc, sizeof loc, &err) == CV_OK, "%s",
                  err.msg);
    ck_assert_str_eq(loc, url);
    cJSON *recs = records("/ok/plain");
    ck_assert_int_eq(cJSON_GetArraySize(recs), 1);
    const cJSON *r = cJSON_GetArrayItem(recs, 0);
    assert_no_problems(r);
    ck_assert_str_eq(rec_str(r, "method"), "POST");
    ck_assert_str_eq(rec_str(r, "content_type"), "application/json");
    ck_assert_str_eq(rec_str(r, "content_encoding"), "");
    ck_assert(!rec_true(r, "has_authorization")); /* no token in the environment */
    ck_assert_str_eq(rec_str(r, "body"), trace_text);
    cJSON_Delete(recs);
}
END_TEST

START_TEST(test_http_gzip_and_token_never_logged) {
    REQUIRE_SINK_SERVER();
    char url[256], loc[512], logpath[512];
    snprintf(logpath, sizeof logpath, "%s/cv_sink_log_XXXXXX", tmp_base());
    cv_error err = {0};
    sink_url(url, sizeof url, "/auth/gz");
    setenv("COREVITAL_SINK_TOKEN", TEST_TOKEN, 1);
    cv_remote_opts o = fast_opts(CV_REMOTE_HTTP, url);
    o.gzip = 1;
    /* Capture everything the library logs at DEBUG level while it sends. */
    int logfd = mkstemp(logpath);
    ck_assert_int_ge(logfd, 0);
    fflush(stderr);
    int saved = dup(STDERR_FILENO);
    dup2(logfd, STDERR_FILENO);
    cv_log_set_level(CV_LOG_DEBUG);
    cv_status st = cv_remote_send(&o, trace_text, trace_tree, loc, sizeof loc, &err);
    fflush(stderr);
    dup2(saved, STDERR_FILENO);
    close(saved);
    close(logfd);
    cv_log_set_level(CV_LOG_ERROR);
    char *log = NULL;
    ck_assert(cv_read_file(logpath, &log, NULL, &err) == CV_OK);
    unlink(logpath);
    ck_assert_msg(st == CV_OK, "%s", err.msg);
    ck_assert_msg(strstr(log, "http sink") != NULL, "the log capture saw nothing: '%s'", log);
    ck_assert_msg(strstr(log, TEST_TOKEN) == NULL, "token leaked into the log: %s", log);
    free(log);

    cJSON *recs = records("/auth/gz");
    ck_assert_int_eq(cJSON_GetArraySize(recs), 1);
    const cJSON *r = cJSON_GetArrayItem(recs, 0);
    assert_no_problems(r);
    ck_assert_str_eq(rec_str(r, "content_encoding"), "gzip");
    ck_assert(rec_true(r, "authorization_ok"));
    ck_assert_str_eq(rec_str(r, "body"), trace_text); /* the server gunzipped it */
    cJSON_Delete(recs);
}
END_TEST

START_TEST(test_http_wrong_token_is_4xx_no_retry) {
    REQUIRE_SINK_SERVER();
    char url[256], loc[512];
    cv_error err = {0};
    sink_url(url, sizeof url, "/auth/wrong");
    setenv("MY_SINK_TOKEN", "wrong-token-0042", 1);
    setenv("COREVITAL_SINK_TOKEN", TEST_TOKEN, 1); /* ignored: token_env names another variable */
    cv_remote_opts o = fast_opts(CV_REMOTE_HTTP, url);
    o.token_env = "MY_SINK_TOKEN";
    ck_assert_int_eq(cv_remote_send(&o, trace_text, trace_tree, loc, sizeof loc, &err), CV_ERR_NET);
    ck_assert_msg(strstr(err.msg, "HTTP 401") && strstr(err.msg, "1 attempt:"), "%s", err.msg);
    ck_assert(strstr(err.msg, "wrong-token-0042") == NULL);
    cJSON *recs = records("/auth/wrong");
    ck_assert_int_eq(cJSON_GetArraySize(recs), 1);
    const cJSON *r = cJSON_GetArrayItem(recs, 0);
    ck_assert(rec_true(r, "has_authorization"));
    ck_assert(!rec_true(r, "authorization_ok"));
    cJSON_Delete(recs);
}
END_TEST

START_TEST(test_http_token_scrubbed_from_server_answer) {
    REQUIRE_SINK_SERVER();
    char url[256], loc[512];
    cv_error err = {0};
    sink_url(url, sizeof url, "/echoauth/e1");
    setenv("COREVITAL_SINK_TOKEN", TEST_TOKEN, 1);
    cv_remote_opts o = fast_opts(CV_REMOTE_HTTP, url);
    ck_assert_int_eq(cv_remote_send(&o, trace_text, trace_tree, loc, sizeof loc, &err), CV_ERR_NET);
    /* The server put the header in its answer; the error quotes the answer, minus the token. */
    ck_assert_msg(strstr(err.msg, "HTTP 400") && strstr(err.msg, "rejected credentials Bearer ***"),
                  "%s", err.msg);
    ck_assert(strstr(err.msg, TEST_TOKEN) == NULL);
}
END_TEST

START_TEST(test_http_location_from_id_and_header) {
    REQUIRE_SINK_SERVER();
    char url[256], loc[512], want[512];
    cv_error err = {0};
    sink_url(url, sizeof url, "/id/k7");
    cv_remote_opts o = fast_opts(CV_REMOTE_HTTP, url);
    ck_assert_msg(cv_remote_send(&o, trace_text, NULL, loc, sizeof loc, &err) == CV_OK, "%s",
                  err.msg);
    snprintf(want, sizeof want, "%s/trace-k7", url);
    ck_assert_str_eq(loc, want);

    /* With a query string the id goes on the path and the query is not shown. */
    sink_url(url, sizeof url, "/id/k9?tenant=t1");
    o = fast_opts(CV_REMOTE_HTTP, url);
    ck_assert_msg(cv_remote_send(&o, trace_text, NULL, loc, sizeof loc, &err) == CV_OK, "%s",
                  err.msg);
    sink_url(want, sizeof want, "/id/k9/trace-k9");
    ck_assert_str_eq(loc, want);

    sink_url(url, sizeof url, "/created/k8");
    o = fast_opts(CV_REMOTE_HTTP, url);
    ck_assert_msg(cv_remote_send(&o, trace_text, NULL, loc, sizeof loc, &err) == CV_OK, "%s",
                  err.msg);
    sink_url(want, sizeof want, "/traces/k8"); /* relative Location resolved against the URL */
    ck_assert_str_eq(loc, want);
}
END_TEST

START_TEST(test_http_retries_5xx_then_succeeds) {
    REQUIRE_SINK_SERVER();
    char url[256], loc[512], want[512];
    cv_error err = {0};
    sink_url(url, sizeof url, "/fail2/r1");
    cv_remote_opts o = fast_opts(CV_REMOTE_HTTP, url);
    o.max_retries = 3;
    ck_assert_msg(cv_remote_send(&o, trace_text, trace_tree, loc, sizeof loc, &err) == CV_OK, "%s",
                  err.msg);
    snprintf(want, sizeof want, "%s/after-fail", url);
    ck_assert_str_eq(loc, want);
    cJSON *recs = records("/fail2/r1");
    ck_assert_int_eq(cJSON_GetArraySize(recs), 3); /* 500, 500, 200 */
    for (int i = 0; i < 3; i++) assert_no_problems(cJSON_GetArrayItem(recs, i));
    cJSON_Delete(recs);
}
END_TEST

START_TEST(test_http_always_500_gives_up) {
    REQUIRE_SINK_SERVER();
    char url[256], loc[512];
    cv_error err = {0};
    sink_url(url, sizeof url, "/always500/g1");
    cv_remote_opts o = fast_opts(CV_REMOTE_HTTP, url);
    o.max_retries = 2;
    o.backoff_ms = 100;
    double t0 = cv_now_ms();
    ck_assert_int_eq(cv_remote_send(&o, trace_text, trace_tree, loc, sizeof loc, &err), CV_ERR_NET);
    double ms = cv_now_ms() - t0;
    ck_assert_msg(strstr(err.msg, "3 attempts") && strstr(err.msg, "HTTP 500"), "%s", err.msg);
    ck_assert_msg(strstr(err.msg, "always failing") != NULL, "no body excerpt: %s", err.msg);
    ck_assert_msg(ms >= 300 - 5, "backoff 100 + 200 ms not honoured: %.0f ms", ms);
    cJSON *recs = records("/always500/g1");
    ck_assert_int_eq(cJSON_GetArraySize(recs), 3);
    cJSON_Delete(recs);
}
END_TEST

START_TEST(test_http_404_not_retried) {
    REQUIRE_SINK_SERVER();
    char url[256], loc[512];
    cv_error err = {0};
    sink_url(url, sizeof url, "/e404/n1");
    cv_remote_opts o = fast_opts(CV_REMOTE_HTTP, url);
    ck_assert_int_eq(cv_remote_send(&o, trace_text, trace_tree, loc, sizeof loc, &err), CV_ERR_NET);
    ck_assert_msg(strstr(err.msg, "HTTP 404") && strstr(err.msg, "1 attempt:"), "%s", err.msg);
    cJSON *recs = records("/e404/n1");
    ck_assert_int_eq(cJSON_GetArraySize(recs), 1);
    cJSON_Delete(recs);
}
END_TEST

START_TEST(test_http_slow_server_times_out) {
    REQUIRE_SINK_SERVER();
    char url[256], loc[512];
    cv_error err = {0};
    sink_url(url, sizeof url, "/slow/s1");
    cv_remote_opts o = fast_opts(CV_REMOTE_HTTP, url);
    o.total_timeout_ms = 300;
    o.max_retries = 1;
    double t0 = cv_now_ms();
    ck_assert_int_eq(cv_remote_send(&o, trace_text, trace_tree, loc, sizeof loc, &err), CV_ERR_NET);
    double ms = cv_now_ms() - t0;
    ck_assert_msg(strstr(err.msg, "2 attempts") && strstr(err.msg, "Timeout"), "%s", err.msg);
    ck_assert_msg(ms >= 600 && ms < 2500, "two 300 ms attempts took %.0f ms", ms);
}
END_TEST

START_TEST(test_http_dropped_connection_retried) {
    REQUIRE_SINK_SERVER();
    char url[256], loc[512];
    cv_error err = {0};
    sink_url(url, sizeof url, "/drop1/d1");
    cv_remote_opts o = fast_opts(CV_REMOTE_HTTP, url);
    ck_assert_msg(cv_remote_send(&o, trace_text, trace_tree, loc, sizeof loc, &err) == CV_OK, "%s",
                  err.msg);
    cJSON *recs = records("/drop1/d1");
    ck_assert_int_eq(cJSON_GetArraySize(recs), 2);
    ck_assert_str_eq(rec_str(cJSON_GetArrayItem(recs, 0), "status"), "dropped");
    cJSON_Delete(recs);

    /* Dropped every time: a clean error, not a crash. */
    sink_url(url, sizeof url, "/drop9/d2");
    o = fast_opts(CV_REMOTE_HTTP, url);
    o.max_retries = 1;
    ck_assert_int_eq(cv_remote_send(&o, trace_text, trace_tree, loc, sizeof loc, &err), CV_ERR_NET);
    ck_assert_msg(strstr(err.msg, "2 attempts"), "%s", err.msg);
}
END_TEST

/* A port nobody listens on (bound, then released). */
static int closed_port(void) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    ck_assert(bind(s, (struct sockaddr *)&a, sizeof a) == 0);
    ck_assert(getsockname(s, (struct sockaddr *)&a, &len) == 0);
    close(s);
    return ntohs(a.sin_port);
}

START_TEST(test_http_connection_refused) {
    char url[256], loc[512];
    cv_error err = {0};
    snprintf(url, sizeof url, "http://127.0.0.1:%d/traces", closed_port());
    cv_remote_opts o = fast_opts(CV_REMOTE_HTTP, url);
    o.max_retries = 1;
    ck_assert_int_eq(cv_remote_send(&o, trace_text, trace_tree, loc, sizeof loc, &err), CV_ERR_NET);
    ck_assert_msg(strstr(err.msg, "2 attempts") && strstr(err.msg, "connect"), "%s", err.msg);
    ck_assert_str_eq(loc, "");
}
END_TEST

START_TEST(test_http_url_credentials_redacted) {
    REQUIRE_SINK_SERVER();
    char url[256], loc[512];
    cv_error err = {0};
    snprintf(url, sizeof url, "http://alice:pw-s3cret@127.0.0.1:%d/e404/red?api_key=q-s3cret",
             sink_srv.port);
    cv_remote_opts o = fast_opts(CV_REMOTE_HTTP, url);
    ck_assert_int_eq(cv_remote_send(&o, trace_text, trace_tree, loc, sizeof loc, &err), CV_ERR_NET);
    ck_assert_msg(strstr(err.msg, "/e404/red") != NULL, "%s", err.msg);
    ck_assert_msg(!strstr(err.msg, "pw-s3cret") && !strstr(err.msg, "q-s3cret"), "%s", err.msg);
}
END_TEST

/* ------------------------------------------------------------------ Prometheus sink */

static char *gateway_metrics(void) {
    char url[128], *body = NULL;
    snprintf(url, sizeof url, "http://127.0.0.1:%d/metrics", gateway.port);
    long st = http_get(url, &body);
    ck_assert_msg(st == 200 && body, "GET %s answered %ld", url, st);
    return body;
}

static void temp_dir(char *out, size_t n) {
    snprintf(out, n, "%s/cv_prom_XXXXXX", tmp_base());
    ck_assert_ptr_nonnull(mkdtemp(out));
}

/* Number of entries in dir other than . and .. */
static int dir_entries(const char *dir) {
    DIR *d = opendir(dir);
    ck_assert_ptr_nonnull(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
    closedir(d);
    return n;
}

START_TEST(test_prometheus_push_and_textfile) {
    REQUIRE_GATEWAY();
    char base[128], dir[512], path[600], loc[1024], want[1024];
    cv_error err = {0};
    snprintf(base, sizeof base, "http://127.0.0.1:%d/", gateway.port); /* trailing slash ok */
    temp_dir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/corevital.prom", dir);
    cv_remote_opts o = fast_opts(CV_REMOTE_PROMETHEUS, base);
    o.textfile_path = path;
    ck_assert_msg(cv_remote_send(&o, trace_text, trace_tree, loc, sizeof loc, &err) == CV_OK, "%s",
                  err.msg);
    snprintf(want, sizeof want, "%s, http://127.0.0.1:%d/metrics/job/corevital/trace_id/" TRACE_ID,
             path, gateway.port);
    ck_assert_str_eq(loc, want);

    /* The textfile holds exactly the rendered exposition, and no temp file is left behind. */
    char *file = NULL, *rendered = cv_prometheus_render(trace_tree);
    ck_assert(cv_read_file(path, &file, NULL, &err) == CV_OK);
    ck_assert_str_eq(file, rendered);
    ck_assert_int_eq(dir_entries(dir), 1);
    unlink(path);
    rmdir(dir);
    free(file);
    free(rendered);

    /* The gateway parsed our push and exposes it with the grouping labels. */
    char *m = gateway_metrics();
    const char *mean[] = {"job=\"corevital\"", "trace_id=\"" TRACE_ID "\"",
                          "model=\"gpt2\"",    "device=\"cpu\"",
                          "stat=\"mean\"",     NULL};
    double v = NAN;
    ck_assert_msg(find_sample(m, "corevital_logits_entropy_nats", mean, &v), "not in:\n%.400s", m);
    ck_assert_double_eq(v, 2.5);
    ck_assert(find_sample(m, "corevital_attention_entropy_nats", mean, &v));
    ck_assert_double_eq(v, 1.0);
    const char *plain[] = {"job=\"corevital\"", "trace_id=\"" TRACE_ID "\"", "model=\"gpt2\"",
                           NULL};
    ck_assert(find_sample(m, "corevital_generated_tokens", plain, &v));
    ck_assert_double_eq(v, 2);
    ck_assert(find_sample(m, "corevital_generation_elapsed_seconds", plain, &v));
    ck_assert_double_eq(v, 0.125);
    ck_assert(has_line(m, "# TYPE corevital_hidden_std gauge"));
    /* the gateway records a successful push for the group */
    const char *push[] = {"job=\"corevital\"", "trace_id=\"" TRACE_ID "\"", NULL};
    ck_assert(find_sample(m, "push_time_seconds", push, &v));
    ck_assert(v > 0);
    const char *failed[] = {"job=\"corevital\"", "trace_id=\"" TRACE_ID "\"", NULL};
    ck_assert(find_sample(m, "push_failure_time_seconds", failed, &v));
    ck_assert_double_eq(v, 0);
    free(m);
}
END_TEST

START_TEST(test_prometheus_push_replaces_group_and_odd_trace_id) {
    REQUIRE_GATEWAY();
    char base[128], loc[512];
    cv_error err = {0};
    snprintf(base, sizeof base, "http://127.0.0.1:%d", gateway.port);
    /* A trace id with '/' and a space goes through the gateway's base64 path form. */
    cJSON_ReplaceItemInObjectCaseSensitive(trace_tree, "trace_id", cJSON_CreateString("odd/id 1"));
    cJSON *summary = cJSON_GetObjectItemCaseSensitive(trace_tree, "summary");
    cv_remote_opts o = fast_opts(CV_REMOTE_PROMETHEUS, base);
    ck_assert_msg(cv_remote_send(&o, NULL, trace_tree, loc, sizeof loc, &err) == CV_OK, "%s",
                  err.msg);
    ck_assert_msg(strstr(loc, "/trace_id@base64/b2RkL2lkIDE=") != NULL, "%s", loc);
    /* Push again with other numbers: PUT replaces the group's series. */
    cJSON_ReplaceItemInObjectCaseSensitive(summary, "generated_tokens", cJSON_CreateNumber(7));
    ck_assert_msg(cv_remote_send(&o, NULL, trace_tree, loc, sizeof loc, &err) == CV_OK, "%s",
                  err.msg);
    char *m = gateway_metrics();
    const char *labels[] = {"job=\"corevital\"", "trace_id=\"odd/id 1\"", NULL};
    double v = NAN;
    ck_assert_msg(find_sample(m, "corevital_generated_tokens", labels, &v), "%.400s", m);
    ck_assert_double_eq(v, 7);
    free(m);
}
END_TEST

START_TEST(test_prometheus_push_failure_keeps_textfile) {
    char base[128], dir[512], path[600], loc[1024];
    cv_error err = {0};
    snprintf(base, sizeof base, "http://127.0.0.1:%d", closed_port());
    temp_dir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/corevital.prom", dir);
    cv_remote_opts o = fast_opts(CV_REMOTE_PROMETHEUS, base);
    o.textfile_path = path;
    o.max_retries = -1; /* no retries */
    ck_assert_int_eq(cv_remote_send(&o, trace_text, trace_tree, loc, sizeof loc, &err), CV_ERR_NET);
    ck_assert_msg(strstr(err.msg, "prometheus sink") && strstr(err.msg, "1 attempt:"), "%s",
                  err.msg);
    ck_assert_str_eq(loc, path); /* what was delivered */
    ck_assert(cv_is_file(path));
    unlink(path);
    rmdir(dir);

    /* Only a textfile, into a directory that does not exist: an I/O error naming the path. */
    o = fast_opts(CV_REMOTE_PROMETHEUS, NULL);
    o.textfile_path = "tests/fixtures/no/such/dir/corevital.prom";
    ck_assert_int_eq(cv_remote_send(&o, trace_text, trace_tree, loc, sizeof loc, &err), CV_ERR_IO);
    ck_assert_msg(strstr(err.msg, "no/such/dir") != NULL, "%s", err.msg);
}
END_TEST

/* ------------------------------------------------------------------ Datadog sink */

START_TEST(test_datadog_send) {
    REQUIRE_SINK_SERVER();
    char base[256], loc[512], want[512];
    cv_error err = {0};
    sink_url(base, sizeof base, "/dd/k1");
    setenv("COREVITAL_DATADOG_URL", base, 1);
    setenv("DD_API_KEY", TEST_DD_KEY, 1);
    cv_remote_opts o = fast_opts(CV_REMOTE_DATADOG, NULL);
    long before = (long)time(NULL);
    ck_assert_msg(cv_remote_send(&o, trace_text, trace_tree, loc, sizeof loc, &err) == CV_OK, "%s",
                  err.msg);
    snprintf(want, sizeof want, "%s/api/v2/series", base);
    ck_assert_str_eq(loc, want);
    cJSON *recs = records("/dd/k1");
    ck_assert_int_eq(cJSON_GetArraySize(recs), 1);
    const cJSON *r = cJSON_GetArrayItem(recs, 0);
    assert_no_problems(r);
    ck_assert(rec_true(r, "dd_api_key_ok"));
    cJSON *doc = cJSON_Parse(rec_str(r, "body"));
    ck_assert_ptr_nonnull(doc);
    check_series_doc(doc, 0);
    double ts = cJSON_GetObjectItemCaseSensitive(
                    cJSON_GetArrayItem(
                        cJSON_GetObjectItemCaseSensitive(
                            cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(doc, "series"), 0),
                            "points"),
                        0),
                    "timestamp")
                    ->valuedouble;
    ck_assert(ts >= (double)before && ts <= (double)time(NULL));
    cJSON_Delete(doc);
    cJSON_Delete(recs);
}
END_TEST

START_TEST(test_datadog_rejected_key_and_missing_key) {
    REQUIRE_SINK_SERVER();
    char base[256], loc[512];
    cv_error err = {0};
    sink_url(base, sizeof base, "/dd/k2");
    setenv("COREVITAL_DATADOG_URL", base, 1);
    setenv("DD_API_KEY", "not-the-right-key-99", 1);
    cv_remote_opts o = fast_opts(CV_REMOTE_DATADOG, NULL);
    ck_assert_int_eq(cv_remote_send(&o, trace_text, trace_tree, loc, sizeof loc, &err), CV_ERR_NET);
    ck_assert_msg(strstr(err.msg, "HTTP 403") && strstr(err.msg, "1 attempt:"), "%s", err.msg);
    ck_assert(strstr(err.msg, "not-the-right-key-99") == NULL);
    cJSON *recs = records("/dd/k2");
    ck_assert_int_eq(cJSON_GetArraySize(recs), 1);
    cJSON_Delete(recs);

    /* No key at all: refused before any request is made. */
    sink_url(base, sizeof base, "/dd/k3");
    setenv("COREVITAL_DATADOG_URL", base, 1);
    unsetenv("DD_API_KEY");
    ck_assert_int_eq(cv_remote_send(&o, trace_text, trace_tree, loc, sizeof loc, &err),
                     CV_ERR_CONFIG);
    ck_assert_msg(strstr(err.msg, "DD_API_KEY") != NULL, "%s", err.msg);
    recs = records("/dd/k3");
    ck_assert_int_eq(cJSON_GetArraySize(recs), 0);
    cJSON_Delete(recs);
}
END_TEST

START_TEST(test_datadog_endpoint_from_site) {
    char url[256];
    cv_error err = {0};
    ck_assert(cv_datadog_endpoint(url, sizeof url, &err) == CV_OK);
    ck_assert_str_eq(url, "https://api.datadoghq.com/api/v2/series");
    setenv("DD_SITE", "datadoghq.eu", 1);
    ck_assert(cv_datadog_endpoint(url, sizeof url, &err) == CV_OK);
    ck_assert_str_eq(url, "https://api.datadoghq.eu/api/v2/series");
    setenv("COREVITAL_DATADOG_URL", "http://127.0.0.1:9/base//", 1);
    ck_assert(cv_datadog_endpoint(url, sizeof url, &err) == CV_OK);
    ck_assert_str_eq(url, "http://127.0.0.1:9/base/api/v2/series");
    ck_assert(cv_datadog_site_known("us5.datadoghq.com"));
    ck_assert(!cv_datadog_site_known("datadoghq.evil.example"));
}
END_TEST

static Suite *remote_suite(void) {
    Suite *s = suite_create("remote_sinks");
    TCase *offline = tcase_create("offline");
    tcase_add_checked_fixture(offline, setup, teardown);
    tcase_add_test(offline, test_kind_parse);
    tcase_add_test(offline, test_validate);
    tcase_add_test(offline, test_prometheus_render_values);
    tcase_add_test(offline, test_prometheus_render_syntax);
    tcase_add_test(offline, test_prometheus_render_escaping_and_health);
    tcase_add_test(offline, test_datadog_render);
    tcase_add_test(offline, test_datadog_endpoint_from_site);
    suite_add_tcase(s, offline);

    TCase *net = tcase_create("servers");
    tcase_add_unchecked_fixture(net, servers_up, servers_down);
    tcase_add_checked_fixture(net, setup, teardown);
    tcase_set_timeout(net, 20);
    tcase_add_test(net, test_http_post_plain);
    tcase_add_test(net, test_http_gzip_and_token_never_logged);
    tcase_add_test(net, test_http_wrong_token_is_4xx_no_retry);
    tcase_add_test(net, test_http_token_scrubbed_from_server_answer);
    tcase_add_test(net, test_http_location_from_id_and_header);
    tcase_add_test(net, test_http_retries_5xx_then_succeeds);
    tcase_add_test(net, test_http_always_500_gives_up);
    tcase_add_test(net, test_http_404_not_retried);
    tcase_add_test(net, test_http_slow_server_times_out);
    tcase_add_test(net, test_http_dropped_connection_retried);
    tcase_add_test(net, test_http_connection_refused);
    tcase_add_test(net, test_http_url_credentials_redacted);
    tcase_add_test(net, test_prometheus_push_and_textfile);
    tcase_add_test(net, test_prometheus_push_replaces_group_and_odd_trace_id);
    tcase_add_test(net, test_prometheus_push_failure_keeps_textfile);
    tcase_add_test(net, test_datadog_send);
    tcase_add_test(net, test_datadog_rejected_key_and_missing_key);
    suite_add_tcase(s, net);
    return s;
}

int main(void) {
    SRunner *sr = srunner_create(remote_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    stop_all();
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
