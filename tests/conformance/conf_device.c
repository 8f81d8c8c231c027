/* conf_device.c - device enumeration and queries: ordinals, names, total memory, attributes, PCI bus ids,
 * UUIDs and CUDA_VISIBLE_DEVICES.
 * The CUDA_VISIBLE_DEVICES checks re-run this program with the variable set (the driver reads it once, in
 * cuInit); the child checks what it sees and reports through its exit status. Those checks need the parent
 * to see every device, so they are skipped, with a note, when the parent itself runs under the variable.
 */
#include "check.h"

#include <dlfcn.h>
#include <sys/wait.h>
#include <unistd.h>

static int g_ndev;
static char *g_self_argv0;

static void device_count_is_positive(void)
{
    CU(cuInit(0));
    g_ndev = 0;
    CU(cuDeviceGetCount(&g_ndev));
    EXPECT(g_ndev >= 1, "device count %d", g_ndev);
}

static void cuDeviceGet_returns_each_ordinal(void)
{
    for (int i = 0; i < g_ndev; i++) {
        CUdevice d = -1;
        CU(cuDeviceGet(&d, i));
        /* The handle is opaque, but every per-device query below must accept it. */
        char name[128];
        CU(cuDeviceGetName(name, (int)sizeof name, d));
    }
}

static void bad_ordinals_return_invalid_device(void)
{
    CUdevice d;
    EXPECT_RC(cuDeviceGet(&d, -1), CUDA_ERROR_INVALID_DEVICE);
    EXPECT_RC(cuDeviceGet(&d, g_ndev), CUDA_ERROR_INVALID_DEVICE);
    EXPECT_RC(cuDeviceGet(&d, 1000), CUDA_ERROR_INVALID_DEVICE);
    char name[64];
    EXPECT_RC(cuDeviceGetName(name, (int)sizeof name, (CUdevice)g_ndev), CUDA_ERROR_INVALID_DEVICE);
    size_t bytes;
    EXPECT_RC(cuDeviceTotalMem(&bytes, (CUdevice)g_ndev), CUDA_ERROR_INVALID_DEVICE);
    int v;
    EXPECT_RC(cuDeviceGetAttribute(&v, CU_DEVICE_ATTRIBUTE_WARP_SIZE, (CUdevice)g_ndev),
              CUDA_ERROR_INVALID_DEVICE);
    CUuuid u;
    EXPECT_RC(cuDeviceGetUuid(&u, (CUdevice)g_ndev), CUDA_ERROR_INVALID_DEVICE);
}

static void null_outputs_return_invalid_value(void)
{
    CUdevice d;
    CU(cuDeviceGet(&d, 0));
    EXPECT_RC(cuDeviceGet(NULL, 0), CUDA_ERROR_INVALID_VALUE);
    EXPECT_RC(cuDeviceGetCount(NULL), CUDA_ERROR_INVALID_VALUE);
    EXPECT_RC(cuDeviceGetName(NULL, 64, d), CUDA_ERROR_INVALID_VALUE);
    EXPECT_RC(cuDeviceTotalMem(NULL, d), CUDA_ERROR_INVALID_VALUE);
    EXPECT_RC(cuDeviceGetAttribute(NULL, CU_DEVICE_ATTRIBUTE_WARP_SIZE, d), CUDA_ERROR_INVALID_VALUE);
    EXPECT_RC(cuDeviceGetUuid(NULL, d), CUDA_ERROR_INVALID_VALUE);
    EXPECT_RC(cuDeviceGetPCIBusId(NULL, 16, d), CUDA_ERROR_INVALID_VALUE);
    EXPECT_RC(cuDeviceGetByPCIBusId(NULL, "0000:00:00.0"), CUDA_ERROR_INVALID_VALUE);
}

static void name_is_nonempty_and_truncates_to_len(void)
{
    for (int i = 0; i < g_ndev; i++) {
        CUdevice d;
        CU(cuDeviceGet(&d, i));
        char full[256];
        CU(cuDeviceGetName(full, (int)sizeof full, d));
        size_t n = strnlen(full, sizeof full);
        EXPECT(n > 0 && n < sizeof full, "device %d: name length %zu", i, n);
        if (n < 6)
            continue;
        /* A shorter buffer gets a prefix of the name and nothing is written past len. Whether the driver
         * keeps len-1 characters and a NUL or len characters is not pinned down, so either is accepted. */
        char shortbuf[32];
        memset(shortbuf, 'X', sizeof shortbuf);
        const int len = 5;
        CU(cuDeviceGetName(shortbuf, len, d));
        for (size_t k = (size_t)len; k < sizeof shortbuf; k++)
            EXPECT(shortbuf[k] == 'X', "device %d: byte %zu past len=%d was written", i, k, len);
        size_t got = strnlen(shortbuf, (size_t)len);
        EXPECT(got >= (size_t)len - 1, "device %d: truncated name keeps %zu characters", i, got);
        EXPECT(memcmp(shortbuf, full, got) == 0, "device %d: \"%.*s\" is not a prefix of \"%s\"", i, (int)got,
               shortbuf, full);
    }
}

static void total_memory_is_positive(void)
{
    for (int i = 0; i < g_ndev; i++) {
        CUdevice d;
        CU(cuDeviceGet(&d, i));
        size_t bytes = 0;
        CU(cuDeviceTotalMem(&bytes, d));
        EXPECT(bytes >= (64ull << 20), "device %d: total memory %zu bytes", i, bytes);
    }
}

static void attributes_have_documented_values(void)
{
    for (int i = 0; i < g_ndev; i++) {
        CUdevice d;
        CU(cuDeviceGet(&d, i));
        int v = 0;
        CU(cuDeviceGetAttribute(&v, CU_DEVICE_ATTRIBUTE_WARP_SIZE, d));
        EXPECT(v == 32, "device %d: warp size %d", i, v);
        CU(cuDeviceGetAttribute(&v, CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK, d));
        EXPECT(v == 1024, "device %d: max threads per block %d", i, v);
        CU(cuDeviceGetAttribute(&v, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, d));
        EXPECT(v > 0, "device %d: multiprocessor count %d", i, v);
    }
}

/* cuDeviceComputeCapability is deprecated in NVIDIA's header; comparing it with the attributes that replaced
 * it is the point of this test, so the deprecation warning is silenced for this one call. */
static CUresult legacy_compute_capability(int *major, int *minor, CUdevice d)
{
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
    return cuDeviceComputeCapability(major, minor, d);
#pragma GCC diagnostic pop
}

static void compute_capability_attributes_match_cuDeviceComputeCapability(void)
{
    for (int i = 0; i < g_ndev; i++) {
        CUdevice d;
        CU(cuDeviceGet(&d, i));
        int major = -1, minor = -1, amajor = -2, aminor = -2;
        CU(legacy_compute_capability(&major, &minor, d));
        CU(cuDeviceGetAttribute(&amajor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, d));
        CU(cuDeviceGetAttribute(&aminor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, d));
        EXPECT(major == amajor && minor == aminor, "device %d: %d.%d vs attributes %d.%d", i, major, minor,
               amajor, aminor);
        EXPECT(major >= 2, "device %d: compute capability %d.%d", i, major, minor);
    }
}

static void invalid_attribute_returns_invalid_value(void)
{
    CUdevice d;
    CU(cuDeviceGet(&d, 0));
    int v;
    /* The enum starts at 1; 100000 is far past any attribute a driver defines. */
    EXPECT_RC(cuDeviceGetAttribute(&v, (CUdevice_attribute)0, d), CUDA_ERROR_INVALID_VALUE);
    EXPECT_RC(cuDeviceGetAttribute(&v, (CUdevice_attribute)100000, d), CUDA_ERROR_INVALID_VALUE);
}

static void pci_bus_id_round_trips(void)
{
    for (int i = 0; i < g_ndev; i++) {
        CUdevice d;
        CU(cuDeviceGet(&d, i));
        char id[64];
        CU(cuDeviceGetPCIBusId(id, (int)sizeof id, d));
        unsigned domain, bus, dev, fn;
        EXPECT(sscanf(id, "%x:%x:%x.%x", &domain, &bus, &dev, &fn) == 4, "device %d: bus id \"%s\"", i, id);
        int abus = -1, adom = -1, adev = -1;
        CU(cuDeviceGetAttribute(&abus, CU_DEVICE_ATTRIBUTE_PCI_BUS_ID, d));
        CU(cuDeviceGetAttribute(&adom, CU_DEVICE_ATTRIBUTE_PCI_DOMAIN_ID, d));
        CU(cuDeviceGetAttribute(&adev, CU_DEVICE_ATTRIBUTE_PCI_DEVICE_ID, d));
        EXPECT((int)bus == abus && (int)domain == adom && (int)dev == adev,
               "device %d: \"%s\" vs attributes domain %x bus %x device %x", i, id, adom, abus, adev);
        EXPECT(strlen(id) <= 12, "device %d: bus id \"%s\" is longer than the documented 13-byte buffer", i,
               id);
        CUdevice back = -1;
        CU(cuDeviceGetByPCIBusId(&back, id));
        EXPECT(back == d, "device %d: \"%s\" maps back to device %d", i, id, (int)back);
    }
}

/* cuDeviceGetByPCIBusId documents three forms: domain:bus:device.function, domain:bus:device and
 * bus:device.function (the last one means domain 0). */
static void pci_bus_id_short_forms_find_the_device(void)
{
    for (int i = 0; i < g_ndev; i++) {
        CUdevice d;
        CU(cuDeviceGet(&d, i));
        int domain = -1, bus = -1, dev = -1;
        CU(cuDeviceGetAttribute(&domain, CU_DEVICE_ATTRIBUTE_PCI_DOMAIN_ID, d));
        CU(cuDeviceGetAttribute(&bus, CU_DEVICE_ATTRIBUTE_PCI_BUS_ID, d));
        CU(cuDeviceGetAttribute(&dev, CU_DEVICE_ATTRIBUTE_PCI_DEVICE_ID, d));
        char id[64];
        snprintf(id, sizeof id, "%04x:%02x:%02x", (unsigned)domain, (unsigned)bus, (unsigned)dev);
        CUdevice back = -1;
        EXPECT_RC(cuDeviceGetByPCIBusId(&back, id), CUDA_SUCCESS);
        EXPECT(back == d, "device %d: \"%s\" maps to device %d", i, id, (int)back);
        if (domain != 0)
            continue;
        snprintf(id, sizeof id, "%02x:%02x.0", (unsigned)bus, (unsigned)dev);
        back = -1;
        EXPECT_RC(cuDeviceGetByPCIBusId(&back, id), CUDA_SUCCESS);
        EXPECT(back == d, "device %d: \"%s\" maps to device %d", i, id, (int)back);
    }
}

typedef CUresult (*uuid_fn)(CUuuid *, CUdevice);

/* NVIDIA's header maps cuDeviceGetUuid to _v2 and declares no other; the original is looked up by name. */
static uuid_fn original_get_uuid(void)
{
    void *lib = dlopen("libcuda.so.1", RTLD_LAZY | RTLD_NOLOAD);
    void *sym = lib ? dlsym(lib, "cuDeviceGetUuid") : NULL;
    uuid_fn fn;
    memcpy(&fn, &sym, sizeof fn);
    return fn;
}

static void uuid_v1_and_v2_agree_and_differ_between_devices(void)
{
    uuid_fn v1 = original_get_uuid();
    EXPECT(v1 != NULL, "libcuda.so.1 exports no cuDeviceGetUuid");
    CUuuid first;
    memset(&first, 0, sizeof first);
    for (int i = 0; i < g_ndev; i++) {
        CUdevice d;
        CU(cuDeviceGet(&d, i));
        CUuuid a, b;
        memset(&a, 0, sizeof a);
        memset(&b, 0xff, sizeof b);
        CU(cuDeviceGetUuid_v2(&a, d));
        if (v1) {
            CU(v1(&b, d));
            EXPECT(memcmp(a.bytes, b.bytes, sizeof a.bytes) == 0, "device %d: cuDeviceGetUuid and _v2 differ",
                   i);
        }
        static const CUuuid zero;
        EXPECT(memcmp(a.bytes, zero.bytes, sizeof a.bytes) != 0, "device %d: UUID is all zero", i);
        if (i == 0)
            first = a;
        else
            EXPECT(memcmp(a.bytes, first.bytes, sizeof a.bytes) != 0, "devices 0 and %d share a UUID", i);
    }
}

/* ---- CUDA_VISIBLE_DEVICES: a child process with the variable set ---------------------------------- */

static void uuid_hex(const CUuuid *u, char out[33])
{
    for (int i = 0; i < 16; i++)
        snprintf(out + 2 * i, 3, "%02x", (unsigned char)u->bytes[i]);
}

/* nvidia-smi's spelling of a UUID, which CUDA_VISIBLE_DEVICES accepts. */
static void uuid_smi(const CUuuid *u, char out[64])
{
    const unsigned char *b = (const unsigned char *)u->bytes;
    snprintf(out, 64, "GPU-%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1],
             b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]);
}

/* Child: expects the devices whose UUIDs (hex, comma-separated) are `want`, in that order. */
static int child_expect_devices(const char *visible, const char *want)
{
    static char name[128];
    snprintf(name, sizeof name, "child(CUDA_VISIBLE_DEVICES=%s)", visible ? visible : "(unset)");
    conf_current = name;
    CUresult rc = cuInit(0);
    EXPECT(rc == CUDA_SUCCESS, "cuInit returned %s", conf_err_name(rc));
    if (rc != CUDA_SUCCESS)
        return 1;
    int expected = 1;
    for (const char *c = want; *c; c++)
        expected += *c == ',';
    int n = -1;
    rc = cuDeviceGetCount(&n);
    EXPECT(rc == CUDA_SUCCESS && n == expected, "cuDeviceGetCount returned %s, count %d (expected %d)",
           conf_err_name(rc), n, expected);
    for (int i = 0; i < n && i < expected; i++) {
        CUdevice d;
        CUuuid u;
        char hex[33];
        if (cuDeviceGet(&d, i) != CUDA_SUCCESS || cuDeviceGetUuid(&u, d) != CUDA_SUCCESS) {
            EXPECT(0, "device %d cannot be queried", i);
            continue;
        }
        uuid_hex(&u, hex);
        EXPECT(strncmp(want + 33 * i, hex, 32) == 0, "device %d has UUID %s, expected %.32s", i, hex,
               want + 33 * i);
    }
    return conf_failures ? 1 : 0;
}

static int child_expect_no_device(void)
{
    conf_current = "child(CUDA_VISIBLE_DEVICES=)";
    EXPECT_RC(cuInit(0), CUDA_ERROR_NO_DEVICE);
    return conf_failures ? 1 : 0;
}

/* Runs this program again as `mode` [arg] with CUDA_VISIBLE_DEVICES=visible; returns its exit status. */
static int run_child(const char *visible, const char *mode, const char *arg)
{
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        setenv("CUDA_VISIBLE_DEVICES", visible, 1);
        char *argv[] = {g_self_argv0, (char *)mode, (char *)arg, NULL};
        execv("/proc/self/exe", argv);
        _exit(127);
    }
    int status = 0;
    if (waitpid(pid, &status, 0) != pid)
        return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static int parent_sees_all_devices(void)
{
    if (getenv("CUDA_VISIBLE_DEVICES") == NULL)
        return 1;
    printf("note: CUDA_VISIBLE_DEVICES is set; %s skipped\n", conf_current);
    return 0;
}

/* The UUIDs (hex) of the parent's devices `a` and, if b >= 0, `b`, as the child expects them. */
static int expect_list(int a, int b, char out[80])
{
    CUdevice d;
    CUuuid u;
    if (cuDeviceGet(&d, a) != CUDA_SUCCESS || cuDeviceGetUuid(&u, d) != CUDA_SUCCESS)
        return -1;
    uuid_hex(&u, out);
    if (b < 0)
        return 0;
    out[32] = ',';
    if (cuDeviceGet(&d, b) != CUDA_SUCCESS || cuDeviceGetUuid(&u, d) != CUDA_SUCCESS)
        return -1;
    uuid_hex(&u, out + 33);
    return 0;
}

static int two_devices_to_compare(void)
{
    if (!parent_sees_all_devices())
        return 0;
    if (g_ndev >= 2)
        return 1;
    printf("note: one device; %s skipped\n", conf_current);
    return 0;
}

static void check_child_sees(const char *visible, int a, int b)
{
    char want[80];
    EXPECT(expect_list(a, b, want) == 0, "the parent cannot read its own UUIDs");
    int st = run_child(visible, "--child-expect", want);
    EXPECT(st == 0, "child with CUDA_VISIBLE_DEVICES=%s exited with %d", visible, st);
}

static void visible_devices_1_shows_only_device_1(void)
{
    if (two_devices_to_compare())
        check_child_sees("1", 1, -1);
}

static void visible_devices_order_is_the_list_order(void)
{
    if (two_devices_to_compare())
        check_child_sees("1,0", 1, 0);
}

static void visible_devices_accepts_a_uuid(void)
{
    if (!two_devices_to_compare())
        return;
    CUdevice d;
    CUuuid u;
    CU(cuDeviceGet(&d, 1));
    CU(cuDeviceGetUuid(&u, d));
    char smi[64];
    uuid_smi(&u, smi);
    check_child_sees(smi, 1, -1);
}

static void visible_devices_list_ends_at_an_invalid_entry(void)
{
    /* CUDA C Programming Guide: with 0,2,-1,1 devices 0 and 2 are visible and 1 is not. */
    if (two_devices_to_compare())
        check_child_sees("1,-1,0", 1, -1);
}

static void empty_visible_devices_makes_cuInit_return_no_device(void)
{
    if (!parent_sees_all_devices())
        return;
    int st = run_child("", "--child-no-device", NULL);
    EXPECT(st == 0, "child with CUDA_VISIBLE_DEVICES= exited with %d", st);
}

int main(int argc, char **argv)
{
    g_self_argv0 = argv[0];
    if (argc >= 3 && strcmp(argv[1], "--child-expect") == 0)
        return child_expect_devices(getenv("CUDA_VISIBLE_DEVICES"), argv[2]);
    if (argc >= 2 && strcmp(argv[1], "--child-no-device") == 0)
        return child_expect_no_device();

    RUN(device_count_is_positive);
    RUN(cuDeviceGet_returns_each_ordinal);
    RUN(bad_ordinals_return_invalid_device);
    RUN(null_outputs_return_invalid_value);
    RUN(name_is_nonempty_and_truncates_to_len);
    RUN(total_memory_is_positive);
    RUN(attributes_have_documented_values);
    RUN(compute_capability_attributes_match_cuDeviceComputeCapability);
    RUN(invalid_attribute_returns_invalid_value);
    RUN(pci_bus_id_round_trips);
    RUN(pci_bus_id_short_forms_find_the_device);
    RUN(uuid_v1_and_v2_agree_and_differ_between_devices);
    RUN(visible_devices_1_shows_only_device_1);
    RUN(visible_devices_order_is_the_list_order);
    RUN(visible_devices_accepts_a_uuid);
    RUN(visible_devices_list_ends_at_an_invalid_entry);
    RUN(empty_visible_devices_makes_cuInit_return_no_device);
    CONF_EXIT();
}
