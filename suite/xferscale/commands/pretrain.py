"""``xferscale pretrain``: pre-train a BiT ResNet; with no arguments, a 1-minute CPU demo."""
from __future__ import annotations

import argparse
import math
import sys

from xferscale.config import ConfigError, builtin_configs, dump_config, load_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", help="config file, or the name of a shipped config (see --list)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="config overrides, e.g. train.global_batch=256 data.path=/p/scratch/in1k")
    parser.add_argument("--resume", action="store_true",
                        help="continue from <output_dir>/checkpoint.pt when it exists (exactly where it stopped)")
    parser.add_argument("--output-dir", help="shorthand for output_dir=...")
    parser.add_argument("--list", action="store_true", help="list the shipped pre-training configs and exit")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    parser.add_argument("--print-schedule", action="store_true",
                        help="print the schedule on the configured dataset (steps per epoch, warm-up end, each "
                             "decay, total; from dataset.json, no images read), check it, and exit")


def print_schedule(cfg) -> int:
    from xferscale.schedule import plan_on_dataset

    plan = plan_on_dataset(cfg)
    print(f"schedule of {cfg.name} on {cfg.data.path or 'the synthetic source'}:")
    print("\n".join(f"  {line}" for line in plan.lines()))
    plan.check()
    print("  ok: the warm-up ends before the first decay and before the end")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.list:
        for name, path in sorted(builtin_configs().items()):
            print(f"{name:<40} {path}")
        return 0
    overrides = list(args.overrides) + ([f"output_dir={args.output_dir}"] if args.output_dir else [])
    try:
        cfg = load_config(args.config, overrides, require_data=not args.print_config)
    except ConfigError as err:
        print(f"xferscale pretrain: config error: {err}", file=sys.stderr)
        return 2
    if args.print_config:
        print(dump_config(cfg), end="")
        return 0
    if args.print_schedule:
        try:
            return print_schedule(cfg)
        except ConfigError as err:
            print(f"xferscale pretrain: config error: {cfg.name}: {err}", file=sys.stderr)
            return 2

    from xferscale.checkpoint import CheckpointReadError, CheckpointWriteError
    from xferscale.data.records import PrepareError
    from xferscale.distributed import shutdown
    from xferscale.preemption import write_stop_marker
    from xferscale.trainer import NonFiniteLossError, Trainer

    try:
        trainer = Trainer(cfg)
    except ConfigError as err:
        print(f"xferscale pretrain: config error: {err}", file=sys.stderr)
        return 2
    except PrepareError as err:  # a prepared folder without dataset.json, a shard index that does not match
        print(f"xferscale pretrain: data error: {err}", file=sys.stderr)
        return 2
    env = trainer.env
    if env.is_main:
        print(f"pretrain {cfg.name}: {cfg.model.name} ({trainer.num_classes} classes), {env.world_size} rank(s) "
              f"[{env.backend}] on {env.device}, global batch {cfg.train.global_batch}, {cfg.train.precision}, "
              f"{trainer.total_steps} steps ({trainer.steps_per_epoch}/epoch)")
    try:
        summary = trainer.fit(resume=args.resume)
    except NonFiniteLossError as err:
        print(f"xferscale pretrain: {err}", file=sys.stderr)
        return 3
    except (CheckpointWriteError, CheckpointReadError, ConfigError, PrepareError) as err:
        print(f"xferscale pretrain: {err}", file=sys.stderr)
        return 2
    finally:
        shutdown(env)
    if env.is_main and summary.get("already_finished"):
        print(f"{cfg.name}: already finished ({summary['steps']} steps); summary.json and the checkpoint are kept")
        return 0
    if env.is_main:
        per_rank = ", ".join(f"{r:.1f}" for r in summary["images_per_s_per_rank"])
        if math.isnan(summary["loss"]):  # stopped before this attempt logged a step
            print(f"stopped after {summary['steps']} steps, before this attempt logged one "
                  f"(train.log_every={cfg.train.log_every}): no loss or throughput measured")
        else:
            print(f"loss {summary['loss']:.4f} after {summary['steps']} steps; throughput "
                  f"{summary['images_per_s_total']:.1f} images/s in total (per rank: {per_rank}; "
                  f"warm-up {summary['warmup_steps_excluded']} steps excluded)")
        if summary["stopped_by_signal"]:
            message = f"stopped by signal; checkpoint written to {summary['checkpoint']} (continue with --resume)"
            print(message)
            write_stop_marker(message)
        else:
            print(f"checkpoint: {summary['checkpoint']}")
        if summary.get("best_checkpoint"):
            print(f"best: {summary['best_checkpoint']} (lowest validation loss {summary['best_val_loss']:.4f}, "
                  f"epoch {summary['best_epoch']}; what `xferscale transfer` starts from)")
    return 0
