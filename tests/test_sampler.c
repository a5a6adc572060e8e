/* test_sampler.c — SPEC §5 sampling: determinism per seed, greedy, top-k (0 disables, > V clamps,
 * ties at the k-th value kept), top-p (1 disables, the first token always kept, the cut point),
 * and the empirical distribution of draws. */
#include "corevital/sampler.h"

#include <check.h>
#include <math.h>
#include <stdlib.h>

static cv_sampler make(int do_sample, double t, int k, double p, uint64_t seed, int V) {
    cv_sampler s;
    cv_sampling sp = {do_sample, t, k, p};
    ck_assert_int_eq(cv_sampler_init(&s, &sp, seed, V), 0);
    return s;
}

START_TEST(test_same_seed_same_tokens) {
    float l[100];
    for (int i = 0; i < 100; i++) l[i] = sinf((float)i) * 3.0f;
    cv_sampler a = make(1, 0.8, 50, 0.95, 42, 100), b = make(1, 0.8, 50, 0.95, 42, 100);
    cv_sampler c = make(1, 0.8, 50, 0.95, 43, 100);
    int differ = 0;
    for (int i = 0; i < 200; i++) {
        int32_t x = cv_sampler_next(&a, l), y = cv_sampler_next(&b, l), z = cv_sampler_next(&c, l);
        ck_assert_int_eq(x, y);
        differ += x != z;
    }
    ck_assert_int_gt(differ, 0); /* another seed gives another stream */
    cv_sampler_free(&a), cv_sampler_free(&b), cv_sampler_free(&c);
}
END_TEST

START_TEST(test_greedy) {
    float l[5] = {0.1f, 2.0f, 2.0f, -1.0f, 1.0f};
    cv_sampler s = make(0, 1.0, 50, 0.95, 1, 5);
    ck_assert_int_eq(cv_sampler_next(&s, l), 1); /* first of the tied maxima */
    cv_sampler_free(&s);
}
END_TEST

START_TEST(test_top_k_edges) {
    float l[6] = {5, 4, 3, 3, 2, 1};
    int32_t out[6];
    cv_sampler s = make(1, 1.0, 0, 1.0, 1, 6); /* top_k 0 disables */
    ck_assert_int_eq(cv_sampler_candidates(&s, l, out), 6);
    cv_sampler_free(&s);
    s = make(1, 1.0, 1000, 1.0, 1, 6); /* larger than V: clamped, no crash */
    ck_assert_int_eq(cv_sampler_candidates(&s, l, out), 6);
    cv_sampler_free(&s);
    s = make(1, 1.0, 3, 1.0, 1, 6); /* the tie at the 3rd value keeps both */
    ck_assert_int_eq(cv_sampler_candidates(&s, l, out), 4);
    ck_assert_int_eq(out[0], 0);
    ck_assert_int_eq(out[2], 2);
    ck_assert_int_eq(out[3], 3);
    cv_sampler_free(&s);
}
END_TEST

START_TEST(test_top_p) {
    /* probabilities 0.5, 0.25, 0.125, 0.125 */
    float l[4] = {logf(0.5f), logf(0.25f), logf(0.125f), logf(0.125f)};
    int32_t out[4];
    cv_sampler s = make(1, 1.0, 0, 1.0, 1, 4);
    ck_assert_int_eq(cv_sampler_candidates(&s, l, out), 4); /* top_p 1 disables */
    cv_sampler_free(&s);
    s = make(1, 1.0, 0, 0.6, 1, 4); /* 0.5 before token 1 < 0.6: kept; 0.75 before token 2: cut */
    ck_assert_int_eq(cv_sampler_candidates(&s, l, out), 2);
    cv_sampler_free(&s);
    s = make(1, 1.0, 0, 0.01, 1, 4); /* the most likely token always survives */
    ck_assert_int_eq(cv_sampler_candidates(&s, l, out), 1);
    ck_assert_int_eq(out[0], 0);
    cv_sampler_free(&s);
}
END_TEST

START_TEST(test_distribution) {
    float l[3] = {logf(0.6f), logf(0.3f), logf(0.1f)};
    cv_sampler s = make(1, 1.0, 0, 1.0, 7, 3);
    int count[3] = {0, 0, 0}, n = 20000;
    for (int i = 0; i < n; i++) count[cv_sampler_next(&s, l)]++;
    ck_assert_double_eq_tol(count[0] / (double)n, 0.6, 0.02);
    ck_assert_double_eq_tol(count[1] / (double)n, 0.3, 0.02);
    ck_assert_double_eq_tol(count[2] / (double)n, 0.1, 0.02);
    cv_sampler_free(&s);
    /* temperature sharpens: at 0.1 the top token dominates */
    s = make(1, 0.1, 0, 1.0, 7, 3);
    int top = 0;
    for (int i = 0; i < 1000; i++) top += cv_sampler_next(&s, l) == 0;
    ck_assert_int_gt(top, 990);
    cv_sampler_free(&s);
}
END_TEST

int main(void) {
    Suite *s = suite_create("sampler");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_same_seed_same_tokens);
    tcase_add_test(tc, test_greedy);
    tcase_add_test(tc, test_top_k_edges);
    tcase_add_test(tc, test_top_p);
    tcase_add_test(tc, test_distribution);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
