// edgecompress-run: answer a question about an image with a bundle, from the command line.
//
//   edgecompress-run --bundle out/tiny-llava-hired-b20 --image cat.jpg --prompt "What is this?"
//   edgecompress-run --bundle out/tiny-llava-hired-b20 --tokenize-file texts.jsonl
//
// Bad input: one message on stderr and exit status 2.
#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "edgecompress/runtime.hpp"

namespace {

using edgecompress::Error;
using nlohmann::json;

const char* kUsage = R"(usage: edgecompress-run --bundle DIR --image FILE --prompt TEXT [options]
       edgecompress-run --bundle DIR --requests FILE.jsonl [options]
       edgecompress-run (--bundle DIR | --tokenizer FILE) --tokenize-file FILE.jsonl

Run an edgecompress bundle: greedy generation from an image and a question, as the Python
runtime (edgecompress run) does, token for token.

options:
  --bundle DIR           the bundle (made by `edgecompress export`)
  --image FILE           a JPEG or PNG image
  --prompt TEXT          the question about the image
  --requests FILE        one JSON object a line, {"image": ..., "prompt": ...}; one JSON line out each
  --backend NAME         onnxruntime (default; = onnxruntime-cpu), onnxruntime-cuda, or tensorrt
                         (the engines of `edgecompress build`; builds with TensorRT only)
  --profile NAME         tensorrt: run the engines built for this profile (needed when there are several)
  --max-new-tokens N     at most N generated tokens (default 64)
  --threads N            ONNX Runtime intra-op threads (default: its own choice)
  --repeat N             run each request N times after one warm-up; --stats shows the medians
  --stats                print timings (preprocess, vision, prefill, TTFT, decode tokens/s) to stderr
  --json                 print each result as one JSON line (text, token_ids, kept_indices, timings)
  --ignore-eos           generate exactly --max-new-tokens tokens (benchmarks)
  --tokenize-file FILE   one JSON string a line in; the ids of encode(text, add_special_tokens=False)
                         out, space-separated, a line each
  --tokenizer FILE       a tokenizer.json to use with --tokenize-file instead of a bundle's
  --no-check-hashes      skip the sha256 check of the bundle's files (faster start)
  --no-spinning          ONNX Runtime's idle threads sleep instead of spinning (a CPU shared with
                         other busy processes; spinning is faster on a dedicated one)
  -h, --help             this help
)";

struct Args {
  std::string bundle, image, prompt, requests, backend = "onnxruntime", profile, tokenize_file, tokenizer;
  int max_new_tokens = 64, threads = 0, repeat = 1;
  bool stats = false, json_out = false, ignore_eos = false, check_hashes = true, spinning = true;
};

int parse_int(const std::string& flag, const std::string& value, int minimum) {
  try {
    size_t used = 0;
    int number = std::stoi(value, &used);
    if (used == value.size() && number >= minimum) return number;
  } catch (const std::exception&) {
  }
  throw Error(flag + " must be an integer of at least " + std::to_string(minimum) + ", got '" + value + "'");
}

Args parse(int argc, char** argv) {
  Args args;
  std::map<std::string, std::string*> strings{{"--bundle", &args.bundle},   {"--image", &args.image},
                                              {"--prompt", &args.prompt},   {"--requests", &args.requests},
                                              {"--backend", &args.backend}, {"--tokenize-file", &args.tokenize_file},
                                              {"--tokenizer", &args.tokenizer}, {"--profile", &args.profile}};
  std::map<std::string, std::pair<int*, int>> ints{
      {"--max-new-tokens", {&args.max_new_tokens, 1}}, {"--threads", {&args.threads, 0}}, {"--repeat", {&args.repeat, 1}}};
  std::map<std::string, bool*> switches{{"--stats", &args.stats}, {"--json", &args.json_out}, {"--ignore-eos", &args.ignore_eos}};
  for (int i = 1; i < argc; ++i) {
    std::string flag = argv[i];
    if (flag == "-h" || flag == "--help") {
      std::cout << kUsage;
      std::exit(0);
    }
    if (flag == "--no-spinning") {
      args.spinning = false;
      continue;
    }
    if (flag == "--no-check-hashes") {
      args.check_hashes = false;
      continue;
    }
    if (switches.count(flag)) {
      *switches[flag] = true;
      continue;
    }
    if (!strings.count(flag) && !ints.count(flag)) throw Error("unknown option " + flag, "See edgecompress-run --help.");
    if (i + 1 >= argc) throw Error(flag + " needs a value", "See edgecompress-run --help.");
    std::string value = argv[++i];
    if (strings.count(flag)) *strings[flag] = value;
    else *ints[flag].first = parse_int(flag, value, ints[flag].second);
  }
  if (!args.tokenize_file.empty()) {
    if (args.bundle.empty() == args.tokenizer.empty()) throw Error("--tokenize-file needs one of --bundle or --tokenizer");
    return args;
  }
  if (args.bundle.empty()) throw Error("--bundle is required", "See edgecompress-run --help.");
  if (args.requests.empty() && (args.image.empty() || args.prompt.empty()))
    throw Error("give --image and --prompt (or --requests FILE)", "See edgecompress-run --help.");
  if (!args.requests.empty() && (!args.image.empty() || !args.prompt.empty()))
    throw Error("--requests replaces --image and --prompt; give one or the other");
  return args;
}

std::vector<json> read_json_lines(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw Error("cannot read " + path);
  std::vector<json> lines;
  std::string line;
  for (int number = 1; std::getline(in, line); ++number) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    try {
      lines.push_back(json::parse(line));
    } catch (const json::exception&) {
      throw Error(path + " line " + std::to_string(number) + " is not JSON");
    }
  }
  return lines;
}

void print_ids(const edgecompress::Tokenizer& tokenizer, const std::string& file) {
  auto lines = read_json_lines(file);
  std::string out;
  for (size_t i = 0; i < lines.size(); ++i) {
    if (!lines[i].is_string()) throw Error(file + ": line " + std::to_string(i + 1) + " is not a JSON string");
    auto ids = tokenizer.encode(lines[i].get<std::string>(), false);
    for (size_t j = 0; j < ids.size(); ++j) out += (j ? " " : "") + std::to_string(ids[j]);
    out += "\n";
  }
  std::cout << out;
}

int tokenize(const Args& args) {
  if (!args.tokenizer.empty()) {
    print_ids(edgecompress::Tokenizer::from_file(args.tokenizer), args.tokenize_file);
  } else {  // the bundle's own tokenizer, through every check a run makes (schema, containment, sha256)
    auto pipe = edgecompress::Pipeline::load(args.bundle, {"onnxruntime", 1, args.check_hashes, ""});
    print_ids(pipe.tokenizer(), args.tokenize_file);
  }
  return 0;
}

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  size_t n = values.size();
  return n % 2 ? values[n / 2] : (values[n / 2 - 1] + values[n / 2]) / 2;
}

json timings_json(const std::vector<edgecompress::Timings>& runs) {
  auto pick = [&](double edgecompress::Timings::*field) {
    std::vector<double> values;
    for (const auto& t : runs) values.push_back(t.*field);
    return median(values);
  };
  std::vector<double> per_token;
  for (const auto& t : runs)
    if (t.decode_tokens > 0) per_token.push_back(t.decode_ms / t.decode_tokens);
  return {{"runs", runs.size()},
          {"preprocess_ms", pick(&edgecompress::Timings::preprocess_ms)},
          {"vision_ms", pick(&edgecompress::Timings::vision_ms)},
          {"prefill_ms", pick(&edgecompress::Timings::prefill_ms)},
          {"ttft_ms", pick(&edgecompress::Timings::ttft_ms)},
          {"decode_ms_per_token", per_token.empty() ? 0.0 : median(per_token)},
          {"decode_tokens", runs.back().decode_tokens}};
}

int generate(const Args& args) {
  auto pipe = edgecompress::Pipeline::load(args.bundle, {args.backend, args.threads, args.check_hashes, args.profile, args.spinning});
  std::vector<json> requests;
  if (!args.requests.empty()) {
    requests = read_json_lines(args.requests);
    for (size_t i = 0; i < requests.size(); ++i)
      if (!requests[i].is_object() || !requests[i].value("image", json()).is_string() || !requests[i].value("prompt", json()).is_string())
        throw Error(args.requests + ": line " + std::to_string(i + 1) + " needs {\"image\": \"...\", \"prompt\": \"...\"}");
  } else {
    requests.push_back({{"image", args.image}, {"prompt", args.prompt}});
  }
  bool stream = !args.json_out;
  for (const json& request : requests) {
    std::string image = request["image"], prompt = request["prompt"];
    edgecompress::GenerateOptions options;
    options.max_new_tokens = args.max_new_tokens;
    options.ignore_eos = args.ignore_eos;
    std::vector<edgecompress::Timings> runs;
    if (args.repeat > 1) pipe.generate(image, prompt, options);  // warm-up
    edgecompress::Generation result;
    for (int run = 0; run < args.repeat; ++run) {
      if (stream && run == 0) options.on_token = [](const std::string& piece) { std::cout << piece << std::flush; };
      else options.on_token = nullptr;
      result = pipe.generate(image, prompt, options);
      runs.push_back(result.timings);
    }
    json timings = timings_json(runs);
    if (args.json_out) {
      std::cout << json{{"image", image},          {"prompt", prompt},          {"text", result.text},
                        {"token_ids", result.token_ids}, {"kept_indices", result.kept_indices},
                        {"prompt_tokens", result.prompt_tokens}, {"stopped_by", result.stopped_by}, {"timings", timings}}
                       .dump(-1, ' ', false, json::error_handler_t::replace)
                << "\n";
    } else {
      std::cout << "\n";
    }
    if (args.stats) {
      double per_token = timings["decode_ms_per_token"];
      std::cerr << "backend " << pipe.backend_name() << ", " << timings["runs"] << " run(s), medians: preprocess "
                << timings["preprocess_ms"] << " ms, vision " << timings["vision_ms"] << " ms, prefill " << timings["prefill_ms"]
                << " ms (" << result.prompt_tokens << " tokens), TTFT " << timings["ttft_ms"] << " ms, decode " << per_token
                << " ms/token (" << (per_token > 0 ? 1000.0 / per_token : 0.0) << " tokens/s), " << result.token_ids.size()
                << " tokens, stopped by " << result.stopped_by << "\n";
    }
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    Args args = parse(argc, argv);
    return args.tokenize_file.empty() ? generate(args) : tokenize(args);
  } catch (const Error& err) {
    std::cerr << "error: " << err.what() << "\n";
    if (!err.hint().empty()) std::cerr << err.hint() << "\n";
    return 2;
  } catch (const std::exception& err) {
    std::cerr << "internal error: " << err.what() << "\n";
    return 1;
  }
}
