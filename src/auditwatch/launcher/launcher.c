/* auditwatch-python: `python`, with auditwatch's hooks installed before
 * Py_Initialize (PEP 551's "restricted entry point", for recording).
 *
 * 1. Find the environment's auditwatch extension relative to this executable
 *    (/proc/self/exe): PREFIX/bin/<this> -> PREFIX/lib{,64}/pythonX.Y/site-packages/
 *    _auditwatch*.so. PREFIX is a virtual environment or an installation prefix.
 * 2. Decide whether to audit: AUDITWATCH_SINK in the environment (as for `python`
 *    with the .pth bootstrap), else PREFIX/auditwatch.conf written by
 *    `auditwatch install`. With a config the launcher never runs unaudited: anything
 *    that stops the hook (no extension, bad config, a refused manifest) exits with
 *    status 70. With neither, it warns on stderr and runs as plain `python`
 *    (AUDITWATCH_REQUIRED=1 makes that an error too).
 * 3. dlopen the extension RTLD_GLOBAL: the interpreter's later `import _auditwatch`
 *    finds the same loaded copy (same file), so the module sees the recorder this
 *    launcher started and the bootstrap does not install twice.
 * 4. auditwatch_preinit_launcher() reads the config (as the .pth bootstrap does),
 *    registers the audit hook (records say installed: pre-init) and the open-code
 *    hook.
 * 5. Py_BytesMain(argc, argv): from here on this is `python` (options, -c, -m,
 *    scripts, stdin, the REPL, exit status, signals). sys.executable is this file.
 */
#include <Python.h>

#include <dlfcn.h>
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

typedef int (*preinit_fn)(const char *, char *, size_t);

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
        snprintf(pattern, sizeof pattern, "%s/%s/python" PYVER "/site-packages/_auditwatch*.so",
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
             "lib/python" PYVER "/site-packages/_auditwatch*.so)%s",
             prefix, "");
    void *lib = dlopen(hook, RTLD_NOW | RTLD_GLOBAL);
    if (lib == NULL)
        fail("cannot load %s: %s", hook, dlerror());
    preinit_fn preinit = (preinit_fn)dlsym(lib, "auditwatch_preinit_launcher");
    if (preinit == NULL)
        fail("%s is not a matching auditwatch extension (%s)", hook, "missing entry point");
    char err[1024] = "";
    /* With a config the environment is not consulted; without, NULL: the environment
     * (AUDITWATCH_SINK, _EVENTS, _OPTIONS, _DENY, _MANIFEST). */
    if (preinit(env_sink != NULL ? NULL : conf_path, err, sizeof err) < 0)
        fail("%s%s", err, "");
    return Py_BytesMain(argc, argv);
}
