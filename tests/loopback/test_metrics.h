/* SPDX-License-Identifier: MIT */
/* The metrics cases of the test_cli binary (test_metrics.c). */
#ifndef KP_TEST_METRICS_H
#define KP_TEST_METRICS_H

/* Checks an exposition line by line (the text format's rules: HELP and
 * TYPE once per family before its samples, names, labels, values,
 * histograms); fails the test otherwise. */
void kp_test_metrics_check(const char *body, unsigned *families, unsigned *samples);

void test_metrics_exposition(void);
void test_metrics_http_errors(void);
void test_metrics_proxy(void);

#endif
