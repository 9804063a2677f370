/* Several threads share one model: gets (bytes checked against the file),
 * prefetches, releases, priorities, descriptors, tensor lookups and stats, all
 * at once, under a budget small enough to force constant eviction.
 *
 * argv: model path (a v2 fixture with tensors "t0" and "t1" per layer). */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdint.h>

#include "check.h"

#define WORKERS 4
#define ITERATIONS 600

typedef struct {
    TinyAIMappedModel *model;
    const unsigned char *file;
    size_t file_size;
    int count;
    unsigned seed;
    size_t budget;
    int failures;
} Work;

static void *worker(void *argument) {
    Work *work = argument;
    unsigned seed = work->seed;
    for (int iteration = 0; iteration < ITERATIONS; iteration++) {
        int index = (int)(rand_r(&seed) % (unsigned)work->count);
        switch (rand_r(&seed) % 10) {
        case 0: case 1: case 2: case 3: {
            void *weights = tinyaiGetLayerWeights(work->model, index);
            TinyAILayerDescriptor copy;
            if (!weights || !tinyaiCopyLayerDescriptor(work->model, index, &copy) ||
                copy.layerIndex != index || copy.offset + copy.size > work->file_size ||
                memcmp(weights, work->file + copy.offset, copy.size) != 0) {
                fprintf(stderr, "layer %d wrong: %s\n", index, last_error_text());
                work->failures++;
            }
            /* This thread's snapshot: no other thread writes it. */
            const TinyAILayerDescriptor *snapshot = tinyaiGetLayerDescriptor(work->model, index);
            if (!snapshot || snapshot->layerIndex != index || snapshot->size != copy.size ||
                snapshot->accessCount == 0) {
                work->failures++;
            }
            break;
        }
        case 4: case 5:
            (void)tinyaiPrefetchLayerWeights(work->model, index);
            if (tinyaiGetLastError() != NULL) work->failures++; /* declining is not an error */
            break;
        case 6:
            tinyaiReleaseLayerWeights(work->model, index);
            if (tinyaiGetLastError() != NULL) work->failures++;
            break;
        case 7:
            tinyaiSetLayerPriority(work->model, index, (float)(rand_r(&seed) % 101) / 100.0f);
            if (iteration % 97 == 0) tinyaiResetLayerPriorities(work->model);
            break;
        case 8: {
            size_t size = 0;
            const void *tensor = tinyaiGetTensorData(work->model, index, "t0", &size);
            TinyAILayerDescriptor copy;
            /* t0 is the first tensor: it starts the layer. */
            if (!tensor || size == 0 || !tinyaiCopyLayerDescriptor(work->model, index, &copy) ||
                size > copy.size || memcmp(tensor, work->file + copy.offset, size) != 0) {
                work->failures++;
            }
            break;
        }
        default: {
            TinyAIMmapStats stats;
            if (!tinyaiGetMappedModelStats(work->model, &stats) ||
                tinyaiGetMappedLayerCount(work->model) != work->count) {
                work->failures++;
            }
            break;
        }
        }
        /* The budget holds after every call, whatever the other threads do. */
        size_t usage = tinyaiGetMappedModelMemoryUsage(work->model);
        if (usage > work->budget) {
            fprintf(stderr, "usage %zu > maxCacheSize %zu\n", usage, work->budget);
            work->failures++;
        }
    }
    return NULL;
}

int main(int argc, char **argv) {
    CHECK(argc == 2);
    size_t file_size = 0;
    unsigned char *file = read_whole_file(argv[1], &file_size);

    TinyAIMmapConfig config = tinyaiCreateDefaultMmapConfig();
    config.maxCacheSize = 4 * 32 * 1024 + 4096; /* a handful of layers */
    config.prefetchThreads = 2;
    TinyAIMappedModel *model = tinyaiOpenMappedModel(argv[1], &config);
    CHECK(model != NULL);
    int count = tinyaiGetMappedLayerCount(model);
    CHECK(count > 4);

    pthread_t threads[WORKERS];
    Work work[WORKERS];
    for (int i = 0; i < WORKERS; i++) {
        work[i] = (Work){model, file, file_size, count, 1000u + (unsigned)i, config.maxCacheSize, 0};
        CHECK(pthread_create(&threads[i], NULL, worker, &work[i]) == 0);
    }
    int failures = 0;
    for (int i = 0; i < WORKERS; i++) {
        CHECK(pthread_join(threads[i], NULL) == 0);
        failures += work[i].failures;
    }
    CHECK(failures == 0);

    /* Quiescent: the budget holds. */
    CHECK(tinyaiGetMappedModelMemoryUsage(model) <= config.maxCacheSize);

    TinyAIMmapStats stats;
    CHECK(tinyaiGetMappedModelStats(model, &stats));
    CHECK(stats.hits + stats.misses > 0);
    CHECK(stats.evictions > 0);
    printf("hits %llu misses %llu evictions %llu prefetchIssued %llu\n",
           (unsigned long long)stats.hits, (unsigned long long)stats.misses,
           (unsigned long long)stats.evictions, (unsigned long long)stats.prefetchIssued);
    tinyaiCloseMappedModel(model);
    free(file);
    printf("threads: ok\n");
    return 0;
}
