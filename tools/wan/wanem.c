/* SPDX-License-Identifier: MIT */
/* wanem: a wide-area path in user space, for the lab (the kernel here has
 * no netem). It runs in a namespace between two others, on the two veth
 * legs that lead to them, and forwards every Ethernet frame from one leg to
 * the other after doing to it what a long, narrow, lossy path would:
 *
 *   frame in -> bottleneck (rate, drop-tail queue in bytes) -> loss
 *            -> propagation delay (+ jitter, optionally reordering) -> frame out
 *
 * The same code carries UDP and TCP (and anything else over IP): it works on
 * frames, not on sockets. ARP passes at once and untouched (a lost ARP
 * reply would stall a run for a second and measure nothing). Both
 * directions get the same settings and independent state.
 *
 *   wanem --leg-a IF --leg-b IF [--delay MS] [--jitter MS] [--reorder]
 *         [--loss PCT] [--gilbert P,R,BAD,GOOD] [--rate MBIT] [--queue BYTES]
 *         [--queue-ms MS] [--seed N] [--stats FILE]
 *
 * --delay is one way (an RTT of 80 ms is --delay 40). Jitter adds a uniform
 * [0, jitter] to each frame's delay; without --reorder a frame never
 * overtakes an earlier one (jitter only bunches and spreads them, as on a
 * real path with one queue), with it frames leave in release order.
 * --loss drops that share of frames at random; --gilbert is the
 * Gilbert-Elliott model for bursty loss (per frame: from good to bad with
 * P%, from bad to good with R%, losing BAD% in the bad state and GOOD% in
 * the good one). --rate is the bottleneck in Mbit/s of frame bytes (the
 * Ethernet header counts, the preamble and gaps do not), with a drop-tail
 * queue of --queue bytes (or --queue-ms of the rate; default 1 MiB). Loss
 * happens after the bottleneck, so a lost frame used the link, as on a
 * lossy last hop.
 *
 * Mechanics: one AF_PACKET socket per leg with PACKET_VNET_HDR (frames keep
 * their checksum-offload state: a veth hands over TCP and UDP with partial
 * checksums, and the virtio header carries them across), recvmmsg and
 * sendmmsg in batches of 64, one thread per direction with a binary heap
 * ordered by release time and epoll_pwait2 for microsecond wake-ups. Frames
 * live in a fixed pool of 2 KiB slots per direction; a full pool drops
 * (counted). The hosts' legs must not hand over GSO super-frames (the lab
 * sets gso_max_segs 1 on them); any that come are dropped and counted.
 *
 * On SIGTERM or SIGINT it writes its counters (--stats FILE, else stdout)
 * and exits; SIGUSR1 writes them and goes on. */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <linux/if_packet.h>
#include <linux/virtio_net.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BATCH 64
#define SLOT_BYTES 2048
#define VNET_LEN ((int)sizeof(struct virtio_net_hdr))
#define MAX_SLOTS (1u << 20) /* 2 GiB: far beyond any lab path */

typedef struct slot_s {
  uint64_t release_us;
  uint64_t seq;
  uint32_t len; /* virtio header + frame */
  uint32_t next_free;
  uint8_t data[SLOT_BYTES];
} slot_t;

typedef struct params_s {
  uint64_t delay_us, jitter_us;
  bool reorder;
  double loss; /* 0..1 */
  bool gilbert;
  double ge_p, ge_r, ge_bad, ge_good; /* 0..1 */
  uint64_t rate_bps;                  /* 0: unlimited */
  uint64_t queue_bytes;
} params_t;

typedef struct stats_s {
  uint64_t frames_in, bytes_in, forwarded, bytes_out, arp;
  uint64_t queue_drops, losses, pool_drops, gso_drops, truncated, send_errors;
  uint64_t max_queue_bytes, max_held;
  uint64_t ge_bad_frames;
} stats_t;

/* Frames waiting to go out on a leg: sent in batches. */
typedef struct txq_s {
  struct mmsghdr msgs[BATCH];
  struct iovec iov[BATCH];
  uint32_t slots[BATCH];
  unsigned n;
} txq_t;

/* One direction, run by a thread of its own: frames that come in on leg
 * `from` and leave on the other. Sending a frame into a veth runs the
 * receiving host's whole stack in the sender's context, so each direction
 * pays for the host it feeds; two threads let two cores share that. */
typedef struct dir_s {
  int from;
  int rx_fd, tx_fd;
  pthread_t thread;
  uint64_t rng;
  /* Its frames, and the heap of those on their way, by (release, seq). */
  slot_t *pool;
  uint32_t pool_size, pool_fresh, free_head; /* fresh: never used yet */
  uint32_t *heap;
  size_t count;
  uint64_t seq;
  txq_t txq;
  /* The path. */
  uint64_t free_at_us;   /* when the bottleneck has sent everything it holds */
  uint64_t last_release; /* without reordering, nobody leaves before this */
  bool ge_bad;
  stats_t st;
} dir_t;

static params_t P = {.queue_bytes = 1u << 20};
static dir_t dirs[2];
static int fds[2];
static const char *legs[2];
static const char *stats_path;
static uint64_t seed = 1;
static atomic_bool stop_flag; /* set by the main thread on a signal */

static uint64_t now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* splitmix64, one stream per direction: a run with the same seed and the
 * same frames in a direction draws the same fates for them. */
static double uniform(dir_t *d) {
  uint64_t z = (d->rng += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  z ^= z >> 31;
  return (double)(z >> 11) / (double)(1ull << 53);
}

_Noreturn static void die(const char *what) {
  fprintf(stderr, "wanem: %s: %s\n", what, strerror(errno));
  exit(1);
}

/* Slots are handed out from the free list, else untouched ones in order:
 * the pool's pages are only faulted in as the path fills. */
static uint32_t slot_get(dir_t *d) {
  uint32_t i = d->free_head;
  if (i != UINT32_MAX)
    d->free_head = d->pool[i].next_free;
  else if (d->pool_fresh < d->pool_size)
    i = d->pool_fresh++;
  return i;
}

static void slot_put(dir_t *d, uint32_t i) {
  d->pool[i].next_free = d->free_head;
  d->free_head = i;
}

static bool before(const dir_t *d, uint32_t a, uint32_t b) {
  const slot_t *x = &d->pool[a], *y = &d->pool[b];
  return x->release_us < y->release_us || (x->release_us == y->release_us && x->seq < y->seq);
}

static void heap_push(dir_t *d, uint32_t s) {
  size_t i = d->count++;
  while (i && before(d, s, d->heap[(i - 1) / 2])) {
    d->heap[i] = d->heap[(i - 1) / 2];
    i = (i - 1) / 2;
  }
  d->heap[i] = s;
  if (d->count > d->st.max_held) d->st.max_held = d->count;
}

static uint32_t heap_pop(dir_t *d) {
  uint32_t top = d->heap[0], last = d->heap[--d->count];
  size_t i = 0;
  for (;;) {
    size_t c = 2 * i + 1;
    if (c >= d->count) break;
    if (c + 1 < d->count && before(d, d->heap[c + 1], d->heap[c])) c++;
    if (!before(d, d->heap[c], last)) break;
    d->heap[i] = d->heap[c];
    i = c;
  }
  if (d->count) d->heap[i] = last;
  return top;
}

/* The path's verdict on one frame: false if it is lost (on the way in, or
 * to the bottleneck's queue); else its release time is set. */
static bool admit(dir_t *d, slot_t *s, uint64_t now) {
  uint32_t frame_len = s->len - (uint32_t)VNET_LEN;
  uint64_t depart = now;
  if (P.rate_bps) {
    /* The bottleneck: what it still holds is the time until it is free,
     * at the rate. A frame that does not fit its queue is dropped at the
     * tail; one that does leaves when everything before it has. */
    uint64_t start = d->free_at_us > now ? d->free_at_us : now;
    uint64_t held = (start - now) * P.rate_bps / 8000000u;
    if (held + frame_len > P.queue_bytes) {
      d->st.queue_drops++;
      return false;
    }
    if (held + frame_len > d->st.max_queue_bytes) d->st.max_queue_bytes = held + frame_len;
    d->free_at_us = start + ((uint64_t)frame_len * 8000000u + P.rate_bps - 1) / P.rate_bps;
    depart = d->free_at_us;
  }
  bool lost;
  if (P.gilbert) {
    /* Gilbert-Elliott: the state moves first, then this frame's fate. */
    if (d->ge_bad ? uniform(d) < P.ge_r : uniform(d) < P.ge_p) d->ge_bad = !d->ge_bad;
    if (d->ge_bad) d->st.ge_bad_frames++;
    lost = uniform(d) < (d->ge_bad ? P.ge_bad : P.ge_good);
  } else {
    lost = P.loss > 0 && uniform(d) < P.loss;
  }
  if (lost) {
    d->st.losses++;
    return false;
  }
  uint64_t jitter = P.jitter_us ? (uint64_t)(uniform(d) * (double)(P.jitter_us + 1)) : 0;
  uint64_t release = depart + P.delay_us + jitter;
  if (!P.reorder && release < d->last_release) release = d->last_release;
  d->last_release = release;
  s->release_us = release;
  s->seq = d->seq++;
  return true;
}

static void tx_flush(dir_t *d) {
  txq_t *q = &d->txq;
  unsigned done = 0;
  while (done < q->n) {
    int r = sendmmsg(d->tx_fd, q->msgs + done, q->n - done, 0);
    if (r < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == ENOBUFS) {
        /* The leg's queue is full for a moment: wait for room. */
        struct pollfd pfd = {d->tx_fd, POLLOUT, 0};
        poll(&pfd, 1, 10);
        continue;
      }
      /* Lost on the way out (the other side's link went down): counted. */
      d->st.send_errors++;
      done++;
      continue;
    }
    done += (unsigned)r;
  }
  for (unsigned i = 0; i < q->n; i++) slot_put(d, q->slots[i]);
  q->n = 0;
}

static void tx_add(dir_t *d, uint32_t s) {
  txq_t *q = &d->txq;
  q->iov[q->n].iov_base = d->pool[s].data;
  q->iov[q->n].iov_len = d->pool[s].len;
  memset(&q->msgs[q->n], 0, sizeof(q->msgs[q->n]));
  q->msgs[q->n].msg_hdr.msg_iov = &q->iov[q->n];
  q->msgs[q->n].msg_hdr.msg_iovlen = 1;
  q->slots[q->n++] = s;
  if (q->n == BATCH) tx_flush(d);
}

/* One received frame in slot s. */
static void on_frame(dir_t *d, uint32_t s, uint64_t now) {
  slot_t *sl = &d->pool[s];
  const struct virtio_net_hdr *vh = (const struct virtio_net_hdr *)sl->data;
  d->st.frames_in++;
  d->st.bytes_in += sl->len - (uint32_t)VNET_LEN;
  if (vh->gso_type != VIRTIO_NET_HDR_GSO_NONE) {
    d->st.gso_drops++; /* one frame standing for many: not what a wire carries */
    slot_put(d, s);
    return;
  }
  uint16_t type = 0;
  if (sl->len >= (uint32_t)VNET_LEN + 14)
    type = (uint16_t)(sl->data[VNET_LEN + 12] << 8 | sl->data[VNET_LEN + 13]);
  if (type == ETHERTYPE_ARP) {
    d->st.arp++;
    tx_add(d, s);
    return;
  }
  if (!admit(d, sl, now)) {
    slot_put(d, s);
    return;
  }
  heap_push(d, s);
}

/* Reads what the direction's leg has, in batches, until it has nothing
 * more (or a bound, so the releases get their turn). */
static void rx_leg(dir_t *d) {
  struct mmsghdr msgs[BATCH];
  struct iovec iov[BATCH];
  uint32_t slots[BATCH];
  struct sockaddr_ll from[BATCH];
  for (int round = 0; round < 16; round++) {
    unsigned n = 0;
    while (n < BATCH) {
      uint32_t s = slot_get(d);
      if (s == UINT32_MAX) break;
      slots[n] = s;
      iov[n].iov_base = d->pool[s].data;
      iov[n].iov_len = SLOT_BYTES;
      memset(&msgs[n], 0, sizeof(msgs[n]));
      msgs[n].msg_hdr.msg_iov = &iov[n];
      msgs[n].msg_hdr.msg_iovlen = 1;
      msgs[n].msg_hdr.msg_name = &from[n];
      msgs[n].msg_hdr.msg_namelen = sizeof(from[n]);
      n++;
    }
    if (n == 0) {
      /* The pool is exhausted: read one frame into a scratch slot and drop it. */
      uint8_t scratch[SLOT_BYTES];
      if (recv(d->rx_fd, scratch, sizeof(scratch), MSG_DONTWAIT) > 0) {
        d->st.frames_in++;
        d->st.pool_drops++;
        continue;
      }
      return;
    }
    int r = recvmmsg(d->rx_fd, msgs, n, MSG_DONTWAIT, NULL);
    uint64_t now = now_us();
    if (r < 0) r = 0;
    for (int i = 0; i < r; i++) {
      d->pool[slots[i]].len = msgs[i].msg_len;
      if (from[i].sll_pkttype == PACKET_OUTGOING) {
        slot_put(d, slots[i]); /* our own transmission, seen on the way out */
      } else if (msgs[i].msg_hdr.msg_flags & MSG_TRUNC || msgs[i].msg_len < (unsigned)VNET_LEN) {
        d->st.truncated++;
        slot_put(d, slots[i]);
      } else {
        on_frame(d, slots[i], now);
      }
    }
    for (unsigned i = (unsigned)r; i < n; i++) slot_put(d, slots[i]);
    if ((unsigned)r < n) return;
  }
}

static void release_due(dir_t *d, uint64_t now) {
  while (d->count && d->pool[d->heap[0]].release_us <= now) {
    uint32_t s = heap_pop(d);
    d->st.forwarded++;
    d->st.bytes_out += d->pool[s].len - (uint32_t)VNET_LEN;
    tx_add(d, s);
  }
  tx_flush(d);
}

/* A direction's loop: wait for frames or the next release (to the
 * microsecond), take them in, let out what is due. It checks for the stop
 * every 100 ms at most. */
static void *run_dir(void *arg) {
  dir_t *d = arg;
  int ep = epoll_create1(0);
  if (ep < 0) die("epoll_create1");
  struct epoll_event ev = {.events = EPOLLIN};
  if (epoll_ctl(ep, EPOLL_CTL_ADD, d->rx_fd, &ev)) die("epoll_ctl");
  while (!stop_flag) {
    uint64_t now = now_us(), wait = 100000;
    if (d->count) {
      uint64_t next = d->pool[d->heap[0]].release_us;
      wait = next > now ? (next - now < wait ? next - now : wait) : 0;
    }
    struct timespec ts = {(time_t)(wait / 1000000u), (long)(wait % 1000000u) * 1000};
    struct epoll_event out;
    int n = epoll_pwait2(ep, &out, 1, &ts, NULL);
    if (n < 0 && errno != EINTR) die("epoll_pwait2");
    if (n > 0) rx_leg(d);
    release_due(d, now_us());
  }
  close(ep);
  return NULL;
}

static int open_leg(const char *ifname) {
  /* Protocol 0 here, ETH_P_ALL at bind: a socket made with a protocol
   * starts receiving at once, and binding it then waits for an RCU grace
   * period to take that hook down again (seconds, on a busy machine). */
  int fd = socket(AF_PACKET, SOCK_RAW | SOCK_NONBLOCK, 0);
  if (fd < 0) die("socket(AF_PACKET)");
  int one = 1, big = 32 << 20;
  if (setsockopt(fd, SOL_PACKET, PACKET_VNET_HDR, &one, sizeof(one))) die("PACKET_VNET_HDR");
  /* Our own sends on this leg are not news (kernel 4.20+; the pkttype
   * check stays for older ones). */
  setsockopt(fd, SOL_PACKET, PACKET_IGNORE_OUTGOING, &one, sizeof(one));
  /* Straight to the veth: it has no queue to skip anyway. */
  setsockopt(fd, SOL_PACKET, PACKET_QDISC_BYPASS, &one, sizeof(one));
  if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &big, sizeof(big)))
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &big, sizeof(big));
  if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &big, sizeof(big)))
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &big, sizeof(big));
  struct sockaddr_ll sll = {.sll_family = AF_PACKET, .sll_protocol = htons(ETH_P_ALL)};
  sll.sll_ifindex = (int)if_nametoindex(ifname);
  if (!sll.sll_ifindex) die(ifname);
  if (bind(fd, (struct sockaddr *)&sll, sizeof(sll))) die("bind");
  return fd;
}

static void write_stats(void) {
  FILE *f = stats_path ? fopen(stats_path, "w") : stdout;
  if (!f) return;
  for (int k = 0; k < 2; k++) {
    const stats_t *s = &dirs[k].st;
    struct tpacket_stats ps = {0};
    socklen_t len = sizeof(ps);
    getsockopt(fds[k], SOL_PACKET, PACKET_STATISTICS, &ps, &len);
    fprintf(f,
            "dir %s->%s frames_in %llu bytes_in %llu forwarded %llu bytes_out %llu arp %llu "
            "queue_drops %llu losses %llu pool_drops %llu gso_drops %llu truncated %llu "
            "send_errors %llu socket_drops %u max_queue_bytes %llu max_held %llu "
            "ge_bad_frames %llu\n",
            legs[k], legs[1 - k], (unsigned long long)s->frames_in, (unsigned long long)s->bytes_in,
            (unsigned long long)s->forwarded, (unsigned long long)s->bytes_out,
            (unsigned long long)s->arp, (unsigned long long)s->queue_drops,
            (unsigned long long)s->losses, (unsigned long long)s->pool_drops,
            (unsigned long long)s->gso_drops, (unsigned long long)s->truncated,
            (unsigned long long)s->send_errors, ps.tp_drops, (unsigned long long)s->max_queue_bytes,
            (unsigned long long)s->max_held, (unsigned long long)s->ge_bad_frames);
  }
  fflush(f);
  if (f != stdout) fclose(f);
}

static double parse_num(const char *s, const char *what) {
  char *end;
  double v = strtod(s, &end);
  if (end == s || *end || v < 0) {
    fprintf(stderr, "wanem: bad %s: %s\n", what, s);
    exit(2);
  }
  return v;
}

static void usage(void) {
  fprintf(stderr,
          "usage: wanem --leg-a IF --leg-b IF [--delay MS] [--jitter MS] [--reorder]\n"
          "             [--loss PCT] [--gilbert P,R,BAD,GOOD] [--rate MBIT] [--queue BYTES]\n"
          "             [--queue-ms MS] [--seed N] [--stats FILE]\n");
  exit(2);
}

static void parse_args(int argc, char **argv) {
  static const struct option opts[] = {
      {"leg-a", required_argument, 0, 'a'},   {"leg-b", required_argument, 0, 'b'},
      {"delay", required_argument, 0, 'd'},   {"jitter", required_argument, 0, 'j'},
      {"reorder", no_argument, 0, 'o'},       {"loss", required_argument, 0, 'l'},
      {"gilbert", required_argument, 0, 'g'}, {"rate", required_argument, 0, 'r'},
      {"queue", required_argument, 0, 'q'},   {"queue-ms", required_argument, 0, 'Q'},
      {"seed", required_argument, 0, 's'},    {"stats", required_argument, 0, 'S'},
      {"help", no_argument, 0, 'h'},          {0, 0, 0, 0}};
  double queue_ms = -1;
  for (int c; (c = getopt_long(argc, argv, "", opts, NULL)) != -1;) {
    switch (c) {
      case 'a': legs[0] = optarg; break;
      case 'b': legs[1] = optarg; break;
      case 'd': P.delay_us = (uint64_t)(parse_num(optarg, "delay") * 1000); break;
      case 'j': P.jitter_us = (uint64_t)(parse_num(optarg, "jitter") * 1000); break;
      case 'o': P.reorder = true; break;
      case 'l': P.loss = parse_num(optarg, "loss") / 100; break;
      case 'g': {
        double v[4];
        if (sscanf(optarg, "%lf,%lf,%lf,%lf", &v[0], &v[1], &v[2], &v[3]) != 4) usage();
        P.gilbert = true;
        P.ge_p = v[0] / 100, P.ge_r = v[1] / 100, P.ge_bad = v[2] / 100, P.ge_good = v[3] / 100;
        break;
      }
      case 'r': P.rate_bps = (uint64_t)(parse_num(optarg, "rate") * 1e6); break;
      case 'q': P.queue_bytes = (uint64_t)parse_num(optarg, "queue"); break;
      case 'Q': queue_ms = parse_num(optarg, "queue-ms"); break;
      case 's': seed = (uint64_t)parse_num(optarg, "seed"); break;
      case 'S': stats_path = optarg; break;
      default: usage();
    }
  }
  if (!legs[0] || !legs[1] || optind != argc || P.loss > 1) usage();
  if (queue_ms >= 0) P.queue_bytes = (uint64_t)((double)P.rate_bps / 8 * queue_ms / 1000);
  if (P.queue_bytes < 2 * SLOT_BYTES) P.queue_bytes = 2 * SLOT_BYTES;
}

/* Enough slots per direction for its queue and what is on the wire (the
 * delay at the rate), with room; without a rate, 64k frames. */
static uint32_t pool_slots(void) {
  uint64_t n = 65536;
  if (P.rate_bps) {
    uint64_t on_wire = P.rate_bps / 8 * (P.delay_us + P.jitter_us) / 1000000u;
    n = (P.queue_bytes + on_wire) / 1000 + 8192; /* as if every frame were 1000 bytes */
  }
  return n > MAX_SLOTS ? MAX_SLOTS : (uint32_t)n;
}

int main(int argc, char **argv) {
  parse_args(argc, argv);
  for (int k = 0; k < 2; k++) fds[k] = open_leg(legs[k]);
  uint32_t slots = pool_slots();
  for (int k = 0; k < 2; k++) {
    dir_t *d = &dirs[k];
    d->from = k;
    d->rx_fd = fds[k];
    d->tx_fd = fds[1 - k];
    d->rng = seed * 2 + (uint64_t)k;
    d->pool_size = slots;
    d->free_head = UINT32_MAX;
    d->pool = calloc(slots, sizeof(*d->pool));
    d->heap = calloc(slots, sizeof(uint32_t));
    if (!d->pool || !d->heap) die("calloc");
  }
  /* The threads inherit a mask with the signals blocked; this thread takes
   * them. */
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGUSR1);
  pthread_sigmask(SIG_BLOCK, &set, NULL);
  for (int k = 0; k < 2; k++)
    if (pthread_create(&dirs[k].thread, NULL, run_dir, &dirs[k])) die("pthread_create");
  fprintf(stderr, "wanem: %s <-> %s, %u slots each way, ready\n", legs[0], legs[1], slots);
  while (!stop_flag) {
    int sig;
    if (sigwait(&set, &sig)) continue;
    if (sig == SIGUSR1)
      write_stats();
    else
      stop_flag = 1;
  }
  for (int k = 0; k < 2; k++) pthread_join(dirs[k].thread, NULL);
  write_stats();
  return 0;
}
