/* cmd_tokenize.c — `corevital tokenize`: show the token ids a model sees for a text, or the text
 * of a list of ids.
 *
 *   corevital tokenize --model DIR_OR_ID [--no-special] TEXT     ids, space separated
 *   corevital tokenize --model DIR_OR_ID --decode "ID ID ..."    decoded text (special tokens
 *                                                                shown unless --skip-special)
 * Exit codes: 0 ok, 1 load/encode failure (`error: ...`), 2 usage error. */
#include "corevital/cli.h"
#include "corevital/hub.h"
#include "corevital/tokenizer.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const USAGE =
    "usage: corevital tokenize --model DIR_OR_ID [--no-special] TEXT\n"
    "       corevital tokenize --model DIR_OR_ID --decode \"ID ID ...\" [--skip-special]\n";

static void print_help(void) {
    fputs(USAGE, stdout);
    fputs("\nPrint the token ids the model's tokenizer produces for TEXT (with the tokenizer's\n"
          "default special tokens: Llama prepends BOS, T5 appends </s>, GPT-2 adds none), or\n"
          "decode a list of ids back to text.\n\n"
          "options:\n"
          "  -h, --help         show this help message and exit\n"
          "  --model DIR_OR_ID  model directory (tokenizer.json, or vocab.json + merges.txt) or a\n"
          "                     Hugging Face model id\n"
          "  --revision REV     branch, tag or commit for a model id (default main)\n"
          "  --no-special       do not add the post-processor's special tokens\n"
          "  --decode IDS       decode space/comma separated ids instead of encoding\n"
          "  --skip-special     with --decode: drop special tokens and clean up spaces like\n"
          "                     generated output_text\n",
          stdout);
}

static int usage_error(const char *fmt, const char *arg) {
    fputs(USAGE, stderr);
    fputs("corevital tokenize: error: ", stderr);
    fprintf(stderr, fmt, arg);
    fputc('\n', stderr);
    return CV_EXIT_USAGE;
}

/* Parse "12 34,56" into ids; returns 0 and a message on a bad number. */
static int parse_ids(const char *s, int32_t **out, size_t *n, char *bad, size_t badsz) {
    size_t cap = 16, k = 0;
    int32_t *ids = malloc(cap * sizeof *ids);
    if (!ids) return 0;
    const char *p = s;
    for (;;) {
        while (*p == ' ' || *p == ',' || *p == '\t' || *p == '\n') p++;
        if (!*p) break;
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (end == p || errno || v < 0 || v > INT32_MAX ||
            (*end && *end != ' ' && *end != ',' && *end != '\t' && *end != '\n')) {
            size_t len = strcspn(p, " ,\t\n");
            snprintf(bad, badsz, "%.*s", (int)(len < 64 ? len : 64), p);
            free(ids);
            return 0;
        }
        if (k == cap) {
            int32_t *q = realloc(ids, (cap *= 2) * sizeof *q);
            if (!q) {
                free(ids);
                snprintf(bad, badsz, "(out of memory)");
                return 0;
            }
            ids = q;
        }
        ids[k++] = (int32_t)v;
        p = end;
    }
    *out = ids;
    *n = k;
    return 1;
}

int cv_cmd_tokenize(int argc, char **argv) {
    const char *model = NULL, *revision = NULL, *decode = NULL, *text = NULL;
    int no_special = 0, skip_special = 0, text_seen = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char **dst = NULL;
        size_t eq = strcspn(a, "=");
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            print_help();
            return CV_EXIT_OK;
        } else if (!strcmp(a, "--no-special")) {
            no_special = 1;
        } else if (!strcmp(a, "--skip-special")) {
            skip_special = 1;
        } else if (!strncmp(a, "--model", eq) && eq == 7) {
            dst = &model;
        } else if (!strncmp(a, "--revision", eq) && eq == 10) {
            dst = &revision;
        } else if (!strncmp(a, "--decode", eq) && eq == 8) {
            dst = &decode;
        } else if (!strcmp(a, "--")) { /* the rest is TEXT, even if it starts with "--" */
            if (i + 1 < argc && !text_seen) {
                text = argv[++i];
                text_seen = 1;
            }
            if (i + 1 < argc) return usage_error("unrecognized arguments: %s", argv[i + 1]);
        } else if (a[0] == '-' && a[1] == '-') {
            return usage_error("unrecognized arguments: %s", a);
        } else {
            if (text_seen) return usage_error("unrecognized arguments: %s", a);
            text = a;
            text_seen = 1;
        }
        if (dst) {
            if (a[eq] == '=')
                *dst = a + eq + 1;
            else if (i + 1 < argc)
                *dst = argv[++i];
            else
                return usage_error("argument %s: expected one argument", a);
        }
    }
    if (!model) return usage_error("the following arguments are required: %s", "--model");
    if (decode && text_seen)
        return usage_error("give either TEXT or --decode IDS, not both (%s)", text);
    if (!decode && !text_seen)
        return usage_error("the following arguments are required: %s", "TEXT (or --decode IDS)");
    if (!decode && skip_special)
        return usage_error("%s only applies with --decode", "--skip-special");
    int32_t *ids = NULL;
    size_t n = 0;
    if (decode) {
        char bad[80] = "";
        if (!parse_ids(decode, &ids, &n, bad, sizeof bad))
            return usage_error("argument --decode: invalid token id '%s'", bad);
    }

    cv_error err = {0};
    cv_tokenizer *tok = NULL;
    cv_status st;
    if (cv_is_dir(model)) {
        st = cv_tokenizer_load_dir(model, &tok, &err);
    } else {
        cv_hub_result hub;
        st = cv_hub_resolve(model, revision, &hub, &err);
        if (st == CV_OK) st = cv_tokenizer_load_dir(hub.dir, &tok, &err);
    }
    if (st != CV_OK) {
        fprintf(stderr, "error: %s\n", err.msg);
        free(ids);
        return CV_EXIT_RUNTIME;
    }
    int rc = CV_EXIT_OK;
    if (decode) {
        int32_t vs = cv_tokenizer_vocab_size(tok);
        for (size_t i = 0; i < n; i++)
            if (ids[i] >= vs) {
                fprintf(stderr, "error: token id %d is outside the vocabulary (size %d)\n", ids[i],
                        vs);
                rc = CV_EXIT_RUNTIME;
            }
        if (rc == CV_EXIT_OK) {
            size_t len;
            char *s = cv_tokenizer_decode_len(tok, ids, n, skip_special, skip_special, &len);
            if (!s) {
                fprintf(stderr, "error: out of memory decoding %zu ids\n", n);
                rc = CV_EXIT_RUNTIME;
            } else {
                fwrite(s, 1, len, stdout);
                fputc('\n', stdout);
                free(s);
            }
        }
    } else {
        st = cv_tokenizer_encode(tok, text, strlen(text), !no_special, &ids, &n, &err);
        if (st != CV_OK) {
            fprintf(stderr, "error: %s\n", err.msg);
            rc = CV_EXIT_RUNTIME;
        } else {
            for (size_t i = 0; i < n; i++) printf(i ? " %d" : "%d", ids[i]);
            putchar('\n');
        }
    }
    free(ids);
    cv_tokenizer_free(tok);
    return rc;
}
