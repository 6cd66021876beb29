// Runs the C++ image pipeline for the pytest parity suite (tests/test_cpp_preprocess.py):
//   preprocess_driver clip PARAMS_JSON IMAGE OUT.f32 [--stb]       pixel_values [3, S, S]
//   preprocess_driver anyres PARAMS_JSON ANYRES_JSON IMAGE PREFIX  PREFIX.{pixel_values.f32,tile_mask.f32,packed_order.i64,json}
//   preprocess_driver qwen PARAMS_JSON IMAGE OUT.f32                Qwen2.5-VL patch rows [patches, 3 * T * P * P]
//   preprocess_driver mrope PREFIX KEPT ROWS COLS SUFFIX            mRoPE positions of a prompt (KEPT: comma-separated
//                                                                   indices or "-"): prints {"positions": [3][S], "delta": d}
//   preprocess_driver resize IMAGE W H FILTER OUT.u8                the decoded image resized, HWC
//   preprocess_driver decode IMAGE OUT.u8 [--stb]                   the decoded image, HWC; prints "W H"
// A JSON argument is inline ({...}) or a file. Bad input: the error's message on stderr, exit 2.
#include <cstdio>
#include <fstream>
#include <iostream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "edgecompress/error.hpp"
#include "edgecompress/image.hpp"
#include "image_decode.hpp"
#include "positions.hpp"

namespace ec = edgecompress;
using nlohmann::json;

namespace {

json read_json(const std::string& argument) {
  if (!argument.empty() && argument[0] == '{') return json::parse(argument);
  std::ifstream file(argument);
  if (!file) throw ec::Error("cannot open " + argument);
  return json::parse(file);
}

ec::PreprocessParams preprocess_params(const json& j) {
  ec::PreprocessParams p;
  if (j.contains("image_size")) {  // Qwen2.5-VL: the fixed square and the patch layout
    p.image_size = j.at("image_size").get<int>();
    p.patch_size = j.at("patch_size").get<int>();
    p.temporal_patch_size = j.at("temporal_patch_size").get<int>();
    p.merge_size = j.at("merge_size").get<int>();
  } else {
    p.resize_shortest_edge = j.at("resize_shortest_edge").get<int>();
    p.crop_size = j.at("crop_size").get<int>();
  }
  p.resample = j.value("resample", std::string("bicubic"));
  p.rescale_factor = j.at("rescale_factor").get<double>();
  p.image_mean = j.at("image_mean").get<std::array<double, 3>>();
  p.image_std = j.at("image_std").get<std::array<double, 3>>();
  return p;
}

ec::AnyresParams anyres_params(const json& j) {
  ec::AnyresParams a;
  a.pinpoints = j.at("pinpoints").get<std::vector<std::array<int, 2>>>();
  a.grids = j.at("grids").get<std::vector<std::array<int, 2>>>();
  a.tile_size = j.at("tile_size").get<int>();
  a.side = j.at("side").get<int>();
  a.max_tiles = j.at("max_tiles").get<int>();
  return a;
}

template <typename T>
void write_raw(const std::string& path, const std::vector<T>& values) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(values.data()), std::streamsize(values.size() * sizeof(T)));
  if (!out) throw ec::Error("cannot write " + path);
}

ec::JpegDecoder decoder(int argc, char** argv, int at) {
  return argc > at && std::string(argv[at]) == "--stb" ? ec::JpegDecoder::stb : ec::JpegDecoder::libjpeg;
}

int run(int argc, char** argv) {
  const std::string command = argc > 1 ? argv[1] : "";
  if (command == "clip" && argc >= 5) {
    const ec::ImageRGB image = ec::load_image(argv[3], decoder(argc, argv, 5));
    write_raw(argv[4], ec::preprocess(image, preprocess_params(read_json(argv[2]))));
    return 0;
  }
  if (command == "anyres" && argc == 6) {
    const ec::AnyresInputs inputs =
        ec::preprocess_anyres(ec::load_image(argv[4]), preprocess_params(read_json(argv[2])), anyres_params(read_json(argv[3])));
    const std::string prefix = argv[5];
    write_raw(prefix + ".pixel_values.f32", inputs.pixel_values);
    write_raw(prefix + ".tile_mask.f32", inputs.tile_mask);
    write_raw(prefix + ".packed_order.i64", inputs.packed_order);
    std::ofstream(prefix + ".json") << json{{"grid_index", inputs.grid_index},
                                            {"pixel_values", inputs.pixel_values.size()},
                                            {"tile_mask", inputs.tile_mask.size()},
                                            {"packed_order", inputs.packed_order.size()}};
    return 0;
  }
  if (command == "qwen" && argc == 5) {
    write_raw(argv[4], ec::patch_rows(ec::load_image(argv[3]), preprocess_params(read_json(argv[2]))));
    return 0;
  }
  if (command == "mrope" && argc == 7) {
    std::vector<int64_t> kept;
    std::stringstream list(std::string(argv[3]) == "-" ? "" : argv[3]);
    for (std::string item; std::getline(list, item, ',');) kept.push_back(std::stoll(item));
    int64_t delta = 0;
    ec::Positions positions = ec::mrope_positions(std::stoll(argv[2]), kept, std::stoll(argv[4]), std::stoll(argv[5]),
                                                  std::stoll(argv[6]), delta);
    json rows = json::array();
    for (int64_t r = 0; r < positions.rows; ++r)
      rows.push_back(std::vector<int64_t>(positions.values.begin() + r * positions.count,
                                          positions.values.begin() + (r + 1) * positions.count));
    std::cout << json{{"positions", rows}, {"delta", delta}} << "\n";
    return 0;
  }
  if (command == "resize" && argc == 7) {
    const ec::ImageRGB resized = ec::resize(ec::load_image(argv[2]), std::stoi(argv[3]), std::stoi(argv[4]), argv[5]);
    write_raw(argv[6], resized.pixels);
    return 0;
  }
  if (command == "decode" && argc >= 4) {
    const ec::ImageRGB image = ec::load_image(argv[2], decoder(argc, argv, 4));
    write_raw(argv[3], image.pixels);
    std::cout << image.width << " " << image.height << "\n";
    return 0;
  }
  std::cerr << "usage: preprocess_driver clip|anyres|qwen|mrope|resize|decode ... (see the source's header)\n";
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const ec::Error& error) {
    std::cerr << error.what() << "\n";
    if (!error.hint().empty()) std::cerr << error.hint() << "\n";
    return 2;
  } catch (const std::exception& error) {  // malformed JSON arguments
    std::cerr << error.what() << "\n";
    return 2;
  }
}
