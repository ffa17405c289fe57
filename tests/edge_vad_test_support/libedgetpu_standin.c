/* A stand-in for Coral's libedgetpu.so.1, built by the tests (gcc -shared -fPIC). Coral's library is not in
 * Debian or on PyPI; this one exports what the real one exports and behaves as it is documented to:
 *
 * - the TFLite external-delegate plugin entry points, with the signatures ai-edge-litert's
 *   interpreter.Delegate calls them with (tensorflow/lite/delegates/external/external_delegate_interface.h):
 *     TfLiteDelegate* tflite_plugin_create_delegate(char** keys, char** values, size_t n,
 *                                                   void (*report_error)(const char*));
 *     void tflite_plugin_destroy_delegate(TfLiteDelegate* delegate);
 *   With no Edge TPU (or none matching the "device" option) create returns NULL without reporting an error,
 *   as libedgetpu's tflite/edgetpu_delegate_for_custom_op_tflite_plugin.cc does; the interpreter then raises
 *   "ValueError: Failed to load delegate from libedgetpu.so.1". Device strings as documented there:
 *   "" = any, ":N", "usb", "usb:N", "pci", "pci:N"; anything else gives NULL.
 * - the C API of edgetpu_c.h: edgetpu_list_devices / edgetpu_free_devices (enum APEX_PCI = 0, APEX_USB = 1;
 *   the array must be freed with edgetpu_free_devices, which aborts on any other pointer), edgetpu_version()
 *   in the real format "BuildLabel(...), RuntimeVersion(14)", edgetpu_create_delegate / edgetpu_free_delegate,
 *   edgetpu_verbosity.
 *
 * The Edge TPUs it "finds" come from $EDGE_VAD_STANDIN_TPUS, e.g. "usb:/sys/bus/usb/devices/2-1,pci:/dev/apex_0"
 * (unset: none, like a host with the runtime and no accelerator). The delegate it returns for a found TPU is a
 * TfLiteDelegate (TF Lite c/common.h layout: data_, Prepare, three buffer-handle callbacks, int64 flags,
 * opaque_delegate_builder) whose Prepare claims no node: the interpreter runs the model on the CPU. It holds no
 * hardware, so only the selection and loading paths are exercised, never Edge TPU arithmetic.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum edgetpu_device_type { EDGETPU_APEX_PCI = 0, EDGETPU_APEX_USB = 1 };
struct edgetpu_device { enum edgetpu_device_type type; const char* path; };
struct edgetpu_option { const char* name; const char* value; };

typedef struct StandinDelegate {
  void* data_;
  int (*Prepare)(void* context, struct StandinDelegate* delegate);
  void* CopyFromBufferHandle;
  void* CopyToBufferHandle;
  void* FreeBufferHandle;
  int64_t flags;
  void* opaque_delegate_builder;
} StandinDelegate;

#define MAX_TPUS 8
static int g_created = 0;   /* delegates created (a test reads it: the device must not be opened twice) */
static int g_live = 0;      /* delegates not yet destroyed */
static void* g_lists[16];   /* arrays edgetpu_list_devices handed out and not yet freed */

static int prepare(void* context, StandinDelegate* delegate) { (void)context; (void)delegate; return 0; }

/* Parse $EDGE_VAD_STANDIN_TPUS into types[] and paths[] (paths point into a static copy). */
static int read_tpus(int* types, const char** paths) {
  static char copy[1024];
  const char* env = getenv("EDGE_VAD_STANDIN_TPUS");
  int n = 0;
  if (env == NULL || env[0] == '\0') return 0;
  strncpy(copy, env, sizeof(copy) - 1);
  copy[sizeof(copy) - 1] = '\0';
  for (char* item = strtok(copy, ","); item != NULL && n < MAX_TPUS; item = strtok(NULL, ",")) {
    char* colon = strchr(item, ':');
    if (colon == NULL) continue;
    *colon = '\0';
    types[n] = strcmp(item, "pci") == 0 ? EDGETPU_APEX_PCI : EDGETPU_APEX_USB;
    paths[n] = colon + 1;
    n++;
  }
  return n;
}

/* The device option as libedgetpu's plugin reads it: is there a TPU that matches? */
static int matches(const char* device) {
  int types[MAX_TPUS];
  const char* paths[MAX_TPUS];
  int n = read_tpus(types, paths), want_type = -1, index = -1, seen = 0;
  if (device == NULL || device[0] == '\0') return n > 0;
  if (strncmp(device, "usb", 3) == 0) { want_type = EDGETPU_APEX_USB; device += 3; }
  else if (strncmp(device, "pci", 3) == 0) { want_type = EDGETPU_APEX_PCI; device += 3; }
  if (device[0] == ':') {
    char* end = NULL;
    long v = strtol(device + 1, &end, 10);
    if (end == device + 1 || *end != '\0' || v < 0) return 0;
    index = (int)v;
  } else if (device[0] != '\0') {
    return 0;
  }
  for (int i = 0; i < n; i++) {
    if (want_type >= 0 && types[i] != want_type) continue;
    if (index < 0 || seen == index) return 1;
    seen++;
  }
  return 0;
}

static StandinDelegate* new_delegate(void) {
  StandinDelegate* d = (StandinDelegate*)calloc(1, sizeof(StandinDelegate));
  d->Prepare = prepare;
  g_created++;
  g_live++;
  return d;
}

void* tflite_plugin_create_delegate(char** keys, char** values, size_t n, void (*report_error)(const char*)) {
  const char* device = NULL;
  (void)report_error; /* libedgetpu reports nothing when it finds no TPU */
  for (size_t i = 0; i < n; i++)
    if (strcmp(keys[i], "device") == 0) device = values[i];
  return matches(device) ? new_delegate() : NULL;
}

void tflite_plugin_destroy_delegate(void* delegate) {
  if (delegate == NULL) return; /* ai-edge-litert calls this with NULL after a failed create */
  g_live--;
  free(delegate);
}

struct edgetpu_device* edgetpu_list_devices(size_t* num_devices) {
  int types[MAX_TPUS];
  const char* paths[MAX_TPUS];
  int n = read_tpus(types, paths);
  *num_devices = (size_t)n;
  if (n == 0) return NULL;
  size_t strings = 0;
  for (int i = 0; i < n; i++) strings += strlen(paths[i]) + 1;
  struct edgetpu_device* out = (struct edgetpu_device*)malloc(n * sizeof(struct edgetpu_device) + strings);
  char* text = (char*)(out + n);
  for (int i = 0; i < n; i++) {
    strcpy(text, paths[i]);
    out[i].type = (enum edgetpu_device_type)types[i];
    out[i].path = text;
    text += strlen(paths[i]) + 1;
  }
  for (int i = 0; i < 16; i++)
    if (g_lists[i] == NULL) { g_lists[i] = out; break; }
  return out;
}

void edgetpu_free_devices(struct edgetpu_device* dev) {
  if (dev == NULL) return;
  for (int i = 0; i < 16; i++)
    if (g_lists[i] == dev) { g_lists[i] = NULL; free(dev); return; }
  fprintf(stderr, "libedgetpu stand-in: edgetpu_free_devices got a pointer edgetpu_list_devices did not return\n");
  abort();
}

void* edgetpu_create_delegate(enum edgetpu_device_type type, const char* name, const struct edgetpu_option* options,
                              size_t num_options) {
  (void)name; (void)options; (void)num_options;
  return matches(type == EDGETPU_APEX_PCI ? "pci" : "usb") ? new_delegate() : NULL;
}

void edgetpu_free_delegate(void* delegate) { tflite_plugin_destroy_delegate(delegate); }

void edgetpu_verbosity(int verbosity) { (void)verbosity; }

const char* edgetpu_version(void) {
  return "BuildLabel(COMPILER=edge-vad test stand-in,DATE=redacted,TIME=redacted), RuntimeVersion(14)";
}

/* Test hooks (not in the real library). */
int standin_delegates_created(void) { return g_created; }
int standin_delegates_live(void) { return g_live; }
