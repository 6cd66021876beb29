// The preprocessing steps the public functions are made of, shared by image.cpp and anyres.cpp.
#pragma once

#include <array>
#include <string>

#include "edgecompress/image.hpp"

namespace edgecompress {

// Shortest side to `size`, the other truncated as int(size * long / short).
ImageRGB resize_shortest_edge(const ImageRGB& image, int size, const std::string& filter);

// size x size around the centre (floor offsets), zero-padded where the image is smaller.
ImageRGB center_crop(const ImageRGB& image, int size);

// The normalised float of every channel value: a pixel is a lookup.
using NormalizeTable = std::array<std::array<float, 256>, 3>;
NormalizeTable normalize_table(const PreprocessParams& params);

// CHW floats of `image` written at `out` (3 * width * height).
void normalize_into(const ImageRGB& image, const NormalizeTable& table, float* out);

}  // namespace edgecompress
