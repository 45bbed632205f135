#!/bin/bash
# One machine of a multi-node run, started on every node by scripts/slurm/launch.slurm (`srun`, one task per node):
#   bash scripts/slurm/launch_node.sh ACCELERATE_LAUNCH_ARGS...
# runs `accelerate launch --machine_rank $SLURM_NODEID ACCELERATE_LAUNCH_ARGS...` and exits with its status,
# except after a SIGTERM: then the launcher's failure is reported as 143, the preemption status.
#
# Why: on SIGTERM the ranks save a checkpoint and exit 143 (alignment/preemption.py), but `accelerate launch`
# (torchelastic's agent, which gets the SIGTERM too, forwards it and waits for the ranks) then re-raises the signal
# as an error and exits 1, the status of a crash. Slurm signals every process of the step, this shell included, so
# the trap below sees the same SIGTERM; it only records it. Forwarding it would signal the agent a second time
# while it waits for the ranks to save, which aborts that wait.
# machine_rank is SLURM_NODEID: with one task per node it numbers the nodes 0..N-1 in the order of the job's node
# list, whose first node is the main_process_ip that launch.slurm passes.
set -u

signalled=""
trap 'signalled=1' TERM

accelerate launch --machine_rank "${SLURM_NODEID:?not started by srun}" "$@" &
launcher=$!
# `wait` returns early (status > 128) when the trap runs: wait again until the launcher itself has exited.
while true; do
    wait "$launcher"
    status=$?
    kill -0 "$launcher" 2>/dev/null || break
done

if [[ $status -ne 0 && -n $signalled ]]; then
    echo "launch_node.sh: node $SLURM_NODEID got SIGTERM and its launcher exited $status: exiting 143 (preempted)" >&2
    exit 143
fi
exit "$status"
