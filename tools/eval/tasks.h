// Long-context evaluation prompts: passkey retrieval (Landmark Attention / LongLLaMA protocol)
// and synthetic retrieval tasks (multi-key needles, dictionary lookup, key-value JSON).
//
// Every prompt is built from a count of "units" (filler sentences, dictionary lines) and the
// largest count whose tokenization fits the requested length is searched for, so a 2k prompt
// is as close to 2048 tokens as the unit size allows and never over. The answer always follows
// a space ("... The pass key is" + " 12345"), so it is scored against its own tokenization
// without BOS, as long_llama's examples/passkey.py does (`tokenizer(answer).input_ids[:, 1:]`).
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace lcx::eval {

// Text -> token ids, BOS included (the model's tokenizer, or a test double).
using TokenizeFn = std::function<std::vector<int32_t>(const std::string& text, bool add_bos)>;

// A small, portable PRNG (splitmix64): the same seed gives the same keys on every platform
// and standard library (std::uniform_int_distribution does not promise that).
struct Rng {
  uint64_t state;
  explicit Rng(uint64_t seed) : state(seed) {}
  uint64_t next();
  int64_t uniform(int64_t lo, int64_t hi);  // integer in [lo, hi]
  double unit();                            // [0, 1)
};
uint64_t mix_seed(uint64_t seed, uint64_t a, uint64_t b = 0, uint64_t c = 0);

enum class Task { Passkey, Needles, Dict, Kv };
const char* task_name(Task t);
Task parse_task(const std::string& s);  // "passkey", "needles", "dict", "kv"

struct SampleSpec {
  Task task = Task::Passkey;
  int64_t length = 2048;  // token budget of the prompt, BOS included
  double depth = 0.5;     // where the queried fact sits in the filler: 0 = start, 1 = end
  uint64_t seed = 555;    // one trial's seed (draws the key, the distractors, ...)
  int n_needles = 4;      // Task::Needles: facts hidden in the filler (one of them is asked)
};

struct Sample {
  std::string prompt;               // the whole prompt text
  std::string answer;               // expected continuation, e.g. "12345"
  std::vector<int32_t> prompt_ids;  // tokenized prompt, BOS first; size() <= length
  std::vector<int32_t> answer_ids;  // tokenized answer without BOS
  int64_t n_units = 0;              // filler sentences / dictionary entries used
  int64_t units_before = 0;         // of which before the queried fact
  std::string query;                // what was asked (passkey: the key; needles: the word)
};

// Builds the prompt text for a given unit count (no fitting). Exposed for tests.
struct Prompt {
  std::string text, answer, query;
  int64_t units_before = 0;
};
Prompt build_prompt(const SampleSpec& spec, int64_t n_units);

// Builds the sample with the most units whose prompt tokenizes to <= spec.length tokens.
// Throws lcx::Error when even the bare template (zero units) is longer than the budget.
Sample make_sample(const SampleSpec& spec, const TokenizeFn& tokenize);

// Largest n in [0, max_units] with count(n) <= budget, for a count non-decreasing in n.
// Returns -1 when count(0) > budget. Interpolates first (count is nearly linear), then bisects.
int64_t fit_units(const std::function<int64_t(int64_t)>& count, int64_t budget, int64_t max_units);

// "2k,4k,8192,1m" -> {2048, 4096, 8192, 1048576}. Throws lcx::Error on bad items.
std::vector<int64_t> parse_lengths(const std::string& s);
// "0,0.25,1" -> {0, 0.25, 1}; each in [0, 1]. Throws lcx::Error on bad items.
std::vector<double> parse_depths(const std::string& s);

// The Landmark Attention / LongLLaMA passkey texts, verbatim.
extern const char* kPasskeyTask;
extern const char* kPasskeyFiller;
extern const char* kPasskeyQuestion;

}  // namespace lcx::eval
