#include "tokenizer_components.hpp"

#include <array>
#include <map>

#include "tokenizer_patterns.hpp"
#include "unicode.hpp"

namespace edgecompress::tokenizer {
namespace {

using nlohmann::json;

const char kReplacementChar[] = "\xEF\xBF\xBD";  // U+FFFD

std::string type_of(const json& config) { return config.value("type", std::string("(no type)")); }

bool flag(const json& config, const char* key, bool fallback) {
  const auto it = config.find(key);
  return it == config.end() || it->is_null() ? fallback : it->get<bool>();
}

// A one-character string field ("replacement", "content"), as a code point.
char32_t one_char(const json& config, const char* key) {
  const std::string s = config.at(key).get<std::string>();
  const auto cps = unicode::decode(s);
  if (cps.size() != 2) throw std::runtime_error(std::string(key) + " must be one character, not '" + s + "'");
  return cps[0].value;
}

std::string replace_all(const std::string& text, const std::string& from, const std::string& to) {
  if (from.empty()) return text;
  std::string out;
  size_t pos = 0;
  for (size_t hit; (hit = text.find(from, pos)) != std::string::npos; pos = hit + from.size()) {
    out.append(text, pos, hit - pos);
    out += to;
  }
  out.append(text, pos, std::string::npos);
  return out;
}

// Replace's pattern: {"String": "..."}; a {"Regex": ...} pattern is refused.
std::string replace_pattern(const json& config, const char* component) {
  const json& pattern = config.at("pattern");
  if (pattern.contains("String")) return pattern.at("String").get<std::string>();
  throw Unsupported(component, "Replace with a Regex pattern", "Replace with a String pattern");
}

std::vector<Piece> cut(const Piece& piece, const std::string& text, const std::vector<Span>& spans) {
  std::vector<Piece> out;
  out.reserve(spans.size());
  for (const Span& s : spans)
    out.push_back({text.substr(s.start, s.end - s.start), std::nullopt, piece.at_origin && s.start == 0});
  return out;
}

std::vector<Span> split_spans(const std::string& text, const Matcher& matcher, SplitBehavior behavior,
                              bool invert = false) {
  std::vector<Span> matches = find_matches(text, matcher);
  if (invert)
    for (Span& s : matches) s.is_match = !s.is_match;
  return apply_behavior(std::move(matches), behavior);
}

PreTokenizer splitter(Matcher matcher, SplitBehavior behavior, bool invert = false) {
  return [matcher, behavior, invert](std::vector<Piece>& pieces) {
    split_pieces(pieces, [&](const Piece& p) { return cut(p, p.text, split_spans(p.text, matcher, behavior, invert)); });
  };
}

SplitBehavior behavior_of(const std::string& name) {
  static const std::map<std::string, SplitBehavior> names = {
      {"Removed", SplitBehavior::Removed},
      {"Isolated", SplitBehavior::Isolated},
      {"MergedWithPrevious", SplitBehavior::MergedWithPrevious},
      {"MergedWithNext", SplitBehavior::MergedWithNext},
      {"Contiguous", SplitBehavior::Contiguous}};
  const auto it = names.find(name);
  if (it == names.end()) throw std::runtime_error("unknown split behavior '" + name + "'");
  return it->second;
}

// GPT-2's map of the 256 byte values to printable characters: the printable Latin-1 bytes map
// to themselves, the others to U+0100 onwards in byte order.
struct ByteChars {
  std::array<char32_t, 256> to_char{};
  std::array<int, 512> to_byte{};  // by code point; -1 where no byte maps there
  ByteChars() {
    to_byte.fill(-1);
    char32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      to_char[b] = printable ? static_cast<char32_t>(b) : next++;
      to_byte[to_char[b]] = b;
    }
  }
};
const ByteChars& byte_chars() {
  static const ByteChars table;
  return table;
}

// -- pre-tokenizers ---------------------------------------------------------------------------

const char kPreTokenizers[] = "ByteLevel, Metaspace, Split (a String, or the GPT-2 or Qwen2 regex), "
                              "Whitespace, WhitespaceSplit, Digits, Sequence";

PreTokenizer byte_level_pre_tokenizer(const json& config) {
  const bool add_prefix_space = flag(config, "add_prefix_space", true);
  const bool use_regex = flag(config, "use_regex", true);
  const Matcher gpt2 = known_regex(R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)");
  return [=](std::vector<Piece>& pieces) {
    split_pieces(pieces, [&](const Piece& p) {
      const std::string text = (add_prefix_space && p.text[0] != ' ') ? " " + p.text : p.text;
      if (!use_regex) return std::vector<Piece>{{text, std::nullopt, p.at_origin}};
      return cut(p, text, split_spans(text, gpt2, SplitBehavior::Isolated));
    });
    for (Piece& p : pieces) {
      if (p.added_id) continue;
      std::string mapped;
      for (unsigned char b : p.text) unicode::append(mapped, byte_chars().to_char[b]);
      p.text = std::move(mapped);
    }
  };
}

// prepend_scheme, with the older add_prefix_space flag (false means "never").
enum class Prepend { Always, First, Never };
Prepend prepend_scheme(const json& config) {
  const std::string scheme = config.value("prepend_scheme", std::string("always"));
  if (!flag(config, "add_prefix_space", true)) return Prepend::Never;
  if (scheme == "first") return Prepend::First;
  if (scheme == "never") return Prepend::Never;
  if (scheme == "always") return Prepend::Always;
  throw std::runtime_error("unknown Metaspace prepend_scheme '" + scheme + "'");
}

PreTokenizer metaspace_pre_tokenizer(const json& config) {
  const char32_t replacement = one_char(config, "replacement");
  std::string rep;
  unicode::append(rep, replacement);
  const Prepend scheme = prepend_scheme(config);
  const bool split = flag(config, "split", true);
  const Matcher is_replacement = single_char([replacement](char32_t c) { return c == replacement; });
  return [=](std::vector<Piece>& pieces) {
    split_pieces(pieces, [&](const Piece& p) {
      std::string text = replace_all(p.text, " ", rep);
      const bool starts = text.compare(0, rep.size(), rep) == 0;
      if (!starts && (scheme == Prepend::Always || (scheme == Prepend::First && p.at_origin))) text = rep + text;
      if (!split) return std::vector<Piece>{{text, std::nullopt, p.at_origin}};
      return cut(p, text, split_spans(text, is_replacement, SplitBehavior::MergedWithNext));
    });
  };
}

PreTokenizer split_pre_tokenizer(const json& config) {
  const json& pattern = config.at("pattern");
  Matcher matcher;
  if (pattern.contains("String")) {
    matcher = literal(pattern.at("String").get<std::string>());
  } else {
    const std::string regex = pattern.at("Regex").get<std::string>();
    matcher = known_regex(regex);
    if (!matcher)
      throw Unsupported("pre_tokenizer", "Split with the regex " + json(regex).dump(),
                        "Split with a String pattern or with the GPT-2 or Qwen2 regex (the runtime "
                        "hand-codes the regexes it knows)");
  }
  return splitter(matcher, behavior_of(config.at("behavior").get<std::string>()), flag(config, "invert", false));
}

// -- normalizers ------------------------------------------------------------------------------

const char kNormalizers[] = "Sequence, Prepend, Replace (String pattern), Strip";

Normalizer strip_normalizer(const json& config) {
  const bool left = flag(config, "strip_left", false);
  const bool right = flag(config, "strip_right", false);
  return [=](std::string& text) {
    const auto cps = unicode::decode(text);
    size_t first = 0, last = cps.size() - 1;
    if (left)
      while (first < last && unicode::is_white_space(cps[first].value)) ++first;
    if (right)
      while (last > first && unicode::is_white_space(cps[last - 1].value)) --last;
    text = text.substr(cps[first].offset, cps[last].offset - cps[first].offset);
  };
}

// -- decoders ---------------------------------------------------------------------------------

const char kDecoders[] = "ByteLevel, Metaspace, ByteFallback, Fuse, Strip, Replace (String pattern), Sequence";

std::vector<std::string> byte_level_decode(std::vector<std::string> tokens) {
  std::string bytes;
  for (const std::string& token : tokens) {
    std::string token_bytes;
    bool mapped = true;
    for (const auto& cp : unicode::decode(token)) {
      if (cp.offset == token.size()) break;  // sentinel
      const int b = cp.value < 512 ? byte_chars().to_byte[cp.value] : -1;
      if (b < 0) {
        mapped = false;
        break;
      }
      token_bytes += static_cast<char>(b);
    }
    // A token with a character outside the byte map (an added token) stands for its own bytes.
    bytes += mapped ? token_bytes : token;
  }
  return {unicode::from_utf8_lossy(bytes)};
}

// <0xNN> as u8::from_str_radix reads the two characters (which takes a leading '+').
std::optional<unsigned char> byte_token(const std::string& token) {
  if (token.size() != 6 || token.compare(0, 3, "<0x") != 0 || token[5] != '>') return std::nullopt;
  const auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  const int low = hex(token[4]);
  if (low < 0) return std::nullopt;
  if (token[3] == '+') return static_cast<unsigned char>(low);
  const int high = hex(token[3]);
  if (high < 0) return std::nullopt;
  return static_cast<unsigned char>(high * 16 + low);
}

// Runs of <0xNN> tokens become their text when the bytes are valid UTF-8, else one U+FFFD per
// byte (not a lossy conversion: that is how the Rust decoder does it).
std::vector<std::string> byte_fallback_decode(std::vector<std::string> tokens) {
  std::vector<std::string> out;
  std::string pending;
  const auto flush = [&] {
    if (pending.empty()) return;
    if (unicode::is_valid(pending)) {
      out.push_back(pending);
    } else {
      for (size_t i = 0; i < pending.size(); ++i) out.push_back(kReplacementChar);
    }
    pending.clear();
  };
  for (std::string& token : tokens) {
    if (const auto b = byte_token(token)) {
      pending += static_cast<char>(*b);
    } else {
      flush();
      out.push_back(std::move(token));
    }
  }
  flush();
  return out;
}

Decoder metaspace_decoder(const json& config) {
  const char32_t replacement = one_char(config, "replacement");
  const bool drop_in_first = prepend_scheme(config) != Prepend::Never;
  return [=](std::vector<std::string> tokens) {
    for (size_t i = 0; i < tokens.size(); ++i) {
      std::string out;
      for (const auto& cp : unicode::decode(tokens[i])) {
        if (cp.offset == tokens[i].size()) break;
        if (cp.value != replacement) unicode::append(out, cp.value);
        else if (!(i == 0 && drop_in_first)) out += ' ';  // the first token loses every replacement
      }
      tokens[i] = std::move(out);
    }
    return tokens;
  };
}

Decoder strip_decoder(const json& config) {
  const char32_t content = one_char(config, "content");
  const size_t start = config.at("start").get<size_t>();
  const size_t stop = config.at("stop").get<size_t>();
  return [=](std::vector<std::string> tokens) {
    for (std::string& token : tokens) {
      const auto cps = unicode::decode(token);
      const size_t n = cps.size() - 1;
      size_t first = 0, last = n;
      while (first < std::min(start, n) && cps[first].value == content) ++first;
      while (n - last < stop && last > first && cps[last - 1].value == content) --last;
      token = token.substr(cps[first].offset, cps[last].offset - cps[first].offset);
    }
    return tokens;
  };
}

// -- post-processors --------------------------------------------------------------------------

const char kPostProcessors[] = "TemplateProcessing, ByteLevel, BertProcessing, RobertaProcessing, Sequence";

PostProcessor template_processing(const json& config) {
  std::map<std::string, std::vector<uint32_t>> special;
  for (const auto& [name, token] : config.at("special_tokens").items())
    special[name] = token.at("ids").get<std::vector<uint32_t>>();
  // The single-sequence template: each entry is the sequence (empty) or a special token's ids.
  std::vector<std::optional<std::vector<uint32_t>>> pieces;
  for (const json& piece : config.at("single")) {
    if (piece.contains("Sequence")) {
      pieces.emplace_back();
    } else {
      const std::string id = piece.at("SpecialToken").at("id").get<std::string>();
      if (!special.count(id)) throw std::runtime_error("TemplateProcessing: no special token '" + id + "'");
      pieces.emplace_back(special.at(id));
    }
  }
  return [pieces](std::vector<uint32_t>& ids, bool add_special_tokens) {
    if (!add_special_tokens) return;
    std::vector<uint32_t> out;
    for (const auto& piece : pieces) {
      const std::vector<uint32_t>& part = piece ? *piece : ids;
      out.insert(out.end(), part.begin(), part.end());
    }
    ids = std::move(out);
  };
}

// BertProcessing and RobertaProcessing: cls, the sequence, sep.
PostProcessor surround(const json& config) {
  const uint32_t cls = config.at("cls").at(1).get<uint32_t>();
  const uint32_t sep = config.at("sep").at(1).get<uint32_t>();
  return [cls, sep](std::vector<uint32_t>& ids, bool add_special_tokens) {
    if (!add_special_tokens) return;
    ids.insert(ids.begin(), cls);
    ids.push_back(sep);
  };
}

template <typename Stage>
std::vector<Stage> load_all(const json& configs, Stage (*load)(const json&)) {
  std::vector<Stage> stages;
  for (const json& config : configs) {
    if (Stage stage = load(config)) stages.push_back(std::move(stage));
  }
  return stages;
}

}  // namespace

void split_pieces(std::vector<Piece>& pieces, const std::function<std::vector<Piece>(const Piece&)>& split) {
  std::vector<Piece> out;
  out.reserve(pieces.size());
  for (Piece& piece : pieces) {
    if (piece.added_id) {
      out.push_back(std::move(piece));
      continue;
    }
    for (Piece& part : split(piece))
      if (!part.text.empty()) out.push_back(std::move(part));
  }
  pieces = std::move(out);
}

Normalizer load_normalizer(const json& config) {
  if (config.is_null()) return {};
  const std::string type = type_of(config);
  if (type == "Sequence") {
    auto stages = load_all<Normalizer>(config.at("normalizers"), load_normalizer);
    return [stages](std::string& text) {
      for (const Normalizer& stage : stages) stage(text);
    };
  }
  if (type == "Prepend") {
    const std::string prefix = config.at("prepend").get<std::string>();
    return [prefix](std::string& text) {
      if (!text.empty()) text = prefix + text;
    };
  }
  if (type == "Replace") {
    const std::string from = replace_pattern(config, "normalizer");
    const std::string to = config.at("content").get<std::string>();
    return [from, to](std::string& text) { text = replace_all(text, from, to); };
  }
  if (type == "Strip") return strip_normalizer(config);
  throw Unsupported("normalizer", type, kNormalizers);
}

PreTokenizer load_pre_tokenizer(const json& config) {
  if (config.is_null()) return {};
  const std::string type = type_of(config);
  if (type == "Sequence") {
    auto stages = load_all<PreTokenizer>(config.at("pretokenizers"), load_pre_tokenizer);
    return [stages](std::vector<Piece>& pieces) {
      for (const PreTokenizer& stage : stages) stage(pieces);
    };
  }
  if (type == "ByteLevel") return byte_level_pre_tokenizer(config);
  if (type == "Metaspace") return metaspace_pre_tokenizer(config);
  if (type == "Split") return split_pre_tokenizer(config);
  if (type == "Whitespace") return splitter(words_or_punctuation(), SplitBehavior::Removed, true);
  if (type == "WhitespaceSplit") return splitter(single_char(unicode::is_white_space), SplitBehavior::Removed);
  if (type == "Digits") {
    const bool individual = flag(config, "individual_digits", false);
    return splitter(single_char(unicode::is_number), individual ? SplitBehavior::Isolated : SplitBehavior::Contiguous);
  }
  throw Unsupported("pre_tokenizer", type, kPreTokenizers);
}

PostProcessor load_post_processor(const json& config) {
  if (config.is_null()) return {};
  const std::string type = type_of(config);
  if (type == "Sequence") {
    auto stages = load_all<PostProcessor>(config.at("processors"), load_post_processor);
    return [stages](std::vector<uint32_t>& ids, bool add_special_tokens) {
      for (const PostProcessor& stage : stages) stage(ids, add_special_tokens);
    };
  }
  if (type == "TemplateProcessing") return template_processing(config);
  if (type == "ByteLevel") return [](std::vector<uint32_t>&, bool) {};  // it only trims offsets
  if (type == "BertProcessing" || type == "RobertaProcessing") return surround(config);
  throw Unsupported("post_processor", type, kPostProcessors);
}

Decoder load_decoder(const json& config) {
  if (config.is_null()) return {};
  const std::string type = type_of(config);
  if (type == "Sequence") {
    auto stages = load_all<Decoder>(config.at("decoders"), load_decoder);
    return [stages](std::vector<std::string> tokens) {
      for (const Decoder& stage : stages) tokens = stage(std::move(tokens));
      return tokens;
    };
  }
  if (type == "ByteLevel") return byte_level_decode;
  if (type == "ByteFallback") return byte_fallback_decode;
  if (type == "Metaspace") return metaspace_decoder(config);
  if (type == "Strip") return strip_decoder(config);
  if (type == "Fuse") {
    return [](std::vector<std::string> tokens) {
      std::string joined;
      for (const std::string& t : tokens) joined += t;
      return std::vector<std::string>{joined};
    };
  }
  if (type == "Replace") {
    const std::string from = replace_pattern(config, "decoder");
    const std::string to = config.at("content").get<std::string>();
    return [from, to](std::vector<std::string> tokens) {
      for (std::string& t : tokens) t = replace_all(t, from, to);
      return tokens;
    };
  }
  throw Unsupported("decoder", type, kDecoders);
}

}  // namespace edgecompress::tokenizer
