#!/usr/bin/env bash
# Developer tool: torchrun on the lent multi-GPU machines, with NVLink SHARP / multicast off (those paths hang or
# fail on their partitioned GPUs). The library itself leaves the environment as it finds it.
#
#   tools/torchrun.sh --nproc_per_node=8 -m meta_learning.train --preset small ...
set -euo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
exec "${PY:-python}" -m torch.distributed.run "$@"
