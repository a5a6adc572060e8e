/* view_internal.h — the HTML building blocks shared by the report and the comparison page. */
#ifndef COREVITAL_VIEW_INTERNAL_H
#define COREVITAL_VIEW_INTERNAL_H

#include "corevital/view.h"

/* The member at a dotted path ("model.quantization.method") or NULL. */
const cJSON *cv_json_at(const cJSON *o, const char *path);
void cv_html_escape(FILE *out, const char *s);
void cv_html_head(FILE *out, const char *title);
/* "#rrggbb" of the colour ramp at t in [0, 1] (grey for NaN). */
void cv_color_ramp(double t, char *buf, size_t n);
void cv_svg_line_chart(FILE *out, const char *id, const char *title, const double *x, int n,
                       int step0);
void cv_svg_heatmap(FILE *out, const char *id, const char *title, const double *m, int rows, int n,
                    int step0);
cv_status cv_view_compare_html(FILE *out, const cv_trace_view *a, const cv_trace_view *b, int div,
                               cv_error *err);

#endif
