// Retrieval evaluations (passkey, synthetic tasks): a grid of lengths x depths, several trials
// per cell, greedy decoding of exactly as many tokens as the answer has, exact token match.
// The model is reached through a callback, so the grid logic is testable without one.
#pragma once
#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "tasks.h"

namespace lcx::eval {

struct GridConfig {
  Task task = Task::Passkey;
  std::vector<int64_t> lengths;
  std::vector<double> depths;
  int trials = 5;
  uint64_t seed = 555;  // landmark_prompt.py's seed
  int n_needles = 4;
};

struct TrialRecord {
  uint64_t seed = 0;
  int64_t prompt_tokens = 0;
  int64_t n_units = 0, units_before = 0;
  std::string query, answer, output;
  bool correct = false;
};

struct Cell {
  int64_t length = 0;
  double depth = 0;
  int trials = 0, correct = 0;
  std::vector<TrialRecord> samples;
  double accuracy() const { return trials ? double(correct) / trials : 0.0; }
  double mean_prompt_tokens() const;
};

// Greedy answer: feed the prompt into a fresh (or reset) session, decode n tokens.
using AnswerFn = std::function<std::vector<int32_t>(const std::vector<int32_t>& prompt_ids, int32_t n)>;
using DetokenizeFn = std::function<std::string(const std::vector<int32_t>&)>;

// Exact token match, as long_llama's passkey.py: (model_answer == answer_ids).all().
bool exact_match(const std::vector<int32_t>& got, const std::vector<int32_t>& want);

// The seed of one trial: independent of which other lengths/depths are run.
uint64_t trial_seed(uint64_t seed, int64_t length, double depth, int trial);

// Runs the grid, length-major; on_cell is called as each cell completes (progress output).
std::vector<Cell> run_grid(const GridConfig& cfg, const TokenizeFn& tokenize, const AnswerFn& answer,
                           const DetokenizeFn& detokenize, const std::function<void(const Cell&)>& on_cell = {});

// Accuracy table: one row per length, one column per depth, plus means.
std::string format_grid(const GridConfig& cfg, const std::vector<Cell>& cells);

// {"results": [{"length","depth","trials","accuracy","correct","mean_prompt_tokens","samples"}...],
//  "settings": settings}
nlohmann::json grid_json(const std::vector<Cell>& cells, const nlohmann::json& settings);

}  // namespace lcx::eval
