// Images and preprocessing, equal to the Python runtime's (PIL) within 1/255 a pixel.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace edgecompress {

// 8-bit RGB, rows top to bottom, HWC (width * height * 3 bytes).
struct ImageRGB {
  int width = 0;
  int height = 0;
  std::vector<uint8_t> pixels;
};

// Decode a JPEG or PNG file: EXIF orientation applied, transparency composited onto white,
// the size checks of the Python runtime (at least 14 px a side, at most PIL's bomb limit).
// Throws Error with the Python runtime's messages.
ImageRGB load_image(const std::string& path);

// The image processor's parameters (the manifest's preprocess): the CLIP processor's, and for
// Qwen2.5-VL the fixed square and the patch layout (image_size > 0).
struct PreprocessParams {
  int resize_shortest_edge = 336;
  int crop_size = 336;
  std::string resample = "bicubic";
  double rescale_factor = 1.0 / 255.0;
  std::array<double, 3> image_mean{};
  std::array<double, 3> image_std{};
  std::string pixel_input = "float";  // "uint8": the vision graph takes the crop as uint8 HWC and normalises it;
                                      // "frame": it takes whole frames of frame_width x frame_height
  int frame_width = 0, frame_height = 0;
  int image_size = 0;                 // Qwen2.5-VL: every image resized to image_size x image_size
  int patch_size = 14, temporal_patch_size = 2, merge_size = 2;
};

// PIL's Image.resize(size, filter) on 8-bit RGB (filters: nearest, bilinear, bicubic, lanczos,
// box, hamming), as PIL computes it (support widened when downscaling, 8-bit fixed point).
ImageRGB resize(const ImageRGB& image, int width, int height, const std::string& filter);

// The centre crop, 8-bit: the shortest edge resized, then crop x crop around the centre.
ImageRGB crop_pixels(const ImageRGB& image, const PreprocessParams& params);

// float32 [3, crop, crop]: crop_pixels, then rescale and normalise.
std::vector<float> preprocess(const ImageRGB& image, const PreprocessParams& params);

// uint8 HWC -> float32 CHW with rescale (double) then normalise (float), as the Python runtime.
std::vector<float> normalize(const ImageRGB& image, const PreprocessParams& params);

// Qwen2.5-VL's patch rows, as the Python runtime's qwen.py patch_rows: the image resized to
// image_size x image_size (aspect ratio not kept), normalised, and cut into float32
// [patches, 3 * temporal_patch_size * patch_size * patch_size], merge blocks of merge_size x
// merge_size patches in raster order, each row a patch's channels x temporal copies x pixels.
std::vector<float> patch_rows(const ImageRGB& image, const PreprocessParams& params);
int64_t patch_count(const PreprocessParams& params);      // the rows: (image_size / patch_size)^2
int64_t patch_row_size(const PreprocessParams& params);   // 3 * temporal_patch_size * patch_size^2

// LLaVA-NeXT "anyres" tiling (the manifest's `anyres` record), as the Python runtime's anyres.py.
struct AnyresParams {
  std::vector<std::array<int, 2>> pinpoints;  // (h, w)
  std::vector<std::array<int, 2>> grids;      // (tile rows, tile cols), indexed by grid_index
  int tile_size = 336;                        // S
  int side = 24;                              // patch tokens per tile side
  int max_tiles = 4;
};

struct AnyresInputs {
  std::vector<float> pixel_values;  // [1 + max_tiles, 3, S, S]: base image, tiles row-major, unused slots 0
  int64_t grid_index = 0;           // the grid's index in AnyresParams::grids
  std::vector<float> tile_mask;     // [max_tiles, side * side]: 1 for a used tile's token inside the image
  std::vector<int64_t> packed_order;  // LLaVA-NeXT's unpruned token order, -1 = image newline
};

// The pinpoint (h, w) an image of `size` (h, w) is tiled at: the most effective pixels, then the
// fewest wasted, the first listed on a tie (transformers' select_best_resolution).
std::array<int, 2> select_best_resolution(std::array<int, 2> size, const std::vector<std::array<int, 2>>& pinpoints);

AnyresInputs preprocess_anyres(const ImageRGB& image, const PreprocessParams& params, const AnyresParams& anyres);

}  // namespace edgecompress
