// Unit checks of the tokenizer that need no Python: the generated Unicode tables, lossy UTF-8
// decoding as Rust's String::from_utf8_lossy, a small inline tokenizer.json end to end, and
// the errors for what the runtime refuses. (Parity with the Python library over thousands of
// strings is tests/test_cpp_tokenizer.py.)
#include <cstdio>
#include <string>
#include <vector>

#include "check.hpp"
#include "edgecompress/error.hpp"
#include "edgecompress/tokenizer.hpp"
#include "unicode.hpp"

namespace {

using edgecompress::Tokenizer;
using Ids = std::vector<int64_t>;
namespace unicode = edgecompress::unicode;

const std::string kFffd = "\xEF\xBF\xBD";

void unicode_tables() {
  CHECK(unicode::is_letter('a') && unicode::is_letter(0x4E00) && unicode::is_letter(0x05D0));
  CHECK(!unicode::is_letter('1') && !unicode::is_letter(' ') && !unicode::is_letter(0x0301));
  CHECK(unicode::is_number('7') && unicode::is_number(0x0661) && unicode::is_number(0xBD));  // Arabic 1, ½
  CHECK(!unicode::is_number('a'));
  // White_Space: NEL and NBSP are, the information separators Python calls space are not.
  CHECK(unicode::is_white_space(0x85) && unicode::is_white_space(0xA0) && unicode::is_white_space(0x3000));
  CHECK(!unicode::is_white_space(0x1C) && !unicode::is_white_space(0x200B));
  // The regex crate's \w: letters, marks, digits, connectors, circled letters, joiners.
  CHECK(unicode::is_word('_') && unicode::is_word(0x0301) && unicode::is_word(0x24B6) && unicode::is_word(0x200D));
  CHECK(!unicode::is_word('-') && !unicode::is_word(0xBD));
}

void lossy_utf8() {
  const auto lossy = [](const std::string& bytes) { return unicode::from_utf8_lossy(bytes); };
  CHECK(lossy("\xE2\x82\xAC") == "\xE2\x82\xAC");  // a whole euro sign
  CHECK(lossy("a\xE2\x82") == "a" + kFffd);         // a truncated character is one U+FFFD
  CHECK(lossy("\xF0\x9F\x98") == kFffd);
  CHECK(lossy("\xF0\x9F\x98x") == kFffd + "x");
  CHECK(lossy("\xC0\x80") == kFffd + kFffd);                 // an overlong lead: each byte
  CHECK(lossy("\xED\xA0\x80") == kFffd + kFffd + kFffd);     // a surrogate: each byte
  CHECK(lossy("\xF4\x90\x80\x80") == kFffd + kFffd + kFffd + kFffd);  // beyond U+10FFFF
  CHECK(lossy("\xFF" "b") == kFffd + "b");
  CHECK(lossy("\x80\x80") == kFffd + kFffd);
}

// A Llama-style tokenizer: metaspace normalizer, byte fallback for é (and no byte tokens for x,
// which becomes <unk>), <s> added in front.
const char kLlamaStyle[] = R"({
  "version": "1.0", "truncation": null, "padding": null,
  "added_tokens": [
    {"id": 0, "content": "<unk>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
    {"id": 1, "content": "<s>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}],
  "normalizer": {"type": "Sequence", "normalizers": [
    {"type": "Prepend", "prepend": "▁"}, {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]},
  "pre_tokenizer": null,
  "post_processor": {"type": "TemplateProcessing",
    "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
    "pair": [], "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
  "decoder": {"type": "Sequence", "decoders": [
    {"type": "Replace", "pattern": {"String": "▁"}, "content": " "}, {"type": "ByteFallback"},
    {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
  "model": {"type": "BPE", "dropout": null, "unk_token": "<unk>", "continuing_subword_prefix": null,
    "end_of_word_suffix": null, "fuse_unk": true, "byte_fallback": true, "ignore_merges": false,
    "vocab": {"<unk>": 0, "<s>": 1, "</s>": 2, "<0xC3>": 3, "<0xA9>": 4, "▁": 5, "h": 6, "i": 7, "▁h": 8, "▁hi": 9},
    "merges": ["▁ h", "▁h i"]}
})";

void llama_style() {
  const Tokenizer t = Tokenizer::from_json(kLlamaStyle);
  CHECK(t.encode("hi hi", false) == (Ids{9, 9}));
  CHECK(t.encode("hi hi", true) == (Ids{1, 9, 9}));
  CHECK(t.encode("\xC3\xA9", false) == (Ids{5, 3, 4}));  // é: ▁, then its two bytes
  CHECK(t.encode("hxx", false) == (Ids{8, 0}));           // unknown x x fused into one <unk>
  CHECK(t.encode("<s>hi", false) == (Ids{1, 9}));         // <s> in the text is the special token
  CHECK(t.encode("", true) == (Ids{1}));
  CHECK(t.decode({1, 9, 9}, true) == "hi hi");
  CHECK(t.decode({1, 9, 9}, false) == "<s> hi hi");
  CHECK(t.decode({9, 3, 4}, false) == "hi\xC3\xA9");
  CHECK(t.decode({9, 3}, false) == "hi" + kFffd);          // a cut character: U+FFFD per byte
  CHECK(t.decode({9, 99}, false) == "hi");                 // an id beyond the vocab is left out
  CHECK(t.token_to_id("▁hi") == 9 && !t.token_to_id("zz"));
  CHECK(t.vocab_size() == 10);
}

// The error an unsupported tokenizer.json raises at load: its message and hint.
std::pair<std::string, std::string> load_error(const std::string& json) {
  try {
    Tokenizer::from_json(json);
  } catch (const edgecompress::Error& e) {
    return {e.what(), e.hint()};
  }
  return {};
}

std::string with(const std::string& key, const std::string& value) {
  std::string json = kLlamaStyle;
  const std::string field = "\"" + key + "\": ";
  const size_t start = json.find(field) + field.size();
  size_t depth = 0, end = start;
  do {  // the value: up to its matching brace, or to the comma of a null
    if (json[end] == '{') ++depth;
    if (json[end] == '}') --depth;
    ++end;
  } while (depth > 0 || (json[start] != '{' && json[end] != ','));
  return json.replace(start, end - start, value);
}

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

void refusals() {
  auto [message, hint] = load_error(with("model", R"({"type": "Unigram", "unk_id": 0, "vocab": [["a", 0.0]]})"));
  CHECK(message == "tokenizer (JSON text): model type Unigram is not supported by the C++ runtime");
  CHECK(contains(hint, "BPE") && contains(hint, "WordLevel"));

  std::tie(message, hint) = load_error(with("normalizer", R"({"type": "NFC"})"));
  CHECK(message == "tokenizer (JSON text): normalizer type NFC is not supported by the C++ runtime");
  CHECK(contains(hint, "Prepend"));

  std::tie(message, hint) = load_error(
      with("pre_tokenizer", R"({"type": "Split", "pattern": {"Regex": "\\d+"}, "behavior": "Isolated", "invert": false})"));
  CHECK(contains(message, "pre_tokenizer type Split with the regex \"\\\\d+\" is not supported by the C++ runtime"));
  CHECK(contains(hint, "Qwen2"));

  std::tie(message, hint) = load_error(with("decoder", R"({"type": "WordPiece", "prefix": "##", "cleanup": true})"));
  CHECK(contains(message, "decoder type WordPiece is not supported"));

  std::tie(message, hint) = load_error(with("truncation", R"({"max_length": 8, "strategy": "LongestFirst", "stride": 0, "direction": "Right"})"));
  CHECK(contains(message, "truncation is set"));

  std::tie(message, hint) = load_error("{not json");
  CHECK(contains(message, "is not valid JSON"));

  bool missing_file = false;
  try {
    Tokenizer::from_file("no-such-tokenizer.json");
  } catch (const edgecompress::Error& e) {
    missing_file = contains(e.what(), "no-such-tokenizer.json: cannot open the file");
  }
  CHECK(missing_file);
}

}  // namespace

int main() {
  unicode_tables();
  lossy_utf8();
  llama_style();
  refusals();
  if (failures()) std::fprintf(stderr, "%d check(s) failed\n", failures());
  return failures() ? 1 : 0;
}
