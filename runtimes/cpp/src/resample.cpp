// PIL's Image.resize on 8-bit RGB, computed as Pillow's libImaging (Resample.c, and Geometry.c's
// scale-affine path for nearest) computes it, so that the C++ runtime's pixels equal the Python
// runtime's bit for bit. The floating-point expressions keep PIL's order of operations on purpose.
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "edgecompress/error.hpp"
#include "edgecompress/image.hpp"

namespace edgecompress {
namespace {

constexpr double kPi = 3.14159265358979323846;

// 8 bits of result, 2 bits of headroom for coefficients that sum past 1 or dip below 0.
constexpr int kPrecisionBits = 32 - 8 - 2;

struct Filter {
  double (*weight)(double x);
  double support;
};

double box_weight(double x) { return (x > -0.5 && x <= 0.5) ? 1.0 : 0.0; }

double bilinear_weight(double x) {
  x = std::fabs(x);
  return x < 1.0 ? 1.0 - x : 0.0;
}

double hamming_weight(double x) {
  x = std::fabs(x);
  if (x == 0.0) return 1.0;
  if (x >= 1.0) return 0.0;
  x = x * kPi;
  // PIL writes these constants as floats (0.54f, 0.46f); their float values matter to the last bit.
  return std::sin(x) / x * (double(0.54f) + double(0.46f) * std::cos(x));
}

double bicubic_weight(double x) {
  constexpr double a = -0.5;
  x = std::fabs(x);
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
  return 0.0;
}

double sinc(double x) {
  if (x == 0.0) return 1.0;
  x = x * kPi;
  return std::sin(x) / x;
}

double lanczos_weight(double x) { return (-3.0 <= x && x < 3.0) ? sinc(x) * sinc(x / 3) : 0.0; }

const Filter* filter_named(const std::string& name) {
  static const Filter box{box_weight, 0.5}, bilinear{bilinear_weight, 1.0}, hamming{hamming_weight, 1.0},
      bicubic{bicubic_weight, 2.0}, lanczos{lanczos_weight, 3.0};
  if (name == "box") return &box;
  if (name == "bilinear") return &bilinear;
  if (name == "hamming") return &hamming;
  if (name == "bicubic") return &bicubic;
  if (name == "lanczos") return &lanczos;
  return nullptr;
}

// For each output sample along one axis: the first input sample it reads, how many, and their
// fixed-point weights (row-major, `width` weights an output sample).
struct Kernel {
  int width = 0;
  std::vector<int> first;
  std::vector<int> count;
  std::vector<int32_t> weights;
};

int32_t to_fixed(double w) {
  return w < 0 ? int32_t(-0.5 + w * (1 << kPrecisionBits)) : int32_t(0.5 + w * (1 << kPrecisionBits));
}

Kernel make_kernel(int in_size, int out_size, const Filter& filter) {
  const double scale = double(in_size) / out_size;
  const double filter_scale = scale < 1.0 ? 1.0 : scale;  // widen the filter when downscaling
  const double support = filter.support * filter_scale;
  Kernel kernel;
  kernel.width = int(std::ceil(support)) * 2 + 1;
  kernel.first.resize(out_size);
  kernel.count.resize(out_size);
  kernel.weights.assign(size_t(out_size) * kernel.width, 0);
  std::vector<double> w(kernel.width);
  for (int out = 0; out < out_size; ++out) {
    const double center = (out + 0.5) * scale;
    const double inv_scale = 1.0 / filter_scale;
    int lo = int(center - support + 0.5);
    if (lo < 0) lo = 0;
    int hi = int(center + support + 0.5);
    if (hi > in_size) hi = in_size;
    const int n = hi - lo;
    double sum = 0.0;
    for (int i = 0; i < n; ++i) {
      w[i] = filter.weight((i + lo - center + 0.5) * inv_scale);
      sum += w[i];
    }
    int32_t* fixed = &kernel.weights[size_t(out) * kernel.width];
    for (int i = 0; i < n; ++i) fixed[i] = to_fixed(sum != 0.0 ? w[i] / sum : w[i]);
    kernel.first[out] = lo;
    kernel.count[out] = n;
  }
  return kernel;
}

uint8_t clip8(int32_t sum) {
  const int32_t v = sum >> kPrecisionBits;  // arithmetic shift: floor, as PIL
  return uint8_t(v < 0 ? 0 : v > 255 ? 255 : v);
}

// Rows [row0, row0 + rows) of `in`, resampled along x to kernel.first.size() columns.
ImageRGB resample_horizontal(const ImageRGB& in, int row0, int rows, const Kernel& kernel) {
  ImageRGB out;
  out.width = int(kernel.first.size());
  out.height = rows;
  out.pixels.resize(size_t(out.width) * rows * 3);
  for (int y = 0; y < rows; ++y) {
    const uint8_t* src = &in.pixels[size_t(row0 + y) * in.width * 3];
    uint8_t* dst = &out.pixels[size_t(y) * out.width * 3];
    for (int x = 0; x < out.width; ++x) {
      const int32_t* k = &kernel.weights[size_t(x) * kernel.width];
      const uint8_t* s = src + size_t(kernel.first[x]) * 3;
      int32_t r = 1 << (kPrecisionBits - 1), g = r, b = r;
      for (int i = 0; i < kernel.count[x]; ++i) {
        r += s[i * 3 + 0] * k[i];
        g += s[i * 3 + 1] * k[i];
        b += s[i * 3 + 2] * k[i];
      }
      dst[x * 3 + 0] = clip8(r);
      dst[x * 3 + 1] = clip8(g);
      dst[x * 3 + 2] = clip8(b);
    }
  }
  return out;
}

// `in` resampled along y; kernel.first counts from `row0` (the first row `in` holds).
ImageRGB resample_vertical(const ImageRGB& in, int row0, const Kernel& kernel) {
  ImageRGB out;
  out.width = in.width;
  out.height = int(kernel.first.size());
  out.pixels.resize(size_t(out.width) * out.height * 3);
  const size_t stride = size_t(in.width) * 3;
  for (int y = 0; y < out.height; ++y) {
    const int32_t* k = &kernel.weights[size_t(y) * kernel.width];
    const uint8_t* src = &in.pixels[size_t(kernel.first[y] - row0) * stride];
    uint8_t* dst = &out.pixels[size_t(y) * stride];
    for (size_t c = 0; c < stride; ++c) {
      int32_t sum = 1 << (kPrecisionBits - 1);
      for (int i = 0; i < kernel.count[y]; ++i) sum += src[i * stride + c] * k[i];
      dst[c] = clip8(sum);
    }
  }
  return out;
}

// PIL's nearest: an affine scale that steps the source coordinate by accumulated addition.
std::vector<int> nearest_sources(int in_size, int out_size) {
  const double step = double(in_size) / out_size;
  std::vector<int> sources(out_size);
  double pos = step * 0.5;
  for (int i = 0; i < out_size; ++i, pos += step) {
    int source = pos < 0.0 ? -1 : int(pos);
    sources[i] = source < 0 ? 0 : source >= in_size ? in_size - 1 : source;
  }
  return sources;
}

ImageRGB resize_nearest(const ImageRGB& image, int width, int height) {
  const std::vector<int> xs = nearest_sources(image.width, width), ys = nearest_sources(image.height, height);
  ImageRGB out{width, height, std::vector<uint8_t>(size_t(width) * height * 3)};
  for (int y = 0; y < height; ++y) {
    const uint8_t* src = &image.pixels[size_t(ys[y]) * image.width * 3];
    uint8_t* dst = &out.pixels[size_t(y) * width * 3];
    for (int x = 0; x < width; ++x)
      for (int c = 0; c < 3; ++c) dst[x * 3 + c] = src[xs[x] * 3 + c];
  }
  return out;
}

// Which pass Pillow 13 runs first when both sides change (its pixels depend on it: the first
// pass rounds to 8 bits). Pillow 13 runs the vertical pass first where the height is scaled down
// significantly more than the width (Pillow PR #9549): where it loses more than twice as many
// rows as the width loses columns. The rule, from the pass order Pillow 13.0.0 shows (each pass
// alone is exact, so a resize equals one of the two orders): the boundary measured at 1-pixel
// steps on three image sizes, then no miss on 370 random sizes that shrink, grow or mix
// (benchmarks/resize_order.py counts it on more). Where only one side changes, one pass runs.
bool vertical_first(int in_width, int in_height, int width, int height) {
  return height < in_height && int64_t(in_height) - height > 2 * (int64_t(in_width) - width);
}

}  // namespace

ImageRGB resize(const ImageRGB& image, int width, int height, const std::string& filter_name) {
  if (width <= 0 || height <= 0)
    throw Error("cannot resize an image to " + std::to_string(width) + "x" + std::to_string(height) + " pixels");
  if (width == image.width && height == image.height) return image;
  if (filter_name == "nearest") return resize_nearest(image, width, height);
  const Filter* filter = filter_named(filter_name);
  if (!filter)
    throw Error("unknown resample filter '" + filter_name + "'",
                "Use one of nearest, bilinear, bicubic, lanczos, box, hamming.");

  const bool horizontal = width != image.width, vertical = height != image.height;
  const Kernel columns = make_kernel(image.width, width, *filter), rows = make_kernel(image.height, height, *filter);
  if (!horizontal) return resample_vertical(image, 0, rows);
  if (!vertical) return resample_horizontal(image, 0, image.height, columns);
  if (vertical_first(image.width, image.height, width, height)) {
    const ImageRGB shortened = resample_vertical(image, 0, rows);
    return resample_horizontal(shortened, 0, height, columns);
  }
  // Resample horizontally only the rows the vertical pass reads, as PIL does.
  const int row0 = rows.first.front();
  const int row_end = rows.first.back() + rows.count.back();
  return resample_vertical(resample_horizontal(image, row0, row_end - row0, columns), row0, rows);
}

}  // namespace edgecompress
