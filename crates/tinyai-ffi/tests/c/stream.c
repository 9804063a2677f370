/* Streaming passes over a model larger than the memory it may use (run in a
 * memory cgroup by the test): the seed example's loop, without releases, and
 * tinyaiGetMappedModelMemoryUsage sampled after every call never exceeds
 * maxCacheSize; every layer's first and last bytes match the file.
 *
 * argv: model path, maxCacheSize in bytes, passes. */
#define _POSIX_C_SOURCE 200809L
#include <stdint.h>

#include "check.h"

int main(int argc, char **argv) {
    CHECK(argc == 4);
    TinyAIMmapConfig config = tinyaiCreateDefaultMmapConfig();
    config.maxCacheSize = (size_t)strtoull(argv[2], NULL, 10);
    int passes = atoi(argv[3]);
    FILE *file = fopen(argv[1], "rb");
    CHECK(file != NULL);
    TinyAIMappedModel *model = tinyaiOpenMappedModel(argv[1], &config);
    CHECK(model != NULL);
    int count = tinyaiGetMappedLayerCount(model);
    size_t peak = 0;
    for (int pass = 0; pass < passes; pass++) {
        for (int i = 0; i < count; i++) {
            const unsigned char *weights = tinyaiGetLayerWeights(model, i);
            CHECK(weights != NULL);
            TinyAILayerDescriptor copy;
            CHECK(tinyaiCopyLayerDescriptor(model, i, &copy));
            unsigned char edges[2][16];
            CHECK(copy.size >= 16);
            CHECK(fseek(file, (long)copy.offset, SEEK_SET) == 0);
            CHECK(fread(edges[0], 1, 16, file) == 16);
            CHECK(fseek(file, (long)(copy.offset + copy.size - 16), SEEK_SET) == 0);
            CHECK(fread(edges[1], 1, 16, file) == 16);
            CHECK(memcmp(weights, edges[0], 16) == 0);
            CHECK(memcmp(weights + copy.size - 16, edges[1], 16) == 0);
            size_t usage = tinyaiGetMappedModelMemoryUsage(model);
            if (usage > peak) peak = usage;
            CHECK(usage <= config.maxCacheSize);
            if (i + 1 < count) {
                (void)tinyaiPrefetchLayerWeights(model, i + 1);
                usage = tinyaiGetMappedModelMemoryUsage(model);
                CHECK(usage <= config.maxCacheSize);
            }
        }
    }
    fclose(file);
    printf("peak usage %zu of %zu\n", peak, config.maxCacheSize);
    tinyaiCloseMappedModel(model);
    printf("stream: ok\n");
    return 0;
}
