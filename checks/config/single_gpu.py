"""ReFrame configuration of one machine with one GPU: local scheduler and launcher, no SLURM.

    RFM_CONFIG_FILES=checks/config/single_gpu.py reframe -c checks/ -r --tag gpu

The ``gpu`` partition carries the ``gpu`` feature, so the checks run their GPU mode on the one
GPU (``xferscale`` from PATH, no container); the ``cpu`` partition runs the CPU mode (the
checks tagged ``ci``). ``scripts/gpu/acceptance.sh`` runs the first on a lent GPU machine and,
without CUDA, the second. Perflogs go to ``$XFERSCALE_PERFLOGS`` (default ``perflogs/``); a
prepared dataset for the loader checks is ``$XFERSCALE_DATASET`` (default: synthetic JPEGs).
"""
import os

from xferscale.checklib import perflog_handlers

_CPUS = os.cpu_count() or 1

site_configuration = {
    "systems": [
        {
            "name": "single_gpu",
            "descr": "One machine with one GPU",
            "hostnames": [".*"],
            "modules_system": "nomod",
            "partitions": [
                {
                    "name": "gpu",
                    "descr": "The machine's one GPU, NCCL",
                    "scheduler": "local",
                    "launcher": "local",
                    "environs": ["python"],
                    "features": ["gpu", "cuda", "nccl"],
                    "max_jobs": 1,  # one GPU: one timed run at a time
                    "devices": [{"type": "gpu", "num_devices": 1}],
                    "extras": {
                        "gpus_per_node": 1,
                        "cpus_per_task": _CPUS,  # the loader workers of the one task
                        "master_addr_shell": "127.0.0.1",  # no SLURM node list to take it from
                        "dataset": os.environ.get("XFERSCALE_DATASET", ""),
                    },
                },
                {
                    "name": "cpu",
                    "descr": "CPU processes over gloo (torchrun --standalone)",
                    "scheduler": "local",
                    "launcher": "local",
                    "environs": ["python"],
                    "features": ["cpu", "gloo"],
                    "max_jobs": 1,
                    "env_vars": [["OMP_NUM_THREADS", "1"]],
                },
            ],
        }
    ],
    "environments": [
        {"name": "python", "features": ["torch"]},  # the Python environment xferscale runs in
    ],
    "logging": [
        {
            "handlers_perflog": perflog_handlers(os.environ.get("XFERSCALE_PERFLOGS", "perflogs")),
        }
    ],
}
