# Sourced by the lent-GPU scripts (bench/*_device.sh) from the repository root, with W set to the work folder:
# installs planner's dependencies from .whl/ where the machine lacks them, defines `planner`, and records the
# machine in $W/out/machine.txt.
mkdir -p "$W/out"
REPO=$PWD
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$REPO
fi
export PYTHONUNBUFFERED=1
planner() { python3 -m planner.cli "$@"; }
{ nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,clocks.max.mem,power.limit --format=csv
  nproc; free -g | head -2; df -h "$W" | tail -1; } > "$W/out/machine.txt" 2>&1
