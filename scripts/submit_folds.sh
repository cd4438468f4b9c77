#!/bin/bash
# K-fold cross-validation by specimen: one array task per fold, each on 1 GPU.
#
#   sbatch scripts/submit_folds.sh yogo train ddf.yml --folds 5 --epochs 16
#   yogo test --folds trained_models/folds-<array job id>-fold*
#
# The command must give --folds K; the script adds --fold $SLURM_ARRAY_TASK_ID and the run name
# folds-<array job id>-fold<I>. The array is 0-4 (K = 5); for another K give --array=0-(K-1)
# on the sbatch line (and --array=3 reruns fold 3 alone). Each task is submit_1gpu.sh's job:
# preemption, the time limit and requeues are handled the same way (docs/cluster.md).
#SBATCH --job-name=yogo-folds
#SBATCH --array=0-4
#SBATCH --nodes=1
#SBATCH --gpus-per-node=1
#SBATCH --cpus-per-gpu=8
#SBATCH --output=yogo-%A_%a.out
#SBATCH --open-mode=append
#SBATCH --requeue
#SBATCH --signal=USR1@180
set -u
if [ -z "${SLURM_ARRAY_TASK_ID:-}" ]; then
  # Run with plain bash (or as a job that is not an array) there is no fold to train.
  echo "error: $0 is a SLURM array batch script (one task per fold); submit it with" >&2
  echo "  sbatch scripts/submit_folds.sh yogo train DDF --folds 5 [flags...]" >&2
  echo "(without SLURM, run each fold: yogo train DDF --folds 5 --fold I, for I = 0..4)" >&2
  exit 2
fi
if [ "$#" -eq 0 ]; then
  echo "usage: sbatch $0 yogo train DDF --folds K [flags...]" >&2
  exit 2
fi
fold=${SLURM_ARRAY_TASK_ID}
set -- "$@" --fold "${fold}" --name "folds-${SLURM_ARRAY_JOB_ID}-fold${fold}"
gpus=${SLURM_GPUS_ON_NODE:-1}
echo "$(date -Is) job ${SLURM_JOB_ID} (restart ${SLURM_RESTART_COUNT:-0}) on ${SLURM_JOB_NODELIST}:" \
  "${SLURM_JOB_NUM_NODES} node(s) x ${gpus} GPU(s): $*"
# For this job only (never `wandb offline`, which changes the user's settings): compute nodes
# are often offline; `wandb sync` uploads the run folder later. WANDB_MODE=online overrides.
export WANDB_MODE=${WANDB_MODE:-offline}
cpus=$(( SLURM_CPUS_ON_NODE / gpus ))
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$cpus}
# SIGUSR1 (--signal above, or `scancel --signal=USR1`) goes to the srun tasks: yogo saves
# last.pth at the next step and requeues the job itself. On preemption the tasks get SIGTERM,
# save and exit 143; the job is requeued here, because a job that ends by itself is not.
srun --nodes="${SLURM_JOB_NUM_NODES}" --ntasks-per-node="${gpus}" \
  --cpus-per-task="${cpus}" --kill-on-bad-exit=1 "$@"
status=$?
if [ "$status" -eq 143 ]; then
  echo "$(date -Is) stopped by SIGTERM (preemption): requeueing job ${SLURM_JOB_ID}"
  scontrol requeue "${SLURM_JOB_ID}"
fi
exit "$status"
