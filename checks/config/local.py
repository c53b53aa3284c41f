"""ReFrame configuration of a plain local machine: CPU only, local scheduler, gloo.

    RFM_CONFIG_FILES=checks/config/local.py reframe -c checks/ -r

selects the CPU-mode checks (the partition has no ``gpu`` feature). Perflogs go to
``$XFERSCALE_PERFLOGS`` (default ``perflogs/``).
"""
import os

from xferscale.checklib import perflog_handlers

site_configuration = {
    "systems": [
        {
            "name": "local",
            "descr": "A workstation or CI runner, CPU only",
            "hostnames": [".*"],
            "modules_system": "nomod",
            "partitions": [
                {
                    "name": "cpu",
                    "descr": "CPU processes over gloo (torchrun --standalone)",
                    "scheduler": "local",
                    "launcher": "local",
                    "environs": ["python"],
                    "features": ["cpu", "gloo"],
                    "max_jobs": 1,  # runs share the cores; one at a time keeps timings honest
                    "env_vars": [["OMP_NUM_THREADS", "1"]],
                }
            ],
        }
    ],
    "environments": [
        {"name": "python", "features": ["torch"]},  # the Python environment xferscale is installed in
    ],
    "logging": [
        {
            "handlers_perflog": perflog_handlers(os.environ.get("XFERSCALE_PERFLOGS", "perflogs")),
        }
    ],
}
