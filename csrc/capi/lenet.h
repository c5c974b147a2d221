/* lenet C API: load or create a model, predict, train it on the device, save it.
 *
 * The same engine as the Python package (csrc/), without Python: link liblenet (shared) or lenet_core plus
 * csrc/capi/lenet.cpp (static). Model files are the ones `lenet.save` / `python -m lenet.train` write.
 *
 * Errors: functions returning a pointer return NULL, functions returning int return a negative value; then
 * lenet_last_error() (per thread) says what was wrong. Calls that run kernels take one process-wide engine lock,
 * so several threads may share the library (they take turns).
 *
 * Images are n samples of C*H*W values, row-major (for MNIST: 1*28*28): floats in [0, 1], or uint8 pixels 0-255
 * (the _u8 variants scale them by 1/255). Logits are n*classes floats.
 */
#ifndef LENET_H
#define LENET_H

#include <stddef.h>
#include <stdint.h>

#if defined(_WIN32)
#define LENET_API __declspec(dllexport)
#else
#define LENET_API __attribute__((visibility("default")))
#endif

#ifdef __cplusplus
extern "C" {
#endif

typedef struct lenet_model lenet_model;

LENET_API const char* lenet_last_error(void);   /* the last failure on this thread ("" if none) */
LENET_API const char* lenet_version(void);
LENET_API const char* lenet_isa(void);          /* the instruction set in use: "avx512", "avx2", "neon", "reference" */
LENET_API int lenet_set_num_threads(int n);     /* threads for batches and training; returns the count set */

/* A model from a file written by lenet.save or lenet_save, or an int8 file written by lenet.quantize (inference
 * only: lenet_train_step and lenet_save refuse it). */
LENET_API lenet_model* lenet_load(const char* path);
/* A new model of the given graph (the JSON of lenet.graph.describe, e.g. {"input": [1, 28, 28], "layers": [...]}),
 * with PyTorch's default initialisation drawn from `seed`. */
LENET_API lenet_model* lenet_create(const char* graph_json, uint64_t seed);
/* Writes the model (graph, weights, metadata) atomically: a temporary file, then a rename. 0 on success. */
LENET_API int lenet_save(const lenet_model* m, const char* path);
LENET_API void lenet_free(lenet_model* m);

LENET_API int lenet_input_shape(const lenet_model* m, int* channels, int* height, int* width);
LENET_API int lenet_num_classes(const lenet_model* m);
LENET_API const char* lenet_class_name(const lenet_model* m, int index);  /* from the file's metadata, or "0".. */

/* logits[n][classes] for n images. 0 on success. */
LENET_API int lenet_predict(lenet_model* m, const float* images, int n, float* logits);
LENET_API int lenet_predict_u8(lenet_model* m, const uint8_t* images, int n, float* logits);
/* The predicted class of each image into classes[n]. 0 on success. */
LENET_API int lenet_classify_u8(lenet_model* m, const uint8_t* images, int n, int32_t* classes);

/* One training step on a batch of n labelled images: softmax cross-entropy, then SGD with momentum (the
 * momentum buffer lives in the model). Writes the batch's mean loss to *loss (may be NULL). 0 on success. */
LENET_API int lenet_train_step(lenet_model* m, const float* images, const int32_t* labels, int n, float lr,
                               float momentum, float* loss);
LENET_API int lenet_train_step_u8(lenet_model* m, const uint8_t* images, const int32_t* labels, int n, float lr,
                                  float momentum, float* loss);

#ifdef __cplusplus
}
#endif

#endif /* LENET_H */
