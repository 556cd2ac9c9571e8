/*
 * errors.c - names and messages of the result, reject and cancel codes, all
 * generated from the tables in pyengine.h so they cannot drift apart.
 */
#include "pyengine.h"

static const char *const err_names[] = {
#define XX(code, name, msg) name,
    ENG_ERR_MAP(XX)
#undef XX
};

static const char *const err_messages[] = {
#define XX(code, name, msg) msg,
    ENG_ERR_MAP(XX)
#undef XX
};

static const char *const cancel_names[] = {
#define XX(code, name) name,
    ENG_CANCEL_REASON_MAP(XX)
#undef XX
};

const char *eng_err_name(int err)
{
    return err >= 0 && err < ENG_ERR__COUNT ? err_names[err] : "?";
}

const char *eng_strerror(int err)
{
    return err >= 0 && err < ENG_ERR__COUNT ? err_messages[err] : "?";
}

const char *eng_cancel_reason_name(int reason)
{
    return reason >= 0 && reason < ENG_CANCEL__COUNT ? cancel_names[reason] : "?";
}
