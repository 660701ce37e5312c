/* SPDX-License-Identifier: MIT */
/* The crawled network as a picture: every node on the keyspace ring at the
 * angle of its id (clockwise from the top, 0x00.. to 0xff..), coloured by
 * round trip, hollow when it answered without an id (not a member), grey
 * when it never answered, in a square when it announced itself as a blind
 * relay, in a diamond when as a proxy. Gaps and clusters in the id space show as gaps and clumps on
 * the ring; the widest gap is drawn over the ring as a thick orange arc. Plain SVG 1.1, one <circle
 * class="node"> per node, each with a <title> an SVG viewer shows on hover. */
#include <errno.h>
#include <math.h>
#include <string.h>

#include "tools/inspect/crawl.h"

#define SIZE 900
#define CX 450.0
#define CY 470.0
#define RADIUS 360.0

static const struct {
  double below_ms;
  const char *colour;
  const char *label;
} scale[] = {
    /* Labels are SVG text: already escaped. */
    {10, "#1a9850", "&lt; 10 ms"},   {50, "#91cf60", "&lt; 50 ms"},
    {100, "#d9ef8b", "&lt; 100 ms"}, {200, "#fee08b", "&lt; 200 ms"},
    {500, "#fc8d59", "&lt; 500 ms"}, {INFINITY, "#d73027", "&gt;= 500 ms"},
};
#define SILENT_COLOUR "#9e9e9e"

static const char *colour_of(const kp_crawl_node_t *n) {
  if (n->state != KP_CRAWL_ANSWERED) return SILENT_COLOUR;
  if (n->rtt_ms < 0) return scale[5].colour; /* answered only after retries */
  for (size_t i = 0; i < sizeof(scale) / sizeof(scale[0]); i++)
    if (n->rtt_ms < scale[i].below_ms) return scale[i].colour;
  return scale[5].colour;
}

static void point(double turn, double r, double *x, double *y) {
  double a = 2 * M_PI * turn;
  *x = CX + r * sin(a);
  *y = CY - r * cos(a);
}

/* Text from the command line, escaped for XML. */
static void xml_text(FILE *f, const char *s) {
  for (; *s; s++) {
    switch (*s) {
      case '&': fputs("&amp;", f); break;
      case '<': fputs("&lt;", f); break;
      case '>': fputs("&gt;", f); break;
      case '"': fputs("&quot;", f); break;
      default: fputc(*s, f);
    }
  }
}

static void frame(FILE *f, const kp_crawl_summary_t *s, const char *from) {
  fprintf(f,
          "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
          "<svg xmlns=\"http://www.w3.org/2000/svg\" version=\"1.1\" width=\"%d\" "
          "height=\"%d\" viewBox=\"0 0 %d %d\" font-family=\"sans-serif\" font-size=\"13\">\n",
          SIZE, SIZE + 40, SIZE, SIZE + 40);
  fprintf(f,
          "<rect class=\"background\" x=\"0\" y=\"0\" width=\"%d\" height=\"%d\" "
          "fill=\"white\"/>\n",
          SIZE, SIZE + 40);
  fputs("<text x=\"20\" y=\"28\" font-size=\"16\">kadpunch DHT from ", f);
  xml_text(f, from);
  fprintf(f,
          ": %zu nodes (%zu answered, %zu members, %zu relays, %zu proxies), widest gap %.2f%% "
          "of the ring</text>\n",
          s->found, s->answered, s->members, s->relays, s->proxies, 100 * s->largest_gap);
  fprintf(f,
          "<circle class=\"ring\" cx=\"%.1f\" cy=\"%.1f\" r=\"%.1f\" fill=\"none\" "
          "stroke=\"#cccccc\" stroke-width=\"1\"/>\n",
          CX, CY, RADIUS);
  /* The first hex digit of the id, every sixteenth of the ring. */
  for (int d = 0; d < 16; d++) {
    double x0, y0, x1, y1, tx, ty;
    point(d / 16.0, RADIUS - 8, &x0, &y0);
    point(d / 16.0, RADIUS + 8, &x1, &y1);
    point(d / 16.0, RADIUS + 26, &tx, &ty);
    fprintf(f,
            "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#999999\"/>"
            "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" dominant-baseline=\"middle\" "
            "fill=\"#666666\">%x</text>\n",
            x0, y0, x1, y1, tx, ty, d);
  }
}

static void legend(FILE *f) {
  double x = 20, y = SIZE + 20;
  for (size_t i = 0; i < sizeof(scale) / sizeof(scale[0]); i++, x += 110)
    fprintf(f,
            "<rect x=\"%.0f\" y=\"%.0f\" width=\"12\" height=\"12\" fill=\"%s\"/>"
            "<text x=\"%.0f\" y=\"%.0f\">%s</text>\n",
            x, y - 10, scale[i].colour, x + 16, y, scale[i].label);
  fprintf(f,
          "<rect x=\"%.0f\" y=\"%.0f\" width=\"12\" height=\"12\" fill=\"%s\"/>"
          "<text x=\"%.0f\" y=\"%.0f\">silent (hollow: no id)</text>\n",
          x, y - 10, SILENT_COLOUR, x + 16, y);
  fprintf(f,
          "<rect x=\"%.0f\" y=\"%.0f\" width=\"12\" height=\"12\" fill=\"none\" "
          "stroke=\"#3f51b5\" stroke-width=\"2\"/><text x=\"%.0f\" y=\"%.0f\">relay</text>\n",
          x + 170, y - 10, x + 186, y);
  fprintf(f,
          "<path d=\"M %.0f %.0f l 7 7 l -7 7 l -7 -7 z\" fill=\"none\" stroke=\"#009688\" "
          "stroke-width=\"2\"/><text x=\"%.0f\" y=\"%.0f\">proxy</text>\n",
          x + 246, y - 11, x + 256, y);
}

/* The widest stretch of the ring without a member, from gap_at. */
static void widest_gap(FILE *f, const kp_crawl_summary_t *s) {
  if (s->members < 2 || s->largest_gap <= 0 || s->largest_gap >= 1) return;
  double x0, y0, x1, y1, tx, ty;
  point(s->gap_at, RADIUS, &x0, &y0);
  point(s->gap_at + s->largest_gap, RADIUS, &x1, &y1);
  point(s->gap_at + s->largest_gap / 2, RADIUS - 40, &tx, &ty);
  fprintf(f,
          "<path class=\"gap\" d=\"M %.1f %.1f A %.1f %.1f 0 %d 1 %.1f %.1f\" fill=\"none\" "
          "stroke=\"#ff7f00\" stroke-width=\"7\" stroke-opacity=\"0.6\"><title>widest gap: "
          "%.2f%% of the ring</title></path>\n"
          "<text class=\"gap\" x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" "
          "fill=\"#ff7f00\">widest gap %.2f%%</text>\n",
          x0, y0, RADIUS, RADIUS, s->largest_gap > 0.5, x1, y1, 100 * s->largest_gap, tx, ty,
          100 * s->largest_gap);
}

static void nodes(FILE *f, const kp_crawl_t *c) {
  /* Marks shrink as the network grows, so a big one stays legible. */
  double r = c->count > 5000 ? 1.5 : c->count > 1000 ? 2.5 : 4;
  for (size_t i = 0; i < c->count; i++) {
    const kp_crawl_node_t *n = &c->nodes[i];
    double x, y;
    point(kp_crawl_ring_pos(n->id), RADIUS, &x, &y);
    const char *colour = colour_of(n);
    bool hollow = n->state == KP_CRAWL_ANSWERED && !n->member;
    char hex[17], addr[KP_ADDR_STRLEN], rtt[24] = "no round trip";
    if (n->rtt_ms >= 0) snprintf(rtt, sizeof(rtt), "%.2f ms", n->rtt_ms);
    fprintf(f,
            "<circle class=\"node\" cx=\"%.1f\" cy=\"%.1f\" r=\"%.1f\" fill=\"%s\" "
            "stroke=\"%s\"><title>%s %s %s%s</title></circle>\n",
            x, y, r, hollow ? "white" : colour, colour, kp_inspect_hex(n->id, 8, hex),
            kp_addr_format(&n->addr, addr, sizeof(addr)), rtt, hollow ? " (not a member)" : "");
    if (n->relay)
      fprintf(f,
              "<rect class=\"relay\" x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" "
              "fill=\"none\" stroke=\"#3f51b5\" stroke-width=\"2\"><title>%s: a blind "
              "relay</title></rect>\n",
              x - 2 * r, y - 2 * r, 4 * r, 4 * r, addr);
    if (n->proxy) /* a diamond: a node can be a relay and a proxy at once */
      fprintf(f,
              "<path class=\"proxy\" d=\"M %.1f %.1f L %.1f %.1f L %.1f %.1f L %.1f %.1f Z\" "
              "fill=\"none\" stroke=\"#009688\" stroke-width=\"2\"><title>%s: a "
              "proxy</title></path>\n",
              x, y - 3 * r, x + 3 * r, y, x, y + 3 * r, x - 3 * r, y, addr);
  }
}

int kp_crawl_svg(const kp_crawl_t *c, const kp_crawl_summary_t *s, const char *from,
                 const char *path) {
  FILE *f = fopen(path, "w");
  if (!f) return kp_inspect_fail("crawl", "cannot write %s: %s", path, strerror(errno));
  frame(f, s, from);
  widest_gap(f, s);
  nodes(f, c);
  legend(f);
  fprintf(f, "</svg>\n");
  if (fclose(f)) return kp_inspect_fail("crawl", "cannot write %s: %s", path, strerror(errno));
  return KP_EXIT_OK;
}
