/*
 * merkle._hashcore: the C hashing core behind merkle.hashing (RFC 6962 / RFC 9162 §2.1.1).
 *
 *     leaf hash  = SHA-256(0x00 ‖ entry)
 *     node hash  = SHA-256(0x01 ‖ left ‖ right)
 *     empty root = SHA-256("")
 *
 * It computes the same bytes as merkle.hashing.PythonCore, but whole batches per call with no
 * Python object per hash. SHA-256 is implemented here rather than taken from OpenSSL so that a
 * node hash, always exactly two compression blocks, is built straight from its two children
 * without a streaming update. SHA-256 runs on the x86 SHA extensions when the CPU has them and
 * in portable C otherwise, chosen once at import; AFFIDAVIT_HASHCORE_PORTABLE=1 at import
 * forces portable C, so tests can compare the two.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#define HASHCORE_X86 1
#include <cpuid.h>
#include <immintrin.h>
#endif

#define HASH_SIZE 32
#define BLOCK_SIZE 64

/* subtree_roots refuses heights above this: 2**height must fit in a uint64_t (no input is
 * anywhere near that long). */
#define MAX_HEIGHT 62

/* Releasing and retaking the GIL costs about as much as a few compression blocks, so calls
 * that hash no more than this many blocks (64 node hashes) keep it. */
#define GIL_RELEASE_BLOCKS 128

/* ---- SHA-256 (FIPS 180-4) ------------------------------------------------------------------ */

static const uint32_t K256[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

static const uint32_t IV256[8] = {
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
};

static const uint8_t EMPTY_ROOT[HASH_SIZE] = {
    0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9, 0x24,
    0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55,
};

static uint32_t load_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

static void store_be32(uint8_t *p, uint32_t v)
{
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    v = __builtin_bswap32(v);
#endif
    memcpy(p, &v, 4);
}

#define ROTR(x, n) ((x) >> (n) | (x) << (32 - (n)))

static void compress_portable(uint32_t state[8], const uint8_t *data, size_t nblocks)
{
    for (; nblocks > 0; nblocks--, data += BLOCK_SIZE) {
        uint32_t w[64];
        for (int i = 0; i < 16; i++)
            w[i] = load_be32(data + 4 * i);
        for (int i = 16; i < 64; i++) {
            uint32_t s0 = ROTR(w[i - 15], 7) ^ ROTR(w[i - 15], 18) ^ w[i - 15] >> 3;
            uint32_t s1 = ROTR(w[i - 2], 17) ^ ROTR(w[i - 2], 19) ^ w[i - 2] >> 10;
            w[i] = w[i - 16] + s0 + w[i - 7] + s1;
        }
        uint32_t a = state[0], b = state[1], c = state[2], d = state[3];
        uint32_t e = state[4], f = state[5], g = state[6], h = state[7];
        for (int i = 0; i < 64; i++) {
            uint32_t t1 = h + (ROTR(e, 6) ^ ROTR(e, 11) ^ ROTR(e, 25)) + ((e & f) ^ (~e & g)) +
                          K256[i] + w[i];
            uint32_t t2 = (ROTR(a, 2) ^ ROTR(a, 13) ^ ROTR(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
            h = g;
            g = f;
            f = e;
            e = d + t1;
            d = c;
            c = b;
            b = a;
            a = t1 + t2;
        }
        state[0] += a;
        state[1] += b;
        state[2] += c;
        state[3] += d;
        state[4] += e;
        state[5] += f;
        state[6] += g;
        state[7] += h;
    }
}

static void digest_out(const uint32_t state[8], uint8_t out[HASH_SIZE])
{
    for (int i = 0; i < 8; i++)
        store_be32(out + 4 * i, state[i]);
}

/* A node hash is SHA-256 of 65 bytes, so message and padding are exactly two blocks:
 *     block 0: 0x01 ‖ left ‖ right[0:31]
 *     block 1: right[31] ‖ 0x80 ‖ 54 zero bytes ‖ bit length 520 as a big-endian uint64 */
#define NODE_BITS (8 * (1 + 2 * HASH_SIZE))

static void hash_pairs_portable(const uint8_t *in, size_t npairs, uint8_t *out)
{
    uint8_t blocks[2 * BLOCK_SIZE] = {0x01};
    blocks[65] = 0x80;
    blocks[126] = NODE_BITS >> 8;
    blocks[127] = NODE_BITS & 0xFF;
    for (size_t i = 0; i < npairs; i++) {
        uint32_t state[8];
        memcpy(blocks + 1, in + 2 * i * HASH_SIZE, 2 * HASH_SIZE);
        memcpy(state, IV256, sizeof state);
        compress_portable(state, blocks, 2);
        digest_out(state, out + i * HASH_SIZE);
    }
}

#ifdef HASHCORE_X86
/* The SHA extensions keep the eight working words as two vectors, ABEF and CDGH (lanes named
 * high to low), and sha256rnds2 does two rounds taking its two words from the low half of its
 * last operand. Message vectors hold four schedule words each, w[4i] in the low lane. */
#define SHANI static __attribute__((target("sha,sse4.1,ssse3")))
#define SHANI_INLINE static inline __attribute__((always_inline, target("sha,sse4.1,ssse3")))

/* Swaps the bytes of each 32-bit lane: SHA-256 words are big-endian. */
#define BSWAP32_LANES _mm_set_epi64x(0x0c0d0e0f08090a0bLL, 0x0405060700010203LL)

typedef struct {
    __m128i abef, cdgh;
} shani_state;

/* Four rounds with schedule words w[4i..4i+3]. */
#define SHANI_ROUNDS(i, w)                                                                          \
    do {                                                                                           \
        __m128i msg = _mm_add_epi32((w), _mm_loadu_si128((const __m128i *)&K256[4 * (i)]));        \
        cdgh = _mm_sha256rnds2_epu32(cdgh, abef, msg);                                             \
        abef = _mm_sha256rnds2_epu32(abef, cdgh, _mm_shuffle_epi32(msg, 0x0E));                    \
    } while (0)

/* w0 becomes the next four schedule words, given the last sixteen oldest first in w0..w3:
 * msg1 adds σ0(w[t-15]) to w[t-16], the alignr supplies w[t-7], msg2 adds σ1(w[t-2]). */
#define SHANI_SCHEDULE(w0, w1, w2, w3)                                                              \
    ((w0) = _mm_sha256msg2_epu32(                                                                  \
         _mm_add_epi32(_mm_sha256msg1_epu32((w0), (w1)), _mm_alignr_epi8((w3), (w2), 4)), (w3)))

/* Applies the block whose schedule words w[0..15] are in w0..w3 to s. */
SHANI_INLINE void shani_block(shani_state *s, __m128i w0, __m128i w1, __m128i w2, __m128i w3)
{
    __m128i abef = s->abef, cdgh = s->cdgh;
    SHANI_ROUNDS(0, w0);
    SHANI_ROUNDS(1, w1);
    SHANI_ROUNDS(2, w2);
    SHANI_ROUNDS(3, w3);
    for (int i = 4; i < 16; i += 4) {
        SHANI_SCHEDULE(w0, w1, w2, w3);
        SHANI_ROUNDS(i, w0);
        SHANI_SCHEDULE(w1, w2, w3, w0);
        SHANI_ROUNDS(i + 1, w1);
        SHANI_SCHEDULE(w2, w3, w0, w1);
        SHANI_ROUNDS(i + 2, w2);
        SHANI_SCHEDULE(w3, w0, w1, w2);
        SHANI_ROUNDS(i + 3, w3);
    }
    s->abef = _mm_add_epi32(s->abef, abef);
    s->cdgh = _mm_add_epi32(s->cdgh, cdgh);
}

/* Four message words from 16 big-endian bytes. */
SHANI_INLINE __m128i shani_words(__m128i bytes)
{
    return _mm_shuffle_epi8(bytes, BSWAP32_LANES);
}

SHANI_INLINE __m128i load16(const uint8_t *p)
{
    return _mm_loadu_si128((const __m128i *)p);
}

/* Words a..h in FIPS 180-4 order (DCBA, HGFE) to ABEF, CDGH ... */
SHANI_INLINE shani_state shani_from_words(__m128i dcba, __m128i hgfe)
{
    __m128i cdab = _mm_shuffle_epi32(dcba, 0xB1);
    __m128i efgh = _mm_shuffle_epi32(hgfe, 0x1B);
    return (shani_state){_mm_alignr_epi8(cdab, efgh, 8), _mm_blend_epi16(efgh, cdab, 0xF0)};
}

/* ... and back: *dcba, *hgfe = words a..h in FIPS 180-4 order. */
SHANI_INLINE void shani_to_words(const shani_state *s, __m128i *dcba, __m128i *hgfe)
{
    __m128i feba = _mm_shuffle_epi32(s->abef, 0x1B);
    __m128i dchg = _mm_shuffle_epi32(s->cdgh, 0xB1);
    *dcba = _mm_blend_epi16(feba, dchg, 0xF0);
    *hgfe = _mm_alignr_epi8(dchg, feba, 8);
}

SHANI void compress_shani(uint32_t state[8], const uint8_t *data, size_t nblocks)
{
    shani_state s = shani_from_words(_mm_loadu_si128((const __m128i *)&state[0]),
                                     _mm_loadu_si128((const __m128i *)&state[4]));
    for (; nblocks > 0; nblocks--, data += BLOCK_SIZE)
        shani_block(&s, shani_words(load16(data)), shani_words(load16(data + 16)),
                    shani_words(load16(data + 32)), shani_words(load16(data + 48)));
    __m128i dcba, hgfe;
    shani_to_words(&s, &dcba, &hgfe);
    _mm_storeu_si128((__m128i *)&state[0], dcba);
    _mm_storeu_si128((__m128i *)&state[4], hgfe);
}

/* The node-hash blocks are assembled in registers rather than memory: with left = l0 ‖ l1 and
 * right = r0 ‖ r1 in 16-byte halves, each 16 bytes of the message are the last byte of one
 * vector followed by the first fifteen of the next (alignr by 15). */
SHANI void hash_pairs_shani(const uint8_t *in, size_t npairs, uint8_t *out)
{
    const __m128i prefix = _mm_slli_si128(_mm_cvtsi32_si128(0x01), 15); /* 0x01 in byte 15 */
    const __m128i pad = _mm_cvtsi32_si128(0x80);                       /* 0x80 in byte 0 */
    const __m128i zero = _mm_setzero_si128();
    const __m128i length = _mm_set_epi32(NODE_BITS, 0, 0, 0); /* w[15] = bit length */
    const shani_state iv = shani_from_words(_mm_loadu_si128((const __m128i *)&IV256[0]),
                                            _mm_loadu_si128((const __m128i *)&IV256[4]));
    for (size_t i = 0; i < npairs; i++) {
        const uint8_t *pair = in + 2 * i * HASH_SIZE;
        __m128i l0 = load16(pair), l1 = load16(pair + 16);
        __m128i r0 = load16(pair + 32), r1 = load16(pair + 48);
        shani_state s = iv;
        shani_block(&s, shani_words(_mm_alignr_epi8(l0, prefix, 15)),
                    shani_words(_mm_alignr_epi8(l1, l0, 15)),
                    shani_words(_mm_alignr_epi8(r0, l1, 15)),
                    shani_words(_mm_alignr_epi8(r1, r0, 15)));
        shani_block(&s, shani_words(_mm_alignr_epi8(pad, r1, 15)), zero, zero, length);
        __m128i dcba, hgfe;
        shani_to_words(&s, &dcba, &hgfe);
        _mm_storeu_si128((__m128i *)(out + i * HASH_SIZE), shani_words(dcba));
        _mm_storeu_si128((__m128i *)(out + i * HASH_SIZE + 16), shani_words(hgfe));
    }
}

/* The SHA extensions need SHA (CPUID.7.0:EBX[29]), SSSE3 and SSE4.1 (CPUID.1:ECX[9], [19]). */
static int cpu_has_sha_extensions(void)
{
    unsigned int eax, ebx, ecx, edx;
    if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx) || !(ecx & 1u << 9) || !(ecx & 1u << 19))
        return 0;
    if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx))
        return 0;
    return (ebx & 1u << 29) != 0;
}
#endif

/* A SHA-256 implementation. */
typedef struct {
    /* Applies the nblocks 64-byte blocks at data to state, the working words a..h in
     * FIPS 180-4 order. */
    void (*compress)(uint32_t state[8], const uint8_t *data, size_t nblocks);
    /* out[i] = node hash of in[2i] ‖ in[2i+1] for i < npairs, indexing 32-byte hashes.
     * out may equal in: out[i] overlaps only in[i], which pair i/2 <= i has already read. */
    void (*hash_pairs)(const uint8_t *in, size_t npairs, uint8_t *out);
} sha256_impl;

static const sha256_impl portable_impl = {compress_portable, hash_pairs_portable};
#ifdef HASHCORE_X86
static const sha256_impl shani_impl = {compress_shani, hash_pairs_shani};
#endif

/* Chosen once, at module import. */
static const sha256_impl *impl = &portable_impl;

/* ---- RFC 6962 hashes ----------------------------------------------------------------------- */

/* Streaming SHA-256 for messages of any length (leaf hashes). Invariant: buf holds the
 * len % 64 message bytes not yet compressed. */
typedef struct {
    uint32_t state[8];
    uint8_t buf[BLOCK_SIZE];
    uint64_t len;
} sha256_ctx;

static void sha256_init(sha256_ctx *c)
{
    memcpy(c->state, IV256, sizeof c->state);
    c->len = 0;
}

static void sha256_update(sha256_ctx *c, const uint8_t *p, size_t n)
{
    size_t used = (size_t)(c->len % BLOCK_SIZE);
    c->len += n;
    if (used > 0) {
        size_t take = BLOCK_SIZE - used < n ? BLOCK_SIZE - used : n;
        memcpy(c->buf + used, p, take);
        p += take;
        n -= take;
        if (used + take < BLOCK_SIZE)
            return;
        impl->compress(c->state, c->buf, 1);
    }
    /* Whole blocks straight from the caller's memory, without a copy. */
    impl->compress(c->state, p, n / BLOCK_SIZE);
    memcpy(c->buf, p + n / BLOCK_SIZE * BLOCK_SIZE, n % BLOCK_SIZE);
}

static void sha256_final(sha256_ctx *c, uint8_t out[HASH_SIZE])
{
    /* Padding: 0x80, zeros up to 56 mod 64, then the message length in bits (big-endian). */
    uint64_t bits = c->len * 8;
    size_t used = (size_t)(c->len % BLOCK_SIZE);
    c->buf[used++] = 0x80;
    if (used > BLOCK_SIZE - 8) {
        memset(c->buf + used, 0, BLOCK_SIZE - used);
        impl->compress(c->state, c->buf, 1);
        used = 0;
    }
    memset(c->buf + used, 0, BLOCK_SIZE - 8 - used);
    store_be32(c->buf + 56, (uint32_t)(bits >> 32));
    store_be32(c->buf + 60, (uint32_t)bits);
    impl->compress(c->state, c->buf, 1);
    digest_out(c->state, out);
}

static void hash_leaf(const uint8_t *entry, size_t n, uint8_t out[HASH_SIZE])
{
    static const uint8_t prefix = 0x00;
    sha256_ctx c;
    sha256_init(&c);
    sha256_update(&c, &prefix, 1);
    sha256_update(&c, entry, n);
    sha256_final(&c, out);
}

/* Compression blocks in the leaf hash of an n-byte entry: prefix, entry, 0x80, 8 length bytes. */
static size_t leaf_blocks(size_t n)
{
    return (n + 1 + 1 + 8 + BLOCK_SIZE - 1) / BLOCK_SIZE;
}

/* out = the roots of the runs of 2**height hashes among the n at in (n a multiple of 2**height),
 * one level at a time. scratch holds n / 2 hashes when height >= 2 and is unused otherwise. */
static void subtree_roots(const uint8_t *in, size_t n, int height, uint8_t *scratch, uint8_t *out)
{
    if (height == 0)
        memcpy(out, in, n * HASH_SIZE);
    for (int level = 1; level <= height; level++, n /= 2) {
        uint8_t *parents = level == height ? out : scratch;
        impl->hash_pairs(in, n / 2, parents);
        in = parents;
    }
}

/* out = MTH of the n >= 1 hashes at in (RFC 9162 §2.1.1). scratch holds (n + 1) / 2 hashes.
 *
 * MTH(n) = node(MTH of the first k, MTH of the other n - k) for the largest power of two k < n.
 * Pairing level by level, with an odd last node carried up unchanged, builds the same tree:
 * the first k hashes are an even number on every level until they are one, so no pair
 * straddles the split and each side reduces as it would alone (by induction for the right,
 * which, as n - k <= k, is down to its root no later); the two roots then pair. */
static void merkle_root(const uint8_t *in, size_t n, uint8_t *scratch, uint8_t out[HASH_SIZE])
{
    for (; n > 1; n = (n + 1) / 2) {
        impl->hash_pairs(in, n / 2, scratch);
        if (n % 2 == 1)
            memcpy(scratch + n / 2 * HASH_SIZE, in + (n - 1) * HASH_SIZE, HASH_SIZE);
        in = scratch;
    }
    memcpy(out, in, HASH_SIZE);
}

/* ---- Python interface ---------------------------------------------------------------------- */

/* Gets a read-only contiguous view of a bytes-like object; TypeError otherwise. */
static int get_bytes(PyObject *obj, Py_buffer *view)
{
    return PyObject_GetBuffer(obj, view, PyBUF_SIMPLE);
}

PyDoc_STRVAR(leaf_hash_doc, "leaf_hash($module, entry, /)\n--\n\n"
                            "SHA-256(0x00 ‖ entry): the hash of one log entry (any bytes-like).");

static PyObject *hashcore_leaf_hash(PyObject *module, PyObject *arg)
{
    (void)module;
    Py_buffer entry;
    uint8_t out[HASH_SIZE];
    if (get_bytes(arg, &entry) < 0)
        return NULL;
    if (leaf_blocks((size_t)entry.len) > GIL_RELEASE_BLOCKS) {
        Py_BEGIN_ALLOW_THREADS
        hash_leaf(entry.buf, (size_t)entry.len, out);
        Py_END_ALLOW_THREADS
    } else {
        hash_leaf(entry.buf, (size_t)entry.len, out);
    }
    PyBuffer_Release(&entry);
    return PyBytes_FromStringAndSize((const char *)out, HASH_SIZE);
}

PyDoc_STRVAR(node_hash_doc, "node_hash($module, left, right, /)\n--\n\n"
                            "SHA-256(0x01 ‖ left ‖ right): the hash of an interior node.\n\n"
                            "left and right must be 32 bytes each (ValueError otherwise).");

static PyObject *hashcore_node_hash(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    Py_buffer left, right;
    uint8_t pair[2 * HASH_SIZE], out[HASH_SIZE];
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "node_hash expected 2 arguments, got %zd", nargs);
        return NULL;
    }
    if (get_bytes(args[0], &left) < 0)
        return NULL;
    if (get_bytes(args[1], &right) < 0) {
        PyBuffer_Release(&left);
        return NULL;
    }
    int ok = left.len == HASH_SIZE && right.len == HASH_SIZE;
    if (ok) {
        memcpy(pair, left.buf, HASH_SIZE);
        memcpy(pair + HASH_SIZE, right.buf, HASH_SIZE);
        impl->hash_pairs(pair, 1, out);
    } else {
        PyErr_Format(PyExc_ValueError, "node_hash needs two 32-byte hashes, got %zd and %zd bytes",
                     left.len, right.len);
    }
    PyBuffer_Release(&left);
    PyBuffer_Release(&right);
    return ok ? PyBytes_FromStringAndSize((const char *)out, HASH_SIZE) : NULL;
}

/* The leaf hashes of the n entries in views, into out. Entries are separate objects scattered
 * over the heap, where the hardware prefetcher cannot see the next one coming: ask for (up to
 * a page of) each entry while hashing the one before it. */
static void hash_leaves(const Py_buffer *views, Py_ssize_t n, uint8_t *out)
{
    for (Py_ssize_t i = 0; i < n; i++) {
        if (i + 1 < n) {
            const uint8_t *next = views[i + 1].buf;
            Py_ssize_t len = views[i + 1].len < 4096 ? views[i + 1].len : 4096;
            for (Py_ssize_t off = 0; off < len; off += BLOCK_SIZE)
                __builtin_prefetch(next + off);
        }
        hash_leaf(views[i].buf, (size_t)views[i].len, out + i * HASH_SIZE);
    }
}

PyDoc_STRVAR(leaf_hashes_doc, "leaf_hashes($module, entries, /)\n--\n\n"
                              "The leaf hash of each bytes-like entry, concatenated.");

static PyObject *hashcore_leaf_hashes(PyObject *module, PyObject *arg)
{
    (void)module;
    /* A tuple cannot change while the buffers are taken (a list could, from a __buffer__
     * method), and it keeps every entry alive until they are. */
    PyObject *entries = PySequence_Tuple(arg);
    if (entries == NULL)
        return NULL;
    Py_ssize_t n = PyTuple_GET_SIZE(entries);
    PyObject *result = NULL;
    Py_ssize_t taken = 0;
    size_t blocks = 0;
    Py_buffer *views = NULL;
    /* Refuse an n for which n * HASH_SIZE below would overflow (no such list fits in memory). */
    if (n > PY_SSIZE_T_MAX / HASH_SIZE || (views = PyMem_New(Py_buffer, (size_t)n)) == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    /* Take every buffer while holding the GIL; the hashing below may run without it. */
    for (; taken < n; taken++) {
        if (get_bytes(PyTuple_GET_ITEM(entries, taken), &views[taken]) < 0)
            goto done;
        blocks += leaf_blocks((size_t)views[taken].len);
    }
    result = PyBytes_FromStringAndSize(NULL, n * HASH_SIZE);
    if (result == NULL)
        goto done;
    uint8_t *out = (uint8_t *)PyBytes_AS_STRING(result);
    if (blocks > GIL_RELEASE_BLOCKS) {
        Py_BEGIN_ALLOW_THREADS
        hash_leaves(views, n, out);
        Py_END_ALLOW_THREADS
    } else {
        hash_leaves(views, n, out);
    }

done:
    for (Py_ssize_t i = 0; i < taken; i++)
        PyBuffer_Release(&views[i]);
    PyMem_Free(views);
    Py_DECREF(entries);
    return result;
}

PyDoc_STRVAR(subtree_roots_doc,
             "subtree_roots($module, hashes, height, /)\n--\n\n"
             "The root of each consecutive run of 2**height 32-byte hashes, concatenated.\n\n"
             "len(hashes) must be a multiple of 32 * 2**height and 0 <= height <= 62\n"
             "(ValueError otherwise); height 1 gives the parents of a level.");

static PyObject *hashcore_subtree_roots(PyObject *module, PyObject *const *args,
                                        Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "subtree_roots expected 2 arguments, got %zd", nargs);
        return NULL;
    }
    int overflow;
    long height = PyLong_AsLongAndOverflow(args[1], &overflow);
    if (height == -1 && PyErr_Occurred())
        return NULL;
    if (overflow != 0 || height < 0 || height > MAX_HEIGHT) {
        PyErr_Format(PyExc_ValueError, "subtree height %S is outside 0..%d", args[1], MAX_HEIGHT);
        return NULL;
    }
    Py_buffer hashes;
    if (get_bytes(args[0], &hashes) < 0)
        return NULL;
    uint64_t run = (uint64_t)1 << height;
    size_t n = (size_t)hashes.len / HASH_SIZE;
    PyObject *result = NULL;
    uint8_t *scratch = NULL;
    if (hashes.len % HASH_SIZE != 0 || n % run != 0) {
        PyErr_Format(PyExc_ValueError, "%zd bytes is not a whole number of %llu-hash runs",
                     hashes.len, (unsigned long long)run);
        goto done;
    }
    if (height >= 2 && (scratch = PyMem_Malloc(n / 2 * HASH_SIZE)) == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    result = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(n / run * HASH_SIZE));
    if (result == NULL)
        goto done;
    uint8_t *out = (uint8_t *)PyBytes_AS_STRING(result);
    /* n - n / run node hashes, two blocks each. */
    if ((n - n / run) * 2 > GIL_RELEASE_BLOCKS) {
        Py_BEGIN_ALLOW_THREADS
        subtree_roots(hashes.buf, n, (int)height, scratch, out);
        Py_END_ALLOW_THREADS
    } else {
        subtree_roots(hashes.buf, n, (int)height, scratch, out);
    }

done:
    PyMem_Free(scratch);
    PyBuffer_Release(&hashes);
    return result;
}

PyDoc_STRVAR(root_hash_doc,
             "root_hash($module, hashes, /)\n--\n\n"
             "The RFC 9162 Merkle tree hash (MTH) of a run of 32-byte leaf hashes, concatenated.\n\n"
             "SHA-256(\"\") for none; ValueError if len(hashes) is not a multiple of 32.");

static PyObject *hashcore_root_hash(PyObject *module, PyObject *arg)
{
    (void)module;
    Py_buffer hashes;
    uint8_t out[HASH_SIZE];
    if (get_bytes(arg, &hashes) < 0)
        return NULL;
    size_t n = (size_t)hashes.len / HASH_SIZE;
    PyObject *result = NULL;
    uint8_t *scratch = NULL;
    if (hashes.len % HASH_SIZE != 0) {
        PyErr_Format(PyExc_ValueError, "%zd bytes is not a whole number of 32-byte hashes",
                     hashes.len);
        goto done;
    }
    if (n == 0) {
        result = PyBytes_FromStringAndSize((const char *)EMPTY_ROOT, HASH_SIZE);
        goto done;
    }
    if ((scratch = PyMem_Malloc((n + 1) / 2 * HASH_SIZE)) == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    /* n - 1 node hashes, two blocks each. */
    if ((n - 1) * 2 > GIL_RELEASE_BLOCKS) {
        Py_BEGIN_ALLOW_THREADS
        merkle_root(hashes.buf, n, scratch, out);
        Py_END_ALLOW_THREADS
    } else {
        merkle_root(hashes.buf, n, scratch, out);
    }
    result = PyBytes_FromStringAndSize((const char *)out, HASH_SIZE);

done:
    PyMem_Free(scratch);
    PyBuffer_Release(&hashes);
    return result;
}

PyDoc_STRVAR(has_sha_extensions_doc,
             "has_sha_extensions($module, /)\n--\n\n"
             "Whether hashing uses the x86 SHA extensions (else portable C).");

static PyObject *hashcore_has_sha_extensions(PyObject *module, PyObject *unused)
{
    (void)module;
    (void)unused;
    return PyBool_FromLong(impl != &portable_impl);
}

static PyMethodDef hashcore_methods[] = {
    {"leaf_hash", hashcore_leaf_hash, METH_O, leaf_hash_doc},
    {"node_hash", (PyCFunction)(void (*)(void))hashcore_node_hash, METH_FASTCALL, node_hash_doc},
    {"leaf_hashes", hashcore_leaf_hashes, METH_O, leaf_hashes_doc},
    {"subtree_roots", (PyCFunction)(void (*)(void))hashcore_subtree_roots, METH_FASTCALL,
     subtree_roots_doc},
    {"root_hash", hashcore_root_hash, METH_O, root_hash_doc},
    {"has_sha_extensions", hashcore_has_sha_extensions, METH_NOARGS, has_sha_extensions_doc},
    {NULL, NULL, 0, NULL},
};

PyDoc_STRVAR(
    hashcore_doc,
    "RFC 6962 hashing in C: the core behind merkle.hashing, byte for byte equal to PythonCore.\n\n"
    "Batches travel as concatenated 32-byte hashes. SHA-256 uses the x86 SHA extensions when\n"
    "the CPU has them, unless AFFIDAVIT_HASHCORE_PORTABLE=1 was set at import.");

/* Chooses the SHA-256 implementation. Every interpreter in the process makes the same choice
 * (unless the environment changes in between), and either choice gives the same bytes. */
static int hashcore_exec(PyObject *module)
{
    (void)module;
    impl = &portable_impl;
#ifdef HASHCORE_X86
    const char *portable = getenv("AFFIDAVIT_HASHCORE_PORTABLE");
    if (!(portable != NULL && strcmp(portable, "1") == 0) && cpu_has_sha_extensions())
        impl = &shani_impl;
#endif
    return 0;
}

static PyModuleDef_Slot hashcore_slots[] = {
    {Py_mod_exec, hashcore_exec},
    {0, NULL},
};

static struct PyModuleDef hashcore_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "merkle._hashcore",
    .m_doc = hashcore_doc,
    .m_size = 0,
    .m_methods = hashcore_methods,
    .m_slots = hashcore_slots,
};

PyMODINIT_FUNC PyInit__hashcore(void)
{
    return PyModuleDef_Init(&hashcore_module);
}
