// Code point classes and UTF-8 conversions the tokenizer needs, with the meaning the Python
// `tokenizers` library (Rust: Oniguruma, the regex crate, std) gives them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace edgecompress::unicode {

struct Range {
  char32_t first;
  char32_t last;
};

// Generated tables (unicode_tables.cpp, tools/gen_unicode.py): sorted, disjoint ranges.
extern const Range kLetter[];
extern const size_t kLetterSize;
extern const Range kNumber[];
extern const size_t kNumberSize;
extern const Range kWhiteSpace[];
extern const size_t kWhiteSpaceSize;
extern const Range kWord[];
extern const size_t kWordSize;
extern const char kUnicodeVersion[];

bool is_letter(char32_t c);       // \p{L}
bool is_number(char32_t c);       // \p{N}
bool is_white_space(char32_t c);  // \s, char::is_whitespace (White_Space)
bool is_word(char32_t c);         // \w of Rust's regex crate

// A code point of valid UTF-8 text and where it starts.
struct CodePoint {
  char32_t value;
  size_t offset;  // byte offset in the text
};

// The code points of `text`, which must be valid UTF-8 (throws std::invalid_argument otherwise);
// the result ends with a sentinel {0, text.size()} so a code point's end is the next one's offset.
std::vector<CodePoint> decode(const std::string& text);
bool is_valid(const std::string& bytes);
void append(std::string& out, char32_t c);

// Bytes to text as Rust's String::from_utf8_lossy: each maximal invalid subpart of a sequence
// (a byte that cannot start one, or a truncated sequence) becomes one U+FFFD.
std::string from_utf8_lossy(const std::string& bytes);

}  // namespace edgecompress::unicode
