#include "tokenizer_added_tokens.hpp"

#include <algorithm>

#include "unicode.hpp"

namespace edgecompress::tokenizer {
namespace {

bool is_continuation(char byte) { return (static_cast<unsigned char>(byte) & 0xC0) == 0x80; }

// Where the code point after the one at byte `pos` starts.
size_t next_start(const std::string& text, size_t pos) {
  do ++pos;
  while (pos < text.size() && is_continuation(text[pos]));
  return pos;
}

// Where the code point that ends at byte `pos` starts.
size_t previous_start(const std::string& text, size_t pos) {
  do --pos;
  while (pos > 0 && is_continuation(text[pos]));
  return pos;
}

char32_t code_point_at(const std::string& text, size_t pos) {
  return unicode::decode(text.substr(pos, next_start(text, pos) - pos))[0].value;
}

// \w$ on the text before `pos` and ^\w on the text from `pos` (the regex crate's \w).
bool word_before(const std::string& text, size_t pos) {
  return pos > 0 && unicode::is_word(code_point_at(text, previous_start(text, pos)));
}
bool word_after(const std::string& text, size_t pos) {
  return pos < text.size() && unicode::is_word(code_point_at(text, pos));
}

// Where the whitespace run that ends at `pos` begins (\s*$ on the text before `pos`).
size_t space_start_before(const std::string& text, size_t pos) {
  while (pos > 0) {
    const size_t prev = previous_start(text, pos);
    if (!unicode::is_white_space(code_point_at(text, prev))) break;
    pos = prev;
  }
  return pos;
}

// Where the whitespace run that starts at `pos` ends (^\s* on the text from `pos`).
size_t space_end_after(const std::string& text, size_t pos) {
  while (pos < text.size() && unicode::is_white_space(code_point_at(text, pos))) pos = next_start(text, pos);
  return pos;
}

}  // namespace

bool AddedTokens::Token::operator==(const Token& o) const {
  return content == o.content && single_word == o.single_word && lstrip == o.lstrip && rstrip == o.rstrip &&
         normalized == o.normalized && special == o.special;
}

AddedTokens::AddedTokens(const nlohmann::json& added_tokens, const Model& model, const Normalizer& normalizer) {
  uint32_t next_id = static_cast<uint32_t>(model.vocab_size());
  for (const nlohmann::json& entry : added_tokens) {
    const bool special = entry.value("special", false);
    Token token{entry.at("content").get<std::string>(), entry.value("single_word", false),
                entry.value("lstrip", false), entry.value("rstrip", false), entry.value("normalized", !special),
                special};
    if (token.content.empty()) continue;
    const auto known = ids_.find(token.content);
    if (known != ids_.end() && tokens_.at(known->second) == token) continue;
    uint32_t id;
    if (known != ids_.end()) id = known->second;
    else if (const auto model_id = model.token_to_id(token.content)) id = *model_id;
    else id = next_id++;
    if (token.normalized && normalizer) {
      std::string normed = token.content;
      normalizer(normed);
      if (normed != token.content) normalized_[id] = normed;
    }
    ids_[token.content] = id;
    if (token.special) special_.insert(token.content);
    tokens_[id] = std::move(token);
  }
  for (const auto& [id, token] : tokens_) {
    if (!token.normalized) {
      raw_.add(token.content, id);
    } else {
      const auto normed = normalized_.find(id);
      normalized_matcher_.add(normed == normalized_.end() ? token.content : normed->second, id);
    }
  }
}

void AddedTokens::Matcher::add(const std::string& pattern, uint32_t id) {
  auto& bucket = by_first_byte_[static_cast<unsigned char>(pattern[0])];
  bucket.emplace_back(pattern, id);
  std::stable_sort(bucket.begin(), bucket.end(),
                   [](const auto& a, const auto& b) { return a.first.size() > b.first.size(); });
  ++count_;
}

std::vector<AddedTokens::Matcher::Match> AddedTokens::Matcher::find_all(const std::string& text) const {
  std::vector<Match> matches;
  for (size_t pos = 0; pos < text.size();) {
    size_t end = pos;
    for (const auto& [pattern, id] : by_first_byte_[static_cast<unsigned char>(text[pos])]) {
      if (text.compare(pos, pattern.size(), pattern) == 0) {
        matches.push_back({pos, pos + pattern.size(), id});
        end = pos + pattern.size();
        break;  // the bucket is sorted longest first
      }
    }
    pos = end == pos ? pos + 1 : end;
  }
  return matches;
}

// The library's find_matches: a single_word token needs non-word characters (or the text's
// ends) around it; lstrip and rstrip take the whitespace beside it into the token.
std::vector<Piece> AddedTokens::split(const Piece& piece, const Matcher& matcher) const {
  const std::string& text = piece.text;
  std::vector<Piece> out;
  const auto gap = [&](size_t start, size_t end) {
    out.push_back({text.substr(start, end - start), std::nullopt, piece.at_origin && start == 0});
  };
  size_t done = 0;
  for (const Matcher::Match& m : matcher.find_all(text)) {
    const Token& token = tokens_.at(m.id);
    size_t start = m.start, stop = m.end;
    if (token.single_word && (word_before(text, start) || word_after(text, stop))) continue;
    if (token.lstrip) start = std::max(space_start_before(text, start), done);
    if (token.rstrip) stop = space_end_after(text, stop);
    if (done < start) gap(done, start);
    out.push_back({text.substr(start, stop - start), m.id, false});
    done = stop;
  }
  if (done != text.size()) gap(done, text.size());
  return out;
}

void AddedTokens::extract(std::vector<Piece>& pieces, const Normalizer& normalizer) const {
  if (!raw_.empty()) split_pieces(pieces, [&](const Piece& p) { return split(p, raw_); });
  split_pieces(pieces, [&](const Piece& p) {
    Piece normalized = p;
    if (normalizer) normalizer(normalized.text);
    if (normalized_matcher_.empty()) return std::vector<Piece>{normalized};
    return split(normalized, normalized_matcher_);
  });
}

std::optional<uint32_t> AddedTokens::token_to_id(const std::string& token) const {
  const auto it = ids_.find(token);
  if (it == ids_.end()) return std::nullopt;
  return it->second;
}

const std::string* AddedTokens::id_to_token(uint32_t id) const {
  if (const auto normed = normalized_.find(id); normed != normalized_.end()) return &normed->second;
  const auto it = tokens_.find(id);
  return it == tokens_.end() ? nullptr : &it->second.content;
}

size_t AddedTokens::count_beyond(const Model& model) const {
  size_t count = 0;
  for (const auto& [content, id] : ids_) count += model.token_to_id(content) ? 0 : 1;
  return count;
}

}  // namespace edgecompress::tokenizer
