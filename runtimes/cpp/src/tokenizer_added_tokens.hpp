// The added tokens of a tokenizer.json (special or not): found in the text before the model
// sees it, with the ids, matching rules and decoding of the Python library's AddedVocabulary.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include <nlohmann/json.hpp>

#include "tokenizer_components.hpp"
#include "tokenizer_models.hpp"

namespace edgecompress::tokenizer {

class AddedTokens {
 public:
  AddedTokens() = default;
  // Assigns ids as the library does when it loads the file: the model's id for a token in its
  // vocab, else the next id from the model's vocab size on (the file's "id" is not read).
  AddedTokens(const nlohmann::json& added_tokens, const Model& model, const Normalizer& normalizer);

  // Cuts the text pieces at the added tokens: those matched on the raw text, then (after
  // `normalizer` ran on each remaining piece) those matched on the normalized text.
  void extract(std::vector<Piece>& pieces, const Normalizer& normalizer) const;

  std::optional<uint32_t> token_to_id(const std::string& token) const;
  // The token's text as decoding sees it (its normalized form when it is matched normalized).
  const std::string* id_to_token(uint32_t id) const;
  bool is_special(const std::string& token) const { return special_.count(token) != 0; }
  // Added tokens whose text the model's vocab lacks.
  size_t count_beyond(const Model& model) const;

 private:
  struct Token {
    std::string content;
    bool single_word, lstrip, rstrip, normalized, special;
    bool operator==(const Token& o) const;
  };
  // Leftmost-longest matching of a set of strings (the Rust side uses an Aho-Corasick automaton).
  class Matcher {
   public:
    void add(const std::string& pattern, uint32_t id);
    bool empty() const { return count_ == 0; }
    struct Match {
      size_t start, end;
      uint32_t id;
    };
    std::vector<Match> find_all(const std::string& text) const;

   private:
    std::vector<std::pair<std::string, uint32_t>> by_first_byte_[256];  // longest first
    size_t count_ = 0;
  };
  std::vector<Piece> split(const Piece& piece, const Matcher& matcher) const;

  std::unordered_map<std::string, uint32_t> ids_;
  std::unordered_map<uint32_t, Token> tokens_;
  std::unordered_map<uint32_t, std::string> normalized_;  // where normalizing changes the content
  std::unordered_set<std::string> special_;
  Matcher raw_;         // tokens with normalized false
  Matcher normalized_matcher_;
};

}  // namespace edgecompress::tokenizer
