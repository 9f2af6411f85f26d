/*
 * Protobuf wire reading shared by the C cores that read signed statements' bytes
 * (statements/_walkcore.c, server/_facetcore.c): one copy, included by both.
 */
#ifndef AFFIDAVIT_WIRE_H
#define AFFIDAVIT_WIRE_H

#include <stdint.h>

/* Read a varint at *p (before end) into *out and move *p past it; 0 if it is cut short or
 * longer than 64 bits. */
static inline int read_varint(const uint8_t **p, const uint8_t *end, uint64_t *out) {
    uint64_t v = 0;
    for (int shift = 0; shift <= 63 && *p < end; shift += 7) {
        uint8_t b = *(*p)++;
        v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *out = v;
            return 1;
        }
    }
    return 0;
}

#endif
