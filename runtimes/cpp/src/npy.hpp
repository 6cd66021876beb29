// A read-only, memory-mapped .npy array (float32 or float16, C order): the bundle's token
// embedding table and the image-newline row, read without numpy.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace edgecompress {

class NpyArray {
 public:
  static NpyArray open(const std::string& path);  // throws Error
  NpyArray(NpyArray&&) noexcept;
  NpyArray& operator=(NpyArray&&) noexcept;
  ~NpyArray();

  const std::vector<int64_t>& shape() const { return shape_; }
  const std::string& dtype() const { return dtype_; }  // "float32" or "float16"
  int64_t rows() const;                                // the first axis (1 for a vector)
  int64_t row_size() const;                            // elements after the first axis (a vector: all)
  // row `index` of the first axis as float32 (exact for float16) into out[0, row_size())
  void row(int64_t index, float* out) const;

 private:
  NpyArray() = default;
  std::vector<int64_t> shape_;
  std::string dtype_;
  const uint8_t* data_ = nullptr;  // first element
  void* map_ = nullptr;
  size_t map_size_ = 0;
};

float half_to_float(uint16_t h);
uint16_t float_to_half(float f);  // round to nearest even, as numpy's astype(float16)

}  // namespace edgecompress
