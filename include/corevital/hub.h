/* hub.h — resolve a model name ("org/name", "name" or a local directory) to a local directory,
 * the way the huggingface_hub library does, sharing its cache and downloading what is missing
 * with libcurl (docs/hub.md).
 *
 * Environment: HF_HUB_CACHE (else HF_HOME/hub, else ~/.cache/huggingface/hub), HF_ENDPOINT
 * (default https://huggingface.co), HF_HUB_OFFLINE=1 (cache only), HF_TOKEN (else the token file
 * HF_TOKEN_PATH, default HF_HOME/token). The token is sent as a Bearer header and never logged. */
#ifndef COREVITAL_HUB_H
#define COREVITAL_HUB_H

#include "corevital/common.h"

typedef struct {
    char dir[4096];  /* local directory with config.json, tokenizer files, *.safetensors */
    char commit[64]; /* resolved commit hash, "" when the model came from a plain local directory */
    int from_network; /* 1 if anything was downloaded */
} cv_hub_result;

/* model: a local directory, or "org/name" / "name". revision: NULL = "main"; a branch, tag or
 * commit hash. Online, every file is checked with a HEAD request (as huggingface_hub does) and
 * downloaded only when its blob is not cached; a 40-hex commit whose files are all cached needs
 * no network. When the endpoint cannot be reached, a complete cached snapshot of the revision is
 * used (with a warning). Errors: CV_ERR_NET (HTTP/network, corrupt download), CV_ERR_IO (cache,
 * disk full, not cached while offline), CV_ERR_UNSUPPORTED (only PyTorch .bin weights),
 * CV_ERR_USAGE (not a directory and not a valid repo id). */
cv_status cv_hub_resolve(const char *model, const char *revision, cv_hub_result *out,
                         cv_error *err);

/* The cache directory huggingface_hub would use (HF_HUB_CACHE / HF_HOME / default), '~' expanded.
 */
cv_status cv_hub_cache_dir(char *out, size_t outsz, cv_error *err);

/* 1 if s is a valid Hub repo id ("name" or "org/name", huggingface_hub's rules), else 0. */
int cv_hub_valid_repo_id(const char *s);

/* What the client does with a server's answer, without a network (the fuzz harness and tests):
 * parse n_headers bytes of response header lines (several responses when redirected), follow
 * the Location against url as the client would, normalize the ETag, and parse body (NUL-ended,
 * or NULL) as a model.safetensors.index.json. CV_OK or an error naming what was wrong. */
cv_status cv_hub_parse_untrusted(const char *headers, size_t n_headers, const char *body,
                                 const char *url, cv_error *err);

#endif
