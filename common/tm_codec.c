/*  tm_codec - the one place protobuf-c packs and unpacks messages  */
#include "tm_codec.h"

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
