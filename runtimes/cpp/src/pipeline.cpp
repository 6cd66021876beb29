// Pipeline: image + prompt -> generated text, as the Python runtime's pipeline.py computes it.
#include <algorithm>
#include <chrono>

#include "backend.hpp"
#include "edgecompress/runtime.hpp"
#include "manifest.hpp"
#include "npy.hpp"

namespace edgecompress {
namespace {

using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

bool ends_with_replacement(const std::string& text) {  // U+FFFD: half a UTF-8 character decoded
  return text.size() >= 3 && text.compare(text.size() - 3, 3, "\xEF\xBF\xBD") == 0;
}

// Streams text with constant work per token (the Python runtime's TextStream): each step decodes
// only the tokens since the last emitted piece, with and without the newest, and emits the
// difference; a piece ending in an incomplete UTF-8 character is held back.
class TextStream {
 public:
  TextStream(const Tokenizer& tokenizer, const std::function<void(const std::string&)>& on_text)
      : tokenizer_(tokenizer), on_text_(on_text) {}

  void push(const std::vector<int64_t>& ids) {
    std::string before = tokenizer_.decode({ids.begin() + prefix_, ids.begin() + read_}, true);
    std::string now = tokenizer_.decode({ids.begin() + prefix_, ids.end()}, true);
    if (now.size() > before.size() && !ends_with_replacement(now)) {
      std::string piece = now.substr(before.size());
      on_text_(piece);
      emitted_ += piece.size();
      prefix_ = read_, read_ = ids.size();
    }
  }

  void finish(const std::string& text) {  // whatever the full text holds beyond what was streamed
    if (text.size() > emitted_) on_text_(text.substr(emitted_));
  }

 private:
  const Tokenizer& tokenizer_;
  const std::function<void(const std::string&)>& on_text_;
  size_t prefix_ = 0, read_ = 0, emitted_ = 0;
};

std::string replace_all(std::string text, const std::string& from, const std::string& to) {
  for (size_t at = text.find(from); at != std::string::npos; at = text.find(from, at + to.size())) text.replace(at, from.size(), to);
  return text;
}

bool blank(const std::string& text) {
  return std::all_of(text.begin(), text.end(), [](unsigned char c) { return std::isspace(c); });
}

}  // namespace

struct Pipeline::Impl {
  std::string bundle;
  Manifest manifest;
  std::unique_ptr<Backend> backend;
  Tokenizer tokenizer;
  NpyArray embed_table;
  std::vector<float> newline;  // LLaVA-NeXT unpruned: the image-newline embedding
  int k = 0;
  std::vector<std::string> vision_inputs;
  int64_t position_rows = 1;  // 3 with mRoPE (Qwen2.5-VL): temporal, height, width

  Impl(std::string bundle_, Manifest manifest_, std::unique_ptr<Backend> backend_, Tokenizer tokenizer_, NpyArray table)
      : bundle(std::move(bundle_)), manifest(std::move(manifest_)), backend(std::move(backend_)),
        tokenizer(std::move(tokenizer_)), embed_table(std::move(table)) {
    k = manifest.decoder_pruning ? manifest.decoder_pruning->image_tokens : manifest.k;
    for (const TensorSpec& t : manifest.graphs.at("vision").inputs) vision_inputs.push_back(t.name);
    if (manifest.positions) position_rows = 3;
  }

  std::vector<int64_t> prompt_ids(const std::string& prompt) const {
    if (blank(prompt))
      throw Error("the prompt is empty", "Ask a question about the image, e.g. --prompt \"What is in the picture?\"");
    auto ids = tokenizer.encode(replace_all(manifest.prompt_template, "{prompt}", prompt), true);
    auto count = std::count(ids.begin(), ids.end(), manifest.image_token_id);
    if (count != 1)
      throw Error("the prompt must hold exactly one image placeholder, found " + std::to_string(count),
                  "Do not write the image token (<image>) in the prompt text; the template adds it.");
    auto at = std::find(ids.begin(), ids.end(), manifest.image_token_id) - ids.begin();
    if (manifest.decoder_pruning && at != manifest.decoder_pruning->image_start)
      throw Error("the image is at token " + std::to_string(at) + " of this prompt; this " + manifest.decoder_pruning->method +
                      " bundle's prefill graph prunes the image tokens from token " +
                      std::to_string(manifest.decoder_pruning->image_start) + " (the place its chat template gives them)",
                  "Keep the bundle's prompt template as exported (the prompt text goes after the image), or re-export.");
    return ids;
  }

  void check_length(int64_t text_tokens, int max_new_tokens, int64_t image_tokens) const {
    int64_t total = text_tokens - 1 + image_tokens;
    if (total + max_new_tokens > manifest.max_sequence) {
      int64_t limit = manifest.max_sequence - image_tokens - max_new_tokens + 1;
      throw Error("the prompt is " + std::to_string(text_tokens - 1) + " text tokens + " + std::to_string(image_tokens) +
                      " image tokens; with " + std::to_string(max_new_tokens) + " new tokens that is " +
                      std::to_string(total + max_new_tokens) + ", over this bundle's maximum sequence of " +
                      std::to_string(manifest.max_sequence),
                  "Shorten the prompt to at most " + std::to_string(std::max<int64_t>(limit, 0)) +
                      " text tokens, or lower --max-new-tokens.");
    }
  }

  // The vision graph's feeds, and the packing order (LLaVA-NeXT unpruned) or empty.
  std::vector<Feed> prepare_image(const ImageRGB& image, std::vector<int64_t>& order) const {
    const PreprocessParams& params = manifest.preprocess;
    if (manifest.positions)  // Qwen2.5-VL: the fixed grid's patch rows
      return {Feed{"pixel_values", {patch_count(params), patch_row_size(params)}, patch_rows(image, params), {}, {}}};
    if (!manifest.anyres) {
      int crop = params.crop_size;
      if (params.pixel_input == "frame") {  // the graph resizes, crops and normalises: feed the frame as it is
        if (image.width != params.frame_width || image.height != params.frame_height) {
          const std::string want = std::to_string(params.frame_width) + "x" + std::to_string(params.frame_height);
          const std::string got = std::to_string(image.width) + "x" + std::to_string(image.height);
          throw Error("the image is " + got + "; this bundle's vision graph takes " + want +
                          " frames (exported with --pixel-input frame:" + want + ")",
                      "Feed frames of " + want + ", or export a bundle for this size (--pixel-input frame:" + got +
                          ") or for any size (without --pixel-input).");
        }
        return {Feed{"frame", {1, image.height, image.width, 3}, {}, {}, image.pixels}};
      }
      if (params.pixel_input == "uint8")  // the graph normalises: feed the 8-bit crop, HWC
        return {Feed{"pixels", {1, crop, crop, 3}, {}, {}, crop_pixels(image, params).pixels}};
      return {Feed{"pixel_values", {1, 3, crop, crop}, preprocess(image, params), {}, {}}};
    }
    const AnyresParams& anyres = *manifest.anyres;
    AnyresInputs inputs = preprocess_anyres(image, params, anyres);
    int64_t slots = 1 + anyres.max_tiles, tile = anyres.tile_size, n = int64_t(anyres.side) * anyres.side;
    std::vector<Feed> all{Feed{"pixel_values", {slots, 3, tile, tile}, std::move(inputs.pixel_values), {}, {}},
                          Feed{"grid_index", {1}, {}, {inputs.grid_index}, {}},
                          Feed{"tile_mask", {anyres.max_tiles, n}, std::move(inputs.tile_mask), {}, {}}};
    if (!newline.empty()) order = std::move(inputs.packed_order);
    std::vector<Feed> feeds;
    for (const std::string& name : vision_inputs)
      for (Feed& feed : all)
        if (feed.name == name) feeds.push_back(std::move(feed));
    return feeds;
  }

  // The prompt's position ids (`before` text tokens, the image's, `after` text tokens), and in
  // `delta` every later token's position minus its cache index (0, except with mRoPE, where the
  // image's positions follow its grid), as pipeline.py's prompt_positions.
  Positions prompt_positions(int64_t before, const std::vector<int64_t>& kept, int64_t image_tokens, int64_t after,
                             int64_t& delta) const {
    delta = 0;
    if (!manifest.positions) return Positions::sequence(0, before + image_tokens + after);
    if (static_cast<int64_t>(kept.size()) != image_tokens)
      throw Error("the vision graph returned " + std::to_string(image_tokens) + " image tokens and " + std::to_string(kept.size()) +
                      " kept indices; mRoPE places each image token by its index",
                  "The bundle is damaged or was not written by edgecompress: re-export it.");
    return mrope_positions(before, kept, manifest.positions->rows, manifest.positions->cols, after, delta);
  }

  void embed(int64_t id, std::vector<float>& out) const {
    size_t at = out.size();
    out.resize(at + embed_table.row_size());
    embed_table.row(id, out.data() + at);
  }

  Generation generate(const ImageRGB& image, const std::string& prompt, const GenerateOptions& options, Clock::time_point start) {
    if (options.max_new_tokens < 1)
      throw Error("max_new_tokens must be at least 1, got " + std::to_string(options.max_new_tokens));
    Generation result;
    auto ids = prompt_ids(prompt);
    std::vector<int64_t> order;
    auto feeds = prepare_image(image, order);
    check_length(static_cast<int64_t>(ids.size()), options.max_new_tokens, order.empty() ? k : static_cast<int64_t>(order.size()));
    result.timings.preprocess_ms = ms_since(start);

    auto t = Clock::now();
    VisionOutput vision = backend->vision(feeds);
    result.kept_indices = vision.kept;
    int64_t hidden = vision.hidden, image_tokens = vision.tokens;
    std::vector<float> image_rows = std::move(vision.embeds);
    if (!order.empty()) {  // LLaVA-NeXT: tokens in the language model's order, -1 = the newline row
      std::vector<float> packed;
      packed.reserve(order.size() * hidden);
      for (int64_t index : order) {
        const float* row = index >= 0 ? image_rows.data() + index * hidden : newline.data();
        packed.insert(packed.end(), row, row + hidden);
      }
      image_rows = std::move(packed);
      image_tokens = static_cast<int64_t>(order.size());
    }
    if (embed_table.dtype() == "float16")  // the Python runtime casts image rows to the table's type
      for (float& v : image_rows) v = half_to_float(float_to_half(v));
    result.timings.vision_ms = ms_since(t);

    std::vector<float> embeds;
    size_t at = std::find(ids.begin(), ids.end(), manifest.image_token_id) - ids.begin();
    for (size_t i = 0; i < at; ++i) embed(ids[i], embeds);
    embeds.insert(embeds.end(), image_rows.begin(), image_rows.end());
    for (size_t i = at + 1; i < ids.size(); ++i) embed(ids[i], embeds);
    int64_t length = static_cast<int64_t>(ids.size()) - 1 + image_tokens;
    result.prompt_tokens = static_cast<int>(length);

    t = Clock::now();
    int64_t delta = 0;
    Positions positions = prompt_positions(static_cast<int64_t>(at), result.kept_indices, image_tokens,
                                           static_cast<int64_t>(ids.size() - at - 1), delta);
    std::vector<float> logits;
    if (manifest.decoder_pruning) {  // pruned at a decoder layer: the kept tokens are the prefill's
      logits = backend->prefill(embeds, length, positions, result.kept_indices);
    } else {
      backend->reset();
      logits = backend->decode(embeds, length, positions);
    }
    result.timings.prefill_ms = ms_since(t);
    result.timings.ttft_ms = ms_since(start);

    std::unique_ptr<TextStream> stream;
    if (options.on_token) stream = std::make_unique<TextStream>(tokenizer, options.on_token);
    result.stopped_by = "max_new_tokens";
    t = Clock::now();
    std::vector<float> step;
    while (true) {
      int64_t token = std::max_element(logits.begin(), logits.end()) - logits.begin();  // the first maximum, as numpy
      bool eos = std::find(manifest.eos_token_ids.begin(), manifest.eos_token_ids.end(), token) != manifest.eos_token_ids.end();
      if (eos && !options.ignore_eos) {
        result.stopped_by = "eos";
        break;
      }
      result.token_ids.push_back(token);
      if (stream) stream->push(result.token_ids);
      if (static_cast<int>(result.token_ids.size()) >= options.max_new_tokens) break;
      step.clear();
      embed(token, step);
      // original positions: after a pruning prefill too, the next token sits after the whole prompt
      int64_t position = length + static_cast<int64_t>(result.token_ids.size()) - 1 + delta;
      logits = backend->decode(step, 1, Positions::sequence(position, 1, position_rows));
      ++result.timings.decode_tokens;
    }
    result.timings.decode_ms = ms_since(t);
    result.text = tokenizer.decode(result.token_ids, true);
    if (stream) stream->finish(result.text);
    return result;
  }
};

Pipeline::Pipeline(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Pipeline::Pipeline(Pipeline&&) noexcept = default;
Pipeline& Pipeline::operator=(Pipeline&&) noexcept = default;
Pipeline::~Pipeline() = default;

Pipeline Pipeline::load(const std::string& bundle, const LoadOptions& options) {
  Manifest manifest = open_bundle(bundle, options.check_hashes);
  if (!manifest.tokenizer_file || !manifest.embeddings_file)
    throw Error("bundle " + bundle +
                    " has no tokenizer (it was exported with --random-weights from a checkpoint whose tokenizer is not available offline)",
                "Export from a local checkpoint folder, or a built-in recipe such as tiny-llava.");
  auto backend = make_backend(options.backend, bundle, manifest, options.threads, options.profile, options.spinning);
  std::string tokenizer_path = inside(bundle, *manifest.tokenizer_file);
  Tokenizer tokenizer = [&] {
    try {
      return Tokenizer::from_file(tokenizer_path);
    } catch (const Error& err) {
      throw Error("cannot read the tokenizer " + *manifest.tokenizer_file + " of " + bundle + ": " + err.what(),
                  err.hint().empty() ? "The bundle is damaged or incomplete: re-export it." : err.hint());
    }
  }();
  NpyArray table = NpyArray::open(inside(bundle, *manifest.embeddings_file));
  auto impl = std::make_unique<Impl>(bundle, std::move(manifest), std::move(backend), std::move(tokenizer), std::move(table));
  if (impl->manifest.newline_file) {
    NpyArray newline = NpyArray::open(inside(bundle, *impl->manifest.newline_file));
    impl->newline.resize(newline.row_size());
    newline.row(0, impl->newline.data());
  }
  return Pipeline(std::move(impl));
}

Generation Pipeline::generate(const ImageRGB& image, const std::string& prompt, const GenerateOptions& options) {
  return impl_->generate(image, prompt, options, Clock::now());
}

Generation Pipeline::generate(const std::string& image_path, const std::string& prompt, const GenerateOptions& options) {
  auto start = Clock::now();
  return impl_->generate(load_image(image_path), prompt, options, start);
}

const Tokenizer& Pipeline::tokenizer() const { return impl_->tokenizer; }
std::vector<int64_t> Pipeline::prompt_ids(const std::string& prompt) const { return impl_->prompt_ids(prompt); }
const std::string& Pipeline::backend_name() const { return impl_->backend->name(); }

}  // namespace edgecompress
