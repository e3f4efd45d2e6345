/*  tm_codec - the one place protobuf-c packs and unpacks messages

    The rest of the code sees decoded structs or NULL: protobuf-c's
    conventions (NULL on malformed input, its allocator) stop here.
*/
#ifndef TM_CODEC_H_INCLUDED
#define TM_CODEC_H_INCLUDED

#include <czmq.h>
#include <protobuf-c/protobuf-c.h>

#include "twinmesh.pb-c.h"

//  Pack a message into a new frame (caller owns); NULL on allocation failure.
zframe_t *tm_codec_pack (const ProtobufCMessage *msg);

//  Pack into a malloc'd buffer (caller owns, frees with free); *size set.
uint8_t *tm_codec_pack_buf (const ProtobufCMessage *msg, size_t *size);

//  Unpack bytes as a message of the given type; NULL if malformed. Free
//  with tm_codec_free. A NULL or empty input decodes as an empty message.
void *tm_codec_unpack (const ProtobufCMessageDescriptor *desc, const uint8_t *data,
                       size_t size);

//  Free a message from tm_codec_unpack; nulls the pointer.
void tm_codec_free (void *msg_p);

//  An arena for decoding many messages without an allocation per field:
//  protobuf-c allocates every submessage, string and array separately,
//  which for a message of thousands of small entries costs more than the
//  decoding. Messages unpacked into an arena are never freed one by one:
//  tm_codec_arena_reset releases them all at once (keeping the memory).
typedef struct _tm_codec_arena_t tm_codec_arena_t;

tm_codec_arena_t *tm_codec_arena_new (void);
void tm_codec_arena_destroy (tm_codec_arena_t **self_p);

//  Forget every message unpacked into the arena (they must not be used
//  after); memory is kept for the next ones.
void tm_codec_arena_reset (tm_codec_arena_t *self);

//  As tm_codec_unpack, with every allocation from the arena; NULL if
//  malformed. Do not tm_codec_free the result: reset the arena.
void *tm_codec_unpack_in (const ProtobufCMessageDescriptor *desc, const uint8_t *data,
                          size_t size, tm_codec_arena_t *arena);

//  TM_UNPACK (Header, header, data, size): type name and descriptor stem.
#define TM_UNPACK(Type, stem, data, size)                                      \
    ((Twinmesh__##Type *) tm_codec_unpack (&twinmesh__##stem##__descriptor, (data), (size)))

#endif
