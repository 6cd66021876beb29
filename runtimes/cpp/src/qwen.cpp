// Qwen2.5-VL: an image as the vision graph's patch rows (the Python runtime's qwen.py; its mRoPE
// positions are in positions.cpp). A bundle fixes one square grid: every image is resized to it
// (PIL's arithmetic, the bundle's filter, aspect ratio not kept), normalised, and cut into the
// rows the vision tower reads.
#include <algorithm>

#include "edgecompress/error.hpp"
#include "edgecompress/image.hpp"
#include "image_steps.hpp"

namespace edgecompress {
namespace {

void check_layout(const PreprocessParams& params) {
  const int size = params.image_size, patch = params.patch_size, merge = params.merge_size;
  if (size <= 0 || patch <= 0 || merge <= 0 || params.temporal_patch_size <= 0 || size % (patch * merge) != 0)
    throw Error("Qwen2.5-VL preprocess sizes must be positive, image_size a multiple of patch_size x merge_size (image_size " +
                std::to_string(size) + ", patch_size " + std::to_string(patch) + ", merge_size " + std::to_string(merge) +
                ", temporal_patch_size " + std::to_string(params.temporal_patch_size) + ")");
}

}  // namespace

int64_t patch_count(const PreprocessParams& params) {
  const int64_t side = params.patch_size > 0 ? params.image_size / params.patch_size : 0;
  return side * side;
}

int64_t patch_row_size(const PreprocessParams& params) {
  return int64_t(3) * params.temporal_patch_size * params.patch_size * params.patch_size;
}

std::vector<float> patch_rows(const ImageRGB& image, const PreprocessParams& params) {
  check_layout(params);
  const int size = params.image_size, patch = params.patch_size, merge = params.merge_size;
  const int temporal = params.temporal_patch_size, blocks = size / (patch * merge);
  const ImageRGB square = resize(image, size, size, params.resample);  // unchanged where already size x size
  const NormalizeTable table = normalize_table(params);
  std::vector<float> out(size_t(patch_count(params)) * patch_row_size(params));
  float* row = out.data();
  // rows: [block row, block col, row in block, col in block]; a row: [channel, time, y, x]
  for (int block_y = 0; block_y < blocks; ++block_y)
    for (int block_x = 0; block_x < blocks; ++block_x)
      for (int in_y = 0; in_y < merge; ++in_y)
        for (int in_x = 0; in_x < merge; ++in_x) {
          const int top = (block_y * merge + in_y) * patch, left = (block_x * merge + in_x) * patch;
          for (int c = 0; c < 3; ++c) {
            float* first = row;  // the patch's pixels of channel c, once
            for (int y = 0; y < patch; ++y) {
              const uint8_t* src = &square.pixels[(size_t(top + y) * size + left) * 3 + c];
              for (int x = 0; x < patch; ++x) *row++ = table[c][src[x * 3]];
            }
            for (int t = 1; t < temporal; ++t) row = std::copy(first, first + patch * patch, row);  // a still image repeats in time
          }
        }
  return out;
}

}  // namespace edgecompress
