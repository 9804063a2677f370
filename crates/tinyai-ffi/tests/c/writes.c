/* Writing into the weights, as code written for TinyAI's original (malloc'd)
 * copies may do: no crash, the written bytes read back, and the file on disk
 * never changes. Usage: writes MODEL BACKEND (0 mapped, 1 owned). */
#include "check.h"

int main(int argc, char **argv) {
    CHECK(argc == 3);
    const char *path = argv[1];
    int backend = atoi(argv[2]);
    size_t file_size = 0;
    unsigned char *before = read_whole_file(path, &file_size);

    TinyAIMmapConfig config = tinyaiCreateDefaultMmapConfig();
    config.maxCacheSize = 1024 * 1024;
    TinyAIMmapOptions options;
    memset(&options, 0, sizeof options);
    options.backend = backend;
    TinyAIMappedModel *model = tinyaiOpenMappedModelEx(path, &config, &options);
    CHECK(model != NULL);
    int count = tinyaiGetMappedLayerCount(model);
    CHECK(count > 0);
    for (int pass = 0; pass < 3; pass++) {
        for (int i = 0; i < count; i++) {
            const TinyAILayerDescriptor *descriptor = tinyaiGetLayerDescriptor(model, i);
            CHECK(descriptor != NULL);
            size_t size = descriptor->size;
            unsigned char *weights = tinyaiGetLayerWeights(model, i);
            CHECK(weights != NULL);
            /* Every pass: each sampled byte is the file's, or the file's as
             * an earlier pass wrote it (x ^ 0x5A: a layer kept in memory keeps
             * our writes; one released or evicted since reads the file again);
             * then we flip it in place and it reads back flipped. */
            for (size_t j = 0; j < size; j += 97) {
                unsigned char file_byte = before[descriptor->offset + j];
                unsigned char seen = weights[j];
                CHECK(seen == file_byte || seen == (unsigned char)(file_byte ^ 0x5A));
                weights[j] = (unsigned char)(seen ^ 0x5A);
                CHECK(weights[j] == (unsigned char)(seen ^ 0x5A));
            }
            if (pass == 0) {
                /* The first pass starts from the file's bytes everywhere. */
                for (size_t j = 0; j < size; j += 97) {
                    CHECK(weights[j] == (unsigned char)(before[descriptor->offset + j] ^ 0x5A));
                }
            }
            if (i % 2 == 0) {
                tinyaiReleaseLayerWeights(model, i);
            }
        }
    }
    tinyaiCloseMappedModel(model);

    size_t after_size = 0;
    unsigned char *after = read_whole_file(path, &after_size);
    CHECK(after_size == file_size);
    CHECK(memcmp(before, after, file_size) == 0);
    free(before);
    free(after);
    printf("writes: ok\n");
    return 0;
}
