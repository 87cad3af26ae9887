/*
 * ee_litert.c -- loading libLiteRt.so with dlopen and checking that it is the LiteRT version
 * whose prototypes litert_api.h declares. No headers ship with the library, so the harness
 * builds without it and refuses, at session creation, a library it was not written for.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ee_internal.h"

/* In a pip install the library sits in site-packages/ai_edge_litert/; the wheel's
 * dist-info beside it names the version. Refuse any other version. (On Android the AAR
 * carries no metadata: there the symbol checks are what we have.) */
static ee_status check_wheel_version(const ee_session_params *p, const char *lib_path) {
    char dir[1024];
    if ((size_t)snprintf(dir, sizeof dir, "%s", lib_path) >= sizeof dir) return EE_OK;
    char *slash = strrchr(dir, '/');
    if (slash == NULL) return EE_OK;
    *slash = '\0';
    slash = strrchr(dir, '/');
    if (slash == NULL || strcmp(slash + 1, "ai_edge_litert") != 0) return EE_OK;
    *slash = '\0';
    DIR *d = opendir(dir);
    if (d == NULL) return EE_OK;
    ee_status st = EE_OK;
    struct dirent *e;
    const char *prefix = "ai_edge_litert-";
    size_t n_prefix = strlen(prefix), n_ver = strlen(EE_LITERT_VERSION);
    while ((e = readdir(d)) != NULL) {
        size_t n = strlen(e->d_name);
        if (strncmp(e->d_name, prefix, n_prefix) != 0 || n <= 10 || strcmp(e->d_name + n - 10, ".dist-info") != 0)
            continue;
        const char *ver = e->d_name + n_prefix;
        if (strncmp(ver, EE_LITERT_VERSION, n_ver) != 0 || ver[n_ver] != '.') {
            ee_log(p, EE_LOG_ERROR, "%s belongs to %s; the harness is built for LiteRT %s (pip install "
                   "ai-edge-litert==%s)", lib_path, e->d_name, EE_LITERT_VERSION, EE_LITERT_VERSION);
            st = EE_ERR_VERSION;
        }
    }
    closedir(d);
    return st;
}

static ee_status resolve(const ee_session_params *p, void *dl, const char *path, ee_litert_api *api) {
#define EE_LOAD(ret, name, args)                                                                             \
    *(void **)&api->name = dlsym(dl, #name);                                                                 \
    if (api->name == NULL) {                                                                                  \
        ee_log(p, EE_LOG_ERROR, "%s lacks %s: it is not LiteRT %s", path, #name, EE_LITERT_VERSION);         \
        return EE_ERR_VERSION;                                                                                \
    }
    EE_LITERT_FUNCTIONS(EE_LOAD)
#undef EE_LOAD
    if (!p->check_version) return EE_OK;
    if (dlsym(dl, EE_LITERT_SENTINEL) == NULL) {
        ee_log(p, EE_LOG_ERROR, "%s lacks %s: it is older than LiteRT %s", path, EE_LITERT_SENTINEL,
               EE_LITERT_VERSION);
        return EE_ERR_VERSION;
    }
    char real[1024];
    return realpath(path, real) != NULL ? check_wheel_version(p, real) : EE_OK;
}

ee_status ee_litert_open(const ee_session_params *p, void **dl, ee_litert_api *api) {
    const char *path = p->litert_path;
    if (path == NULL) path = getenv("EE_LITERT_LIB");
    if (path == NULL) path = "libLiteRt.so";
    *dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (*dl == NULL) {
        const char *why = dlerror();
        ee_log(p, EE_LOG_ERROR, "cannot load %s: %s (pass its path: ee_session_params.litert_path, "
               "ee_run --litert PATH, or $EE_LITERT_LIB)", path, why != NULL ? why : "unknown reason");
        return EE_ERR_NOT_FOUND;
    }
    ee_status es = resolve(p, *dl, path, api);
    if (es != EE_OK) {
        dlclose(*dl); /* nothing was created with it yet */
        *dl = NULL;
    }
    return es;
}
