/* Error paths: every function with a NULL model, NULL and bad paths, malformed
 * files, bad indices and absurd configurations. Nothing may crash; every
 * failure returns the documented error value and sets tinyaiGetLastError().
 *
 * argv: valid model, then paths that must fail to open (missing file,
 * directory, malformed files). */
#include <limits.h>
#include <math.h>
#include <stddef.h>

#include "check.h"

/* The seed's struct layout: fields in the documented order. */
_Static_assert(offsetof(TinyAILayerDescriptor, offset) == 0, "offset first");
_Static_assert(offsetof(TinyAILayerDescriptor, size) > offsetof(TinyAILayerDescriptor, offset), "order");
_Static_assert(offsetof(TinyAILayerDescriptor, layerIndex) > offsetof(TinyAILayerDescriptor, size), "order");
_Static_assert(offsetof(TinyAILayerDescriptor, precision) > offsetof(TinyAILayerDescriptor, layerIndex), "order");
_Static_assert(offsetof(TinyAILayerDescriptor, cachedWeights) > offsetof(TinyAILayerDescriptor, precision), "order");
_Static_assert(offsetof(TinyAILayerDescriptor, isActive) > offsetof(TinyAILayerDescriptor, cachedWeights), "order");
_Static_assert(offsetof(TinyAILayerDescriptor, priority) > offsetof(TinyAILayerDescriptor, isActive), "order");
_Static_assert(offsetof(TinyAILayerDescriptor, lastAccessed) > offsetof(TinyAILayerDescriptor, priority), "order");
_Static_assert(offsetof(TinyAILayerDescriptor, accessCount) > offsetof(TinyAILayerDescriptor, lastAccessed), "order");
_Static_assert(offsetof(TinyAIMmapConfig, maxCacheSize) == 0, "order");
_Static_assert(offsetof(TinyAIMmapConfig, prefetchEnabled) > offsetof(TinyAIMmapConfig, maxCacheSize), "order");
_Static_assert(offsetof(TinyAIMmapConfig, prefetchThreads) > offsetof(TinyAIMmapConfig, prefetchEnabled), "order");
_Static_assert(offsetof(TinyAIMmapConfig, adaptiveCaching) > offsetof(TinyAIMmapConfig, prefetchThreads), "order");
_Static_assert(offsetof(TinyAIMmapConfig, minLayerCacheSize) > offsetof(TinyAIMmapConfig, adaptiveCaching), "order");

static void null_model_everywhere(void) {
    CHECK(tinyaiGetLastError() == NULL);
    CHECK(tinyaiGetMappedLayerCount(NULL) == -1);
    CHECK_ERROR_SET();
    CHECK(strstr(tinyaiGetLastError(), "NULL") != NULL);
    CHECK(tinyaiGetLayerDescriptor(NULL, 0) == NULL);
    CHECK_ERROR_SET();
    CHECK(tinyaiGetLayerWeights(NULL, 0) == NULL);
    CHECK_ERROR_SET();
    CHECK(!tinyaiPrefetchLayerWeights(NULL, 0));
    CHECK_ERROR_SET();
    tinyaiReleaseLayerWeights(NULL, 0);
    CHECK_ERROR_SET();
    CHECK(tinyaiGetMappedModelMemoryUsage(NULL) == 0);
    CHECK_ERROR_SET();
    tinyaiSetLayerPriority(NULL, 0, 1.0f);
    CHECK_ERROR_SET();
    tinyaiResetLayerPriorities(NULL);
    CHECK_ERROR_SET();
    tinyaiCloseMappedModel(NULL); /* documented no-op */
    CHECK_NO_ERROR();
    TinyAIMmapStats stats;
    CHECK(!tinyaiGetMappedModelStats(NULL, &stats));
    CHECK_ERROR_SET();
    TinyAILayerDescriptor descriptor;
    CHECK(!tinyaiCopyLayerDescriptor(NULL, 0, &descriptor));
    CHECK_ERROR_SET();
    size_t size = 12345;
    CHECK(tinyaiGetTensorData(NULL, 0, "t0", &size) == NULL);
    CHECK(size == 0);
    CHECK_ERROR_SET();
    CHECK(!tinyaiLoadAllLayers(NULL));
    CHECK_ERROR_SET();
}

static void bad_configurations(const char *valid) {
    TinyAIMmapConfig config = tinyaiCreateDefaultMmapConfig();
    CHECK(config.maxCacheSize == 256u * 1024 * 1024);
    CHECK(config.prefetchEnabled);
    CHECK(config.prefetchThreads == 1);
    CHECK(config.adaptiveCaching);
    CHECK(config.minLayerCacheSize == 4096);

    int bad_threads[] = {-1, INT_MIN, 65, INT_MAX};
    for (size_t i = 0; i < sizeof bad_threads / sizeof bad_threads[0]; i++) {
        config = tinyaiCreateDefaultMmapConfig();
        config.prefetchThreads = bad_threads[i];
        CHECK(tinyaiOpenMappedModel(valid, &config) == NULL);
        CHECK_ERROR_SET();
        CHECK(strstr(tinyaiGetLastError(), "prefetch") != NULL);
    }
    config = tinyaiCreateDefaultMmapConfig();
    config.maxCacheSize = 0;
    CHECK(tinyaiOpenMappedModel(valid, &config) == NULL);
    CHECK_ERROR_SET();

    int good_threads[] = {0, 64};
    for (size_t i = 0; i < 2; i++) {
        config = tinyaiCreateDefaultMmapConfig();
        config.prefetchThreads = good_threads[i];
        config.prefetchEnabled = i == 0;
        config.adaptiveCaching = i == 1;
        config.maxCacheSize = 1; /* tiny but legal: layers are served outside the cache */
        TinyAIMappedModel *model = tinyaiOpenMappedModel(valid, &config);
        CHECK(model != NULL);
        CHECK_NO_ERROR();
        CHECK(tinyaiGetLayerWeights(model, 0) != NULL);
        tinyaiCloseMappedModel(model);
    }

    TinyAIMmapOptions options = {0};
    options.backend = 7;
    CHECK(tinyaiOpenMappedModelEx(valid, NULL, &options) == NULL);
    CHECK_ERROR_SET();
    options.backend = -1;
    CHECK(tinyaiOpenMappedModelEx(valid, NULL, &options) == NULL);
    CHECK_ERROR_SET();
}

static void bad_indices(const char *valid) {
    TinyAIMappedModel *model = tinyaiOpenMappedModel(valid, NULL);
    CHECK(model != NULL);
    CHECK_NO_ERROR();
    int count = tinyaiGetMappedLayerCount(model);
    CHECK(count > 0);
    CHECK_NO_ERROR();
    int bad[] = {-1, -2, INT_MIN, count, count + 1, INT_MAX};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int index = bad[i];
        CHECK(tinyaiGetLayerWeights(model, index) == NULL);
        CHECK_ERROR_SET();
        CHECK(strstr(tinyaiGetLastError(), "out of range") != NULL);
        CHECK(tinyaiGetLayerDescriptor(model, index) == NULL);
        CHECK_ERROR_SET();
        CHECK(!tinyaiPrefetchLayerWeights(model, index));
        CHECK_ERROR_SET();
        tinyaiReleaseLayerWeights(model, index);
        CHECK_ERROR_SET();
        tinyaiSetLayerPriority(model, index, 0.9f);
        CHECK_ERROR_SET();
        TinyAILayerDescriptor descriptor;
        CHECK(!tinyaiCopyLayerDescriptor(model, index, &descriptor));
        CHECK_ERROR_SET();
        size_t size = 1;
        CHECK(tinyaiGetTensorData(model, index, "t0", &size) == NULL);
        CHECK(size == 0);
        CHECK_ERROR_SET();
    }

    /* Success clears the last error. */
    CHECK(tinyaiGetLayerWeights(model, 0) != NULL);
    CHECK_NO_ERROR();

    /* Bad arguments of the extensions. */
    size_t size = 1;
    CHECK(tinyaiGetTensorData(model, 0, NULL, &size) == NULL);
    CHECK_ERROR_SET();
    CHECK(tinyaiGetTensorData(model, 0, "no such tensor", &size) == NULL);
    CHECK(size == 0);
    CHECK_ERROR_SET();
    CHECK(strstr(tinyaiGetLastError(), "no such tensor") != NULL);
    CHECK(tinyaiGetTensorData(model, 0, "\xff\xfe", NULL) == NULL);
    CHECK_ERROR_SET();
    CHECK(tinyaiGetTensorData(model, 0, "t0", NULL) != NULL);
    CHECK_NO_ERROR();
    CHECK(!tinyaiGetMappedModelStats(model, NULL));
    CHECK_ERROR_SET();
    CHECK(!tinyaiCopyLayerDescriptor(model, 0, NULL));
    CHECK_ERROR_SET();

    /* Priorities are stored as given; NaN and infinities are refused. */
    tinyaiSetLayerPriority(model, 0, 5.0f);
    CHECK_NO_ERROR();
    CHECK(tinyaiGetLayerDescriptor(model, 0)->priority == 5.0f);
    tinyaiSetLayerPriority(model, 0, -5.0f);
    CHECK(tinyaiGetLayerDescriptor(model, 0)->priority == -5.0f);
    tinyaiSetLayerPriority(model, 0, NAN);
    CHECK_ERROR_SET();
    CHECK(tinyaiGetLayerDescriptor(model, 0)->priority == -5.0f);
    tinyaiSetLayerPriority(model, 0, INFINITY);
    CHECK_ERROR_SET();
    CHECK(tinyaiGetLayerDescriptor(model, 0)->priority == -5.0f);
    tinyaiResetLayerPriorities(model);
    CHECK_NO_ERROR();
    CHECK(tinyaiGetLayerDescriptor(model, 0)->priority == 1.0f);

    /* Releasing a layer twice, or one never loaded, is fine. */
    tinyaiReleaseLayerWeights(model, 0);
    tinyaiReleaseLayerWeights(model, 0);
    tinyaiReleaseLayerWeights(model, count - 1);
    CHECK_NO_ERROR();
    tinyaiCloseMappedModel(model);
}

int main(int argc, char **argv) {
    CHECK(argc >= 4);
    null_model_everywhere();

    CHECK(tinyaiOpenMappedModel(NULL, NULL) == NULL);
    CHECK_ERROR_SET();
    CHECK(strstr(tinyaiGetLastError(), "filepath") != NULL);
    CHECK(tinyaiOpenMappedModelEx(NULL, NULL, NULL) == NULL);
    CHECK_ERROR_SET();
    CHECK(tinyaiOpenMappedModel("", NULL) == NULL);
    CHECK_ERROR_SET();

    for (int i = 2; i < argc; i++) {
        TinyAIMmapConfig config = tinyaiCreateDefaultMmapConfig();
        CHECK(tinyaiOpenMappedModel(argv[i], NULL) == NULL);
        CHECK_ERROR_SET();
        printf("refused %s: %s\n", argv[i], tinyaiGetLastError());
        CHECK(tinyaiOpenMappedModel(argv[i], &config) == NULL);
        CHECK_ERROR_SET();
        TinyAIMmapOptions options = {0};
        options.backend = TINYAI_BACKEND_OWNED;
        CHECK(tinyaiOpenMappedModelEx(argv[i], &config, &options) == NULL);
        CHECK_ERROR_SET();
    }

    /* A path that is not UTF-8 is just bytes: it opens. */
    {
        size_t size = 0;
        unsigned char *bytes = read_whole_file(argv[1], &size);
        const char *odd_name = "model-\xff\xfe.tmai";
        FILE *copy = fopen(odd_name, "wb");
        CHECK(copy != NULL);
        CHECK(fwrite(bytes, 1, size, copy) == size);
        CHECK(fclose(copy) == 0);
        TinyAIMappedModel *model = tinyaiOpenMappedModel(odd_name, NULL);
        CHECK(model != NULL);
        CHECK(tinyaiGetMappedLayerCount(model) > 0);
        tinyaiCloseMappedModel(model);
        CHECK(remove(odd_name) == 0);
        CHECK(tinyaiOpenMappedModel("missing-\xff.tmai", NULL) == NULL);
        CHECK_ERROR_SET();
        free(bytes);
    }

    bad_configurations(argv[1]);
    bad_indices(argv[1]);
    printf("errors: ok\n");
    return 0;
}
