/* lenet from C: predict MNIST digits with a model file, and train a LeNet-5 on the device.
 *
 *   mnist_demo [--model FILE] [--train N] [--test N] [--epochs E] [--out FILE] [--min-accuracy A] MNIST_DIR
 *
 * MNIST_DIR holds the four uncompressed IDX files (gunzip -k *.gz). With --model, the file's accuracy on the
 * first --test test images is printed. Then a fresh LeNet-5 is trained for --epochs passes over the first --train
 * training images (batch 64, SGD 0.05 with momentum 0.9), evaluated, saved to --out, loaded back and checked to
 * predict the same classes. Exits non-zero on any error, or when an accuracy is below --min-accuracy.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lenet.h"

static const char* kLeNet5 =
    "{\"input\": [1, 28, 28], \"layers\": ["
    "{\"kind\": \"conv2d\", \"in_channels\": 1, \"out_channels\": 6, \"kernel\": [5, 5], \"stride\": [1, 1],"
    " \"padding\": [2, 2], \"bias\": true}, {\"kind\": \"relu\"}, {\"kind\": \"maxpool\", \"kernel\": [2, 2], \"stride\": [2, 2]},"
    "{\"kind\": \"conv2d\", \"in_channels\": 6, \"out_channels\": 16, \"kernel\": [5, 5], \"stride\": [1, 1],"
    " \"padding\": [0, 0], \"bias\": true}, {\"kind\": \"relu\"}, {\"kind\": \"maxpool\", \"kernel\": [2, 2], \"stride\": [2, 2]},"
    "{\"kind\": \"flatten\"},"
    "{\"kind\": \"linear\", \"in_features\": 400, \"out_features\": 120, \"bias\": true}, {\"kind\": \"relu\"},"
    "{\"kind\": \"linear\", \"in_features\": 120, \"out_features\": 84, \"bias\": true}, {\"kind\": \"relu\"},"
    "{\"kind\": \"linear\", \"in_features\": 84, \"out_features\": 10, \"bias\": true}]}";

static void die(const char* what, const char* why) {
    fprintf(stderr, "mnist_demo: %s: %s\n", what, why);
    exit(1);
}

static unsigned be32(const unsigned char* p) { return (unsigned)p[0] << 24 | (unsigned)p[1] << 16 | (unsigned)p[2] << 8 | p[3]; }

/* An IDX file of unsigned bytes: returns the data and its item count; `dims` values per item. */
static unsigned char* read_idx(const char* dir, const char* name, int dims, int* count) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE* f = fopen(path, "rb");
    if (!f) die(path, "cannot open (gunzip the .gz files first)");
    unsigned char head[16];
    const size_t head_len = 4 + 4 * (size_t)dims;
    if (fread(head, 1, head_len, f) != head_len || be32(head) != (0x0800u | (unsigned)dims)) die(path, "not an IDX file of bytes");
    size_t items = be32(head + 4), per = 1;
    for (int d = 1; d < dims; ++d) per *= be32(head + 4 + 4 * d);
    unsigned char* data = malloc(items * per);
    if (!data || fread(data, 1, items * per, f) != items * per) die(path, "truncated");
    fclose(f);
    *count = (int)items;
    return data;
}

static double accuracy(lenet_model* m, const unsigned char* images, const unsigned char* labels, int n, int32_t* out) {
    if (lenet_classify_u8(m, images, n, out) != 0) die("classify", lenet_last_error());
    int right = 0;
    for (int i = 0; i < n; ++i) right += out[i] == labels[i];
    return (double)right / n;
}

int main(int argc, char** argv) {
    const char *model_path = NULL, *out_path = "mnist_demo.lenet", *dir = NULL;
    int train_n = 6000, test_n = 10000, epochs = 1;
    double min_accuracy = 0.0;
    for (int i = 1; i < argc; ++i) {
        if (!strcmp(argv[i], "--model") && i + 1 < argc) model_path = argv[++i];
        else if (!strcmp(argv[i], "--train") && i + 1 < argc) train_n = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--test") && i + 1 < argc) test_n = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--epochs") && i + 1 < argc) epochs = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--out") && i + 1 < argc) out_path = argv[++i];
        else if (!strcmp(argv[i], "--min-accuracy") && i + 1 < argc) min_accuracy = atof(argv[++i]);
        else if (argv[i][0] != '-' && !dir) dir = argv[i];
        else die(argv[i], "unknown argument (usage: see the comment at the top of mnist_demo.c)");
    }
    if (!dir) die("usage", "mnist_demo [--model FILE] [--train N] [--test N] [--epochs E] [--out FILE] "
                           "[--min-accuracy A] MNIST_DIR");
    printf("lenet %s, instruction set %s\n", lenet_version(), lenet_isa());

    int n_test, n_test_labels, n_train, n_train_labels;
    unsigned char* test_images = read_idx(dir, "t10k-images-idx3-ubyte", 3, &n_test);
    unsigned char* test_labels = read_idx(dir, "t10k-labels-idx1-ubyte", 1, &n_test_labels);
    unsigned char* train_images = read_idx(dir, "train-images-idx3-ubyte", 3, &n_train);
    unsigned char* train_labels = read_idx(dir, "train-labels-idx1-ubyte", 1, &n_train_labels);
    if (n_test != n_test_labels || n_train != n_train_labels) die(dir, "image and label counts differ");
    if (test_n < 1 || test_n > n_test) test_n = n_test;
    if (train_n < 64 || train_n > n_train) train_n = n_train;
    int32_t* predicted = malloc(sizeof(int32_t) * (size_t)test_n);
    int failed = 0;

    if (model_path) {
        lenet_model* m = lenet_load(model_path);
        if (!m) die("load", lenet_last_error());
        const double acc = accuracy(m, test_images, test_labels, test_n, predicted);
        printf("%s: %d classes (first \"%s\"), accuracy on %d test images %.4f\n", model_path, lenet_num_classes(m),
               lenet_class_name(m, 0), test_n, acc);
        failed |= acc < min_accuracy;
        lenet_free(m);
    }

    lenet_model* m = lenet_create(kLeNet5, 42);
    if (!m) die("create", lenet_last_error());
    enum { kBatch = 64 };
    int32_t labels[kBatch];
    for (int epoch = 1; epoch <= epochs; ++epoch) {
        double total = 0;
        int steps = 0;
        for (int start = 0; start + kBatch <= train_n; start += kBatch, ++steps) {
            for (int i = 0; i < kBatch; ++i) labels[i] = train_labels[start + i];
            float loss;
            if (lenet_train_step_u8(m, train_images + (size_t)start * 784, labels, kBatch, 0.05f, 0.9f, &loss) != 0)
                die("train step", lenet_last_error());
            total += loss;
        }
        printf("epoch %d: %d steps of %d on %d images, mean loss %.4f\n", epoch, steps, kBatch, train_n, total / steps);
    }
    const double acc = accuracy(m, test_images, test_labels, test_n, predicted);
    printf("trained on the device: accuracy on %d test images %.4f\n", test_n, acc);
    failed |= acc < min_accuracy;

    if (lenet_save(m, out_path) != 0) die("save", lenet_last_error());
    lenet_model* again = lenet_load(out_path);
    if (!again) die("load", lenet_last_error());
    int32_t* predicted_again = malloc(sizeof(int32_t) * (size_t)test_n);
    accuracy(again, test_images, test_labels, test_n, predicted_again);
    const int same = !memcmp(predicted, predicted_again, sizeof(int32_t) * (size_t)test_n);
    printf("saved to %s and loaded back: %s predictions\n", out_path, same ? "the same" : "DIFFERENT");
    failed |= !same;

    if (lenet_load("/nonexistent/model.lenet") != NULL || !strstr(lenet_last_error(), "cannot open")) {
        fprintf(stderr, "mnist_demo: a missing file did not give a clear error\n");
        failed = 1;
    }
    lenet_free(again);
    lenet_free(m);
    free(predicted);
    free(predicted_again);
    free(test_images);
    free(test_labels);
    free(train_images);
    free(train_labels);
    if (failed) fprintf(stderr, "mnist_demo: FAILED (accuracy below %.4f or a check failed)\n", min_accuracy);
    return failed;
}
