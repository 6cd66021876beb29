// What the pre-tokenizers split on: the regexes tokenizer.json files ship (hand-coded, since the
// C++ standard library has no regex engine with \p{..} classes), literal strings and single
// characters, with the split behaviours of the Python `tokenizers` library.
#pragma once

#include <cstddef>
#include <functional>
#include <string>
#include <vector>

#include "unicode.hpp"

namespace edgecompress::tokenizer {

// A byte range of a text and whether the pattern matched it.
struct Span {
  size_t start;
  size_t end;
  bool is_match;
};

// Where a pattern matches: given the text's code points (with the trailing sentinel of
// unicode::decode) and a start index, the index one past the match, or `start` for no match.
using Matcher = std::function<size_t(const std::vector<unicode::CodePoint>&, size_t)>;

// The matcher of a regex the runtime knows (by its exact source text), or an empty one.
Matcher known_regex(const std::string& pattern);
// \w+|[^\w\s]+ with the regex crate's \w: the Whitespace pre-tokenizer.
Matcher words_or_punctuation();
Matcher literal(const std::string& needle);
Matcher single_char(std::function<bool(char32_t)> predicate);

// The text cut into matches and the gaps between them, in order (empty text: one empty gap).
std::vector<Span> find_matches(const std::string& text, const Matcher& matcher);

enum class SplitBehavior { Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous };

// The byte ranges a split keeps, as NormalizedString::split makes them; empty ones included.
std::vector<Span> apply_behavior(std::vector<Span> matches, SplitBehavior behavior);

}  // namespace edgecompress::tokenizer
