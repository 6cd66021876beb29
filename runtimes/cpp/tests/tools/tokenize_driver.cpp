// Runs edgecompress::Tokenizer over a file of inputs, for the pytest parity suite:
//   tokenize_driver TOKENIZER_JSON encode|encode-special|decode|decode-special|pre-tokenize FILE
// FILE holds one JSON value a line: a string to encode (or pre-tokenize), or a list of ids to
// decode. Prints one line per input: the ids separated by spaces, the decoded text as a JSON
// string, or the pre-tokenizer's pieces as a JSON list of strings.
// encode-special adds the special tokens (add_special_tokens=True); decode-special skips them
// (skip_special_tokens=True). Exits 2 with one message on bad input.
#include <fstream>
#include <iostream>
#include <string>

#include <nlohmann/json.hpp>

#include "edgecompress/error.hpp"
#include "edgecompress/tokenizer.hpp"

namespace {

struct BadInput {
  std::string message;
};

void run(const edgecompress::Tokenizer& tokenizer, const std::string& mode, std::istream& in) {
  const bool encode = mode == "encode" || mode == "encode-special";
  const bool pre_tokenize = mode == "pre-tokenize";
  const bool special = mode == "encode-special" || mode == "decode-special";
  std::string line;
  for (size_t number = 1; std::getline(in, line); ++number) {
    const auto value = nlohmann::json::parse(line, nullptr, false);
    const std::string where = "line " + std::to_string(number) + ": ";
    if (pre_tokenize) {
      if (!value.is_string()) throw BadInput{where + "expected a JSON string to pre-tokenize"};
      std::cout << nlohmann::json(tokenizer.pre_tokenize(value.get<std::string>())).dump() << '\n';
    } else if (encode) {
      if (!value.is_string()) throw BadInput{where + "expected a JSON string to encode"};
      const auto ids = tokenizer.encode(value.get<std::string>(), special);
      for (size_t i = 0; i < ids.size(); ++i) std::cout << (i ? " " : "") << ids[i];
      std::cout << '\n';
    } else {
      if (!value.is_array()) throw BadInput{where + "expected a JSON list of ids to decode"};
      std::vector<int64_t> ids;
      for (const auto& id : value) {
        if (!id.is_number_integer()) throw BadInput{where + "ids must be integers"};
        ids.push_back(id.get<int64_t>());
      }
      std::cout << nlohmann::json(tokenizer.decode(ids, special)).dump() << '\n';
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  try {
    if (argc != 4) throw BadInput{"usage: tokenize_driver TOKENIZER_JSON encode|encode-special|decode|decode-special|pre-tokenize FILE"};
    const std::string mode = argv[2];
    if (mode != "encode" && mode != "encode-special" && mode != "decode" && mode != "decode-special" &&
        mode != "pre-tokenize")
      throw BadInput{"unknown mode '" + mode + "' (encode, encode-special, decode, decode-special, pre-tokenize)"};
    std::ifstream in(argv[3], std::ios::binary);
    if (!in) throw BadInput{std::string("cannot open ") + argv[3]};
    const auto tokenizer = edgecompress::Tokenizer::from_file(argv[1]);
    run(tokenizer, mode, in);
    return 0;
  } catch (const BadInput& e) {
    std::cerr << "tokenize_driver: " << e.message << '\n';
  } catch (const edgecompress::Error& e) {
    std::cerr << "tokenize_driver: " << e.what() << (e.hint().empty() ? "" : " (" + e.hint() + ")") << '\n';
  }
  return 2;
}
