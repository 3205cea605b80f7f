/* test_crash.c: a process saving checkpoints in a loop is killed with SIGKILL at random points; the path must hold a whole old or new checkpoint. */
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "nn.h"
#include "test_io_util.h"
#include "test_util.h"

/* Removes the temporary files a killed save left ("<name>.tmp.<pid>"); returns how many. */
static int remove_temps(const char *dir, const char *name)
{
    DIR *d = opendir(dir);
    ck_assert_ptr_nonnull(d);
    int k = 0;
    size_t nl = strlen(name);
    struct dirent *e;
    char p[600];
    while ((e = readdir(d)) != NULL) {
        if (strncmp(e->d_name, name, nl) == 0 && strncmp(e->d_name + nl, ".tmp.", 5) == 0) {
            snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
            ck_assert_int_eq(unlink(p), 0);
            k++;
        } else if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0 && strcmp(e->d_name, name) != 0) {
            ck_abort_msg("unexpected file %s", e->d_name);
        }
    }
    closedir(d);
    return k;
}

typedef struct version {
    nn_module *net;
    nn_optim *opt;
    ad_rng rng;
    unsigned char *bytes; /* the file nn_save writes for it */
    size_t n;
} version;

static void version_make(version *v, int64_t width, uint64_t seed, const char *path)
{
    ad_rng_seed(&v->rng, seed);
    v->net = nn_mlp(3, (const int64_t[]){64, width, 10}, NN_RELU, &v->rng, NULL);
    ck_assert_ptr_nonnull(v->net);
    v->opt = nn_adam(v->net, 1e-3, 0.9, 0.999, 1e-8, 0.0, NULL);
    ck_assert_ptr_nonnull(v->opt);
    nn_error err = {0};
    ck_assert_msg(nn_save(path, v->net, v->opt, &v->rng, &err) == AD_OK, "%s", err.message);
    v->bytes = tio_read(path, &v->n);
}

static void version_free(version *v)
{
    nn_optim_free(v->opt);
    nn_module_free(v->net);
    free(v->bytes);
}

/* The child: signals once it has entered the loop, then saves v[0], v[1], v[0], ... until killed. */
static void saver(const char *path, version *v, int ready_fd)
{
    nn_error err = {0};
    for (long i = 0;; i++) {
        if (i == 1 && write(ready_fd, "r", 1) != 1) _exit(3);
        version *cur = &v[i & 1];
        if (nn_save(path, cur->net, cur->opt, &cur->rng, &err) != AD_OK) {
            fprintf(stderr, "saver: %s\n", err.message);
            _exit(2);
        }
    }
}

START_TEST(test_sigkill_during_save)
{
    int iters = tu_quick() ? 12 : 200;
    int64_t width = tu_quick() ? 32 : 256; /* about 0.2 MB (quick: 25 kB) of weights, times three with Adam */
    char dir[256], path[300];
    nn_error err = {0};
    const char *tmpd = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/adcrash-XXXXXX", tmpd && *tmpd ? tmpd : "/tmp");
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/ckpt.safetensors", dir);

    version v[2];
    version_make(&v[1], width, 2, path);
    version_make(&v[0], width, 1, path); /* the path starts out holding v[0] */
    ck_assert(v[0].n == v[1].n && memcmp(v[0].bytes, v[1].bytes, v[0].n) != 0);

    /* a model to load into, of the same architecture */
    ad_rng r;
    ad_rng_seed(&r, 77);
    nn_module *probe = nn_mlp(3, (const int64_t[]){64, width, 10}, NN_RELU, &r, NULL);
    nn_optim *probe_opt = nn_adam(probe, 1e-3, 0.9, 0.999, 1e-8, 0.0, NULL);
    ck_assert_ptr_nonnull(probe_opt);

    ad_rng delays;
    ad_rng_seed(&delays, 20261127);
    int seen[2] = {0, 0}, temps = 0;
    for (int it = 0; it < iters; it++) {
        int pfd[2];
        ck_assert_int_eq(pipe(pfd), 0);
        fflush(NULL);
        pid_t pid = fork();
        ck_assert_int_ge(pid, 0);
        if (pid == 0) {
            close(pfd[0]);
            saver(path, v, pfd[1]);
            _exit(0);
        }
        close(pfd[1]);
        char c;
        ck_assert_int_eq(read(pfd[0], &c, 1), 1); /* one save done, the second under way */
        close(pfd[0]);
        /* a random point within the next few saves */
        long ns = (long)ad_rng_below(&delays, 20000000);
        struct timespec ts = {0, ns};
        while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
        }
        ck_assert_int_eq(kill(pid, SIGKILL), 0);
        int status;
        ck_assert_int_eq(waitpid(pid, &status, 0), pid);
        ck_assert_msg(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL, "the saver ended by itself: status %d",
                      status);

        size_t n;
        unsigned char *now = tio_read(path, &n);
        int which = n == v[0].n && memcmp(now, v[0].bytes, n) == 0   ? 0
                    : n == v[1].n && memcmp(now, v[1].bytes, n) == 0 ? 1
                                                                     : -1;
        free(now);
        ck_assert_msg(which >= 0, "iteration %d: the checkpoint is neither version (%zu bytes)", it, n);
        seen[which]++;
        ad_rng lr;
        ck_assert_msg(nn_load(path, probe, probe_opt, &lr, &err) == AD_OK, "iteration %d: %s", it, err.message);
        ck_assert(memcmp(lr.s, v[which].rng.s, sizeof lr.s) == 0);
        temps += remove_temps(dir, "ckpt.safetensors");
    }
    if (getenv("AD_TEST_VERBOSE"))
        fprintf(stderr, "%d kills: old/new %d/%d, %d temporary files left by killed saves\n", iters, seen[0], seen[1],
                temps);
    /* the kills landed at different points: both versions were found */
    if (!tu_quick()) ck_assert(seen[0] > 0 && seen[1] > 0);
    nn_optim_free(probe_opt);
    nn_module_free(probe);
    version_free(&v[0]);
    version_free(&v[1]);
    unlink(path);
    ck_assert_int_eq(rmdir(dir), 0);
}
END_TEST

static Suite *crash_suite(void)
{
    Suite *s = suite_create("crash");
    TCase *tc = tcase_create("sigkill");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_sigkill_during_save);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return tu_run(crash_suite()); }
