#!/usr/bin/env python3
"""Regenerates two fact tables of the CUDA driver ABI from an installed CUDA toolkit:

  data/cuda-exports.txt   every function NVIDIA's libcuda.so.1 exports (from the toolkit's link stub)
  src/sim/procaddr.inc    for cuGetProcAddress: (base name, CUDA version it appeared in, exported symbol,
                          stream variant), derived from the PFN_<name>_v<version>[_ptds|_ptsz] typedefs
                          of cudaTypedefs.h and cudaProfilerTypedefs.h; the n-th version of a name is exported as name, name_v2, ...

Run by hand when a new CUDA version adds symbols:  tools/gen_cuda_tables.py /usr/local/cuda
The build never runs it; the generated files are committed.
"""
import re
import subprocess
import sys
from collections import defaultdict

cuda = sys.argv[1] if len(sys.argv) > 1 else "/usr/local/cuda"
out_root = sys.argv[2] if len(sys.argv) > 2 else "."

nm = subprocess.run(["nm", "-D", "--defined-only", f"{cuda}/lib64/stubs/libcuda.so"],
                    check=True, capture_output=True, text=True).stdout
exports = sorted({l.split()[-1] for l in nm.splitlines() if " T " in l})
with open(f"{cuda}/include/cuda.h") as f:
    m = re.search(r"#define CUDA_VERSION (\d+)", f.read())
cuda_version = m.group(1)

typedefs = "".join(open(f"{cuda}/include/{h}").read() for h in ("cudaTypedefs.h", "cudaProfilerTypedefs.h"))
pat = re.compile(r"typedef\s+CUresult\s*\(CUDAAPI\s*\*PFN_(\w+?)_v(\d+)(_ptds|_ptsz)?\)")
versions = defaultdict(set)      # name -> {default versions}
variants = defaultdict(set)      # name -> {(version, suffix)}
for name, ver, suffix in pat.findall(typedefs):
    if suffix:
        variants[name].add((int(ver), suffix))
    else:
        versions[name].add(int(ver))

rows, problems = [], []
export_set = set(exports)
for name in sorted(versions):
    ordered = sorted(versions[name])
    symbol_of = {}
    for i, ver in enumerate(ordered):
        sym = name if i == 0 else f"{name}_v{i + 1}"
        symbol_of[ver] = sym
        rows.append((name, ver, sym, "GP_PROC_DEFAULT"))
    for ver, suffix in sorted(variants.get(name, ())):
        base = [v for v in ordered if v <= ver] or ordered[:1]
        sym = symbol_of[base[-1]] + suffix
        rows.append((name, ver, sym, "GP_PROC_PTDS"))
for name in sorted(set(variants) - set(versions)):
    problems.append(f"{name}: per-thread variant without a default version")

kept = []
for r in rows:
    if r[2] in export_set:
        kept.append(r)
    else:
        problems.append(f"{r[0]} v{r[1]} -> {r[2]}: not exported by the stub (left out)")

with open(f"{out_root}/data/cuda-exports.txt", "w") as f:
    f.write(f"# Functions exported by NVIDIA's libcuda.so.1 (CUDA {cuda_version}), one per line.\n")
    f.write("# Source: nm -D of the toolkit's lib64/stubs/libcuda.so; regenerate with tools/gen_cuda_tables.py.\n")
    for e in exports:
        f.write(e + "\n")

with open(f"{out_root}/src/sim/procaddr.inc", "w") as f:
    f.write(f"/* cuGetProcAddress table (CUDA {cuda_version}): GP_PROC(name, since_version, symbol, variant).\n")
    f.write(" * Generated from cudaTypedefs.h by tools/gen_cuda_tables.py; do not edit by hand.\n")
    f.write(" * Rows of one name are in ascending version order; GP_PROC_PTDS rows are the per-thread\n")
    f.write(" * default-stream variants. */\n")
    for name, ver, sym, kind in kept:
        f.write(f'GP_PROC("{name}", {ver}, "{sym}", {kind})\n')

for p in problems:
    print("note:", p, file=sys.stderr)
print(f"{len(exports)} exports, {len(kept)} proc-address rows", file=sys.stderr)
