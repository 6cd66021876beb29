// The manifest's TensorRT engine records (`engines.<profile>`, written by `edgecompress build`)
// and the checks made before any engine is deserialised: which profile's engines, built by which
// TensorRT for which GPU, with which sha256. Pure logic over the manifest JSON, compiled into
// every build so that it is tested where there is no GPU and no TensorRT; the Python runtime's
// tensorrt_backend.py (select_engines, check_compatible) with the same messages.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace edgecompress {

// One engine: its file, sha256 and optimization profiles ({tensor: [min, opt, max] shapes} each).
struct EngineGraph {
  std::string file, sha256;
  std::vector<std::map<std::string, std::vector<std::vector<int64_t>>>> optimization_profiles;
};

// The engines built for one profile.
struct EngineRecord {
  std::string profile, backend, builder_version, compute_capability, precision;
  std::map<std::string, EngineGraph> graphs;
};

// The record of `profile`, or of the only profile when `profile` is empty.
EngineRecord select_engines(const nlohmann::json& manifest, const std::string& profile);

// Refuse engines built by another TensorRT or for another GPU; `device_cc` empty: no CUDA GPU.
void check_compatible(const EngineRecord& record, const std::string& trt_version, const std::optional<std::string>& device_cc);

// Refuse engines made by a TensorRT other than the one this runtime links (`linked`: "tensorrt").
void check_engine_backend(const EngineRecord& record, const std::string& linked);

// The engine file of `graph` inside the bundle, present and matching its recorded sha256.
std::string checked_engine_file(const std::string& bundle, const EngineRecord& record, const std::string& graph);

// getInferLibVersion()'s number (major * 10000 + minor * 100 + patch since TensorRT 10) as
// trt.__version__ writes it: "10.3.0".
std::string trt_version_string(int32_t lib_version);
std::string compute_capability_string(int major, int minor);  // "8.7", as nvidia-smi and the profiles write it

// The most tokens each layer's cache can hold: per optimization profile, the longest past plus the
// longest input (present = past + new tokens), the largest over profiles. `profiles` holds each
// profile's max shape per tensor; a static engine (no profiles) gets `fallback` for every layer.
using ProfileMax = std::map<std::string, std::vector<int64_t>>;
std::vector<int64_t> kv_capacity(const std::vector<ProfileMax>& profiles, int layers, int64_t fallback);
std::vector<ProfileMax> profile_maxima(const EngineGraph& graph);  // the max shapes of the manifest's record
int64_t kv_length_limit(const nlohmann::json& manifest);            // limits.max_kv_length, else max_sequence

}  // namespace edgecompress
