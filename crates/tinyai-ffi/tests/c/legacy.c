/* A legacy v1 file written here exactly as the original TinyAI C test
 * generator wrote it (10 layers of 1 MiB, data right after the 256-byte
 * header and the 32-byte table entries, layer i filled with the byte i,
 * name "Test Model", precision 4), then read through the seed API.
 *
 * argv: path of the file to create. */
#include <stdint.h>

#include "check.h"

#define LAYER_COUNT 10
#define LAYER_SIZE (1024 * 1024)

static void generate(const char *path) {
    FILE *file = fopen(path, "wb");
    CHECK(file != NULL);
    uint32_t header[64] = {0};
    header[0] = 0x544D4149; /* magic */
    header[1] = 1;          /* version */
    header[2] = LAYER_COUNT;
    memcpy((char *)header + 16, "Test Model", strlen("Test Model"));
    CHECK(fwrite(header, 1, 256, file) == 256);
    for (uint32_t i = 0; i < LAYER_COUNT; i++) {
        uint32_t entry[8] = {0};
        entry[0] = 256 + LAYER_COUNT * 32 + i * LAYER_SIZE; /* offset */
        entry[1] = LAYER_SIZE;                              /* size */
        entry[2] = 4;                                       /* precision */
        CHECK(fwrite(entry, 1, 32, file) == 32);
    }
    unsigned char *data = malloc(LAYER_SIZE);
    CHECK(data != NULL);
    for (int i = 0; i < LAYER_COUNT; i++) {
        memset(data, i, LAYER_SIZE);
        CHECK(fwrite(data, 1, LAYER_SIZE, file) == LAYER_SIZE);
    }
    free(data);
    CHECK(fclose(file) == 0);
}

static void check_model(TinyAIMappedModel *model) {
    CHECK(model != NULL);
    CHECK(tinyaiGetMappedLayerCount(model) == LAYER_COUNT);
    for (int i = 0; i < LAYER_COUNT; i++) {
        const unsigned char *weights = tinyaiGetLayerWeights(model, i);
        CHECK(weights != NULL);
        for (size_t j = 0; j < LAYER_SIZE; j++) {
            if (weights[j] != (unsigned char)i) {
                fprintf(stderr, "layer %d byte %zu is %u\n", i, j, weights[j]);
                exit(1);
            }
        }
        const TinyAILayerDescriptor *descriptor = tinyaiGetLayerDescriptor(model, i);
        CHECK(descriptor != NULL);
        CHECK(descriptor->layerIndex == i);
        CHECK(descriptor->precision == 4);
        CHECK(descriptor->size == LAYER_SIZE);
        CHECK(descriptor->offset == 256 + LAYER_COUNT * 32 + (size_t)i * LAYER_SIZE);
        CHECK(descriptor->isActive);
        CHECK(descriptor->accessCount >= 1);
        /* Legacy layers have no named tensors. */
        size_t size = 1;
        CHECK(tinyaiGetTensorData(model, i, "weight", &size) == NULL && size == 0);
        if (i % 2 == 0) tinyaiReleaseLayerWeights(model, i);
    }
    tinyaiCloseMappedModel(model);
}

int main(int argc, char **argv) {
    CHECK(argc == 2);
    generate(argv[1]);

    check_model(tinyaiOpenMappedModel(argv[1], NULL));

    TinyAIMmapConfig config = tinyaiCreateDefaultMmapConfig();
    config.maxCacheSize = 3 * LAYER_SIZE; /* smaller than the model */
    check_model(tinyaiOpenMappedModel(argv[1], &config));

    TinyAIMmapOptions options = {0};
    options.backend = TINYAI_BACKEND_OWNED;
    options.verifyChecksums = true; /* nothing to verify in v1: accepted */
    check_model(tinyaiOpenMappedModelEx(argv[1], &config, &options));

    printf("legacy: ok\n");
    return 0;
}
