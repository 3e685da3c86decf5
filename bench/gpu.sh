#!/usr/bin/env bash
# The GPU checks of issue 13 in one go, on a machine with a CUDA device; the steps' limits add up to
# 550 s, so that it fits one 10-minute command:
#   1. the tests marked cuda (host synchronisations per epoch, --compile against eager, the gathered decode);
#   2. bench/epoch_time.py on cuda, eager and compiled (seconds per epoch against the FLOP bound);
#   3. a full 50-epoch `dvae train --method dtp --device cuda`, timed end to end, eager and --compile;
#   4. several runs as one batched computation: bench/multirun.py (3 seeds together against 1 alone,
#      per epoch, eager) and `dvae train --seeds 0,1,2 --device cuda --compile` (CUDA graphs) for 5 epochs,
#      timed end to end and per epoch (its metrics.jsonl);
#   5. bench/eval_time.py on cuda (`dvae eval --iw 100` on the 10k validation images);
#   6. only when REINMAX_DIR names a copy of LiyuanLucasLiu/ReinMax (commit 2367056; torchvision needed):
#      bench/reference_side_by_side.py --device cuda, reinmax 10x30, 5 epochs, seeds 0,1,2, dvae's
#      `train --preset reinmax` beside the reference run for run (docs/BENCHMARK.md). Its limit (240 s)
#      takes the total past one 10-minute command: `bash bench/gpu.sh reference` runs it alone.
#   With FULL_SUITE=1, also issue 20's full benchmark suite (hours): dvae reproduce --suite reinmax.
#
#   DVAE_DATA_DIR=/path/to/mnist bash bench/gpu.sh          # from the repository root
#   DVAE_DATA_DIR=/path/to/mnist REINMAX_DIR=/path/to/ReinMax bash bench/gpu.sh reference
#
# MNIST must be on the machine (no download there): DVAE_DATA_DIR names the folder of the four files.
# Without a package install, dvae runs from this checkout (PYTHONPATH) with PYTHON (default python3).
# Everything printed goes to stdout and to $OUT/gpu.log ($OUT defaults to bench-gpu-<time>/); each step
# has its own time limit, so one that hangs costs its limit, not the rest.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-bench-gpu-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$out"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
work=$(mktemp -d)
: "${DVAE_DATA_DIR:?set DVAE_DATA_DIR to the folder of the four MNIST files}"
export DVAE_DATA_DIR

step() {  # step SECONDS TITLE COMMAND...: run one check under its time limit, print its wall time
    local limit=$1 title=$2 start=$SECONDS
    shift 2
    echo "=== $title ($(date -u +%H:%M:%S) UTC, limit ${limit}s)"
    timeout "$limit" "$@"
    echo "=== $title: exit $?, $((SECONDS - start)) s wall"
}

{
echo "=== machine"
nvidia-smi -L || true
$py -c "import torch, platform; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(), 'python', platform.python_version())"
git log -1 --format='commit %H %s' 2>/dev/null || true

if [ "${1:-}" != reference ]; then
step 100 "tests marked cuda" $py -m pytest -q -m cuda tests/
step 60 "epoch_time cuda eager" $py bench/epoch_time.py --device cuda --methods dtp,gumbel --repeats 2 --no-textbook
step 70 "epoch_time cuda --compile" $py bench/epoch_time.py --device cuda --methods dtp,gumbel --repeats 2 \
    --no-textbook --compile
step 90 "dvae train --method dtp --device cuda, 50 epochs" \
    $py -m dvae_cli train --method dtp --device cuda --out "$work/dtp" -q --json
cp "$work/dtp/metrics.jsonl" "$out/dtp-metrics.jsonl" 2>/dev/null
step 70 "dvae train --method dtp --device cuda --compile, 50 epochs" \
    $py -m dvae_cli train --method dtp --device cuda --compile --out "$work/dtp-compiled" -q --json
cp "$work/dtp-compiled/metrics.jsonl" "$out/dtp-compiled-metrics.jsonl" 2>/dev/null

step 60 "multirun cuda: 3 seeds together against 1 alone" $py bench/multirun.py --device cuda --seeds 3 \
    --methods dtp,gumbel --repeats 2
step 70 "dvae train --method dtp --seeds 0,1,2 --device cuda --compile, 5 epochs" \
    $py -m dvae_cli train --method dtp --seeds 0,1,2 --epochs 5 --device cuda --compile --out "$work/seeds" -q --json
cp "$work/seeds/seed-0/metrics.jsonl" "$out/seeds-compiled-metrics.jsonl" 2>/dev/null
step 30 "eval_time cuda: dvae eval --iw 100 on 10k images" $py bench/eval_time.py --device cuda --repeats 2
fi
if [ -n "${REINMAX_DIR:-}" ]; then
step 240 "reference side by side on cuda: reinmax 10x30, 5 epochs, seeds 0,1,2" \
    $py bench/reference_side_by_side.py --reference "$REINMAX_DIR" --data-dir "$DVAE_DATA_DIR" --device cuda \
    --method reinmax --classes 10 --latent-vars 30 --epochs 5 --seeds 0,1,2 --json "$out/reference-side-by-side.json"
elif [ "${1:-}" = reference ]; then
    echo "=== reference side by side: set REINMAX_DIR to a copy of LiyuanLucasLiu/ReinMax"
fi

# Issue 20/24 (the GST/ReinMax MNIST-VAE benchmark; docs/BENCHMARK.md): hours, not minutes, so only with
# FULL_SUITE=1 (a machine of one's own, no 10-minute limit). All six shapes, every estimator of the suite,
# 10 seeds, 160 epochs, as the reference reports, spread over every visible GPU by the local runner
# (RUNS_PER_GPU runs packed on each, default 4; each run a worker process seeing one GPU). Expected wall
# time: unmeasured on a GPU (the CPU's --dry-run estimate is in docs/RESULTS.md). A rerun of the same
# command skips finished runs and resumes partial ones. With RAY_ADDRESS set (a Ray cluster whose nodes
# all see $out on a shared file system), the same suite goes to the cluster instead, each run a task with
# 1/RUNS_PER_GPU of a GPU.
if [ "${FULL_SUITE:-0}" = 1 ]; then
    runs_per_gpu="${RUNS_PER_GPU:-4}"
    step 20 "dvae reproduce --suite reinmax --dry-run (the plan and its measured estimate on this machine)" \
        $py -m dvae_cli reproduce --suite reinmax --seeds 0,1,2,3,4,5,6,7,8,9 --workers 1 --runs-per-gpu "$runs_per_gpu" \
        --device cuda --out "$out/suite-reinmax" --dry-run
    if [ -n "${RAY_ADDRESS:-}" ]; then
        step 86400 "dvae reproduce --suite reinmax on the Ray cluster at \$RAY_ADDRESS, 10 seeds, 160 epochs" \
            $py -m dvae_cli reproduce --suite reinmax --seeds 0,1,2,3,4,5,6,7,8,9 --ray env \
            --runs-per-gpu "$runs_per_gpu" --device cuda --out "$out/suite-reinmax" --json
    else
        step 86400 "dvae reproduce --suite reinmax over every visible GPU, 10 seeds, 160 epochs" \
            $py -m dvae_cli reproduce --suite reinmax --seeds 0,1,2,3,4,5,6,7,8,9 --workers 1 \
            --runs-per-gpu "$runs_per_gpu" --device cuda --out "$out/suite-reinmax" --json
    fi
    step 7200 "the new estimators on the thesis's protocol: dvae reproduce --methods gumbel-rao,gst, 3 seeds" \
        $py -m dvae_cli reproduce --methods gumbel-rao,gst --extra-seeds 0,1,2 --parallel 3 --device cuda \
        --out "$out/thesis-new" -q
fi
rm -rf "$work"
} 2>&1 | tee "$out/gpu.log"
