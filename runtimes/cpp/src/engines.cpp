#include "engines.hpp"

#include <algorithm>
#include <filesystem>

#include "edgecompress/error.hpp"
#include "manifest.hpp"
#include "sha256.hpp"

using nlohmann::json;

namespace edgecompress {
namespace {

// The manifest's own words for a bad field (manifest.py's _Reader, as manifest.cpp has them).
Error malformed(const std::string& key, const std::string& expected) {
  return Error("manifest.json: manifest field " + key + " is missing or malformed (expected " + expected + ")",
               "The bundle is damaged or was not written by edgecompress: re-export it.");
}

const json& field(const json& table, const std::string& where, const std::string& name, json::value_t type,
                  const std::string& expected) {
  if (!table.is_object() || !table.contains(name) || table.at(name).type() != type) throw malformed(where + "." + name, expected);
  return table.at(name);
}

std::string text(const json& table, const std::string& where, const std::string& name) {
  return field(table, where, name, json::value_t::string, "a string").get<std::string>();
}

std::vector<int64_t> dims(const json& shape, const std::string& where) {
  std::vector<int64_t> out;
  if (!shape.is_array()) throw malformed(where, "a shape");
  for (const json& d : shape) {
    if (!d.is_number_integer()) throw malformed(where, "a shape");
    out.push_back(d.get<int64_t>());
  }
  return out;
}

EngineGraph engine_graph(const json& entry, const std::string& where) {
  EngineGraph graph{text(entry, where, "file"), text(entry, where, "sha256"), {}};
  const json& profiles = field(entry, where, "optimization_profiles", json::value_t::array, "a list");
  for (const json& profile : profiles) {
    if (!profile.is_object()) throw malformed(where + ".optimization_profiles", "a list of tables");
    std::map<std::string, std::vector<std::vector<int64_t>>> shapes;
    for (const auto& [tensor, ranges] : profile.items()) {
      std::string key = where + ".optimization_profiles." + tensor;
      if (!ranges.is_array() || ranges.size() != 3) throw malformed(key, "[min, opt, max] shapes");
      for (const json& shape : ranges) shapes[tensor].push_back(dims(shape, key));
    }
    graph.optimization_profiles.push_back(std::move(shapes));
  }
  return graph;
}

EngineRecord engine_record(const json& record, const std::string& profile) {
  std::string where = "engines." + profile;
  if (!record.is_object()) throw malformed(where, "a table");
  EngineRecord out{profile,
                   text(record, where, "backend"),
                   text(record, where, "builder_version"),
                   text(record, where, "compute_capability"),
                   text(record, where, "precision"),
                   {}};
  const json& graphs = field(record, where, "graphs", json::value_t::object, "a table");
  for (const auto& [name, entry] : graphs.items()) {
    if (!entry.is_object()) throw malformed(where + ".graphs." + name, "a table");
    out.graphs[name] = engine_graph(entry, where + ".graphs." + name);
  }
  return out;
}

// Profile names as the Python message joins them. nlohmann::json keeps a table's keys sorted, so
// with several profiles the order may differ from the file's (and the Python runtime's).
std::string names(const json& engines) {
  std::string out;
  for (const auto& item : engines.items()) out += (out.empty() ? "" : ", ") + item.key();
  return out;
}

// getInferLibVersion() knows no build number: a recorded "10.3.0.26" is the library's "10.3.0".
std::string without_build_number(const std::string& version) {
  int dots = 0;
  for (size_t i = 0; i < version.size(); ++i)
    if (version[i] == '.' && ++dots == 3) return version.substr(0, i);
  return version;
}

}  // namespace

EngineRecord select_engines(const json& manifest, const std::string& profile) {
  const json none = json::object();
  const json& engines = manifest.is_object() && manifest.contains("engines") && !manifest.at("engines").is_null()
                            ? manifest.at("engines")
                            : none;
  if (!engines.is_object()) throw malformed("engines", "a table");
  if (engines.empty())
    throw Error("this bundle has no TensorRT engines", "Build them first: edgecompress build BUNDLE --profile PROFILE.");
  std::string chosen = profile;
  if (chosen.empty()) {
    if (engines.size() > 1) throw Error("this bundle has engines for several profiles (" + names(engines) + ")", "Pass --profile.");
    chosen = engines.begin().key();
  }
  if (!engines.contains(chosen))
    throw Error("this bundle has no engines for profile '" + chosen + "' (it has: " + names(engines) + ")",
                "Build them: edgecompress build BUNDLE --profile " + chosen + ".");
  return engine_record(engines.at(chosen), chosen);
}

void check_compatible(const EngineRecord& record, const std::string& trt_version, const std::optional<std::string>& device_cc) {
  const std::string& built = record.builder_version;
  if (without_build_number(built) != trt_version)
    throw Error("the engines were built with " + record.backend + " " + built + ", and this is " + trt_version,
                "TensorRT engines only load in the version that built them: rebuild with edgecompress build --force.");
  if (!device_cc) throw Error("no CUDA GPU is available to run TensorRT engines", "Use --backend onnxruntime on this machine.");
  if (*device_cc != record.compute_capability)
    throw Error("the engines were built for compute capability " + record.compute_capability + ", and this GPU is " + *device_cc,
                "Rebuild for this GPU's profile: edgecompress build BUNDLE --profile <profile of this GPU>.");
}

void check_engine_backend(const EngineRecord& record, const std::string& linked) {
  if (record.backend != linked)
    throw Error("the engines need " + record.backend + ", which is not installed",
                "This C++ runtime is built against " + linked + "; run these engines with the Python runtime "
                "(edgecompress run --backend tensorrt), or build engines with a " + linked + " profile.");
}

std::string checked_engine_file(const std::string& bundle, const EngineRecord& record, const std::string& graph) {
  const EngineGraph& entry = record.graphs.at(graph);
  std::string path = inside(bundle, entry.file);
  if (!std::filesystem::is_regular_file(path))
    throw Error(entry.file + " is missing (the bundle was copied without its engines?)",
                "Rebuild them: edgecompress build " + bundle + " --profile " + record.profile + " --force, or use --backend onnxruntime.");
  if (sha256_file(path) != entry.sha256)
    throw Error(entry.file + " does not match its sha256 in the manifest",
                "Rebuild it: edgecompress build " + bundle + " --profile " + record.profile + " --force.");
  return path;
}

std::string trt_version_string(int32_t lib_version) {
  return std::to_string(lib_version / 10000) + "." + std::to_string(lib_version / 100 % 100) + "." +
         std::to_string(lib_version % 100);
}

std::string compute_capability_string(int major, int minor) { return std::to_string(major) + "." + std::to_string(minor); }

std::vector<int64_t> kv_capacity(const std::vector<ProfileMax>& profiles, int layers, int64_t fallback) {
  std::vector<int64_t> capacity(layers, profiles.empty() ? fallback : 0);
  for (const ProfileMax& shapes : profiles) {
    auto embeds = shapes.find("inputs_embeds");
    int64_t tokens = embeds != shapes.end() && embeds->second.size() > 1 ? embeds->second[1] : 1;
    for (int i = 0; i < layers; ++i) {
      auto past = shapes.find("past." + std::to_string(i) + ".key");
      int64_t held = past != shapes.end() && past->second.size() > 2 ? past->second[2] : 0;
      capacity[i] = std::max(capacity[i], held + tokens);
    }
  }
  return capacity;
}

std::vector<ProfileMax> profile_maxima(const EngineGraph& graph) {
  std::vector<ProfileMax> out;
  for (const auto& profile : graph.optimization_profiles) {
    ProfileMax maxima;
    for (const auto& [tensor, ranges] : profile) maxima[tensor] = ranges.back();
    out.push_back(std::move(maxima));
  }
  return out;
}

int64_t kv_length_limit(const json& manifest) {
  const json none = json::object();
  const json& limits = manifest.contains("limits") && manifest.at("limits").is_object() ? manifest.at("limits") : none;
  for (const char* key : {"max_kv_length", "max_sequence"})
    if (limits.contains(key) && limits.at(key).is_number_integer()) return limits.at(key).get<int64_t>();
  return 0;
}

}  // namespace edgecompress
