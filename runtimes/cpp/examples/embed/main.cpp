// describe BUNDLE IMAGE [PROMPT]: the answer streamed to stdout, then TTFT and decode speed.
#include <iostream>

#include <edgecompress/runtime.hpp>

int main(int argc, char** argv) {
  if (argc < 3) {
    std::cerr << "usage: describe BUNDLE IMAGE [PROMPT]\n";
    return 2;
  }
  try {
    auto pipe = edgecompress::Pipeline::load(argv[1]);
    edgecompress::GenerateOptions options;
    options.max_new_tokens = 32;
    options.on_token = [](const std::string& piece) { std::cout << piece << std::flush; };
    auto result = pipe.generate(edgecompress::load_image(argv[2]), argc > 3 ? argv[3] : "What is in the picture?", options);
    std::cout << "\n";
    std::cerr << "TTFT " << result.timings.ttft_ms << " ms, " << result.timings.decode_tokens_per_s() << " tokens/s\n";
  } catch (const edgecompress::Error& err) {
    std::cerr << "error: " << err.what() << "\n";
    return 2;
  }
  return 0;
}
