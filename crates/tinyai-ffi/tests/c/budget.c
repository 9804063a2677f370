/* The cache budget holds over repeated passes over a model several times
 * larger than maxCacheSize, and every layer's bytes equal the file's (read
 * here with fread). Pointers stay valid after eviction (mapped backend).
 *
 * argv: model path, maxCacheSize in bytes. */
#define _POSIX_C_SOURCE 200809L
#include <stdint.h>
#include <unistd.h>

#include "check.h"

static size_t charge_of(size_t size, size_t page, size_t minimum) {
    size_t rounded = (size + page - 1) / page * page;
    return rounded > minimum ? rounded : minimum;
}

int main(int argc, char **argv) {
    CHECK(argc == 3);
    size_t budget = (size_t)strtoull(argv[2], NULL, 10);
    size_t file_size = 0;
    unsigned char *file = read_whole_file(argv[1], &file_size);
    size_t page = (size_t)sysconf(_SC_PAGESIZE);

    TinyAIMmapConfig config = tinyaiCreateDefaultMmapConfig();
    config.maxCacheSize = budget;
    TinyAIMappedModel *model = tinyaiOpenMappedModel(argv[1], &config);
    CHECK(model != NULL);
    int count = tinyaiGetMappedLayerCount(model);
    CHECK(count > 0);

    size_t total = 0, largest_charge = 0;
    for (int i = 0; i < count; i++) {
        const TinyAILayerDescriptor *descriptor = tinyaiGetLayerDescriptor(model, i);
        CHECK(descriptor != NULL);
        CHECK(descriptor->layerIndex == i);
        CHECK(!descriptor->isActive);
        CHECK(descriptor->cachedWeights == NULL);
        CHECK(descriptor->accessCount == 0);
        CHECK(descriptor->lastAccessed == 0);
        total += descriptor->size;
        size_t charge = charge_of(descriptor->size, page, config.minLayerCacheSize);
        if (charge > largest_charge) largest_charge = charge;
    }
    CHECK(total >= 4 * budget); /* the model is at least 4x the budget */
    /* The budget holds at every moment, the layers each thread keeps included
     * (every layer here fits in the budget). */
    const size_t bound = budget;
    CHECK(largest_charge <= budget);

    void **first_pointers = calloc((size_t)count, sizeof(void *));
    CHECK(first_pointers != NULL);

    /* Passes with get + release, as in the seed example. */
    for (int pass = 0; pass < 3; pass++) {
        for (int i = 0; i < count; i++) {
            void *weights = tinyaiGetLayerWeights(model, i);
            CHECK(weights != NULL);
            if (pass == 0) first_pointers[i] = weights;
            CHECK(weights == first_pointers[i]); /* mapped: one address per layer */
            const TinyAILayerDescriptor *descriptor = tinyaiGetLayerDescriptor(model, i);
            CHECK(descriptor != NULL);
            CHECK(descriptor->isActive);
            CHECK(descriptor->cachedWeights == weights);
            CHECK(descriptor->accessCount == (uint64_t)pass + 1);
            CHECK(descriptor->lastAccessed > 1600000000000ull); /* ms since the epoch */
            CHECK(descriptor->offset + descriptor->size <= file_size);
            CHECK(memcmp(weights, file + descriptor->offset, descriptor->size) == 0);
            CHECK(tinyaiGetMappedModelMemoryUsage(model) <= bound);
            tinyaiReleaseLayerWeights(model, i);
            CHECK(tinyaiGetMappedModelMemoryUsage(model) <= bound);
        }
    }

    /* Passes without release: eviction alone keeps the budget; forward,
     * backward and strided. */
    for (int pass = 0; pass < 3; pass++) {
        for (int k = 0; k < count; k++) {
            int i = pass == 0 ? k : pass == 1 ? count - 1 - k : (k * 7) % count;
            void *weights = tinyaiGetLayerWeights(model, i);
            CHECK(weights != NULL);
            check_layer_matches_file(model, i, weights, file, file_size);
            CHECK(tinyaiGetMappedModelMemoryUsage(model) <= bound);
        }
    }

    /* Prefetching everything cannot overflow the budget either. */
    for (int i = 0; i < count; i++) {
        (void)tinyaiPrefetchLayerWeights(model, i);
        CHECK(tinyaiGetMappedModelMemoryUsage(model) <= bound);
    }

    /* High-priority layers survive a scan better; the budget still holds. */
    tinyaiSetLayerPriority(model, 0, 1.0f);
    tinyaiSetLayerPriority(model, 1, 1.0f);
    for (int i = 0; i < count; i++) {
        CHECK(tinyaiGetLayerWeights(model, i) != NULL);
        CHECK(tinyaiGetMappedModelMemoryUsage(model) <= bound);
    }
    tinyaiResetLayerPriorities(model);

    /* Pointers from the first pass are still valid and still right, although
     * their layers were evicted and released many times since. */
    for (int i = 0; i < count; i++) {
        check_layer_matches_file(model, i, first_pointers[i], file, file_size);
    }

    TinyAIMmapStats stats;
    CHECK(tinyaiGetMappedModelStats(model, &stats));
    CHECK(stats.misses > 0);
    CHECK(stats.evictions > 0);
    CHECK(stats.cachedBytes <= budget);
    printf("hits %llu misses %llu evictions %llu bytesRead %llu usage %zu bound %zu\n",
           (unsigned long long)stats.hits, (unsigned long long)stats.misses,
           (unsigned long long)stats.evictions, (unsigned long long)stats.bytesRead,
           tinyaiGetMappedModelMemoryUsage(model), bound);

    /* Releasing everything leaves at most what prefetch threads just loaded. */
    for (int i = 0; i < count; i++) tinyaiReleaseLayerWeights(model, i);
    CHECK(tinyaiGetMappedModelMemoryUsage(model) <= bound);

    tinyaiCloseMappedModel(model);
    free(first_pointers);
    free(file);
    printf("budget: ok\n");
    return 0;
}
