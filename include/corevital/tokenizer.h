/* tokenizer.h — Hugging Face compatible tokenizers (byte-level BPE, SentencePiece BPE, Unigram).
 *
 * Reads a model's tokenizer.json (or GPT-2's older vocab.json + merges.txt pair) and reproduces
 * what the Hugging Face `tokenizers` library does with that file, id for id:
 *   added/special tokens split out first (lstrip/rstrip/single_word/normalized flags),
 *   normalizer per remaining segment, pre-tokenizer, model (BPE or Unigram), post-processor.
 * Decoding runs the file's decoder chain, then optionally transformers' clean-up of spaces.
 *
 * Input text: HF's Python API takes `str`, so bytes that are not valid UTF-8 never reach it; a
 * caller holding raw bytes decodes them with errors="replace" first. cv_tokenizer_encode does the
 * same: every maximal invalid UTF-8 subsequence becomes U+FFFD (the Unicode "maximal subpart"
 * rule that Python's decoder and Rust's from_utf8_lossy share), then tokenizes that text.
 *
 * Decode of a single id (trace token_text = decode([id]) with special tokens shown): transformers
 * applies its `clean_up_tokenization_spaces` flag there too. Its value per family, as
 * transformers >= 4.45 (and 5.x, the validated reference) resolves it:
 *   GPT-2  : no tokenizer_config.json entry, class default False -> no clean-up.
 *   Llama-2: tokenizer_config.json says false -> no clean-up.
 *   Llama-3: tokenizer_config.json says true, but transformers 5 ignores the flag for BPE
 *            tokenizers (it logs "Ignoring clean_up_tokenization_spaces=True for BPE"); 4.45-4.57
 *            would apply it. cv_tokenizer_clean_up_default() reports the file's value.
 *   T5     : no entry in flan-t5's config -> class default False -> no clean-up.
 * So token_text is cv_tokenizer_decode(tok, &id, 1, 0, 0) for all of them. A byte-level token
 * holding part of a multi-byte character decodes to U+FFFD, as in HF.
 * generated.output_text is cv_tokenizer_decode(tok, ids, n, 1, 1) (SPEC: skip + clean-up). */
#ifndef COREVITAL_TOKENIZER_H
#define COREVITAL_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "corevital/common.h"

typedef struct cv_tokenizer cv_tokenizer;

/* Load from a model directory: tokenizer.json if present, else vocab.json + merges.txt (GPT-2
 * style, with <|endoftext|> as the special token). tokenizer_config.json and
 * special_tokens_map.json are read when present (the latter wins, as in transformers):
 * bos/eos/pad token names, clean_up_tokenization_spaces, and for Llama tokenizer classes
 * add_bos_token / add_eos_token (transformers rebuilds the post-processor from them).
 * load_dir follows transformers 5 (the version the Python reference was validated with, what
 * AutoTokenizer.from_pretrained(dir) gives): for tokenizer_class LlamaTokenizer(Fast) it rebuilds
 * the pipeline like transformers 5's class does (Metaspace pre-tokenizer instead of the file's
 * Prepend+Replace normalizer; legacy / add_prefix_space from the config). That changes ids only
 * where a text segment starts with a space. cv_tokenizer_load_json always runs the file as HF
 * `tokenizers` (and transformers 4.x) does. Other classes (GPT-2, T5, TokenizersBackend,
 * PreTrainedTokenizerFast) tokenize exactly as their tokenizer.json.
 *
 * Supported tokenizer.json components (anything else is CV_ERR_UNSUPPORTED naming it):
 *   model: BPE (byte_fallback, fuse_unk, ignore_merges, unk_token), Unigram (unk_id);
 *   normalizer: Sequence, Prepend, Replace (literal, or the regex " {2,}"), NFC/NFD/NFKC/NFKD,
 *     Lowercase, Strip, StripAccents, Precompiled (SentencePiece charsmap, T5);
 *   pre_tokenizer: Sequence, ByteLevel, Split (the GPT-2 and Llama-3 regexes, Isolated),
 *     WhitespaceSplit, Metaspace;
 *   decoder: Sequence, ByteLevel, Replace, ByteFallback, Fuse, Strip, Metaspace;
 *   post_processor: TemplateProcessing, ByteLevel, Sequence, Bert/RobertaProcessing.
 * A loaded tokenizer is read-only: encode/decode may run from several threads at once. */
cv_status cv_tokenizer_load_dir(const char *dir, cv_tokenizer **out, cv_error *err);
/* Load one tokenizer.json file (no tokenizer_config.json). */
cv_status cv_tokenizer_load_json(const char *tokenizer_json_path, cv_tokenizer **out,
                                 cv_error *err);
/* Load from an in-memory tokenizer.json text; `name` is used in error messages. */
cv_status cv_tokenizer_load_json_text(const char *json, size_t len, const char *name,
                                      cv_tokenizer **out, cv_error *err);
/* Load GPT-2's vocab.json + merges.txt pair. */
cv_status cv_tokenizer_load_vocab_merges(const char *vocab_json_path, const char *merges_txt_path,
                                         cv_tokenizer **out, cv_error *err);
void cv_tokenizer_free(cv_tokenizer *tok);

/* Encode UTF-8 text (invalid bytes become U+FFFD, see above). add_special = 1 applies the
 * post-processor (Llama BOS, T5 </s>) like HF's default. *ids is malloc'd (caller frees; may be
 * NULL when *n_ids is 0). */
cv_status cv_tokenizer_encode(const cv_tokenizer *tok, const char *text, size_t len,
                              int add_special, int32_t **ids, size_t *n_ids, cv_error *err);

/* Decode to a malloc'd NUL-terminated UTF-8 string like HF tokenizer.decode(ids,
 * skip_special_tokens, clean_up_tokenization_spaces). Unknown ids are skipped (as HF does).
 * Returns NULL only when out of memory. */
char *cv_tokenizer_decode(const cv_tokenizer *tok, const int32_t *ids, size_t n, int skip_special,
                          int clean_up_spaces);

/* The same, also giving the byte length (the text can contain U+0000 from a <0x00> token). */
char *cv_tokenizer_decode_len(const cv_tokenizer *tok, const int32_t *ids, size_t n,
                              int skip_special, int clean_up_spaces, size_t *out_len);

/* transformers' clean_up_tokenization_spaces (" ." -> "." ...) applied to a string, in place. */
void cv_tokenizer_clean_up_spaces(char *s);

/* Largest id + 1 over the model vocab and the added tokens (GPT-2 50257, Llama-2 32000,
 * Llama-3 128256): every id encode can return is below it. */
int32_t cv_tokenizer_vocab_size(const cv_tokenizer *tok);
int32_t cv_tokenizer_bos_id(const cv_tokenizer *tok); /* -1 when none */
int32_t cv_tokenizer_eos_id(const cv_tokenizer *tok); /* -1 when none */
int32_t cv_tokenizer_pad_id(const cv_tokenizer *tok); /* -1 when none */
int cv_tokenizer_is_special(const cv_tokenizer *tok, int32_t id);
/* The token string of an id (added tokens first, then the model vocab), NULL if unknown. */
const char *cv_tokenizer_id_to_token(const cv_tokenizer *tok, int32_t id);
/* The id of a token string, -1 if unknown. */
int32_t cv_tokenizer_token_to_id(const cv_tokenizer *tok, const char *token);
/* clean_up_tokenization_spaces from tokenizer_config.json (0 when absent). */
int cv_tokenizer_clean_up_default(const cv_tokenizer *tok);

#endif
