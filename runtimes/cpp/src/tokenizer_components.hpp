// The pipeline stages of a tokenizer.json other than the model, each built from its JSON:
// normalizer, pre-tokenizer, post-processor, decoder. A type the runtime does not implement is
// refused with Unsupported, which the loader turns into an Error naming the file.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace edgecompress::tokenizer {

// A part of the text on its way through the pipeline.
struct Piece {
  std::string text;
  std::optional<uint32_t> added_id;  // an added token: no stage changes it
  bool at_origin;                    // starts at byte 0 of the input (Metaspace prepend "first")
};

using Normalizer = std::function<void(std::string&)>;
using PreTokenizer = std::function<void(std::vector<Piece>&)>;
using PostProcessor = std::function<void(std::vector<uint32_t>& ids, bool add_special_tokens)>;
using Decoder = std::function<std::vector<std::string>(std::vector<std::string>)>;

struct Unsupported : std::runtime_error {
  Unsupported(std::string component, std::string type, std::string supported)
      : std::runtime_error(component + " type " + type),
        component(std::move(component)), type(std::move(type)), supported(std::move(supported)) {}
  std::string component, type, supported;
};

// Each returns an empty function for a JSON null; throws Unsupported, or std::runtime_error for
// a malformed component.
Normalizer load_normalizer(const nlohmann::json& config);
PreTokenizer load_pre_tokenizer(const nlohmann::json& config);
PostProcessor load_post_processor(const nlohmann::json& config);
Decoder load_decoder(const nlohmann::json& config);

// Replaces each text piece by the non-empty pieces `split` makes of it, as
// PreTokenizedString::split does (added-token pieces pass unchanged).
void split_pieces(std::vector<Piece>& pieces, const std::function<std::vector<Piece>(const Piece&)>& split);

}  // namespace edgecompress::tokenizer
