/* The extensions: tinyaiOpenMappedModelEx with each backend, checksum
 * verification, the progress callback (and cancelling it), tensor lookup by
 * name, stats and tinyaiCopyLayerDescriptor; and the owned backend's pointer
 * contract (valid until release).
 *
 * argv: v2 model (layers of 2001 bytes: "t0" 1000 bytes, "t1" 1001 bytes),
 * small legacy v1 model. */
#include <stdint.h>

#include "check.h"

typedef struct {
    uint64_t calls, completed, total, bytes, cancel_after;
} Progress;

static bool on_progress(void *user_data, uint64_t completed, uint64_t total, uint64_t bytes) {
    Progress *progress = user_data;
    progress->calls++;
    CHECK(completed == progress->calls);
    CHECK(bytes >= progress->bytes);
    progress->completed = completed;
    progress->total = total;
    progress->bytes = bytes;
    return progress->cancel_after == 0 || completed < progress->cancel_after;
}

static void check_tensors(TinyAIMappedModel *model, int index, const unsigned char *file) {
    TinyAILayerDescriptor layer;
    CHECK(tinyaiCopyLayerDescriptor(model, index, &layer));
    size_t size0 = 0, size1 = 0;
    const unsigned char *t0 = tinyaiGetTensorData(model, index, "t0", &size0);
    const unsigned char *t1 = tinyaiGetTensorData(model, index, "t1", &size1);
    CHECK(t0 != NULL && t1 != NULL);
    CHECK_NO_ERROR();
    CHECK(size0 == 1000 && size1 == 1001);
    CHECK(t1 > t0);
    size_t t1_offset = (size_t)(t1 - t0); /* both inside the layer; t0 starts it */
    CHECK(t1_offset + size1 <= layer.size);
    CHECK(memcmp(t0, file + layer.offset, size0) == 0);
    CHECK(memcmp(t1, file + layer.offset + t1_offset, size1) == 0);
}

static void owned_backend(const char *path, int backend, const unsigned char *file,
                          size_t file_size) {
    Progress progress = {0};
    TinyAIMmapOptions options = {0};
    options.backend = backend;
    options.verifyChecksums = true;
    options.progress = on_progress;
    options.userData = &progress;
    TinyAIMmapConfig config = tinyaiCreateDefaultMmapConfig();
    config.maxCacheSize = 4096; /* one layer's charge: constant eviction */
    TinyAIMappedModel *model = tinyaiOpenMappedModelEx(path, &config, &options);
    CHECK(model != NULL);
    int count = tinyaiGetMappedLayerCount(model);
    CHECK(count == 6);

    CHECK(tinyaiLoadAllLayers(model));
    CHECK_NO_ERROR();
    CHECK(progress.calls == (uint64_t)count);
    CHECK(progress.total == (uint64_t)count);
    uint64_t model_bytes = 0;
    for (int i = 0; i < count; i++) {
        TinyAILayerDescriptor layer;
        CHECK(tinyaiCopyLayerDescriptor(model, i, &layer));
        model_bytes += layer.size;
    }
    CHECK(progress.bytes == model_bytes);

    /* Owned: the pointer stays valid (and pinned) until released, whatever else
     * is loaded meanwhile. */
    void *first = tinyaiGetLayerWeights(model, 1);
    CHECK(first != NULL);
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < count; i++) {
            void *weights = tinyaiGetLayerWeights(model, i);
            CHECK(weights != NULL);
            check_layer_matches_file(model, i, weights, file, file_size);
            check_tensors(model, i, file);
            if (i != 1) tinyaiReleaseLayerWeights(model, i);
        }
    }
    check_layer_matches_file(model, 1, first, file, file_size);
    TinyAILayerDescriptor descriptor;
    CHECK(tinyaiCopyLayerDescriptor(model, 1, &descriptor));
    CHECK(descriptor.cachedWeights == first); /* held: reported */
    CHECK(descriptor.isActive);
    tinyaiReleaseLayerWeights(model, 1);
    CHECK(tinyaiCopyLayerDescriptor(model, 1, &descriptor));
    CHECK(descriptor.cachedWeights == NULL); /* released: no longer reported */

    TinyAIMmapStats stats;
    CHECK(tinyaiGetMappedModelStats(model, &stats));
    CHECK(stats.misses > 0);
    CHECK(stats.bytesRead >= model_bytes);
    CHECK(stats.residentBytes == 0); /* no mapping */
    CHECK(stats.checksumFailures == 0);
    tinyaiCloseMappedModel(model);

    /* Cancelling from the callback. */
    Progress cancelling = {0};
    cancelling.cancel_after = 2;
    options.userData = &cancelling;
    model = tinyaiOpenMappedModelEx(path, NULL, &options);
    CHECK(model != NULL);
    CHECK(!tinyaiLoadAllLayers(model));
    CHECK_ERROR_SET();
    CHECK(strstr(tinyaiGetLastError(), "cancel") != NULL);
    CHECK(cancelling.calls == 2);
    tinyaiCloseMappedModel(model);
}

static void mapped_backend(const char *path, const unsigned char *file, size_t file_size) {
    TinyAIMmapOptions options = {0}; /* all zero: the defaults */
    TinyAIMappedModel *model = tinyaiOpenMappedModelEx(path, NULL, &options);
    CHECK(model != NULL);
    CHECK(tinyaiLoadAllLayers(model)); /* no callback: fine */
    int count = tinyaiGetMappedLayerCount(model);
    for (int i = 0; i < count; i++) {
        void *weights = tinyaiGetLayerWeights(model, i);
        CHECK(weights != NULL);
        check_layer_matches_file(model, i, weights, file, file_size);
        check_tensors(model, i, file);
        /* The descriptor pointer is per thread and stable; the copy agrees. */
        const TinyAILayerDescriptor *snapshot = tinyaiGetLayerDescriptor(model, i);
        CHECK(snapshot != NULL);
        CHECK(tinyaiGetLayerDescriptor(model, i) == snapshot);
        TinyAILayerDescriptor copy;
        CHECK(tinyaiCopyLayerDescriptor(model, i, &copy));
        CHECK(copy.offset == snapshot->offset && copy.size == snapshot->size);
        CHECK(copy.accessCount == snapshot->accessCount);
        CHECK(snapshot->cachedWeights == weights);
    }
    TinyAIMmapStats stats;
    CHECK(tinyaiGetMappedModelStats(model, &stats));
    CHECK(stats.cachedBytes > 0);
    CHECK(stats.hits > 0);
    tinyaiCloseMappedModel(model);
}

int main(int argc, char **argv) {
    CHECK(argc == 3);
    size_t file_size = 0;
    unsigned char *file = read_whole_file(argv[1], &file_size);

    mapped_backend(argv[1], file, file_size);
    owned_backend(argv[1], TINYAI_BACKEND_OWNED, file, file_size);
    owned_backend(argv[1], TINYAI_BACKEND_OWNED_DIRECT, file, file_size);

    /* A corrupted layer fails checksum verification and is not served;
     * without verification the (wrong) bytes are served. */
    unsigned char *corrupt = malloc(file_size);
    CHECK(corrupt != NULL);
    memcpy(corrupt, file, file_size);
    TinyAIMappedModel *model = tinyaiOpenMappedModel(argv[1], NULL);
    CHECK(model != NULL);
    TinyAILayerDescriptor layer2;
    CHECK(tinyaiCopyLayerDescriptor(model, 2, &layer2));
    tinyaiCloseMappedModel(model);
    corrupt[layer2.offset + 10] ^= 0xFF;
    char corrupt_path[4096];
    snprintf(corrupt_path, sizeof corrupt_path, "%s.corrupt", argv[1]);
    FILE *out = fopen(corrupt_path, "wb");
    CHECK(out != NULL);
    CHECK(fwrite(corrupt, 1, file_size, out) == file_size);
    CHECK(fclose(out) == 0);
    TinyAIMmapOptions verify = {0};
    verify.verifyChecksums = true;
    model = tinyaiOpenMappedModelEx(corrupt_path, NULL, &verify);
    CHECK(model != NULL);
    CHECK(tinyaiGetLayerWeights(model, 1) != NULL);
    CHECK(tinyaiGetLayerWeights(model, 2) == NULL);
    CHECK_ERROR_SET();
    printf("checksum failure: %s\n", tinyaiGetLastError());
    TinyAIMmapStats stats;
    CHECK(tinyaiGetMappedModelStats(model, &stats));
    CHECK(stats.checksumFailures >= 1);
    tinyaiCloseMappedModel(model);
    model = tinyaiOpenMappedModel(corrupt_path, NULL);
    CHECK(model != NULL);
    CHECK(tinyaiGetLayerWeights(model, 2) != NULL);
    tinyaiCloseMappedModel(model);
    remove(corrupt_path);
    free(corrupt);

    /* Legacy files through the extended open. */
    TinyAIMmapOptions owned = {0};
    owned.backend = TINYAI_BACKEND_OWNED;
    model = tinyaiOpenMappedModelEx(argv[2], NULL, &owned);
    CHECK(model != NULL);
    CHECK(tinyaiGetMappedLayerCount(model) == 10);
    for (int i = 0; i < 10; i++) {
        const unsigned char *weights = tinyaiGetLayerWeights(model, i);
        CHECK(weights != NULL && weights[0] == i && weights[1023] == i);
    }
    tinyaiCloseMappedModel(model);

    free(file);
    printf("extensions: ok\n");
    return 0;
}
