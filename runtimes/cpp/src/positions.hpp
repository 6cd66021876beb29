// Position ids of the tokens the language model reads, as the Python runtime's pipeline.py
// (prompt_positions, positions) and qwen.py (mrope_positions, step_positions) compute them.
#pragma once

#include <cstdint>
#include <vector>

namespace edgecompress {

// `count` tokens' position ids in `rows` rows (1: the default layout, fed as [1, count]; 3:
// Qwen2.5-VL's mRoPE, temporal, height and width, fed as [3, 1, count]), row after row.
struct Positions {
  int64_t rows = 1, count = 0;
  std::vector<int64_t> values;  // rows * count

  // first, first + 1, ... in every row (text tokens: mRoPE puts one at (p, p, p))
  static Positions sequence(int64_t first, int64_t count, int64_t rows = 1);
};

// A prompt's mRoPE positions: `prefix` text tokens at 0, 1, ...; the kept image tokens (merged
// raster indices on a grid of rows x cols) at (s, s + row, s + col), s = prefix; `suffix` text
// tokens from s + max(rows, cols). `delta` gets a later token's position minus its cache index.
Positions mrope_positions(int64_t prefix, const std::vector<int64_t>& kept, int64_t rows, int64_t cols, int64_t suffix,
                          int64_t& delta);

}  // namespace edgecompress
