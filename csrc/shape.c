/*
 * shape.c - the shape of a new order: the combinations of order type, time
 * in force, price and post-only that are not orders at all. One rule with
 * its words (ENG_SHAPE_MAP), used by the core's checks of packed commands,
 * by the Engine's calls and by the server's requests. No state: the server's
 * extension links this file alone.
 */
#include <stdbool.h>

#include "pyengine.h"

static const char *const shape_messages[] = {
#define XX(code, msg) msg,
    ENG_SHAPE_MAP(XX)
#undef XX
};

int eng_order_shape(uint8_t order_type, uint8_t tif, int has_price, uint8_t flags)
{
    bool post_only = flags & ENG_CMD_F_POST_ONLY;

    if (order_type == ENG_MARKET) {
        if (has_price)
            return ENG_SHAPE_MARKET_WITH_PRICE;
        if (tif == ENG_GTC)
            return ENG_SHAPE_MARKET_GTC;
        if (post_only)
            return ENG_SHAPE_MARKET_POST_ONLY;
        return ENG_SHAPE_OK;
    }
    if (!has_price)
        return ENG_SHAPE_LIMIT_WITHOUT_PRICE;
    if (post_only && tif != ENG_GTC)
        return ENG_SHAPE_POST_ONLY_NOT_GTC;
    return ENG_SHAPE_OK;
}

const char *eng_shape_message(int shape)
{
    return shape >= 0 && shape < ENG_SHAPE__COUNT ? shape_messages[shape] : "?";
}
