#include "npy.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <regex>

#include "edgecompress/error.hpp"

namespace edgecompress {

float half_to_float(uint16_t h) {
  uint32_t sign = uint32_t(h & 0x8000) << 16, exponent = (h >> 10) & 0x1f, mantissa = h & 0x3ff, bits;
  if (exponent == 0x1f) {
    bits = sign | 0x7f800000 | (mantissa << 13);  // inf, nan
  } else if (exponent != 0) {
    bits = sign | ((exponent + 112) << 23) | (mantissa << 13);
  } else if (mantissa == 0) {
    bits = sign;
  } else {  // subnormal: normalise
    int shift = 0;
    while (!(mantissa & 0x400)) mantissa <<= 1, ++shift;
    bits = sign | (uint32_t(113 - shift) << 23) | ((mantissa & 0x3ff) << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

uint16_t float_to_half(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  uint16_t sign = (bits >> 16) & 0x8000;
  uint32_t magnitude = bits & 0x7fffffff;
  if (magnitude >= 0x7f800000) return sign | 0x7c00 | (magnitude > 0x7f800000 ? 0x200 : 0);  // inf, nan
  if (magnitude >= 0x477ff000) return sign | 0x7c00;  // rounds past the largest half: inf
  if (magnitude < 0x38800000) {  // below the smallest normal half: subnormal (or zero)
    if (magnitude < 0x33000000) return sign;
    uint32_t exponent = magnitude >> 23, mantissa = (magnitude & 0x7fffff) | 0x800000;
    uint32_t shift = 126 - exponent;  // 14 + (112 - exponent) ... places the value in 10 subnormal bits
    uint32_t half = mantissa >> shift, rest = mantissa & ((1u << shift) - 1), midpoint = 1u << (shift - 1);
    if (rest > midpoint || (rest == midpoint && (half & 1))) ++half;
    return sign | static_cast<uint16_t>(half);
  }
  uint32_t half = ((magnitude >> 13) - (112u << 10));
  uint32_t rest = magnitude & 0x1fff;
  if (rest > 0x1000 || (rest == 0x1000 && (half & 1))) ++half;  // carries into the exponent correctly
  return sign | static_cast<uint16_t>(half);
}

NpyArray NpyArray::open(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) throw Error("cannot read " + path + ": " + std::strerror(errno));
  struct stat info {};
  fstat(fd, &info);
  size_t size = static_cast<size_t>(info.st_size);
  void* map = size ? mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0) : MAP_FAILED;
  ::close(fd);
  if (map == MAP_FAILED) throw Error("cannot read " + path + ": not a .npy array");
  NpyArray array;
  array.map_ = map, array.map_size_ = size;
  auto bytes = static_cast<const uint8_t*>(map);
  auto bad = [&](const std::string& why) { return Error(path + " is not a readable .npy array: " + why, "The bundle is damaged: re-export it."); };
  if (size < 10 || std::memcmp(bytes, "\x93NUMPY", 6) != 0) throw bad("no .npy header");
  size_t header_size, offset;
  if (bytes[6] == 1) header_size = bytes[8] | (bytes[9] << 8), offset = 10;
  else if (size >= 12) header_size = bytes[8] | (bytes[9] << 8) | (bytes[10] << 16) | (size_t(bytes[11]) << 24), offset = 12;
  else throw bad("a truncated header");
  if (offset + header_size > size) throw bad("a truncated header");
  std::string header(reinterpret_cast<const char*>(bytes + offset), header_size);
  std::smatch match;
  if (!std::regex_search(header, match, std::regex("'descr':\\s*'([<>|=]?)([fiu]\\d+)'"))) throw bad("no dtype");
  std::string descr = match[2];
  if (match[1] == ">") throw bad("big-endian data");
  if (descr == "f4") array.dtype_ = "float32";
  else if (descr == "f2") array.dtype_ = "float16";
  else throw bad("dtype " + descr + " (float32 or float16 expected)");
  if (std::regex_search(header, std::regex("'fortran_order':\\s*True"))) throw bad("Fortran order");
  if (!std::regex_search(header, match, std::regex("'shape':\\s*\\(([^)]*)\\)"))) throw bad("no shape");
  std::string dims = match[1];
  const std::regex digits("\\d+");
  for (std::sregex_iterator it(dims.begin(), dims.end(), digits), end; it != end; ++it)
    array.shape_.push_back(std::stoll(it->str()));
  int64_t count = 1;
  for (int64_t d : array.shape_) count *= d;
  size_t item = array.dtype_ == "float32" ? 4 : 2;
  if (offset + header_size + count * item > size) throw bad("fewer bytes than its shape");
  array.data_ = bytes + offset + header_size;
  return array;
}

NpyArray::NpyArray(NpyArray&& other) noexcept { *this = std::move(other); }

NpyArray& NpyArray::operator=(NpyArray&& other) noexcept {
  if (this != &other) {
    if (map_) munmap(map_, map_size_);
    shape_ = std::move(other.shape_), dtype_ = std::move(other.dtype_);
    data_ = other.data_, map_ = other.map_, map_size_ = other.map_size_;
    other.map_ = nullptr, other.data_ = nullptr;
  }
  return *this;
}

NpyArray::~NpyArray() {
  if (map_) munmap(map_, map_size_);
}

int64_t NpyArray::rows() const { return shape_.size() > 1 ? shape_[0] : 1; }

int64_t NpyArray::row_size() const {
  if (shape_.size() == 1) return shape_[0];  // a vector is one row
  int64_t count = 1;
  for (size_t i = 1; i < shape_.size(); ++i) count *= shape_[i];
  return count;
}

void NpyArray::row(int64_t index, float* out) const {
  int64_t width = row_size();
  if (shape_.empty() || index < 0 || index >= rows()) throw Error("token id " + std::to_string(index) + " is outside the embedding table");
  if (dtype_ == "float32") {
    std::memcpy(out, data_ + index * width * 4, width * 4);
  } else {
    const uint8_t* at = data_ + index * width * 2;
    for (int64_t i = 0; i < width; ++i) {
      uint16_t h;
      std::memcpy(&h, at + 2 * i, 2);
      out[i] = half_to_float(h);
    }
  }
}

}  // namespace edgecompress
