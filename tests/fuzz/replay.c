/* replay.c: runs a fuzz target on its built-in seeds and on every file of the given directories (the regression corpus). */
#include "fuzz.h"

#include <dirent.h>
#include <string.h>
#include <sys/stat.h>

static long ran;

static void run_one(const char *name, const uint8_t *data, size_t size, void *ctx)
{
    (void)ctx;
    if (getenv("FZ_VERBOSE")) fprintf(stderr, "%s: %s (%zu bytes)\n", fz_target, name, size);
    LLVMFuzzerTestOneInput(data, size);
    ran++;
}

static int cmp_names(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Runs every plain file of dir (sorted by name); 1 on an unreadable entry. */
static int run_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) {
        fprintf(stderr, "replay %s: cannot open %s\n", fz_target, dir);
        return 1;
    }
    char **names = NULL;
    size_t n = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 64;
            char **nn = realloc(names, cap * sizeof *names);
            if (!nn) abort();
            names = nn;
        }
        names[n] = strdup(e->d_name);
        if (!names[n]) abort();
        n++;
    }
    closedir(d);
    if (n > 1) qsort(names, n, sizeof *names, cmp_names); /* names is NULL for an empty directory */
    int bad = 0;
    for (size_t i = 0; i < n; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        struct stat sb;
        if (stat(path, &sb) == 0 && S_ISREG(sb.st_mode)) {
            size_t size = 0;
            uint8_t *data = fz_read_file(path, &size);
            if (!data) {
                fprintf(stderr, "replay %s: cannot read %s\n", fz_target, path);
                bad = 1;
            } else {
                run_one(path, data, size, NULL);
                free(data);
            }
        }
        free(names[i]);
    }
    free(names);
    return bad;
}

int main(int argc, char **argv)
{
    int bad = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--seeds") == 0)
            fz_seeds(fz_target, run_one, NULL);
        else
            bad |= run_dir(argv[i]);
    }
    printf("replay %s: %ld inputs, no crash\n", fz_target, ran);
    return bad;
}
