/* SPDX-License-Identifier: MIT */
/* SOCKS5 messages (RFC 1928), as a local program sends them to `connect
 * --socks` and as kadpunch carries a CONNECT request on a stream to `serve
 * --socks` (docs/protocol.md, "SOCKS through a peer": the stream's first
 * bytes are the same request, its first bytes back the same reply).
 *
 * Pure: decoders take a prefix of what arrived and say whether it holds a
 * whole message (bytes used), needs more (0), or is bad; nothing is kept
 * between calls and nothing is allocated. Encoders write into a buffer of
 * KP_CLI_SOCKS_MSG_MAX bytes. */
#ifndef KP_CLI_SOCKS_CODEC_H
#define KP_CLI_SOCKS_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define KP_CLI_SOCKS_VERSION 5
/* The longest request or reply: 4 + 1 + 255 + 2 (a 255-byte name). */
#define KP_CLI_SOCKS_MSG_MAX 262
/* The longest greeting: 2 + 255 methods. */
#define KP_CLI_SOCKS_GREETING_MAX 257

enum { KP_CLI_SOCKS_CONNECT = 1, KP_CLI_SOCKS_BIND = 2, KP_CLI_SOCKS_UDP_ASSOCIATE = 3 };
enum { KP_CLI_SOCKS_ATYP_IPV4 = 1, KP_CLI_SOCKS_ATYP_NAME = 3, KP_CLI_SOCKS_ATYP_IPV6 = 4 };

/* Reply codes (RFC 1928 section 6). */
enum {
  KP_CLI_SOCKS_OK = 0,
  KP_CLI_SOCKS_FAILURE = 1,     /* general SOCKS server failure */
  KP_CLI_SOCKS_NOT_ALLOWED = 2, /* connection not allowed by ruleset */
  KP_CLI_SOCKS_NET_UNREACHABLE = 3,
  KP_CLI_SOCKS_HOST_UNREACHABLE = 4,
  KP_CLI_SOCKS_REFUSED = 5,
  KP_CLI_SOCKS_TTL_EXPIRED = 6,
  KP_CLI_SOCKS_BAD_COMMAND = 7,
  KP_CLI_SOCKS_BAD_ADDRESS = 8, /* address type not supported */
};

/* What a decoder found wrong, besides a reply code to send: not SOCKS5 at
 * all (a version byte other than 5), after which the only answer is to
 * close. */
#define KP_CLI_SOCKS_EVERSION (-1000)

/* An address as SOCKS carries it: IPv4, IPv6 or a name, and a port. */
typedef struct kp_cli_socks_addr_s {
  uint8_t type;   /* KP_CLI_SOCKS_ATYP_* */
  uint8_t ip[16]; /* IPv4 in the first 4 */
  char name[256]; /* NUL-terminated (ATYP_NAME): 1 to 255 printable characters, no spaces */
  uint16_t port;
} kp_cli_socks_addr_t;

/* A client's greeting (VER NMETHODS METHODS): bytes used, 0 for more, or
 * KP_CLI_SOCKS_EVERSION. *no_auth: it offers "no authentication" (0). */
int kp_cli_socks_parse_greeting(const uint8_t *p, size_t len, bool *no_auth);

/* A request (VER CMD RSV ATYP DST.ADDR DST.PORT): bytes used, 0 for more,
 * KP_CLI_SOCKS_EVERSION, or minus the reply code to refuse it with
 * (-KP_CLI_SOCKS_BAD_ADDRESS: an unknown address type;
 * -KP_CLI_SOCKS_FAILURE: an empty name or one with bytes no host name has).
 * The command is not checked: callers refuse what they do not do. */
int kp_cli_socks_parse_request(const uint8_t *p, size_t len, uint8_t *cmd,
                               kp_cli_socks_addr_t *dst);

/* A reply (VER REP RSV ATYP BND.ADDR BND.PORT): bytes used, 0 for more,
 * KP_CLI_SOCKS_EVERSION or -KP_CLI_SOCKS_BAD_ADDRESS. */
int kp_cli_socks_parse_reply(const uint8_t *p, size_t len, uint8_t *rep, kp_cli_socks_addr_t *bnd);

/* A UDP ASSOCIATE datagram's header (RSV RSV FRAG ATYP DST.ADDR DST.PORT,
 * RFC 1928 section 7): its length, or -1 (truncated, fragmented, a bad
 * address). */
int kp_cli_socks_parse_udp(const uint8_t *p, size_t len, kp_cli_socks_addr_t *addr);

/* ATYP ADDR PORT alone (the tail of the messages above): bytes used, 0 for
 * more, or minus a reply code. */
int kp_cli_socks_parse_addr(const uint8_t *p, size_t len, kp_cli_socks_addr_t *addr);

/* Encoders: the bytes written (buffers of KP_CLI_SOCKS_MSG_MAX), 0 if the
 * address is not valid. */
size_t kp_cli_socks_put_addr(uint8_t *out, const kp_cli_socks_addr_t *a);
size_t kp_cli_socks_put_request(uint8_t *out, uint8_t cmd, const kp_cli_socks_addr_t *dst);
/* A reply; bnd NULL: 0.0.0.0:0. */
size_t kp_cli_socks_put_reply(uint8_t *out, uint8_t rep, const kp_cli_socks_addr_t *bnd);
/* A UDP datagram's header (RSV RSV FRAG=0 ATYP ADDR PORT). */
size_t kp_cli_socks_put_udp(uint8_t *out, const kp_cli_socks_addr_t *a);

/* The flow id in front of every datagram of a UDP service (docs/protocol.md,
 * "UDP services"; a QUIC varint): bytes used, 0 if malformed. */
size_t kp_cli_udp_get_flow(const uint8_t *p, size_t len, uint64_t *flow);
/* Writes it into out (8 bytes at most); returns its length. */
size_t kp_cli_udp_put_flow(uint8_t *out, uint64_t flow);

/* Between socket addresses and SOCKS ones (IPv4-mapped IPv6 becomes IPv4).
 * to_sockaddr: false for a name. */
void kp_cli_socks_addr_from_sockaddr(kp_cli_socks_addr_t *out, const struct sockaddr *sa);
bool kp_cli_socks_addr_to_sockaddr(const kp_cli_socks_addr_t *a, struct sockaddr_storage *out);
/* "1.2.3.4:5", "[::1]:5" or "name:5", into buf (size >= 300). */
const char *kp_cli_socks_addr_text(const kp_cli_socks_addr_t *a, char *buf, size_t size);
/* What a reply code says, in a few words. */
const char *kp_cli_socks_reply_text(uint8_t rep);
/* The reply code a failed connect's libuv error means. */
uint8_t kp_cli_socks_reply_for(int uv_err);

#endif
