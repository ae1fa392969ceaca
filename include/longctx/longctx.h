// longctx public C++ API: load a model, open a session, feed text or tokens, read logits,
// generate with a streaming callback. The CLI, the server and the evaluation tools use only
// this header (plus the internal headers they need for format work).
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace lcx {
struct Model;
}

namespace longctx {

// Thrown for every user-fixable problem (bad path, bad file, bad flag, prompt too long).
// It is lcx::Error; catch std::runtime_error to stay independent of the internals.

struct LoadOptions {
  std::string tokenizer_path;  // --tokenizer FILE when the model has none
  // Weight files: "mmap" maps them (shared page cache, loads lazily), "copy" reads them into
  // 2 MiB transparent huge pages (faster decode: the prefetchers do not stop every 4 KiB),
  // "auto" copies when the kernel offers huge pages and a file fits in 60 % of free memory.
  std::string weights = "auto";
  // Rewrite weights in memory into the layout the kernels read fastest (today: Q4_0 matrices
  // into 16-row panels for the AVX-512 decode GEMV; same size, same results up to float
  // summation order). false (--no-repack) keeps the file's layout.
  bool repack = true;
  // Configuration overrides as command-line flags and values, e.g. {"--rope-scaling","yarn"},
  // {"--rope-scale","4"}, {"--last-context-length","1024"}, {"--mem-dtype","float32"}.
  // Command line beats config.json / GGUF metadata.
  std::vector<std::pair<std::string, std::string>> overrides;
};

class Model {
 public:
  static std::shared_ptr<Model> load(const std::string& path, const LoadOptions& opt = {});
  ~Model();

  // add_bos: BOS first when the model's tokenizer adds one (not for tokenizer_config.json
  // add_bos_token false, a GGUF add_bos_token false, or a tokenizer.json without it).
  std::vector<int32_t> tokenize(const std::string& text, bool add_bos = true) const;
  std::string detokenize(const std::vector<int32_t>& ids) const;
  int32_t n_vocab() const;
  int64_t n_ctx_train() const;
  bool has_fot_memory() const;
  std::string describe() const;  // multi-line summary for `longctx info`

  const lcx::Model& impl() const { return *m_; }
  lcx::Model& impl_mut() { return *m_; }

 private:
  Model() = default;
  std::unique_ptr<lcx::Model> m_;
};

// The CPU kernels this process runs, e.g. "avx512 + amx (prompt GEMMs)" (LONGCTX_KERNELS and
// LONGCTX_AMX applied): for benchmark records.
std::string kernels_description();

// Which flags LoadOptions::overrides understands, with help text.
std::string override_flags_help();
bool is_override_flag(const std::string& flag);

struct SessionOptions {
  int n_threads = 0;          // 0: all cores
  int64_t n_ctx = 0;          // LLaMA: hard context limit (0: none; warns past the trained context)
  int64_t n_batch = 512;      // prompt tokens per forward call (LLaMA)
  int64_t mem_topk = 0;       // LongLLaMA: attend to the top-k memory keys (0: all)
  int64_t mem_max_tokens = 0; // LongLLaMA: cap on memory tokens (0: none); oldest dropped first
  // LongLLaMA with mem_topk: how the top-k memory keys are found. "exact" scores every memory
  // key; "hnsw" asks an approximate HNSW index per memory layer and kv head (faster on large
  // memories, costs index memory and build time; rebuilt after load_state).
  std::string mem_index = "exact";
  int hnsw_ef = 0;            // hnsw: search beam width (0: max(128, 4 * mem_topk))
  int hnsw_m = 16;            // hnsw: graph degree
  // Local KV cache storage (llama.cpp's -ctk/-ctv): "f32" (default: exact, as the reference),
  // "f16", "bf16" or "q8_0" (per-row int8). f16 halves the bytes every decode step reads at
  // depth; LongLLaMA memory keeps its own mem_dtype.
  std::string cache_type = "f32";
  std::function<void(const std::string&)> on_warning;  // one-time warnings (CLI: stderr)
};

struct SamplingParams {
  float temperature = 0.8f;  // 0: greedy
  int32_t top_k = 40;
  float top_p = 0.95f;
  float min_p = 0.05f;
  float repeat_penalty = 1.0f;
  int32_t repeat_last_n = 64;
  uint64_t seed = 0xC0FFEE;
  // Added to the logits before sampling (OpenAI's logit_bias): (token id, bias); -100 all but
  // bans a token, +100 all but forces it. Log-probabilities are reported without it.
  std::vector<std::pair<int32_t, float>> logit_bias;
};

// Log-probability of a token under the model's distribution (log-softmax of the raw logits:
// before repetition penalty, top-k/p and temperature, as OpenAI's and vLLM's `logprobs`
// report it), with the n most likely tokens (descending; ties by lower id).
struct TokenLogprob {
  int32_t id = -1;
  float logprob = 0.0f;
  std::vector<std::pair<int32_t, float>> top;  // (token id, log-probability)
};
// logits: [n_vocab] (one row of Session::logits() or of feed_with_logits).
TokenLogprob token_logprob(const float* logits, int32_t n_vocab, int32_t id, int n_top);

struct GenerateOptions {
  int32_t n_predict = 128;
  SamplingParams sampling;
  std::vector<std::string> stop;  // stop strings (not included in the output)
  bool ignore_eos = false;
  // >= 0: report each generated token's log-probability and this many alternatives
  // (Piece::logprob, GenerateResult::logprobs); -1: off (no extra work per token).
  int logprobs = -1;
  // JSON mode (OpenAI's response_format json_object): only tokens that keep the output a prefix
  // of one JSON object are sampled, and generation ends ("stop") when the object closes.
  bool json_object = false;
  // Prompt lookup decoding (n-gram speculation, as vLLM's "ngram" speculative decoding and
  // llama.cpp's lookup): when the last tokens also occur earlier in the prompt or output, the
  // tokens that followed them there are fed as up to `lookup` drafts together with the sampled
  // token, in one forward call. Each draft that the sampler then picks itself costs no further
  // forward. The sampler sees exactly the logits and random draws it would without drafts, so
  // the output is the same (up to float summation order: a several-token call may round
  // attention differently). A 2-token call costs ~1.05-1.2x a 1-token one on a memory-bound CPU
  // decode (TinyLlama Q8_0 / F16, 2 threads), a 4-token call ~2x (the int8 / f32 dot products
  // stop hiding under the weight stream), hence 1-2 drafts unless nearly all are accepted.
  // 0: off. Ignored where drafts cannot be rolled back (Session::can_draft(): Dynamic NTK and
  // LongRoPE); LongLLaMA drafts stay inside the local window, so its memory is what plain
  // generation leaves.
  int32_t lookup = 0;
  int32_t lookup_min_ngram = 2;  // shortest suffix that must match (1 drafts after any repeated token)
};

// One streamed piece of output: the token and the complete UTF-8 text it made available.
// logprob is set (GenerateOptions::logprobs >= 0) on the piece a token produced; a final piece
// that only flushes held-back text carries none. Valid during the callback only.
struct Piece {
  int32_t id;
  std::string text;
  const TokenLogprob* logprob = nullptr;
};
// Return false to stop generation.
using StreamCallback = std::function<bool(const Piece&)>;
// Prompt processing progress: tokens done of total.
using ProgressCallback = std::function<void(int64_t done, int64_t total)>;
// Logits of fed tokens first .. first + n - 1 (rows [n, n_vocab], valid during the call).
using LogitsCallback = std::function<void(int64_t first, int64_t n, const float* rows)>;

struct GenerateResult {
  std::vector<int32_t> ids;
  std::vector<TokenLogprob> logprobs;  // one per id when GenerateOptions::logprobs >= 0
  std::string text;
  std::string stop_reason;  // "eos", "length", "stop", "callback"
  double gen_seconds = 0;
  int64_t n_drafted = 0;    // lookup: draft tokens fed
  int64_t n_accepted = 0;   // lookup: drafts the sampler picked (forward calls saved)
};

class Session {
 public:
  Session(std::shared_ptr<const Model> model, const SessionOptions& opt = {});
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  // Processes tokens as a prompt (LongLLaMA: prefix windows into memory, the last
  // last_context_length tokens into the local cache, as the reference does).
  // all_logits: when given, receives [n, n_vocab] logits for every fed token.
  void feed(const std::vector<int32_t>& ids, std::vector<float>* all_logits = nullptr,
            const ProgressCallback& progress = {});
  // The same computation, handing over every fed token's logits one forward call at a time
  // (at most a window or a batch of rows at once), so a long prompt's logits need not fit in
  // memory together (prompt log-probabilities, perplexity).
  void feed_with_logits(const std::vector<int32_t>& ids, const LogitsCallback& on_logits,
                        const ProgressCallback& progress = {});
  // Feeds the first `split` ids as one prompt and the rest one token per call, as generation
  // does (checks that incremental and full computation agree).
  void feed_split(const std::vector<int32_t>& ids, int64_t split, std::vector<float>* all_logits);
  // add_bos as in Model::tokenize: BOS first when the model's tokenizer adds one.
  void feed_text(const std::string& text, bool add_bos = true, const ProgressCallback& progress = {});

  // Logits of the last fed token [n_vocab].
  const std::vector<float>& logits() const;

  GenerateResult generate(const GenerateOptions& opt, const StreamCallback& on_piece = {});

  void reset();
  // Keeps the first n tokens of history() and their cache, dropping the rest, so a prompt
  // that shares a prefix with what this session saw feeds only the difference (the server's
  // prompt cache). Feed at least one token before generate(): logits() is stale after it.
  // Only where it is exact: plain LLaMA whose RoPE does not depend on the sequence length
  // (not Dynamic NTK or LongRoPE); LongLLaMA's result depends on how its input is split into
  // calls. can_truncate() says; truncate() throws otherwise.
  bool can_truncate() const;
  // Whether GenerateOptions::lookup is used by this session's model (not Dynamic NTK / LongRoPE).
  bool can_draft() const;
  // Throws longctx's error when the caches for n_tokens more tokens cannot fit in the memory
  // this machine has free (feed() checks the same before it starts): lets a tool refuse a
  // length before spending time building its input.
  void check_memory_for(int64_t n_tokens) const;
  void truncate(int64_t n_tokens);
  // An independent copy of this session's state (caches, memory, history): process a long
  // document once, then ask several questions, each in its own clone.
  std::unique_ptr<Session> clone() const;
  // Makes this session's state (caches, memory, history) a copy of `other`'s, which must run the
  // same model, keeping this session's threads and buffers: clone() without a new session (what
  // `longctx bench` does between repetitions, as llama-bench restores its saved state).
  void assign_state(const Session& other);
  // Token ids seen so far (prompt and generated).
  const std::vector<int32_t>& history() const;
  int64_t n_past() const;     // tokens seen (positions used)
  int64_t n_memory() const;   // LongLLaMA memory tokens
  size_t cache_bytes() const; // local + memory caches

  // Benchmarks only (LongLLaMA, `longctx bench --mem-fill N`): repeats the memory rows already
  // there until the memory holds n_tokens, so decode over a 128k-token memory can be timed
  // without a 128k-token ingest. The contents are meaningless; dense decode reads every byte
  // regardless of the values, so the speed is that of a real memory of that size.
  void fill_memory_for_benchmark(int64_t n_tokens);
  // Benchmarks over a large memory: assign_state(other), except that the FoT memory rows are
  // moved out of `other` instead of copied, so a 5 GB memory is held once, not twice (peak RSS).
  // `other` must not be used until return_memory(other) moves the rows back, dropping any this
  // session appended meanwhile (feeding only appends to the memory), which leaves `other` as it
  // was and this session reset. Throws where rows could have been dropped from the front
  // (SessionOptions::mem_max_tokens on this session) or the sessions run different models.
  void borrow_state(Session& other);
  void return_memory(Session& other);

  // FoT memory persistence (LongLLaMA): save the whole session state, load it back.
  void save_state(const std::string& path) const;
  void load_state(const std::string& path);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace longctx
