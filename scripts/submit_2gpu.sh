#!/bin/bash
# yogo training on 2 GPUs of one node (DDP).
#
#   sbatch scripts/submit_2gpu.sh yogo train ddf.yml --epochs 16
#
# Everything after the script name is the command, as with YOGO's scripts. One task per GPU
# through srun (yogo reads SLURM_PROCID/SLURM_LOCALID/SLURM_NTASKS). Preemption, the time limit
# and requeues are handled: the job ends with the model an uninterrupted run would have given.
# Override any #SBATCH line on the sbatch command line (e.g. --partition, --time, --account);
# the task count follows the GPUs actually allocated. docs/cluster.md explains each line.
#SBATCH --job-name=yogo
#SBATCH --nodes=1
#SBATCH --gpus-per-node=2
#SBATCH --cpus-per-gpu=8
#SBATCH --output=yogo-%j.out
#SBATCH --open-mode=append
#SBATCH --requeue
#SBATCH --signal=USR1@180
set -u
if [ -z "${SLURM_JOB_ID:-}" ]; then
  # Run with plain bash there is no allocation: every SLURM_* value below would be missing.
  echo "error: $0 is a SLURM batch script; submit it with" >&2
  echo "  sbatch $0 yogo train DDF [flags...]" >&2
  echo "(without SLURM, run the command itself: yogo train DDF [flags...])" >&2
  exit 2
fi
if [ "$#" -eq 0 ]; then
  echo "usage: sbatch $0 yogo train DDF [flags...]" >&2
  exit 2
fi
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
