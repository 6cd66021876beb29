// The C API over Pipeline: no exception crosses it; a failure returns NULL and sets the calling
// thread's last error.
#include "edgecompress/c_api.h"

#include <cstdlib>
#include <cstring>
#include <new>

#include "edgecompress/runtime.hpp"

struct ec_pipeline {
  edgecompress::Pipeline pipeline;
};

namespace {

thread_local std::string last_error;

template <typename Body>
auto guarded(Body body) -> decltype(body()) {
  try {
    last_error.clear();
    return body();
  } catch (const edgecompress::Error& err) {
    last_error = err.what();
    if (!err.hint().empty()) last_error += "\n" + err.hint();
  } catch (const std::bad_alloc&) {
    last_error = "out of memory";
  } catch (const std::exception& err) {
    last_error = std::string("internal error: ") + err.what();
  }
  return nullptr;
}

char* copy(const std::string& text) {
  char* out = static_cast<char*>(std::malloc(text.size() + 1));
  if (!out) throw std::bad_alloc();
  std::memcpy(out, text.c_str(), text.size() + 1);
  return out;
}

}  // namespace

extern "C" {

ec_pipeline* ec_pipeline_load(const char* bundle, const char* backend, int threads) {
  return guarded([&]() -> ec_pipeline* {
    if (!bundle) throw edgecompress::Error("ec_pipeline_load: bundle is NULL");
    edgecompress::LoadOptions options;
    if (backend) options.backend = backend;
    options.threads = threads;
    return new ec_pipeline{edgecompress::Pipeline::load(bundle, options)};
  });
}

char* ec_generate(ec_pipeline* pipeline, const char* image_path, const char* prompt, int max_new_tokens, ec_on_token on_token,
                  void* user_data) {
  return guarded([&]() -> char* {
    if (!pipeline || !image_path || !prompt) throw edgecompress::Error("ec_generate: pipeline, image_path and prompt must not be NULL");
    edgecompress::GenerateOptions options;
    options.max_new_tokens = max_new_tokens;
    if (on_token) options.on_token = [&](const std::string& piece) { on_token(piece.c_str(), user_data); };
    return copy(pipeline->pipeline.generate(std::string(image_path), prompt, options).text);
  });
}

void ec_free(char* text) { std::free(text); }

void ec_pipeline_free(ec_pipeline* pipeline) { delete pipeline; }

const char* ec_last_error(void) { return last_error.c_str(); }

}  // extern "C"
