/* edgecompress C API: the C++ runtime for other languages (Python ctypes, Rust, Go, ...).
 *
 *   ec_pipeline* pipe = ec_pipeline_load("out/tiny-llava-hired-b20", "onnxruntime", 0);
 *   if (!pipe) { fprintf(stderr, "%s\n", ec_last_error()); return 2; }
 *   char* text = ec_generate(pipe, "cat.jpg", "What is this?", 64, on_piece, NULL);
 *   if (!text) { fprintf(stderr, "%s\n", ec_last_error()); }
 *   ec_free(text);
 *   ec_pipeline_free(pipe);
 *
 * Errors: a NULL result; ec_last_error() gives the message (and hint) of the calling thread's
 * last failure, valid until its next call. */
#ifndef EDGECOMPRESS_C_API_H
#define EDGECOMPRESS_C_API_H

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ec_pipeline ec_pipeline;
typedef void (*ec_on_token)(const char* piece, void* user_data);

/* backend: "onnxruntime" (NULL: the same) or "onnxruntime-cuda"; threads 0: ONNX Runtime's default. */
ec_pipeline* ec_pipeline_load(const char* bundle, const char* backend, int threads);
/* The generated text (free it with ec_free), or NULL on error. on_token may be NULL. */
char* ec_generate(ec_pipeline* pipeline, const char* image_path, const char* prompt, int max_new_tokens,
                  ec_on_token on_token, void* user_data);
void ec_free(char* text);
void ec_pipeline_free(ec_pipeline* pipeline);
const char* ec_last_error(void);

#ifdef __cplusplus
}
#endif

#endif
