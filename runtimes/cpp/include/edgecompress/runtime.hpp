// edgecompress C++ runtime: run a bundle (image + prompt -> text) with ONNX Runtime, token for
// token as the Python runtime (edgecompress_runtime.Pipeline) does.
//
//   auto pipe = edgecompress::Pipeline::load("out/tiny-llava-hired-b20", {});
//   auto result = pipe.generate(edgecompress::load_image("cat.jpg"), "What is this?",
//                               {64, [](const std::string& piece) { std::cout << piece << std::flush; }});
//
// Every error a user can cause is an edgecompress::Error (message + hint), with the Python
// runtime's words.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "edgecompress/error.hpp"
#include "edgecompress/image.hpp"
#include "edgecompress/tokenizer.hpp"

namespace edgecompress {

struct LoadOptions {
  std::string backend = "onnxruntime";  // onnxruntime (= onnxruntime-cpu), onnxruntime-cuda, tensorrt
  int threads = 0;                      // ONNX Runtime intra-op threads; 0: its default
  bool check_hashes = true;             // sha256 of every bundle file before loading
  std::string profile;                  // tensorrt: whose engines (edgecompress build --profile); empty: the only one
  bool spinning = true;                 // ONNX Runtime's idle threads spin (faster on a dedicated CPU; false on a shared one)
};

struct GenerateOptions {
  int max_new_tokens = 64;
  std::function<void(const std::string&)> on_token;  // streamed text pieces (whole UTF-8 characters)
  bool ignore_eos = false;  // generate exactly max_new_tokens (benchmarks)
};

struct Timings {
  double preprocess_ms = 0, vision_ms = 0, prefill_ms = 0, ttft_ms = 0, decode_ms = 0;
  int decode_tokens = 0;  // decoder calls after the prefill
  double decode_tokens_per_s() const { return decode_ms > 0 ? decode_tokens * 1000.0 / decode_ms : 0.0; }
};

struct Generation {
  std::string text;
  std::vector<int64_t> token_ids;
  int prompt_tokens = 0;               // the language model's prompt length (text + image tokens)
  std::vector<int64_t> kept_indices;   // the vision graph's (or FastV prefill's) kept image tokens
  std::string stopped_by;              // "eos" or "max_new_tokens"
  Timings timings;
};

class Pipeline {
 public:
  // Open a bundle (schema, containment and sha256 checked first) on a backend.
  static Pipeline load(const std::string& bundle, const LoadOptions& options = {});
  Pipeline(Pipeline&&) noexcept;
  Pipeline& operator=(Pipeline&&) noexcept;
  ~Pipeline();

  Generation generate(const ImageRGB& image, const std::string& prompt, const GenerateOptions& options = {});
  // From a file: decoding counts in the preprocess time, as in the Python runtime.
  Generation generate(const std::string& image_path, const std::string& prompt, const GenerateOptions& options = {});

  const Tokenizer& tokenizer() const;
  std::vector<int64_t> prompt_ids(const std::string& prompt) const;  // the chat-formatted prompt's ids
  const std::string& backend_name() const;

 private:
  struct Impl;
  explicit Pipeline(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace edgecompress
