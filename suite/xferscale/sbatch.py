"""Render a ready-to-submit sbatch script that runs one xferscale command in the container.

The per-node layout, launcher options and environment come from a :class:`~xferscale.cluster.Site`
(the same settings the ReFrame site config uses). The script requeues itself when SLURM
announces the end of its time slot, and the trainer resumes from its checkpoint:

1. ``#SBATCH --signal=B:USR1@<lead>`` sends SIGUSR1 to the batch shell ``lead`` seconds before
   the time limit; pre-emption and ``scancel`` send SIGTERM.
2. The shell's trap forwards SIGUSR1 to ``srun``, which passes it to every task; the trainer
   writes ``<output_dir>/checkpoint.pt`` (a transfer grid, each unfinished run's state) and
   exits 0. Tasks start with SIGUSR1 ignored (:func:`xferscale.cluster.pass_env_wrapper`)
   and the shell repeats the signal every 5 s until the step ends, so a signal that comes
   while the ranks are still starting is neither fatal nor lost.
3. The shell then runs ``scontrol requeue $SLURM_JOB_ID`` (the job keeps its id, and
   ``--open-mode=append`` keeps the log of every attempt in one file). The next attempt
   runs the same command: ``pretrain --resume`` picks the checkpoint up; ``transfer`` skips
   the finished runs and resumes the unfinished ones by itself.

The container runs with ``--cleanenv``; each task passes its launch variables in
(:func:`xferscale.cluster.pass_env_wrapper`).

``SLURM_RESTART_COUNT`` caps the number of requeues, so a job that cannot make progress
does not cycle forever.
"""
from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field

from xferscale import __version__
from xferscale.cluster import Site, SiteError, pass_env_wrapper, slurm_seconds

# Commands whose job can be requeued, and the flag that makes a restarted run resume (None:
# the command resumes by itself).
RESUME_FLAGS: dict[str, str | None] = {"pretrain": "--resume", "transfer": None}
COMMANDS = ("pretrain", "transfer", "bench")
# slurmctld checks --signal timers periodically and may send the signal this much earlier
# than asked (sbatch(1), --signal; seen on the CI cluster: a 90 s lead on a 2-minute job
# signalled every attempt 7 s in).
SIGNAL_EARLY_S = 60
_SLURM_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")  # account and job names, safe after #SBATCH
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_IMAGE = "\0IMAGE"  # stands for "$IMAGE" in the step until it is quoted


@dataclass(frozen=True)
class JobSpec:
    """One batch job: which xferscale command, where, for how long."""

    command: str
    nodes: int
    partition: str = "booster"
    time: str | None = None  # None: the partition's limit
    account: str | None = None  # None: SBATCH_ACCOUNT (JSC: `jutil env activate -p PROJECT`)
    image: str = "xferscale.sif"
    args: tuple[str, ...] = ()  # passed to `xferscale COMMAND` unchanged
    binds: tuple[str, ...] = ()  # apptainer --bind specs, e.g. /p/scratch
    job_name: str | None = None
    requeue: bool | None = None  # None: requeue when the command can resume
    max_restarts: int = 10
    signal_lead_s: int = 300  # seconds before the limit at which the trainer checkpoints
    log: str = "%x-%j.out"
    extra_env: dict[str, str] = field(default_factory=dict)  # on top of the site's, e.g. NCCL_DEBUG

    @property
    def name(self) -> str:
        return self.job_name or f"xferscale-{self.command}"

    @property
    def requeues(self) -> bool:
        return self.command in RESUME_FLAGS if self.requeue is None else self.requeue


def validate(site: Site, job: JobSpec) -> str:
    """Check the job against the site; return the time limit to request."""
    if job.command not in COMMANDS:
        raise SiteError(f"unknown command {job.command!r}; choose one of: {', '.join(COMMANDS)}")
    partition = site.partition(job.partition)
    time = job.time or partition.max_time
    partition.check(job.nodes, time)
    if job.account is not None and not _SLURM_NAME.match(job.account):
        raise SiteError(f"--account {job.account!r} is not a SLURM account name")
    if not _SLURM_NAME.match(job.name):
        raise SiteError(f"--job-name {job.name!r}: use letters, digits, '_', '.' and '-' only")
    for key in job.extra_env:
        if not _ENV_NAME.match(key):
            raise SiteError(f"--env {key!r} is not an environment variable name")
    if job.requeues and job.command not in RESUME_FLAGS:
        raise SiteError(
            f"`xferscale {job.command}` cannot resume from a checkpoint, so its job cannot be "
            f"requeued; requeue works for: {', '.join(RESUME_FLAGS)}"
        )
    if job.requeues and not 0 < job.signal_lead_s < slurm_seconds(time) - SIGNAL_EARLY_S:
        raise SiteError(
            f"--signal-lead {job.signal_lead_s} s must be above 0 and below the time limit {time} less "
            f"{SIGNAL_EARLY_S} s: SLURM sends the signal up to {SIGNAL_EARLY_S} s before the lead, and a job "
            "signalled as it starts would checkpoint and requeue without making progress"
        )
    if job.max_restarts < 0:
        raise SiteError(f"--max-restarts must be 0 or more, got {job.max_restarts}")
    if not job.image:
        raise SiteError("--image must name the container image (.sif)")
    return time


def command_line(site: Site, job: JobSpec) -> list[list[str]]:
    """The job step as word groups: srun, the task environment, the container, the command."""
    args = list(job.args)
    resume = RESUME_FLAGS.get(job.command)
    if job.requeues and resume and resume not in args:
        args.insert(0, resume)  # before any key=value override, which argparse reads last
    srun = ["srun", *site.launcher_options(), "--kill-on-bad-exit=1"]
    container = ["apptainer", "run", *site.container_options]
    for bind in job.binds:
        container += ["--bind", bind]
    task_env = pass_env_wrapper(site.container_env(tuple(job.extra_env)))
    return [srun, task_env, [*container, _IMAGE], [job.command, *args]]


def _quote_step(groups: list[list[str]]) -> str:
    # The image stays a shell expansion; every other word is quoted literally.
    def word(w: str) -> str:
        return '"$IMAGE"' if w == _IMAGE else shlex.quote(w)

    return " \\\n    ".join(" ".join(word(w) for w in group) for group in groups)


def _header(site: Site, job: JobSpec, time: str) -> list[str]:
    lines = [
        f"#SBATCH --job-name={job.name}",
        f"#SBATCH --partition={job.partition}",
        f"#SBATCH --nodes={job.nodes}",
        *(f"#SBATCH {opt}" for opt in site.job_options()),
        f"#SBATCH --time={time}",
        f"#SBATCH --output={job.log}",
    ]
    if job.account:
        lines.insert(1, f"#SBATCH --account={job.account}")
    if job.requeues:
        lines += [
            "#SBATCH --requeue",
            "#SBATCH --open-mode=append",
            f"#SBATCH --signal=B:USR1@{job.signal_lead_s}",
        ]
    else:
        lines.append("#SBATCH --no-requeue")
    return lines


_RUN_PLAIN = """\
{step}
"""

# The step runs in the background so that the shell can handle signals while it waits;
# `wait` returns early when a trapped signal arrives, hence the loop.
_RUN_REQUEUE = """\
signalled=""
forward() {{
    [[ -n "$signalled" ]] && return
    signalled="$1"
    echo "xferscale job: caught SIG$1, asking every rank to checkpoint and stop"
    # Again every 5 s until the step ends: a rank still starting up ignores USR1 (the task
    # wrapper starts it ignored) and acts on the next one once its handler is in place.
    ( while kill -USR1 "$step_pid" 2>/dev/null; do sleep 5; done ) >/dev/null 2>&1 &
    resender=$!
}}
trap 'forward USR1' USR1
trap 'forward TERM' TERM

{step} &
step_pid=$!
set +e
wait "$step_pid"; status=$?
while kill -0 "$step_pid" 2>/dev/null; do wait "$step_pid"; status=$?; done
[[ -n "${{resender:-}}" ]] && kill "$resender" 2>/dev/null
set -e

if [[ -z "$signalled" ]]; then
    exit "$status"
fi
if (( status != 0 )); then
    echo "xferscale job: the run exited with $status after SIG$signalled; not requeueing" >&2
    exit "$status"
fi
if (( ${{SLURM_RESTART_COUNT:-0}} >= MAX_RESTARTS )); then
    echo "xferscale job: checkpoint written; $MAX_RESTARTS restarts used up, not requeueing" >&2
    exit 1
fi
echo "xferscale job: checkpoint written; requeueing (restart $(( ${{SLURM_RESTART_COUNT:-0}} + 1 )) of $MAX_RESTARTS)"
# A pre-empting scheduler may have requeued the job already.
scontrol requeue "$SLURM_JOB_ID" || true
"""


def render_sbatch(site: Site, job: JobSpec) -> str:
    """The full sbatch script for `job` on `site` (raises SiteError on a bad request)."""
    time = validate(site, job)
    env = {**site.launch_env(), **job.extra_env}
    step = command_line(site, job)
    out = [
        "#!/usr/bin/env bash",
        f"# xferscale {__version__}: `xferscale {job.command}` on {job.nodes} node(s) of "
        f"{site.name}/{job.partition}, {job.nodes * site.tasks_per_node} ranks.",
        "# Submit with: sbatch <this file>",
        *_header(site, job, time),
    ]
    if not job.account:
        out.append("# No --account given: SLURM takes SBATCH_ACCOUNT (JSC: jutil env activate -p PROJECT).")
    out += [
        "",
        "set -euo pipefail",
        "",
        f"IMAGE={shlex.quote(job.image)}",
        'if [[ ! -r "$IMAGE" ]]; then',
        '    echo "xferscale job: container image $IMAGE not found (build it or pass --image)" >&2',
        "    exit 2",
        "fi",
        "",
        f"# Launch settings of {site.name} (xferscale.cluster); apptainer passes them to every rank.",
        *(f"export {key}={shlex.quote(value)}" for key, value in env.items()),
        f"MASTER_ADDR={site.master_addr_shell()}",
        "export MASTER_ADDR",
        "# srun does not inherit --cpus-per-task from sbatch (SLURM >= 22.05).",
        'export SRUN_CPUS_PER_TASK="$SLURM_CPUS_PER_TASK"',
    ]
    if job.requeues:
        out.append(f"MAX_RESTARTS={job.max_restarts}")
    out += [
        "",
        'echo "xferscale job $SLURM_JOB_ID (restart ${SLURM_RESTART_COUNT:-0}):'
        ' $SLURM_JOB_NUM_NODES nodes x $SLURM_NTASKS_PER_NODE ranks, master $MASTER_ADDR:$MASTER_PORT"',
        "",
    ]
    template = _RUN_REQUEUE if job.requeues else _RUN_PLAIN
    out.append(template.format(step=_quote_step(step)))
    return "\n".join(out)
