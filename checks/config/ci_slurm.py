"""ReFrame configuration of the CI's own SLURM cluster (``scripts/ci/slurm-cluster.sh``):
two Booster-like nodes without GPUs, so the checks run their CPU mode, but submitted with
``sbatch``, polled with ``sacct`` and launched with ``srun``, as on JUWELS Booster.

    scripts/ci/with-slurm.sh env RFM_CONFIG_FILES=checks/config/ci_slurm.py reframe -c checks/ -r --tag ci

Partitions, their limits and the ranks' environment come from
:data:`xferscale.cluster.JUWELS_BOOSTER`, the object ``juwels_booster.py`` is built from.
"""
import os

from xferscale.checklib import perflog_handlers
from xferscale.cluster import JUWELS_BOOSTER as SITE


def _partition(part):
    return {
        "name": part.name,
        "descr": f"CI SLURM partition {part.name} (CPU only; max {part.max_nodes} nodes)",
        "scheduler": "slurm",
        "launcher": "srun",
        "access": [f"--partition={part.name}"],
        "environs": ["python"],
        "features": ["cpu", "gloo"],
        "max_jobs": 1,  # the cluster's nodes share the CI machine's 2 cores
        "env_vars": [[k, v] for k, v in SITE.env.items()] + [["OMP_NUM_THREADS", "1"]],
        "extras": {"max_nodes": part.max_nodes, "max_time": part.max_time, "cpu_bind": SITE.cpu_bind},
    }


site_configuration = {
    "systems": [
        {
            "name": "ci_slurm",
            "descr": "The CI machine's two-node SLURM cluster in network namespaces",
            "hostnames": [".*"],
            "modules_system": "nomod",
            "partitions": [_partition(SITE.partitions["booster"])],
        }
    ],
    "environments": [{"name": "python", "features": ["torch"]}],
    "logging": [{"handlers_perflog": perflog_handlers(os.environ.get("XFERSCALE_PERFLOGS", "perflogs"))}],
}
