// LLaVA-NeXT "anyres" tiling, as the Python runtime's anyres.py: a base image plus the tiles of the
// image fitted (aspect kept, zero-padded, centred) into the best pinpoint resolution.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "edgecompress/error.hpp"
#include "edgecompress/image.hpp"
#include "image_steps.hpp"

namespace edgecompress {
namespace {

using Size = std::array<int, 2>;  // (h, w), or (rows, cols)

// (h, w) of the image resized to fit `target` with its aspect ratio kept.
Size fitted_size(Size size, Size target) {
  const double scale_w = double(target[1]) / size[1], scale_h = double(target[0]) / size[0];
  if (scale_w < scale_h) return {std::min(int(std::ceil(size[0] * scale_w)), target[0]), target[1]};
  return {target[0], std::min(int(std::ceil(size[1] * scale_h)), target[1])};
}

// Python's int(round(x, 7)): round to 7 decimals (correctly, as printf does), then truncate.
int round7_trunc(double x) {
  char text[64];
  std::snprintf(text, sizeof text, "%.7f", x);
  return int(std::strtod(text, nullptr));
}

struct Span {
  int begin, end;
};

// Rows and columns of the (rows, cols) token canvas that hold the image, not its padding
// (transformers' unpad_image on token coordinates).
std::array<Span, 2> unpadded_span(Size size, Size canvas) {
  const double height = size[0], width = size[1];
  const int rows = canvas[0], cols = canvas[1];
  if (width / height > double(cols) / rows) {
    const int pad = (rows - round7_trunc(height * (double(cols) / width))) / 2;
    return {Span{pad, rows - pad}, Span{0, cols}};
  }
  const int pad = (cols - round7_trunc(width * (double(rows) / height))) / 2;
  return {Span{0, rows}, Span{pad, cols - pad}};
}

// A canvas cell's index in the graph's flat tile-token space: tile t (row-major), patch p (raster).
int64_t canvas_slot(int y, int x, int side, int grid_cols) {
  return (int64_t(y / side) * grid_cols + x / side) * side * side + (y % side) * side + x % side;
}

int grid_index(Size grid, const AnyresParams& anyres) {
  for (size_t i = 0; i < anyres.grids.size(); ++i)
    if (anyres.grids[i] == grid) return int(i);
  throw Error("the anyres grid " + std::to_string(grid[0]) + "x" + std::to_string(grid[1]) +
                  " is not among the bundle's grids",
              "The manifest's anyres record is inconsistent; re-export the bundle.");
}

// The image fitted into `target` (h, w), zero-padded around it, centred.
ImageRGB fitted_canvas(const ImageRGB& image, Size target, const std::string& filter) {
  const Size fit = fitted_size({image.height, image.width}, target);
  const ImageRGB fitted = resize(image, fit[1], fit[0], filter);
  const int top = (target[0] - fit[0]) / 2, left = (target[1] - fit[1]) / 2;
  ImageRGB canvas{target[1], target[0], std::vector<uint8_t>(size_t(target[0]) * target[1] * 3, 0)};
  for (int y = 0; y < fit[0]; ++y)
    std::memcpy(&canvas.pixels[(size_t(top + y) * target[1] + left) * 3], &fitted.pixels[size_t(y) * fit[1] * 3],
                size_t(fit[1]) * 3);
  return canvas;
}

ImageRGB tile_of(const ImageRGB& canvas, int row, int col, int tile) {
  ImageRGB out{tile, tile, std::vector<uint8_t>(size_t(tile) * tile * 3)};
  for (int y = 0; y < tile; ++y)
    std::memcpy(&out.pixels[size_t(y) * tile * 3], &canvas.pixels[(size_t(row * tile + y) * canvas.width + col * tile) * 3],
                size_t(tile) * 3);
  return out;
}

}  // namespace

Size select_best_resolution(Size size, const std::vector<Size>& pinpoints) {
  const int64_t height = size[0], width = size[1];
  Size best{0, 0};
  int64_t best_effective = 0;
  double best_wasted = INFINITY;
  for (const Size& target : pinpoints) {
    const double scale = std::min(double(target[1]) / width, double(target[0]) / height);
    const int64_t effective = std::min(int64_t(width * scale) * int64_t(height * scale), width * height);
    const int64_t wasted = int64_t(target[1]) * target[0] - effective;
    if (effective > best_effective || (effective == best_effective && wasted < best_wasted)) {
      best = target;
      best_effective = effective;
      best_wasted = double(wasted);
    }
  }
  return best;
}

AnyresInputs preprocess_anyres(const ImageRGB& image, const PreprocessParams& params, const AnyresParams& anyres) {
  const int tile = anyres.tile_size, side = anyres.side;
  if (anyres.pinpoints.empty() || tile <= 0 || side <= 0)
    throw Error("the anyres record needs pinpoints, a positive tile_size and side",
                "The manifest's anyres record is incomplete; re-export the bundle.");
  const Size size{image.height, image.width};
  const Size best = select_best_resolution(size, anyres.pinpoints);
  const Size grid{best[0] / tile, best[1] / tile};
  const int tiles = grid[0] * grid[1];
  if (tiles > anyres.max_tiles)
    throw Error("the anyres grid " + std::to_string(grid[0]) + "x" + std::to_string(grid[1]) + " has more than max_tiles " +
                std::to_string(anyres.max_tiles) + " tiles");

  AnyresInputs inputs;
  inputs.grid_index = grid_index(grid, anyres);
  const size_t slot = size_t(3) * tile * tile;
  inputs.pixel_values.assign(size_t(1 + anyres.max_tiles) * slot, 0.0f);
  const NormalizeTable table = normalize_table(params);
  normalize_into(resize(image, tile, tile, params.resample), table, inputs.pixel_values.data());
  const ImageRGB canvas = fitted_canvas(image, {grid[0] * tile, grid[1] * tile}, params.resample);
  for (int r = 0; r < grid[0]; ++r)
    for (int c = 0; c < grid[1]; ++c)
      normalize_into(tile_of(canvas, r, c, tile), table, &inputs.pixel_values[(1 + size_t(r) * grid[1] + c) * slot]);

  const int64_t n = int64_t(side) * side;
  const auto [rows, cols] = unpadded_span(size, {grid[0] * side, grid[1] * side});
  inputs.tile_mask.assign(size_t(anyres.max_tiles * n), 0.0f);
  for (int64_t i = 0; i < n; ++i) inputs.packed_order.push_back(i);  // the base image's tokens first
  for (int y = rows.begin; y < rows.end; ++y) {
    for (int x = cols.begin; x < cols.end; ++x) {
      const int64_t index = canvas_slot(y, x, side, grid[1]);
      inputs.tile_mask[size_t(index)] = 1.0f;
      inputs.packed_order.push_back(n + index);
    }
    inputs.packed_order.push_back(-1);  // the image-newline embedding
  }
  return inputs;
}

}  // namespace edgecompress
