"""``feedback-pipeline``: the demo and the simulator from the command line."""

import argparse
import sys

from feedback_pipeline.lib.settings import SettingsError, load_settings


def _simulation_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--days", type=int, default=30, help="days to simulate (default 30)")
    parser.add_argument("--rows-per-day", type=int, default=4000, help="predictions per day")
    parser.add_argument("--seed", type=int, default=7, help="random seed (same seed, same data)")


def _config(args: argparse.Namespace):
    from feedback_pipeline.simulate.traffic import SimulationConfig

    settings = load_settings()
    return settings, SimulationConfig(
        start_date=settings.start_date,
        days=args.days,
        rows_per_day=args.rows_per_day,
        seed=args.seed,
    )


def cmd_demo(args: argparse.Namespace) -> int:
    """Simulate into data/, run every day through Dagster, print what was found."""
    from feedback_pipeline.demo import format_summary, run_demo

    settings, config = _config(args)
    summary = run_demo(config)
    print(format_summary(summary, settings))
    return 1 if summary["failed_runs"] else 0


def cmd_simulate(args: argparse.Namespace) -> int:
    """Write simulated landing files only."""
    from feedback_pipeline.simulate.landing import simulate_landing

    settings, config = _config(args)
    manifest = simulate_landing(settings, config)
    print(
        f"{manifest['predictions']} predictions and {manifest['feedback_events']} feedback"
        f" events under {settings.resolve(settings.landing.inferences)} and"
        f" {settings.resolve(settings.landing.feedback)}"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    parser = argparse.ArgumentParser(prog="feedback-pipeline", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    for name, handler in (("demo", cmd_demo), ("simulate", cmd_simulate)):
        sub = commands.add_parser(name, help=handler.__doc__)
        _simulation_args(sub)
        sub.set_defaults(handler=handler)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script."""
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except SettingsError as exc:
        print(f"feedback-pipeline: bad settings: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
