/* bench_checkpoint.c: peak memory and time of one training step of an LSTM unrolled over T steps, plainly and checkpointed every sqrt(T) steps. */
#include <autodiff/ad.h>

/*
** Usage: bench_checkpoint [T (3000)] [hidden (32)] [batch (16)]
**
** Each variant runs in a child process of its own (fork), so that the peak
** resident set size the kernel reports for it
** (getrusage in the child, before it exits) is its own:
** one forward and one backward pass of an LSTM cell over T steps (inputs of 8
** features, loss the mean squared last hidden state), plainly unrolled on the
** tape, then with a checkpoint (ad_checkpoint) every floor(sqrt(T)) steps.
** Printed per variant: peak RSS, the tape's arena, the time of the step; and
** whether the two variants' parameter gradients are equal bit for bit (they
** must be: the exit status is 1 otherwise). Prints a JSON line at the end.
*/

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

enum { IN = 8 };
static int T = 3000, H = 32, N = 16;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

typedef struct cell {
    ad_var w_ih, w_hh, b;
} cell;

/* [i f g o] = x W_ih^T + h W_hh^T + b; c' = s(f) c + s(i) tanh(g); h' = s(o) tanh(c') */
static void step(const cell *m, ad_var x, ad_var *h, ad_var *c)
{
    ad_var g = ad_add(ad_add(ad_matmul_t(x, m->w_ih, false, true), ad_matmul_t(*h, m->w_hh, false, true)), m->b);
    ad_var i = ad_sigmoid(ad_slice(g, 1, 0, H)), f = ad_sigmoid(ad_slice(g, 1, H, 2 * H));
    ad_var gg = ad_tanh(ad_slice(g, 1, 2 * H, 3 * H)), o = ad_sigmoid(ad_slice(g, 1, 3 * H, 4 * H));
    *c = ad_add(ad_mul(f, *c), ad_mul(i, gg));
    *h = ad_mul(o, ad_tanh(*c));
}

/* in = (h, c, w_ih, w_hh, b, xs [N, L, IN]) -> (h, c) */
static ad_status segment(ad_tape *t, int n, const ad_var *in, int n_out, ad_var *out, void *ctx)
{
    cell m = {in[2], in[3], in[4]};
    ad_var h = in[0], c = in[1];
    int64_t len = ad_value(in[5])->shape[1];
    for (int64_t k = 0; k < len; k++)
        step(&m, ad_reshape(ad_slice(in[5], 1, k, k + 1), 2, (const int64_t[]){N, IN}), &h, &c);
    out[0] = h;
    out[1] = c;
    return AD_OK;
}

typedef struct result {
    double seconds;
    size_t arena;
    int ok;
    uint64_t hash; /* of the gradients' bytes (FNV-1a), to compare the variants */
    long maxrss;   /* the child's peak resident set size, KiB (getrusage at its end) */
} result;

static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
    const unsigned char *c = p;
    for (size_t i = 0; i < n; i++) h = (h ^ c[i]) * 0x100000001b3ULL;
    return h;
}

static result run(int every)
{
    result r = {0, 0, 0, 0xcbf29ce484222325ULL, 0};
    ad_rng rng;
    ad_rng_seed(&rng, 42);
    const int64_t sh[3][2] = {{4 * H, IN}, {4 * H, H}, {4 * H, 1}};
    ad_tensor *w[3], *g[3];
    for (int k = 0; k < 3; k++) {
        w[k] = ad_tensor_new(AD_F32, k == 2 ? 1 : 2, sh[k]);
        g[k] = ad_tensor_new(AD_F32, k == 2 ? 1 : 2, sh[k]);
        if (!w[k] || !g[k]) return r;
        ad_rng_fill_uniform(&rng, w[k], -0.3, 0.3);
    }
    ad_tensor *xs = ad_tensor_new(AD_F32, AD_SHAPE(N, T, IN));
    ad_tape *t = ad_tape_new();
    if (!xs || !t) return r;
    ad_rng_fill_uniform(&rng, xs, 0, 1);
    double t0 = now_s();
    cell m = {ad_param(t, w[0], g[0]), ad_param(t, w[1], g[1]), ad_param(t, w[2], g[2])};
    ad_var x = ad_const(t, xs), h = ad_full(t, AD_F32, AD_SHAPE(N, H), 0.0), c = h;
    for (int k0 = 0; k0 < T; k0 += every) {
        int k1 = k0 + every < T ? k0 + every : T;
        ad_var in[6] = {h, c, m.w_ih, m.w_hh, m.b, ad_slice(x, 1, k0, k1)}, o[2];
        if (every > 1)
            ad_checkpoint(segment, NULL, 6, in, 2, o);
        else
            segment(t, 6, in, 2, o, NULL);
        h = o[0];
        c = o[1];
    }
    ad_var loss = ad_mean(ad_square(h));
    if (ad_backward(loss, NULL, AD_ACCUMULATE) != AD_OK) {
        fprintf(stderr, "bench_checkpoint: %s\n", ad_tape_error(t));
        return r;
    }
    r.seconds = now_s() - t0;
    r.arena = ad_tape_arena_bytes(t);
    for (int k = 0; k < 3; k++) r.hash = fnv(r.hash, g[k]->data, (size_t)g[k]->size * sizeof(float));
    r.ok = 1;
    ad_tape_free(t);
    ad_tensor_free(xs);
    for (int k = 0; k < 3; k++) {
        ad_tensor_free(w[k]);
        ad_tensor_free(g[k]);
    }
    return r;
}

/* Runs one variant in a child; its result and peak RSS (KiB) come back through a pipe. */
static int child(int every, result *r, long *maxrss_kib)
{
    int fd[2];
    if (pipe(fd) != 0) return -1;
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        close(fd[0]);
        result res = run(every);
        struct rusage ru;
        res.maxrss = getrusage(RUSAGE_SELF, &ru) == 0 ? ru.ru_maxrss : -1;
        ssize_t w = write(fd[1], &res, sizeof res);
        _exit(w == (ssize_t)sizeof res && res.ok ? 0 : 1);
    }
    close(fd[1]);
    ssize_t got = read(fd[0], r, sizeof *r);
    close(fd[0]);
    int status;
    if (waitpid(pid, &status, 0) != pid || got != (ssize_t)sizeof *r) return -1;
    *maxrss_kib = r->maxrss;
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -1;
}

int main(int argc, char **argv)
{
    if (argc > 1) T = atoi(argv[1]);
    if (argc > 2) H = atoi(argv[2]);
    if (argc > 3) N = atoi(argv[3]);
    if (T < 1 || H < 1 || N < 1) {
        fprintf(stderr, "usage: bench_checkpoint [T] [hidden] [batch]\n");
        return 2;
    }
    int every = (int)floor(sqrt((double)T));
    if (every < 2) every = 2;
    printf("LSTM, T = %d steps, hidden %d, batch %d, %d inputs, F32: one forward + backward\n", T, H, N, IN);
    result r[2];
    long rss[2];
    const char *name[2] = {"plain unroll", "checkpointed"};
    for (int v = 0; v < 2; v++) {
        if (child(v ? every : 1, &r[v], &rss[v]) != 0) {
            fprintf(stderr, "bench_checkpoint: the %s run failed\n", name[v]);
            return 1;
        }
        printf("  %-13s peak RSS %8.1f MiB   tape arena %8.1f MiB   %6.3f s\n", name[v], rss[v] / 1024.0,
               r[v].arena / 1048576.0, r[v].seconds);
        if (v) printf("  (a checkpoint every %d steps: %d segments)\n", every, (T + every - 1) / every);
    }
    int same = r[0].hash == r[1].hash;
    printf("  gradients equal bit for bit: %s\n", same ? "yes" : "NO");
    printf("{\"bench\":\"checkpoint\",\"T\":%d,\"hidden\":%d,\"batch\":%d,\"every\":%d,"
           "\"plain_rss_kib\":%ld,\"ckpt_rss_kib\":%ld,\"plain_arena\":%zu,\"ckpt_arena\":%zu,"
           "\"plain_s\":%.4f,\"ckpt_s\":%.4f,\"bitwise_equal\":%s}\n",
           T, H, N, every, rss[0], rss[1], r[0].arena, r[1].arena, r[0].seconds, r[1].seconds, same ? "true" : "false");
    return same ? 0 : 1;
}
