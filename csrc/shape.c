/*
 * shape.c - the shape of a new order: the combinations of order type, time
 * in force, price and post-only that are not orders at all. One rule with
 * its words (ENG_SHAPE_MAP), used by the core's checks of packed commands,
 * by the Engine's calls and by the server's requests. No state: the server's
 * extension links this file alone. The rule itself is in shape.h.
 */
#include "shape.h"

static const char *const shape_messages[] = {
#define XX(code, msg) msg,
    ENG_SHAPE_MAP(XX)
#undef XX
};

int eng_order_shape(uint8_t order_type, uint8_t tif, int has_price, uint8_t flags)
{
    return shape_of(order_type, tif, has_price, flags);
}

const char *eng_shape_message(int shape)
{
    return shape >= 0 && shape < ENG_SHAPE__COUNT ? shape_messages[shape] : "?";
}
