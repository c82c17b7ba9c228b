#!/usr/bin/env bash
# Developer tool: start region-generator training runs on a GPU machine of the `device` tool, in the background.
#
# Run from the repository root there, with `.devdata/prepared/regions` and `.whl` (the omegaconf wheel) carried:
#
#   tools/gpu_region.sh NAME WORKERS [key=value ...]   [NAME WORKERS [key=value ...] ; ...]
#   tools/gpu_region.sh r1 5 loss.adv=0 loss.fm=0
#
# The first call copies the data to /root and each run its own copy of the code (so later calls, which replace the
# working tree, do not disturb running jobs), and installs the carried wheels into /tmp/site. Each run writes /root/runs/NAME and
# logs to /root/NAME.log; `setsid` keeps it alive between calls (until the machine is given back).
set -euo pipefail
name=${1:?usage: tools/gpu_region.sh NAME WORKERS [key=value ...]}
workers=${2:?workers}
shift 2
if [ ! -d /tmp/site ]; then
  python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
fi
if [ ! -d /root/devdata/prepared/regions ]; then
  mkdir -p /root/devdata/prepared && cp -r .devdata/prepared/regions /root/devdata/prepared/
fi
rm -rf /root/code-"$name" && cp -r "$PWD" /root/code-"$name"  # each run keeps the code it started with
cd /root
PYTHONPATH=/tmp/site:/root/code-"$name" PYTHONUNBUFFERED=1 setsid nohup python3 -m meta_learning.region_train \
  data.root=/root/devdata/prepared train.out_dir=/root/runs/"$name" data.num_workers="$workers" \
  train.shard_mb=15 "$@" > /root/"$name".log 2>&1 < /dev/null &
echo "started $name (pid $!)"
