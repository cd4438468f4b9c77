#!/usr/bin/env bash
# The GPU check of issue #25, in one call of at most 8 minutes on one GPU (docs/benchmarks.md,
# "The GPU check"): the tests marked `cuda`, then at 772x1032 training images/s end to end and
# model only at batch 64 and 128 with 8 loader workers, cache none and ram, compile off and on,
# and inference of the .pth and the .onnx. One Markdown table goes to $OUT/gpu_check.md (and
# to stdout), every step's output to $OUT/gpu_check.log.
#
#   bash benchmarks/gpu_check.sh                # on the GPU machine, from the repository root
#   bash benchmarks/gpu_check.sh --dry-run      # the same steps, tiny, on the CPU (a test runs it)
#   bash benchmarks/gpu_check.sh --fetch-wheels # where pip reaches PyPI: what the GPU machine
#                                               # lacks, into .whl/ (carry it with the call)
#
# Each step runs under `timeout` within what is left of the budget; a step that fails or runs
# out of time keeps its rows in the table, with the reason, and the next step runs.
set -euo pipefail

mode=gpu
case "${1:-}" in
    "") ;;
    --dry-run) mode=dry ;;
    --fetch-wheels) mode=wheels ;;
    *)
        echo "usage: bash benchmarks/gpu_check.sh [--dry-run | --fetch-wheels]" >&2
        exit 2
        ;;
esac
PYTHON=${PYTHON:-python3}
# yogo's needs that the GPU machine's image lacks (its package list: docs/benchmarks.md);
# both are pure Python. wandb, zarr and openvino are not needed here.
WHEELS=(ruamel.yaml onnxslim)

if [[ $mode == wheels ]]; then
    specs=()
    for name in "${WHEELS[@]}"; do  # the versions this checkout's environment runs
        version=$("$PYTHON" -c 'import importlib.metadata as m, sys; print(m.version(sys.argv[1]))' "$name")
        specs+=("$name==$version")
    done
    "$PYTHON" -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux2014_x86_64 -d .whl "${specs[@]}"
    echo "wheels in .whl/: carry them, run(command='bash benchmarks/gpu_check.sh', carry=['.whl'], timeout_s=510)"
    exit 0
fi

: "${OUT:?set OUT to the folder the table goes to}"
mkdir -p "$OUT"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir "$work/logs"
: >"$work/steps.tsv"
: >"$OUT/gpu_check.log"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 WANDB_MODE=disabled

if [[ $mode == gpu ]]; then
    budget=480   # seconds for everything, the install included
    hw=(772 1032) parts=16 per_part=64 batches=(64 128) workers=8 epochs=3 alone=5
    device=cuda infer=(--frames 64 --batch-size 16 --rounds 2)
    if compgen -G ".whl/*.whl" >/dev/null; then
        "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
            --upgrade --target "$work/site" .whl/*.whl
        export PYTHONPATH="$PYTHONPATH:$work/site"
    fi
else  # the same steps, tiny, on the CPU
    budget=1200
    hw=(96 128) parts=2 per_part=8 batches=(4 8) workers=2 epochs=2 alone=0.5
    device=cpu infer=(--frames 2 --batch-size 2 --rounds 1)
fi

missing=$("$PYTHON" -c '
import importlib.util as u
names = ["torch", "torchvision", "ruamel.yaml", "onnxslim", "onnx", "onnxruntime", "typer", "PIL", "pytest"]
print(" ".join(n for n in names if u.find_spec(n) is None))' 2>&1 || true)
if [[ -n $missing ]]; then
    echo "error: $PYTHON cannot import: $missing" >&2
    echo "  fix: run \`bash benchmarks/gpu_check.sh --fetch-wheels\` where pip reaches PyPI and" \
        "carry .whl with the call (run(..., carry=['.whl']))" >&2
    exit 2
fi
if ! cli=$("$PYTHON" -m yogo --help 2>&1); then  # yogo's CLI on that machine's packages
    echo "error: \`$PYTHON -m yogo --help\` fails with this environment's packages:" >&2
    echo "$cli" | tail -5 >&2
    exit 2
fi
if [[ $mode == gpu ]] && ! "$PYTHON" -c 'import torch, sys; sys.exit(not torch.cuda.is_available())'; then
    echo "error: torch sees no CUDA GPU here" >&2
    echo "  fix: run it on the GPU machine, or \`bash benchmarks/gpu_check.sh --dry-run\` on a CPU" >&2
    exit 2
fi
"$PYTHON" -c '
import os, platform, torch, onnxruntime
gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
providers = ", ".join(onnxruntime.get_available_providers())
print(f"Machine: {gpu}, {os.cpu_count()} CPU cores ({platform.machine()}), torch {torch.__version__}, "
      f"onnxruntime {onnxruntime.__version__} ({providers}).")
' >"$work/machine.txt"

start=0      # bash counts SECONDS from the script's start: the install and checks count too
reserve=15  # kept back for the table
# step NAME CAP COMMAND...: run COMMAND for at most CAP seconds and at most what the budget
# has left; its status in steps.tsv (gpu_table.py names the rows by NAME), its output logged.
step() {
    local name=$1 cap=$2
    shift 2
    local left=$((budget - (SECONDS - start) - reserve)) log
    log="$work/logs/$(wc -l <"$work/steps.tsv").log"
    local status=ok began=$SECONDS rc=0
    if ((left < 20)); then
        status=skipped
    else
        timeout --kill-after=10 $((cap < left ? cap : left)) "$@" >"$log" 2>&1 || rc=$?
        if ((rc == 124 || rc == 137)); then status="timed out"; elif ((rc)); then status="exit $rc"; fi
    fi
    printf '%s\t%s\t%s\t%s\n' "$name" "$status" $((SECONDS - began)) "$log" >>"$work/steps.tsv"
    {
        echo "===== $name: $status after $((SECONDS - began)) s: $*"
        [[ -f $log ]] && cat "$log"
    } >>"$OUT/gpu_check.log"
    echo "$name: $status ($((SECONDS - began)) s; $((SECONDS - start)) s of $budget)"
}

step tests 150 "$PYTHON" -m pytest -m cuda -q -rs -p no:cacheprovider --continue-on-collection-errors tests

# Training frames: parts written side by side (one process each), one dataset definition.
data="$work/data"
mkdir -p "$data"
{
    echo 'class_names: ["healthy", "ring", "trophozoite"]'
    echo 'dataset_split_fractions: {train: 0.9, val: 0.1}'
    echo 'dataset_paths:'
    for ((k = 0; k < parts; k++)); do
        printf '  part%d:\n    image_path: part%d/images\n    label_path: part%d/labels\n' "$k" "$k" "$k"
    done
} >"$data/ddf.yml"
step data 90 bash -c 'seq 0 $(($1 - 1)) | xargs -P "$1" -I{} "$2" -m yogo synth "$3/part{}" \
    --num-images "$4" --image-hw "$5" "$6" --seed {} --split-fractions 1 0 0' \
    synth "$parts" "$PYTHON" "$data" "$per_part" "${hw[@]}"

# bench_train.py: `yogo train` end to end (its flags passed on), then model-only steps.
train() {  # BATCH CACHE COMPILE(on|off) MODEL_ONLY_SECONDS CAP
    local flags=(--device "$device" --num-workers "$workers" --cache "$2") name="train:$1:$2:$3:$device"
    [[ $3 == on ]] && flags+=(--compile)
    [[ $4 != 0 ]] && name+=":model"
    step "$name" "$5" "$PYTHON" benchmarks/bench_train.py "$data/ddf.yml" --batch-size "$1" \
        --epochs "$epochs" --seconds "$4" "${flags[@]}"
}
for batch in "${batches[@]}"; do train "$batch" none off "$alone" 75; done
for batch in "${batches[@]}"; do train "$batch" ram off 0 60; done

# infer_speed.py: the .pth through PyTorch and the .onnx through onnxruntime, on the GPU; the
# .onnx on the CPU when this onnxruntime has no CUDA provider (`yogo infer --device cuda`
# refuses it then: tests/test_infer.py).
onnx_device=$device
if [[ $device == cuda ]] && ! "$PYTHON" -c 'import onnxruntime as o, sys; sys.exit("CUDAExecutionProvider" not in o.get_available_providers())'; then
    onnx_device=cpu
fi
if [[ $onnx_device == "$device" ]]; then
    step "infer:$device:PyTorch fp32,onnxruntime fp32" 120 "$PYTHON" benchmarks/infer_speed.py \
        --device "$device" --formats "PyTorch fp32,onnxruntime fp32" "${infer[@]}"
else
    step "infer:$device:PyTorch fp32" 70 "$PYTHON" benchmarks/infer_speed.py \
        --device "$device" --formats "PyTorch fp32" "${infer[@]}"
    step "infer:$onnx_device:onnxruntime fp32" 70 "$PYTHON" benchmarks/infer_speed.py \
        --device "$onnx_device" --formats "onnxruntime fp32" "${infer[@]}"
fi

# Last, as the least predictable in time (compiling the training step, then the model-only
# one): it gets what is left.
train "${batches[-1]}" ram on "$alone" 200

"$PYTHON" benchmarks/gpu_table.py "$work" >"$OUT/gpu_check.md"
echo
cat "$OUT/gpu_check.md"
