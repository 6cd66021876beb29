// decode_bench BUNDLE IDS NEW_TOKENS [no-spinning]: the C++ runtime's language-model loop on given prompt ids
// (comma-separated), for benchmarks/genai_compare.py: three warm-ups, then the medians of three timed greedy runs with
// end-of-sequence masked (as genai's min_length does). Prints one JSON line: prefill_ms,
// decode_ms_per_token, tokens. Bundle loading is not timed.
#include <algorithm>
#include <chrono>
#include <iostream>
#include <limits>
#include <sstream>

#include <nlohmann/json.hpp>

#include "backend.hpp"
#include "edgecompress/error.hpp"
#include "manifest.hpp"
#include "npy.hpp"

using namespace edgecompress;
using Clock = std::chrono::steady_clock;

namespace {

struct Run {
  double prefill_ms = 0, decode_ms_per_token = 0;
  std::vector<int64_t> tokens;
};

int64_t pick(std::vector<float> logits, const std::vector<int64_t>& eos) {
  for (int64_t id : eos) logits[id] = -std::numeric_limits<float>::infinity();
  return std::max_element(logits.begin(), logits.end()) - logits.begin();
}

// `rows`: 1, or 3 for an mRoPE bundle (text alone: every row the same positions)
Run run(Backend& backend, const NpyArray& table, const std::vector<int64_t>& ids, int new_tokens, const std::vector<int64_t>& eos,
        int64_t rows) {
  std::vector<float> embeds(ids.size() * table.row_size());
  for (size_t i = 0; i < ids.size(); ++i) table.row(ids[i], embeds.data() + i * table.row_size());
  Run result;
  auto start = Clock::now();
  backend.reset();
  const int64_t length = static_cast<int64_t>(ids.size());
  result.tokens.push_back(pick(backend.decode(embeds, length, Positions::sequence(0, length, rows)), eos));
  result.prefill_ms = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
  std::vector<float> step(table.row_size());
  start = Clock::now();
  for (int i = 0; i < new_tokens - 1; ++i) {
    table.row(result.tokens.back(), step.data());
    result.tokens.push_back(pick(backend.decode(step, 1, Positions::sequence(length + i, 1, rows)), eos));
  }
  result.decode_ms_per_token = std::chrono::duration<double, std::milli>(Clock::now() - start).count() / std::max(new_tokens - 1, 1);
  return result;
}

}  // namespace

int main(int argc, char** argv) {
  bool spinning = argc == 4;
  if (argc != 4 && !(argc == 5 && std::string(argv[4]) == "no-spinning")) {
    std::cerr << "usage: decode_bench BUNDLE IDS NEW_TOKENS [no-spinning]\n";
    return 2;
  }
  try {
    std::string bundle = argv[1];
    std::vector<int64_t> ids;
    std::stringstream list(argv[2]);
    for (std::string item; std::getline(list, item, ',');) ids.push_back(std::stoll(item));
    int new_tokens = std::stoi(argv[3]);
    Manifest manifest = open_bundle(bundle);
    auto backend = make_backend("onnxruntime", bundle, manifest, 0, "", spinning);
    NpyArray table = NpyArray::open(inside(bundle, *manifest.embeddings_file));
    int64_t rows = manifest.positions ? 3 : 1;
    // benchmarks/genai_compare.py's protocol: three warm-up generations, then the medians of three timed ones
    for (int i = 0; i < 3; ++i) run(*backend, table, ids, new_tokens, manifest.eos_token_ids, rows);
    std::vector<Run> runs;
    for (int i = 0; i < 3; ++i) runs.push_back(run(*backend, table, ids, new_tokens, manifest.eos_token_ids, rows));
    auto median = [&runs](double Run::*field) {
      std::vector<double> values;
      for (const Run& r : runs) values.push_back(r.*field);
      std::sort(values.begin(), values.end());
      return values[values.size() / 2];
    };
    Run result = runs.back();
    result.prefill_ms = median(&Run::prefill_ms);
    result.decode_ms_per_token = median(&Run::decode_ms_per_token);
    std::cout << nlohmann::json{{"prefill_ms", result.prefill_ms}, {"decode_ms_per_token", result.decode_ms_per_token},
                                {"tokens", result.tokens}}
              << "\n";
  } catch (const std::exception& err) {
    std::cerr << "error: " << err.what() << "\n";
    return 2;
  }
  return 0;
}
