/* test_tokenizer_cli.c — `corevital tokenize` (src/cli/cmd_tokenize.c): output equals the
 * library's encode/decode, and the exit codes for help (0), usage errors (2), load errors (1). */
#define _DEFAULT_SOURCE /* fileno, dup */
#include <check.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "corevital/cli.h"
#include "corevital/tokenizer.h"
#include "testutil.h"

#define LLAMA2 tu_tok("llama2")
#define GPT2   tu_tok("gpt2")

/* Runs cv_cmd_tokenize with stdout and stderr captured into out/errbuf. */
static int run_cmd(char *out, size_t outsz, char *errbuf, size_t errsz, int argc, ...) {
    char *argv[16];
    va_list ap;
    va_start(ap, argc);
    for (int i = 0; i < argc && i < 16; i++) argv[i] = va_arg(ap, char *);
    va_end(ap);
    FILE *fo = tmpfile(), *fe = tmpfile();
    ck_assert_ptr_nonnull(fo);
    ck_assert_ptr_nonnull(fe);
    fflush(stdout);
    fflush(stderr);
    int so = dup(fileno(stdout)), se = dup(fileno(stderr));
    dup2(fileno(fo), fileno(stdout));
    dup2(fileno(fe), fileno(stderr));
    int rc = cv_cmd_tokenize(argc, argv);
    fflush(stdout);
    fflush(stderr);
    dup2(so, fileno(stdout));
    dup2(se, fileno(stderr));
    close(so);
    close(se);
    rewind(fo);
    size_t n = fread(out, 1, outsz - 1, fo);
    out[n] = '\0';
    fclose(fo);
    rewind(fe);
    n = fread(errbuf, 1, errsz - 1, fe);
    errbuf[n] = '\0';
    fclose(fe);
    return rc;
}

static cv_tokenizer *load(const char *dir) {
    cv_tokenizer *tok = NULL;
    cv_error err = {0};
    ck_assert_msg(cv_tokenizer_load_dir(dir, &tok, &err) == CV_OK, "%s", err.msg);
    return tok;
}

START_TEST(encode_matches_library) {
    char out[4096], errb[4096], want[4096] = "";
    const char *text = "Hello world, it's <s>2024!";
    cv_tokenizer *tok = load(LLAMA2);
    for (int special = 1; special >= 0; special--) {
        int32_t *ids;
        size_t n;
        cv_error err;
        ck_assert_int_eq(cv_tokenizer_encode(tok, text, strlen(text), special, &ids, &n, &err),
                         CV_OK);
        size_t k = 0;
        for (size_t i = 0; i < n; i++)
            k += (size_t)snprintf(want + k, sizeof want - k, i ? " %d" : "%d", ids[i]);
        snprintf(want + k, sizeof want - k, "\n");
        free(ids);
        char model_eq[1100];
        snprintf(model_eq, sizeof model_eq, "--model=%s", LLAMA2);
        int rc = special ? run_cmd(out, sizeof out, errb, sizeof errb, 4, "tokenize", "--model",
                                   LLAMA2, text)
                         : run_cmd(out, sizeof out, errb, sizeof errb, 5, "tokenize", model_eq,
                                   "--no-special", "--", text);
        ck_assert_int_eq(rc, 0);
        ck_assert_str_eq(out, want);
        ck_assert_str_eq(errb, "");
        if (special) ck_assert_int_eq(strncmp(out, "1 ", 2), 0); /* BOS first */
    }
    cv_tokenizer_free(tok);
}
END_TEST

START_TEST(decode_matches_library) {
    char out[4096], errb[4096];
    cv_tokenizer *tok = load(GPT2);
    const int32_t ids[] = {15496, 995, 837, 50256};
    char *want = cv_tokenizer_decode(tok, ids, 4, 0, 0);
    int rc = run_cmd(out, sizeof out, errb, sizeof errb, 5, "tokenize", "--model", GPT2, "--decode",
                     "15496 995,837 50256");
    ck_assert_int_eq(rc, 0);
    ck_assert_int_eq(strlen(out), strlen(want) + 1);
    ck_assert_int_eq(strncmp(out, want, strlen(want)), 0);
    ck_assert_ptr_nonnull(strstr(out, "<|endoftext|>"));
    free(want);
    want = cv_tokenizer_decode(tok, ids, 4, 1, 1);
    rc = run_cmd(out, sizeof out, errb, sizeof errb, 6, "tokenize", "--model", GPT2, "--decode",
                 "15496 995 837 50256", "--skip-special");
    ck_assert_int_eq(rc, 0);
    ck_assert_int_eq(strncmp(out, want, strlen(want)), 0);
    ck_assert_ptr_null(strstr(out, "<|endoftext|>"));
    free(want);
    cv_tokenizer_free(tok);
}
END_TEST

START_TEST(exit_codes) {
    char out[8192], errb[4096];
    ck_assert_int_eq(run_cmd(out, sizeof out, errb, sizeof errb, 2, "tokenize", "--help"), 0);
    ck_assert_ptr_nonnull(strstr(out, "--no-special"));
    ck_assert_int_eq(run_cmd(out, sizeof out, errb, sizeof errb, 2, "tokenize", "hello"), 2);
    ck_assert_ptr_nonnull(strstr(errb, "--model"));
    ck_assert_int_eq(run_cmd(out, sizeof out, errb, sizeof errb, 3, "tokenize", "--model", GPT2),
                     2);
    ck_assert_int_eq(
        run_cmd(out, sizeof out, errb, sizeof errb, 4, "tokenize", "--model", GPT2, "--bogus"), 2);
    ck_assert_int_eq(run_cmd(out, sizeof out, errb, sizeof errb, 5, "tokenize", "--model", GPT2,
                             "--decode", "12 x3"),
                     2);
    ck_assert_ptr_nonnull(strstr(errb, "x3"));
    ck_assert_int_eq(run_cmd(out, sizeof out, errb, sizeof errb, 5, "tokenize", "--model", GPT2,
                             "--decode", "99999"),
                     1);
    ck_assert_int_eq(strncmp(errb, "error: ", 7), 0);
    ck_assert_int_eq(run_cmd(out, sizeof out, errb, sizeof errb, 4, "tokenize", "--model",
                             "tests/fixtures/no-such-model-dir/", "hi"),
                     1);
    ck_assert_int_eq(strncmp(errb, "error: ", 7), 0);
    ck_assert_str_eq(out, "");
}
END_TEST

int main(void) {
    Suite *s = suite_create("tokenizer_cli");
    TCase *tc = tcase_create("cli");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, encode_matches_library);
    tcase_add_test(tc, decode_matches_library);
    tcase_add_test(tc, exit_codes);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
