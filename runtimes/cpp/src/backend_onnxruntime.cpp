// ONNX Runtime (C++ API) on the CPU, or CUDA where the library has its execution provider.
// The KV cache is the decoder's own output values, fed back through an IoBinding: no copy per
// token on the CPU, and on CUDA the cache stays in device memory. A fused decoder graph with a
// shared-buffer cache (manifest kv_cache, as the Python runtime's shared_cache.py describes) gets
// each cache tensor allocated once at its maximum length and bound as both past and present:
// GroupQueryAttention appends in place, and nothing is allocated or copied per step.
#include <onnxruntime_cxx_api.h>

#include <algorithm>

#include "backend.hpp"
#include "edgecompress/error.hpp"
#include "npy.hpp"

namespace edgecompress {
namespace {

Ort::Env& environment() {
  static Ort::Env env(ORT_LOGGING_LEVEL_ERROR, "edgecompress");
  return env;
}

ONNXTensorElementDataType element_type(const std::string& dtype) {
  if (dtype == "float32") return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
  if (dtype == "float16") return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16;
  if (dtype == "int64") return ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64;
  if (dtype == "uint8") return ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8;
  throw Error("the manifest declares a tensor of type " + dtype + ", which the C++ runtime does not feed",
              "Re-export the bundle with --precision fp32 or fp16.");
}

std::string first_line(const std::string& text) {
  auto end = text.find('\n');
  return end == std::string::npos ? text : text.substr(0, end);
}

// float32 values in a tensor of `type` (float32 or float16); `storage` keeps the bytes alive.
Ort::Value float_tensor(const std::vector<float>& values, const std::vector<int64_t>& shape, ONNXTensorElementDataType type,
                        std::vector<uint16_t>& storage, const Ort::MemoryInfo& cpu) {
  if (type == ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16) {
    storage.resize(values.size());
    std::transform(values.begin(), values.end(), storage.begin(), float_to_half);
    return Ort::Value::CreateTensor(cpu, storage.data(), storage.size() * 2, shape.data(), shape.size(), type);
  }
  return Ort::Value::CreateTensor(cpu, const_cast<float*>(values.data()), values.size() * 4, shape.data(), shape.size(), type);
}

std::vector<float> to_floats(const Ort::Value& value, size_t first = 0) {
  auto info = value.GetTensorTypeAndShapeInfo();
  size_t count = info.GetElementCount() - first;
  std::vector<float> out(count);
  if (info.GetElementType() == ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16) {
    const uint16_t* data = reinterpret_cast<const uint16_t*>(value.GetTensorRawData()) + first;
    std::transform(data, data + count, out.begin(), half_to_float);
  } else {
    const float* data = value.GetTensorData<float>() + first;
    std::copy(data, data + count, out.begin());
  }
  return out;
}

// The declared shape of a session's input `name` (-1 for a named axis); empty where it has none.
std::vector<int64_t> input_shape(const Ort::Session& session, const char* name) {
  Ort::AllocatorWithDefaultOptions allocator;
  for (size_t i = 0; i < session.GetInputCount(); ++i)
    if (std::string(session.GetInputNameAllocated(i, allocator).get()) == name)
      return session.GetInputTypeInfo(i).GetTensorTypeAndShapeInfo().GetShape();
  return {};
}

// How a graph takes position_ids: its rank and, at rank 3 ([rows, 1, S]: mRoPE), its rows.
struct PositionInput {
  size_t rank = 2;
  int64_t rows = -1;
  explicit PositionInput(const std::vector<int64_t>& shape = {1, -1})
      : rank(shape.size()), rows(shape.size() == 3 ? shape[0] : -1) {}
};

class OnnxRuntimeBackend final : public Backend {
 public:
  OnnxRuntimeBackend(const std::string& bundle, const Manifest& manifest, bool cuda, int threads, bool spinning)
      : name_(cuda ? "onnxruntime-cuda" : "onnxruntime-cpu"),
        cpu_(Ort::MemoryInfo::CreateCpu(OrtArenaAllocator, OrtMemTypeDefault)),
        cache_memory_(cuda ? Ort::MemoryInfo("Cuda", OrtDeviceAllocator, 0, OrtMemTypeDefault)
                           : Ort::MemoryInfo::CreateCpu(OrtArenaAllocator, OrtMemTypeDefault)) {
    for (const char* required : {"vision", "decoder"}) {
      if (!manifest.graphs.count(required) || (std::string(required) == "decoder" && !manifest.language_model))
        throw Error("bundle " + bundle + " has no " + required + " graph",
                    "Re-export it with `edgecompress export` (vision-only bundles cannot generate text).");
    }
    if (manifest.positions && manifest.onnxruntime_graphs.count("decoder"))
      throw Error("bundle " + bundle + " pairs mRoPE positions (Qwen2.5-VL) with the fused decoder graph (" +
                      manifest.onnxruntime_graphs.at("decoder").file +
                      "), whose GroupQueryAttention rotates by one position a token where mRoPE needs three",
                  "The bundle is damaged or was not written by edgecompress: re-export it without --decoder-ops "
                  "(the standard decoder graph runs on ONNX Runtime).");
    Ort::SessionOptions options;
    options.SetLogSeverityLevel(3);
    if (threads > 0) options.SetIntraOpNumThreads(threads);
    // Idle pool threads spin unless told not to (ONNX Runtime's default): faster on an otherwise
    // idle CPU (tiny-llava fused decode 0.24 vs 0.31 ms/token), slower on one shared with other
    // busy processes (LoadOptions::spinning, --no-spinning).
    if (!spinning) options.AddConfigEntry("session.intra_op.allow_spinning", "0");
    // weight-only quantization as the bundle declares it (the Python runtime's weight_only_config)
    if (manifest.weights_format == "int4") options.AddConfigEntry("session.qdq_matmulnbits_accuracy_level", "0");
    if (manifest.weights_format == "int8") options.AddConfigEntry("session.disable_quant_qdq", "1");
    if (cuda) {
      auto providers = Ort::GetAvailableProviders();
      if (std::find(providers.begin(), providers.end(), "CUDAExecutionProvider") == providers.end())
        throw Error("the CUDA backend needs onnxruntime-gpu",
                    "Build against an ONNX Runtime with CUDA (a onnxruntime-gpu release), or use --backend onnxruntime-cpu.");
      OrtCUDAProviderOptions cuda_options{};
      options.AppendExecutionProvider_CUDA(cuda_options);
    }
    vision_ = open(bundle, manifest.graphs.at("vision").file, options);
    // the fused decoder graph where the bundle has one: the same inputs and outputs, fewer nodes
    auto fused = manifest.onnxruntime_graphs.find("decoder");
    decoder_graph_ = fused != manifest.onnxruntime_graphs.end() ? fused->second.file : manifest.graphs.at("decoder").file;
    decoder_ = open(bundle, decoder_graph_, options);
    if (fused != manifest.onnxruntime_graphs.end() && fused->second.kv_cache == "shared-buffer") {
      shared_ = true;
      max_length_ = fused->second.kv_cache_max_length;
      const TensorSpec& logits = fused->second.outputs.at(0);  // [1, 1, vocab]: the shared graph's last position only
      logits_shape_ = logits.shape;
      logits_type_ = element_type(logits.dtype);
      if (std::any_of(logits_shape_.begin(), logits_shape_.end(), [](int64_t d) { return d < 0; }))
        throw Error("bundle " + bundle + ": the fused decoder graph's logits have no fixed shape", "Re-export the bundle.");
    }
    if (manifest.graphs.count("prefill")) prefill_ = open(bundle, manifest.graphs.at("prefill").file, options);
    decoder_positions_ = PositionInput(input_shape(*decoder_, "position_ids"));
    if (prefill_) prefill_positions_ = PositionInput(input_shape(*prefill_, "position_ids"));
    // the graphs take the manifest's layout of positions (fails here, at load, where they do not)
    Positions layout = Positions::sequence(0, 1, manifest.positions ? 3 : 1);
    position_shape(layout, decoder_positions_.rank, decoder_positions_.rows, "decoder");
    if (prefill_) position_shape(layout, prefill_positions_.rank, prefill_positions_.rows, "prefill");

    const GraphSpec& vision = manifest.graphs.at("vision");
    for (const TensorSpec& t : vision.inputs) vision_types_[t.name] = element_type(t.dtype);
    for (const TensorSpec& t : vision.outputs) vision_outputs_.push_back(t.name);
    const GraphSpec& decoder = manifest.graphs.at("decoder");
    const TensorSpec* embeds = decoder.input("inputs_embeds");
    if (!embeds || decoder.inputs.size() < 2) throw Error("bundle " + bundle + ": the decoder graph does not take inputs_embeds and position_ids");
    embeds_type_ = element_type(embeds->dtype);
    for (size_t i = 2; i < decoder.inputs.size(); ++i) {
      past_names_.push_back(decoder.inputs[i].name);
      kv_type_ = element_type(decoder.inputs[i].dtype);
    }
    for (const TensorSpec& t : decoder.outputs) decoder_outputs_.push_back(t.name);
    const LanguageModelSpec& lm = *manifest.language_model;
    kv_shape_ = {1, lm.num_kv_heads, 0, lm.head_dim};
    if (prefill_) {
      for (const TensorSpec& t : manifest.graphs.at("prefill").outputs) prefill_outputs_.push_back(t.name);
    }
  }

  const std::string& name() const override { return name_; }

  VisionOutput vision(const std::vector<Feed>& feeds) override {
    std::vector<Ort::Value> values;
    std::vector<const char*> names;
    std::vector<std::vector<uint16_t>> storage(feeds.size());
    for (size_t i = 0; i < feeds.size(); ++i) {
      const Feed& feed = feeds[i];
      names.push_back(feed.name.c_str());
      auto type = vision_types_.count(feed.name) ? vision_types_.at(feed.name) : ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
      if (type == ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8)
        values.push_back(Ort::Value::CreateTensor(cpu_, const_cast<uint8_t*>(feed.bytes.data()), feed.bytes.size(),
                                                  feed.shape.data(), feed.shape.size(), type));
      else if (type == ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64)
        values.push_back(Ort::Value::CreateTensor(cpu_, const_cast<int64_t*>(feed.ints.data()), feed.ints.size() * 8,
                                                  feed.shape.data(), feed.shape.size(), type));
      else
        values.push_back(float_tensor(feed.floats, feed.shape, type, storage[i], cpu_));
    }
    std::vector<const char*> outputs;
    for (const std::string& o : vision_outputs_) outputs.push_back(o.c_str());
    auto result = run(*vision_, "vision", names, values, outputs);
    VisionOutput out;
    auto shape = result[0].GetTensorTypeAndShapeInfo().GetShape();  // [1, tokens, hidden]
    out.tokens = shape.at(1), out.hidden = shape.at(2);
    out.embeds = to_floats(result[0]);
    const int64_t* kept = result[1].GetTensorData<int64_t>();
    out.kept.assign(kept, kept + result[1].GetTensorTypeAndShapeInfo().GetElementCount());
    return out;
  }

  void reset() override {
    if (shared_) return reset_shared();
    Ort::AllocatorWithDefaultOptions allocator;
    cache_.clear();
    for (size_t i = 0; i < past_names_.size(); ++i)
      cache_.push_back(Ort::Value::CreateTensor(allocator, kv_shape_.data(), kv_shape_.size(), kv_type_));
  }

  std::vector<float> decode(const std::vector<float>& embeds, int64_t tokens, const Positions& positions) override {
    std::vector<int64_t> positions_shape = position_shape(positions, decoder_positions_.rank, decoder_positions_.rows, "decoder");
    if (shared_ && tokens == 1) return decode_step(embeds, positions, positions_shape);
    std::vector<int64_t> embeds_shape{1, tokens, static_cast<int64_t>(embeds.size()) / tokens};
    std::vector<uint16_t> storage;
    Ort::Value embeds_value = float_tensor(embeds, embeds_shape, embeds_type_, storage, cpu_);
    Ort::Value positions_value = int64_tensor(positions.values, positions_shape);
    if (shared_) return decode_shared(embeds_value, positions_value, tokens);
    Ort::IoBinding binding(*decoder_);
    binding.BindInput("inputs_embeds", embeds_value);
    binding.BindInput("position_ids", positions_value);
    for (size_t i = 0; i < past_names_.size(); ++i) binding.BindInput(past_names_[i].c_str(), cache_[i]);
    binding.BindOutput(decoder_outputs_[0].c_str(), cpu_);
    for (size_t i = 1; i < decoder_outputs_.size(); ++i) binding.BindOutput(decoder_outputs_[i].c_str(), cache_memory_);
    try {
      decoder_->Run(Ort::RunOptions{nullptr}, binding);
    } catch (const Ort::Exception& err) {
      throw Error(std::string("ONNX Runtime failed running the decoder graph: ") + first_line(err.what()));
    }
    std::vector<Ort::Value> outputs = binding.GetOutputValues();
    for (size_t i = 0; i < cache_.size(); ++i) cache_[i] = std::move(outputs[1 + i]);
    return last_logits(outputs[0]);
  }

  std::vector<float> prefill(const std::vector<float>& embeds, int64_t tokens, const Positions& positions,
                             std::vector<int64_t>& kept) override {
    if (!prefill_)
      throw Error("this bundle has no prefill graph (its method prunes before the language model)", "Prefill with decoder() and an empty cache.");
    std::vector<int64_t> positions_shape = position_shape(positions, prefill_positions_.rank, prefill_positions_.rows, "prefill");
    std::vector<int64_t> embeds_shape{1, tokens, static_cast<int64_t>(embeds.size()) / tokens};
    std::vector<uint16_t> storage;
    std::vector<Ort::Value> inputs;
    inputs.push_back(float_tensor(embeds, embeds_shape, embeds_type_, storage, cpu_));
    inputs.push_back(int64_tensor(positions.values, positions_shape));
    std::vector<const char*> names{"inputs_embeds", "position_ids"}, outputs;
    for (const std::string& o : prefill_outputs_) outputs.push_back(o.c_str());
    auto result = run(*prefill_, "prefill", names, inputs, outputs);
    const int64_t* data = result[1].GetTensorData<int64_t>();
    kept.assign(data, data + result[1].GetTensorTypeAndShapeInfo().GetElementCount());
    cache_.clear();
    for (size_t i = 2; i < result.size(); ++i) cache_.push_back(std::move(result[i]));
    return last_logits(result[0]);
  }

 private:
  // The cache buffers, allocated at the first reset and kept: a new answer only starts at length 0.
  void reset_shared() {
    length_ = 0;
    if (shared_binding_) return;
    std::vector<int64_t> shape{kv_shape_[0], kv_shape_[1], max_length_, kv_shape_[3]};
    if (!cache_allocator_) cache_allocator_ = std::make_unique<Ort::Allocator>(*decoder_, cache_memory_);
    cache_.clear();
    for (size_t i = 0; i < past_names_.size(); ++i)
      cache_.push_back(Ort::Value::CreateTensor(*cache_allocator_, shape.data(), shape.size(), kv_type_));
    // the logits into one buffer bound once: no allocation and no output fetch per token
    Ort::AllocatorWithDefaultOptions host;
    logits_ = Ort::Value::CreateTensor(host, logits_shape_.data(), logits_shape_.size(), logits_type_);
    shared_binding_ = std::make_unique<Ort::IoBinding>(*decoder_);
    shared_binding_->BindOutput(decoder_outputs_[0].c_str(), logits_);
    for (size_t i = 0; i < past_names_.size(); ++i) {
      shared_binding_->BindInput(past_names_[i].c_str(), cache_[i]);
      shared_binding_->BindOutput(decoder_outputs_[1 + i].c_str(), cache_[i]);
    }
  }

  std::vector<float> decode_shared(const Ort::Value& embeds, const Ort::Value& positions, int64_t tokens) {
    if (length_ + tokens > max_length_)
      throw Error(std::to_string(length_ + tokens) + " positions do not fit the " + std::to_string(max_length_) +
                      "-position KV cache",
                  "Shorten the prompt or generate fewer tokens.");
    // GroupQueryAttention's lengths: seqlens_k is the valid length after this step minus one
    int32_t total = static_cast<int32_t>(length_ + tokens), seqlens = total - 1;
    int64_t one = 1;
    Ort::Value seqlens_value = Ort::Value::CreateTensor<int32_t>(cpu_, &seqlens, 1, &one, 1);
    Ort::Value total_value = Ort::Value::CreateTensor<int32_t>(cpu_, &total, 1, nullptr, 0);
    shared_binding_->BindInput("inputs_embeds", embeds);
    shared_binding_->BindInput("position_ids", positions);
    shared_binding_->BindInput("seqlens_k", seqlens_value);
    shared_binding_->BindInput("total_sequence_length", total_value);
    try {
      decoder_->Run(Ort::RunOptions{nullptr}, *shared_binding_);
    } catch (const Ort::Exception& err) {
      throw Error(std::string("ONNX Runtime failed running the decoder graph: ") + first_line(err.what()));
    }
    length_ = total;
    step_bound_ = false;  // this call's inputs are bound now, not the one-token step's
    return last_logits(logits_);
  }

  // One token on the shared cache: its inputs live in this object's buffers, bound once and
  // rewritten in place each step (a decode step of a small model is ~60 tiny nodes, so per-step
  // allocation and binding would be a visible share of it).
  std::vector<float> decode_step(const std::vector<float>& embeds, const Positions& positions,
                                 const std::vector<int64_t>& positions_shape) {
    if (length_ + 1 > max_length_)
      throw Error(std::to_string(length_ + 1) + " positions do not fit the " + std::to_string(max_length_) + "-position KV cache",
                  "Shorten the prompt or generate fewer tokens.");
    if (!step_bound_) bind_step(static_cast<int64_t>(embeds.size()), positions_shape);
    if (embeds_type_ == ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16)
      std::transform(embeds.begin(), embeds.end(), step_half_.begin(), float_to_half);
    else
      std::copy(embeds.begin(), embeds.end(), step_embeds_.begin());
    std::copy(positions.values.begin(), positions.values.end(), step_positions_.begin());  // one a row
    step_total_ = static_cast<int32_t>(length_ + 1);
    step_seqlens_ = step_total_ - 1;  // GroupQueryAttention: the valid length after this step minus one
    try {
      decoder_->Run(Ort::RunOptions{nullptr}, *shared_binding_);
    } catch (const Ort::Exception& err) {
      throw Error(std::string("ONNX Runtime failed running the decoder graph: ") + first_line(err.what()));
    }
    length_ = step_total_;
    return last_logits(logits_);
  }

  // `positions_shape`: [1, 1] or [rows, 1, 1], as the graph takes position_ids
  void bind_step(int64_t hidden, const std::vector<int64_t>& positions_shape) {
    std::vector<int64_t> embeds_shape{1, 1, hidden}, one{1};
    step_values_.clear();
    if (embeds_type_ == ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16) {
      step_half_.assign(hidden, 0);
      step_values_.push_back(Ort::Value::CreateTensor(cpu_, step_half_.data(), hidden * 2, embeds_shape.data(), 3, embeds_type_));
    } else {
      step_embeds_.assign(hidden, 0.0f);
      step_values_.push_back(Ort::Value::CreateTensor<float>(cpu_, step_embeds_.data(), hidden, embeds_shape.data(), 3));
    }
    step_positions_.assign(positions_shape.front(), 0);  // [1, 1] or [rows, 1, 1]: one a row
    step_values_.push_back(Ort::Value::CreateTensor<int64_t>(cpu_, step_positions_.data(), step_positions_.size(),
                                                             positions_shape.data(), positions_shape.size()));
    step_values_.push_back(Ort::Value::CreateTensor<int32_t>(cpu_, &step_seqlens_, 1, one.data(), 1));
    step_values_.push_back(Ort::Value::CreateTensor<int32_t>(cpu_, &step_total_, 1, nullptr, 0));
    const char* names[] = {"inputs_embeds", "position_ids", "seqlens_k", "total_sequence_length"};
    for (size_t i = 0; i < step_values_.size(); ++i) shared_binding_->BindInput(names[i], step_values_[i]);
    step_bound_ = true;
  }

  Ort::Value int64_tensor(const std::vector<int64_t>& values, const std::vector<int64_t>& shape) {
    return Ort::Value::CreateTensor(cpu_, const_cast<int64_t*>(values.data()), values.size() * 8, shape.data(), shape.size(),
                                    ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64);
  }

  std::unique_ptr<Ort::Session> open(const std::string& bundle, const std::string& relative, const Ort::SessionOptions& options) {
    std::string path = inside(bundle, relative);
    try {
      return std::make_unique<Ort::Session>(environment(), path.c_str(), options);
    } catch (const Ort::Exception& err) {
      throw Error("ONNX Runtime cannot load " + relative + " from " + bundle + ": " + first_line(err.what()),
                  "The bundle is damaged or incomplete: re-export it.");
    }
  }

  std::vector<Ort::Value> run(Ort::Session& session, const std::string& graph, const std::vector<const char*>& names,
                              std::vector<Ort::Value>& values, const std::vector<const char*>& outputs) {
    try {
      return session.Run(Ort::RunOptions{nullptr}, names.data(), values.data(), values.size(), outputs.data(), outputs.size());
    } catch (const Ort::Exception& err) {
      throw Error("ONNX Runtime failed running the " + graph + " graph: " + first_line(err.what()));
    }
  }

  static std::vector<float> last_logits(const Ort::Value& logits) {
    auto shape = logits.GetTensorTypeAndShapeInfo().GetShape();
    size_t vocab = static_cast<size_t>(shape.back());
    size_t count = logits.GetTensorTypeAndShapeInfo().GetElementCount();
    return to_floats(logits, count - vocab);
  }

  std::string name_;
  std::string decoder_graph_;  // the bundle-relative file the decoder session runs
  Ort::MemoryInfo cpu_, cache_memory_;
  std::unique_ptr<Ort::Session> vision_, decoder_, prefill_;
  std::map<std::string, ONNXTensorElementDataType> vision_types_;
  std::vector<std::string> vision_outputs_, decoder_outputs_, prefill_outputs_, past_names_;
  ONNXTensorElementDataType embeds_type_ = ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT, kv_type_ = ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
  std::vector<int64_t> kv_shape_;
  PositionInput decoder_positions_, prefill_positions_;  // how the graphs take position_ids
  std::unique_ptr<Ort::Allocator> cache_allocator_;  // before cache_: it outlives the buffers it made
  std::vector<Ort::Value> cache_;
  // the shared-cache graph's one-token step: buffers bound once, rewritten in place
  Ort::Value logits_{nullptr};
  std::vector<int64_t> logits_shape_;
  ONNXTensorElementDataType logits_type_ = ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
  std::vector<Ort::Value> step_values_;
  std::vector<float> step_embeds_;
  std::vector<uint16_t> step_half_;
  std::vector<int64_t> step_positions_;  // the step's position ids, one a row
  int32_t step_seqlens_ = 0, step_total_ = 0;
  bool step_bound_ = false;
  bool shared_ = false;  // the decoder's cache is shared buffers (see the top of this file)
  int64_t max_length_ = 0, length_ = 0;
  std::unique_ptr<Ort::IoBinding> shared_binding_;
};

}  // namespace

std::unique_ptr<Backend> make_backend(const std::string& name, const std::string& bundle, const Manifest& manifest, int threads,
                                      const std::string& profile, bool spinning) {
  if (name == "onnxruntime" || name == "onnxruntime-cpu")
    return std::make_unique<OnnxRuntimeBackend>(bundle, manifest, false, threads, spinning);
  if (name == "onnxruntime-cuda") return std::make_unique<OnnxRuntimeBackend>(bundle, manifest, true, threads, spinning);
  if (name == "tensorrt") {
#ifdef EDGECOMPRESS_WITH_TENSORRT
    return make_tensorrt_backend(bundle, manifest, profile);
#else
    (void)profile;
    throw Error("this build of the C++ runtime has no TensorRT backend",
                "Rebuild it where CMake finds TensorRT and the CUDA toolkit: on Jetson, JetPack's TensorRT "
                "(sudo apt install nvidia-jetpack); elsewhere, -DTENSORRT_ROOT=<folder with include/ and lib/ of a TensorRT release>. "
                "Or use the Python runtime (--backend tensorrt), or --backend onnxruntime here.");
#endif
  }
  throw Error("unknown backend '" + name + "'", "Available backends: onnxruntime, onnxruntime-cpu, onnxruntime-cuda, tensorrt.");
}

}  // namespace edgecompress
