// Decoding internals shared with the tests and drivers.
#pragma once

#include <string>

#include "edgecompress/image.hpp"

namespace edgecompress {

enum class JpegDecoder {
  libjpeg,  // as PIL decodes (islow DCT, fancy upsampling); the default where built with libjpeg
  stb,      // stb_image: no extra library, a few levels off PIL on some pixels
};

// load_image with a chosen JPEG decoder (libjpeg falls back to stb where not built in).
ImageRGB load_image(const std::string& path, JpegDecoder jpeg);

// PIL's alpha_composite of one straight-alpha pixel over opaque white, one channel.
uint8_t over_white(uint8_t value, uint8_t alpha);

}  // namespace edgecompress
