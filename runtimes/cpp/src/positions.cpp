// Position ids: the default 0, 1, 2, ... and Qwen2.5-VL's mRoPE (the Python runtime's qwen.py
// mrope_positions and step_positions), and the shape a graph takes them in.
#include "positions.hpp"

#include <algorithm>
#include <string>

#include "backend.hpp"
#include "edgecompress/error.hpp"

namespace edgecompress {

Positions Positions::sequence(int64_t first, int64_t count, int64_t rows) {
  Positions out{rows, count, std::vector<int64_t>(size_t(rows * count))};
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t i = 0; i < count; ++i) out.values[r * count + i] = first + i;
  return out;
}

Positions mrope_positions(int64_t prefix, const std::vector<int64_t>& kept, int64_t rows, int64_t cols, int64_t suffix,
                          int64_t& delta) {
  const int64_t image = static_cast<int64_t>(kept.size()), count = prefix + image + suffix;
  const int64_t start = prefix + std::max(rows, cols);  // where the text after the image continues
  Positions out{3, count, std::vector<int64_t>(size_t(3 * count))};
  for (int64_t r = 0; r < 3; ++r) {
    int64_t* row = &out.values[r * count];
    for (int64_t i = 0; i < prefix; ++i) row[i] = i;
    for (int64_t i = 0; i < image; ++i) row[prefix + i] = prefix + (r == 0 ? 0 : r == 1 ? kept[i] / cols : kept[i] % cols);
    for (int64_t i = 0; i < suffix; ++i) row[prefix + image + i] = start + i;
  }
  delta = start + suffix - count;
  return out;
}

std::vector<int64_t> position_shape(const Positions& positions, size_t rank, int64_t declared_rows, const std::string& graph) {
  if (rank == 2 && positions.rows == 1) return {1, positions.count};
  if (rank == 3 && (declared_rows < 0 || declared_rows == positions.rows)) return {positions.rows, 1, positions.count};
  std::string takes = rank == 2   ? "[1, S] (one position a token)"
                      : rank == 3 ? "[" + (declared_rows < 0 ? std::string("rows") : std::to_string(declared_rows)) + ", 1, S]"
                                  : "a tensor of rank " + std::to_string(rank);
  throw Error("the " + graph + " graph takes position_ids as " + takes + ", not the " + std::to_string(positions.rows) +
                  " row(s) of positions this bundle's manifest gives (" +
                  (positions.rows == 3 ? "mRoPE" : "one position a token") + ")",
              "The bundle's graphs and manifest do not match: re-export it.");
}

}  // namespace edgecompress
