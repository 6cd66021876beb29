// Execution backends behind one interface (the Python runtime's backends.py): the vision graph,
// and the decoder with its KV cache held by the backend, where it computes.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "manifest.hpp"
#include "positions.hpp"

namespace edgecompress {

// A vision-graph input: values as float32 (converted to the graph's type), int64 or uint8.
struct Feed {
  std::string name;
  std::vector<int64_t> shape;
  std::vector<float> floats;
  std::vector<int64_t> ints;
  std::vector<uint8_t> bytes;
};

struct VisionOutput {
  std::vector<float> embeds;  // [tokens, hidden] as float32 (exact for a float16 graph)
  int64_t tokens = 0, hidden = 0;
  std::vector<int64_t> kept;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual const std::string& name() const = 0;
  virtual VisionOutput vision(const std::vector<Feed>& feeds) = 0;
  // Start a new sequence: an empty cache.
  virtual void reset() = 0;
  // Run the decoder over `tokens` embeddings [tokens, hidden] at `positions` (1 row, fed as
  // [1, tokens], or mRoPE's 3, fed as [3, 1, tokens]: the rank of the graph's position_ids),
  // appending to the cache; the last token's logits as float32.
  virtual std::vector<float> decode(const std::vector<float>& embeds, int64_t tokens, const Positions& positions) = 0;
  // FastV bundles: the prefill graph (prunes image tokens inside the language model); fills the
  // cache and the kept indices.
  virtual std::vector<float> prefill(const std::vector<float>& embeds, int64_t tokens, const Positions& positions,
                                     std::vector<int64_t>& kept) = 0;
};

// The shape position_ids takes for `positions` in a graph whose position_ids has `rank`
// dimensions (2: [1, S]; 3: [rows, 1, S]) and, at rank 3, `declared_rows` rows (-1: any); an
// Error naming `graph` where they do not fit.
std::vector<int64_t> position_shape(const Positions& positions, size_t rank, int64_t declared_rows, const std::string& graph);

// `profile`: which profile's TensorRT engines (empty: the bundle's only one); the other backends ignore it.
// `spinning`: ONNX Runtime's idle threads spin (its default; off on a CPU shared with busy processes).
std::unique_ptr<Backend> make_backend(const std::string& name, const std::string& bundle, const Manifest& manifest, int threads,
                                      const std::string& profile = "", bool spinning = true);

// backend_tensorrt.cpp, in builds with TensorRT (EDGECOMPRESS_WITH_TENSORRT) only.
std::unique_ptr<Backend> make_tensorrt_backend(const std::string& bundle, const Manifest& manifest, const std::string& profile);

}  // namespace edgecompress
