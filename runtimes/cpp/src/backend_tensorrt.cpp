// TensorRT (C++ runtime API, TensorRT 10) on an NVIDIA GPU: the engines `edgecompress build`
// made for one profile, as the Python runtime's tensorrt_backend.py runs them, except that the KV
// cache stays on the device. Compiled only where CMake finds TensorRT and the CUDA toolkit
// (EDGECOMPRESS_WITH_TENSORRT).
//
// Status: compile-checked (g++ -Wall -Wextra) against the public headers of TensorRT 10.x OSS
// (NVIDIA/TensorRT v10.3.0, JetPack 6's version, and v10.16) with CUDA 13's runtime headers;
// never linked against libnvinfer nor run, as it was written where there is no GPU and no TensorRT.
//
// Memory: the cache is two sets of device buffers, allocated once at the most tokens the
// decoder's optimization profiles allow. The decoder reads its past from one set and writes its
// present (past + new tokens) into the other; the sets swap after each call. Per token only the
// embedding row goes to the device and the last logits row comes back. Other inputs and outputs
// live in buffers that grow to the largest call and are reused.
#include <NvInferRuntime.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <deque>
#include <fstream>
#include <iostream>
#include <iterator>
#include <map>
#include <optional>
#include <utility>

#include "backend.hpp"
#include "edgecompress/error.hpp"
#include "engines.hpp"
#include "npy.hpp"

namespace edgecompress {
namespace {

using nvinfer1::DataType;
using nvinfer1::Dims;

void cuda_check(cudaError_t status, const std::string& what) {
  if (status != cudaSuccess) throw Error("CUDA call failed: " + what + ": " + cudaGetErrorString(status));
}

// The GPU's compute capability as the profiles write it ("8.7"), or none without a CUDA GPU.
std::optional<std::string> device_compute_capability() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
    cudaGetLastError();  // clear the sticky "no device" error
    return std::nullopt;
  }
  cudaDeviceProp props{};
  cuda_check(cudaGetDeviceProperties(&props, 0), "cudaGetDeviceProperties");
  return compute_capability_string(props.major, props.minor);
}

// TensorRT's errors go to stderr (as the Python runtime's logger prints them); the last one
// also goes into the message of the Error that follows a failed call.
class Logger final : public nvinfer1::ILogger {
 public:
  void log(Severity severity, const char* message) noexcept override {
    if (severity > Severity::kERROR) return;
    std::cerr << "[TensorRT] " << message << "\n";
    try {
      last_ = message;
    } catch (...) {  // log() must not throw; the message is already on stderr
    }
  }
  std::string take() { return std::exchange(last_, std::string()); }

 private:
  std::string last_;
};

// Device memory that only grows: a call reuses what an earlier, larger call allocated.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& other) noexcept : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}
  ~DeviceBuffer() {
    if (data_) cudaFree(data_);
  }
  void* reserve(size_t bytes) {
    if (bytes > size_ || !data_) {
      if (data_) cudaFree(data_);
      data_ = nullptr, size_ = 0;
      // TensorRT wants an address even for an empty tensor
      cuda_check(cudaMalloc(&data_, std::max<size_t>(bytes, 256)), "cudaMalloc of " + std::to_string(bytes) + " bytes");
      size_ = std::max<size_t>(bytes, 256);
    }
    return data_;
  }
  void* data() const { return data_; }

 private:
  void* data_ = nullptr;
  size_t size_ = 0;
};

size_t element_size(DataType type) {
  switch (type) {
    case DataType::kFLOAT:
    case DataType::kINT32:
      return 4;
    case DataType::kHALF:
    case DataType::kBF16:
      return 2;
    case DataType::kINT64:
      return 8;
    default:
      return 1;
  }
}

std::string type_name(DataType type) {
  switch (type) {
    case DataType::kFLOAT: return "float32";
    case DataType::kHALF: return "float16";
    case DataType::kINT64: return "int64";
    case DataType::kINT32: return "int32";
    case DataType::kBOOL: return "bool";
    case DataType::kBF16: return "bfloat16";
    case DataType::kUINT8: return "uint8";
    default: return "type " + std::to_string(static_cast<int>(type));
  }
}

Dims make_dims(const std::vector<int64_t>& shape) {
  if (shape.size() > static_cast<size_t>(Dims::MAX_DIMS)) throw Error("a tensor of " + std::to_string(shape.size()) + " dimensions");
  Dims dims{};
  dims.nbDims = static_cast<int32_t>(shape.size());
  std::copy(shape.begin(), shape.end(), dims.d);
  return dims;
}

std::vector<int64_t> to_shape(const Dims& dims) { return dims.nbDims < 0 ? std::vector<int64_t>{} : std::vector<int64_t>(dims.d, dims.d + dims.nbDims); }

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string out = "[";
  for (size_t i = 0; i < shape.size(); ++i) out += (i ? ", " : "") + std::to_string(shape[i]);
  return out + "]";
}

int64_t volume(const std::vector<int64_t>& shape) {
  int64_t count = 1;
  for (int64_t d : shape) count *= d;
  return count;
}

std::vector<char> read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("cannot read " + path);
  return std::vector<char>(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// One engine and its execution context (destroyed in this order: context, then engine).
struct Engine {
  std::string graph;
  std::unique_ptr<nvinfer1::ICudaEngine> engine;
  std::unique_ptr<nvinfer1::IExecutionContext> context;
  int profile = 0;  // the context's optimization profile (0 when it is created)
};

class TensorRTBackend final : public Backend {
 public:
  TensorRTBackend(const std::string& bundle, const Manifest& manifest, const std::string& profile) {
    EngineRecord record = select_engines(manifest.data, profile);
    check_engine_backend(record, "tensorrt");
    check_compatible(record, trt_version_string(getInferLibVersion()), device_compute_capability());
    name_ = record.backend + ":" + record.profile;
    for (const char* required : {"vision", "decoder"}) {
      if (!record.graphs.count(required) || !manifest.language_model)
        throw Error("bundle " + bundle + " has no " + required + " engine for profile " + record.profile,
                    "Rebuild them: edgecompress build " + bundle + " --profile " + record.profile + " --force.");
    }
    runtime_.reset(nvinfer1::createInferRuntime(logger_));
    if (!runtime_) throw Error("TensorRT could not create its runtime: " + logger_.take());
    // every file is checked before the first is deserialised: a damaged bundle fails fast
    std::map<std::string, std::string> paths;
    for (const auto& [graph, _] : record.graphs) paths[graph] = checked_engine_file(bundle, record, graph);
    for (const auto& [graph, path] : paths) engines_[graph] = load(graph, path, record.graphs.at(graph).file);
    cuda_check(cudaStreamCreate(&stream_), "cudaStreamCreate");

    const LanguageModelSpec& lm = *manifest.language_model;
    layers_ = lm.num_layers, heads_ = lm.num_kv_heads, head_dim_ = lm.head_dim;
    // after a pruning prefill engine (FastV) the decoder engine has one profile: decode
    decode_profile_ = manifest.decoder_pruning ? 0 : 1;
    decode_profile_ = std::max(0, std::min(decode_profile_, engines_.at("decoder").engine->getNbOptimizationProfiles() - 1));
    // the engines take the manifest's layout of positions (fails here, at load, where they do not)
    Positions layout = Positions::sequence(0, 1, manifest.positions ? 3 : 1);
    for (const char* graph : {"decoder", "prefill"}) {
      if (!engines_.count(graph)) continue;
      Dims binding = engines_.at(graph).engine->getTensorShape("position_ids");
      if (binding.nbDims < 0) throw Error("the " + std::string(graph) + " engine has no position_ids input");
      position_shape(layout, static_cast<size_t>(binding.nbDims), binding.nbDims == 3 ? binding.d[0] : -1, graph);
    }
    int64_t limit = kv_length_limit(manifest.data);
    // the shapes the engine was built with, as the manifest records them (its sha256 was checked)
    allocate_cache(kv_capacity(profile_maxima(record.graphs.at("decoder")), layers_, limit > 0 ? limit : manifest.max_sequence));
  }

  ~TensorRTBackend() override {
    if (stream_) cudaStreamDestroy(stream_);
  }

  const std::string& name() const override { return name_; }

  VisionOutput vision(const std::vector<Feed>& feeds) override {
    Engine& vision = engines_.at("vision");
    std::deque<std::vector<uint8_t>> staging;
    for (const Feed& feed : feeds) {
      DataType type = vision.engine->getTensorDataType(feed.name.c_str());
      const void* host;
      size_t count;
      if (!feed.bytes.empty()) {  // uint8 pixels (a bundle exported with --pixel-input uint8)
        if (type != DataType::kUINT8) throw unfed(feed.name, type);
        host = feed.bytes.data(), count = feed.bytes.size();
      } else if (!feed.ints.empty()) {
        host = to_type(feed.ints, type, feed.name, staging), count = feed.ints.size();
      } else {
        host = to_type(feed.floats, type, feed.name, staging), count = feed.floats.size();
      }
      set_input(vision, feed.name, feed.shape, upload(vision.graph + "/" + feed.name, host, count * element_size(type)));
    }
    std::map<std::string, std::vector<int64_t>> shapes = bind_outputs(vision);
    run(vision);
    auto embeds_shape = shapes.at("image_embeds");  // [1, tokens, hidden]
    VisionOutput out;
    out.tokens = embeds_shape.at(1), out.hidden = embeds_shape.at(2);
    out.embeds = download_floats(vision, "image_embeds", 0, volume(embeds_shape));
    out.kept = download_ints(vision, "kept_indices", volume(shapes.at("kept_indices")));
    return out;
  }

  void reset() override {
    std::fill(lengths_.begin(), lengths_.end(), 0);
    past_ = 0;
  }

  std::vector<float> decode(const std::vector<float>& embeds, int64_t tokens, const Positions& positions) override {
    Engine& decoder = engines_.at("decoder");
    // as the Python runtime: an empty cache takes the prefill profile, anything else decodes
    select_profile(decoder, lengths_.at(0) == 0 ? 0 : decode_profile_);
    std::deque<std::vector<uint8_t>> staging;
    bind_prompt(decoder, embeds, tokens, positions, staging);
    for (int i = 0; i < layers_; ++i) {
      for (int part = 0; part < 2; ++part) {
        std::string name = "past." + std::to_string(i) + (part ? ".value" : ".key");
        set_input(decoder, name, {1, heads_, lengths_[i], head_dim_}, cache_[past_][2 * i + part].data());
      }
    }
    std::vector<int64_t> lengths = bind_present(decoder, 1 - past_);
    Rows logits = bind_logits(decoder);
    run(decoder);
    past_ = 1 - past_;  // the present just written is the next call's past
    lengths_ = std::move(lengths);
    return download_floats(decoder, "logits", (logits.rows - 1) * logits.size, logits.size);
  }

  std::vector<float> prefill(const std::vector<float>& embeds, int64_t tokens, const Positions& positions,
                             std::vector<int64_t>& kept) override {
    if (!engines_.count("prefill"))
      throw Error("this bundle has no prefill engine (its method prunes before the language model)", "Prefill with decoder() and an empty cache.");
    Engine& prefill = engines_.at("prefill");
    select_profile(prefill, 0);
    reset();
    std::deque<std::vector<uint8_t>> staging;
    bind_prompt(prefill, embeds, tokens, positions, staging);
    std::vector<int64_t> lengths = bind_present(prefill, past_);  // no past: the present is the next decode's past
    Rows logits = bind_logits(prefill);
    std::vector<int64_t> kept_shape = to_shape(prefill.context->getTensorShape("kept_indices"));
    check_static(prefill, "kept_indices", kept_shape);
    set_output(prefill, "kept_indices", kept_shape);
    run(prefill);
    lengths_ = std::move(lengths);
    kept = download_ints(prefill, "kept_indices", volume(kept_shape));
    return download_floats(prefill, "logits", (logits.rows - 1) * logits.size, logits.size);
  }

 private:
  Engine load(const std::string& graph, const std::string& path, const std::string& relative) {
    std::vector<char> blob = read_file(path);
    Engine out{graph, nullptr, nullptr, 0};
    out.engine.reset(runtime_->deserializeCudaEngine(blob.data(), blob.size()));
    if (!out.engine) throw Error("TensorRT could not load " + relative + ": " + logger_.take(), "Rebuild it with edgecompress build --force.");
    out.context.reset(out.engine->createExecutionContext());
    if (!out.context) throw Error("TensorRT could not create an execution context for " + relative + ": " + logger_.take());
    return out;
  }

  // Two sets of per-layer key and value buffers, each `capacity` tokens long: the longest present
  // the decoder's optimization profiles allow (a static engine: the manifest's limit). Twice the
  // cache's size in device memory, the price of never copying it.
  void allocate_cache(std::vector<int64_t> capacity) {
    capacity_ = std::move(capacity);
    DataType kv_type = engines_.at("decoder").engine->getTensorDataType("past.0.key");
    for (auto& set : cache_) {
      set.clear();
      for (int i = 0; i < layers_; ++i) {
        size_t bytes = static_cast<size_t>(heads_ * capacity_[i] * head_dim_) * element_size(kv_type);
        for (int part = 0; part < 2; ++part) {
          set.emplace_back();
          set.back().reserve(bytes);
        }
      }
    }
    lengths_.assign(layers_, 0);
  }

  void select_profile(Engine& engine, int profile) {
    if (engine.profile == profile) return;  // switching costs a little: only when it changes
    if (!engine.context->setOptimizationProfileAsync(profile, stream_))
      throw Error("TensorRT could not select optimization profile " + std::to_string(profile) + " of the " + engine.graph +
                  " engine: " + logger_.take());
    engine.profile = profile;
  }

  // inputs_embeds (converted to the engine's float type) and position_ids for `tokens` tokens, the
  // latter shaped by the engine's binding: [1, tokens], or [3, 1, tokens] for mRoPE
  void bind_prompt(Engine& engine, const std::vector<float>& embeds, int64_t tokens, const Positions& positions,
                   std::deque<std::vector<uint8_t>>& staging) {
    int64_t hidden = static_cast<int64_t>(embeds.size()) / tokens;
    DataType type = engine.engine->getTensorDataType("inputs_embeds");
    const void* host = to_type(embeds, type, "inputs_embeds", staging);
    set_input(engine, "inputs_embeds", {1, tokens, hidden}, upload(engine.graph + "/inputs_embeds", host, embeds.size() * element_size(type)));
    Dims binding = engine.engine->getTensorShape("position_ids");  // -1 for a dynamic axis
    if (binding.nbDims < 0) throw Error("the " + engine.graph + " engine has no position_ids input");
    std::vector<int64_t> shape = position_shape(positions, static_cast<size_t>(binding.nbDims), binding.nbDims == 3 ? binding.d[0] : -1,
                                                engine.graph);
    DataType position_type = engine.engine->getTensorDataType("position_ids");
    host = to_type(positions.values, position_type, "position_ids", staging);
    set_input(engine, "position_ids", shape,
              upload(engine.graph + "/position_ids", host, positions.values.size() * element_size(position_type)));
  }

  // present.<i>.{key,value} written into cache set `set`, after every input shape is known;
  // returns the tokens each layer will hold (the cache's lengths once the engine has run).
  std::vector<int64_t> bind_present(Engine& engine, int set) {
    std::vector<int64_t> lengths(layers_);
    for (int i = 0; i < layers_; ++i) {
      for (int part = 0; part < 2; ++part) {
        std::string name = "present." + std::to_string(i) + (part ? ".value" : ".key");
        std::vector<int64_t> shape = to_shape(engine.context->getTensorShape(name.c_str()));
        check_static(engine, name, shape);
        if (shape.size() != 4 || shape[2] > capacity_[i])
          throw Error("the " + engine.graph + " engine's " + name + " is " + shape_text(shape) + ", longer than the " +
                          std::to_string(capacity_[i]) + " tokens its cache holds",
                      "Shorten the prompt or lower --max-new-tokens.");
        if (!engine.context->setTensorAddress(name.c_str(), cache_[set][2 * i + part].data()))
          throw Error("TensorRT refused the address of " + name + ": " + logger_.take());
        if (part == 0) lengths[i] = shape[2];
      }
    }
    return lengths;
  }

  struct Rows {
    int64_t rows, size;
  };

  // The logits output, [1, rows, vocab]: only its last row comes back to the host.
  Rows bind_logits(Engine& engine) {
    std::vector<int64_t> shape = to_shape(engine.context->getTensorShape("logits"));
    check_static(engine, "logits", shape);
    if (shape.size() != 3 || shape[1] < 1) throw Error("the " + engine.graph + " engine's logits are " + shape_text(shape) + ", not [1, tokens, vocab]");
    set_output(engine, "logits", shape);
    return {shape[1], shape[2]};
  }

  // Every output of `engine` into its reusable buffer; their shapes.
  std::map<std::string, std::vector<int64_t>> bind_outputs(Engine& engine) {
    std::map<std::string, std::vector<int64_t>> shapes;
    for (int t = 0; t < engine.engine->getNbIOTensors(); ++t) {
      std::string name = engine.engine->getIOTensorName(t);
      if (engine.engine->getTensorIOMode(name.c_str()) != nvinfer1::TensorIOMode::kOUTPUT) continue;
      shapes[name] = to_shape(engine.context->getTensorShape(name.c_str()));
      check_static(engine, name, shapes[name]);
      set_output(engine, name, shapes[name]);
    }
    return shapes;
  }

  void set_input(Engine& engine, const std::string& name, const std::vector<int64_t>& shape, void* device) {
    if (!engine.context->setInputShape(name.c_str(), make_dims(shape)))
      throw Error("the " + engine.graph + " engine does not take " + name + " of shape " + shape_text(shape) + ": " + logger_.take(),
                  "The input is outside the shapes the engines were built for: rebuild them with a profile that allows it.");
    if (!engine.context->setTensorAddress(name.c_str(), device))
      throw Error("TensorRT refused the address of " + name + ": " + logger_.take());
  }

  void set_output(Engine& engine, const std::string& name, const std::vector<int64_t>& shape) {
    size_t bytes = static_cast<size_t>(volume(shape)) * element_size(engine.engine->getTensorDataType(name.c_str()));
    if (!engine.context->setTensorAddress(name.c_str(), buffers_[engine.graph + "/" + name].reserve(bytes)))
      throw Error("TensorRT refused the address of " + name + ": " + logger_.take());
  }

  void check_static(const Engine& engine, const std::string& name, const std::vector<int64_t>& shape) {
    if (shape.empty() || std::any_of(shape.begin(), shape.end(), [](int64_t d) { return d < 0; }))
      throw Error("the " + engine.graph + " engine's output " + name + " has no known shape before it runs (" + shape_text(shape) + ")",
                  "Rebuild the engines from this bundle with edgecompress build --force.");
  }

  void* upload(const std::string& key, const void* host, size_t bytes) {
    void* device = buffers_[key].reserve(bytes);
    if (bytes) cuda_check(cudaMemcpyAsync(device, host, bytes, cudaMemcpyHostToDevice, stream_), "cudaMemcpyAsync to the device");
    return device;
  }

  void run(Engine& engine) {
    if (!engine.context->enqueueV3(stream_)) throw Error("TensorRT failed to run the " + engine.graph + " engine: " + logger_.take());
    cuda_check(cudaStreamSynchronize(stream_), "running the " + engine.graph + " engine");
  }

  // `count` values of output `name` from element `first`, as float32 (exact from float16).
  std::vector<float> download_floats(Engine& engine, const std::string& name, int64_t first, int64_t count) {
    DataType type = engine.engine->getTensorDataType(name.c_str());
    if (type != DataType::kFLOAT && type != DataType::kHALF)
      throw Error("the " + engine.graph + " engine returns " + name + " as " + type_name(type) + ", which the C++ runtime does not read");
    size_t size = element_size(type);
    std::vector<uint8_t> bytes(static_cast<size_t>(count) * size);
    const uint8_t* device = static_cast<const uint8_t*>(buffers_.at(engine.graph + "/" + name).data()) + first * size;
    cuda_check(cudaMemcpy(bytes.data(), device, bytes.size(), cudaMemcpyDeviceToHost), "cudaMemcpy from the device");
    std::vector<float> out(count);
    if (type == DataType::kHALF) {
      const uint16_t* half = reinterpret_cast<const uint16_t*>(bytes.data());
      std::transform(half, half + count, out.begin(), half_to_float);
    } else {
      std::copy_n(reinterpret_cast<const float*>(bytes.data()), count, out.begin());
    }
    return out;
  }

  std::vector<int64_t> download_ints(Engine& engine, const std::string& name, int64_t count) {
    DataType type = engine.engine->getTensorDataType(name.c_str());
    const void* device = buffers_.at(engine.graph + "/" + name).data();
    std::vector<int64_t> out(count);
    if (type == DataType::kINT64) {
      cuda_check(cudaMemcpy(out.data(), device, count * 8, cudaMemcpyDeviceToHost), "cudaMemcpy from the device");
    } else if (type == DataType::kINT32) {
      std::vector<int32_t> narrow(count);
      cuda_check(cudaMemcpy(narrow.data(), device, count * 4, cudaMemcpyDeviceToHost), "cudaMemcpy from the device");
      std::copy(narrow.begin(), narrow.end(), out.begin());
    } else {
      throw Error("the " + engine.graph + " engine returns " + name + " as " + type_name(type) + ", which the C++ runtime does not read");
    }
    return out;
  }

  // Host bytes of `values` in the engine's tensor type, kept in `staging` until the call ends.
  const void* to_type(const std::vector<float>& values, DataType type, const std::string& name, std::deque<std::vector<uint8_t>>& staging) {
    if (type == DataType::kFLOAT) return values.data();
    if (type != DataType::kHALF) throw unfed(name, type);
    staging.emplace_back(values.size() * 2);
    uint16_t* half = reinterpret_cast<uint16_t*>(staging.back().data());
    std::transform(values.begin(), values.end(), half, float_to_half);
    return half;
  }

  const void* to_type(const std::vector<int64_t>& values, DataType type, const std::string& name, std::deque<std::vector<uint8_t>>& staging) {
    if (type == DataType::kINT64) {  // copied: position ids are a temporary of the caller
      staging.emplace_back(values.size() * 8);
      std::memcpy(staging.back().data(), values.data(), values.size() * 8);
      return staging.back().data();
    }
    if (type != DataType::kINT32) throw unfed(name, type);
    staging.emplace_back(values.size() * 4);
    int32_t* narrow = reinterpret_cast<int32_t*>(staging.back().data());
    std::transform(values.begin(), values.end(), narrow, [](int64_t v) { return static_cast<int32_t>(v); });
    return narrow;
  }

  static Error unfed(const std::string& name, DataType type) {
    return Error("the engines take " + name + " as " + type_name(type) + ", which the C++ runtime does not feed",
                 "Re-export the bundle with --precision fp32 or fp16 and rebuild its engines.");
  }

  std::string name_;
  Logger logger_;
  std::unique_ptr<nvinfer1::IRuntime> runtime_;  // outlives the engines it deserialised
  std::map<std::string, Engine> engines_;
  cudaStream_t stream_ = nullptr;
  int layers_ = 0, decode_profile_ = 1;
  int64_t heads_ = 0, head_dim_ = 0;
  std::vector<int64_t> capacity_;           // tokens per layer each cache buffer holds
  std::array<std::vector<DeviceBuffer>, 2> cache_;  // [set][2 * layer + (0 key, 1 value)]
  int past_ = 0;                            // the set holding the past
  std::vector<int64_t> lengths_;            // tokens in each layer's past
  std::map<std::string, DeviceBuffer> buffers_;  // "graph/tensor": inputs and outputs but the cache
};

}  // namespace

std::unique_ptr<Backend> make_tensorrt_backend(const std::string& bundle, const Manifest& manifest, const std::string& profile) {
  return std::make_unique<TensorRTBackend>(bundle, manifest, profile);
}

}  // namespace edgecompress
