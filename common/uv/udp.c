/* SPDX-License-Identifier: MIT */
#include "common/uv/udp.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <string.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/buf.h"
#include "kadpunch.h"

/* At most this many recvmmsg rounds per readiness event, so one busy socket
 * cannot starve the rest of the loop. */
#define RECV_ROUNDS 8
/* GRO: buffers per recvmmsg and their size (the kernel coalesces up to 64
 * KiB). */
#define GRO_SLOTS 8
#define GRO_SLOT_SIZE 65536
/* GSO: a send carries at most 64 segments (the kernel's UDP_MAX_SEGMENTS
 * on older kernels) and must fit an IP datagram's 64 KiB. */
#define GSO_MAX_SEGMENTS 64
#define GSO_MAX_BYTES 65000
/* GSO sends the kernel refused before we stop trying them. */
#define GSO_MAX_FAILURES 3

static void update_poll(kp_udp_t *udp);
static void receive(kp_udp_t *udp);
static void receive_gro(kp_udp_t *udp);

/* Runs of datagrams to one destination (a relay forwarding a stream) go
 * as GSO sends; anything the socket buffer cannot take is dropped, as the
 * network would. */
static void flush(kp_udp_t *udp, kp_udp_batch_t *b) {
  kp_udp_out_t out[KP_UDP_BATCH_DGRAMS];
  for (unsigned i = 0; i < b->count; i++) out[i] = (kp_udp_out_t){b->to[i], b->data[i], b->len[i]};
  unsigned sent = kp_udp_send_datagrams(udp, out, b->count);
  udp->stats.send_drops += b->count - sent;
  b->count = 0;
}

static void on_poll(uv_poll_t *handle, int status, int events) {
  kp_udp_t *udp = handle->data;
  if (status < 0) return;

  if ((events & UV_WRITABLE) && udp->on_writable) {
    kp_udp_writable_cb cb = udp->on_writable;
    udp->on_writable = NULL;
    update_poll(udp);
    cb(udp);
    if (udp->closing) return;
  }
  if (!(events & UV_READABLE) || !udp->on_recv) return;

  kp_udp_batch_t batch;
  udp->in_callback = true;
  kp_udp_batch_begin(udp, &batch);
  if (udp->gro_buf)
    receive_gro(udp);
  else
    receive(udp);
  if (!udp->closing)
    kp_udp_batch_end(udp, &batch);
  else
    udp->batch = NULL;
  udp->in_callback = false;
}

static void deliver(kp_udp_t *udp, struct sockaddr_storage *ss, uint8_t *data, size_t len) {
  kp_addr_t from;
  if (len > KP_UDP_MAX_DATAGRAM) {
    udp->stats.recv_oversize++;
    return;
  }
  if (kp_addr_from_sockaddr(&from, (struct sockaddr *)ss)) return;
  udp->stats.packets_in++;
  udp->stats.bytes_in += len;
  udp->on_recv(udp, &from, data, len);
}

/* Plain receive: scratch for one recvmmsg round on the stack, alive only
 * during the callback. */
static void receive(kp_udp_t *udp) {
  uint8_t bufs[KP_UDP_BATCH][KP_UDP_MAX_DATAGRAM];
  struct mmsghdr msgs[KP_UDP_BATCH];
  struct iovec iov[KP_UDP_BATCH];
  struct sockaddr_storage addrs[KP_UDP_BATCH];
  for (int round = 0; round < RECV_ROUNDS && !udp->closing && udp->on_recv; round++) {
    for (unsigned i = 0; i < KP_UDP_BATCH; i++) {
      iov[i].iov_base = bufs[i];
      iov[i].iov_len = sizeof(bufs[i]);
      memset(&msgs[i].msg_hdr, 0, sizeof(msgs[i].msg_hdr));
      msgs[i].msg_hdr.msg_name = &addrs[i];
      msgs[i].msg_hdr.msg_namelen = sizeof(addrs[i]);
      msgs[i].msg_hdr.msg_iov = &iov[i];
      msgs[i].msg_hdr.msg_iovlen = 1;
    }
    int n = recvmmsg(udp->fd, msgs, KP_UDP_BATCH, MSG_DONTWAIT, NULL);
    if (n <= 0) break;
    for (int i = 0; i < n && !udp->closing && udp->on_recv; i++) {
      if (msgs[i].msg_hdr.msg_flags & MSG_TRUNC) {
        udp->stats.recv_oversize++;
        continue;
      }
      deliver(udp, &addrs[i], bufs[i], msgs[i].msg_len);
    }
    if (n < KP_UDP_BATCH) break;
  }
}

/* GRO receive: each buffer may hold several datagrams of one flow, all of
 * the size the UDP_GRO control message gives but the last. */
static void receive_gro(kp_udp_t *udp) {
  struct mmsghdr msgs[GRO_SLOTS];
  struct iovec iov[GRO_SLOTS];
  struct sockaddr_storage addrs[GRO_SLOTS];
  union {
    struct cmsghdr align;
    uint8_t buf[CMSG_SPACE(sizeof(int))];
  } ctl[GRO_SLOTS];
  for (int round = 0; round < RECV_ROUNDS && !udp->closing && udp->on_recv; round++) {
    for (unsigned i = 0; i < GRO_SLOTS; i++) {
      iov[i].iov_base = udp->gro_buf + (size_t)i * GRO_SLOT_SIZE;
      iov[i].iov_len = GRO_SLOT_SIZE;
      memset(&msgs[i].msg_hdr, 0, sizeof(msgs[i].msg_hdr));
      msgs[i].msg_hdr.msg_name = &addrs[i];
      msgs[i].msg_hdr.msg_namelen = sizeof(addrs[i]);
      msgs[i].msg_hdr.msg_iov = &iov[i];
      msgs[i].msg_hdr.msg_iovlen = 1;
      msgs[i].msg_hdr.msg_control = ctl[i].buf;
      msgs[i].msg_hdr.msg_controllen = sizeof(ctl[i].buf);
    }
    int n = recvmmsg(udp->fd, msgs, GRO_SLOTS, MSG_DONTWAIT, NULL);
    if (n <= 0) break;
    for (int i = 0; i < n && !udp->closing && udp->on_recv; i++) {
      struct msghdr *h = &msgs[i].msg_hdr;
      size_t len = msgs[i].msg_len, seg = len;
      if (h->msg_flags & MSG_TRUNC) {
        udp->stats.recv_oversize++;
        continue;
      }
      for (struct cmsghdr *c = CMSG_FIRSTHDR(h); c; c = CMSG_NXTHDR(h, c)) {
        if (c->cmsg_level == SOL_UDP && c->cmsg_type == UDP_GRO) {
          int v;
          memcpy(&v, CMSG_DATA(c), sizeof(v));
          if (v > 0) seg = (size_t)v;
        }
      }
      if (seg < len) udp->stats.gro_receives++;
      uint8_t *p = iov[i].iov_base;
      for (size_t off = 0; off < len && !udp->closing && udp->on_recv; off += seg)
        deliver(udp, &addrs[i], p + off, len - off < seg ? len - off : seg);
    }
    if (n < GRO_SLOTS) break;
  }
}

int kp_udp_enable_gro(kp_udp_t *udp) {
  if (udp->gro_buf || udp->vops) return 0;
  uint8_t *buf = kp_malloc((size_t)GRO_SLOTS * GRO_SLOT_SIZE);
  if (!buf) return UV_ENOMEM;
  int one = 1;
  if (setsockopt(udp->fd, SOL_UDP, UDP_GRO, &one, sizeof(one)) < 0) {
    int err = -errno;
    kp_free(buf);
    return err;
  }
  udp->gro_buf = buf;
  return 0;
}

/* How many of out[0..n) form one GSO send: same destination, same size,
 * only the last may be shorter. */
static unsigned run_length(const kp_udp_t *udp, const kp_udp_out_t *out, unsigned n) {
  if (udp->gso_off) return 1;
  size_t seg = out[0].len, total = seg;
  unsigned k = 1;
  while (k < n && k < GSO_MAX_SEGMENTS && total + out[k].len <= GSO_MAX_BYTES &&
         out[k].len <= seg && kp_addr_eq(&out[k].to, &out[0].to)) {
    total += out[k].len;
    if (out[k++].len < seg) break;
  }
  return k;
}

static unsigned virtual_send(kp_udp_t *udp, const kp_udp_out_t *out, unsigned n) {
  unsigned took = udp->vops->send(udp, out, n);
  for (unsigned i = 0; i < took; i++) udp->stats.bytes_out += out[i].len;
  udp->stats.packets_out += took;
  return took;
}

unsigned kp_udp_send_datagrams(kp_udp_t *udp, const kp_udp_out_t *out, unsigned n) {
  struct mmsghdr msgs[KP_UDP_BATCH];
  struct sockaddr_storage addrs[KP_UDP_BATCH];
  struct iovec iov[KP_UDP_BATCH * GSO_MAX_SEGMENTS];
  union {
    struct cmsghdr align;
    uint8_t buf[CMSG_SPACE(sizeof(uint16_t))];
  } ctl[KP_UDP_BATCH];
  unsigned runs[KP_UDP_BATCH];
  unsigned done = 0;
  bool split = false; /* the last GSO send was refused: retry it one by one */
  if (udp->closing) return n;
  if (udp->vops) return virtual_send(udp, out, n);
  while (done < n) {
    /* Fill a sendmmsg with runs. */
    unsigned m = 0, next = done, nio = 0;
    while (m < KP_UDP_BATCH && next < n) {
      unsigned k = split ? 1 : run_length(udp, out + next, n - next);
      socklen_t sslen = kp_addr_to_sockaddr(&out[next].to, &addrs[m]);
      struct msghdr *h = &msgs[m].msg_hdr;
      memset(h, 0, sizeof(*h));
      h->msg_name = &addrs[m];
      h->msg_namelen = sslen;
      h->msg_iov = &iov[nio];
      h->msg_iovlen = k;
      for (unsigned j = 0; j < k; j++) {
        iov[nio + j].iov_base = (void *)out[next + j].data;
        iov[nio + j].iov_len = out[next + j].len;
      }
      if (k > 1) {
        uint16_t seg = (uint16_t)out[next].len;
        h->msg_control = ctl[m].buf;
        h->msg_controllen = sizeof(ctl[m].buf);
        struct cmsghdr *c = CMSG_FIRSTHDR(h);
        c->cmsg_level = SOL_UDP;
        c->cmsg_type = UDP_SEGMENT;
        c->cmsg_len = CMSG_LEN(sizeof(seg));
        memcpy(CMSG_DATA(c), &seg, sizeof(seg));
      }
      runs[m++] = k;
      nio += k;
      next += k;
      if (split) break;
    }
    bool retry = split;
    split = false;
    int sent = sendmmsg(udp->fd, msgs, m, MSG_DONTWAIT);
    if (retry && sent > 0 && ++udp->gso_failures >= GSO_MAX_FAILURES) udp->gso_off = true;
    if (sent < 0) {
      int err = errno;
      if (err == EINTR) continue;
      if (err == EAGAIN || err == EWOULDBLOCK) return done;
      if (runs[0] > 1 && (err == EIO || err == EINVAL)) {
        /* The kernel would not segment this one: no GSO here, or a segment
         * too big for the device. Send it datagram by datagram; if those
         * go, GSO was the trouble. */
        split = true;
        continue;
      }
      /* Unreachable, too big for the path, ...: the network would have
       * dropped it. */
      udp->stats.send_drops += runs[0];
      done += runs[0];
      continue;
    }
    for (int i = 0; i < sent; i++) {
      udp->stats.packets_out += runs[i];
      udp->stats.bytes_out += msgs[i].msg_len;
      if (runs[i] > 1) udp->stats.gso_sends++;
      done += runs[i];
    }
  }
  return done;
}

static void update_poll(kp_udp_t *udp) {
  if (udp->closing || udp->vops) return;
  int events = (udp->on_recv ? UV_READABLE : 0) | (udp->on_writable ? UV_WRITABLE : 0);
  if (events == udp->poll_events) return;
  udp->poll_events = events;
  if (events)
    uv_poll_start(&udp->poll, events, on_poll);
  else
    uv_poll_stop(&udp->poll);
}

/* SO_RCVBUF and SO_SNDBUF (0 or less: left as they are); 0 or -errno. */
static int set_buffers(int fd, int rcvbuf, int sndbuf) {
  if (rcvbuf > 0 && setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf)) < 0)
    return -errno;
  if (sndbuf > 0 && setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf)) < 0)
    return -errno;
  return 0;
}

int kp_udp_init(uv_loop_t *loop, kp_udp_t *udp, const kp_addr_t *bind_addr,
                const kp_udp_options_t *opts) {
  struct sockaddr_storage ss;
  socklen_t sslen = kp_addr_to_sockaddr(bind_addr, &ss);
  memset(udp, 0, sizeof(*udp));
  udp->fd = -1;
  if (!sslen) return KP_EBADADDR;

  int fd = socket(ss.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -errno;
  int one = 1;
  if (ss.ss_family == AF_INET6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
  /* Don't Fragment, whatever the route's cached path MTU says: a datagram
   * too big for the path is lost, not fragmented (see the header). */
  int probe = IP_PMTUDISC_PROBE;
  if (ss.ss_family == AF_INET6) {
    probe = IPV6_PMTUDISC_PROBE;
    setsockopt(fd, IPPROTO_IPV6, IPV6_MTU_DISCOVER, &probe, sizeof(probe));
  } else {
    setsockopt(fd, IPPROTO_IP, IP_MTU_DISCOVER, &probe, sizeof(probe));
  }
  if (opts) set_buffers(fd, opts->rcvbuf, opts->sndbuf); /* best effort, as the kernel caps it */
  if (bind(fd, (struct sockaddr *)&ss, sslen) < 0) {
    int err = -errno;
    close(fd);
    return err;
  }
  socklen_t len = sizeof(ss);
  if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0 ||
      kp_addr_from_sockaddr(&udp->local, (struct sockaddr *)&ss)) {
    int err = errno ? -errno : KP_EBADADDR;
    close(fd);
    return err;
  }
  int err = uv_poll_init(loop, &udp->poll, fd);
  if (err) {
    close(fd);
    return err;
  }
  udp->poll.data = udp;
  udp->loop = loop;
  udp->fd = fd;
  return 0;
}

int kp_udp_recv_start(kp_udp_t *udp, kp_udp_recv_cb cb) {
  if (udp->closing) return UV_EINVAL;
  udp->on_recv = cb;
  update_poll(udp);
  return 0;
}

int kp_udp_recv_stop(kp_udp_t *udp) {
  udp->on_recv = NULL;
  update_poll(udp);
  return 0;
}

void kp_udp_want_writable(kp_udp_t *udp, kp_udp_writable_cb cb) {
  udp->on_writable = cb;
  update_poll(udp);
}

int kp_udp_send_now(kp_udp_t *udp, const kp_addr_t *to, const void *data, size_t len) {
  struct sockaddr_storage ss;
  socklen_t sslen = kp_addr_to_sockaddr(to, &ss);
  if (!sslen) return KP_EBADADDR;
  if (len > KP_UDP_MAX_DATAGRAM) return KP_ETOOBIG;
  if (udp->closing) return UV_EBADF;
  if (udp->vops) {
    kp_udp_out_t one = {*to, data, len};
    if (virtual_send(udp, &one, 1)) return 0;
    udp->stats.send_drops++;
    return UV_EAGAIN;
  }
  for (;;) {
    ssize_t n = sendto(udp->fd, data, len, MSG_DONTWAIT, (struct sockaddr *)&ss, sslen);
    if (n >= 0) {
      udp->stats.packets_out++;
      udp->stats.bytes_out += (uint64_t)n;
      return 0;
    }
    if (errno == EINTR) continue;
    udp->stats.send_drops++;
    return errno == EWOULDBLOCK ? UV_EAGAIN : -errno;
  }
}

int kp_udp_send(kp_udp_t *udp, const kp_addr_t *to, const void *data, size_t len) {
  return kp_udp_send_parts(udp, to, data, len, NULL, 0);
}

int kp_udp_send_parts(kp_udp_t *udp, const kp_addr_t *to, const void *head, size_t hlen,
                      const void *body, size_t blen) {
  if (hlen + blen > KP_UDP_MAX_DATAGRAM) return KP_ETOOBIG;
  kp_udp_batch_t *b = udp->batch;
  if (!b) {
    if (!blen) return kp_udp_send_now(udp, to, head, hlen);
    uint8_t whole[KP_UDP_MAX_DATAGRAM];
    return kp_udp_send_now(udp, to, whole,
                           kp_join_parts(whole, sizeof(whole), head, hlen, body, blen));
  }
  if (to->family != KP_AF_INET && to->family != KP_AF_INET6) return KP_EBADADDR;
  if (b->count == KP_UDP_BATCH_DGRAMS) flush(udp, b);
  unsigned i = b->count;
  b->to[i] = *to;
  b->len[i] = (uint16_t)(hlen + blen);
  memcpy(b->data[i], head, hlen);
  if (blen) memcpy(b->data[i] + hlen, body, blen);
  b->count++;
  return 0;
}

void kp_udp_batch_begin(kp_udp_t *udp, kp_udp_batch_t *batch) {
  batch->udp = udp;
  batch->count = 0;
  batch->outer = udp->batch;
  if (!udp->batch) udp->batch = batch;
}

void kp_udp_batch_end(kp_udp_t *udp, kp_udp_batch_t *batch) {
  if (batch->outer || udp->batch != batch) return; /* nested: the outermost sends */
  if (!udp->closing) flush(udp, batch);
  udp->batch = NULL;
}

int kp_udp_set_buffers(kp_udp_t *udp, int rcvbuf, int sndbuf) {
  return udp->vops ? 0 : set_buffers(udp->fd, rcvbuf, sndbuf);
}

int kp_udp_set_ttl(kp_udp_t *udp, int ttl) {
  if (udp->vops) return 0;
  /* -1 restores the route default for both IP_TTL and IPV6_UNICAST_HOPS. */
  int v = ttl > 0 ? ttl : -1;
  int r = udp->local.family == KP_AF_INET6
              ? setsockopt(udp->fd, IPPROTO_IPV6, IPV6_UNICAST_HOPS, &v, sizeof(v))
              : setsockopt(udp->fd, IPPROTO_IP, IP_TTL, &v, sizeof(v));
  return r < 0 ? -errno : 0;
}

static void on_closed(uv_handle_t *handle) {
  kp_udp_t *udp = handle->data;
  kp_free(udp->gro_buf);
  udp->gro_buf = NULL;
  if (udp->on_close) udp->on_close(udp);
}

void kp_udp_close(kp_udp_t *udp, kp_udp_close_cb cb) {
  if (udp->closing) return;
  udp->closing = true;
  udp->on_close = cb;
  udp->on_recv = NULL;
  udp->on_writable = NULL;
  if (udp->batch) udp->batch->count = 0;
  if (udp->vops) {
    udp->vops->close(udp);
    return;
  }
  uv_close((uv_handle_t *)&udp->poll, on_closed);
  /* uv_close stops the poll at once, so the descriptor can go now. */
  close(udp->fd);
  udp->fd = -1;
}

/* ---- Virtual sockets ------------------------------------------------------------ */

void kp_udp_init_virtual(uv_loop_t *loop, kp_udp_t *udp, const kp_udp_vops_t *ops, void *ctx,
                         const kp_addr_t *local) {
  memset(udp, 0, sizeof(*udp));
  udp->loop = loop;
  udp->fd = -1;
  udp->vops = ops;
  udp->vctx = ctx;
  if (local) udp->local = *local;
}

void kp_udp_virtual_deliver(kp_udp_t *udp, const kp_addr_t *from, uint8_t *data, size_t len) {
  if (!udp->on_recv || udp->closing) return;
  udp->stats.packets_in++;
  udp->stats.bytes_in += len;
  kp_udp_batch_t batch;
  bool outer = !udp->in_callback;
  udp->in_callback = true;
  kp_udp_batch_begin(udp, &batch);
  udp->on_recv(udp, from, data, len);
  if (!udp->closing) {
    kp_udp_batch_end(udp, &batch);
  } else if (udp->batch == &batch) {
    udp->batch = NULL;
  }
  if (outer) udp->in_callback = false;
}

void kp_udp_virtual_writable(kp_udp_t *udp) {
  kp_udp_writable_cb cb = udp->on_writable;
  udp->on_writable = NULL;
  if (cb && !udp->closing) cb(udp);
}

void kp_udp_virtual_closed(kp_udp_t *udp) {
  if (udp->on_close) udp->on_close(udp);
}
