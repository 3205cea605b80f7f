/* test_memory_limits.c: autodiff-train under a range of address-space limits (RLIMIT_AS, as `ulimit -v`):
** each run ends within a bounded time, by itself, with exit status 0 or a clear error on stderr. */
#include <check.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ad.h"
#include "test_io_util.h"

/*
** OpenBLAS used to hang the command under limits between about 100 and 500 MB: its
** threads (started when it is loaded) and its per-thread buffers (128 MiB, from
** malloc, outside the engine's allocator) retry a failed allocation for ever, and
** the exit waited for them. Now the command runs OpenBLAS single-threaded and the
** engine gives a product to OpenBLAS only when its buffer can be had. Below about
** 50 MB the dynamic loader (exit 127) or OpenBLAS's own start-up fails before main:
** OpenBLAS prints why and raises SIGINT when it cannot start its threads (the
** command's OPENBLAS_NUM_THREADS=1 comes too late for that first start); the test
** accepts that one signal, with OpenBLAS's message, below 64 MiB.
**
** Not run under AddressSanitizer (its shadow memory needs terabytes of address
** space) or valgrind (the limit would apply to the tool).
*/

#define LIMIT_S 120 /* far above a run's few seconds on a loaded machine: only a hang reaches it */

static void write_csv(const char *path)
{
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    ad_rng r;
    ad_rng_seed(&r, 3);
    for (int i = 0; i < 600; i++) {
        int label = i % 4;
        fprintf(f, "%d", label);
        for (int j = 0; j < 32; j++) fprintf(f, ",%.4f", ad_rng_uniform(&r) + (j % 4 == label ? 1.0 : 0.0));
        fprintf(f, "\n");
    }
    ck_assert_int_eq(fclose(f), 0);
}

typedef struct outcome {
    bool exited, timed_out;
    int status, signal;
    char err[512], out[512];
} outcome;

/* Runs the command with the address space limited to `mb` MiB (0: no limit), ended by SIGALRM after LIMIT_S s. */
static outcome run_limited(const char *exe, const char *csv, const char *dir, long mb)
{
    char ep[600], op[600];
    snprintf(ep, sizeof ep, "%s/err.txt", dir);
    snprintf(op, sizeof op, "%s/out.txt", dir);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        if (!freopen(op, "w", stdout) || !freopen(ep, "w", stderr)) _exit(200);
        if (mb > 0) {
            struct rlimit rl = {(rlim_t)mb << 20, (rlim_t)mb << 20};
            if (setrlimit(RLIMIT_AS, &rl) != 0) _exit(201);
        }
        alarm(LIMIT_S); /* kept across exec: a command still running then is ended by SIGALRM */
        execl(exe, exe, "--train-csv", csv, "--test-csv", csv, "--layers", "32,256,4", "--epochs", "1",
              "--batch-size", "64", "--quiet", (char *)NULL);
        _exit(202);
    }
    outcome o = {0};
    int st = 0;
    while (waitpid(pid, &st, 0) < 0) ck_assert_int_eq(errno, EINTR);
    o.timed_out = WIFSIGNALED(st) && WTERMSIG(st) == SIGALRM;
    o.exited = WIFEXITED(st);
    o.status = o.exited ? WEXITSTATUS(st) : -1;
    o.signal = WIFSIGNALED(st) ? WTERMSIG(st) : 0;
    size_t n;
    unsigned char *e = tio_read(ep, &n);
    snprintf(o.err, sizeof o.err, "%.*s", (int)(n < 500 ? n : 500), e ? (const char *)e : "");
    free(e);
    unsigned char *out = tio_read(op, &n);
    snprintf(o.out, sizeof o.out, "%.*s", (int)(n < 500 ? n : 500), out ? (const char *)out : "");
    free(out);
    return o;
}

START_TEST(train_under_address_space_limits)
{
#if defined(__SANITIZE_ADDRESS__)
    fprintf(stderr, "train_under_address_space_limits: skipped under AddressSanitizer\n");
    return;
#endif
    if (getenv("AD_TEST_QUICK")) {
        fprintf(stderr, "train_under_address_space_limits: skipped under valgrind\n");
        return;
    }
    const char *exe = getenv("AUTODIFF_TRAIN");
    ck_assert_msg(exe != NULL, "AUTODIFF_TRAIN is not set");
    char dir[256], csv[512];
    tio_mkdtemp(dir, sizeof dir);
    snprintf(csv, sizeof csv, "%s/d.csv", dir);
    write_csv(csv);
    static const long limits_mb[] = {0, 32, 48, 64, 96, 128, 192, 256, 384, 512};
    int ok = 0;
    for (size_t i = 0; i < sizeof limits_mb / sizeof limits_mb[0]; i++) {
        long mb = limits_mb[i];
        outcome o = run_limited(exe, csv, dir, mb);
        fprintf(stderr, "limit %4ld MiB: %s %d%s%s\n", mb, o.exited ? "exit" : "signal", o.exited ? o.status : o.signal,
                o.status ? ": " : "", o.status ? o.err : "");
        ck_assert_msg(!o.timed_out, "limit %ld MiB: still running after %d s (stderr: %s)", mb, LIMIT_S, o.err);
        if (!o.exited && mb < 64 && o.signal == SIGINT && strstr(o.err, "OpenBLAS")) continue; /* before main */
        ck_assert_msg(o.exited, "limit %ld MiB: killed by signal %d (stderr: %s)", mb, o.signal, o.err);
        if (o.status == 0) {
            ck_assert_msg(strstr(o.out, "final:") != NULL, "limit %ld MiB: exit 0 without a result: %s", mb, o.out);
            ok++;
        } else {
            ck_assert_msg(o.status < 200, "limit %ld MiB: the test's own child failed (%d)", mb, o.status);
            ck_assert_msg(strlen(o.err) > 10, "limit %ld MiB: exit %d without a message", mb, o.status);
        }
    }
    ck_assert_int_ge(ok, 2); /* no limit, and the largest, train to the end */
    tio_rmtree(dir);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("memory_limits");
    TCase *tc = tcase_create("cli");
    tcase_set_timeout(tc, 1500);
    tcase_add_test(tc, train_under_address_space_limits);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
