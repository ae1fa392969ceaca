#include "tasks.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <set>
#include <sstream>

#include "runtime/error.h"

namespace lcx::eval {

// Landmark Attention's run_test.py (as modified in long_llama examples/utils/landmark_prompt.py):
// the task description, the filler sentence repeated, the information line at a position in
// the filler, and the final question, joined with "\n".
const char* kPasskeyTask =
    "There is an important info hidden inside a lot of irrelevant text. Find it and memorize them. "
    "I will quiz you about the important information there.";
const char* kPasskeyFiller = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.";
const char* kPasskeyQuestion = "What is the pass key? The pass key is";

namespace {

// Needle keys for the multi-key task (RULER-style "special magic number for {word}").
const char* const kNeedleWords[] = {
    "apple",   "river",   "candle",  "falcon",  "harbor",  "meadow",  "copper",  "lantern", "violet",  "glacier",
    "thunder", "orchard", "pebble",  "saddle",  "walnut",  "compass", "feather", "ginger",  "hammock", "island",
    "jasmine", "kettle",  "ladder",  "marble",  "nectar",  "oyster",  "pepper",  "quartz",  "ribbon",  "spruce",
    "tulip",   "velvet",  "willow",  "zephyr",  "anchor",  "basket",  "cactus",  "dolphin", "ember",   "fossil",
    "garnet",  "hazel",   "igloo",   "jigsaw",  "koala",   "lemon",   "mango",   "nutmeg",  "olive",   "parrot",
    "quill",   "raven",   "saffron", "tiger",   "umbrella", "valley", "walrus",  "yarrow",  "zebra",   "badger",
    "cobalt",  "daisy",   "eagle",   "fjord",   "granite", "heron",   "indigo",  "juniper", "kestrel", "lotus"};
constexpr int kNumNeedleWords = int(sizeof(kNeedleWords) / sizeof(kNeedleWords[0]));

const char* kNeedlesTask =
    "Some special magic numbers are hidden within the following text. Make sure to memorize them. "
    "I will quiz you about the numbers afterwards.";
const char* kDictTask =
    "Below is a dictionary of key: value pairs. Memorize it; I will ask you for the value of one key.";
const char* kKvTask = "Extract the value corresponding to the specified key in the JSON object below.";

// The filler as landmark_prompt.py builds it: " ".join([garbage] * 5000), cut after its first
// `k` sentences (Landmark cuts at a character count; cutting at sentence ends keeps the words
// whole and gives a step of ~6 tokens, so a prompt lands within a few tokens of its budget).
// k = 5r gives exactly " ".join([garbage] * r).
const char* const kFillerSentences[] = {"The grass is green.", "The sky is blue.", "The sun is yellow.", "Here we go.",
                                        "There and back again."};
constexpr int64_t kNumFillerSentences = 5;

std::string filler_sentence(int64_t i) { return kFillerSentences[i % kNumFillerSentences]; }

std::string repeat_filler(int64_t k) {
  std::string s;
  s.reserve(size_t(k) * 20);
  for (int64_t i = 0; i < k; ++i) {
    if (i) s += ' ';
    s += filler_sentence(i);
  }
  return s;
}

int64_t before_count(double depth, int64_t n) { return std::clamp<int64_t>(std::llround(depth * double(n)), 0, n); }

Prompt build_passkey(const SampleSpec& sp, int64_t n) {
  Rng rng(sp.seed);
  // Landmark draws random.randint(1, 50000); we keep its range but ask for 5 digits.
  const int64_t key = rng.uniform(10000, 49999);
  Prompt p;
  p.answer = std::to_string(key);
  p.query = p.answer;
  p.units_before = before_count(sp.depth, n);
  const std::string info = "The pass key is " + p.answer + ". Remember it. " + p.answer + " is the pass key.";
  p.text = std::string(kPasskeyTask) + "\n" + repeat_filler(p.units_before) + "\n" + info + "\n" +
           repeat_filler(n - p.units_before) + "\n" + kPasskeyQuestion;
  return p;
}

Prompt build_needles(const SampleSpec& sp, int64_t n) {
  if (sp.n_needles < 1 || sp.n_needles > kNumNeedleWords)
    fail("--needles must be between 1 and " + std::to_string(kNumNeedleWords));
  Rng rng(sp.seed);
  // Distinct words: a partial Fisher-Yates shuffle of the list.
  std::vector<int> order(kNumNeedleWords);
  for (int i = 0; i < kNumNeedleWords; ++i) order[size_t(i)] = i;
  struct Needle {
    std::string word;
    int64_t value;
    double frac;  // where it sits in the filler
  };
  std::vector<Needle> needles;
  for (int i = 0; i < sp.n_needles; ++i) {
    const int j = int(rng.uniform(i, kNumNeedleWords - 1));
    std::swap(order[size_t(i)], order[size_t(j)]);
    Needle nd{kNeedleWords[order[size_t(i)]], rng.uniform(1000000, 9999999), rng.unit()};
    needles.push_back(nd);
  }
  needles[0].frac = sp.depth;  // the first one is asked for, at the requested depth
  std::vector<std::vector<const Needle*>> at(size_t(n) + 1);
  for (const auto& nd : needles) at[size_t(before_count(nd.frac, n))].push_back(&nd);
  std::string hay;
  auto add = [&](const std::string& s) {
    if (!hay.empty()) hay += ' ';
    hay += s;
  };
  for (int64_t i = 0; i <= n; ++i) {
    for (const Needle* nd : at[size_t(i)])
      add("The special magic number for " + nd->word + " is " + std::to_string(nd->value) + ".");
    if (i < n) add(filler_sentence(i));
  }
  Prompt p;
  p.query = needles[0].word;
  p.answer = std::to_string(needles[0].value);
  p.units_before = before_count(sp.depth, n);
  p.text = std::string(kNeedlesTask) + "\n" + hay + "\n" + "What is the special magic number for " + p.query +
           " mentioned in the provided text? The special magic number for " + p.query +
           " mentioned in the provided text is";
  return p;
}

// Pseudo-words of three consonant-vowel syllables ("bodaku"): many distinct keys with no
// meaning the model could use to guess the value.
std::string pseudo_word(Rng& rng) {
  static const char cons[] = "bdfgklmnprstvz";
  static const char vow[] = "aeiou";
  std::string w;
  for (int s = 0; s < 3; ++s) {
    w += cons[rng.uniform(0, int64_t(sizeof(cons)) - 2)];
    w += vow[rng.uniform(0, int64_t(sizeof(vow)) - 2)];
  }
  return w;
}

struct Entry {
  std::string key, value;
};

// The first n entries of the trial's dictionary: the same prefix for every n, unique keys.
std::vector<Entry> make_entries(const SampleSpec& sp, int64_t n) {
  Rng rng(mix_seed(sp.seed, 0xD1C7));
  std::set<std::string> seen;
  std::vector<Entry> out;
  out.reserve(size_t(n));
  char buf[16];
  while (int64_t(out.size()) < n) {
    Entry e;
    if (sp.task == Task::Dict) {
      e.key = pseudo_word(rng);
      e.value = std::to_string(rng.uniform(10000, 99999));
    } else {
      std::snprintf(buf, sizeof buf, "%08llx", (unsigned long long)(rng.next() & 0xffffffffull));
      e.key = buf;
      std::snprintf(buf, sizeof buf, "%08llx", (unsigned long long)(rng.next() & 0xffffffffull));
      e.value = buf;
    }
    if (seen.insert(e.key).second) out.push_back(std::move(e));
  }
  return out;
}

Prompt build_lookup(const SampleSpec& sp, int64_t n) {
  const auto entries = make_entries(sp, n);
  Prompt p;
  // The queried entry sits after round(depth * (n - 1)) others, so depth 1 is the last line.
  p.units_before = n > 0 ? before_count(sp.depth, n - 1) : 0;
  const Entry q = n > 0 ? entries[size_t(p.units_before)] : Entry{"none", "none"};
  p.query = q.key;
  std::string body;
  if (sp.task == Task::Dict) {
    for (const auto& e : entries) body += e.key + ": " + e.value + "\n";
    p.answer = q.value;
    p.text = std::string(kDictTask) + "\n\n" + body + "\nWhat is the value of " + q.key + "?\n" + q.key + ":";
  } else {
    for (size_t i = 0; i < entries.size(); ++i)
      body += (i ? ",\n\"" : "\"") + entries[i].key + "\": \"" + entries[i].value + "\"";
    p.answer = "\"" + q.value + "\"";
    p.text = std::string(kKvTask) + "\n\nJSON data:\n{" + body + "}\n\nKey: \"" + q.key + "\"\nCorresponding value:";
  }
  return p;
}

}  // namespace

uint64_t Rng::next() {
  uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

int64_t Rng::uniform(int64_t lo, int64_t hi) {
  const uint64_t span = uint64_t(hi - lo) + 1;
  // Rejection sampling: no modulo bias.
  const uint64_t limit = std::numeric_limits<uint64_t>::max() - std::numeric_limits<uint64_t>::max() % span;
  uint64_t x;
  do x = next();
  while (x >= limit);
  return lo + int64_t(x % span);
}

double Rng::unit() { return double(next() >> 11) * (1.0 / 9007199254740992.0); }

uint64_t mix_seed(uint64_t seed, uint64_t a, uint64_t b, uint64_t c) {
  Rng r(seed);
  uint64_t h = r.next();
  for (uint64_t v : {a, b, c}) {
    Rng q(h ^ v);
    h = q.next();
  }
  return h;
}

const char* task_name(Task t) {
  switch (t) {
    case Task::Passkey: return "passkey";
    case Task::Needles: return "needles";
    case Task::Dict: return "dict";
    case Task::Kv: return "kv";
  }
  return "?";
}

Task parse_task(const std::string& s) {
  if (s == "passkey") return Task::Passkey;
  if (s == "needles") return Task::Needles;
  if (s == "dict") return Task::Dict;
  if (s == "kv") return Task::Kv;
  fail("unknown task '" + s + "': use kv, needles or dict");
}

Prompt build_prompt(const SampleSpec& spec, int64_t n_units) {
  switch (spec.task) {
    case Task::Passkey: return build_passkey(spec, n_units);
    case Task::Needles: return build_needles(spec, n_units);
    case Task::Dict:
    case Task::Kv: return build_lookup(spec, n_units);
  }
  fail("unknown task");
}

int64_t fit_units(const std::function<int64_t(int64_t)>& count, int64_t budget, int64_t max_units) {
  const int64_t t0 = count(0);
  if (t0 > budget) return -1;
  int64_t lo = 0, t_lo = t0;  // count(lo) <= budget
  int64_t hi = max_units + 1, t_hi = 0;  // count(hi) > budget (max_units + 1 stands for "too many")
  bool hi_known = false;
  for (int step = 0; hi - lo > 1; ++step) {
    int64_t g;
    if (step == 0) {
      g = 16;  // a first probe to measure tokens per unit
    } else if (step < 8) {
      // Secant through the bracket (or extrapolation from 0 and lo): count is nearly linear.
      double slope = hi_known ? double(t_hi - t_lo) / double(hi - lo) : double(t_lo - t0) / double(std::max<int64_t>(lo, 1));
      if (!(slope > 0)) slope = 1;
      g = lo + int64_t(std::floor(double(budget - t_lo) / slope));
      if (g <= lo) g = lo + 1;
    } else {
      g = lo + (hi - lo) / 2;
    }
    g = std::clamp<int64_t>(g, lo + 1, hi - 1);
    const int64_t t = count(g);
    if (t <= budget) {
      lo = g;
      t_lo = t;
    } else {
      hi = g;
      t_hi = t;
      hi_known = true;
    }
  }
  return lo;
}

Sample make_sample(const SampleSpec& spec, const TokenizeFn& tokenize) {
  auto count = [&](int64_t n) { return int64_t(tokenize(build_prompt(spec, n).text, true).size()); };
  // Every unit adds at least one token, so the budget bounds the unit count.
  const int64_t n = fit_units(count, spec.length, spec.length);
  const bool needs_entry = spec.task == Task::Dict || spec.task == Task::Kv;
  if (n < (needs_entry ? 1 : 0)) {
    const int64_t bare = count(needs_entry ? 1 : 0);
    fail(std::string(task_name(spec.task)) + ": a length of " + std::to_string(spec.length) +
         " tokens is too short: the prompt without filler already takes " + std::to_string(bare) +
         " tokens; use larger --lengths");
  }
  Prompt p = build_prompt(spec, n);
  Sample s;
  s.prompt_ids = tokenize(p.text, true);
  s.answer_ids = tokenize(p.answer, false);
  s.prompt = std::move(p.text);
  s.answer = std::move(p.answer);
  s.query = std::move(p.query);
  s.n_units = n;
  s.units_before = p.units_before;
  return s;
}

std::vector<int64_t> parse_lengths(const std::string& s) {
  std::vector<int64_t> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    const size_t b = item.find_first_not_of(" \t"), e = item.find_last_not_of(" \t");
    if (b == std::string::npos) continue;
    item = item.substr(b, e - b + 1);
    int64_t mult = 1;
    std::string num = item;
    const char last = item.back();
    if (last == 'k' || last == 'K') mult = 1024;
    else if (last == 'm' || last == 'M') mult = 1024 * 1024;
    if (mult > 1) num.pop_back();
    bool ok = !num.empty() && num.size() <= 9 && std::all_of(num.begin(), num.end(), [](char c) { return c >= '0' && c <= '9'; });
    const int64_t v = ok ? std::stoll(num) * mult : 0;
    if (!ok || v <= 0 || v > (int64_t(1) << 26))
      fail("--lengths: '" + item + "' is not a token count (use e.g. 2k,4k,8192; 2k = 2048 tokens, at most 64m)");
    out.push_back(v);
  }
  if (out.empty()) fail("--lengths: no lengths given (e.g. --lengths 2k,4k,8k)");
  return out;
}

std::vector<double> parse_depths(const std::string& s) {
  std::vector<double> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    const size_t b = item.find_first_not_of(" \t"), e = item.find_last_not_of(" \t");
    if (b == std::string::npos) continue;
    item = item.substr(b, e - b + 1);
    double v = -1;
    try {
      size_t used = 0;
      v = std::stod(item, &used);
      if (used != item.size()) v = -1;
    } catch (const std::exception&) {
      v = -1;
    }
    if (!(v >= 0 && v <= 1))
      fail("--depths: '" + item + "' is not a depth: use fractions of the filler in [0, 1], e.g. 0,0.25,0.5,0.75,1");
    out.push_back(v);
  }
  if (out.empty()) fail("--depths: no depths given (e.g. --depths 0,0.5,1)");
  return out;
}

}  // namespace lcx::eval
