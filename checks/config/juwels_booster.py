"""ReFrame configuration of JUWELS Booster (JSC): 936 nodes x 4 A100, SLURM, Apptainer.

    export RFM_CONFIG_FILES=$PWD/checks/config/juwels_booster.py
    export XFERSCALE_ACCOUNT=<your project>   XFERSCALE_IMAGE=/p/project/.../xferscale.sif
    reframe -c checks/ -r

Launch settings (tasks and GPUs per node, CPU binding, rendezvous, NCCL/InfiniBand
environment, partition limits, the clean container environment) come from
:data:`xferscale.cluster.JUWELS_BOOSTER`, the same source the ``xferscale slurm`` job
scripts use. Partitions carry the ``gpu`` feature, so the checks run their GPU mode here,
and ``horovod``: the image is built with Horovod (``scripts/install_horovod.sh --gpu``).

Stage directories and the experiments' checkpoints and results live under ``$SCRATCH``
(set by ``jutil env activate -p <project>``), or ``XFERSCALE_RFM_STAGE`` /
``XFERSCALE_EXPERIMENT_ROOT``.
"""
import os

from xferscale.checklib import perflog_handlers
from xferscale.cluster import JUWELS_BOOSTER as SITE

_ACCOUNT = os.environ.get("XFERSCALE_ACCOUNT")


def _under_scratch(variable: str, relative: str) -> str:
    """``$variable`` if set, else ``$SCRATCH/relative``; without either, a one-line error."""
    if os.environ.get(variable):
        return os.environ[variable]
    if not os.environ.get("SCRATCH"):
        raise SystemExit(f"juwels_booster.py: SCRATCH is not set; run `jutil env activate -p <project>` "
                         f"first (or set {variable})")
    return os.path.join(os.environ["SCRATCH"], relative)


def _partition(part):
    return {
        "name": part.name,
        "descr": f"{SITE.gpus_per_node} x A100 40GB per node, 4 x HDR200 InfiniBand (max {part.max_nodes} nodes)",
        "scheduler": "slurm",
        "launcher": "srun",
        "access": [f"--partition={part.name}"] + ([f"--account={_ACCOUNT}"] if _ACCOUNT else []),
        "environs": ["apptainer"],
        # XFERSCALE_IMAGE_HOROVOD=0 for an image built with WITH_HOROVOD=0.
        "features": ["gpu", "cuda", "nccl", "infiniband"]
        + (["horovod"] if os.environ.get("XFERSCALE_IMAGE_HOROVOD", "1") == "1" else []),
        "max_jobs": 8,
        "time_limit": part.max_time,
        "container_platforms": [{"type": SITE.container_platform, "default": True}],
        # ReFrame's managed GPU resource: num_gpus_per_node -> --gres=gpu:N
        "resources": [{"name": "_rfm_gpu", "options": ["--gres=gpu:{num_gpus_per_node}"]}],
        "env_vars": [[k, v] for k, v in SITE.env.items()],
        "processor": {"num_cpus": 96, "num_cpus_per_core": 2, "num_sockets": 2, "num_cpus_per_socket": 48},
        "devices": [{"type": "gpu", "model": "A100", "arch": "sm_80", "num_devices": SITE.gpus_per_node}],
        "extras": {
            "gpus_per_node": SITE.gpus_per_node,
            "cpus_per_task": SITE.cpus_per_task,
            "cpu_bind": SITE.cpu_bind,
            "master_addr_suffix": SITE.master_addr_suffix,
            "master_addr_shell": SITE.master_addr_shell(),
            "master_port": SITE.master_port,
            "max_nodes": part.max_nodes,
            "max_time": part.max_time,
            # apptainer exec --cleanenv; the ranks' launch variables are passed in by name.
            "container_options": [o for o in SITE.container_options if o != "--nv"],
            "container_env": list(SITE.container_env()),
            # The image path is a variable: XFERSCALE_IMAGE here, or -S container_image=... per run.
            "container_image": os.environ.get("XFERSCALE_IMAGE", "$PROJECT/xferscale/xferscale.sif"),
            "dataset": os.environ.get("XFERSCALE_DATASET", ""),
            # Prepared datasets of the experiments, one folder per source / target.
            "data_root": os.environ.get("XFERSCALE_DATA_ROOT", ""),
            # Checkpoints and results of the experiments, kept across ReFrame runs.
            "experiment_root": _under_scratch("XFERSCALE_EXPERIMENT_ROOT", f"{os.environ.get('USER', 'user')}/xferscale/experiments"),
        },
    }


site_configuration = {
    "systems": [
        {
            "name": SITE.name,
            "descr": "JUWELS Booster, Juelich Supercomputing Centre",
            "hostnames": [r"jwlogin2[1-5]", r"jwb\d+", r"juwelsbooster"],
            # lmod on the machine; XFERSCALE_MODULES_SYSTEM=nomod lets a laptop list the checks.
            "modules_system": os.environ.get("XFERSCALE_MODULES_SYSTEM", "lmod"),
            "stagedir": _under_scratch("XFERSCALE_RFM_STAGE", f"{os.environ.get('USER', 'user')}/xferscale/stage"),
            "partitions": [_partition(part) for part in SITE.partitions.values()],
        }
    ],
    "environments": [
        {
            "name": "apptainer",
            "features": ["torch"],
        },
    ],
    "logging": [
        {
            "handlers_perflog": perflog_handlers(os.environ.get("XFERSCALE_PERFLOGS", "perflogs")),
        }
    ],
}
