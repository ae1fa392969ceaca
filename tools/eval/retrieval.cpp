#include "retrieval.h"

#include <cmath>
#include <cstdio>
#include <cstring>

namespace lcx::eval {

double Cell::mean_prompt_tokens() const {
  if (samples.empty()) return 0;
  double s = 0;
  for (const auto& t : samples) s += double(t.prompt_tokens);
  return s / double(samples.size());
}

bool exact_match(const std::vector<int32_t>& got, const std::vector<int32_t>& want) {
  return !want.empty() && got == want;
}

uint64_t trial_seed(uint64_t seed, int64_t length, double depth, int trial) {
  uint64_t depth_bits;
  std::memcpy(&depth_bits, &depth, sizeof depth_bits);
  return mix_seed(seed, uint64_t(length), depth_bits, uint64_t(trial));
}

std::vector<Cell> run_grid(const GridConfig& cfg, const TokenizeFn& tokenize, const AnswerFn& answer,
                           const DetokenizeFn& detokenize, const std::function<void(const Cell&)>& on_cell) {
  std::vector<Cell> cells;
  for (int64_t len : cfg.lengths) {
    for (double depth : cfg.depths) {
      Cell c;
      c.length = len;
      c.depth = depth;
      for (int t = 0; t < cfg.trials; ++t) {
        SampleSpec spec;
        spec.task = cfg.task;
        spec.length = len;
        spec.depth = depth;
        spec.seed = trial_seed(cfg.seed, len, depth, t);
        spec.n_needles = cfg.n_needles;
        const Sample s = make_sample(spec, tokenize);
        const auto got = answer(s.prompt_ids, int32_t(s.answer_ids.size()));
        TrialRecord r;
        r.seed = spec.seed;
        r.prompt_tokens = int64_t(s.prompt_ids.size());
        r.n_units = s.n_units;
        r.units_before = s.units_before;
        r.query = s.query;
        r.answer = s.answer;
        r.output = detokenize(got);
        r.correct = exact_match(got, s.answer_ids);
        c.trials++;
        c.correct += r.correct;
        c.samples.push_back(std::move(r));
      }
      if (on_cell) on_cell(c);
      cells.push_back(std::move(c));
    }
  }
  return cells;
}

std::string format_grid(const GridConfig& cfg, const std::vector<Cell>& cells) {
  std::string out;
  char buf[128];
  std::snprintf(buf, sizeof buf, "%s accuracy (%d trial%s per cell, seed %llu)\n", task_name(cfg.task), cfg.trials,
                cfg.trials == 1 ? "" : "s", (unsigned long long)cfg.seed);
  out += buf;
  std::string head = "  length  tokens |";
  for (double d : cfg.depths) {
    std::snprintf(buf, sizeof buf, " d=%-5.3g", d);
    head += buf;
  }
  head += " |  mean";
  out += head + "\n" + std::string(head.size(), '-') + "\n";
  std::vector<double> col_sum(cfg.depths.size(), 0.0);
  size_t k = 0;
  for (int64_t len : cfg.lengths) {
    double row = 0, tokens = 0;
    std::string cols;
    for (size_t j = 0; j < cfg.depths.size(); ++j, ++k) {
      const Cell& c = cells.at(k);
      std::snprintf(buf, sizeof buf, " %7.2f", c.accuracy());
      cols += buf;
      row += c.accuracy();
      tokens += c.mean_prompt_tokens();
      col_sum[j] += c.accuracy();
    }
    std::snprintf(buf, sizeof buf, "%8lld %7.0f |", (long long)len, tokens / double(cfg.depths.size()));
    out += buf + cols;
    std::snprintf(buf, sizeof buf, " | %5.2f\n", row / double(cfg.depths.size()));
    out += buf;
  }
  out += "    mean         |";
  double all = 0;
  for (double s : col_sum) {
    std::snprintf(buf, sizeof buf, " %7.2f", s / double(cfg.lengths.size()));
    out += buf;
    all += s;
  }
  std::snprintf(buf, sizeof buf, " | %5.2f\n", all / double(cfg.lengths.size() * cfg.depths.size()));
  out += buf;
  return out;
}

nlohmann::json grid_json(const std::vector<Cell>& cells, const nlohmann::json& settings) {
  nlohmann::json results = nlohmann::json::array();
  for (const auto& c : cells) {
    nlohmann::json samples = nlohmann::json::array();
    for (const auto& t : c.samples)
      samples.push_back({{"seed", t.seed},
                         {"prompt_tokens", t.prompt_tokens},
                         {"filler_units", t.n_units},
                         {"units_before", t.units_before},
                         {"query", t.query},
                         {"answer", t.answer},
                         {"output", t.output},
                         {"correct", t.correct}});
    results.push_back({{"length", c.length},
                       {"depth", c.depth},
                       {"trials", c.trials},
                       {"correct", c.correct},
                       {"accuracy", c.accuracy()},
                       {"mean_prompt_tokens", c.mean_prompt_tokens()},
                       {"samples", samples}});
  }
  return {{"results", results}, {"settings", settings}};
}

}  // namespace lcx::eval
