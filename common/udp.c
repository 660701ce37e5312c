#include "common/udp.h"

#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <unistd.h>

#include "kadpunch.h"

/* At most this many recvmmsg rounds per readiness event, so one busy socket
 * cannot starve the rest of the loop. */
#define RECV_ROUNDS 8

static void update_poll(kp_udp_t *udp);

static void flush(kp_udp_t *udp, kp_udp_batch_t *b) {
  unsigned sent = 0;
  while (sent < b->count) {
    int n = sendmmsg(udp->fd, b->msgs + sent, b->count - sent, MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR) continue;
      /* Buffer full or an unreachable destination: drop the one that failed
       * (the network would have) and carry on with the rest. */
      udp->stats.send_drops++;
      sent++;
      continue;
    }
    for (int i = 0; i < n; i++) {
      udp->stats.packets_out++;
      udp->stats.bytes_out += b->msgs[sent + (unsigned)i].msg_len;
    }
    sent += (unsigned)n;
  }
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

  /* Scratch for one recvmmsg round; lives only for this callback. */
  uint8_t bufs[KP_UDP_BATCH][KP_UDP_MAX_DATAGRAM];
  struct mmsghdr msgs[KP_UDP_BATCH];
  struct iovec iov[KP_UDP_BATCH];
  struct sockaddr_storage addrs[KP_UDP_BATCH];
  kp_udp_batch_t batch;

  udp->in_callback = true;
  kp_udp_batch_begin(udp, &batch);
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
      size_t len = msgs[i].msg_len;
      kp_addr_t from;
      if (msgs[i].msg_hdr.msg_flags & MSG_TRUNC) {
        udp->stats.recv_oversize++;
        continue;
      }
      if (kp_addr_from_sockaddr(&from, (struct sockaddr *)&addrs[i])) continue;
      udp->stats.packets_in++;
      udp->stats.bytes_in += len;
      udp->on_recv(udp, &from, bufs[i], len);
    }
    if (n < KP_UDP_BATCH) break;
  }
  if (!udp->closing)
    kp_udp_batch_end(udp, &batch);
  else
    udp->batch = NULL;
  udp->in_callback = false;
}

static void update_poll(kp_udp_t *udp) {
  if (udp->closing) return;
  int events = (udp->on_recv ? UV_READABLE : 0) | (udp->on_writable ? UV_WRITABLE : 0);
  if (events == udp->poll_events) return;
  udp->poll_events = events;
  if (events)
    uv_poll_start(&udp->poll, events, on_poll);
  else
    uv_poll_stop(&udp->poll);
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
  if (opts && opts->rcvbuf > 0) setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &opts->rcvbuf, sizeof(int));
  if (opts && opts->sndbuf > 0) setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &opts->sndbuf, sizeof(int));
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
  kp_udp_batch_t *b = udp->batch;
  if (!b) return kp_udp_send_now(udp, to, data, len);
  if (len > KP_UDP_MAX_DATAGRAM) return KP_ETOOBIG;
  if (b->count == KP_UDP_BATCH) flush(udp, b);
  unsigned i = b->count;
  socklen_t sslen = kp_addr_to_sockaddr(to, &b->addrs[i]);
  if (!sslen) return KP_EBADADDR;
  memcpy(b->data[i], data, len);
  b->iov[i].iov_base = b->data[i];
  b->iov[i].iov_len = len;
  memset(&b->msgs[i], 0, sizeof(b->msgs[i]));
  b->msgs[i].msg_hdr.msg_name = &b->addrs[i];
  b->msgs[i].msg_hdr.msg_namelen = sslen;
  b->msgs[i].msg_hdr.msg_iov = &b->iov[i];
  b->msgs[i].msg_hdr.msg_iovlen = 1;
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

int kp_udp_set_ttl(kp_udp_t *udp, int ttl) {
  /* -1 restores the route default for both IP_TTL and IPV6_UNICAST_HOPS. */
  int v = ttl > 0 ? ttl : -1;
  int r = udp->local.family == KP_AF_INET6
              ? setsockopt(udp->fd, IPPROTO_IPV6, IPV6_UNICAST_HOPS, &v, sizeof(v))
              : setsockopt(udp->fd, IPPROTO_IP, IP_TTL, &v, sizeof(v));
  return r < 0 ? -errno : 0;
}

static void on_closed(uv_handle_t *handle) {
  kp_udp_t *udp = handle->data;
  if (udp->on_close) udp->on_close(udp);
}

void kp_udp_close(kp_udp_t *udp, kp_udp_close_cb cb) {
  if (udp->closing) return;
  udp->closing = true;
  udp->on_close = cb;
  udp->on_recv = NULL;
  udp->on_writable = NULL;
  if (udp->batch) udp->batch->count = 0;
  uv_close((uv_handle_t *)&udp->poll, on_closed);
  /* uv_close stops the poll at once, so the descriptor can go now. */
  close(udp->fd);
  udp->fd = -1;
}
