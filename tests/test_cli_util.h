/* test_cli_util.h: running autodiff-train from a Check test: a scratch directory, the command's exit status and output. */
#ifndef AUTODIFF_TEST_CLI_UTIL_H
#define AUTODIFF_TEST_CLI_UTIL_H

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

static char dir[64];                           /* the scratch directory each test runs in */
static char out_text[16384], err_text[4096]; /* the last run's standard output and error */
static int cli_wrapped; /* set by a suite: its runs go under AD_TEST_CLI_WRAPPER when that is set */

/* Reads a whole (small) file into buf ("" when it cannot be read). */
static inline void slurp(const char *path, char *buf, size_t n)
{
    FILE *f = fopen(path, "r");
    size_t k = f ? fread(buf, 1, n - 1, f) : 0;
    buf[k] = 0;
    if (f) fclose(f);
}

/* Runs autodiff-train with args in dir, its standard output into out (NULL: out.txt, read back
** into out_text); returns its exit status, the standard error in err_text. Under meson's valgrind
** setup, AD_TEST_CLI_WRAPPER runs the command of a suite that set cli_wrapped under valgrind as
** well (exit status 99 on an error or a leak), with OPENBLAS_NUM_THREADS set so that it does not
** run itself again outside it. */
static inline int train_to(const char *args, const char *out)
{
    const char *exe = getenv("AUTODIFF_TRAIN"), *wrap = cli_wrapped ? getenv("AD_TEST_CLI_WRAPPER") : NULL;
    ck_assert_msg(exe != NULL, "AUTODIFF_TRAIN is not set");
    char cmd[2048];
    int n = snprintf(cmd, sizeof cmd, "cd '%s' && %s%s%s'%s' %s > '%s' 2> err.txt", dir,
                     wrap ? "OPENBLAS_NUM_THREADS=1 " : "", wrap ? wrap : "", wrap ? " " : "", exe, args,
                     out ? out : "out.txt");
    ck_assert_int_lt(n, (int)sizeof cmd);
    int st = system(cmd);
    ck_assert(WIFEXITED(st));
    char p[128];
    snprintf(p, sizeof p, "%s/out.txt", dir);
    if (out) out_text[0] = 0;
    else slurp(p, out_text, sizeof out_text);
    snprintf(p, sizeof p, "%s/err.txt", dir);
    slurp(p, err_text, sizeof err_text);
    return WEXITSTATUS(st);
}

/* train_to(args, NULL) */
static inline int train(const char *args) { return train_to(args, NULL); }

static inline int count_lines(const char *s)
{
    int n = 0;
    for (; *s; s++) n += *s == '\n';
    return n;
}

/* Whether dir/name exists. */
static inline int exists(const char *name)
{
    char p[256];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "r");
    if (f) fclose(f);
    return f != NULL;
}

static inline void setup(void)
{
    strcpy(dir, "/tmp/test_nn_cli_XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
}

static inline void teardown(void)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "cannot remove %s\n", dir);
}

#endif
