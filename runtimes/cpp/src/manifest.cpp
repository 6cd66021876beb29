#include "manifest.hpp"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <utility>

#include "edgecompress/error.hpp"
#include "sha256.hpp"

namespace fs = std::filesystem;
using nlohmann::json;

namespace edgecompress {
namespace {

const char* kManifest = "manifest.json";
const char* kContainmentHint = "A bundle may only refer to its own files: re-export it, or copy it without links.";

Error malformed(const std::string& source, const std::string& key, const std::string& expected) {
  return Error(source + ": manifest field " + key + " is missing or malformed (expected " + expected + ")",
               "The bundle is damaged or was not written by edgecompress: re-export it.");
}

// Typed access to one table of the manifest, naming the field in every error (as manifest.py).
class Reader {
 public:
  Reader(const json& data, std::string where, std::string source)
      : data_(data), where_(std::move(where)), source_(std::move(source)) {
    if (!data_.is_object()) throw malformed(source_, where_, "a table");
  }
  std::string key(const std::string& name) const { return where_.empty() ? name : where_ + "." + name; }
  bool has(const std::string& name) const { return data_.contains(name) && !data_.at(name).is_null(); }
  const json& raw(const std::string& name) const { return data_.at(name); }

  std::string str(const std::string& name) const {
    if (!has(name) || !raw(name).is_string()) throw malformed(source_, key(name), "a string");
    return raw(name).get<std::string>();
  }
  int64_t integer(const std::string& name) const {
    if (!has(name) || !raw(name).is_number_integer()) throw malformed(source_, key(name), "an integer");
    return raw(name).get<int64_t>();
  }
  const json& list(const std::string& name) const {
    if (!has(name) || !raw(name).is_array()) throw malformed(source_, key(name), "a list");
    return raw(name);
  }
  Reader table(const std::string& name) const {
    if (!has(name)) throw malformed(source_, key(name), "a table");
    return Reader(raw(name), key(name), source_);
  }
  std::optional<Reader> optional_table(const std::string& name) const {
    if (!has(name)) return std::nullopt;
    return table(name);
  }
  const json& data() const { return data_; }
  const std::string& source() const { return source_; }

 private:
  const json& data_;
  std::string where_, source_;
};

std::vector<TensorSpec> tensors(const Reader& reader, const std::string& name) {
  std::vector<TensorSpec> out;
  const json& list = reader.list(name);
  for (size_t i = 0; i < list.size(); ++i) {
    Reader entry(list[i], reader.key(name) + "[" + std::to_string(i) + "]", reader.source());
    TensorSpec spec{entry.str("name"), {}, entry.str("dtype")};
    for (const json& dim : entry.list("shape")) {
      if (dim.is_number_integer()) spec.shape.push_back(dim.get<int64_t>());
      else if (dim.is_string()) spec.shape.push_back(-1);
      else throw malformed(reader.source(), entry.key("shape"), "a list of sizes and axis names");
    }
    out.push_back(std::move(spec));
  }
  return out;
}

GraphSpec graph(const Reader& reader) {
  GraphSpec spec;
  spec.name = reader.str("name");
  spec.file = reader.str("file");
  spec.inputs = tensors(reader, "inputs");
  spec.outputs = tensors(reader, "outputs");
  for (const json& file : reader.list("files")) {
    if (!file.is_string()) throw malformed(reader.source(), reader.key("files"), "a list of file names");
    spec.files.push_back(file.get<std::string>());
  }
  if (auto cache = reader.optional_table("kv_cache")) {
    spec.kv_cache = cache->str("kind");
    spec.kv_cache_max_length = cache->integer("max_length");
  }
  return spec;
}

std::array<double, 3> triple(const Reader& reader, const std::string& name) {
  const json& list = reader.list(name);
  if (list.size() != 3 || !std::all_of(list.begin(), list.end(), [](const json& v) { return v.is_number(); }))
    throw malformed(reader.source(), reader.key(name), "three numbers");
  return {list[0].get<double>(), list[1].get<double>(), list[2].get<double>()};
}

PreprocessParams preprocess_params(const Reader& reader) {
  PreprocessParams params;
  if (reader.has("resize_shortest_edge")) params.resize_shortest_edge = static_cast<int>(reader.integer("resize_shortest_edge"));
  if (reader.has("crop_size")) params.crop_size = static_cast<int>(reader.integer("crop_size"));
  if (reader.has("resample")) params.resample = reader.str("resample");
  if (reader.has("rescale_factor")) {
    if (!reader.raw("rescale_factor").is_number()) throw malformed(reader.source(), reader.key("rescale_factor"), "a number");
    params.rescale_factor = reader.raw("rescale_factor").get<double>();
  }
  if (reader.has("pixel_input")) params.pixel_input = reader.str("pixel_input");
  if (params.pixel_input != "float" && params.pixel_input != "uint8" && params.pixel_input != "frame")
    throw Error("the bundle takes pixel input '" + params.pixel_input + "', which this runtime does not know",
                "Update the C++ runtime to the version that exported the bundle.");
  if (params.pixel_input == "frame") {  // export --pixel-input frame:WxH: [width, height]
    const json& frame = reader.list("frame_size");
    if (frame.size() != 2 || !std::all_of(frame.begin(), frame.end(), [](const json& v) { return v.is_number_integer() && v.get<int64_t>() > 0; }))
      throw malformed(reader.source(), reader.key("frame_size"), "[width, height] of positive integers");
    params.frame_width = frame[0].get<int>();
    params.frame_height = frame[1].get<int>();
  }
  // Qwen2.5-VL's fixed square and patch layout: required where the manifest has mRoPE positions
  const std::pair<const char*, int*> layout[] = {{"image_size", &params.image_size}, {"patch_size", &params.patch_size},
                                                 {"temporal_patch_size", &params.temporal_patch_size},
                                                 {"merge_size", &params.merge_size}};
  for (auto [name, field] : layout) {
    if (reader.has(name)) {
      int64_t value = reader.integer(name);
      if (value <= 0 || value > 1 << 20) throw malformed(reader.source(), reader.key(name), "a positive integer");
      *field = static_cast<int>(value);
    }
  }
  params.image_mean = triple(reader, "image_mean");
  params.image_std = triple(reader, "image_std");
  return params;
}

std::vector<std::array<int, 2>> pairs(const Reader& reader, const std::string& name) {
  std::vector<std::array<int, 2>> out;
  for (const json& pair : reader.list(name)) {
    if (!pair.is_array() || pair.size() != 2 || !pair[0].is_number_integer() || !pair[1].is_number_integer())
      throw malformed(reader.source(), reader.key(name), "a list of [height, width] pairs");
    out.push_back({pair[0].get<int>(), pair[1].get<int>()});
  }
  return out;
}

AnyresParams anyres_params(const Reader& reader) {
  AnyresParams params;
  params.pinpoints = pairs(reader, "pinpoints");
  params.grids = pairs(reader, "grids");
  params.tile_size = static_cast<int>(reader.integer("tile_size"));
  params.side = static_cast<int>(reader.integer("side"));
  params.max_tiles = static_cast<int>(reader.integer("max_tiles"));
  return params;
}

// The manifest's positions record, checked as manifest.py's _positions checks it.
std::optional<PositionsSpec> positions_spec(const Reader& top) {
  auto positions = top.optional_table("positions");
  if (!positions) return std::nullopt;
  std::string kind = positions->str("kind");
  if (kind != "mrope")
    throw malformed(top.source(), "positions.kind", "\"mrope\" (the only position layout besides the default)");
  const json& grid = positions->list("grid");
  if (grid.size() != 2 || !std::all_of(grid.begin(), grid.end(), [](const json& v) { return v.is_number_integer() && v.get<int64_t>() > 0; }))
    throw malformed(top.source(), "positions.grid", "[rows, cols] of positive integers");
  return PositionsSpec{kind, grid[0].get<int64_t>(), grid[1].get<int64_t>()};
}

// A Qwen2.5-VL bundle (mRoPE positions) cuts its images by preprocess.image_size, patch_size,
// temporal_patch_size and merge_size: each present, the square a whole number of merge blocks.
void check_patch_layout(const Reader& top, const PreprocessParams& params) {
  Reader preprocess = top.table("preprocess");
  for (const char* name : {"image_size", "patch_size", "temporal_patch_size", "merge_size"})
    if (!preprocess.has(name)) throw malformed(top.source(), preprocess.key(name), "an integer (the manifest has mRoPE positions)");
  if (params.image_size % (params.patch_size * params.merge_size) != 0)
    throw malformed(top.source(), preprocess.key("image_size"), "a multiple of patch_size x merge_size");
}

std::string python_repr(const json& value) {  // how the Python runtime's message shows a version
  if (value.is_null()) return "None";
  if (value.is_string()) return "'" + value.get<std::string>() + "'";
  if (value.is_boolean()) return value.get<bool>() ? "True" : "False";
  return value.dump();
}

// Why `relative` is not a file of the bundle, or "" when it resolves inside it.
std::string escape(const fs::path& root, const std::string& relative) {
  if (relative.empty() || fs::path(relative).is_absolute() || relative.find('\0') != std::string::npos)
    return "the manifest names a file as '" + relative + "', which is not a relative path";
  fs::path path = fs::weakly_canonical(root / relative);
  auto [end, _] = std::mismatch(root.begin(), root.end(), path.begin(), path.end());
  if (end != root.end()) return relative + " resolves to " + path.string() + ", outside the bundle";
  return "";
}

bool within(const fs::path& root, const fs::path& path) {
  auto [end, _] = std::mismatch(root.begin(), root.end(), path.begin(), path.end());
  return end == root.end();
}

std::string join(const std::vector<std::string>& parts, const std::string& glue) {
  std::string out;
  for (size_t i = 0; i < parts.size(); ++i) out += (i ? glue : "") + parts[i];
  return out;
}

}  // namespace

const TensorSpec* GraphSpec::input(const std::string& wanted) const {
  for (const TensorSpec& t : inputs)
    if (t.name == wanted) return &t;
  return nullptr;
}

Manifest Manifest::from_json(const json& data, const std::string& source) {
  json version = data.is_object() && data.contains("schema_version") ? data.at("schema_version") : json();
  if (!(version.is_number_integer() && version.get<int64_t>() == kSchemaVersion))
    throw Error(source + " has manifest schema version " + python_repr(version) + "; this edgecompress reads version " +
                    std::to_string(kSchemaVersion),
                "Re-export the bundle with this version of edgecompress.");
  Reader top(data, "", source);
  Manifest m;
  m.data = data;
  Reader graphs = top.table("graphs");
  for (const auto& item : graphs.data().items()) m.graphs[item.key()] = graph(graphs.table(item.key()));
  if (auto runtime = top.optional_table("onnxruntime_graphs")) {
    for (const auto& item : runtime->data().items()) m.onnxruntime_graphs[item.key()] = graph(runtime->table(item.key()));
  }
  Reader files = top.table("files");
  for (const auto& item : files.data().items()) {
    Reader entry = files.table(item.key());
    m.files[item.key()] = FileEntry{entry.str("sha256"), static_cast<uint64_t>(entry.integer("bytes"))};
  }
  if (auto lm = top.optional_table("language_model")) {
    m.language_model = LanguageModelSpec{static_cast<int>(lm->integer("num_layers")), static_cast<int>(lm->integer("num_kv_heads")),
                                         static_cast<int>(lm->integer("head_dim")), static_cast<int>(lm->integer("hidden_size")),
                                         static_cast<int>(lm->integer("max_position_embeddings"))};
  }
  if (auto t = top.optional_table("tokenizer")) m.tokenizer_file = t->str("file");
  if (auto e = top.optional_table("embeddings")) m.embeddings_file = e->str("file");
  if (auto g = top.optional_table("generation")) {
    for (const json& id : g->list("eos_token_ids")) m.eos_token_ids.push_back(id.get<int64_t>());
  }
  if (auto limits = top.optional_table("limits")) m.max_sequence = static_cast<int>(limits->integer("max_sequence"));
  if (auto packing = top.optional_table("packing")) {
    if (packing->has("kind") && packing->raw("kind") == "anyres-newline") m.newline_file = packing->str("newline");
  }
  if (auto pruning = top.optional_table("decoder_pruning")) {
    m.decoder_pruning = DecoderPruningSpec{pruning->str("method"), static_cast<int>(pruning->integer("layer")),
                                           static_cast<int>(pruning->integer("image_start")),
                                           static_cast<int>(pruning->integer("image_tokens")),
                                           static_cast<int>(pruning->integer("kept_image_tokens"))};
    if (!m.graphs.count("prefill"))
      throw malformed(source, "graphs.prefill", "a prefill graph (the manifest has decoder_pruning)");
  }
  if (auto weights = top.optional_table("weights")) {
    if (weights->has("format")) m.weights_format = weights->str("format");
  }
  m.method = top.str("method");
  m.precision = top.str("precision");
  m.k = static_cast<int>(top.integer("k"));
  m.n = static_cast<int>(top.integer("n"));
  m.budget_spec = top.table("budget").str("spec");
  m.image_token_id = top.integer("image_token_id");
  m.prompt_template = top.str("prompt_template");
  m.preprocess = preprocess_params(top.table("preprocess"));
  top.table("architecture");
  if (auto anyres = top.optional_table("anyres")) m.anyres = anyres_params(*anyres);
  m.positions = positions_spec(top);
  if (m.positions) check_patch_layout(top, m.preprocess);
  return m;
}

std::vector<std::string> Manifest::paths() const {
  std::vector<std::string> out;
  for (const auto& [name, _] : files) out.push_back(name);
  for (const auto* table : {&graphs, &onnxruntime_graphs}) {
    for (const auto& [_, g] : *table) {
      out.push_back(g.file);
      out.insert(out.end(), g.files.begin(), g.files.end());
    }
  }
  for (const auto* p : {&tokenizer_file, &embeddings_file, &newline_file})
    if (*p) out.push_back(**p);
  if (data.contains("engines") && data["engines"].is_object()) {
    for (const auto& profile : data["engines"].items()) {
      const json& graphs_ = profile.value().value("graphs", json::object());
      for (const auto& entry : graphs_.items())
        if (entry.value().contains("file") && entry.value()["file"].is_string()) out.push_back(entry.value()["file"]);
    }
  }
  return out;
}

std::string inside(const std::string& bundle, const std::string& relative) {
  fs::path root = fs::canonical(bundle);
  std::string problem = escape(root, relative);
  if (!problem.empty()) throw Error("bundle " + bundle + ": " + problem, kContainmentHint);
  return fs::weakly_canonical(root / relative).string();
}

Manifest open_bundle(const std::string& bundle, bool check_hashes) {
  if (!fs::exists(bundle)) throw Error("bundle " + bundle + " does not exist");
  fs::path path = fs::path(bundle) / kManifest;
  if (!fs::is_regular_file(path))
    throw Error(bundle + " is not an edgecompress bundle: it has no " + kManifest, "Create one with `edgecompress export MODEL`.");
  json data;
  try {
    std::ifstream in(path);
    data = json::parse(in);
  } catch (const json::exception& err) {
    throw Error(path.string() + " is corrupt: " + err.what());
  }
  Manifest manifest = Manifest::from_json(data, path.string());

  fs::path root = fs::canonical(bundle);
  std::vector<std::string> escapes;
  for (const std::string& relative : manifest.paths()) {
    std::string problem = escape(root, relative);
    if (!problem.empty()) escapes.push_back(problem);
  }
  for (const auto& entry : fs::recursive_directory_iterator(root)) {
    if (entry.is_symlink() && !within(root, fs::weakly_canonical(entry.path())))
      escapes.push_back(fs::relative(entry.path(), root).generic_string() + " is a link to " +
                        fs::weakly_canonical(entry.path()).string() + ", outside the bundle");
  }
  if (!escapes.empty()) throw Error("bundle " + bundle + " refers to files outside itself: " + join(escapes, "; "), kContainmentHint);

  if (check_hashes) {
    std::vector<std::string> problems;
    for (const auto& [relative, entry] : manifest.files) {
      if (relative.rfind("reports/", 0) == 0 || relative.rfind("engines/", 0) == 0) continue;  // not the contract
      fs::path file = root / relative;
      if (!fs::is_regular_file(file)) problems.push_back(relative + " is missing");
      else if (fs::file_size(file) != entry.bytes || sha256_file(file.string()) != entry.sha256)
        problems.push_back(relative + " does not match its sha256 in the manifest (modified or corrupt)");
    }
    if (!problems.empty())
      throw Error("bundle " + bundle + " failed its integrity check: " + join(problems, "; "),
                  "Re-export the bundle, or copy it again completely.");
  }
  return manifest;
}

}  // namespace edgecompress
