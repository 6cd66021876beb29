// The CLIP image processor's steps, as the Python runtime's preprocess (its exact path).
#include <algorithm>
#include <cstring>

#include "edgecompress/error.hpp"
#include "edgecompress/image.hpp"
#include "image_steps.hpp"

namespace edgecompress {

ImageRGB resize_shortest_edge(const ImageRGB& image, int size, const std::string& filter) {
  const bool portrait = image.width <= image.height;
  const int64_t short_side = portrait ? image.width : image.height, long_side = portrait ? image.height : image.width;
  // int(size * long / short) in Python: a float64 quotient, truncated.
  const int new_long = int(double(int64_t(size) * long_side) / double(short_side));
  return portrait ? resize(image, size, new_long, filter) : resize(image, new_long, size, filter);
}

ImageRGB center_crop(const ImageRGB& image, int size) {
  // Zero padding (centred, odd pixel after) where the image is smaller than the crop.
  const int height = std::max(image.height, size), width = std::max(image.width, size);
  const int pad_top = (height - image.height + 1) / 2, pad_left = (width - image.width + 1) / 2;
  const int top = (height - size) / 2 - pad_top, left = (width - size) / 2 - pad_left;  // in image coordinates
  ImageRGB out{size, size, std::vector<uint8_t>(size_t(size) * size * 3, 0)};
  for (int y = 0; y < size; ++y) {
    const int sy = top + y;
    if (sy < 0 || sy >= image.height) continue;
    const int x0 = std::max(0, -left), x1 = std::min(size, image.width - left);
    if (x1 > x0)
      std::memcpy(&out.pixels[(size_t(y) * size + x0) * 3], &image.pixels[(size_t(sy) * image.width + left + x0) * 3],
                  size_t(x1 - x0) * 3);
  }
  return out;
}

NormalizeTable normalize_table(const PreprocessParams& params) {
  NormalizeTable table;
  for (int c = 0; c < 3; ++c) {
    const float mean = float(params.image_mean[c]), std = float(params.image_std[c]);
    for (int v = 0; v < 256; ++v) {
      const float scaled = float(double(v) * params.rescale_factor);  // rescaled in float64, as transformers
      table[c][v] = (scaled - mean) / std;
    }
  }
  return table;
}

void normalize_into(const ImageRGB& image, const NormalizeTable& table, float* out) {
  const size_t plane = size_t(image.width) * image.height;
  for (int c = 0; c < 3; ++c)
    for (size_t i = 0; i < plane; ++i) out[c * plane + i] = table[c][image.pixels[i * 3 + c]];
}

std::vector<float> normalize(const ImageRGB& image, const PreprocessParams& params) {
  std::vector<float> out(size_t(image.width) * image.height * 3);
  normalize_into(image, normalize_table(params), out.data());
  return out;
}

ImageRGB crop_pixels(const ImageRGB& image, const PreprocessParams& params) {
  if (params.resize_shortest_edge <= 0 || params.crop_size <= 0)
    throw Error("preprocess sizes must be positive (resize_shortest_edge " + std::to_string(params.resize_shortest_edge) +
                ", crop_size " + std::to_string(params.crop_size) + ")");
  return center_crop(resize_shortest_edge(image, params.resize_shortest_edge, params.resample), params.crop_size);
}

std::vector<float> preprocess(const ImageRGB& image, const PreprocessParams& params) {
  return normalize(crop_pixels(image, params), params);
}

}  // namespace edgecompress
