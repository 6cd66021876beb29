// Image files to 8-bit RGB as the Python runtime (PIL) reads them: the same size checks, EXIF
// orientation, transparency composited onto white, 16-bit samples reduced as PIL reduces them.
// JPEG goes through libjpeg where built with it (PIL's decoder and settings: equal pixels),
// otherwise through stb_image; PNG through stb_image.
#include "image_decode.hpp"

#include <algorithm>
#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <vector>

#include "edgecompress/error.hpp"
#include "exif.hpp"

#define STB_IMAGE_IMPLEMENTATION
#define STB_IMAGE_STATIC
#define STBI_ONLY_JPEG
#define STBI_ONLY_PNG
#define STBI_NO_STDIO
#include <stb_image.h>

#ifdef EDGECOMPRESS_WITH_LIBJPEG
#include <jpeglib.h>
#endif

namespace edgecompress {
namespace {

constexpr int kMinSide = 14;                 // one CLIP patch, as the Python runtime's MIN_SIDE
constexpr int64_t kMaxPixels = 89'478'485;   // PIL's Image.MAX_IMAGE_PIXELS

using Bytes = std::vector<uint8_t>;

bool is_png(const Bytes& data) { return data.size() >= 8 && std::memcmp(data.data(), "\x89PNG\r\n\x1a\n", 8) == 0; }
bool is_jpeg(const Bytes& data) { return data.size() >= 3 && data[0] == 0xFF && data[1] == 0xD8 && data[2] == 0xFF; }

Bytes read_file(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) throw Error("cannot read image " + path + ": cannot open the file");
  return Bytes(std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>());
}

// The Python runtime's checks, in its order: PIL refuses a decompression bomb when it opens the
// file, then check_size refuses an image narrower than one vision patch.
void check_size(int width, int height, const std::string& path) {
  const int64_t pixels = int64_t(width) * height;
  if (pixels > kMaxPixels) {
    const int64_t limit = pixels > 2 * kMaxPixels ? 2 * kMaxPixels : kMaxPixels;  // PIL's error, then its warning
    throw Error("image " + path + " is too large to decode safely: Image size (" + std::to_string(pixels) +
                    " pixels) exceeds limit of " + std::to_string(limit) +
                    " pixels, could be decompression bomb DOS attack.",
                "Downscale it first.");
  }
  if (std::min(width, height) < kMinSide)
    throw Error("image " + path + " is " + std::to_string(width) + "x" + std::to_string(height) +
                " pixels; the smallest this runtime reads is " + std::to_string(kMinSide) +
                " px on each side (one vision patch)");
}

[[noreturn]] void unreadable(const std::string& path, const std::string& reason) {
  throw Error("cannot read image " + path + ": " + reason);
}

// stb_image's pixels, freed when done.
struct StbPixels {
  void* data = nullptr;
  ~StbPixels() { stbi_image_free(data); }
};

ImageRGB from_grey(int width, int height, const uint8_t* grey) {
  ImageRGB image{width, height, Bytes(size_t(width) * height * 3)};
  for (size_t i = 0; i < size_t(width) * height; ++i) std::memset(&image.pixels[i * 3], grey[i], 3);
  return image;
}

ImageRGB composited_on_white(int width, int height, const uint8_t* rgba) {
  ImageRGB image{width, height, Bytes(size_t(width) * height * 3)};
  for (size_t i = 0; i < size_t(width) * height; ++i)
    for (int c = 0; c < 3; ++c) image.pixels[i * 3 + c] = over_white(rgba[i * 4 + c], rgba[i * 4 + 3]);
  return image;
}

// PNG colour types (the IHDR byte): PIL treats them differently enough to matter.
constexpr int kPngGrey = 0, kPngRgb = 2;

ImageRGB decode_png(const Bytes& data, const std::string& path) {
  const int depth = data.size() > 25 ? data[24] : 0, colour = data.size() > 25 ? data[25] : 0;
  const int size = int(std::min<size_t>(data.size(), INT32_MAX));
  int width = 0, height = 0, channels = 0;
  StbPixels decoded;
  if (colour == kPngRgb) {
    // PIL opens RGB as RGB and takes it as is: a tRNS colour key is not applied (to_rgb).
    decoded.data = stbi_load_from_memory(data.data(), size, &width, &height, &channels, 3);
    if (!decoded.data) unreadable(path, stbi_failure_reason());
    const auto* rgb = static_cast<const uint8_t*>(decoded.data);
    return ImageRGB{width, height, Bytes(rgb, rgb + size_t(width) * height * 3)};
  }
  if (colour == kPngGrey && depth == 16) {
    // PIL opens 16-bit grey as I;16, and its conversion to RGB clips each sample to 255.
    decoded.data = stbi_load_16_from_memory(data.data(), size, &width, &height, &channels, 1);
    if (!decoded.data) unreadable(path, stbi_failure_reason());
    const auto* wide = static_cast<const uint16_t*>(decoded.data);
    Bytes grey(size_t(width) * height);
    for (size_t i = 0; i < grey.size(); ++i) grey[i] = uint8_t(std::min<uint16_t>(wide[i], 255));
    return from_grey(width, height, grey.data());
  }
  // Grey, palette and alpha types: RGBA (tRNS as alpha, 16-bit samples by their high byte, as
  // PIL's ;16B raw modes), then onto white. Opaque pixels come through unchanged.
  decoded.data = stbi_load_from_memory(data.data(), size, &width, &height, &channels, 4);
  if (!decoded.data) unreadable(path, stbi_failure_reason());
  return composited_on_white(width, height, static_cast<const uint8_t*>(decoded.data));
}

ImageRGB decode_jpeg_stb(const Bytes& data, const std::string& path) {
  int width = 0, height = 0, channels = 0;
  StbPixels decoded;
  decoded.data = stbi_load_from_memory(data.data(), int(std::min<size_t>(data.size(), INT32_MAX)), &width, &height,
                                       &channels, 3);
  if (!decoded.data) unreadable(path, stbi_failure_reason());
  const auto* rgb = static_cast<const uint8_t*>(decoded.data);
  return ImageRGB{width, height, Bytes(rgb, rgb + size_t(width) * height * 3)};
}

#ifdef EDGECOMPRESS_WITH_LIBJPEG

// libjpeg reports errors by longjmp back to the reading function; only plain data lives in the
// frames it jumps over.
struct JpegError {
  jpeg_error_mgr manager;
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
};

void jpeg_fail(j_common_ptr info) {
  auto* error = reinterpret_cast<JpegError*>(info->err);
  info->err->format_message(info, error->message);
  std::longjmp(error->jump, 1);
}

void jpeg_quiet(j_common_ptr) {}  // warnings (e.g. extraneous bytes) do not stop PIL either

class JpegReader {
 public:
  JpegReader(const Bytes& data) {
    info_.err = jpeg_std_error(&error_.manager);
    error_.manager.error_exit = jpeg_fail;
    error_.manager.output_message = jpeg_quiet;
    jpeg_create_decompress(&info_);
    jpeg_mem_src(&info_, data.data(), static_cast<unsigned long>(data.size()));
  }
  ~JpegReader() { jpeg_destroy_decompress(&info_); }
  JpegReader(const JpegReader&) = delete;
  JpegReader& operator=(const JpegReader&) = delete;

  // false with message() set on a malformed file.
  bool read_header() {
    if (setjmp(error_.jump)) return false;
    jpeg_read_header(&info_, TRUE);
    return true;
  }
  int width() const { return int(info_.image_width); }
  int height() const { return int(info_.image_height); }
  int components() const { return info_.num_components; }

  // PIL's settings: islow DCT and fancy upsampling (libjpeg's defaults); grey stays grey, three
  // components become RGB, four stay CMYK (PIL converts CMYK itself).
  bool read_pixels(Bytes& out) {
    if (setjmp(error_.jump)) return false;
    info_.dct_method = JDCT_ISLOW;
    info_.do_fancy_upsampling = TRUE;
    info_.out_color_space = components() == 1 ? JCS_GRAYSCALE : components() == 4 ? JCS_CMYK : JCS_RGB;
    jpeg_start_decompress(&info_);
    const size_t row = size_t(info_.output_width) * info_.output_components;
    out.resize(row * info_.output_height);
    while (info_.output_scanline < info_.output_height) {
      JSAMPROW line = &out[row * info_.output_scanline];
      jpeg_read_scanlines(&info_, &line, 1);
    }
    jpeg_finish_decompress(&info_);
    return true;
  }
  const char* message() const { return error_.message; }

 private:
  jpeg_decompress_struct info_{};
  JpegError error_{};
};

// PIL reads Adobe CMYK inverted ("CMYK;I") and converts to RGB as (255 - k) - c * (255 - k) / 255.
ImageRGB from_inverted_cmyk(int width, int height, const uint8_t* cmyk) {
  ImageRGB image{width, height, Bytes(size_t(width) * height * 3)};
  for (size_t i = 0; i < size_t(width) * height; ++i) {
    const int not_k = cmyk[i * 4 + 3];  // 255 - (255 - raw k)
    for (int c = 0; c < 3; ++c) {
      const int ink = 255 - cmyk[i * 4 + c];
      const int product = ink * not_k + 128;
      const int value = not_k - (((product >> 8) + product) >> 8);
      image.pixels[i * 3 + c] = uint8_t(std::clamp(value, 0, 255));
    }
  }
  return image;
}

ImageRGB decode_jpeg_libjpeg(const Bytes& data, const std::string& path) {
  JpegReader reader(data);
  if (!reader.read_header()) unreadable(path, reader.message());
  check_size(reader.width(), reader.height(), path);  // before any pixel is decoded
  Bytes samples;
  if (!reader.read_pixels(samples)) unreadable(path, reader.message());
  const int w = reader.width(), h = reader.height();
  if (reader.components() == 1) return from_grey(w, h, samples.data());
  if (reader.components() == 4) return from_inverted_cmyk(w, h, samples.data());
  return ImageRGB{w, h, std::move(samples)};
}

#endif

// The size from the header, checked before any pixel is decoded.
void check_header(const Bytes& data, const std::string& path) {
  int width = 0, height = 0, channels = 0;
  if (!stbi_info_from_memory(data.data(), int(std::min<size_t>(data.size(), INT32_MAX)), &width, &height, &channels))
    unreadable(path, stbi_failure_reason());
  check_size(width, height, path);
}

ImageRGB decode(const Bytes& data, const std::string& path, JpegDecoder jpeg) {
  if (is_png(data)) {
    check_header(data, path);
    return decode_png(data, path);
  }
  if (is_jpeg(data)) {
#ifdef EDGECOMPRESS_WITH_LIBJPEG
    if (jpeg == JpegDecoder::libjpeg) return decode_jpeg_libjpeg(data, path);
#endif
    (void)jpeg;
    check_header(data, path);
    return decode_jpeg_stb(data, path);
  }
  throw Error(path + " is not an image this runtime can read", "Use a PNG or JPEG file.");
}

}  // namespace

uint8_t over_white(uint8_t value, uint8_t alpha) {
  if (alpha == 0) return 255;
  // PIL's integer alpha_composite with an opaque white destination: coef1 = alpha * 128 (7 bits
  // of precision), then a rounded division by 255 done with shifts.
  const uint32_t source = uint32_t(alpha) << 7, destination = (255u << 7) - source;
  const uint32_t mixed = value * source + 255u * destination + (0x80u << 7);
  return uint8_t((((mixed >> 8) + mixed) >> 8) >> 7);
}

ImageRGB load_image(const std::string& path, JpegDecoder jpeg) {
  namespace fs = std::filesystem;
  std::error_code error;
  if (!fs::exists(path, error)) throw Error("image " + path + " does not exist");
  if (!fs::is_regular_file(path, error)) throw Error("image " + path + " is not a file");
  const Bytes data = read_file(path);
  const Bytes exif = is_jpeg(data) ? jpeg_exif(data.data(), data.size()) : png_exif(data.data(), data.size());
  return apply_orientation(decode(data, path, jpeg), exif_orientation(exif.data(), exif.size()));
}

ImageRGB load_image(const std::string& path) { return load_image(path, JpegDecoder::libjpeg); }

}  // namespace edgecompress
