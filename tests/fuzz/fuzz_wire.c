/* fuzz_wire.c - libFuzzer target: bytes a remote peer sends `gpupool worker` (or the client library),
 * whatever they are, decode into a header that is refused with a reason or re-encodes to the same bytes, and
 * a payload that every reader walks without reading outside it.
 *
 * The input is a 24-byte header and its payload. Unless the first byte says otherwise, the header is made
 * plausible (magic, version, known flags, length = what follows) so that the fuzzer gets into the payloads;
 * the rest of the time the input is taken as it is. The payload is then checked against the op's request
 * layout as the worker checks it (gp_worker_request_ok), and walked once more with every reader in an order
 * the header's bits choose. */
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "remote/wire.h"
#include "remote/worker.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

/* Every reader, in an order drawn from pat; what they return stays inside the payload. */
static void walk(const uint8_t *p, size_t n, uint64_t pat)
{
    gp_rbuf r;
    gp_rbuf_init(&r, p, n);
    char str[64], big[GP_WIRE_MAX_STR + 1];
    for (int step = 0; r.ok && r.left > 0 && step < 4096; step++) {
        size_t before = r.left, bn = 0;
        const uint8_t *b;
        switch (pat % 7) {
        case 0: (void)gp_r_u32(&r); break;
        case 1: (void)gp_r_u64(&r); break;
        case 2: (void)gp_r_i64(&r); break;
        case 3: (void)gp_r_f32(&r); break;
        case 4:
            b = gp_r_blob(&r, &bn);
            assert(b ? b >= p && b + bn <= p + n : bn == 0);
            break;
        case 5:
            if (gp_r_str(&r, str, sizeof str))
                assert(strlen(str) < sizeof str);
            break;
        default:
            if (gp_r_str(&r, big, sizeof big))
                assert(strlen(big) <= GP_WIRE_MAX_STR);
            break;
        }
        assert(r.left <= before);
        pat = pat / 7 + (pat % 7) * 0x9e3779b97f4a7c15ull + 1;
    }
    (void)gp_r_done(&r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 + GP_WIRE_HEADER)
        return 0;
    bool raw = data[0] & 1;
    data++;
    size--;
    uint8_t *in = malloc(size);
    memcpy(in, data, size);
    size_t plen = size - GP_WIRE_HEADER;
    if (!raw) {
        put32(in, GP_WIRE_MAGIC);
        in[4] = GP_WIRE_VERSION;
        in[5] = 0;
        in[6] = (uint8_t)(in[6] % (GP_OP__END + 2)); /* the known ops, and two past them */
        in[7] = 0;
        put32(in + 8, in[8] & (GP_WIRE_F_ASYNC | GP_WIRE_F_REPLY));
        put32(in + 20, (uint32_t)plen);
    }
    gp_wire_hdr h;
    const char *why = NULL;
    if (gp_wire_hdr_decode(in, &h, &why) < 0) {
        assert(why && *why);
    } else {
        assert(why == NULL && h.length <= GP_WIRE_MAX_PAYLOAD);
        uint8_t again[GP_WIRE_HEADER];
        gp_wire_hdr_encode(&h, again);
        assert(memcmp(again, in, GP_WIRE_HEADER) == 0);
        (void)gp_wire_op_name(h.op);
        /* a payload cut short (the connection ended) is read as far as it goes */
        const uint8_t *p = in + GP_WIRE_HEADER;
        size_t n = plen < h.length ? plen : h.length;
        if (!gp_worker_request_ok(h.op, p, n, &why))
            assert(why && *why);
        walk(p, n, (uint64_t)h.seq << 32 | h.status);
    }
    free(in);
    return 0;
}
