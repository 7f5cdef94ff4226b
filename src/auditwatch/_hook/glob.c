/* Globs as fnmatch(3) without flags decides them, for the event table and the deny
 * rules' glob tests. In a UTF-8 locale glibc's fnmatch converts pattern and string
 * to wide characters on every call (about 700 instructions for an event name), so
 * the common shapes are decided without it: a plain name by strcmp, a single final
 * '*' by a prefix test (without flags '*' matches anything, '/' and '.' included).
 * Every other glob still goes to fnmatch. */
#include "aw.h"

#include <fnmatch.h>
#include <string.h>

void aw_glob_init(aw_glob *g, const char *text) {
    size_t n = strcspn(text, "*?[\\");
    g->text = text;
    g->fixed = n;
    if (text[n] == '\0')
        g->kind = AW_GLOB_EXACT;
    else if (text[n] == '*' && text[n + 1] == '\0')
        g->kind = AW_GLOB_PREFIX;
    else
        g->kind = AW_GLOB_FNMATCH;
}

int aw_glob_match(const aw_glob *g, const char *s) {
    switch (g->kind) {
    case AW_GLOB_EXACT:
        return strcmp(g->text, s) == 0;
    case AW_GLOB_PREFIX:
        return strncmp(g->text, s, g->fixed) == 0;
    default:
        return fnmatch(g->text, s, 0) == 0;
    }
}
