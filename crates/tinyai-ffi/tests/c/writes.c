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
            /* Scale the "weights" in place, then read them back. */
            for (size_t j = 0; j < size; j += 97) {
                weights[j] = (unsigned char)(weights[j] ^ 0x5A);
            }
            for (size_t j = 0; j < size; j += 97) {
                CHECK(weights[j] == (unsigned char)(before[descriptor->offset + j] ^ 0x5A) ||
                      pass > 0);
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
