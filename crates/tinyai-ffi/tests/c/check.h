/* Shared helpers of the C test programs (not part of the library). */
#ifndef TINYAI_TEST_CHECK_H
#define TINYAI_TEST_CHECK_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <tinyai/utils/mmap_loader.h>

static inline const char *last_error_text(void) {
    const char *message = tinyaiGetLastError();
    return message ? message : "(NULL)";
}

#define CHECK(condition)                                                        \
    do {                                                                        \
        if (!(condition)) {                                                     \
            fprintf(stderr, "%s:%d: CHECK failed: %s (last error: %s)\n",       \
                    __FILE__, __LINE__, #condition, last_error_text());         \
            exit(1);                                                            \
        }                                                                       \
    } while (0)

/* The call just made failed and said why. */
#define CHECK_ERROR_SET() CHECK(tinyaiGetLastError() != NULL && tinyaiGetLastError()[0] != '\0')
/* The call just made succeeded. */
#define CHECK_NO_ERROR() CHECK(tinyaiGetLastError() == NULL)

/* Reads a whole file (the test's independent view of the bytes). */
static inline unsigned char *read_whole_file(const char *path, size_t *size_out) {
    FILE *file = fopen(path, "rb");
    CHECK(file != NULL);
    CHECK(fseek(file, 0, SEEK_END) == 0);
    long size = ftell(file);
    CHECK(size >= 0);
    CHECK(fseek(file, 0, SEEK_SET) == 0);
    unsigned char *bytes = malloc((size_t)size + 1);
    CHECK(bytes != NULL);
    CHECK(fread(bytes, 1, (size_t)size, file) == (size_t)size);
    fclose(file);
    *size_out = (size_t)size;
    return bytes;
}

/* Layer `index`'s bytes equal the file's bytes at the descriptor's offset. */
static inline void check_layer_matches_file(TinyAIMappedModel *model, int index, const void *weights,
                                            const unsigned char *file, size_t file_size) {
    TinyAILayerDescriptor descriptor;
    CHECK(tinyaiCopyLayerDescriptor(model, index, &descriptor));
    CHECK(descriptor.layerIndex == index);
    CHECK(descriptor.offset + descriptor.size <= file_size);
    CHECK(memcmp(weights, file + descriptor.offset, descriptor.size) == 0);
}

#endif
