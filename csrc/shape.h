/*
 * shape.h - the rule of eng_order_shape() (pyengine.h), inline for the core's
 * check of every new order; shape.c gives it to everyone else.
 */
#ifndef ENG_SHAPE_H
#define ENG_SHAPE_H

#include <stdbool.h>
#include <stdint.h>

#include "pyengine.h"

static inline int shape_of(uint8_t order_type, uint8_t tif, int has_price, uint8_t flags)
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

#endif /* ENG_SHAPE_H */
