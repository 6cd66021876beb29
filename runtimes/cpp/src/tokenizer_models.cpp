#include "tokenizer_models.hpp"

#include <cstdio>
#include <queue>
#include <stdexcept>

#include "unicode.hpp"

namespace edgecompress::tokenizer {
namespace {

using nlohmann::json;

std::optional<std::string> optional_string(const json& object, const char* key) {
  const auto it = object.find(key);
  if (it == object.end() || it->is_null()) return std::nullopt;
  return it->get<std::string>();
}

bool flag(const json& object, const char* key) {
  const auto it = object.find(key);
  return it != object.end() && !it->is_null() && it->get<bool>();
}

class WordLevel final : public Model {
 public:
  explicit WordLevel(const json& model) {
    set_vocab(model.at("vocab"));
    unk_token_ = optional_string(model, "unk_token").value_or("");
  }

  void tokenize(const std::string& piece, std::vector<uint32_t>& out) const override {
    if (const auto id = token_to_id(piece)) {
      out.push_back(*id);
    } else if (const auto unk = token_to_id(unk_token_)) {
      out.push_back(*unk);
    } else {
      throw std::runtime_error("WordLevel: unk token '" + unk_token_ + "' is not in the vocab");
    }
  }

 private:
  std::string unk_token_;
};

class Bpe final : public Model {
 public:
  explicit Bpe(const json& model);
  void tokenize(const std::string& piece, std::vector<uint32_t>& out) const override;

 private:
  struct Merge {
    uint32_t rank;
    uint32_t new_id;
  };
  // One symbol of a word being merged: a doubly linked list over a vector, as the Rust model.
  struct Symbol {
    uint32_t id;
    int prev;
    int next;
    size_t byte_len;  // 0 once merged into its left neighbour
  };
  static uint64_t key(uint32_t a, uint32_t b) { return (uint64_t{a} << 32) | b; }
  const Merge* find_merge(uint32_t a, uint32_t b) const {
    const auto it = merges_.find(key(a, b));
    return it == merges_.end() ? nullptr : &it->second;
  }
  uint32_t unk_id() const;
  std::vector<Symbol> initial_symbols(const std::string& piece) const;
  void merge_all(std::vector<Symbol>& symbols) const;

  std::unordered_map<uint64_t, Merge> merges_;
  std::optional<std::string> unk_token_;
  std::string prefix_;  // continuing_subword_prefix
  std::string suffix_;  // end_of_word_suffix
  bool fuse_unk_;
  bool byte_fallback_;
  bool ignore_merges_;
};

Bpe::Bpe(const json& model)
    : unk_token_(optional_string(model, "unk_token")),
      prefix_(optional_string(model, "continuing_subword_prefix").value_or("")),
      suffix_(optional_string(model, "end_of_word_suffix").value_or("")),
      fuse_unk_(flag(model, "fuse_unk")),
      byte_fallback_(flag(model, "byte_fallback")),
      ignore_merges_(flag(model, "ignore_merges")) {
  const auto dropout = model.find("dropout");
  if (dropout != model.end() && !dropout->is_null() && dropout->get<double>() > 0.0)
    throw std::runtime_error("BPE dropout is random: it is not supported (set it to null)");
  set_vocab(model.at("vocab"));
  const json& merges = model.at("merges");
  uint32_t rank = 0;
  for (const json& merge : merges) {
    std::string a, b;
    if (merge.is_array()) {
      a = merge.at(0).get<std::string>();
      b = merge.at(1).get<std::string>();
    } else {
      const std::string line = merge.get<std::string>();
      if (line.rfind("#version", 0) == 0) continue;
      const size_t space = line.find(' ');
      if (space == std::string::npos || line.find(' ', space + 1) != std::string::npos)
        throw std::runtime_error("BPE merge " + std::to_string(rank + 1) + " is not two tokens: '" + line + "'");
      a = line.substr(0, space);
      b = line.substr(space + 1);
    }
    // The merged token drops the right part's subword prefix ("##").
    const std::string merged = a + b.substr(std::min(prefix_.size(), b.size()));
    for (const std::string& token : {a, b, merged}) {
      if (!vocab_.count(token)) throw std::runtime_error("BPE merge token '" + token + "' is not in the vocab");
    }
    // A repeated pair keeps its last rank, as the Rust map collects them.
    merges_[key(vocab_.at(a), vocab_.at(b))] = {rank, vocab_.at(merged)};
    ++rank;
  }
}

uint32_t Bpe::unk_id() const {
  const auto id = token_to_id(*unk_token_);
  if (!id) throw std::runtime_error("BPE: unk token '" + *unk_token_ + "' is not in the vocab");
  return *id;
}

// One symbol per character (its vocab id), else its bytes' <0xNN> tokens (byte_fallback), else
// the unk token, runs of unknown characters fused into one when fuse_unk. The order of what is
// added follows the Rust model, which leaves a pending unk behind byte-fallback tokens.
std::vector<Bpe::Symbol> Bpe::initial_symbols(const std::string& piece) const {
  std::vector<Symbol> symbols;
  const auto add = [&](uint32_t id, size_t byte_len) {
    const int index = static_cast<int>(symbols.size());
    symbols.push_back({id, index - 1, index + 1, byte_len});
  };
  struct {
    bool pending = false;
    uint32_t id = 0;
    size_t byte_len = 0;
  } unk;  // unknown characters not added yet
  const std::vector<unicode::CodePoint> cps = unicode::decode(piece);
  for (size_t i = 0; i + 1 < cps.size(); ++i) {
    const size_t byte_len = cps[i + 1].offset - cps[i].offset;
    std::string s = piece.substr(cps[i].offset, byte_len);
    if (i > 0) s = prefix_ + s;
    if (i + 2 == cps.size()) s += suffix_;
    if (const auto id = token_to_id(s)) {
      if (unk.pending) add(unk.id, unk.byte_len);
      unk.pending = false;
      add(*id, byte_len);
      continue;
    }
    if (byte_fallback_) {
      std::vector<uint32_t> bytes;
      for (unsigned char b : s) {
        char code[8];
        std::snprintf(code, sizeof code, "<0x%02X>", b);
        const auto id = token_to_id(code);
        if (!id) break;
        bytes.push_back(*id);
      }
      if (bytes.size() == s.size()) {
        for (uint32_t id : bytes) add(id, 1);
        continue;
      }
    }
    if (!unk_token_) continue;
    if (unk.pending && fuse_unk_) {
      unk.byte_len += byte_len;
    } else {
      if (unk.pending) add(unk.id, unk.byte_len);
      unk = {true, unk_id(), byte_len};
    }
  }
  if (unk.pending) add(unk.id, unk.byte_len);
  if (!symbols.empty()) symbols.back().next = -1;
  return symbols;
}

// Merges the pair of lowest rank (leftmost first) until none is left: a heap of candidate
// merges, each checked against the symbols when it comes up, since earlier merges may have
// consumed its symbols.
void Bpe::merge_all(std::vector<Symbol>& symbols) const {
  struct Candidate {
    uint32_t rank;
    size_t pos;
    uint32_t new_id;
    bool operator>(const Candidate& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<Candidate>> queue;
  for (size_t i = 0; i + 1 < symbols.size(); ++i) {
    if (const Merge* m = find_merge(symbols[i].id, symbols[i + 1].id)) queue.push({m->rank, i, m->new_id});
  }
  while (!queue.empty()) {
    const Candidate top = queue.top();
    queue.pop();
    Symbol& left = symbols[top.pos];
    if (left.byte_len == 0 || left.next == -1) continue;
    Symbol& right = symbols[left.next];
    const Merge* current = find_merge(left.id, right.id);
    if (!current || current->new_id != top.new_id) continue;  // stale
    left.id = top.new_id;
    left.byte_len += right.byte_len;
    left.next = right.next;
    right.byte_len = 0;
    if (left.next != -1) symbols[left.next].prev = static_cast<int>(top.pos);
    if (left.prev != -1) {
      if (const Merge* m = find_merge(symbols[left.prev].id, left.id))
        queue.push({m->rank, static_cast<size_t>(left.prev), m->new_id});
    }
    if (left.next != -1) {
      if (const Merge* m = find_merge(left.id, symbols[left.next].id)) queue.push({m->rank, top.pos, m->new_id});
    }
  }
}

void Bpe::tokenize(const std::string& piece, std::vector<uint32_t>& out) const {
  if (ignore_merges_) {
    if (const auto id = token_to_id(piece)) {
      out.push_back(*id);
      return;
    }
  }
  std::vector<Symbol> symbols = initial_symbols(piece);
  merge_all(symbols);
  for (const Symbol& s : symbols)
    if (s.byte_len != 0) out.push_back(s.id);
}

}  // namespace

std::optional<uint32_t> Model::token_to_id(const std::string& token) const {
  const auto it = vocab_.find(token);
  if (it == vocab_.end()) return std::nullopt;
  return it->second;
}

const std::string* Model::id_to_token(uint32_t id) const {
  const auto it = vocab_r_.find(id);
  return it == vocab_r_.end() ? nullptr : &it->second;
}

void Model::set_vocab(const json& vocab) {
  for (const auto& [token, id] : vocab.items()) {
    vocab_[token] = id.get<uint32_t>();
    vocab_r_[id.get<uint32_t>()] = token;
  }
}

std::unique_ptr<Model> load_model(const json& model) {
  const std::string type = model.value("type", "");
  if (type == "BPE" || (type.empty() && model.contains("merges"))) return std::make_unique<Bpe>(model);
  if (type == "WordLevel") return std::make_unique<WordLevel>(model);
  throw std::invalid_argument(type);
}

}  // namespace edgecompress::tokenizer
