/*
 * Parsing for the command-line runner: numbers, threshold lists, policy names and the
 * raw input file. Kept apart from ee_run.c so the fuzzer can drive it directly.
 */
#ifndef EE_ARGS_H
#define EE_ARGS_H

#include <stddef.h>
#include <stdio.h>

#include "ee.h"

/* Strict integer in [lo, hi]; returns 0 on success. */
int ee_parse_long(const char *s, long lo, long hi, long *out);

/* Comma-separated finite floats ("0.9,0.8"); returns how many were parsed (<= cap),
 * or -1 on any malformed, empty or excess item. */
int ee_parse_floats(const char *s, float *out, int cap);

/* "max-prob" | "entropy" | "margin" | "patience"; returns 0 on success. */
int ee_parse_policy(const char *s, ee_policy *out);

typedef struct {
    FILE *f;
    size_t sample_bytes;
    size_t n_samples;
    char error[160];
} ee_input_file;

/* Open a file of samples back to back; its size must be a whole multiple of sample_bytes. */
int ee_input_file_open(ee_input_file *in, const char *path, size_t sample_bytes);
int ee_input_file_read(ee_input_file *in, void *buf);
void ee_input_file_close(ee_input_file *in);

#endif /* EE_ARGS_H */
