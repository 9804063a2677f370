/* Three threads each hold the layer they got last and write into it while
 * three others churn (gets, prefetches, releases) under a budget of eight of
 * the model's layers: each holder's writes survive until its own next get,
 * and tinyaiGetMappedModelMemoryUsage never exceeds maxCacheSize.
 *
 * argv: model path (at least 16 layers of equal size). */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <time.h>

#include "check.h"

#define HOLDERS 3
#define CHURNERS 3
#define ROUNDS 300

static TinyAIMappedModel *model;
static int count;
static size_t budget;
static atomic_int stop;
static atomic_long over;

static void over_budget_check(void) {
    if (tinyaiGetMappedModelMemoryUsage(model) > budget) atomic_fetch_add(&over, 1);
}

static void *churn(void *argument) {
    unsigned seed = (unsigned)(uintptr_t)argument;
    while (!atomic_load(&stop)) {
        int index = (int)(rand_r(&seed) % (unsigned)count);
        switch (rand_r(&seed) % 8) {
        case 0: case 1: case 2: case 3: case 4:
            if (!tinyaiGetLayerWeights(model, index)) atomic_fetch_add(&over, 1000000);
            break;
        case 5: case 6:
            (void)tinyaiPrefetchLayerWeights(model, index);
            break;
        default:
            tinyaiReleaseLayerWeights(model, index);
            break;
        }
        over_budget_check();
    }
    return NULL;
}

static void *hold(void *argument) {
    long thread = (long)(uintptr_t)argument;
    long lost = 0;
    for (long round = 0; round < ROUNDS; round++) {
        int index = (int)((thread * 11 + round * 7) % count);
        unsigned char *weights = tinyaiGetLayerWeights(model, index);
        if (!weights) return (void *)(uintptr_t)1000000;
        unsigned char *at = weights + 100 + 8 * thread; /* only this thread's bytes */
        uint64_t marker = ((uint64_t)thread << 56) | (uint64_t)round, original, seen;
        memcpy(&original, at, sizeof original);
        memcpy(at, &marker, sizeof marker);
        struct timespec pause = {0, 300 * 1000};
        nanosleep(&pause, NULL);
        memcpy(&seen, at, sizeof seen);
        if (seen != marker) lost++;
        memcpy(at, &original, sizeof original);
        over_budget_check();
    }
    return (void *)(uintptr_t)lost;
}

int main(int argc, char **argv) {
    CHECK(argc == 2);
    TinyAIMmapConfig config = tinyaiCreateDefaultMmapConfig();
    model = tinyaiOpenMappedModel(argv[1], &config);
    CHECK(model != NULL);
    count = tinyaiGetMappedLayerCount(model);
    CHECK(count >= 16);
    size_t layer = tinyaiGetLayerDescriptor(model, 0)->size;
    tinyaiCloseMappedModel(model);

    config.maxCacheSize = 8 * layer;
    config.prefetchThreads = 2;
    budget = config.maxCacheSize;
    model = tinyaiOpenMappedModel(argv[1], &config);
    CHECK(model != NULL);

    pthread_t churners[CHURNERS], holders[HOLDERS];
    for (long i = 0; i < CHURNERS; i++)
        CHECK(pthread_create(&churners[i], NULL, churn, (void *)(uintptr_t)(77 + i)) == 0);
    for (long i = 0; i < HOLDERS; i++)
        CHECK(pthread_create(&holders[i], NULL, hold, (void *)(uintptr_t)i) == 0);
    long lost = 0;
    for (int i = 0; i < HOLDERS; i++) {
        void *result = NULL;
        CHECK(pthread_join(holders[i], &result) == 0);
        lost += (long)(uintptr_t)result;
    }
    atomic_store(&stop, 1);
    for (int i = 0; i < CHURNERS; i++) CHECK(pthread_join(churners[i], NULL) == 0);

    TinyAIMmapStats stats;
    CHECK(tinyaiGetMappedModelStats(model, &stats));
    printf("lost %ld, over budget %ld, evictions %llu\n", lost, atomic_load(&over),
           (unsigned long long)stats.evictions);
    CHECK(lost == 0);
    CHECK(atomic_load(&over) == 0);
    CHECK(stats.evictions > 100);
    tinyaiCloseMappedModel(model);
    printf("holders: ok\n");
    return 0;
}
