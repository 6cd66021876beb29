// edgecompress::Tokenizer: loads a tokenizer.json and runs its pipeline as the Python
// `tokenizers` library does: added tokens, normalizer, pre-tokenizer, model, post-processor on
// the way in; token strings through the decoder on the way out.
#include "edgecompress/tokenizer.hpp"

#include <fstream>
#include <limits>
#include <sstream>

#include <nlohmann/json.hpp>

#include "edgecompress/error.hpp"
#include "tokenizer_added_tokens.hpp"
#include "tokenizer_components.hpp"
#include "tokenizer_models.hpp"

namespace edgecompress {

using nlohmann::json;
namespace tk = tokenizer;

namespace {

const char kModels[] = "BPE (byte-level, or with byte_fallback and metaspace), WordLevel";

Error load_error(const std::string& source, const std::string& what, std::string hint = {}) {
  return Error("tokenizer " + source + ": " + what, std::move(hint));
}

const json& component(const json& root, const char* key) {
  static const json null;
  const auto it = root.find(key);
  return it == root.end() ? null : *it;
}

// Settings that change encode's ids which the runtime does not apply.
void refuse_truncation_and_padding(const json& root, const std::string& source) {
  for (const char* key : {"truncation", "padding"}) {
    if (!component(root, key).is_null())
      throw load_error(source, std::string(key) + " is set: the C++ runtime does not apply it",
                       std::string("set \"") + key + "\" to null in tokenizer.json");
  }
}

}  // namespace

struct Tokenizer::Impl {
  std::unique_ptr<tk::Model> model;
  tk::Normalizer normalizer;
  tk::PreTokenizer pre_tokenizer;
  tk::PostProcessor post_processor;
  tk::Decoder decoder;
  tk::AddedTokens added;

  static std::unique_ptr<Impl> load(const std::string& text, const std::string& source);
  std::vector<int64_t> encode(const std::string& text, bool add_special_tokens) const;
  std::string decode(const std::vector<int64_t>& ids, bool skip_special_tokens) const;
};

std::unique_ptr<Tokenizer::Impl> Tokenizer::Impl::load(const std::string& text, const std::string& source) {
  json root;
  try {
    root = json::parse(text);
  } catch (const json::exception& e) {
    throw load_error(source, std::string("is not valid JSON: ") + e.what());
  }
  refuse_truncation_and_padding(root, source);
  auto impl = std::make_unique<Impl>();
  try {
    try {
      impl->model = tk::load_model(root.at("model"));
    } catch (const std::invalid_argument& e) {
      throw tk::Unsupported("model", e.what(), kModels);
    }
    impl->normalizer = tk::load_normalizer(component(root, "normalizer"));
    impl->pre_tokenizer = tk::load_pre_tokenizer(component(root, "pre_tokenizer"));
    impl->post_processor = tk::load_post_processor(component(root, "post_processor"));
    impl->decoder = tk::load_decoder(component(root, "decoder"));
    impl->added = tk::AddedTokens(component(root, "added_tokens"), *impl->model, impl->normalizer);
  } catch (const tk::Unsupported& e) {
    throw load_error(source, e.component + " type " + e.type + " is not supported by the C++ runtime",
                     "supported " + e.component + " types: " + e.supported);
  } catch (const std::exception& e) {  // a malformed file: json's and the loaders' errors
    throw load_error(source, std::string("cannot be read: ") + e.what(),
                     "is it a Hugging Face tokenizer.json (tokenizers' save, or save_pretrained)?");
  }
  return impl;
}

std::vector<int64_t> Tokenizer::Impl::encode(const std::string& text, bool add_special_tokens) const {
  std::vector<tk::Piece> pieces;
  if (!text.empty()) pieces.push_back({text, std::nullopt, true});
  added.extract(pieces, normalizer);
  if (pre_tokenizer) pre_tokenizer(pieces);
  std::vector<uint32_t> ids;
  for (const tk::Piece& piece : pieces) {
    if (piece.added_id) ids.push_back(*piece.added_id);
    else model->tokenize(piece.text, ids);
  }
  if (post_processor) post_processor(ids, add_special_tokens);
  return {ids.begin(), ids.end()};
}

std::string Tokenizer::Impl::decode(const std::vector<int64_t>& ids, bool skip_special_tokens) const {
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (int64_t id : ids) {
    // Ids the vocab lacks are left out, as the library does.
    if (id < 0 || id > std::numeric_limits<uint32_t>::max()) continue;
    const std::string* token = added.id_to_token(static_cast<uint32_t>(id));
    if (!token) token = model->id_to_token(static_cast<uint32_t>(id));
    if (!token || (skip_special_tokens && added.is_special(*token))) continue;
    tokens.push_back(*token);
  }
  if (decoder) tokens = decoder(std::move(tokens));
  std::string text;
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (i > 0 && !decoder) text += ' ';  // no decoder: the tokens joined by spaces
    text += tokens[i];
  }
  return text;
}

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

Tokenizer Tokenizer::from_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw load_error(path, "cannot open the file", "pass the tokenizer.json of an exported bundle");
  std::ostringstream text;
  text << in.rdbuf();
  return Tokenizer(Impl::load(text.str(), path));
}

Tokenizer Tokenizer::from_json(const std::string& json_text) { return Tokenizer(Impl::load(json_text, "(JSON text)")); }

std::vector<int64_t> Tokenizer::encode(const std::string& text, bool add_special_tokens) const {
  try {
    return impl_->encode(text, add_special_tokens);
  } catch (const std::invalid_argument& e) {  // unicode::decode
    throw Error(std::string("tokenizer: the text to encode is not valid UTF-8 (") + e.what() + ")",
                "pass UTF-8 text");
  } catch (const std::runtime_error& e) {  // the model's: an unk token the vocab lacks
    throw Error(std::string("tokenizer: cannot encode the text: ") + e.what());
  }
}

std::string Tokenizer::decode(const std::vector<int64_t>& ids, bool skip_special_tokens) const {
  return impl_->decode(ids, skip_special_tokens);
}

std::optional<int64_t> Tokenizer::token_to_id(const std::string& token) const {
  if (const auto id = impl_->added.token_to_id(token)) return *id;
  if (const auto id = impl_->model->token_to_id(token)) return *id;
  return std::nullopt;
}

std::vector<std::string> Tokenizer::pre_tokenize(const std::string& text) const {
  std::vector<tk::Piece> pieces;
  if (!text.empty()) pieces.push_back({text, std::nullopt, true});
  if (impl_->pre_tokenizer) impl_->pre_tokenizer(pieces);
  std::vector<std::string> out;
  for (tk::Piece& piece : pieces) out.push_back(std::move(piece.text));
  return out;
}

size_t Tokenizer::vocab_size() const {
  return impl_->model->vocab_size() + impl_->added.count_beyond(*impl_->model);
}

}  // namespace edgecompress
