/* SPDX-License-Identifier: MIT */
/* Error names and messages, generated from KP_ERRNO_MAP in kadpunch.h. */
#include "kadpunch.h"

const char *kp_version_string(void) {
  return KP_VERSION_STRING;
}

const char *kp_strerror(int err) {
  switch (err) {
    case 0: return "success";
#define KP__ERR_MSG(name, msg)                                                                     \
  case KP_##name: return msg;
      KP_ERRNO_MAP(KP__ERR_MSG)
#undef KP__ERR_MSG
    default: break;
  }
  /* Our errors never fall through; anything else below zero is libuv's. */
  if (err < 0 && err > KP__ERR_BASE) return uv_strerror(err);
  return "unknown error";
}

const char *kp_err_name(int err) {
  switch (err) {
    case 0: return "OK";
#define KP__ERR_NAME(name, msg)                                                                    \
  case KP_##name: return "KP_" #name;
      KP_ERRNO_MAP(KP__ERR_NAME)
#undef KP__ERR_NAME
    default: break;
  }
  if (err < 0 && err > KP__ERR_BASE) return uv_err_name(err);
  return "KP_EUNKNOWN";
}
