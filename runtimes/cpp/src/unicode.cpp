#include "unicode.hpp"

#include <algorithm>
#include <stdexcept>

namespace edgecompress::unicode {
namespace {

bool in_table(const Range* table, size_t size, char32_t c) {
  const Range* end = table + size;
  const Range* it = std::upper_bound(table, end, c, [](char32_t v, const Range& r) { return v < r.first; });
  return it != table && c <= (it - 1)->last;
}

// How many bytes a valid sequence starting with `lead` has, and the range its second byte must
// fall in (the first continuation byte is where overlong forms and surrogates are excluded).
struct Lead {
  int length;  // 0: the byte cannot start a sequence
  unsigned char second_min, second_max;
};

Lead classify_lead(unsigned char b) {
  if (b < 0x80) return {1, 0, 0};
  if (b >= 0xC2 && b <= 0xDF) return {2, 0x80, 0xBF};
  if (b == 0xE0) return {3, 0xA0, 0xBF};
  if (b == 0xED) return {3, 0x80, 0x9F};
  if (b >= 0xE1 && b <= 0xEF) return {3, 0x80, 0xBF};
  if (b == 0xF0) return {4, 0x90, 0xBF};
  if (b >= 0xF1 && b <= 0xF3) return {4, 0x80, 0xBF};
  if (b == 0xF4) return {4, 0x80, 0x8F};
  return {0, 0, 0};
}

// The length of the valid sequence at `pos`, or -(the length of its maximal invalid subpart).
int sequence_length(const std::string& bytes, size_t pos) {
  const auto at = [&](size_t i) { return static_cast<unsigned char>(bytes[i]); };
  const Lead lead = classify_lead(at(pos));
  if (lead.length == 0) return -1;
  for (int k = 1; k < lead.length; ++k) {
    if (pos + k >= bytes.size()) return -k;
    const unsigned char b = at(pos + k);
    const bool ok = k == 1 ? (b >= lead.second_min && b <= lead.second_max) : (b >= 0x80 && b <= 0xBF);
    if (!ok) return -k;
  }
  return lead.length;
}

}  // namespace

bool is_letter(char32_t c) { return in_table(kLetter, kLetterSize, c); }
bool is_number(char32_t c) { return in_table(kNumber, kNumberSize, c); }
bool is_white_space(char32_t c) { return in_table(kWhiteSpace, kWhiteSpaceSize, c); }
bool is_word(char32_t c) { return in_table(kWord, kWordSize, c); }

std::vector<CodePoint> decode(const std::string& text) {
  std::vector<CodePoint> out;
  out.reserve(text.size() + 1);
  for (size_t pos = 0; pos < text.size();) {
    const int length = sequence_length(text, pos);
    if (length < 0) throw std::invalid_argument("invalid UTF-8 at byte " + std::to_string(pos));
    const unsigned char lead = static_cast<unsigned char>(text[pos]);
    char32_t c = length == 1 ? lead : lead & (0x7F >> length);
    for (int k = 1; k < length; ++k) c = (c << 6) | (static_cast<unsigned char>(text[pos + k]) & 0x3F);
    out.push_back({c, pos});
    pos += length;
  }
  out.push_back({0, text.size()});
  return out;
}

bool is_valid(const std::string& bytes) {
  for (size_t pos = 0; pos < bytes.size();) {
    const int length = sequence_length(bytes, pos);
    if (length < 0) return false;
    pos += length;
  }
  return true;
}

void append(std::string& out, char32_t c) {
  if (c < 0x80) {
    out += static_cast<char>(c);
  } else if (c < 0x800) {
    out += static_cast<char>(0xC0 | (c >> 6));
    out += static_cast<char>(0x80 | (c & 0x3F));
  } else if (c < 0x10000) {
    out += static_cast<char>(0xE0 | (c >> 12));
    out += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (c & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (c >> 18));
    out += static_cast<char>(0x80 | ((c >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (c & 0x3F));
  }
}

std::string from_utf8_lossy(const std::string& bytes) {
  std::string out;
  out.reserve(bytes.size());
  for (size_t pos = 0; pos < bytes.size();) {
    const int length = sequence_length(bytes, pos);
    if (length > 0) {
      out.append(bytes, pos, length);
      pos += length;
    } else {
      out += "\xEF\xBF\xBD";  // U+FFFD
      pos += -length;
    }
  }
  return out;
}

}  // namespace edgecompress::unicode
