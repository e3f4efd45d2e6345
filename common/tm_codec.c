/*  tm_codec - the one place protobuf-c packs and unpacks messages  */
#include "tm_codec.h"

#include <stddef.h>
#include <stdlib.h>

zframe_t *
tm_codec_pack (const ProtobufCMessage *msg)
{
    size_t size = protobuf_c_message_get_packed_size (msg);
    zframe_t *frame = zframe_new (NULL, size);
    if (!frame)
        return NULL;
    protobuf_c_message_pack (msg, zframe_data (frame));
    return frame;
}

uint8_t *
tm_codec_pack_buf (const ProtobufCMessage *msg, size_t *size)
{
    *size = protobuf_c_message_get_packed_size (msg);
    uint8_t *buf = (uint8_t *) malloc (*size? *size: 1);
    if (buf)
        protobuf_c_message_pack (msg, buf);
    return buf;
}

void *
tm_codec_unpack (const ProtobufCMessageDescriptor *desc, const uint8_t *data, size_t size)
{
    static const uint8_t empty = 0;
    return protobuf_c_message_unpack (desc, NULL, size, data? data: &empty);
}

void
tm_codec_free (void *msg_p)
{
    ProtobufCMessage **p = (ProtobufCMessage **) msg_p;
    if (p && *p) {
        protobuf_c_message_free_unpacked (*p, NULL);
        *p = NULL;
    }
}

//  The arena: a list of blocks, allocations 16-byte aligned, bump pointer.
typedef struct s_block_t {
    struct s_block_t *next;        //  Older block
    size_t used, cap;              //  Bytes of data in use, allocated
    max_align_t data[];            //  The memory handed out
} s_block_t;

struct _tm_codec_arena_t {
    ProtobufCAllocator allocator;  //  What protobuf-c is given
    s_block_t *blocks;             //  Newest first
};

#define S_ARENA_BLOCK (64 * 1024)

static void *
s_arena_alloc (void *arg, size_t size)
{
    tm_codec_arena_t *self = (tm_codec_arena_t *) arg;
    size = (size + 15) & ~(size_t) 15;
    s_block_t *b = self->blocks;
    if (!b || b->cap - b->used < size) {
        size_t cap = size > S_ARENA_BLOCK? size: S_ARENA_BLOCK;
        s_block_t *nb = (s_block_t *) malloc (sizeof *nb + cap);
        if (!nb)
            return NULL;
        nb->used = 0;
        nb->cap = cap;
        nb->next = b;
        self->blocks = b = nb;
    }
    void *p = (char *) b->data + b->used;
    b->used += size;
    return p;
}

static void
s_arena_free (void *arg, void *pointer)
{
    (void) arg;
    (void) pointer;            //  released all at once by tm_codec_arena_reset
}

tm_codec_arena_t *
tm_codec_arena_new (void)
{
    tm_codec_arena_t *self = (tm_codec_arena_t *) calloc (1, sizeof *self);
    if (self)
        self->allocator = (ProtobufCAllocator) {.alloc = s_arena_alloc, .free = s_arena_free,
                                                .allocator_data = self};
    return self;
}

void
tm_codec_arena_reset (tm_codec_arena_t *self)
{
    //  Keep the newest block (a full-size one after the first message).
    s_block_t *keep = self->blocks;
    s_block_t *b = keep? keep->next: NULL;
    while (b) {
        s_block_t *next = b->next;
        free (b);
        b = next;
    }
    if (keep) {
        keep->next = NULL;
        keep->used = 0;
    }
}

void
tm_codec_arena_destroy (tm_codec_arena_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    tm_codec_arena_reset (*self_p);
    free ((*self_p)->blocks);
    free (*self_p);
    *self_p = NULL;
}

void *
tm_codec_unpack_in (const ProtobufCMessageDescriptor *desc, const uint8_t *data, size_t size,
                    tm_codec_arena_t *arena)
{
    static const uint8_t empty = 0;
    return protobuf_c_message_unpack (desc, &arena->allocator, size, data? data: &empty);
}
