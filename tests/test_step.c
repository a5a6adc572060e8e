/* test_step.c — the decode step boundary on the CPU backend (backend.h CV_SP_*): greedy decoding
 * of a decoder-only model keeps the chosen token and its position on the backend between steps
 * (pick_greedy writes them, the next forward reads them), which must change nothing that a run
 * reports. CV_STEP_ON_DEVICE=0 passes the token from the host as before; both loops must give the
 * same tokens and the same timeline (every statistic, health included), bit for bit, for GPT-2
 * and Llama, with and without statistics.
 *
 * The CPU backend is the reference implementation of the ops' semantics (backend memory is host
 * memory there), so the same loop the GPU runs is checked here; a wrapper around the CPU op table
 * also checks the step words themselves: before the pick of step i they hold the position
 * P - 1 + i and the token chosen by step i - 1, after it the new choice at P + i. */
#define _POSIX_C_SOURCE 200809L
#include "corevital/config.h"
#include "corevital/generate.h"
#include "corevital/model.h"
#include "cJSON.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_PICKS 64

typedef struct {
    cv_backend b; /* first: the op table generate.c calls */
    cv_backend *inner;
    int picks, with_step;
    int32_t pos_before[MAX_PICKS], tok_before[MAX_PICKS], tok_after[MAX_PICKS],
        pos_after[MAX_PICKS];
    int32_t slot_tok[MAX_PICKS];
} spy_backend;

static void spy_pick_greedy(cv_backend *b, const float *logits, int V, double *slot,
                            int32_t *step) {
    spy_backend *s = (spy_backend *)b;
    int k = s->picks++;
    ck_assert_int_lt(k, MAX_PICKS);
    if (step) {
        s->with_step++;
        s->pos_before[k] = step[CV_SP_POS];
        s->tok_before[k] = step[CV_SP_TOKEN];
    }
    s->inner->pick_greedy(s->inner, logits, V, slot, step);
    s->slot_tok[k] = slot ? (int32_t)slot[CV_STEP_TOKEN] : -2;
    if (step) {
        s->tok_after[k] = step[CV_SP_TOKEN];
        s->pos_after[k] = step[CV_SP_POS];
    }
}

/* ---- a recording backend: CUDA graph semantics on the CPU ---------------------------------
 *
 * The CUDA backend records a decode step as a graph and replays it: every argument an op was
 * given at recording time is baked in, only backend memory changes between replays. This
 * wrapper gives the CPU op table the same semantics (graph_begin / graph_end / graph_launch):
 * while recording, the decode ops are not run but stored with their arguments (structs copied by
 * value, pointers kept), and graph_launch calls them again in order. A loop or a family forward
 * that passed anything per step through a host argument (a position, a pointer computed from
 * it) would replay a stale value and the tokens / trace would differ from the plain loop. Any
 * other op during a recording (upload, download, argmax, status, alloc) breaks it, as on CUDA. */
enum {
    R_RESET,
    R_EMB,
    R_MM,
    R_LN,
    R_RMS,
    R_RES,
    R_GELU,
    R_SILU,
    R_ROPE,
    R_KV,
    R_ATT,
    R_LOGITS,
    R_COS,
    R_COPY,
    R_PICK,
    R_GUS
};

typedef struct {
    int k;
    void *p[4];
    const void *c[4];
    int i[6];
    size_t n;
    float f;
    cv_weight w, w2;
    int has_w2;
    cv_attn_args a;
    cv_stats_layout lay;
} rec_op;

#define MAX_REC 4096

typedef struct {
    cv_backend b; /* first */
    cv_backend *inner;
    int recording, broken, fail_end, ready;
    int begins, ends, launches, recorded;
    rec_op *ops;
    int n_ops;
} rec_backend;

static rec_backend *rb(cv_backend *b) {
    return (rec_backend *)b;
}
static rec_op *push(cv_backend *b, int k) {
    rec_backend *r = rb(b);
    ck_assert_int_lt(r->n_ops, MAX_REC);
    rec_op *o = &r->ops[r->n_ops++];
    memset(o, 0, sizeof *o);
    o->k = k;
    return o;
}

static void r_stats_reset(cv_backend *b, double *arena, const cv_stats_layout *lay) {
    if (!rb(b)->recording) return rb(b)->inner->stats_reset(rb(b)->inner, arena, lay);
    rec_op *o = push(b, R_RESET);
    o->p[0] = arena, o->lay = *lay;
}
static void r_embedding(cv_backend *b, float *out, const int32_t *tokens, int T,
                        const cv_weight *wte, const cv_weight *wpe, int pos0, const int32_t *dpos,
                        float scale) {
    if (!rb(b)->recording)
        return rb(b)->inner->embedding(rb(b)->inner, out, tokens, T, wte, wpe, pos0, dpos, scale);
    rec_op *o = push(b, R_EMB);
    o->p[0] = out, o->c[0] = tokens, o->c[1] = dpos, o->i[0] = T, o->i[1] = pos0, o->f = scale;
    o->w = *wte;
    if (wpe) o->w2 = *wpe, o->has_w2 = 1;
}
static void r_matmul(cv_backend *b, float *out, const float *x, const cv_weight *w,
                     const float *bias, int T) {
    if (!rb(b)->recording) return rb(b)->inner->matmul(rb(b)->inner, out, x, w, bias, T);
    rec_op *o = push(b, R_MM);
    o->p[0] = out, o->c[0] = x, o->c[1] = bias, o->i[0] = T, o->w = *w;
}
static void r_layernorm(cv_backend *b, float *out, const float *x, const float *w,
                        const float *bias, int T, int C, float eps, double *hs) {
    if (!rb(b)->recording)
        return rb(b)->inner->layernorm(rb(b)->inner, out, x, w, bias, T, C, eps, hs);
    rec_op *o = push(b, R_LN);
    o->p[0] = out, o->p[1] = hs, o->c[0] = x, o->c[1] = w, o->c[2] = bias;
    o->i[0] = T, o->i[1] = C, o->f = eps;
}
static void r_rmsnorm(cv_backend *b, float *out, const float *x, const float *w, int T, int C,
                      float eps, double *hs) {
    if (!rb(b)->recording) return rb(b)->inner->rmsnorm(rb(b)->inner, out, x, w, T, C, eps, hs);
    rec_op *o = push(b, R_RMS);
    o->p[0] = out, o->p[1] = hs, o->c[0] = x, o->c[1] = w, o->i[0] = T, o->i[1] = C, o->f = eps;
}
static void r_residual_add(cv_backend *b, float *x, const float *y, int T, int C, double *hs) {
    if (!rb(b)->recording) return rb(b)->inner->residual_add(rb(b)->inner, x, y, T, C, hs);
    rec_op *o = push(b, R_RES);
    o->p[0] = x, o->p[1] = hs, o->c[0] = y, o->i[0] = T, o->i[1] = C;
}
static void r_gelu_tanh(cv_backend *b, float *x, size_t n) {
    if (!rb(b)->recording) return rb(b)->inner->gelu_tanh(rb(b)->inner, x, n);
    rec_op *o = push(b, R_GELU);
    o->p[0] = x, o->n = n;
}
static void r_silu_mul(cv_backend *b, float *g, const float *u, size_t n) {
    if (!rb(b)->recording) return rb(b)->inner->silu_mul(rb(b)->inner, g, u, n);
    rec_op *o = push(b, R_SILU);
    o->p[0] = g, o->c[0] = u, o->n = n;
}
static void r_rope(cv_backend *b, float *x, int T, int stride, int nh, int hd, const float *inv,
                   int pos0, const int32_t *dpos) {
    if (!rb(b)->recording)
        return rb(b)->inner->rope(rb(b)->inner, x, T, stride, nh, hd, inv, pos0, dpos);
    rec_op *o = push(b, R_ROPE);
    o->p[0] = x, o->c[0] = inv, o->c[1] = dpos;
    o->i[0] = T, o->i[1] = stride, o->i[2] = nh, o->i[3] = hd, o->i[4] = pos0;
}
static void r_kv_store(cv_backend *b, void *dst, cv_dtype dt, const float *src, int T, int heads,
                       int hd, int n_ctx, int pos0, const int32_t *dpos) {
    if (!rb(b)->recording)
        return rb(b)->inner->kv_store(rb(b)->inner, dst, dt, src, T, heads, hd, n_ctx, pos0, dpos);
    rec_op *o = push(b, R_KV);
    o->p[0] = dst, o->c[0] = src, o->c[1] = dpos, o->n = (size_t)dt;
    o->i[0] = T, o->i[1] = heads, o->i[2] = hd, o->i[3] = n_ctx, o->i[4] = pos0;
}
static void r_attention(cv_backend *b, const cv_attn_args *a) {
    if (!rb(b)->recording) return rb(b)->inner->attention(rb(b)->inner, a);
    push(b, R_ATT)->a = *a;
}
static void r_logits_stats(cv_backend *b, double *r, const float *l, int V, int topk) {
    if (!rb(b)->recording) return rb(b)->inner->logits_stats(rb(b)->inner, r, l, V, topk);
    rec_op *o = push(b, R_LOGITS);
    o->p[0] = r, o->c[0] = l, o->i[0] = V, o->i[1] = topk;
}
static void r_row_cos(cv_backend *b, double *acc, const float *x, const float *y, int T, int C) {
    if (!rb(b)->recording) return rb(b)->inner->row_cos(rb(b)->inner, acc, x, y, T, C);
    rec_op *o = push(b, R_COS);
    o->p[0] = acc, o->c[0] = x, o->c[1] = y, o->i[0] = T, o->i[1] = C;
}
static void r_copy(cv_backend *b, void *dst, const void *src, size_t n) {
    if (!rb(b)->recording) return rb(b)->inner->copy(rb(b)->inner, dst, src, n);
    rec_op *o = push(b, R_COPY);
    o->p[0] = dst, o->c[0] = src, o->n = n;
}
static void r_pick_greedy(cv_backend *b, const float *l, int V, double *slot, int32_t *step) {
    if (!rb(b)->recording) return rb(b)->inner->pick_greedy(rb(b)->inner, l, V, slot, step);
    rec_op *o = push(b, R_PICK);
    o->c[0] = l, o->i[0] = V, o->p[0] = slot, o->p[1] = step;
}
static void r_gate_up_silu(cv_backend *b, float *gate, float *up, const float *x,
                           const cv_weight *wg, const cv_weight *wu, int T) {
    if (!rb(b)->recording) return rb(b)->inner->gate_up_silu(rb(b)->inner, gate, up, x, wg, wu, T);
    rec_op *o = push(b, R_GUS);
    o->p[0] = gate, o->p[1] = up, o->c[0] = x, o->w = *wg, o->w2 = *wu, o->i[0] = T;
}
/* not recordable: a recording that meets one of these is broken (graph_end answers 0) */
static void r_upload(cv_backend *b, void *d, const void *s, size_t n) {
    if (rb(b)->recording) rb(b)->broken = 1;
    rb(b)->inner->upload(rb(b)->inner, d, s, n);
}
static void r_download(cv_backend *b, void *d, const void *s, size_t n) {
    if (rb(b)->recording) rb(b)->broken = 1;
    rb(b)->inner->download(rb(b)->inner, d, s, n);
}
static int32_t r_argmax(cv_backend *b, const float *l, int V) {
    if (rb(b)->recording) rb(b)->broken = 1;
    return rb(b)->inner->argmax(rb(b)->inner, l, V);
}
static cv_status r_status(cv_backend *b, cv_error *err) {
    if (rb(b)->recording) rb(b)->broken = 1;
    return rb(b)->inner->status(rb(b)->inner, err);
}

static int r_graph_begin(cv_backend *b) {
    rec_backend *r = rb(b);
    r->begins++;
    r->recording = 1;
    r->broken = 0;
    r->ready = 0;
    r->n_ops = 0;
    return 1;
}
static int r_graph_end(cv_backend *b) {
    rec_backend *r = rb(b);
    r->fail_end = getenv("CV_TEST_FAIL_END") != NULL;
    r->ends++;
    r->recording = 0;
    r->ready = !r->broken && !r->fail_end;
    if (!r->ready) r->n_ops = 0; /* nothing kept, nothing ran */
    r->recorded = r->n_ops;
    return r->ready;
}
static int r_graph_launch(cv_backend *b) {
    rec_backend *r = rb(b);
    if (!r->ready) return 0;
    r->launches++;
    cv_backend *in = r->inner;
    for (int j = 0; j < r->n_ops; j++) {
        rec_op *o = &r->ops[j];
        switch (o->k) {
        case R_RESET:
            in->stats_reset(in, o->p[0], &o->lay);
            break;
        case R_EMB:
            in->embedding(in, o->p[0], o->c[0], o->i[0], &o->w, o->has_w2 ? &o->w2 : NULL, o->i[1],
                          o->c[1], o->f);
            break;
        case R_MM:
            in->matmul(in, o->p[0], o->c[0], &o->w, o->c[1], o->i[0]);
            break;
        case R_LN:
            in->layernorm(in, o->p[0], o->c[0], o->c[1], o->c[2], o->i[0], o->i[1], o->f, o->p[1]);
            break;
        case R_RMS:
            in->rmsnorm(in, o->p[0], o->c[0], o->c[1], o->i[0], o->i[1], o->f, o->p[1]);
            break;
        case R_RES:
            in->residual_add(in, o->p[0], o->c[0], o->i[0], o->i[1], o->p[1]);
            break;
        case R_GELU:
            in->gelu_tanh(in, o->p[0], o->n);
            break;
        case R_SILU:
            in->silu_mul(in, o->p[0], o->c[0], o->n);
            break;
        case R_ROPE:
            in->rope(in, o->p[0], o->i[0], o->i[1], o->i[2], o->i[3], o->c[0], o->i[4], o->c[1]);
            break;
        case R_KV:
            in->kv_store(in, o->p[0], (cv_dtype)o->n, o->c[0], o->i[0], o->i[1], o->i[2], o->i[3],
                         o->i[4], o->c[1]);
            break;
        case R_ATT:
            in->attention(in, &o->a);
            break;
        case R_LOGITS:
            in->logits_stats(in, o->p[0], o->c[0], o->i[0], o->i[1]);
            break;
        case R_COS:
            in->row_cos(in, o->p[0], o->c[0], o->c[1], o->i[0], o->i[1]);
            break;
        case R_COPY:
            in->copy(in, o->p[0], o->c[0], o->n);
            break;
        case R_PICK:
            in->pick_greedy(in, o->c[0], o->i[0], o->p[0], o->p[1]);
            break;
        case R_GUS:
            in->gate_up_silu(in, o->p[0], o->p[1], o->c[0], &o->w, &o->w2, o->i[0]);
            break;
        }
    }
    return 1;
}
static void r_graph_reset(cv_backend *b) {
    rb(b)->ready = 0;
    rb(b)->n_ops = 0;
}

static void rec_wrap(rec_backend *r, cv_backend *inner) {
    memset(r, 0, sizeof *r);
    r->b = *inner;
    r->inner = inner;
    r->ops = calloc(MAX_REC, sizeof *r->ops);
    ck_assert_ptr_nonnull(r->ops);
    cv_backend *b = &r->b;
    b->stats_reset = r_stats_reset, b->embedding = r_embedding, b->matmul = r_matmul;
    b->layernorm = r_layernorm, b->rmsnorm = r_rmsnorm, b->residual_add = r_residual_add;
    b->gelu_tanh = r_gelu_tanh, b->silu_mul = r_silu_mul, b->rope = r_rope;
    b->kv_store = r_kv_store, b->attention = r_attention, b->logits_stats = r_logits_stats;
    b->row_cos = r_row_cos, b->copy = r_copy, b->pick_greedy = r_pick_greedy;
    b->gate_up_silu = r_gate_up_silu;
    b->matmul3 = NULL; /* optional: the model then issues three matmuls, which are recorded */
    b->upload = r_upload, b->download = r_download, b->argmax = r_argmax, b->status = r_status;
    b->graph_begin = r_graph_begin, b->graph_end = r_graph_end;
    b->graph_launch = r_graph_launch, b->graph_reset = r_graph_reset;
}

typedef struct {
    int32_t *ids;
    size_t n, P;
    cJSON *timeline, *generated;
} run_out;

/* A greedy configuration of G tokens on the CPU, one thread. */
static void greedy_config(cv_config *c, const char *model, int G, int health) {
    cv_error e;
    char g[16];
    snprintf(g, sizeof g, "%d", G);
    ck_assert_int_eq(cv_config_init(c, &e), CV_OK);
    ck_assert_int_eq(cv_config_set(c, "model.hf_id", model, &e), CV_OK);
    ck_assert_int_eq(cv_config_set(c, "device.requested", "cpu", &e), CV_OK);
    ck_assert_int_eq(cv_config_set(c, "generation.max_new_tokens", g, &e), CV_OK);
    ck_assert_int_eq(cv_config_set(c, "generation.temperature", "0", &e), CV_OK);
    if (!health) ck_assert_int_eq(cv_config_set(c, "health.enabled", "false", &e), CV_OK);
    ck_assert_int_eq(cv_config_validate(c, &e), CV_OK);
    c->threads = 1;
}

/* One generation of `prompt` in session s: its tokens and, instrumented, its timeline. */
static void gen_in(cv_session *s, cv_config *c, const char *prompt, int instrumented,
                   run_out *out) {
    cv_error e;
    int32_t *pids = NULL;
    ck_assert_int_eq(cv_session_tokenize(s, prompt, &pids, &out->P, &e), CV_OK);
    cv_report rep;
    ck_assert_int_eq(cv_report_init(&rep, &e), CV_OK);
    ck_assert_int_eq(cv_session_fill_report(s, c, prompt, pids, out->P, &rep, &e), CV_OK);
    cv_status st = cv_session_generate(s, c, pids, out->P, instrumented, instrumented ? &rep : NULL,
                                       &out->ids, &out->n, NULL, NULL, &e);
    ck_assert_msg(st == CV_OK, "%s", e.msg);
    ck_assert_ptr_null(s->m->step); /* the loop's step words are gone with the loop */
    free(pids);
    out->timeline = out->generated = NULL;
    if (instrumented) {
        char *json = NULL;
        size_t len = 0;
        ck_assert_int_eq(cv_report_fill_run_config(&rep, c, &e), CV_OK);
        ck_assert_int_eq(cv_report_to_json(&rep, 0, &json, &len, &e), CV_OK);
        cJSON *doc = cJSON_Parse(json);
        ck_assert_ptr_nonnull(doc);
        out->timeline = cJSON_DetachItemFromObject(doc, "timeline");
        out->generated = cJSON_DetachItemFromObject(doc, "generated");
        cJSON_Delete(doc);
        free(json);
    }
    cv_report_free(&rep);
}

/* Greedy run of G tokens on the CPU through the spy (or, with rec, the recording backend);
 * on_device sets CV_STEP_ON_DEVICE. */
static void gen_with(const char *model, int G, int instrumented, int health, int on_device,
                     spy_backend *spy, rec_backend *rec, run_out *out) {
    setenv("CV_STEP_ON_DEVICE", on_device ? "1" : "0", 1);
    cv_config c;
    cv_session *s;
    cv_error e;
    greedy_config(&c, model, G, health);
    ck_assert_msg(cv_session_open(&c, &s, NULL, &e) == CV_OK, "%s", e.msg);
    cv_backend *cpu = s->be, *use;
    if (rec) {
        rec_wrap(rec, cpu);
        use = &rec->b;
    } else {
        memset(spy, 0, sizeof *spy);
        spy->b = *cpu;
        spy->b.pick_greedy = spy_pick_greedy;
        spy->inner = cpu;
        use = &spy->b;
    }
    s->be = use;
    s->m->be = use; /* the forward's ops go through the same table */
    gen_in(s, &c, "The quick brown fox", instrumented, out);
    s->be = cpu;
    s->m->be = cpu;
    cv_session_close(s);
    cv_config_free(&c);
    unsetenv("CV_STEP_ON_DEVICE");
}

static void gen(const char *model, int G, int instrumented, int health, int on_device,
                spy_backend *spy, run_out *out) {
    gen_with(model, G, instrumented, health, on_device, spy, NULL, out);
}

static void free_out(run_out *o) {
    free(o->ids);
    cJSON_Delete(o->timeline);
    cJSON_Delete(o->generated);
}

/* Device-token loop vs host-token loop: the same tokens and the same timeline. */
static void same_as_host(const char *model, int instrumented, int health) {
    const int G = 12;
    spy_backend a, b;
    run_out da, ho;
    gen(model, G, instrumented, health, 1, &a, &da);
    gen(model, G, instrumented, health, 0, &b, &ho);
    ck_assert_int_eq((int)da.n, (int)ho.n);
    ck_assert_int_gt((int)da.n, 1);
    for (size_t i = 0; i < da.n; i++) ck_assert_int_eq(da.ids[i], ho.ids[i]);
    if (instrumented) {
        ck_assert_int_eq(cJSON_GetArraySize(da.timeline), (int)da.n);
        ck_assert_msg(cJSON_Compare(da.timeline, ho.timeline, 1), "%s: timelines differ", model);
        ck_assert(cJSON_Compare(da.generated, ho.generated, 1));
    }
    /* the host loop never hands step words to pick_greedy */
    ck_assert_int_eq(b.with_step, 0);
    /* the device loop does at every step: position P - 1 + i before, P + i after */
    ck_assert_int_eq(a.with_step, (int)da.n);
    for (int i = 0; i < (int)da.n; i++) {
        ck_assert_int_eq(a.pos_before[i], (int)da.P - 1 + i);
        ck_assert_int_eq(a.pos_after[i], (int)da.P + i);
        ck_assert_int_eq(a.tok_after[i], da.ids[i]);
        if (i > 0) ck_assert_int_eq(a.tok_before[i], da.ids[i - 1]);
        if (instrumented) ck_assert_int_eq(a.slot_tok[i], da.ids[i]);
    }
    free_out(&da);
    free_out(&ho);
}

/* The recorded decode step replayed (graph semantics on the CPU) gives the plain loop's tokens
 * and timeline: decode step 1 runs plainly, step 2 is recorded (nothing runs) then launched,
 * every later step is a replay; with a failing graph_end the loop issues the step again plainly
 * and never tries again. */
static void graph_same_as_plain(const char *model, int instrumented, int health) {
    const int G = 12;
    spy_backend sp;
    run_out plain, gr, fb;
    gen(model, G, instrumented, health, 1, &sp, &plain);
    ck_assert_int_eq((int)plain.n, G); /* the fixtures do not stop early on this prompt */
    rec_backend r;
    gen_with(model, G, instrumented, health, 1, NULL, &r, &gr);
    ck_assert_int_eq(r.begins, 1);
    ck_assert_int_eq(r.ends, 1);
    ck_assert_int_eq(r.broken, 0);
    ck_assert_int_gt(r.recorded, 10);
    ck_assert_int_eq(r.launches, G - 2); /* step 2 (recorded, then launched) and every later one */
    ck_assert_int_eq((int)gr.n, (int)plain.n);
    for (size_t i = 0; i < gr.n; i++) ck_assert_int_eq(gr.ids[i], plain.ids[i]);
    if (instrumented) {
        ck_assert_msg(cJSON_Compare(gr.timeline, plain.timeline, 1), "%s: replayed timeline",
                      model);
        ck_assert(cJSON_Compare(gr.generated, plain.generated, 1));
    }
    free(r.ops);
    /* a recording that fails: the step is issued again plainly, no further attempt */
    memset(&r, 0, sizeof r);
    setenv("CV_TEST_FAIL_END", "1", 1);
    gen_with(model, G, instrumented, health, 1, NULL, &r, &fb);
    unsetenv("CV_TEST_FAIL_END");
    ck_assert_int_eq(r.begins, 1);
    ck_assert_int_eq(r.launches, 0);
    for (size_t i = 0; i < fb.n; i++) ck_assert_int_eq(fb.ids[i], plain.ids[i]);
    ck_assert_int_eq((int)fb.n, (int)plain.n);
    if (instrumented) ck_assert(cJSON_Compare(fb.timeline, plain.timeline, 1));
    free(r.ops);
    /* CV_CUDA_GRAPH=0: the loop does not record */
    memset(&r, 0, sizeof r);
    setenv("CV_CUDA_GRAPH", "0", 1);
    run_out off;
    gen_with(model, G, instrumented, health, 1, NULL, &r, &off);
    unsetenv("CV_CUDA_GRAPH");
    ck_assert_int_eq(r.begins, 0);
    for (size_t i = 0; i < off.n; i++) ck_assert_int_eq(off.ids[i], plain.ids[i]);
    free(r.ops);
    free_out(&plain), free_out(&gr), free_out(&fb), free_out(&off);
}

START_TEST(test_gpt2_graph_replay_same_trace) {
    graph_same_as_plain("tests/fixtures/gpt2-tiny", 1, 1);
    graph_same_as_plain("tests/fixtures/gpt2-tiny", 0, 0);
}
END_TEST

START_TEST(test_llama_graph_replay_same_trace) {
    graph_same_as_plain("tests/fixtures/llama-tiny", 1, 1);
    graph_same_as_plain("tests/fixtures/llama-tiny", 1, 0);
    graph_same_as_plain("tests/fixtures/llama-tiny", 0, 0);
}
END_TEST

START_TEST(test_gpt2_device_token_same_trace) {
    same_as_host("tests/fixtures/gpt2-tiny", 1, 1);
    same_as_host("tests/fixtures/gpt2-tiny", 1, 0);
    same_as_host("tests/fixtures/gpt2-tiny", 0, 0);
}
END_TEST

START_TEST(test_llama_device_token_same_trace) {
    same_as_host("tests/fixtures/llama-tiny", 1, 1);
    same_as_host("tests/fixtures/llama-tiny", 1, 0);
    same_as_host("tests/fixtures/llama-tiny", 0, 0);
}
END_TEST

/* T5 (encoder-decoder) keeps the host token: its forward has no device-token path. */
START_TEST(test_t5_keeps_host_token) {
    spy_backend a;
    run_out o;
    gen("tests/fixtures/t5-tiny", 6, 1, 1, 1, &a, &o);
    ck_assert_int_gt((int)o.n, 0);
    ck_assert_int_eq(a.with_step, 0);
    free_out(&o);
}
END_TEST

/* A forward asked for a device token without step words, or with T > 1, refuses. */
START_TEST(test_forward_device_token_needs_step) {
    cv_backend *be = cv_backend_cpu_create();
    cv_model *m = NULL;
    cv_error e;
    ck_assert_int_eq(cv_model_load("tests/fixtures/gpt2-tiny", be, &m, &e), CV_OK);
    ck_assert_int_eq(m->ops->reserve(m, 4, 16, 1, &e), CV_OK);
    float *logits = NULL;
    ck_assert_int_eq(m->ops->forward(m, NULL, 1, 0, NULL, NULL, NULL, 0, &logits, &e),
                     CV_ERR_RUNTIME);
    int32_t *step = be->alloc(be, sizeof(int32_t) * CV_SP_WORDS);
    m->step = step;
    ck_assert_int_eq(m->ops->forward(m, NULL, 2, 0, NULL, NULL, NULL, 0, &logits, &e),
                     CV_ERR_RUNTIME);
    step[CV_SP_TOKEN] = 3;
    step[CV_SP_POS] = 0;
    ck_assert_int_eq(m->ops->forward(m, NULL, 1, 0, NULL, NULL, NULL, 0, &logits, &e), CV_OK);
    int V = m->cfg.vocab_size;
    float *dev_row = malloc(sizeof(float) * (size_t)V);
    memcpy(dev_row, logits, sizeof(float) * (size_t)V);
    /* the same token from the host at the same position: the same logits */
    int32_t tok = 3;
    ck_assert_int_eq(m->ops->forward(m, &tok, 1, 0, NULL, NULL, NULL, 0, &logits, &e), CV_OK);
    ck_assert_int_eq(memcmp(dev_row, logits, sizeof(float) * (size_t)V), 0);
    m->step = NULL;
    be->free(be, step);
    free(dev_row);
    cv_model_free(m);
    be->destroy(be);
}
END_TEST

/* ---- buffers kept across the generations of a session ---------------------------------
 *
 * A session reserves its activations and KV cache once and reuses them for every later prompt
 * that fits (generate.c), growing them for one that does not. A kernel that read a cache row
 * past the keys of its own generation, or a buffer assumed zero from its allocation, would then
 * see the previous prompt's values. This wrapper tracks the backend allocations made after the
 * model loaded (activations, caches, the loop's buffers) and fills every live one with NaN
 * (all bits set, in fp32 and in bf16) between two generations: each must still give a fresh
 * session's tokens and timeline, bit for bit. */
#define MAX_TRACKED 256
typedef struct {
    cv_backend b;
    cv_backend *inner;
    int n;
    void *p[MAX_TRACKED];
    size_t bytes[MAX_TRACKED];
} poison_backend;

static void *poison_alloc(cv_backend *b, size_t bytes) {
    poison_backend *pb = (poison_backend *)b;
    void *p = pb->inner->alloc(pb->inner, bytes);
    if (p) {
        ck_assert_int_lt(pb->n, MAX_TRACKED);
        pb->p[pb->n] = p, pb->bytes[pb->n++] = bytes;
    }
    return p;
}
static void poison_free(cv_backend *b, void *p) {
    poison_backend *pb = (poison_backend *)b;
    for (int i = 0; i < pb->n; i++)
        if (pb->p[i] == p) {
            pb->n--;
            pb->p[i] = pb->p[pb->n], pb->bytes[i] = pb->bytes[pb->n];
            break;
        }
    pb->inner->free(pb->inner, p);
}
static void poison_all(const poison_backend *pb) {
    for (int i = 0; i < pb->n; i++) memset(pb->p[i], 0xff, pb->bytes[i]);
}

static void same_run(const run_out *a, const run_out *b, const char *what) {
    ck_assert_int_eq((int)a->P, (int)b->P);
    ck_assert_int_eq((int)a->n, (int)b->n);
    for (size_t i = 0; i < a->n; i++) ck_assert_int_eq(a->ids[i], b->ids[i]);
    ck_assert_msg(cJSON_Compare(a->timeline, b->timeline, 1), "%s: the timeline differs", what);
    ck_assert_msg(cJSON_Compare(a->generated, b->generated, 1), "%s: generated differs", what);
}

static void reuse_case(const char *model) {
    const int G = 8;
    char lng[400] = "", longer[600] = "";
    for (int i = 0; i < 2; i++) strcat(lng, "The quick brown fox jumps over the lazy dog. ");
    for (int i = 0; i < 3; i++) strcat(longer, "A cat sat on a mat and looked at the sky. ");
    const char *prompts[3] = {lng, "Hi", longer}; /* the second fits, the third grows */
    run_out fresh[3], kept;
    cv_config c;
    cv_session *s;
    cv_error e;
    greedy_config(&c, model, G, 1);
    for (int i = 0; i < 3; i++) {
        ck_assert_msg(cv_session_open(&c, &s, NULL, &e) == CV_OK, "%s", e.msg);
        gen_in(s, &c, prompts[i], 1, &fresh[i]);
        cv_session_close(s);
    }
    ck_assert_int_lt((int)fresh[1].P, (int)fresh[0].P);
    ck_assert_int_gt((int)fresh[2].P, (int)fresh[0].P);
    ck_assert_msg(cv_session_open(&c, &s, NULL, &e) == CV_OK, "%s", e.msg);
    poison_backend pb = {.b = *s->be, .inner = s->be};
    pb.b.alloc = poison_alloc, pb.b.free = poison_free;
    s->be = s->m->be = &pb.b;
    int seq2seq = s->m->ops->encode != NULL;
    for (int i = 0; i < 3; i++) {
        if (i) { /* the first generation's reservation is live and tracked */
            ck_assert_int_ge(pb.n, 8);
            poison_all(&pb);
        }
        gen_in(s, &c, prompts[i], 1, &kept);
        char what[128];
        snprintf(what, sizeof what, "%s, prompt %d of one session", model, i);
        same_run(&kept, &fresh[i], what);
        /* the capacities are the largest asked for so far: the short prompt reserved nothing */
        int big = i == 2 ? 2 : 0;
        ck_assert_int_eq(s->m->max_T, (int)fresh[big].P);
        ck_assert_int_eq(s->m->n_ctx, seq2seq ? G : (int)fresh[big].P + G);
        free_out(&kept);
    }
    s->be = s->m->be = pb.inner;
    cv_session_close(s);
    for (int i = 0; i < 3; i++) free_out(&fresh[i]);
    cv_config_free(&c);
}

START_TEST(test_session_reuses_buffers) {
    reuse_case("tests/fixtures/gpt2-tiny");
    reuse_case("tests/fixtures/llama-tiny");
    reuse_case("tests/fixtures/t5-tiny");
}
END_TEST

/* ---- a long prompt in row chunks ----------------------------------------------------------
 *
 * generate.c runs a decoder-only prompt through the forward in chunks of CV_PREFILL_ROWS rows
 * (model.h cv_prefill_chunks): each chunk extends the KV cache, adds its rows to the prompt
 * step's records and its prompt surprisals, and only the last computes the LM head's row. The
 * whole report (every statistic, the health layer's prompt analysis, the tokens) must be the
 * one-call report bit for bit, and the buffers must be sized by the largest chunk. A wrapper
 * counts the forwards (one embedding each) and their positions. */
typedef struct {
    cv_backend b;
    cv_backend *inner;
    int n, rows[16], pos[16];
} chunk_backend;

static void chunk_embedding(cv_backend *b, float *out, const int32_t *tokens, int T,
                            const cv_weight *wte, const cv_weight *wpe, int pos0,
                            const int32_t *dpos, float scale) {
    chunk_backend *cb = (chunk_backend *)b;
    if (T > 1 && cb->n < 16) cb->rows[cb->n] = T, cb->pos[cb->n++] = pos0;
    cb->inner->embedding(cb->inner, out, tokens, T, wte, wpe, pos0, dpos, scale);
}

/* the report of one greedy generation as a JSON document, less what differs between runs (its
 * id, time and file name) */
static cJSON *chunked_doc(const char *model, const char *prompt, const char *rows,
                          chunk_backend *cb, int *max_T, size_t *P) {
    if (rows)
        setenv("CV_PREFILL_ROWS", rows, 1);
    else
        unsetenv("CV_PREFILL_ROWS");
    cv_config c;
    cv_session *s;
    cv_error e;
    greedy_config(&c, model, 6, 1);
    ck_assert_msg(cv_session_open(&c, &s, NULL, &e) == CV_OK, "%s", e.msg);
    memset(cb, 0, sizeof *cb);
    cb->b = *s->be, cb->inner = s->be;
    cb->b.embedding = chunk_embedding;
    s->be = s->m->be = &cb->b;
    int32_t *pids = NULL, *ids = NULL;
    size_t n = 0;
    ck_assert_int_eq(cv_session_tokenize(s, prompt, &pids, P, &e), CV_OK);
    cv_report rep;
    ck_assert_int_eq(cv_report_init(&rep, &e), CV_OK);
    ck_assert_int_eq(cv_session_fill_report(s, &c, prompt, pids, *P, &rep, &e), CV_OK);
    cv_status st = cv_session_generate(s, &c, pids, *P, 1, &rep, &ids, &n, NULL, NULL, &e);
    ck_assert_msg(st == CV_OK, "%s", e.msg);
    ck_assert_int_eq((int)n, 6);
    ck_assert_int_eq(cv_report_fill_run_config(&rep, &c, &e), CV_OK);
    char *json = NULL;
    size_t len = 0;
    ck_assert_int_eq(cv_report_to_json(&rep, 0, &json, &len, &e), CV_OK);
    cJSON *doc = cJSON_Parse(json);
    ck_assert_ptr_nonnull(doc);
    cJSON_DeleteItemFromObject(doc, "trace_id");
    cJSON_DeleteItemFromObject(doc, "created_at_utc");
    cJSON_DeleteItemFromObject(cJSON_GetObjectItem(doc, "summary"), "elapsed_ms");
    cJSON *sink = cJSON_GetObjectItem(cJSON_GetObjectItem(doc, "run_config"), "sink");
    cJSON_DeleteItemFromObject(sink, "target"); /* named after the trace id */
    ck_assert_ptr_nonnull(cJSON_GetObjectItem(doc, "timeline"));
    *max_T = s->m->max_T;
    free(json);
    free(ids);
    free(pids);
    cv_report_free(&rep);
    s->be = s->m->be = cb->inner;
    cv_session_close(s);
    cv_config_free(&c);
    unsetenv("CV_PREFILL_ROWS");
    return doc;
}

static void chunk_case(const char *model) {
    char prompt[2048] = "";
    for (int i = 0; i < 3; i++)
        strcat(prompt, "The quick brown fox jumps over the lazy dog, and a cat sat on a mat. ");
    chunk_backend cb;
    int max_T;
    size_t P;
    cJSON *whole = chunked_doc(model, prompt, "0", &cb, &max_T, &P);
    /* a prompt of several chunks that fits the fixture's 128 positions with 6 new tokens */
    ck_assert_msg(P >= 80 && P <= 120, "%s: the prompt has %zu tokens", model, P);
    ck_assert_int_eq(cb.n, 1);
    ck_assert_int_eq(max_T, (int)P);
    /* default cap (1,024 rows: one chunk), 64 rows (a remainder of its own), 32 rows (the
     * remainder joins the last chunk) and 40 (rounded up to 64) */
    const char *caps[] = {NULL, "64", "32", "40"};
    for (int k = 0; k < 4; k++) {
        cJSON *doc = chunked_doc(model, prompt, caps[k], &cb, &max_T, &P);
        const int cap = caps[k] ? (atoi(caps[k]) + 31) / 32 * 32 : 1024;
        const int n = cv_prefill_chunks((int)P, cap);
        ck_assert_int_eq(cb.n, n);
        if (caps[k]) ck_assert_int_ge(n, 2);
        for (int i = 0; i < n; i++) {
            ck_assert_int_eq(cb.pos[i], i * cap);
            ck_assert_int_ge(cb.rows[i], 32);
            ck_assert_int_eq(cb.pos[i] + cb.rows[i], i + 1 < n ? cb.pos[i + 1] : (int)P);
        }
        ck_assert_int_eq(max_T, cv_prefill_chunk_max((int)P, cap));
        if (caps[k]) ck_assert_int_lt(max_T, (int)P);
        ck_assert_msg(cJSON_Compare(doc, whole, 1), "%s: CV_PREFILL_ROWS=%s changes the report",
                      model, caps[k] ? caps[k] : "(default)");
        cJSON_Delete(doc);
    }
    cJSON_Delete(whole);
}

START_TEST(test_prompt_chunks_same_report) {
    chunk_case("tests/fixtures/gpt2-tiny");
    chunk_case("tests/fixtures/llama-tiny");
}
END_TEST

int main(void) {
    Suite *s = suite_create("step");
    TCase *tc = tcase_create("device_step");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_gpt2_device_token_same_trace);
    tcase_add_test(tc, test_llama_device_token_same_trace);
    tcase_add_test(tc, test_t5_keeps_host_token);
    tcase_add_test(tc, test_forward_device_token_needs_step);
    tcase_add_test(tc, test_gpt2_graph_replay_same_trace);
    tcase_add_test(tc, test_llama_graph_replay_same_trace);
    tcase_add_test(tc, test_session_reuses_buffers);
    tcase_add_test(tc, test_prompt_chunks_same_report);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
