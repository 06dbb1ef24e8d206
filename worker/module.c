/* Task modules: shared objects loaded with dlopen. A name ("testing") is
 * looked for as NAME.so in each directory of CELER_MODULE_PATH, then in
 * ../lib/celer/modules beside the running binary (the build tree and an
 * installed tree share this layout), then in the configured install
 * directory. A path is loaded as given. */
#include <dlfcn.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "common/common.h"
#include "worker/worker.h"

/* Modules one worker loads at once. */
#define MODULE_MAX 32

static void *loaded[MODULE_MAX];
static size_t nloaded;

static int is_path(const char *s) {
  size_t n = strlen(s);
  return strchr(s, '/') != NULL || (n > 3 && strcmp(s + n - 3, ".so") == 0);
}

static int readable(const char *path) { return access(path, R_OK) == 0; }

/* Adds dir to the comma-separated list of places looked in (cut short
 * when it no longer fits: it is only for the error message). */
static void note_tried(char *tried, size_t size, const char *dir) {
  size_t used = strlen(tried);
  celer_fmt(tried + used, size - used, "%s%s", used ? ", " : "", dir);
}

/* Finds NAME.so; returns 0 and fills out, or -1. */
static int find_module(const char *name, char *out, size_t size, char *tried, size_t tsize) {
  char dirs[4][PATH_MAX];
  size_t ndirs = 0;
  const char *env = getenv("CELER_MODULE_PATH");
  tried[0] = '\0';
  char exe[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n > 0) {
    exe[n] = '\0';
    char *slash = strrchr(exe, '/');
    if (slash) {
      *slash = '\0';
      celer_fmt(dirs[ndirs++], PATH_MAX, "%s/../%s", exe, CELER_MODULE_RELDIR);
    }
  }
  snprintf(dirs[ndirs++], PATH_MAX, "%s", CELER_MODULE_INSTALL_DIR);
  /* CELER_MODULE_PATH first: split it on ':'. */
  if (env && *env) {
    char *copy = strdup(env);
    if (copy == NULL) return -1;
    for (char *save = NULL, *d = strtok_r(copy, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
      if (celer_fmt(out, size, "%s/%s.so", d, name) == 0 && readable(out)) {
        free(copy);
        return 0;
      }
      note_tried(tried, tsize, d);
    }
    free(copy);
  }
  for (size_t i = 0; i < ndirs; i++) {
    if (celer_fmt(out, size, "%s/%s.so", dirs[i], name) == 0 && readable(out)) return 0;
    note_tried(tried, tsize, dirs[i]);
  }
  return -1;
}

int module_load(celer_registry *reg, const char *spec, char *err, size_t errlen) {
  char path[PATH_MAX], tried[1024];
  if (nloaded == MODULE_MAX) {
    snprintf(err, errlen, "cannot load module %s: at most %d modules", spec, MODULE_MAX);
    return -1;
  }
  if (is_path(spec)) {
    snprintf(path, sizeof path, "%s", spec);
  } else {
    if (!celer_valid_queue_name(spec)) {
      snprintf(err, errlen, "module name '%s' is not a name ([A-Za-z0-9_.-]) nor a path", spec);
      return -1;
    }
    if (find_module(spec, path, sizeof path, tried, sizeof tried) != 0) {
      snprintf(err, errlen, "module %s not found (looked for %s.so in %s)", spec, spec, tried);
      return -1;
    }
  }
  void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (h == NULL) {
    snprintf(err, errlen, "cannot load module %s: %s", spec, dlerror());
    return -1;
  }
  const celer_module_info *info = dlsym(h, "celer_module");
  if (info == NULL) {
    snprintf(err, errlen, "%s is not a Celer module (no celer_module symbol; use CELER_MODULE)",
             path);
    dlclose(h);
    return -1;
  }
  if (info->abi != CELER_MODULE_ABI) {
    snprintf(err, errlen, "module %s was built for module ABI %d, this worker speaks %d",
             path, info->abi, CELER_MODULE_ABI);
    dlclose(h);
    return -1;
  }
  if (info->name == NULL || info->init == NULL) {
    snprintf(err, errlen, "module %s declares no name or no init function", path);
    dlclose(h);
    return -1;
  }
  reg->loading = info->name;
  size_t before = reg->n;
  int rc = info->init(reg);
  reg->loading = NULL;
  if (rc != 0) {
    snprintf(err, errlen, "module %s failed to initialise", info->name);
    reg->n = before; /* its registrations point into code we unload */
    dlclose(h);
    return -1;
  }
  loaded[nloaded++] = h;
  celer_info("loaded module %s %s from %s (%zu tasks)", info->name,
             info->version ? info->version : "", path, reg->n - before);
  return 0;
}

void module_unload_all(void) {
  while (nloaded > 0) dlclose(loaded[--nloaded]);
}
