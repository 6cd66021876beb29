// The bundle's manifest.json, typed and checked: the contract with the compiler, read as the
// Python runtime reads it (edgecompress_runtime/manifest.py and bundle.py), with the same errors.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "edgecompress/image.hpp"

namespace edgecompress {

constexpr int kSchemaVersion = 1;

struct TensorSpec {
  std::string name;
  std::vector<int64_t> shape;  // -1 for a named (dynamic) axis
  std::string dtype;           // numpy's names: float32, float16, int64
};

struct GraphSpec {
  std::string name, file;
  std::vector<std::string> files;
  std::vector<TensorSpec> inputs, outputs;
  // How the KV cache is driven: "" past in and present out (the standard graph); "shared-buffer"
  // (the fused decoder), one buffer per cache tensor of kv_cache_max_length positions bound as both
  // past and present, the valid length in the seqlens_k and total_sequence_length inputs.
  std::string kv_cache;
  int64_t kv_cache_max_length = 0;
  const TensorSpec* input(const std::string& name) const;
};

struct LanguageModelSpec {
  int num_layers = 0, num_kv_heads = 0, head_dim = 0, hidden_size = 0, max_position_embeddings = 0;
};

// FastV: the prefill graph keeps kept_image_tokens of image_tokens at decoder `layer`; the image
// must start at token image_start of the prompt.
struct DecoderPruningSpec {
  std::string method;
  int layer = 0, image_start = 0, image_tokens = 0, kept_image_tokens = 0;
};

// How the language model numbers the prompt when not 0, 1, 2, ...: "mrope" (Qwen2.5-VL), 3 rows of
// positions, an image token at its place on the merged grid of rows x cols (positions.hpp).
struct PositionsSpec {
  std::string kind;
  int64_t rows = 0, cols = 0;
};

struct FileEntry {
  std::string sha256;
  uint64_t bytes = 0;
};

struct Manifest {
  nlohmann::json data;  // as written
  std::string method, precision, budget_spec, prompt_template, weights_format;
  int k = 0, n = 0, max_sequence = 0;
  int64_t image_token_id = 0;
  PreprocessParams preprocess;
  std::map<std::string, GraphSpec> graphs;
  // Graphs only ONNX Runtime runs (its contrib ops), each in place of the same-named entry of
  // graphs (export --decoder-ops onnxruntime: "decoder"); TensorRT reads graphs.
  std::map<std::string, GraphSpec> onnxruntime_graphs;
  std::map<std::string, FileEntry> files;
  std::optional<LanguageModelSpec> language_model;
  std::optional<std::string> tokenizer_file, embeddings_file, newline_file;
  std::vector<int64_t> eos_token_ids;
  std::optional<AnyresParams> anyres;
  std::optional<DecoderPruningSpec> decoder_pruning;
  std::optional<PositionsSpec> positions;

  static Manifest from_json(const nlohmann::json& data, const std::string& source);
  std::vector<std::string> paths() const;  // every file path the manifest names
};

// Read and check a bundle before anything runs (schema, fields, containment, sha256).
Manifest open_bundle(const std::string& bundle, bool check_hashes = true);

// bundle/relative with links resolved; an Error unless it stays inside the bundle.
std::string inside(const std::string& bundle, const std::string& relative);

}  // namespace edgecompress
