/* test_hostile_paths.c: every loader and saver given what is not a regular file (a FIFO, a directory, a socket,
** a symbolic link), a link planted at the temporary name, and a file whose permissions must survive a save. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "nn.h"
#include "test_io_util.h"

/*
** The loaders used to open before they looked: a FIFO blocked them forever. Each
** runs under alarm(), so a blocking loader fails the test instead of hanging it.
** The savers used to rename over whatever was at the path (a FIFO, a socket, a
** symbolic link became a regular file) and to create their temporary file
** following links. Devices are covered by the same check as FIFOs and sockets
** (lstat: anything that is not a regular file); the test does not touch /dev.
*/

#define ALARM_S 20

/* The calls under test, each with its message in msg (the nn API's error reporting in one place). */
typedef ad_status (*load_fn)(const char *path, char *msg);
typedef ad_status (*save_fn)(const char *path, char *msg);

static nn_module *g_net;
static nn_optim *g_opt;
static ad_rng g_rng;

static void model_new(void)
{
    ad_rng_seed(&g_rng, 7);
    g_net = nn_mlp(3, (const int64_t[]){3, 4, 2}, NN_RELU, &g_rng, NULL);
    ck_assert_ptr_nonnull(g_net);
    g_opt = nn_adam(g_net, 1e-3, 0.9, 0.999, 1e-8, 0.0, NULL);
    ck_assert_ptr_nonnull(g_opt);
}

static void model_free(void)
{
    nn_optim_free(g_opt);
    nn_module_free(g_net);
}

/* The nn calls' record, its message copied out for the checks. */
static ad_status nn_msg(ad_status st, const nn_error *e, char *msg)
{
    snprintf(msg, 256, "%s", st == AD_OK ? "" : e->message);
    return st;
}

static ad_status l_nn_load(const char *p, char *msg)
{
    nn_error e;
    return nn_msg(nn_load(p, g_net, g_opt, &g_rng, &e), &e, msg);
}
static ad_status l_st_load(const char *p, char *msg)
{
    ad_tensor *x = ad_tensor_new(AD_F64, AD_SHAPE(2));
    nn_error e;
    ad_status st = nn_msg(nn_safetensors_load(p, 1, (const char *[]){"x"}, &x, &e), &e, msg);
    ad_tensor_free(x);
    return st;
}
static ad_status l_npy(const char *p, char *msg)
{
    ad_tensor *t = NULL;
    ad_status st = ad_npy_load(p, &t, msg, 256);
    ad_tensor_free(t);
    return st;
}
static ad_status l_csv(const char *p, char *msg)
{
    nn_dataset *ds = NULL;
    nn_error e;
    ad_status st = nn_msg(nn_dataset_load_csv(p, 0, false, &ds, &e), &e, msg);
    nn_dataset_free(ds);
    return st;
}
static ad_status l_idx(const char *p, char *msg)
{
    nn_dataset *ds = NULL;
    nn_error e;
    ad_status st = nn_msg(nn_dataset_load_idx(p, p, &ds, &e), &e, msg);
    nn_dataset_free(ds);
    return st;
}

static ad_status s_nn_save(const char *p, char *msg)
{
    nn_error e;
    return nn_msg(nn_save(p, g_net, g_opt, &g_rng, &e), &e, msg);
}
static ad_status s_st_save(const char *p, char *msg)
{
    ad_tensor *x = ad_tensor_from(AD_F64, AD_SHAPE(2), (double[]){1, 2});
    nn_error e;
    ad_status st =
        nn_msg(nn_safetensors_save(p, 1, (const char *[]){"x"}, (const ad_tensor *const *)&x, 0, NULL, &e), &e, msg);
    ad_tensor_free(x);
    return st;
}
static ad_status s_npy(const char *p, char *msg)
{
    ad_tensor *x = ad_tensor_from(AD_F64, AD_SHAPE(2), (double[]){1, 2});
    ad_status st = ad_npy_save(p, x, msg, 256);
    ad_tensor_free(x);
    return st;
}

static const struct {
    const char *name;
    load_fn f;
} loaders[] = {{"nn_load", l_nn_load},
               {"nn_safetensors_load", l_st_load},
               {"ad_npy_load", l_npy},
               {"nn_dataset_load_csv", l_csv},
               {"nn_dataset_load_idx", l_idx}};
static const struct {
    const char *name;
    save_fn f;
} savers[] = {{"nn_save", s_nn_save}, {"nn_safetensors_save", s_st_save}, {"ad_npy_save", s_npy}};

/* A unix socket bound at path (the descriptor stays open until the test ends). */
static int make_socket(const char *path)
{
    int s = socket(AF_UNIX, SOCK_STREAM, 0);
    ck_assert_int_ge(s, 0);
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    ck_assert_uint_lt(strlen(path), sizeof a.sun_path);
    strcpy(a.sun_path, path);
    ck_assert_int_eq(bind(s, (struct sockaddr *)&a, sizeof a), 0);
    return s;
}

/* The kinds of non-regular files, made at path; returns what the message must say. */
static const char *make_kind(int kind, const char *path, const char *target, int *sock)
{
    switch (kind) {
    case 0: ck_assert_int_eq(mkfifo(path, 0600), 0); return "FIFO";
    case 1: ck_assert_int_eq(mkdir(path, 0700), 0); return "directory";
    case 2: *sock = make_socket(path); return "socket";
    default: ck_assert_int_eq(symlink(target, path), 0); return "symbolic link";
    }
}

/* Every loader refuses a FIFO, a directory and a socket at once, without opening it, naming what it is. */
START_TEST(loaders_refuse_non_regular_files)
{
    char dir[256], path[512], msg[256];
    tio_mkdtemp(dir, sizeof dir);
    model_new();
    alarm(ALARM_S);
    for (int kind = 0; kind < 3; kind++) {
        snprintf(path, sizeof path, "%s/k%d", dir, kind);
        int sock = -1;
        const char *what = make_kind(kind, path, NULL, &sock);
        for (size_t i = 0; i < sizeof loaders / sizeof loaders[0]; i++) {
            msg[0] = '\0';
            ad_status st = loaders[i].f(path, msg);
            ck_assert_msg(st == AD_ERR_IO, "%s on a %s: %s (%s)", loaders[i].name, what, ad_status_str(st), msg);
            ck_assert_msg(strstr(msg, what) && strstr(msg, path), "%s on a %s: message '%s'", loaders[i].name, what,
                          msg);
        }
        if (sock >= 0) close(sock);
    }
    alarm(0);
    model_free();
    tio_rmtree(dir);
}
END_TEST

/* A FIFO with a writer waiting: still refused, and nothing is read from it. */
START_TEST(loaders_do_not_read_a_fifo_with_a_writer)
{
    char dir[256], path[512], msg[256];
    tio_mkdtemp(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/fifo", dir);
    ck_assert_int_eq(mkfifo(path, 0600), 0);
    int rd = open(path, O_RDONLY | O_NONBLOCK), wr = open(path, O_WRONLY | O_NONBLOCK);
    ck_assert(rd >= 0 && wr >= 0);
    ck_assert_int_eq(write(wr, "\x93NUMPY", 6), 6);
    model_new();
    alarm(ALARM_S);
    for (size_t i = 0; i < sizeof loaders / sizeof loaders[0]; i++)
        ck_assert_int_eq(loaders[i].f(path, msg), AD_ERR_IO);
    alarm(0);
    char buf[8];
    ck_assert_int_eq(read(rd, buf, sizeof buf), 6); /* every byte still there */
    close(rd);
    close(wr);
    model_free();
    tio_rmtree(dir);
}
END_TEST

/* Every saver refuses a target that exists and is not a regular file, and leaves it as it was. */
START_TEST(savers_refuse_non_regular_targets)
{
    char dir[256], path[512], victim[512], msg[256];
    tio_mkdtemp(dir, sizeof dir);
    snprintf(victim, sizeof victim, "%s/victim", dir);
    tio_write(victim, "precious", 8);
    model_new();
    alarm(ALARM_S);
    for (int kind = 0; kind < 4; kind++)
        for (size_t i = 0; i < sizeof savers / sizeof savers[0]; i++) {
            snprintf(path, sizeof path, "%s/t%d-%zu", dir, kind, i);
            int sock = -1;
            const char *what = make_kind(kind, path, victim, &sock);
            struct stat before, after;
            ck_assert_int_eq(lstat(path, &before), 0);
            ad_status st = savers[i].f(path, msg);
            ck_assert_msg(st == AD_ERR_IO, "%s over a %s: %s (%s)", savers[i].name, what, ad_status_str(st), msg);
            ck_assert_msg(strstr(msg, what) && strstr(msg, path), "%s over a %s: '%s'", savers[i].name, what, msg);
            ck_assert_int_eq(lstat(path, &after), 0);
            ck_assert_msg((after.st_mode & S_IFMT) == (before.st_mode & S_IFMT) && after.st_ino == before.st_ino,
                          "%s replaced the %s", savers[i].name, what);
            if (sock >= 0) close(sock);
        }
    alarm(0);
    size_t n;
    unsigned char *v = tio_read(victim, &n);
    ck_assert(n == 8 && memcmp(v, "precious", 8) == 0);
    free(v);
    model_free();
    tio_rmtree(dir);
}
END_TEST

/* A symbolic link planted at the temporary name ("<path>.tmp.<pid>") is not followed: its target keeps
** its bytes, the save still succeeds (under another temporary name), and the link is left alone. */
START_TEST(savers_do_not_follow_a_planted_link)
{
    char dir[256], path[512], tmp[600], victim[512], msg[256];
    tio_mkdtemp(dir, sizeof dir);
    snprintf(victim, sizeof victim, "%s/victim", dir);
    tio_write(victim, "precious", 8);
    model_new();
    for (size_t i = 0; i < sizeof savers / sizeof savers[0]; i++) {
        snprintf(path, sizeof path, "%s/out%zu", dir, i);
        snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
        ck_assert_int_eq(symlink(victim, tmp), 0);
        ck_assert_msg(savers[i].f(path, msg) == AD_OK, "%s: %s", savers[i].name, msg);
        struct stat sb;
        ck_assert_int_eq(lstat(tmp, &sb), 0);
        ck_assert(S_ISLNK(sb.st_mode));
        ck_assert_int_eq(lstat(path, &sb), 0);
        ck_assert(S_ISREG(sb.st_mode));
        size_t n;
        unsigned char *v = tio_read(victim, &n);
        ck_assert_msg(n == 8 && memcmp(v, "precious", 8) == 0, "%s wrote through the link", savers[i].name);
        free(v);
        unlink(tmp);
    }
    model_free();
    tio_rmtree(dir);
}
END_TEST

/* An overwritten file keeps its permissions; a new one gets 0666 less the umask. */
START_TEST(savers_keep_the_mode)
{
    char dir[256], path[512], msg[256];
    tio_mkdtemp(dir, sizeof dir);
    model_new();
    mode_t um = umask(022);
    for (size_t i = 0; i < sizeof savers / sizeof savers[0]; i++) {
        snprintf(path, sizeof path, "%s/m%zu", dir, i);
        ck_assert_msg(savers[i].f(path, msg) == AD_OK, "%s", msg);
        struct stat sb;
        ck_assert_int_eq(stat(path, &sb), 0);
        ck_assert_int_eq(sb.st_mode & 0777, 0644);
        static const mode_t modes[] = {0600, 0640, 0444};
        for (int k = 0; k < 3; k++) {
            ck_assert_int_eq(chmod(path, modes[k]), 0);
            ck_assert_msg(savers[i].f(path, msg) == AD_OK, "%s", msg);
            ck_assert_int_eq(stat(path, &sb), 0);
            ck_assert_msg((sb.st_mode & 0777) == modes[k], "%s: mode %o after saving over %o", savers[i].name,
                          (unsigned)(sb.st_mode & 0777), (unsigned)modes[k]);
        }
    }
    umask(um);
    model_free();
    tio_rmtree(dir);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("hostile_paths");
    TCase *tc = tcase_create("paths");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, loaders_refuse_non_regular_files);
    tcase_add_test(tc, loaders_do_not_read_a_fifo_with_a_writer);
    tcase_add_test(tc, savers_refuse_non_regular_targets);
    tcase_add_test(tc, savers_do_not_follow_a_planted_link);
    tcase_add_test(tc, savers_keep_the_mode);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
