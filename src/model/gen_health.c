/* gen_health.c — the generation loop's side of the health layer (gen_health.h).
 *
 * Per step, on the backend: the per-head attention records, the hidden-state non-finite / clip
 * counts and the logits' log-sum-exp are filled by the ops themselves (stats.h); here we add the
 * cosine of this step's final vector against the previous one (one row_cos over C values, the
 * previous vector kept in a backend buffer) and, for the prompt pass, the prompt surprisals:
 * the LM head over the prefill's final-norm rows in chunks of CHUNK rows, each chunk reduced to
 * one log-probability per row at once, so no P x V logits matrix ever exists.
 * Per step, on the host: the records are finalized into the `extensions` of the step and its
 * layers and into the run-level accumulators of src/health/, which only ever see scalars. */
#include "gen_health.h"

#include "corevital/generate.h"
#include "corevital/log.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHUNK 32 /* prompt rows per LM-head chunk */
#define LN2   0.69314718055994530942

struct cv_gen_health {
    cv_session *s;
    const cv_config *cfg;
    const cv_health_profile *prof;
    cv_health_run *run;
    int P, L, H, C, V, seq2seq;
    float *prev; /* backend (C): the previous step's final vector */
    cv_stop_on stop_on;
    FILE *stream;
    int stream_owned;
    cJSON *prompt_analysis; /* built at the prompt pass */
    cv_health_layer_step *lsteps;
    double *psurp; /* P - 1 prompt log-probabilities (ln), from the prefill */
    int sparse;    /* health.prompt_heads: the sparse prompt attention (CPU backend only) */
};

/* A float for extensions, null when not finite (our traces never carry NaN). Formatted when the
 * trace is written, not here in the generation loop (a few hundred values a step). */
static cJSON *jnum(double v) {
    return isfinite(v) ? cv_json_float_lazy(v) : cJSON_CreateNull();
}

static int add(cJSON *obj, const char *k, cJSON *v) {
    if (!v) return -1;
    cJSON_AddItemToObject(obj, k, v);
    return 0;
}

cv_status cv_gen_health_open(cv_gen_health **out, cv_session *s, const cv_config *cfg, int P,
                             int instrumented, cv_error *err) {
    *out = NULL;
    if (!instrumented || !cfg->health.enabled) return CV_OK;
    cv_gen_health *g = calloc(1, sizeof *g);
    if (!g) return cv_fail(err, CV_ERR_NOMEM, "out of memory");
    cv_model *m = s->m;
    cv_backend *be = s->be;
    g->s = s;
    g->cfg = cfg;
    g->P = P;
    g->L = cv_model_num_layers(m);
    g->H = m->cfg.num_heads;
    g->C = m->cfg.hidden_size;
    g->V = m->cfg.vocab_size;
    g->seq2seq = m->ops->encode != NULL;
    g->prof = cv_health_profile_for(m->cfg.architecture);
    g->sparse = cfg->health.prompt_heads && strcmp(be->name, "cpu") == 0;
    if (cfg->health.prompt_heads && !g->sparse)
        CV_WARN("health.prompt_heads: the sparse prompt attention is computed on the CPU backend "
                "only; not written for this %s run",
                be->name);
    char why[160];
    if (cv_stop_on_parse(cfg->health.stop_on, &g->stop_on, why, sizeof why)) {
        free(g);
        return cv_fail(err, CV_ERR_CONFIG, "health.stop_on: %s", why);
    }
    g->run = cv_health_run_new(g->prof, g->L, g->H, P);
    g->lsteps = calloc((size_t)g->L, sizeof *g->lsteps);
    g->prev = be->alloc(be, sizeof(float) * (size_t)g->C);
    /* the rows of one forward: the prompt, or its largest chunk (the reserve sized max_T) */
    int max_T = P < m->max_T ? P : m->max_T;
    if (max_T < 1) max_T = 1;
    if (m->xin_rows < max_T) { /* a session runs prompts of any length: grow, never overrun */
        cv_model_release(m, m->xin);
        m->xin = cv_model_alloc(m, sizeof(float) * (size_t)max_T * g->C, err);
        m->xin_rows = m->xin ? max_T : 0;
    }
    if (!g->run || !g->lsteps || !g->prev || !m->xin) {
        cv_gen_health_close(g);
        return cv_fail(err, CV_ERR_NOMEM, "out of memory for the health layer");
    }
    if (cfg->health.stream) {
        if (strcmp(cfg->health.stream, "-") == 0) {
            g->stream = stdout;
        } else {
            g->stream = fopen(cfg->health.stream, "w");
            g->stream_owned = 1;
            if (!g->stream) {
                cv_gen_health_close(g);
                return cv_fail(err, CV_ERR_IO, "--stream %s: cannot open for writing",
                               cfg->health.stream);
            }
        }
    }
    *out = g;
    return CV_OK;
}

void cv_gen_health_close(cv_gen_health *g) {
    if (!g) return;
    cv_backend *be = g->s->be;
    if (g->prev) be->free(be, g->prev);
    if (g->stream_owned && g->stream) fclose(g->stream);
    cv_health_run_free(g->run);
    cJSON_Delete(g->prompt_analysis);
    free(g->lsteps);
    free(g->psurp);
    free(g);
}

void cv_gen_health_layout(const cv_gen_health *g, cv_stats_layout *lay, int prompt_pass) {
    if (!g) return;
    /* decoder steps: each head's last query row; the encoder: every row */
    int encoder = g->seq2seq && prompt_pass;
    cv_stats_layout_health(lay, g->H, !encoder, prompt_pass ? g->P : 0);
    if (prompt_pass && g->sparse) cv_stats_layout_sparse(lay);
}

/* Prompt surprisals (HEALTH.md §5) from the prefill's final-norm rows: row t < P - 1 predicts
 * token t + 1. Where the backend fuses the head with the log-softmax (head_logprob: the CPU's
 * packed matmul folds each tile into the rows' log-sum-exp) no logits are stored at all.
 * Otherwise, with a dense LM head, the vocabulary is cut into slices of VS rows and each slice's
 * logits are computed for every prompt row at once (a wide matmul, the fast kernels), folded into
 * a running log-sum-exp per row: no P x V matrix, at most SLICE_FLOATS floats of logits. A
 * quantized head goes through rows in chunks of CHUNK instead. Fills g->psurp (ln p). */
#define SLICE_FLOATS (8u << 20)
static cv_status prompt_surprisals(cv_gen_health *g, const int32_t *prompt, int row0,
                                   cv_error *err) {
    cv_model *m = g->s->m;
    cv_backend *be = g->s->be;
    const int V = g->V, C = g->C;
    const cv_weight *w = m->head_w;
    if (row0 == 0) { /* the prompt's first (or only) chunk */
        free(g->psurp);
        g->psurp = malloc(sizeof(double) * (size_t)(g->P > 1 ? g->P - 1 : 1));
    }
    if (!g->psurp) return cv_fail(err, CV_ERR_NOMEM, "out of memory");
    /* this call's rows: the head_rows final-norm rows from prompt row row0, the last prompt row
     * (which predicts no prompt token) left out */
    int R = m->head_rows;
    if (row0 + R > g->P - 1) R = g->P - 1 - row0;
    if (R <= 0) return CV_OK;
    double *psurp = g->psurp + row0;
    prompt += row0;
    if (be->head_logprob) { /* the head and the log-softmax fused, where the backend offers it */
        double *dps = be->alloc(be, sizeof(double) * (size_t)R);
        if (!dps) return cv_fail(err, CV_ERR_NOMEM, "out of memory for the prompt surprisals");
        int done = be->head_logprob(be, dps, m->head_in, w, R, prompt + 1);
        if (done) be->download(be, psurp, dps, sizeof(double) * (size_t)R);
        be->free(be, dps);
        if (done) return CV_OK;
    }
    if (w->format == CV_WFMT_DENSE) {
        size_t vs = SLICE_FLOATS / (size_t)R;
        vs = vs < 256 ? 256 : vs > (size_t)V ? (size_t)V : vs & ~(size_t)15;
        float *buf = be->alloc(be, sizeof(float) * (size_t)R * vs);
        double *state = be->alloc(be, sizeof(double) * 3 * (size_t)R);
        double *host = malloc(sizeof(double) * 3 * (size_t)R);
        if (!buf || !state || !host) {
            if (buf) be->free(be, buf);
            if (state) be->free(be, state);
            free(host);
            return cv_fail(err, CV_ERR_NOMEM, "out of memory for the prompt surprisals");
        }
        for (int t = 0; t < R; t++)
            host[3 * t] = -INFINITY, host[3 * t + 1] = 0.0, host[3 * t + 2] = NAN;
        be->upload(be, state, host, sizeof(double) * 3 * (size_t)R);
        size_t es = cv_dtype_size(w->dtype);
        for (size_t c0 = 0; c0 < (size_t)V; c0 += vs) {
            size_t n = (size_t)V - c0 < vs ? (size_t)V - c0 : vs;
            cv_weight slice = *w; /* rows c0 .. c0 + n of the (V, C) head, in place */
            slice.data = (const char *)w->data + c0 * (size_t)C * es;
            slice.rows = (int64_t)n;
            slice.owned = NULL;
            be->matmul(be, buf, m->head_in, &slice, NULL, R);
            be->logprob_accum(be, state, buf, R, (int)n, (int)c0, prompt + 1);
        }
        be->download(be, host, state, sizeof(double) * 3 * (size_t)R);
        for (int t = 0; t < R; t++)
            psurp[t] = host[3 * t + 2] - (host[3 * t] + log(host[3 * t + 1]));
        be->free(be, buf);
        be->free(be, state);
        free(host);
        return CV_OK;
    }
    double *dps = be->alloc(be, sizeof(double) * (size_t)R);
    float *chunk = be->alloc(be, sizeof(float) * CHUNK * (size_t)V);
    if (!dps || !chunk) {
        if (dps) be->free(be, dps);
        if (chunk) be->free(be, chunk);
        return cv_fail(err, CV_ERR_NOMEM, "out of memory for the prompt surprisals");
    }
    for (int r0 = 0; r0 < R; r0 += CHUNK) {
        int n = R - r0 < CHUNK ? R - r0 : CHUNK;
        be->matmul(be, chunk, m->head_in + (size_t)r0 * C, w, NULL, n);
        be->target_logprob(be, dps + r0, chunk, n, V, prompt + r0 + 1);
    }
    be->download(be, psurp, dps, sizeof(double) * (size_t)R);
    be->free(be, dps);
    be->free(be, chunk);
    return CV_OK;
}

cv_status cv_gen_health_after_forward(cv_gen_health *g, int i, double *dev_arena,
                                      const cv_stats_layout *lay, const int32_t *prompt, int row0,
                                      cv_error *err) {
    if (!g) return CV_OK;
    cv_model *m = g->s->m;
    cv_backend *be = g->s->be;
    if (!m->head_in) return cv_fail(err, CV_ERR_RUNTIME, "health: the forward kept no final rows");
    const float *last = m->head_in + (size_t)(m->head_rows - 1) * g->C;
    if (lay->prompt_P > 0 && !g->seq2seq && m->head_w) {
        cv_status st = prompt_surprisals(g, prompt, row0, err);
        if (st != CV_OK) return st;
    }
    /* into the arena's step slot (reset to 0): it comes back with the records */
    if (i > 0) be->row_cos(be, cv_stats_step(dev_arena, lay) + CV_STEP_COS, g->prev, last, 1, g->C);
    be->copy(be, g->prev, last, sizeof(float) * (size_t)g->C);
    return CV_OK;
}

/* ---- per-layer values --------------------------------------------------------------------- */

static cJSON *attn_json(const cv_attn_health *a) {
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    int bad = add(o, "entropy_mean", jnum(a->entropy_mean)) |
              add(o, "entropy_mean_normalized", jnum(a->entropy_mean_normalized)) |
              add(o, "entropy_min", jnum(a->entropy_min)) |
              add(o, "entropy_max", jnum(a->entropy_max)) |
              add(o, "concentration_max", jnum(a->concentration_max)) |
              add(o, "concentration_min", jnum(a->concentration_min)) |
              add(o, "collapsed_head_count", cJSON_CreateNumber(a->collapsed_head_count)) |
              add(o, "collapsed_head_rate", jnum(a->collapsed_head_rate)) |
              add(o, "focused_head_count", cJSON_CreateNumber(a->focused_head_count)) |
              add(o, "valid", cJSON_CreateBool(a->valid));
    if (bad) cJSON_Delete(o);
    return bad ? NULL : o;
}

/* Finalize one layer's health records into layer->extensions.health and `ls` (run feed). */
static cv_status layer_health(const cv_gen_health *g, const double *hrec, const double *heads,
                              const double *cross, double focus, cv_layer_summary *layer,
                              cv_health_layer_step *ls, cv_error *err) {
    cv_hidden_health hh;
    cv_attn_health ah, ch = {0};
    cv_hidden_health_finalize(hrec, g->C, &hh);
    cv_attn_health_finalize(heads, g->H, focus, &ah);
    if (cross) cv_attn_health_finalize(cross, g->H, focus, &ch);
    ls->l2 = hh.l2;
    ls->has_nan = hh.has_nan || ah.has_nan || (cross && ch.has_nan);
    ls->has_inf = hh.has_inf;
    ls->attn_valid = ah.valid;
    ls->collapsed_heads = ah.collapsed_head_count;
    ls->focused_heads = ah.focused_head_count;
    ls->entropy_mean = ah.entropy_mean;
    if (!layer) return CV_OK;
    cJSON *h = cJSON_CreateObject(), *hid = cJSON_CreateObject();
    int bad = !h || !hid;
    if (!bad) {
        bad |= add(h, "attention", attn_json(&ah));
        if (cross) bad |= add(h, "cross_attention", attn_json(&ch));
        bad |= add(hid, "clipped", cJSON_CreateBool(hh.clipped)) |
               add(hid, "clip_fraction", jnum(hh.clip_fraction)) |
               add(hid, "clip_max_before",
                   jnum(hh.clip_max_before)); /* null unless clipped; inf: null */
        cJSON_AddItemToObject(h, "hidden", hid);
        hid = NULL;
        bad |= add(h, "has_nan", cJSON_CreateBool(ls->has_nan)) |
               add(h, "has_inf", cJSON_CreateBool(ls->has_inf));
    }
    if (!bad && !layer->extensions) bad = !(layer->extensions = cJSON_CreateObject());
    if (bad) {
        cJSON_Delete(h);
        cJSON_Delete(hid);
        return cv_fail(err, CV_ERR_NOMEM, "out of memory");
    }
    cJSON_AddItemToObject(layer->extensions, "health", h);
    return CV_OK;
}

/* The prompt analysis from a prompt pass's records (HEALTH.md §5). */
static cv_status prompt_analysis(cv_gen_health *g, const double *host, const cv_stats_layout *lay,
                                 int n_layers, cv_error *err) {
    const int P = g->P, H = g->H;
    cJSON *pa = cJSON_CreateObject(), *ps = cJSON_CreateArray(), *lt = cJSON_CreateArray(),
          *layers = cJSON_CreateArray();
    double *basins = malloc(sizeof(double) * (size_t)n_layers * H + 1);
    int bad = !pa || !ps || !lt || !layers || !basins;
    const double *psv = g->psurp;
    if (!bad && !g->seq2seq && psv)
        for (int t = 0; t < P - 1; t++)
            bad |= !cJSON_AddItemToArray(ps, jnum(cv_round_decimals(-psv[t] / LN2, 4))) ? 1 : 0;
    const double *ltv = cv_stats_ltrans((double *)host, lay);
    for (int l = 1; !bad && l < n_layers; l++)
        cJSON_AddItemToArray(lt, jnum(cv_round_decimals(1.0 - ltv[l] / P, 6)));
    for (int l = 0; !bad && l < n_layers; l++) {
        const double *b = cv_stats_basin((double *)host, lay, l);
        cJSON *lo = cJSON_CreateObject(), *bs = cJSON_CreateArray();
        bad |= !lo || !bs;
        for (int h = 0; !bad && h < H; h++) {
            double v =
                P < 3 ? 1.0 : cv_round_decimals((b[2 * h] / P) / (b[2 * h + 1] / P + 1e-10), 4);
            basins[(size_t)l * H + h] = v;
            cJSON_AddItemToArray(bs, jnum(v));
        }
        if (bad) {
            cJSON_Delete(lo);
            cJSON_Delete(bs);
            break;
        }
        if (lay->sparse) { /* {query_indices, key_indices, weights} per head (upstream's SoA) */
            cJSON *heads = cJSON_CreateArray();
            const double *sp = cv_stats_sparse((double *)host, lay, l);
            for (int h = 0; heads && h < H; h++) {
                const double *o = sp + (size_t)h * CV_SPARSE_SLOTS;
                cJSON *ho = cJSON_CreateObject(), *qi = cJSON_CreateArray(),
                      *ki = cJSON_CreateArray(), *wv = cJSON_CreateArray();
                if (!ho || !qi || !ki || !wv) {
                    cJSON_Delete(ho), cJSON_Delete(qi), cJSON_Delete(ki), cJSON_Delete(wv);
                    bad = 1;
                    break;
                }
                for (int j = 0; j < (int)o[0]; j++) {
                    cJSON_AddItemToArray(qi, cJSON_CreateNumber(o[1 + 3 * j]));
                    cJSON_AddItemToArray(ki, cJSON_CreateNumber(o[2 + 3 * j]));
                    cJSON_AddItemToArray(wv, jnum(cv_round_decimals(o[3 + 3 * j], 4)));
                }
                cJSON_AddItemToObject(ho, "query_indices", qi);
                cJSON_AddItemToObject(ho, "key_indices", ki);
                cJSON_AddItemToObject(ho, "weights", wv);
                cJSON_AddItemToArray(heads, ho);
            }
            if (!heads) bad = 1;
            if (heads) cJSON_AddItemToObject(lo, "heads", heads);
        }
        cJSON_AddItemToObject(lo, "basin_scores", bs);
        cJSON_AddItemToArray(layers, lo);
    }
    if (!bad) {
        cJSON_AddItemToObject(pa, "prompt_surprisals", ps);
        cJSON_AddItemToObject(pa, "layer_transformations", lt);
        cJSON_AddItemToObject(pa, "layers", layers);
        ps = lt = layers = NULL;
        bad = cv_health_run_set_basins(g->run, basins, n_layers, H) != 0;
    }
    free(basins);
    cJSON_Delete(ps);
    cJSON_Delete(lt);
    cJSON_Delete(layers);
    if (bad) {
        cJSON_Delete(pa);
        return cv_fail(err, CV_ERR_NOMEM, "out of memory");
    }
    cJSON_Delete(g->prompt_analysis);
    g->prompt_analysis = pa;
    return CV_OK;
}

cv_status cv_gen_health_encoder(cv_gen_health *g, const double *host, const cv_stats_layout *lay,
                                cv_report *rep, cv_error *err) {
    if (!g) return CV_OK;
    const int NL = lay->n_layers;
    cv_status st = CV_OK;
    for (int l = 0; l < NL && st == CV_OK; l++) {
        cv_health_layer_step ls;
        st = layer_health(g, cv_stats_hidden((double *)host, lay, l),
                          cv_stats_heads((double *)host, lay, l), NULL, g->prof->focus_threshold,
                          rep && rep->encoder_layers ? &rep->encoder_layers[l] : NULL, &ls, err);
    }
    return st == CV_OK ? prompt_analysis(g, host, lay, NL, err) : st;
}

/* ---- per-step values ---------------------------------------------------------------------- */

static cJSON *step_json(const cv_health_step *hs) {
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    int bad = add(o, "entropy_bits", jnum(hs->entropy_bits)) |
              add(o, "perplexity", jnum(hs->perplexity)) |
              add(o, "surprisal_bits", jnum(hs->surprisal_bits)) |
              add(o, "top_k_margin", jnum(hs->top_k_margin)) |
              add(o, "topk_mass", jnum(hs->topk_mass)) | add(o, "cos_prev", jnum(hs->cos_prev));
    if (bad) cJSON_Delete(o);
    return bad ? NULL : o;
}

static void stream_line(cv_gen_health *g, const cv_health_step *hs, int32_t token) {
    cJSON *o = cJSON_CreateObject();
    if (!o) return;
    cJSON_AddNumberToObject(o, "step_index", (double)hs->step_index);
    cJSON_AddNumberToObject(o, "token_id", token);
    cJSON_AddStringToObject(o, "token_text", hs->token_text ? hs->token_text : "");
    cJSON *h = step_json(hs);
    if (h) cJSON_AddItemToObject(o, "health", h);
    cJSON_AddItemToObject(o, "risk", jnum(cv_health_risk_now(g->run)));
    cJSON *f = cv_health_flags_json(g->run);
    if (f) cJSON_AddItemToObject(o, "flags", f);
    char *line = cJSON_PrintUnformatted(o);
    if (line) {
        fputs(line, g->stream);
        fputc('\n', g->stream);
        fflush(g->stream);
        cJSON_free(line);
    }
    cJSON_Delete(o);
}

cv_status cv_gen_health_step(cv_gen_health *g, int i, const double *host,
                             const cv_stats_layout *lay, int32_t token, float token_logit,
                             cv_timeline_step *step, const char **stop, cv_error *err) {
    *stop = NULL;
    if (!g) return CV_OK;
    cv_status st;
    if (i == 0 && lay->prompt_P > 0 && !g->seq2seq &&
        (st = prompt_analysis(g, host, lay, g->L, err)) != CV_OK)
        return st;
    for (int l = 0; l < g->L; l++)
        if ((st = layer_health(g, cv_stats_hidden((double *)host, lay, l),
                               cv_stats_heads((double *)host, lay, l),
                               cv_stats_cross_heads((double *)host, lay, l), 0.9,
                               step ? &step->layers[l] : NULL, &g->lsteps[l], err)) != CV_OK)
            return st;

    /* logits (HEALTH.md §2), on the raw full-vocabulary row */
    cv_logit_health lh;
    cv_logit_health_of(cv_stats_logits((double *)host, lay), token, token_logit, &lh);
    cv_health_step hs;
    memset(&hs, 0, sizeof hs);
    hs.step_index = (int64_t)g->P + i; /* as the timeline's step_index */
    hs.token_text = step ? step->token_text : NULL;
    hs.entropy_bits = lh.entropy_bits;
    hs.perplexity = lh.perplexity;
    hs.surprisal_bits = lh.surprisal_bits;
    hs.top_k_margin = lh.top_k_margin;
    hs.topk_mass = lh.topk_mass;
    hs.cos_prev = i > 0 ? cv_stats_step((double *)host, lay)[CV_STEP_COS] : NAN;
    hs.logits_nan = lh.nan;
    hs.logits_inf = lh.inf;
    if (cv_health_run_add_step(g->run, &hs, g->lsteps))
        return cv_fail(err, CV_ERR_NOMEM, "out of memory");
    if (step) {
        cJSON *h = step_json(&hs);
        if (!h || (!step->extensions && !(step->extensions = cJSON_CreateObject()))) {
            cJSON_Delete(h);
            return cv_fail(err, CV_ERR_NOMEM, "out of memory");
        }
        cJSON_AddItemToObject(step->extensions, "health", h);
    }
    if (g->stream) stream_line(g, &hs, token);
    if (g->stop_on.repetition && cv_health_repetition(g->run))
        *stop = "repetition";
    else if (g->stop_on.nan && (cv_health_nan(g->run) || cv_health_inf(g->run)))
        *stop = "nan";
    else if (g->stop_on.risk >= 0 && cv_health_risk_now(g->run) > g->stop_on.risk)
        *stop = "risk";
    return CV_OK;
}

cv_status cv_gen_health_finish(cv_gen_health *g, cv_report *rep, const char *prompt,
                               const char *stop, int64_t stop_step, cv_error *err) {
    if (!g || !rep) return CV_OK;
    if (!rep->extensions && !(rep->extensions = cJSON_CreateObject()))
        return cv_fail(err, CV_ERR_NOMEM, "out of memory");
    if (g->prompt_analysis) {
        cJSON_AddItemToObject(rep->extensions, "prompt_analysis", g->prompt_analysis);
        g->prompt_analysis = NULL;
    }
    if (cv_health_finish(g->run, prompt, g->cfg->model.hf_id, rep->extensions))
        return cv_fail(err, CV_ERR_NOMEM, "out of memory");
    if (stop) {
        cJSON *o = cJSON_CreateObject();
        if (!o) return cv_fail(err, CV_ERR_NOMEM, "out of memory");
        char cond[48];
        if (strcmp(stop, "risk") == 0)
            snprintf(cond, sizeof cond, "risk>%g", g->stop_on.risk);
        else
            snprintf(cond, sizeof cond, "%s", stop);
        cJSON_AddStringToObject(o, "condition", cond);
        cJSON_AddNumberToObject(o, "step_index", (double)stop_step);
        cJSON_AddItemToObject(o, "risk", jnum(cv_health_risk_now(g->run)));
        cJSON_AddItemToObject(rep->extensions, "health_stop", o);
        cv_status st = cv_report_add_warning(rep, "HEALTH_STOP",
                                             "generation stopped after step %lld: the --stop-on "
                                             "condition '%s' held",
                                             (long long)stop_step, cond);
        if (st != CV_OK) return cv_fail(err, st, "out of memory");
    }
    return CV_OK;
}
