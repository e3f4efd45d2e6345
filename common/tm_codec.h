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

//  TM_UNPACK (Header, header, data, size): type name and descriptor stem.
#define TM_UNPACK(Type, stem, data, size)                                      \
    ((Twinmesh__##Type *) tm_codec_unpack (&twinmesh__##stem##__descriptor, (data), (size)))

#endif
