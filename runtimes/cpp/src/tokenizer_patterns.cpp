#include "tokenizer_patterns.hpp"

#include <algorithm>

namespace edgecompress::tokenizer {
namespace {

using unicode::CodePoint;
using CodePoints = std::vector<CodePoint>;

const char kGpt2Pattern[] =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
const char kQwen2Pattern[] =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

bool is_letter(const CodePoint& c) { return unicode::is_letter(c.value); }
bool is_number(const CodePoint& c) { return unicode::is_number(c.value); }
bool is_space(const CodePoint& c) { return unicode::is_white_space(c.value); }
bool is_other(const CodePoint& c) { return !is_space(c) && !is_letter(c) && !is_number(c); }
bool is_line_break(const CodePoint& c) { return c.value == '\r' || c.value == '\n'; }

size_t count(const CodePoints& cps) { return cps.size() - 1; }  // less the sentinel

template <typename Pred>
size_t run_end(const CodePoints& cps, size_t i, Pred pred) {
  while (i < count(cps) && pred(cps[i])) ++i;
  return i;
}

// 's|'t|'re|'ve|'m|'ll|'d, case-sensitive or under (?i) with Oniguruma's case folding (where
// U+017F LONG S folds to s).
size_t contraction(const CodePoints& cps, size_t i, bool ignore_case) {
  if (cps[i].value != '\'' || i + 1 >= count(cps)) return i;
  const auto fold = [&](size_t k) -> char32_t {
    const char32_t c = cps[k].value;
    if (!ignore_case) return c;
    if (c >= 'A' && c <= 'Z') return c + ('a' - 'A');
    return c == 0x17F ? U's' : c;
  };
  const char32_t first = fold(i + 1);
  if (first == 's' || first == 't' || first == 'm' || first == 'd') return i + 2;
  if (i + 2 >= count(cps)) return i;
  const char32_t second = fold(i + 2);
  if ((first == 'r' && second == 'e') || (first == 'v' && second == 'e') || (first == 'l' && second == 'l'))
    return i + 3;
  return i;
}

// ` ?X+`: an optional space, then a run of X.
template <typename Pred>
size_t space_then_run(const CodePoints& cps, size_t i, Pred pred) {
  const size_t j = (cps[i].value == ' ' && i + 1 < count(cps) && pred(cps[i + 1])) ? i + 1 : i;
  return pred(cps[j]) ? run_end(cps, j, pred) : i;
}

// `\s+(?!\S)|\s+`: a whitespace run, less its last character when a non-space follows it
// (that one then leads the next piece), unless the run is a single character.
size_t whitespace_run(const CodePoints& cps, size_t i) {
  if (!is_space(cps[i])) return i;
  const size_t end = run_end(cps, i, is_space);
  return (end == count(cps) || end - i == 1) ? end : end - 1;
}

size_t gpt2(const CodePoints& cps, size_t i) {
  size_t end = contraction(cps, i, false);
  if (end == i) end = space_then_run(cps, i, is_letter);
  if (end == i) end = space_then_run(cps, i, is_number);
  if (end == i) end = space_then_run(cps, i, is_other);
  if (end == i) end = whitespace_run(cps, i);
  return end;
}

size_t qwen2(const CodePoints& cps, size_t i) {
  size_t end = contraction(cps, i, true);
  if (end != i) return end;
  // [^\r\n\p{L}\p{N}]?\p{L}+
  const CodePoint& c = cps[i];
  if (!is_line_break(c) && !is_letter(c) && !is_number(c) && i + 1 < count(cps) && is_letter(cps[i + 1]))
    return run_end(cps, i + 1, is_letter);
  if (is_letter(c)) return run_end(cps, i, is_letter);
  if (is_number(c)) return i + 1;
  // ` ?[^\s\p{L}\p{N}]+[\r\n]*`
  end = space_then_run(cps, i, is_other);
  if (end != i) return run_end(cps, end, is_line_break);
  if (!is_space(c)) return i;
  // `\s*[\r\n]+`: backtracking ends the match after the run's last line break.
  const size_t run = run_end(cps, i, is_space);
  for (size_t k = run; k > i; --k) {
    if (is_line_break(cps[k - 1])) return k;
  }
  return whitespace_run(cps, i);
}

}  // namespace

Matcher known_regex(const std::string& pattern) {
  if (pattern == kGpt2Pattern) return gpt2;
  if (pattern == kQwen2Pattern) return qwen2;
  return {};
}

Matcher words_or_punctuation() {
  return [](const CodePoints& cps, size_t i) {
    const auto word = [](const CodePoint& c) { return unicode::is_word(c.value); };
    const auto punctuation = [&](const CodePoint& c) { return !word(c) && !is_space(c); };
    if (word(cps[i])) return run_end(cps, i, word);
    if (punctuation(cps[i])) return run_end(cps, i, punctuation);
    return i;
  };
}

Matcher literal(const std::string& needle) {
  std::vector<char32_t> chars;
  for (const CodePoint& c : unicode::decode(needle)) chars.push_back(c.value);
  chars.pop_back();  // the sentinel
  return [chars](const CodePoints& cps, size_t i) {
    if (chars.empty() || i + chars.size() > count(cps)) return i;
    for (size_t k = 0; k < chars.size(); ++k)
      if (cps[i + k].value != chars[k]) return i;
    return i + chars.size();
  };
}

Matcher single_char(std::function<bool(char32_t)> predicate) {
  return [predicate](const CodePoints& cps, size_t i) { return predicate(cps[i].value) ? i + 1 : i; };
}

std::vector<Span> find_matches(const std::string& text, const Matcher& matcher) {
  if (text.empty()) return {{0, 0, false}};
  const CodePoints cps = unicode::decode(text);
  std::vector<Span> spans;
  size_t gap_start = 0;
  for (size_t i = 0; i < count(cps);) {
    const size_t end = matcher(cps, i);
    if (end == i) {
      ++i;
      continue;
    }
    if (gap_start != cps[i].offset) spans.push_back({gap_start, cps[i].offset, false});
    spans.push_back({cps[i].offset, cps[end].offset, true});
    gap_start = cps[end].offset;
    i = end;
  }
  if (gap_start != text.size()) spans.push_back({gap_start, text.size(), false});
  return spans;
}

std::vector<Span> apply_behavior(std::vector<Span> matches, SplitBehavior behavior) {
  std::vector<Span> out;
  bool previous_match = false;
  switch (behavior) {
    case SplitBehavior::Removed:
      for (const Span& s : matches)
        if (!s.is_match) out.push_back(s);
      return out;
    case SplitBehavior::Isolated:
      for (Span& s : matches) out.push_back({s.start, s.end, false});
      return out;
    case SplitBehavior::Contiguous:
      for (const Span& s : matches) {
        if (s.is_match == previous_match && !out.empty()) out.back().end = s.end;
        else out.push_back({s.start, s.end, false});
        previous_match = s.is_match;
      }
      return out;
    case SplitBehavior::MergedWithPrevious:
      for (const Span& s : matches) {
        if (s.is_match && !previous_match && !out.empty()) out.back().end = s.end;
        else out.push_back({s.start, s.end, false});
        previous_match = s.is_match;
      }
      return out;
    case SplitBehavior::MergedWithNext:
      for (auto it = matches.rbegin(); it != matches.rend(); ++it) {
        if (it->is_match && !previous_match && !out.empty()) out.back().start = it->start;
        else out.push_back({it->start, it->end, false});
        previous_match = it->is_match;
      }
      std::reverse(out.begin(), out.end());
      return out;
  }
  return out;
}

}  // namespace edgecompress::tokenizer
