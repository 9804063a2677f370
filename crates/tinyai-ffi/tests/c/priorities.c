/* Priorities change what stays cached, as documented in the header: on
 * repeated passes over a model larger than maxCacheSize, the last layer of a
 * pass is streamed at the default priority but kept at priority 1.0; reset
 * returns every priority to 0.5.
 *
 * argv: model path (equal layers), maxCacheSize in bytes (room for a few). */
#include "check.h"

static int passes_then_last_is_active(const char *path, size_t budget, int protect) {
    TinyAIMmapConfig config = tinyaiCreateDefaultMmapConfig();
    config.maxCacheSize = budget;
    config.prefetchEnabled = false; /* only the accesses below decide */
    TinyAIMappedModel *model = tinyaiOpenMappedModel(path, &config);
    CHECK(model != NULL);
    int count = tinyaiGetMappedLayerCount(model);
    CHECK(count >= 8);
    int last = count - 1;
    if (protect) {
        tinyaiSetLayerPriority(model, last, 1.0f);
        CHECK_NO_ERROR();
        const TinyAILayerDescriptor *descriptor = tinyaiGetLayerDescriptor(model, last);
        CHECK(descriptor != NULL && descriptor->priority == 1.0f);
    }
    for (int pass = 0; pass < 4; pass++) {
        for (int i = 0; i < count; i++) {
            CHECK(tinyaiGetLayerWeights(model, i) != NULL);
        }
    }
    /* A few more layers, so the last one is no longer among the recently
     * returned (pinned) ones. */
    for (int i = 0; i < 3; i++) {
        CHECK(tinyaiGetLayerWeights(model, i) != NULL);
    }
    const TinyAILayerDescriptor *descriptor = tinyaiGetLayerDescriptor(model, last);
    CHECK(descriptor != NULL);
    int active = descriptor->isActive;
    CHECK(tinyaiGetMappedModelMemoryUsage(model) <= budget + 2 * descriptor->size + 8192);

    tinyaiResetLayerPriorities(model);
    for (int i = 0; i < count; i++) {
        descriptor = tinyaiGetLayerDescriptor(model, i);
        CHECK(descriptor != NULL && descriptor->priority == 0.5f);
    }
    tinyaiCloseMappedModel(model);
    return active;
}

int main(int argc, char **argv) {
    CHECK(argc == 3);
    size_t budget = (size_t)strtoull(argv[2], NULL, 10);
    CHECK(!passes_then_last_is_active(argv[1], budget, 0));
    CHECK(passes_then_last_is_active(argv[1], budget, 1));
    printf("priorities: ok\n");
    return 0;
}
