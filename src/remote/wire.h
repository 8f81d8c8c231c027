/* wire.h - the GPU-over-IP protocol (docs/protocol.md): frames, the codec both ends share, and the calls.
 *
 * A frame is a 24-byte header followed by `length` bytes of payload, every integer little-endian:
 *
 *   u32 magic    GP_WIRE_MAGIC ("GPRW")
 *   u16 version  GP_WIRE_VERSION
 *   u16 op       what the frame carries (gp_wire_op)
 *   u32 flags    GP_WIRE_F_*
 *   u32 seq      the request's sequence number (replies echo it); per connection, from 1, increasing;
 *                0 in the out-of-band CALLBACK and CALLBACK_DONE (host functions: docs/protocol.md)
 *   u32 status   in replies: the CUresult (or a GP_WIRE_E_* for protocol errors); 0 in requests
 *   u32 length   payload bytes, at most GP_WIRE_MAX_PAYLOAD
 *
 * Payloads are sequences of fields in the order the op's comment below gives: u32, u64, i64, f32 (IEEE bits
 * as a u32), blob (u32 length + bytes), str (a blob without its NUL; at most GP_WIRE_MAX_STR). Handles
 * (contexts, streams, events, modules, functions) are 64-bit ids the client picks (nonzero; 0 is "none": the
 * NULL stream, no context) and the worker maps to its own; device pointers travel as the worker's own values.
 *
 * A request with GP_WIRE_F_ASYNC gets no reply: its error, if any, is kept by the worker and returned by the
 * next synchronizing call (STREAM_SYNC, CTX_SYNC, EVENT_SYNC, the sync memcpys) as CUDA reports asynchronous
 * errors. Every other request gets exactly one reply, in request order: one connection is one ordered stream
 * of calls, so no call overtakes another.
 */
#ifndef GPUPOOL_REMOTE_WIRE_H
#define GPUPOOL_REMOTE_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define GP_WIRE_MAGIC       0x57525047u /* "GPRW" */
#define GP_WIRE_VERSION     1
#define GP_WIRE_HEADER      24
#define GP_WIRE_MAX_PAYLOAD (16u << 20) /* a frame's payload, at most */
#define GP_WIRE_CHUNK       (4u << 20)  /* bulk copies travel in chunks of this much */
#define GP_WIRE_MAX_STR     4096
#define GP_WIRE_MAX_PARAMS  256 /* kernel parameters */

#define GP_WIRE_F_ASYNC 0x1u /* request: no reply */
#define GP_WIRE_F_REPLY 0x2u /* this frame is a reply */

/* Protocol errors (reply status, above every CUresult): the session ends after them. */
#define GP_WIRE_E_AUTH      0x10001u /* HELLO: wrong or missing token */
#define GP_WIRE_E_VERSION   0x10002u /* HELLO: no common protocol version */
#define GP_WIRE_E_MALFORMED 0x10003u /* a frame or payload that does not decode */

/* The calls. Request fields -> reply fields (after the status). Every request of an op >= GP_OP_CTX_SYNC
 * (but ops 100..139, CLIENT_ID and NVML's: GP_WIRE_OP_HAS_CTX) starts with u64 ctx: the client's current
 * context id at the call (0: none), which the worker makes current before it runs the call (a call that needs
 * a context, made without one, answers CUDA_ERROR_INVALID_CONTEXT). */
#define GP_WIRE_OP_HAS_CTX(op) ((op) >= GP_OP_CTX_SYNC && !((op) >= 100 && (op) <= 139))
/* NVML's ops (NVML_INIT and after, to 139), whose reply status is an nvmlReturn_t. */
#define GP_WIRE_OP_IS_NVML(op) ((op) >= 101 && (op) <= 139)
typedef enum gp_wire_op {
    GP_OP_HELLO = 1,      /* u32 proto_min, u32 proto_max, str token, str client (name), u32 pid
                           *   -> u32 proto, u64 session, str worker (name and version) */
    GP_OP_BYE = 2,        /* -> (nothing); the worker frees the session and closes */
    GP_OP_INIT = 10,      /* u32 flags -> (nothing)                                        cuInit */
    GP_OP_DRIVER_VERSION, /* -> u32 version                                                cuDriverGetVersion
                           */
    GP_OP_DEVICE_COUNT,   /* -> u32 count                                                  cuDeviceGetCount */
    GP_OP_DEVICE_INFO, /* u32 ordinal -> str name, u64 total_mem, blob uuid (16 bytes),  cuDeviceGetName etc.
                        *   u32 n, n x i32 attribute values (attributes 1..n)  */
    GP_OP_PRIMARY_RETAIN,  /* u32 dev, u64 id -> (nothing)         cuDevicePrimaryCtxRetain; id names it */
    GP_OP_PRIMARY_RELEASE, /* u32 dev -> (nothing)                 cuDevicePrimaryCtxRelease_v2 */
    GP_OP_PRIMARY_STATE,   /* u32 dev -> u32 flags, u32 active     cuDevicePrimaryCtxGetState */
    GP_OP_PRIMARY_FLAGS,   /* u32 dev, u32 flags -> (nothing)      cuDevicePrimaryCtxSetFlags_v2 */
    GP_OP_PRIMARY_RESET,   /* u32 dev -> (nothing)                 cuDevicePrimaryCtxReset_v2 */
    GP_OP_CTX_CREATE,      /* u32 flags, u32 dev, u64 id -> (nothing)                        cuCtxCreate_v2 */
    GP_OP_CTX_DESTROY,     /* u64 id -> (nothing)                                           cuCtxDestroy_v2 */
    GP_OP_CTX_SYNC,       /* u64 ctx -> (nothing)                                          cuCtxSynchronize */
    GP_OP_CTX_SET_LIMIT,  /* u64 ctx, u32 limit, u64 value -> (nothing)                    cuCtxSetLimit */
    GP_OP_CTX_GET_LIMIT,  /* u64 ctx, u32 limit -> u64 value                               cuCtxGetLimit */
    GP_OP_MEM_ALLOC = 40, /* u64 ctx, u64 size -> u64 dptr                                 cuMemAlloc_v2 */
    GP_OP_MEM_FREE,       /* u64 ctx, u64 dptr -> (nothing)                                cuMemFree_v2 */
    GP_OP_MEM_INFO,       /* u64 ctx -> u64 free, u64 total                                cuMemGetInfo_v2 */
    GP_OP_MEM_ALLOC_PITCH, /* u64 ctx, u64 width, u64 height, u32 elem -> u64 dptr, u64 pitch */
    GP_OP_MEM_RANGE, /* u64 ctx, u64 dptr -> u64 base, u64 size                       cuMemGetAddressRange */
    GP_OP_HTOD,      /* u64 ctx, u64 stream, u64 dst, u32 last, blob data -> (nothing)
                      *   host to device; a copy of more than GP_WIRE_CHUNK is several frames, each of
                      *   the next piece (dst advancing); the last one has last=1. Sync copies send
                      *   every piece but the last ASYNC and wait for the last one's reply. */
    GP_OP_DTOH,      /* u64 ctx, u64 stream, u64 src, u64 size (<= GP_WIRE_CHUNK) -> blob data
                      *   device to host, one chunk; a longer copy sends every chunk's request before
                      *   reading the first reply (pipelined). On a stream: ordered after its work. */
    GP_OP_DTOD,      /* u64 ctx, u64 stream, u64 dst, u64 src, u64 size -> (nothing) */
    GP_OP_MEMSET,    /* u64 ctx, u64 stream, u64 dst, u32 value, u32 elem (1, 2, 4), u64 pitch,
                      *   u64 width (elements), u64 height -> (nothing)              cuMemsetD8/16/32, 2D */
    GP_OP_MEMCPY_3D, /* u64 ctx, u64 stream, u64 dst, u64 dst_pitch, u64 dst_height, u64 src, u64 src_pitch,
                      *   u64 src_height, u64 width (bytes), u64 height, u64 depth -> (nothing)
                      *   a device-to-device 2D (depth 1) or 3D copy, offsets folded into dst and src;
                      *   cuMemcpy2D/3D with a host side travel as HTOD pieces (a row each) or one DTOH span
                      */
    GP_OP_STREAM_CREATE = 60, /* u64 ctx, u64 id, u32 flags, i32 priority -> (nothing) */
    GP_OP_STREAM_DESTROY,     /* u64 ctx, u64 id -> (nothing) */
    GP_OP_STREAM_SYNC,        /* u64 ctx, u64 id -> (nothing) */
    GP_OP_STREAM_QUERY,       /* u64 ctx, u64 id -> (nothing): the status says */
    GP_OP_STREAM_WAIT_EVENT,  /* u64 ctx, u64 stream, u64 event, u32 flags -> (nothing) */
    GP_OP_HOST_FUNC,          /* u64 ctx, u64 stream, u64 callback -> (nothing); ASYNC
                               *   cuLaunchHostFunc, cuStreamAddCallback: when the stream reaches it the worker
                               *   sends CALLBACK and holds the stream until CALLBACK_DONE comes back */
    GP_OP_CALLBACK,           /* worker -> client, unsolicited (flags 0, seq 0, no ctx): u64 callback,
                               *   u32 status (the stream's error so far); the client runs the host function */
    GP_OP_CALLBACK_DONE,     /* u64 ctx (0), u64 callback -> no reply (ASYNC): the host function returned; the
                              *   worker reads it even while a call of the session waits for the stream */
    GP_OP_EVENT_CREATE = 70, /* u64 ctx, u64 id, u32 flags -> (nothing) */
    GP_OP_EVENT_DESTROY,     /* u64 ctx, u64 id -> (nothing) */
    GP_OP_EVENT_RECORD,      /* u64 ctx, u64 event, u64 stream -> (nothing) */
    GP_OP_EVENT_SYNC,        /* u64 ctx, u64 id -> (nothing) */
    GP_OP_EVENT_QUERY,       /* u64 ctx, u64 id -> (nothing): the status says */
    GP_OP_EVENT_ELAPSED,     /* u64 ctx, u64 start, u64 end -> f32 ms */
    GP_OP_MODULE_HAVE =
        80,              /* u64 ctx, blob sha256 (32 bytes) -> u32 have: is the image in the worker's cache */
    GP_OP_MODULE_LOAD,   /* u64 ctx, u64 id, blob sha256, blob image (empty when the worker has it)
                          *   -> (nothing)                                              cuModuleLoadData */
    GP_OP_MODULE_UNLOAD, /* u64 ctx, u64 id -> (nothing) */
    GP_OP_MODULE_FUNC,   /* u64 ctx, u64 module, u64 id, str name -> u32 n, n x (u32 offset, u32 size)
                          *   cuModuleGetFunction; the layout of its parameters (cuFuncGetParamInfo) */
    GP_OP_MODULE_GLOBAL, /* u64 ctx, u64 module, str name -> u64 dptr, u64 size */
    GP_OP_FUNC_ATTR,     /* u64 ctx, u64 func, u32 attrib -> i32 value                   cuFuncGetAttribute */
    GP_OP_LAUNCH,        /* u64 ctx, u64 func, u32 grid[3], u32 block[3], u32 shmem, u64 stream,
                          *   blob params (the parameters packed at their offsets) -> (nothing); ASYNC */
    GP_OP_MODULE_FUNC_COUNT, /* u64 ctx, u64 module -> u32 count cuModuleGetFunctionCount */
    GP_OP_LAUNCH_COOP,       /* LAUNCH's fields -> (nothing); replied (a grid too large for the device is
                              *   refused at the call)                                 cuLaunchCooperativeKernel */
    GP_OP_OCCUPANCY,         /* u64 ctx, u64 func, u32 block_size, u64 dynamic_smem, u32 flags -> u32 blocks
                              *   cuOccupancyMaxActiveBlocksPerMultiprocessor(WithFlags) */
    /* NVML (libnvidia-ml.so.1 on the client, its own connection: docs/protocol.md "NVML"). These requests
     * carry no ctx, and their reply status is an nvmlReturn_t (CUDA_ERROR_NOT_SUPPORTED from a worker that
     * does not know the op); dev is the worker's NVML index of a device. Pids in replies are the client
     * host's: the worker translates its sessions' pids to their clients' and leaves out every process that
     * is not a session of the asking client's pid space (CLIENT_ID). */
    GP_OP_CLIENT_ID = 100, /* u32 pid, str pid space -> (nothing); ASYNC, right after HELLO (both client
                            *   libraries): the client process and its pid space ("BOOT_ID/pid:[INODE]"),
                            *   kept in the worker's session registry while the session lives */
    GP_OP_NVML_INIT,       /* u32 flags -> u32 n, n x (str uuid, str pci bus id) NVML's devices in its order,
                            *   u32 m, m x blob uuid (16 bytes) CUDA's devices in CUDA's order  nvmlInitWithFlags */
    GP_OP_NVML_SYSTEM,     /* -> str driver version, str NVML version, i32 CUDA driver version */
    GP_OP_NVML_HANDLE, /* u32 key kind (GP_NVML_BY_*), str key -> u32 dev    nvmlDeviceGetHandleByUUID etc. */
    GP_OP_NVML_STR,    /* u32 dev, u32 query (GP_NVML_STR_QUERIES) -> str value */
    GP_OP_NVML_U32,    /* u32 dev, u32 query (GP_NVML_U32_QUERIES), u32 arg (0 when it takes none)
                        *   -> u32 value */
    GP_OP_NVML_PAIR,   /* u32 dev, u32 query (GP_NVML_PAIR_QUERIES) -> u32 first, u32 second */
    GP_OP_NVML_U64,    /* u32 dev, u32 query (GP_NVML_U64_*), u32 arg1, u32 arg2 -> u64 value */
    GP_OP_NVML_MEMORY, /* u32 dev, u32 v2 (0: nvmlDeviceGetMemoryInfo, 1: _v2)
                        *   -> u64 total, u64 reserved, u64 free, u64 used */
    GP_OP_NVML_UTILIZATION, /* u32 dev -> u32 gpu, u32 memory                 nvmlDeviceGetUtilizationRates */
    GP_OP_NVML_PCI,         /* u32 dev -> str bus id legacy, str bus id, u32 domain, u32 bus, u32 device,
                             *   u32 pci device id, u32 pci subsystem id          nvmlDeviceGetPciInfo_v3 */
    GP_OP_NVML_PROCS,       /* u32 dev, u32 kind (GP_NVML_PROCS_*) -> u32 n, n x (u32 pid, u64 used memory,
                             *   u32 gpu instance, u32 compute instance): all of them (the client applies
                             *   the caller's array size)       nvmlDevice{Compute,Graphics,MPS}RunningProcesses_v3
                             */
    GP_OP_NVML_PROC_UTIL,   /* u32 dev, u64 last seen timestamp -> u32 n, n x (u32 pid, u64 timestamp,
                             *   u32 sm, u32 mem, u32 enc, u32 dec)          nvmlDeviceGetProcessUtilization */
    /* Memory pools and stream-ordered allocation. A pool is a client id; a device's default pool gets the id
     * the client offers as default_id the first time it is named (the worker maps it then; 0 offers none). */
    GP_OP_POOL_DEVICE = 140, /* u64 ctx, u32 dev, u32 current (0: the default pool), u64 default_id
                              *   -> u64 pool cuDeviceGetDefaultMemPool/GetMemPool */
    GP_OP_POOL_SET_CURRENT, /* u64 ctx, u32 dev, u64 pool -> (nothing)                   cuDeviceSetMemPool */
    GP_OP_POOL_CREATE,      /* u64 ctx, u64 id, u32 alloc_type, u32 handle_types, u32 location_type,
                             *   u32 location_id, u64 max_size, u32 usage -> (nothing)  cuMemPoolCreate */
    GP_OP_POOL_DESTROY,     /* u64 ctx, u64 pool -> (nothing)                              cuMemPoolDestroy */
    GP_OP_POOL_SET_ATTR,    /* u64 ctx, u64 pool, u32 attr, u64 value -> (nothing)    cuMemPoolSetAttribute
                             *   (the REUSE_* attributes are ints: 0 or 1 here) */
    GP_OP_POOL_GET_ATTR,    /* u64 ctx, u64 pool, u32 attr -> u64 value               cuMemPoolGetAttribute */
    GP_OP_POOL_TRIM,        /* u64 ctx, u64 pool, u64 keep -> (nothing)                    cuMemPoolTrimTo */
    GP_OP_MEM_ALLOC_ASYNC,  /* u64 ctx, u64 stream, u64 pool (0: the current pool of the stream's device),
                             *   u64 size, u64 default_id -> u64 dptr, u64 pool (the one it came from)
                             *   cuMemAllocAsync, cuMemAllocFromPoolAsync (replied: the pointer comes back) */
    GP_OP_MEM_FREE_ASYNC,   /* u64 ctx, u64 stream, u64 dptr -> (nothing); ASYNC            cuMemFreeAsync */
    /* Virtual memory management. An allocation handle is a client id; reserved addresses are the worker's.
     * "prop" is a CUmemAllocationProp field by field: u32 type, u32 requested_handle_types,
     * u32 location_type, u32 location_id, u32 compression_type, u32 gpu_direct_rdma_capable, u32 usage
     * (device ordinals are the worker's; win32HandleMetaData does not travel). */
    GP_OP_VMM_GRANULARITY =
        150,                /* u64 ctx, prop, u32 option -> u64 granularity cuMemGetAllocationGranularity */
    GP_OP_VMM_CREATE,       /* u64 ctx, u64 id, u64 size, u64 flags, prop -> (nothing)       cuMemCreate */
    GP_OP_VMM_RELEASE,      /* u64 ctx, u64 handle -> (nothing)                              cuMemRelease */
    GP_OP_VMM_RESERVE,      /* u64 ctx, u64 size, u64 alignment, u64 addr, u64 flags -> u64 ptr
                             *                                                       cuMemAddressReserve */
    GP_OP_VMM_ADDRESS_FREE, /* u64 ctx, u64 ptr, u64 size -> (nothing)                    cuMemAddressFree */
    GP_OP_VMM_MAP,          /* u64 ctx, u64 ptr, u64 size, u64 offset, u64 handle, u64 flags -> (nothing)
                             *                                                                  cuMemMap */
    GP_OP_VMM_UNMAP,      /* u64 ctx, u64 ptr, u64 size -> (nothing)                            cuMemUnmap */
    GP_OP_VMM_SET_ACCESS, /* u64 ctx, u64 ptr, u64 size, blob descs -> (nothing)            cuMemSetAccess
                           *   descs: n x (u32 location_type, u32 location_id, u32 flags), 1 <= n <= 64 */
    GP_OP_VMM_GET_ACCESS, /* u64 ctx, u32 location_type, u32 location_id, u64 ptr -> u64 flags
                           *                                                            cuMemGetAccess */
    GP_OP_VMM_PROPS,      /* u64 ctx, u64 handle -> prop     cuMemGetAllocationPropertiesFromHandle */
    /* Arrays (170..179). An array is a client id; ARRAY_CREATE's desc is Width, Height, Depth, Format,
     * NumChannels, Flags (u64 w, u64 h, u64 d, u32 format, u32 channels, u32 flags), as cuArray3DCreate
     * takes. HTOA and ATOH address an array by its packed byte offset (row after row, slice after slice: the
     * offset of cuMemcpyHtoA for a 1D array) and travel in chunks exactly as HTOD and DTOH do. */
    GP_OP_ARRAY_CREATE =
        170,              /* u64 ctx, u64 id, desc -> (nothing)                        cuArray3DCreate_v2 */
    GP_OP_ARRAY_DESTROY,  /* u64 ctx, u64 id -> (nothing)                              cuArrayDestroy */
    GP_OP_ARRAY_MEM_REQ,  /* u64 ctx, u64 array, u32 dev -> u64 size, u64 alignment */
    GP_OP_MIPMAP_CREATE,  /* u64 ctx, u64 id, desc, u32 levels -> (nothing)            cuMipmappedArrayCreate
                           */
    GP_OP_MIPMAP_DESTROY, /* u64 ctx, u64 id -> (nothing); its levels go with it */
    GP_OP_MIPMAP_LEVEL,   /* u64 ctx, u64 mipmap, u32 level, u64 id (names the level's array)
                           *   -> desc (the level's)                               cuMipmappedArrayGetLevel */
    GP_OP_MIPMAP_MEM_REQ, /* u64 ctx, u64 mipmap, u32 dev -> u64 size, u64 alignment */
    GP_OP_HTOA, /* u64 ctx, u64 stream, u64 array, u64 offset, u32 last, blob data -> (nothing): as HTOD */
    GP_OP_ATOH, /* u64 ctx, u64 stream, u64 array, u64 offset, u64 size (<= GP_WIRE_CHUNK) -> blob
                 *   data: as DTOH */
    GP_OP_ARRAY_LINEAR, /* u64 ctx, u32 kind (1 DtoA, 2 AtoD, 3 AtoA), u64 dst, u64 dst_offset, u64 src,
                         *   u64 src_offset, u64 size -> (nothing)            cuMemcpyDtoA, AtoD, AtoA (sent
                         * ASYNC) */
    /* A copy descriptor ("copy" below) is two sides, dst then src, each u32 kind (0 host: the worker's
     * staging buffer, packed; 1 device; 2 array), u64 handle (device pointer or array id), u64 x (bytes),
     * u64 y, u64 z, u64 pitch, u64 height (device sides), then u64 width (bytes), u64 rows, u64 depth. */
    GP_OP_MEMCPY_BOX =
        180, /* u64 ctx, u64 stream, copy (no host side) -> (nothing)    cuMemcpy2D/3D with arrays */
    /* Graphs (181..). Graphs, nodes and executable graphs are client ids; deps is a blob of u64 node ids.
     * Nodes the driver made (stream capture) get ids the worker picks, with the top bit set. A host node, and
     * a memcpy node with a side in the client's host memory, run on the client through CALLBACK as HOST_FUNC
     * does, the node's id being the callback's: a copy to host memory lands in a staging buffer of the worker
     * whose data goes to the client as STAGE_DATA frames before the CALLBACK; a copy from host memory is
     * preceded by a CALLBACK the client answers with STAGE_FILL frames, then CALLBACK_DONE. */
    GP_OP_GRAPH_CREATE,     /* u64 ctx, u64 id, u32 flags -> (nothing)                      cuGraphCreate */
    GP_OP_GRAPH_DESTROY,    /* u64 ctx, u64 id -> (nothing)                                 cuGraphDestroy */
    GP_OP_GRAPH_ADD_EMPTY,  /* u64 ctx, u64 graph, u64 node, blob deps -> (nothing) */
    GP_OP_GRAPH_ADD_KERNEL, /* u64 ctx, u64 graph, u64 node, blob deps, u64 func, u32 grid[3], u32 block[3],
                             *   u32 shmem, blob params (as LAUNCH) -> (nothing) */
    GP_OP_GRAPH_ADD_MEMSET, /* u64 ctx, u64 graph, u64 node, blob deps, u64 node_ctx, u64 dst, u64 pitch,
                             *   u32 value, u32 elem, u64 width, u64 height -> (nothing) */
    GP_OP_GRAPH_ADD_MEMCPY, /* u64 ctx, u64 graph, u64 node, blob deps, u64 node_ctx, copy -> (nothing) */
    GP_OP_GRAPH_ADD_HOST,   /* u64 ctx, u64 graph, u64 node, blob deps -> (nothing); runs callback `node` */
    GP_OP_GRAPH_NODES,      /* u64 ctx, u64 graph -> u32 n, n x u64 node                    cuGraphGetNodes */
    GP_OP_GRAPH_INSTANTIATE,  /* u64 ctx, u64 graph, u64 exec, u64 flags, u64 upload_stream -> (nothing) */
    GP_OP_GRAPH_EXEC_DESTROY, /* u64 ctx, u64 exec -> (nothing)                            cuGraphExecDestroy
                               */
    GP_OP_GRAPH_LAUNCH = 191, /* u64 ctx, u64 exec, u64 stream -> (nothing); ASYNC           cuGraphLaunch */
    GP_OP_GRAPH_UPLOAD,       /* u64 ctx, u64 exec, u64 stream -> (nothing); ASYNC           cuGraphUpload */
    /* Stream capture: the worker's stream captures what the client forwards to it. */
    GP_OP_CAPTURE_BEGIN,  /* u64 ctx, u64 stream, u64 graph (names the capture's graph), u32 mode -> (nothing)
                           */
    GP_OP_CAPTURE_END,    /* u64 ctx, u64 stream -> (nothing): the graph is the one CAPTURE_BEGIN named */
    GP_OP_CAPTURE_STATUS, /* u64 ctx, u64 stream -> u32 status                          cuStreamIsCapturing */
    GP_OP_CAPTURE_INFO,   /* u64 ctx, u64 stream -> u32 status, u64 capture id, u64 graph, u32 n, n x u64 node
                           *   (the stream's dependency set)                        cuStreamGetCaptureInfo */
    GP_OP_CAPTURE_MODE,   /* u64 ctx (0), u32 mode -> (nothing); ASYNC: the capture mode of the calling client
                           *   thread, sent before its next call whenever it differs from the last one sent */
    GP_OP_CAPTURE_HOST,   /* u64 ctx, u64 stream, u64 graph, u64 callback -> (nothing); ASYNC: a host function
                           *   captured as a host node of graph (the capture's) */
    GP_OP_CAPTURE_COPY,   /* u64 ctx, u64 stream, u64 graph, u64 callback, copy (one host side) -> (nothing);
                           *   ASYNC: a copy with a side in host memory captured as a staged node */
    GP_OP_STAGE_DATA = 200, /* worker -> client, unsolicited (seq 0): u64 callback, u64 offset, blob data: a
                             *   piece of a staged copy to host memory, before that callback's CALLBACK */
    GP_OP_STAGE_FILL,       /* u64 ctx (0), u64 callback, u64 offset, blob data -> no reply (ASYNC, seq 0): a
                             *   piece of a staged copy from host memory, before its CALLBACK_DONE */
    /* Mirrored memory (docs/protocol.md, "Managed and mapped memory"): the client keeps a host copy of each
     * of these allocations and makes the two agree at synchronization points with HTOD and DTOH. The worker
     * zero-fills them, so that both copies start equal. */
    GP_OP_MEM_ALLOC_MANAGED = 220, /* u64 ctx, u64 size, u32 flags -> u64 dptr             cuMemAllocManaged;
                                    *   freed with MEM_FREE */
    GP_OP_MEM_HOST_ALLOC,          /* u64 ctx, u64 size, u32 flags -> u64 dptr
                                    *   pinned host memory of the worker's host, mapped into the device
                                    *   (cuMemHostAlloc with flags | DEVICEMAP); dptr is its device pointer */
    GP_OP_MEM_HOST_FREE,           /* u64 ctx, u64 dptr -> (nothing)      cuMemFreeHost of a MEM_HOST_ALLOC */
    GP_OP__END
} gp_wire_op;

/* NVML_HANDLE's key kinds. */
enum { GP_NVML_BY_UUID = 0, GP_NVML_BY_PCI_BUS_ID = 1, GP_NVML_BY_SERIAL = 2 };
/* NVML_PROCS' kinds. */
enum { GP_NVML_PROCS_COMPUTE = 0, GP_NVML_PROCS_GRAPHICS = 1, GP_NVML_PROCS_MPS = 2 };
/* NVML_U64's queries. */
enum {
    GP_NVML_U64_ENERGY = 0 /* nvmlDeviceGetTotalEnergyConsumption */,
    GP_NVML_U64_ECC_ERRORS = 1 /* nvmlDeviceGetTotalEccErrors(arg1 error type, arg2 counter type) */
};

/* The queries of NVML_STR, NVML_U32 and NVML_PAIR: X(name, the NVML call, its value's type). On the wire a
 * query is its place in its list, from 0; lists only grow at the end. Both ends expand them. The U32
 * queries of GP_NVML_U32_ARG_QUERIES (numbered on from GP_NVML_U32_FIRST_ARG) pass arg as the call's second
 * argument (a sensor, threshold or clock type); the STR queries' type is unused. */
#define GP_NVML_STR_QUERIES(X)           \
    X(NAME, nvmlDeviceGetName, char)     \
    X(UUID, nvmlDeviceGetUUID, char)     \
    X(SERIAL, nvmlDeviceGetSerial, char) \
    X(VBIOS, nvmlDeviceGetVbiosVersion, char)
#define GP_NVML_U32_QUERIES(X)                                                     \
    X(MINOR, nvmlDeviceGetMinorNumber, unsigned int)                               \
    X(BRAND, nvmlDeviceGetBrand, nvmlBrandType_t)                                  \
    X(ARCH, nvmlDeviceGetArchitecture, nvmlDeviceArchitecture_t)                   \
    X(MULTI_GPU_BOARD, nvmlDeviceGetMultiGpuBoard, unsigned int)                   \
    X(GPU_CORES, nvmlDeviceGetNumGpuCores, unsigned int)                           \
    X(BUS_WIDTH, nvmlDeviceGetMemoryBusWidth, unsigned int)                        \
    X(PCIE_GEN, nvmlDeviceGetCurrPcieLinkGeneration, unsigned int)                 \
    X(PCIE_WIDTH, nvmlDeviceGetCurrPcieLinkWidth, unsigned int)                    \
    X(PCIE_GEN_MAX, nvmlDeviceGetMaxPcieLinkGeneration, unsigned int)              \
    X(PCIE_WIDTH_MAX, nvmlDeviceGetMaxPcieLinkWidth, unsigned int)                 \
    X(COMPUTE_MODE, nvmlDeviceGetComputeMode, nvmlComputeMode_t)                   \
    X(PERSISTENCE, nvmlDeviceGetPersistenceMode, nvmlEnableState_t)                \
    X(DISPLAY_MODE, nvmlDeviceGetDisplayMode, nvmlEnableState_t)                   \
    X(DISPLAY_ACTIVE, nvmlDeviceGetDisplayActive, nvmlEnableState_t)               \
    X(POWER_LIMIT, nvmlDeviceGetPowerManagementLimit, unsigned int)                \
    X(POWER_DEFAULT_LIMIT, nvmlDeviceGetPowerManagementDefaultLimit, unsigned int) \
    X(POWER_ENFORCED_LIMIT, nvmlDeviceGetEnforcedPowerLimit, unsigned int)         \
    X(POWER_USAGE, nvmlDeviceGetPowerUsage, unsigned int)                          \
    X(PSTATE, nvmlDeviceGetPerformanceState, nvmlPstates_t)                        \
    X(FAN_SPEED, nvmlDeviceGetFanSpeed, unsigned int)
#define GP_NVML_U32_ARG_QUERIES(X)                                                           \
    X(TEMPERATURE, nvmlDeviceGetTemperature, nvmlTemperatureSensors_t)                       \
    X(TEMPERATURE_THRESHOLD, nvmlDeviceGetTemperatureThreshold, nvmlTemperatureThresholds_t) \
    X(CLOCK, nvmlDeviceGetClockInfo, nvmlClockType_t)                                        \
    X(CLOCK_MAX, nvmlDeviceGetMaxClockInfo, nvmlClockType_t)
#define GP_NVML_PAIR_QUERIES(X)                                    \
    X(COMPUTE_CAPABILITY, nvmlDeviceGetCudaComputeCapability, int) \
    X(MIG_MODE, nvmlDeviceGetMigMode, unsigned int)                \
    X(ECC_MODE, nvmlDeviceGetEccMode, nvmlEnableState_t)           \
    X(POWER_CONSTRAINTS, nvmlDeviceGetPowerManagementLimitConstraints, unsigned int)

#define GP_NVML_ENUM_(name, fn, type) GP_NVML_Q_##name,
enum { GP_NVML_STR_QUERIES(GP_NVML_ENUM_) GP_NVML_STR__END };
enum {
    GP_NVML_U32_QUERIES(GP_NVML_ENUM_) GP_NVML_U32_FIRST_ARG,
    GP_NVML_U32_ARG_BEFORE_ = GP_NVML_U32_FIRST_ARG - 1, /* the arg queries number on from FIRST_ARG */
    GP_NVML_U32_ARG_QUERIES(GP_NVML_ENUM_) GP_NVML_U32__END
};
enum { GP_NVML_PAIR_QUERIES(GP_NVML_ENUM_) GP_NVML_PAIR__END };
#undef GP_NVML_ENUM_

typedef struct gp_wire_hdr {
    uint16_t version, op;
    uint32_t flags, seq, status, length;
} gp_wire_hdr;

/* Header <-> 24 bytes. gp_wire_hdr_decode checks magic, version and length (<= GP_WIRE_MAX_PAYLOAD) and says
 * what is wrong in why (static text). */
void gp_wire_hdr_encode(const gp_wire_hdr *h, uint8_t out[GP_WIRE_HEADER]);
int gp_wire_hdr_decode(const uint8_t in[GP_WIRE_HEADER], gp_wire_hdr *h, const char **why);
const char *gp_wire_op_name(unsigned op);

/* A growing payload. On allocation failure it stops growing and ok goes false. */
typedef struct gp_wbuf {
    uint8_t *p;
    size_t len, cap;
    bool ok;
} gp_wbuf;
void gp_wbuf_init(gp_wbuf *w);
void gp_wbuf_free(gp_wbuf *w);
void gp_wbuf_reset(gp_wbuf *w); /* empty again, keeping the memory */
void gp_w_u32(gp_wbuf *w, uint32_t v);
void gp_w_u64(gp_wbuf *w, uint64_t v);
void gp_w_i64(gp_wbuf *w, int64_t v);
void gp_w_f32(gp_wbuf *w, float v);
void gp_w_blob(gp_wbuf *w, const void *p, size_t n);
void gp_w_str(gp_wbuf *w, const char *s);
/* Room for n bytes at the end (e.g. to read into); NULL when it cannot grow. */
uint8_t *gp_w_reserve(gp_wbuf *w, size_t n);

/* A payload being read. Reading past the end, or a blob longer than what is left, sets ok false and yields
 * zeros; check ok (and gp_r_done) once at the end. */
typedef struct gp_rbuf {
    const uint8_t *p;
    size_t left;
    bool ok;
} gp_rbuf;
void gp_rbuf_init(gp_rbuf *r, const void *p, size_t n);
uint32_t gp_r_u32(gp_rbuf *r);
uint64_t gp_r_u64(gp_rbuf *r);
int64_t gp_r_i64(gp_rbuf *r);
float gp_r_f32(gp_rbuf *r);
/* A blob in place (not copied): *n its length; NULL with *n 0 when it does not fit. */
const void *gp_r_blob(gp_rbuf *r, size_t *n);
/* A str copied into out (NUL-terminated); false (and ok false) when longer than cap-1 or GP_WIRE_MAX_STR or
 * when it holds a NUL. */
bool gp_r_str(gp_rbuf *r, char *out, size_t cap);
/* Everything read, nothing left over, nothing overrun. */
bool gp_r_done(const gp_rbuf *r);

/* Blocking I/O of whole frames on a socket. gp_wire_send writes the header and payload (payload may be NULL
 * when length is 0) in one writev, retrying on EINTR and short writes. gp_wire_recv reads a header and its
 * payload into *payload (grown as needed; the caller frees it). Both return 0, or -1 with errno set
 * (ECONNRESET at end of stream, EPROTO for a bad header, with *why set). */
int gp_wire_send(int fd, const gp_wire_hdr *h, const void *payload);
int gp_wire_send2(int fd, const gp_wire_hdr *h, const void *a, size_t na, const void *b, size_t nb);
int gp_wire_recv(int fd, gp_wire_hdr *h, gp_wbuf *payload, const char **why);
/* The loops under them, for a reader or writer of its own: all n bytes, retrying on EINTR and short transfers
 * (reads with MSG_WAITALL; writes with MSG_NOSIGNAL). 0, or -1 with errno (ECONNRESET at end of stream). */
int gp_wire_read_all(int fd, void *buf, size_t n);
int gp_wire_write_all(int fd, const void *p, size_t n);
/* The same in two steps, for a reader that picks where a payload goes once it has seen the header:
 * gp_wire_recv_hdr reads and checks the header; gp_wire_recv_body reads its h->length payload bytes into out.
 */
int gp_wire_recv_hdr(int fd, gp_wire_hdr *h, const char **why);
int gp_wire_recv_body(int fd, const gp_wire_hdr *h, void *out, const char **why);

/* Addresses: "unix:/path", "tcp:HOST:PORT" (also "HOST:PORT") or "tls:HOST:PORT" (TCP under TLS: tls.h).
 * gp_wire_listen returns a listening socket (TCP and TLS alike: SO_REUSEADDR; port 0 picks one, *port_out
 * says which; the caller does the TLS handshakes); gp_wire_connect a connected one (TCP_NODELAY), giving up
 * after timeout_ms; for tls: it also makes the handshake, trusting the certificates of GPUPOOL_REMOTE_CA (a
 * PEM file; unset: the system's), and returns the plain end of the TLS pump (tls.h). -1 with the reason in
 * err (a sentence) on failure. gp_wire_keepalive makes a TCP socket notice a vanished peer: keepalive probes
 * after idle_s of silence, the connection failing when 3 go unanswered, and (user_timeout_ms > 0) when sent
 * data stays unacknowledged that long. The client's connections use GP_WIRE_CLIENT_KEEPALIVE. */
int gp_wire_listen(const char *addr, int *port_out, char *err, size_t errlen);
int gp_wire_connect(const char *addr, int timeout_ms, char *err, size_t errlen);
#define GP_WIRE_CLIENT_KEEPALIVE 2, 5000 /* idle_s, user_timeout_ms: a dead worker is an error in ~5 s */
void gp_wire_keepalive(int fd, int idle_s, unsigned user_timeout_ms);

#endif
