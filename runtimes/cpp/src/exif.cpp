#include "exif.hpp"

#include <cstring>

namespace edgecompress {
namespace {

constexpr uint16_t kOrientationTag = 0x0112;

struct TiffReader {
  const uint8_t* data;
  size_t size;
  bool little_endian;

  bool has(size_t offset, size_t n) const { return offset <= size && n <= size - offset; }
  uint32_t u16(size_t at) const {
    return little_endian ? data[at] | data[at + 1] << 8 : data[at] << 8 | data[at + 1];
  }
  uint32_t u32(size_t at) const {
    return little_endian ? u16(at) | u16(at + 2) << 16 : u16(at) << 16 | u16(at + 2);
  }
};

uint32_t big_endian32(const uint8_t* p) { return uint32_t(p[0]) << 24 | p[1] << 16 | p[2] << 8 | p[3]; }

}  // namespace

int exif_orientation(const uint8_t* exif, size_t size) {
  if (size >= 6 && std::memcmp(exif, "Exif\0\0", 6) == 0) exif += 6, size -= 6;
  if (size < 8) return 1;
  TiffReader tiff{exif, size, exif[0] == 'I' && exif[1] == 'I'};
  if (!tiff.little_endian && !(exif[0] == 'M' && exif[1] == 'M')) return 1;
  const size_t ifd = tiff.u32(4);
  if (!tiff.has(ifd, 2)) return 1;
  const uint32_t entries = tiff.u16(ifd);
  for (uint32_t i = 0; i < entries; ++i) {
    const size_t entry = ifd + 2 + size_t(i) * 12;
    if (!tiff.has(entry, 12)) break;
    if (tiff.u16(entry) != kOrientationTag) continue;
    switch (tiff.u16(entry + 2)) {  // the value's type; one value fits in the entry
      case 1: return exif[entry + 8];      // BYTE
      case 3: return int(tiff.u16(entry + 8));  // SHORT, as cameras write it
      case 4: return int(tiff.u32(entry + 8));  // LONG
      default: return 1;
    }
  }
  return 1;
}

std::vector<uint8_t> jpeg_exif(const uint8_t* data, size_t size) {
  std::vector<uint8_t> exif;
  size_t at = 2;  // after SOI
  while (at + 4 <= size && data[at] == 0xFF) {
    const uint8_t marker = data[at + 1];
    if (marker == 0xFF) {  // fill byte
      ++at;
      continue;
    }
    if (marker == 0xDA || marker == 0xD9) break;  // image data (or its end): no more metadata
    if (marker == 0x01 || (marker >= 0xD0 && marker <= 0xD7)) {  // markers without a length
      at += 2;
      continue;
    }
    const size_t length = size_t(data[at + 2]) << 8 | data[at + 3];
    if (length < 2 || at + 2 + length > size) break;
    const uint8_t* payload = data + at + 4;
    const size_t payload_size = length - 2;
    if (marker == 0xE1 && payload_size >= 6 && std::memcmp(payload, "Exif\0\0", 6) == 0) {
      // PIL keeps the first segment whole and appends later ones without their prefix.
      exif.insert(exif.end(), payload + (exif.empty() ? 0 : 6), payload + payload_size);
    }
    at += 2 + length;
  }
  return exif;
}

std::vector<uint8_t> png_exif(const uint8_t* data, size_t size) {
  std::vector<uint8_t> exif;
  size_t at = 8;  // after the signature
  while (at + 12 <= size) {
    const size_t length = big_endian32(data + at);
    if (length > size - at - 12) break;
    const uint8_t* type = data + at + 4;
    if (std::memcmp(type, "eXIf", 4) == 0) exif.assign(data + at + 8, data + at + 8 + length);  // PIL keeps the last
    if (std::memcmp(type, "IEND", 4) == 0) break;
    at += 12 + length;
  }
  return exif;
}

ImageRGB apply_orientation(ImageRGB image, int orientation) {
  if (orientation < 2 || orientation > 8) return image;
  const int w = image.width, h = image.height;
  const bool swaps = orientation >= 5;  // transpose, the two quarter turns, transverse
  ImageRGB out{swaps ? h : w, swaps ? w : h, std::vector<uint8_t>(image.pixels.size())};
  for (int y = 0; y < out.height; ++y) {
    for (int x = 0; x < out.width; ++x) {
      int sx = x, sy = y;
      switch (orientation) {
        case 2: sx = w - 1 - x; break;                     // flip left-right
        case 3: sx = w - 1 - x, sy = h - 1 - y; break;     // rotate 180
        case 4: sy = h - 1 - y; break;                     // flip top-bottom
        case 5: sx = y, sy = x; break;                     // transpose
        case 6: sx = y, sy = h - 1 - x; break;             // rotate 90 clockwise
        case 7: sx = w - 1 - y, sy = h - 1 - x; break;     // transverse
        case 8: sx = w - 1 - y, sy = x; break;             // rotate 90 counter-clockwise
      }
      std::memcpy(&out.pixels[(size_t(y) * out.width + x) * 3], &image.pixels[(size_t(sy) * w + sx) * 3], 3);
    }
  }
  return out;
}

}  // namespace edgecompress
