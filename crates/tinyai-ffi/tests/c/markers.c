/* Pinned layers keep what C code writes into them (the store-core issue's
 * defect 1, through the C API): eight threads run mixed gets, prefetches,
 * releases and priority changes on a model much larger than the budget. Each
 * thread writes a marker into a layer it just got (through the returned
 * pointer, at its own offset), keeps that layer among the two it most
 * recently got (so the library keeps it pinned for this thread), does other
 * work — including releases, by any thread, of any layer — and checks the
 * marker before moving on. A re-read from the file would not carry it. The
 * bytes no thread marks are checked against the file.
 *
 * argv: model path, operations in total (over all threads). */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdint.h>

#include "check.h"

#define WORKERS 8

typedef struct {
    TinyAIMappedModel *model;
    const unsigned char *file;
    size_t file_size;
    int count;
    long operations;
    unsigned seed;
    int thread;
    size_t budget;
    long failures;
    long checked;
} Work;

static size_t marker_offset(int thread) { return 64 + 8 * (size_t)thread; }

static int unmarked_bytes_match(const Work *work, int index, const unsigned char *weights) {
    TinyAILayerDescriptor copy;
    if (!tinyaiCopyLayerDescriptor(work->model, index, &copy)) return 0;
    const unsigned char *expected = work->file + copy.offset;
    /* The first 64 bytes and the last 64 are never marked. */
    return memcmp(weights, expected, 64) == 0 &&
           memcmp(weights + copy.size - 64, expected + copy.size - 64, 64) == 0;
}

static void *worker(void *argument) {
    Work *work = argument;
    unsigned seed = work->seed;
    size_t offset = marker_offset(work->thread);
    long done = 0;
    while (done < work->operations) {
        int marked = (int)(rand_r(&seed) % (unsigned)work->count);
        unsigned char *weights = tinyaiGetLayerWeights(work->model, marked);
        done++;
        if (tinyaiGetMappedModelMemoryUsage(work->model) > work->budget) {
            if (work->failures < 5) fprintf(stderr, "usage above maxCacheSize\n");
            work->failures++;
        }
        if (!weights || !unmarked_bytes_match(work, marked, weights)) {
            if (work->failures < 5) fprintf(stderr, "layer %d wrong: %s\n", marked, last_error_text());
            work->failures++;
            continue;
        }
        uint64_t marker = ((uint64_t)work->thread << 56) | (uint64_t)done;
        uint64_t original;
        memcpy(&original, weights + offset, sizeof original);
        memcpy(weights + offset, &marker, sizeof marker);
        /* Other work; at most one other get, so `marked` stays among this
         * thread's two most recent layers (pinned for it). */
        int gets = 0;
        for (int step = 0; step < 6; step++, done++) {
            int index = (int)(rand_r(&seed) % (unsigned)work->count);
            switch (rand_r(&seed) % 4) {
            case 0:
                if (gets++ == 0 && index != marked) {
                    const unsigned char *other = tinyaiGetLayerWeights(work->model, index);
                    if (!other || !unmarked_bytes_match(work, index, other)) work->failures++;
                }
                break;
            case 1:
                (void)tinyaiPrefetchLayerWeights(work->model, index);
                break;
            case 2:
                /* Any layer but the one this thread marked (releasing it
                 * would unpin it for us). Other threads release it too: a
                 * release must not drop the pages of a layer a thread pins. */
                if (index != marked) tinyaiReleaseLayerWeights(work->model, index);
                break;
            default:
                tinyaiSetLayerPriority(work->model, index, (float)(rand_r(&seed) % 101) / 100.0f);
                break;
            }
        }
        uint64_t seen;
        memcpy(&seen, weights + offset, sizeof seen);
        if (seen != marker) {
            if (work->failures < 5)
                fprintf(stderr, "thread %d: the marker in pinned layer %d vanished\n",
                        work->thread, marked);
            work->failures++;
        }
        memcpy(weights + offset, &original, sizeof original);
        work->checked++;
    }
    return NULL;
}

int main(int argc, char **argv) {
    CHECK(argc == 3);
    long operations = atol(argv[2]);
    CHECK(operations > 0);
    size_t file_size = 0;
    unsigned char *file = read_whole_file(argv[1], &file_size);

    TinyAIMmapConfig config = tinyaiCreateDefaultMmapConfig();
    /* Room for every thread's kept layers twice over (the cache's share of
     * the budget leaves out room for read-ahead): the library keeps them
     * within the budget (under a smaller one, older layers give way first:
     * see the header's pointer-lifetime notes). Still smaller than the
     * model, so layers are evicted all the time. */
    config.maxCacheSize = 2 * WORKERS * TINYAI_MAPPED_PINNED_LAYERS * 32 * 1024;
    config.prefetchThreads = 2;
    TinyAIMappedModel *model = tinyaiOpenMappedModel(argv[1], &config);
    CHECK(model != NULL);
    int count = tinyaiGetMappedLayerCount(model);
    CHECK(count >= 24);

    pthread_t threads[WORKERS];
    Work work[WORKERS];
    for (int i = 0; i < WORKERS; i++) {
        work[i] = (Work){model, file, file_size, count, operations / WORKERS, 7000u + (unsigned)i,
                         i, config.maxCacheSize, 0, 0};
        CHECK(pthread_create(&threads[i], NULL, worker, &work[i]) == 0);
    }
    long failures = 0, checked = 0;
    for (int i = 0; i < WORKERS; i++) {
        CHECK(pthread_join(threads[i], NULL) == 0);
        failures += work[i].failures;
        checked += work[i].checked;
    }
    TinyAIMmapStats stats;
    CHECK(tinyaiGetMappedModelStats(model, &stats));
    printf("markers checked %ld, failures %ld, evictions %llu\n", checked, failures,
           (unsigned long long)stats.evictions);
    CHECK(failures == 0);
    CHECK(stats.evictions > 1000); /* enough eviction to test anything */
    tinyaiCloseMappedModel(model);
    free(file);
    printf("markers: ok\n");
    return 0;
}
