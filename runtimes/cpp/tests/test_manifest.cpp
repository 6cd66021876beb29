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
#include "sha256.hpp"
#include "sha256_vectors.hpp"

namespace fs = std::filesystem;
using namespace edgecompress;

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

int main() {
  fs::path dir = fs::temp_directory_path() / ("ec-test-manifest-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  check_sha256_vectors();  // through libcrypto where the build found it
  float16();
  npy_arrays(dir);
  manifests(dir);
  fs::remove_all(dir);
  if (failures()) std::cerr << failures() << " check(s) failed\n";
  return failures() ? 1 : 0;
}
