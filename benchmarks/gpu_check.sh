#!/usr/bin/env bash
# The GPU checks in one call (run on a machine with one CUDA GPU, from the repo root):
# throughput and MFU of the 124M model in bf16, then a torchrun/NCCL DDP run of the
# trainer on token shards written here, resumed once. Results land in $OUT (or /tmp).
set -euo pipefail
export PYTHONUNBUFFERED=1
out=${OUT:-/tmp/gpu-check}
mkdir -p "$out"
nvidia-smi -L
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
for batch in 16 32; do
  python3 benchmarks/train.py --model 124M --batch-size "$batch" --block-size 1024 \
    --steps 40 --compile --dtype bf16 | tee -a "$out/train-benchmark.jsonl"
done
# Token shards of random ids (the trainer's input format), then DDP over NCCL.
python3 - "$out/shards" <<'PY'
import sys, numpy as np
from pathlib import Path
from training.token_shards import FORMAT_VERSION, HEADER, MAGIC
root = Path(sys.argv[1])
for split, count in (("train", 2_000_000), ("val", 200_000)):
    folder = root / "tokens" / split
    folder.mkdir(parents=True, exist_ok=True)
    ids = np.random.default_rng(0).integers(0, 50_257, count, dtype=np.uint16)
    (folder / "part-00000.bin").write_bytes(HEADER.pack(MAGIC, FORMAT_VERSION, 50_257, count) + ids.tobytes())
PY
train() {
  python3 -m torch.distributed.run --standalone --nproc_per_node 1 -m training.train \
    --tokens "$out/shards" --model 124M --batch-size 16 --grad-accum 2 --block-size 1024 \
    --out "$out/run" --eval-interval 10 --eval-steps 2 --checkpoint-interval 10 \
    --warmup-steps 5 --device cuda --dtype bf16 "$@"
}
train --max-steps 10
train --max-steps 20  # resumes from the step-10 checkpoint
tail -n 5 "$out/run/metrics.jsonl"
