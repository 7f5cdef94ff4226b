/* auditwatch-python: `python`, with auditwatch's hooks installed before
 * Py_Initialize (PEP 551's "restricted entry point", for recording).
 *
 * 1. Find the environment's auditwatch extension relative to this executable
 *    (/proc/self/exe): PREFIX/bin/<this> -> PREFIX/lib{,64}/pythonX.Y/site-packages/
 *    auditwatch/_hook*.so. PREFIX is a virtual environment or an installation prefix.
 * 2. Decide whether to audit: AUDITWATCH_SINK in the environment (as for `python`
 *    with the .pth bootstrap), else PREFIX/auditwatch.conf written by
 *    `auditwatch install`. With a config the launcher never runs unaudited: anything
 *    that stops the hook (no extension, bad config, a refused manifest) exits with
 *    status 70. With neither, it warns on stderr and runs as plain `python`
 *    (AUDITWATCH_REQUIRED=1 makes that an error too).
 * 3. dlopen the extension RTLD_GLOBAL: the interpreter's later
 *    `import auditwatch._hook` finds the same loaded copy (same file), so the module
 *    sees the recorder this launcher started and the bootstrap does not install twice.
 * 4. auditwatch_preinit_config() registers the audit hook (records say
 *    installed: pre-init), auditwatch_opencode_setup() the open-code hook.
 * 5. Py_BytesMain(argc, argv): from here on this is `python` (options, -c, -m,
 *    scripts, stdin, the REPL, exit status, signals). sys.executable is this file.
 */
#include <Python.h>

#include <dlfcn.h>
#include <errno.h>
#include <glob.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define EX_SOFTWARE 70
#define STR2(x) #x
#define STR(x) STR2(x)
#define PYVER STR(PY_MAJOR_VERSION) "." STR(PY_MINOR_VERSION)

typedef int (*preinit_fn)(const char *, const char *, const char *, const char *, char *, size_t);
typedef int (*opencode_fn)(const char *, char *, size_t);

static void fail(const char *fmt, const char *a, const char *b) {
    fprintf(stderr, "auditwatch-python: ");
    fprintf(stderr, fmt, a, b);
    fprintf(stderr, "\nauditwatch-python: refusing to run unaudited (exit %d)\n", EX_SOFTWARE);
    exit(EX_SOFTWARE);
}

/* PREFIX from /proc/self/exe: the directory above the one holding this file. */
static int find_prefix(char *out, size_t n) {
    char exe[PATH_MAX];
    ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (len <= 0)
        return -1;
    exe[len] = '\0';
    for (int up = 0; up < 2; up++) {
        char *slash = strrchr(exe, '/');
        if (slash == NULL)
            return -1;
        *slash = '\0';
    }
    if (exe[0] == '\0')
        strcpy(exe, "/");
    if (strlen(exe) >= n)
        return -1;
    strcpy(out, exe);
    return 0;
}

static int find_hook(const char *prefix, char *out, size_t n) {
    static const char *libs[] = {"lib", "lib64"};
    for (size_t i = 0; i < sizeof libs / sizeof *libs; i++) {
        char pattern[PATH_MAX + 128];
        snprintf(pattern, sizeof pattern, "%s/%s/python" PYVER "/site-packages/auditwatch/_hook*.so",
                 prefix, libs[i]);
        glob_t g;
        if (glob(pattern, 0, NULL, &g) == 0 && g.gl_pathc > 0) {
            int ok = strlen(g.gl_pathv[0]) < n;
            if (ok && realpath(g.gl_pathv[0], out) == NULL)
                ok = 0;
            globfree(&g);
            if (ok)
                return 0;
        } else {
            globfree(&g);
        }
    }
    return -1;
}

/* ---- PREFIX/auditwatch.conf: "key = value" lines, '#' comments -------------------- */

typedef struct {
    char *sink, *events, *options, *deny, *manifest;
} config;

static char *trim(char *s) {
    while (*s == ' ' || *s == '\t')
        s++;
    char *end = s + strlen(s);
    while (end > s && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\n' || end[-1] == '\r'))
        *--end = '\0';
    return s;
}

static void read_config(const char *path, config *c) {
    FILE *f = fopen(path, "re");
    if (f == NULL)
        fail("cannot read %s: %s", path, strerror(errno));
    char *line = NULL;
    size_t cap = 0;
    int lineno = 0;
    while (getline(&line, &cap, f) >= 0) {
        lineno++;
        char *s = trim(line);
        if (*s == '\0' || *s == '#')
            continue;
        char *eq = strchr(s, '=');
        if (eq == NULL) {
            char where[32];
            snprintf(where, sizeof where, "%d", lineno);
            fail("%s:%s: expected KEY = VALUE", path, where);
        }
        *eq = '\0';
        char *key = trim(s), *value = trim(eq + 1);
        char **slot = strcmp(key, "sink") == 0       ? &c->sink
                      : strcmp(key, "events") == 0   ? &c->events
                      : strcmp(key, "options") == 0  ? &c->options
                      : strcmp(key, "deny") == 0     ? &c->deny
                      : strcmp(key, "manifest") == 0 ? &c->manifest
                                                     : NULL;
        if (slot == NULL)
            continue; /* other keys are for the tools (doctor, uninstall) */
        free(*slot);
        *slot = strdup(value);
        if (*slot == NULL)
            fail("%s: %s", path, "out of memory");
    }
    free(line);
    fclose(f);
    if (c->sink == NULL || c->sink[0] == '\0')
        fail("%s: no sink = ... line%s", path, "");
}

int main(int argc, char **argv) {
    char prefix[PATH_MAX], conf_path[PATH_MAX + 32];
    int have_prefix = find_prefix(prefix, sizeof prefix) == 0;
    struct stat st;
    int have_conf = 0;
    if (have_prefix) {
        snprintf(conf_path, sizeof conf_path, "%s/auditwatch.conf", prefix);
        have_conf = stat(conf_path, &st) == 0;
    }
    const char *env_sink = getenv("AUDITWATCH_SINK");
    if (env_sink == NULL && !have_conf) {
        const char *required = getenv("AUDITWATCH_REQUIRED");
        if (required && strcmp(required, "1") == 0)
            fail("AUDITWATCH_REQUIRED=1 but auditing is not configured (no AUDITWATCH_SINK, no "
                 "%s%s)",
                 have_prefix ? conf_path : "auditwatch.conf", "");
        fprintf(stderr, "auditwatch-python: WARNING: this process is NOT audited: no "
                        "AUDITWATCH_SINK and no %s\n",
                have_prefix ? conf_path : "PREFIX/auditwatch.conf");
        return Py_BytesMain(argc, argv);
    }
    if (!have_prefix)
        fail("cannot find this executable's directory through %s%s", "/proc/self/exe", "");
    char hook[PATH_MAX];
    if (find_hook(prefix, hook, sizeof hook) < 0)
        fail("auditwatch's extension is not installed in %s (looked for "
             "lib/python" PYVER "/site-packages/auditwatch/_hook*.so)%s",
             prefix, "");
    void *lib = dlopen(hook, RTLD_NOW | RTLD_GLOBAL);
    if (lib == NULL)
        fail("cannot load %s: %s", hook, dlerror());
    preinit_fn preinit = (preinit_fn)dlsym(lib, "auditwatch_preinit_config");
    opencode_fn opencode = (opencode_fn)dlsym(lib, "auditwatch_opencode_setup");
    if (preinit == NULL || opencode == NULL)
        fail("%s is not a matching auditwatch extension (%s)", hook, "missing entry points");

    config c = {NULL, NULL, NULL, NULL, NULL};
    const char *manifest = NULL;
    if (env_sink != NULL) {
        manifest = getenv("AUDITWATCH_MANIFEST");
    } else {
        read_config(conf_path, &c);
        /* With a config the environment is not consulted: a missing key is empty. */
        c.events = c.events ? c.events : "";
        c.options = c.options ? c.options : "";
        c.deny = c.deny ? c.deny : "";
        manifest = c.manifest;
    }
    char err[1024] = "";
    /* NULL arguments: the environment (AUDITWATCH_SINK/EVENTS/OPTIONS/DENY). */
    if (preinit(c.sink, c.events, c.options, c.deny, err, sizeof err) < 0)
        fail("%s%s", err, "");
    if (opencode(manifest, err, sizeof err) < 0)
        fail("%s%s", err, "");
    /* The configuration strings are copied by the recorder; keep them anyway: the
     * process is about to become the interpreter and they are small. */
    return Py_BytesMain(argc, argv);
}
