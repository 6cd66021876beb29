// The models of a tokenizer.json that turn one pre-tokenized piece into ids: BPE (with byte
// fallback, unknown-token fusing, subword prefix/suffix) and WordLevel.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

namespace edgecompress::tokenizer {

class Model {
 public:
  virtual ~Model() = default;
  // Appends the ids of `piece` (non-empty) to `out`; throws std::runtime_error as the Python
  // library raises (an unknown token the vocab lacks).
  virtual void tokenize(const std::string& piece, std::vector<uint32_t>& out) const = 0;
  std::optional<uint32_t> token_to_id(const std::string& token) const;
  const std::string* id_to_token(uint32_t id) const;
  size_t vocab_size() const { return vocab_.size(); }

 protected:
  void set_vocab(const nlohmann::json& vocab);  // {"token": id, ...}
  std::unordered_map<std::string, uint32_t> vocab_;
  std::unordered_map<uint32_t, std::string> vocab_r_;
};

// Loads model.type BPE or WordLevel; throws std::runtime_error naming what is wrong, or
// std::invalid_argument for a type it does not know.
std::unique_ptr<Model> load_model(const nlohmann::json& model);

}  // namespace edgecompress::tokenizer
