// EXIF orientation: where a JPEG or PNG keeps it, and PIL's ImageOps.exif_transpose.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "edgecompress/image.hpp"

namespace edgecompress {

// The orientation tag (0x0112) of IFD0 in a TIFF-structured EXIF block (either byte order,
// "Exif\0\0" prefix allowed); 1 (upright) when absent or unreadable.
int exif_orientation(const uint8_t* exif, size_t size);

// The EXIF block of a JPEG (its APP1 "Exif" segments, joined as PIL joins them) or a PNG (its
// eXIf chunk); empty when the file has none.
std::vector<uint8_t> jpeg_exif(const uint8_t* data, size_t size);
std::vector<uint8_t> png_exif(const uint8_t* data, size_t size);

// The image turned upright for an EXIF orientation (2..8: PIL's eight transposes; others: as is).
ImageRGB apply_orientation(ImageRGB image, int orientation);

}  // namespace edgecompress
