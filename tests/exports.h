/* exports.h: a shared library's exported functions (nm -D) against a test's table of names. */
#ifndef AUTODIFF_TESTS_EXPORTS_H
#define AUTODIFF_TESTS_EXPORTS_H

#include <check.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Fails unless every function the library at $env exports whose name starts with prefix (and not with
** internal, the names shared between the project's own libraries) is one of names[0..n), and every one
** of names is exported. table_file names the test file holding the table, for the message. */
static void check_exports(const char *env, const char *prefix, const char *internal, const char *const *names, int n,
                          const char *table_file)
{
    const char *lib = getenv(env);
    ck_assert_msg(lib != NULL, "%s (the path of the library) is not set", env);
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "nm -D --defined-only '%s'", lib);
    FILE *p = popen(cmd, "r");
    ck_assert_ptr_nonnull(p);
    char line[512], missing[2048] = "";
    int listed = 0;
    bool *seen = calloc((size_t)n, sizeof *seen);
    ck_assert_ptr_nonnull(seen);
    size_t lp = strlen(prefix), li = strlen(internal);
    while (fgets(line, sizeof line, p)) {
        char addr[64], kind[8], name[256];
        if (sscanf(line, "%63s %7s %255s", addr, kind, name) != 3 || strcmp(kind, "T") != 0) continue;
        if (strncmp(name, internal, li) == 0 || strncmp(name, prefix, lp) != 0) continue;
        listed++;
        int at = -1;
        for (int i = 0; i < n && at < 0; i++)
            if (strcmp(names[i], name) == 0) at = i;
        if (at >= 0) seen[at] = true;
        else if (strlen(missing) + strlen(name) + 2 < sizeof missing) {
            strcat(missing, " ");
            strcat(missing, name);
        }
    }
    ck_assert_int_eq(pclose(p), 0);
    ck_assert_msg(listed > 100, "nm listed only %d functions of %s", listed, lib);
    ck_assert_msg(!missing[0], "exported without an entry in %s's NULL table:%s", table_file, missing);
    for (int i = 0; i < n; i++) ck_assert_msg(seen[i], "%s has an entry but is not exported", names[i]);
    free(seen);
}

#endif
