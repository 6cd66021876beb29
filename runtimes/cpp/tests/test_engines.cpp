// The TensorRT engine checks that run before any engine is deserialised (src/engines.hpp), in
// every build, with no GPU and no TensorRT: profile selection, version and GPU compatibility,
// the engine files' sha256, and the KV cache capacity read from the optimization profiles.
#include <filesystem>
#include <fstream>
#include <unistd.h>

#include "check.hpp"
#include "edgecompress/error.hpp"
#include "engines.hpp"
#include "sha256.hpp"

namespace fs = std::filesystem;
using nlohmann::json;
using namespace edgecompress;

// An `engines.<profile>` record as `edgecompress build` writes it (decoder with prefill and decode
// profiles, two layers, the second pruned shorter).
static json record(const std::string& version, const std::string& capability) {
  json decoder_profiles = json::array({
      {{"inputs_embeds", {{1, 1, 8}, {1, 40, 8}, {1, 96, 8}}},
       {"past.0.key", {{1, 2, 0, 4}, {1, 2, 0, 4}, {1, 2, 0, 4}}},
       {"past.1.key", {{1, 2, 0, 4}, {1, 2, 0, 4}, {1, 2, 0, 4}}}},
      {{"inputs_embeds", {{1, 1, 8}, {1, 1, 8}, {1, 1, 8}}},
       {"past.0.key", {{1, 2, 1, 4}, {1, 2, 40, 4}, {1, 2, 127, 4}}},
       {"past.1.key", {{1, 2, 1, 4}, {1, 2, 30, 4}, {1, 2, 100, 4}}}},
  });
  return {{"backend", "tensorrt"},
          {"builder_version", version},
          {"compute_capability", capability},
          {"precision", "fp16"},
          {"graphs",
           {{"vision", {{"file", "engines/orin/vision.engine"}, {"sha256", "00"}, {"optimization_profiles", json::array()}}},
            {"decoder", {{"file", "engines/orin/decoder.engine"}, {"sha256", "00"}, {"optimization_profiles", decoder_profiles}}}}}};
}

static void selection() {
  CHECK_ERROR(select_engines(json{{"schema_version", 1}}, ""), "this bundle has no TensorRT engines");
  CHECK_ERROR(select_engines(json{{"engines", json::object()}}, "orin"), "this bundle has no TensorRT engines");

  json one{{"engines", {{"orin", record("10.3.0", "8.7")}}}};
  EngineRecord only = select_engines(one, "");
  CHECK(only.profile == "orin");
  CHECK(only.builder_version == "10.3.0" && only.compute_capability == "8.7" && only.graphs.size() == 2);
  CHECK(only.graphs.at("decoder").optimization_profiles.size() == 2);
  CHECK_ERROR(select_engines(one, "rtx4090"), "this bundle has no engines for profile 'rtx4090' (it has: orin)");

  json two{{"engines", {{"orin", record("10.3.0", "8.7")}, {"rtx4090", record("10.3.0", "8.9")}}}};
  CHECK_ERROR(select_engines(two, ""), "this bundle has engines for several profiles (orin, rtx4090)");
  try {
    select_engines(two, "");
  } catch (const Error& err) {
    CHECK(err.hint() == "Pass --profile.");
  }
  CHECK(select_engines(two, "rtx4090").compute_capability == "8.9");

  json broken = one;
  broken["engines"]["orin"].erase("builder_version");
  CHECK_ERROR(select_engines(broken, ""), "manifest field engines.orin.builder_version is missing or malformed");
}

static void compatibility() {
  EngineRecord built = select_engines(json{{"engines", {{"orin", record("10.3.0", "8.7")}}}}, "");
  check_compatible(built, "10.3.0", std::string("8.7"));  // a matching record: no error
  CHECK_ERROR(check_compatible(built, "10.7.0", std::string("8.7")),
              "the engines were built with tensorrt 10.3.0, and this is 10.7.0");
  CHECK_ERROR(check_compatible(built, "10.3.0", std::string("8.9")),
              "the engines were built for compute capability 8.7, and this GPU is 8.9");
  CHECK_ERROR(check_compatible(built, "10.3.0", std::nullopt), "no CUDA GPU is available to run TensorRT engines");
  // the version is checked first: with no GPU, another TensorRT still says so
  CHECK_ERROR(check_compatible(built, "10.7.0", std::nullopt), "the engines were built with tensorrt 10.3.0");
  // a build number recorded by the Python package, which the C++ library's version lacks
  built.builder_version = "10.3.0.26";
  check_compatible(built, "10.3.0", std::string("8.7"));
  CHECK_ERROR(check_compatible(built, "10.3", std::string("8.7")), "and this is 10.3");

  built.backend = "tensorrt-rtx";
  CHECK_ERROR(check_engine_backend(built, "tensorrt"), "the engines need tensorrt-rtx, which is not installed");

  CHECK(trt_version_string(100300) == "10.3.0");
  CHECK(trt_version_string(101303) == "10.13.3");
  CHECK(compute_capability_string(8, 7) == "8.7");
  CHECK(compute_capability_string(12, 0) == "12.0");
}

static void engine_files() {
  fs::path bundle = fs::temp_directory_path() / ("edgecompress_engines_" + std::to_string(getpid()));
  fs::create_directories(bundle / "engines/orin");
  json manifest{{"engines", {{"orin", record("10.3.0", "8.7")}}}};
  std::ofstream(bundle / "engines/orin/vision.engine") << "an engine";
  manifest["engines"]["orin"]["graphs"]["vision"]["sha256"] = sha256_file((bundle / "engines/orin/vision.engine").string());
  EngineRecord built = select_engines(manifest, "orin");

  CHECK(checked_engine_file(bundle.string(), built, "vision") == fs::canonical(bundle / "engines/orin/vision.engine").string());
  CHECK_ERROR(checked_engine_file(bundle.string(), built, "decoder"),
              "engines/orin/decoder.engine is missing (the bundle was copied without its engines?)");
  std::ofstream(bundle / "engines/orin/decoder.engine") << "another engine";
  CHECK_ERROR(checked_engine_file(bundle.string(), built, "decoder"), "engines/orin/decoder.engine does not match its sha256");
  fs::remove_all(bundle);
}

static void capacity() {
  EngineRecord built = select_engines(json{{"engines", {{"orin", record("10.3.0", "8.7")}}}}, "");
  // prefill: 0 past + 96 tokens; decode: 127 (layer 0) or 100 (pruned layer 1) past + 1 token
  auto capacity = kv_capacity(profile_maxima(built.graphs.at("decoder")), 2, 0);
  CHECK(capacity.size() == 2 && capacity[0] == 128 && capacity[1] == 101);
  // a static engine (no profiles) holds what the manifest's limits allow
  CHECK(kv_capacity({}, 3, 64) == std::vector<int64_t>(3, 64));
  CHECK(kv_length_limit(json{{"limits", {{"max_sequence", 512}, {"max_kv_length", 300}}}}) == 300);
  CHECK(kv_length_limit(json{{"limits", {{"max_sequence", 512}}}}) == 512);
  CHECK(kv_length_limit(json::object()) == 0);
}

int main() {
  selection();
  compatibility();
  engine_files();
  capacity();
  return failures();
}
