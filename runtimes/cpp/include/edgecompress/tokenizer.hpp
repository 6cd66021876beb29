// A Hugging Face `tokenizer.json` reader: encode and decode as the Python `tokenizers` library does.
//
// Supported: models BPE (with byte_fallback, SentencePiece-style metaspace) and byte-level BPE
// (GPT-2 / Qwen style), WordLevel; the normalizers, pre-tokenizers, post-processors and decoders
// those tokenizers ship; added and special tokens. Anything else is refused at load with an Error
// naming the component it does not support.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace edgecompress {

class Tokenizer {
 public:
  static Tokenizer from_file(const std::string& path);  // throws Error
  static Tokenizer from_json(const std::string& json);  // throws Error
  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

  // ids as tokenizers' encode(text, add_special_tokens=...).ids
  std::vector<int64_t> encode(const std::string& text, bool add_special_tokens) const;
  // text as tokenizers' decode(ids, skip_special_tokens=...)
  std::string decode(const std::vector<int64_t>& ids, bool skip_special_tokens) const;
  std::optional<int64_t> token_to_id(const std::string& token) const;
  // The pieces the pre-tokenizer alone cuts `text` into (no added tokens, no normalizer), as
  // tokenizers' pre_tokenizer.pre_tokenize_str(text); the text itself when there is none.
  std::vector<std::string> pre_tokenize(const std::string& text) const;
  size_t vocab_size() const;

 private:
  struct Impl;
  explicit Tokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace edgecompress
