// Unit tests of image decoding and preprocessing (run by ctest from runtimes/cpp/tests). The
// expected pixels were computed with PIL 13 (Image.resize, ImageOps.exif_transpose).
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "check.hpp"
#include "edgecompress/error.hpp"
#include "edgecompress/image.hpp"
#include "exif.hpp"
#include "image_decode.hpp"

namespace ec = edgecompress;

static std::string error_of(const std::string& path) {
  try {
    ec::load_image(path);
  } catch (const ec::Error& error) {
    return error.what();
  }
  return "";
}

// 5x4 RGB with every channel value distinct enough to catch a misplaced tap.
static ec::ImageRGB pattern() {
  ec::ImageRGB image{5, 4, {}};
  for (int y = 0; y < 4; ++y)
    for (int x = 0; x < 5; ++x)
      for (int c = 0; c < 3; ++c) image.pixels.push_back(uint8_t((x * 37 + y * 91 + c * 53) % 256));
  return image;
}

static void test_resize_equals_pil() {
  const ec::ImageRGB image = pattern();
  const ec::ImageRGB bicubic = ec::resize(image, 3, 2, "bicubic");  // both passes, downscaling
  CHECK(bicubic.width == 3 && bicubic.height == 2);
  CHECK((bicubic.pixels == std::vector<uint8_t>{77, 116, 155, 113, 163, 119, 166, 151, 158, 119, 120, 105, 84, 108, 145,
                                                116, 155, 125}));
  const ec::ImageRGB bilinear = ec::resize(image, 7, 6, "bilinear");  // upscaling
  CHECK(bilinear.pixels.size() == 7 * 6 * 3);
  CHECK(bilinear.pixels[0] == 0 && bilinear.pixels[1] == 53 && bilinear.pixels[20] == 254);
  CHECK(bilinear.pixels[125] == 15);
  const ec::ImageRGB lanczos = ec::resize(image, 2, 4, "lanczos");  // horizontal pass only
  CHECK((lanczos.pixels == std::vector<uint8_t>{30, 83, 136, 118, 171, 224, 121, 189, 167, 209, 172, 54, 152, 99, 62, 39,
                                                82, 150, 47, 100, 168, 135, 188, 151}));
  CHECK(ec::resize(image, 5, 4, "bicubic").pixels == image.pixels);  // same size: a copy
}

static void test_resize_refuses_unknown_filter() {
  bool threw = false;
  try {
    ec::resize(pattern(), 2, 2, "sinc");
  } catch (const ec::Error& error) {
    threw = std::string(error.what()) == "unknown resample filter 'sinc'";
  }
  CHECK(threw);
}

static void test_load_errors() {
  CHECK(error_of("data/missing.png") == "image data/missing.png does not exist");
  CHECK(error_of("data") == "image data is not a file");
  CHECK(error_of("data/small_10x20.png") ==
        "image data/small_10x20.png is 10x20 pixels; the smallest this runtime reads is 14 px on each side (one vision patch)");
  CHECK(error_of("test_image.cpp") == "test_image.cpp is not an image this runtime can read");
}

static void test_jpeg_without_exif() {
  for (ec::JpegDecoder decoder : {ec::JpegDecoder::libjpeg, ec::JpegDecoder::stb}) {
    const ec::ImageRGB image = ec::load_image("data/plain_20x16.jpg", decoder);
    CHECK(image.width == 20 && image.height == 16);  // no orientation: as stored
    CHECK(image.pixels.size() == 20 * 16 * 3);
  }
}

static void test_exif_orientation() {
  const ec::ImageRGB image = ec::load_image("data/rotated_20x16.png");  // orientation 6: a quarter turn clockwise
  CHECK(image.width == 16 && image.height == 20);
  CHECK(image.pixels[0] == 0 && image.pixels[3] == 0);            // the first row was the first column
  CHECK(image.pixels[16 * 3] == 12 && image.pixels[32 * 3] == 24);  // going down the first column
  // Both byte orders of a one-entry IFD0 holding the orientation (SHORT 8).
  const uint8_t motorola[] = {'M', 'M', 0, 42, 0, 0, 0, 8, 0, 1, 0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, 8, 0, 0};
  const uint8_t intel[] = {'I', 'I', 42, 0, 8, 0, 0, 0, 1, 0, 0x12, 0x01, 3, 0, 1, 0, 0, 0, 8, 0, 0, 0};
  CHECK(ec::exif_orientation(motorola, sizeof motorola) == 8);
  CHECK(ec::exif_orientation(intel, sizeof intel) == 8);
  CHECK(ec::exif_orientation(intel, 9) == 1);  // truncated: upright
}

static void test_alpha_onto_white() {
  // PIL's alpha_composite over opaque white, then RGB.
  CHECK(ec::over_white(0, 0) == 255);
  CHECK(ec::over_white(200, 255) == 200);
  CHECK(ec::over_white(0, 128) == 127);
  CHECK(ec::over_white(100, 77) == 208);
}

static void test_select_best_resolution() {
  const std::vector<std::array<int, 2>> pinpoints{{336, 672}, {672, 336}, {672, 672}, {1008, 336}, {336, 1008}};
  CHECK((ec::select_best_resolution({480, 640}, pinpoints) == std::array<int, 2>{672, 672}));
  CHECK((ec::select_best_resolution({300, 900}, pinpoints) == std::array<int, 2>{336, 1008}));
  CHECK((ec::select_best_resolution({1000, 400}, pinpoints) == std::array<int, 2>{1008, 336}));
  CHECK((ec::select_best_resolution({100, 100}, pinpoints) == std::array<int, 2>{336, 672}));  // a tie: the first
}

static void test_anyres_layout() {
  ec::PreprocessParams params;
  params.image_mean = {0.5, 0.5, 0.5};
  params.image_std = {0.5, 0.5, 0.5};
  ec::AnyresParams anyres{{{28, 56}, {56, 28}, {56, 56}}, {{1, 2}, {2, 1}, {2, 2}}, 28, 2, 4};
  ec::ImageRGB wide{40, 20, std::vector<uint8_t>(40 * 20 * 3, 255)};
  const ec::AnyresInputs inputs = ec::preprocess_anyres(wide, params, anyres);
  CHECK(inputs.grid_index == 0);
  CHECK(inputs.pixel_values.size() == 5 * 3 * 28 * 28);
  CHECK(inputs.pixel_values[0] == 1.0f && inputs.pixel_values.back() == 0.0f);  // white base, empty last slot
  CHECK((inputs.tile_mask == std::vector<float>{1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0}));
  CHECK((inputs.packed_order == std::vector<int64_t>{0, 1, 2, 3, 4, 5, 8, 9, -1, 6, 7, 10, 11, -1}));
}

// Qwen2.5-VL patch rows: a 56-px square (2 x 2 merge blocks of 2 x 2 patches of 14 px), mean 0,
// std 1 and rescale 1, so a value is the pixel's own; rows in merge-block order, each row
// [channel, time, y, x] with the frame repeated in time.
static void test_patch_rows_layout() {
  ec::ImageRGB image{56, 56, std::vector<uint8_t>(56 * 56 * 3)};
  for (int y = 0; y < 56; ++y)
    for (int x = 0; x < 56; ++x)
      for (int c = 0; c < 3; ++c) image.pixels[(y * 56 + x) * 3 + c] = uint8_t((x + 3 * y + 85 * c) % 256);
  ec::PreprocessParams params;
  params.image_size = 56, params.patch_size = 14, params.merge_size = 2, params.temporal_patch_size = 2;
  params.rescale_factor = 1.0, params.image_mean = {0, 0, 0}, params.image_std = {1, 1, 1};
  std::vector<float> rows = ec::patch_rows(image, params);
  CHECK(ec::patch_count(params) == 16 && ec::patch_row_size(params) == 1176);
  CHECK(rows.size() == 16 * 1176);
  auto value = [&](int row, int c, int t, int y, int x) { return rows[size_t(row) * 1176 + ((c * 2 + t) * 14 + y) * 14 + x]; };
  auto pixel = [&](int y, int x, int c) { return float(image.pixels[(y * 56 + x) * 3 + c]); };
  // row 0: block (0, 0), patch (0, 0); row 3: block (0, 0), patch (1, 1); row 6: block (0, 1), patch (1, 0)
  CHECK(value(0, 0, 0, 0, 0) == pixel(0, 0, 0));
  CHECK(value(3, 1, 1, 5, 7) == pixel(14 + 5, 14 + 7, 1));
  CHECK(value(6, 2, 0, 13, 2) == pixel(14 + 13, 28 + 2, 2));
  // row 9: block (1, 0), patch (0, 1); row 15: block (1, 1), patch (1, 1)
  CHECK(value(9, 0, 1, 3, 4) == pixel(28 + 3, 14 + 4, 0));
  CHECK(value(15, 2, 1, 13, 13) == pixel(55, 55, 2));
  bool repeated = true;
  for (int row = 0; row < 16; ++row)
    for (int c = 0; c < 3; ++c)
      for (int i = 0; i < 196; ++i) repeated = repeated && value(row, c, 0, i / 14, i % 14) == value(row, c, 1, i / 14, i % 14);
  CHECK(repeated);
  params.image_size = 50;
  CHECK_ERROR(ec::patch_rows(image, params), "image_size a multiple of patch_size x merge_size");
}

int main() {
  test_resize_equals_pil();
  test_resize_refuses_unknown_filter();
  test_load_errors();
  test_jpeg_without_exif();
  test_exif_orientation();
  test_alpha_onto_white();
  test_select_best_resolution();
  test_anyres_layout();
  test_patch_rows_layout();
  if (failures()) std::fprintf(stderr, "%d check(s) failed\n", failures());
  return failures() ? 1 : 0;
}
