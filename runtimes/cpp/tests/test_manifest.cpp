// The bundle contract's building blocks: sha256 (test vectors), float16 conversions,
// .npy reading, manifest field checks and path containment.
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <unistd.h>

#include "check.hpp"
#include "edgecompress/error.hpp"
#include "manifest.hpp"
#include "npy.hpp"
#include "positions.hpp"
#include "sha256.hpp"
#include "sha256_vectors.hpp"

namespace fs = std::filesystem;
using namespace edgecompress;
using nlohmann::json;

static void float16() {
  for (float value : {0.0f, -0.0f, 1.0f, -2.5f, 65504.0f, 6.103515625e-05f, 5.960464477539063e-08f, 0.333251953125f})
    CHECK(half_to_float(float_to_half(value)) == value);  // representable: exact round trip
  CHECK(float_to_half(1.0f + 1.0f / 2048) == 0x3c00);      // halfway: to even (down)
  CHECK(float_to_half(1.0f + 3.0f / 2048) == 0x3c02);      // halfway: to even (up)
  CHECK(float_to_half(65520.0f) == 0x7c00);                // past the largest half: infinity
  CHECK(float_to_half(2.9802322387695312e-08f) == 0);      // half the smallest subnormal: to even (zero)
  CHECK(std::isnan(half_to_float(float_to_half(NAN))));
  // every half value converts to float and back unchanged
  bool all = true;
  for (uint32_t h = 0; h < 0x10000; ++h) {
    if ((h & 0x7c00) == 0x7c00 && (h & 0x3ff)) continue;  // NaN payloads
    all = all && float_to_half(half_to_float(static_cast<uint16_t>(h))) == h;
  }
  CHECK(all);
}

static void write(const fs::path& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
}

static std::string npy(const std::string& descr, const std::string& shape, const std::string& data) {
  std::string header = "{'descr': '" + descr + "', 'fortran_order': False, 'shape': " + shape + ", }";
  header.append(64 - (10 + header.size() + 1) % 64, ' ') += "\n";
  std::string out = "\x93NUMPY\x01";
  out += '\0';
  out += char(header.size() & 0xff);
  out += char(header.size() >> 8);
  return out + header + data;
}

static void npy_arrays(const fs::path& dir) {
  float values[6] = {1, 2, 3, 4, 5, 6};
  write(dir / "table.npy", npy("<f4", "(3, 2)", std::string(reinterpret_cast<char*>(values), 24)));
  NpyArray table = NpyArray::open((dir / "table.npy").string());
  CHECK(table.rows() == 3 && table.row_size() == 2 && table.dtype() == "float32");
  float row[2];
  table.row(2, row);
  CHECK(row[0] == 5 && row[1] == 6);
  CHECK_ERROR(table.row(3, row), "outside the embedding table");
  uint16_t halves[2] = {float_to_half(0.5f), float_to_half(-3.0f)};
  write(dir / "vector.npy", npy("<f2", "(2,)", std::string(reinterpret_cast<char*>(halves), 4)));
  NpyArray vector = NpyArray::open((dir / "vector.npy").string());
  CHECK(vector.rows() == 1 && vector.row_size() == 2);
  vector.row(0, row);
  CHECK(row[0] == 0.5f && row[1] == -3.0f);
  write(dir / "short.npy", npy("<f4", "(3, 2)", std::string(8, '\0')));
  CHECK_ERROR(NpyArray::open((dir / "short.npy").string()), "fewer bytes than its shape");
  write(dir / "ints.npy", npy("<i8", "(1,)", std::string(8, '\0')));
  CHECK_ERROR(NpyArray::open((dir / "ints.npy").string()), "dtype i8");
  write(dir / "text.npy", "hello");
  CHECK_ERROR(NpyArray::open((dir / "text.npy").string()), "not a readable .npy array");
}

static void manifests(const fs::path& dir) {
  CHECK_ERROR(open_bundle((dir / "nothing").string()), "does not exist");
  fs::create_directories(dir / "bundle");
  CHECK_ERROR(open_bundle((dir / "bundle").string()), "is not an edgecompress bundle: it has no manifest.json");
  write(dir / "bundle" / "manifest.json", "{not json");
  CHECK_ERROR(open_bundle((dir / "bundle").string()), "is corrupt");
  write(dir / "bundle" / "manifest.json", R"({"schema_version": 2})");
  CHECK_ERROR(open_bundle((dir / "bundle").string()), "has manifest schema version 2; this edgecompress reads version 1");
  write(dir / "bundle" / "manifest.json", R"({"schema_version": 1, "graphs": {}, "files": {}, "method": 7})");
  CHECK_ERROR(open_bundle((dir / "bundle").string()), "manifest field method is missing or malformed (expected a string)");
  std::string graph = R"({"name": "vision", "file": "../outside.onnx", "files": [], "inputs": [], "outputs": []})";
  std::string manifest = R"({"schema_version": 1, "graphs": {"vision": )" + graph +
                         R"(}, "files": {}, "method": "hired", "precision": "fp32", "k": 1, "n": 4,
      "budget": {"spec": "25%"}, "image_token_id": 3, "prompt_template": "{prompt}", "architecture": {},
      "preprocess": {"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}})";
  write(dir / "bundle" / "manifest.json", manifest);
  CHECK_ERROR(open_bundle((dir / "bundle").string()), "../outside.onnx resolves to");
  CHECK_ERROR(inside((dir / "bundle").string(), "/etc/passwd"), "which is not a relative path");
  fs::remove(dir / "bundle" / "link");
  fs::create_symlink("/etc", dir / "bundle" / "link");
  CHECK_ERROR(inside((dir / "bundle").string(), "link/passwd"), "outside the bundle");
}

// The positions record (Qwen2.5-VL's mRoPE) and its errors, in manifest.py's words.
static void positions_records() {
  json base = json::parse(R"({"schema_version": 1, "graphs": {}, "files": {}, "method": "received", "precision": "fp32",
      "k": 51, "n": 256, "budget": {"spec": "20%"}, "image_token_id": 5, "prompt_template": "{prompt}", "architecture": {},
      "preprocess": {"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "image_size": 448, "patch_size": 14,
                     "temporal_patch_size": 2, "merge_size": 2},
      "positions": {"kind": "mrope", "grid": [16, 12]}})");
  Manifest m = Manifest::from_json(base, "m.json");
  CHECK(m.positions && m.positions->kind == "mrope" && m.positions->rows == 16 && m.positions->cols == 12);
  CHECK(m.preprocess.image_size == 448 && m.preprocess.patch_size == 14 && m.preprocess.merge_size == 2);
  json without = base;
  without.erase("positions");
  CHECK(!Manifest::from_json(without, "m.json").positions);
  auto with = [&](const json& positions) {
    json data = base;
    data["positions"] = positions;
    return Manifest::from_json(data, "m.json");
  };
  CHECK(!with(nullptr).positions);  // null: absent, as manifest.py reads it
  CHECK_ERROR(with("mrope"), "m.json: manifest field positions is missing or malformed (expected a table)");
  CHECK_ERROR(with(json{{"grid", {16, 16}}}), "manifest field positions.kind is missing or malformed (expected a string)");
  CHECK_ERROR(with(json{{"kind", "rope"}, {"grid", {16, 16}}}),
              "manifest field positions.kind is missing or malformed (expected \"mrope\" (the only position layout besides the default))");
  CHECK_ERROR(with(json{{"kind", "mrope"}}), "manifest field positions.grid is missing or malformed (expected a list)");
  for (const json& grid : {json{16}, json{16, 0}, json{16, true}, json{16, 1.5}, json{16, "16"}, json{16, 16, 16}})
    CHECK_ERROR(with(json{{"kind", "mrope"}, {"grid", grid}}),
                "manifest field positions.grid is missing or malformed (expected [rows, cols] of positive integers)");
  json no_size = base;
  no_size["preprocess"].erase("merge_size");
  CHECK_ERROR(Manifest::from_json(no_size, "m.json"), "manifest field preprocess.merge_size is missing or malformed");
  json odd_size = base;
  odd_size["preprocess"]["image_size"] = 450;
  CHECK_ERROR(Manifest::from_json(odd_size, "m.json"),
              "manifest field preprocess.image_size is missing or malformed (expected a multiple of patch_size x merge_size)");
}

// mRoPE positions as qwen.py's mrope_positions: text, then the kept image tokens at their grid
// place, then text from the image's first position + max(rows, cols).
static void mrope() {
  int64_t delta = -1;
  Positions p = mrope_positions(2, {0, 5, 17}, 4, 8, 3, delta);
  CHECK(p.rows == 3 && p.count == 8);
  CHECK((p.values == std::vector<int64_t>{0, 1, 2, 2, 2, 10, 11, 12,     // temporal
                                          0, 1, 2, 2, 4, 10, 11, 12,     // height: 2 + index / 8
                                          0, 1, 2, 7, 3, 10, 11, 12}));  // width: 2 + index % 8
  CHECK(delta == 5);  // the next token (cache index 8) sits at 13
  Positions step = Positions::sequence(13, 1, 3);
  CHECK((step.values == std::vector<int64_t>{13, 13, 13}));
  Positions plain = Positions::sequence(4, 3);
  CHECK(plain.rows == 1 && (plain.values == std::vector<int64_t>{4, 5, 6}));
}

int main() {
  fs::path dir = fs::temp_directory_path() / ("ec-test-manifest-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  check_sha256_vectors();  // through libcrypto where the build found it
  float16();
  npy_arrays(dir);
  manifests(dir);
  positions_records();
  mrope();
  fs::remove_all(dir);
  if (failures()) std::cerr << failures() << " check(s) failed\n";
  return failures() ? 1 : 0;
}
