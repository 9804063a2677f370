// The header from C++: extern "C" linkage, the types, a few calls.
#include <tinyai/utils/mmap_loader.h>

#include <cstddef>
#include <cstdio>
#include <type_traits>

static_assert(std::is_standard_layout<TinyAILayerDescriptor>::value, "C layout");
static_assert(offsetof(TinyAILayerDescriptor, offset) == 0, "field order");
static_assert(offsetof(TinyAILayerDescriptor, accessCount) + sizeof(uint64_t) ==
                  sizeof(TinyAILayerDescriptor),
              "accessCount is last");
static_assert(std::is_same<decltype(TinyAILayerDescriptor::cachedWeights), void *>::value, "void *");
static_assert(std::is_same<decltype(TinyAIMmapConfig::prefetchThreads), int>::value, "int");

int main(int argc, char **argv) {
    if (argc != 2) return 2;
    if (tinyaiGetMappedLayerCount(nullptr) != -1) return 3;
    TinyAIMmapConfig config = tinyaiCreateDefaultMmapConfig();
    config.maxCacheSize = 1 << 20;
    TinyAIMappedModel *model = tinyaiOpenMappedModel(argv[1], &config);
    if (model == nullptr) {
        std::printf("open failed: %s\n", tinyaiGetLastError());
        return 1;
    }
    int count = tinyaiGetMappedLayerCount(model);
    for (int i = 0; i < count; i++) {
        const void *weights = tinyaiGetLayerWeights(model, i);
        const TinyAILayerDescriptor *descriptor = tinyaiGetLayerDescriptor(model, i);
        if (weights == nullptr || descriptor == nullptr || descriptor->layerIndex != i) return 4;
    }
    TinyAIMmapStats stats{};
    if (!tinyaiGetMappedModelStats(model, &stats) || stats.misses == 0) return 5;
    tinyaiCloseMappedModel(model);
    std::printf("c++: %d layers\nc++: ok\n", count);
    return 0;
}
