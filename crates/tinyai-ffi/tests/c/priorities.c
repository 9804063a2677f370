/* Priorities are TinyAI's: any finite float, read back exactly as set, 1.0 by
 * default, NaN and infinities refused. They change what stays cached, as
 * documented in the header: on repeated passes over a model larger than
 * maxCacheSize, the last layer of a pass is streamed at the default priority
 * but kept at priority 3.0; reset returns every priority to 1.0.
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
    {
        const TinyAILayerDescriptor *descriptor = tinyaiGetLayerDescriptor(model, last);
        CHECK(descriptor != NULL && descriptor->priority == 1.0f); /* TinyAI's default */
    }
    if (protect) {
        tinyaiSetLayerPriority(model, last, 3.0f);
        CHECK_NO_ERROR();
        const TinyAILayerDescriptor *descriptor = tinyaiGetLayerDescriptor(model, last);
        CHECK(descriptor != NULL && descriptor->priority == 3.0f);
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
    CHECK_NO_ERROR();
    for (int i = 0; i < count; i++) {
        descriptor = tinyaiGetLayerDescriptor(model, i);
        CHECK(descriptor != NULL && descriptor->priority == 1.0f);
    }
    tinyaiCloseMappedModel(model);
    return active;
}

/* Any finite value is stored as given; NaN and infinities are refused, with
 * the last error set and the priority unchanged. */
static void values_read_back_exactly(const char *path) {
    TinyAIMmapConfig config = tinyaiCreateDefaultMmapConfig();
    TinyAIMappedModel *model = tinyaiOpenMappedModel(path, &config);
    CHECK(model != NULL);
    const float values[] = {100.0f, -3.5f, 1e30f, 0.0f, 0.5f, -0.0f, 1e-30f};
    for (size_t k = 0; k < sizeof values / sizeof values[0]; k++) {
        tinyaiSetLayerPriority(model, 2, values[k]);
        CHECK_NO_ERROR();
        TinyAILayerDescriptor copy;
        CHECK(tinyaiCopyLayerDescriptor(model, 2, &copy));
        CHECK(memcmp(&copy.priority, &values[k], sizeof(float)) == 0);
    }
    const float refused[] = {__builtin_nanf(""), __builtin_inff(), -__builtin_inff()};
    for (size_t k = 0; k < sizeof refused / sizeof refused[0]; k++) {
        tinyaiSetLayerPriority(model, 2, refused[k]);
        CHECK_ERROR_SET();
        TinyAILayerDescriptor copy;
        CHECK(tinyaiCopyLayerDescriptor(model, 2, &copy));
        CHECK(copy.priority == 1e-30f); /* unchanged */
    }
    tinyaiCloseMappedModel(model);
}

int main(int argc, char **argv) {
    CHECK(argc == 3);
    size_t budget = (size_t)strtoull(argv[2], NULL, 10);
    values_read_back_exactly(argv[1]);
    CHECK(!passes_then_last_is_active(argv[1], budget, 0));
    CHECK(passes_then_last_is_active(argv[1], budget, 1));
    printf("priorities: ok\n");
    return 0;
}
