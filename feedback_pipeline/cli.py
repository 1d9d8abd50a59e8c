"""``feedback-pipeline``: the demo, the simulator, the quarantine and the UIs from the shell."""

import argparse
import sys
from pathlib import Path

import pandas as pd

from feedback_pipeline.lib import quarantine
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


def _show(frame: pd.DataFrame, limit: int) -> None:
    with pd.option_context("display.max_colwidth", 120, "display.width", 200):
        print(frame.head(limit).to_string(index=False) if len(frame) else "(nothing)")


def cmd_quarantine_list(args: argparse.Namespace) -> int:
    """Quarantined rows per asset and day."""
    _show(quarantine.summary(load_settings().resolve("quarantine")), args.limit)
    return 0


def cmd_quarantine_show(args: argparse.Namespace) -> int:
    """The quarantined rows of one asset and day, with file, row and reason."""
    rows = quarantine.load(load_settings().resolve("quarantine"), args.asset, args.day)
    if args.check and len(rows):
        rows = rows[rows["check"] == args.check]
    if args.export:
        count = quarantine.export_fixes(rows, args.export)
        print(
            f"wrote {count} records to {args.export}: fix them, then run"
            f" `feedback-pipeline quarantine replay --asset {args.asset} --day {args.day}"
            f" --fixes {args.export}`"
        )
        return 0
    print(f"{len(rows)} quarantined rows of {args.asset} on {args.day}")
    for message in rows["message"].head(args.limit) if len(rows) else []:
        print(f"  {message}")
    return 0


def cmd_quarantine_replay(args: argparse.Namespace) -> int:
    """Re-ingests a day after its rows were fixed (by --fixes, or at the source, or in settings)."""
    from feedback_pipeline.replay import replay

    outcome = replay(args.asset, args.day, args.fixes)
    print(
        f"{args.asset} {args.day}: quarantine {outcome.before} -> {outcome.after} rows,"
        f" valid {outcome.valid_before} -> {outcome.valid_after} rows"
        f" (Dagster run {outcome.run_id})"
    )
    if outcome.after:
        print(
            "still quarantined: see `feedback-pipeline quarantine show"
            f" --asset {args.asset} --day {args.day}`"
        )
    return 0 if outcome.success else 1


def cmd_rollback(args: argparse.Namespace) -> int:
    """Put the previous champion back (MLflow aliases, the sensor's baseline, the reference)."""
    from feedback_pipeline.lib.registry import RegistryError
    from feedback_pipeline.rollback import rollback

    try:
        outcome = rollback(args.reason, rebuild_reference=not args.no_reference)
    except RegistryError as exc:
        print(f"feedback-pipeline rollback: {exc}", file=sys.stderr)
        return 1
    print(f"champion is version {outcome.restored} again; version {outcome.demoted} is retired")
    if outcome.reference_run_id is None:
        print("the drift reference was not rebuilt: run reference_job before the next night")
    elif not outcome.reference_rebuilt:
        print(f"rebuilding the drift reference failed: see Dagster run {outcome.reference_run_id}")
        return 1
    else:
        print(
            "drift reference rebuilt from its training data"
            f" (Dagster run {outcome.reference_run_id})"
        )
    return 0


def cmd_dashboard(args: argparse.Namespace) -> int:
    """Rebuild the feedback analysis and the dashboard page; print its path."""
    from feedback_pipeline.dashboard_cli import build_dashboard

    path, run_id, ok = build_dashboard()
    if not ok:
        print(
            f"feedback-pipeline dashboard: the run failed: see Dagster run {run_id}",
            file=sys.stderr,
        )
        return 1
    print(path)
    if args.open:
        import webbrowser

        webbrowser.open(Path(path).resolve().as_uri())
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    """Open the Dagster, MLflow and Evidently UIs on localhost until Ctrl-C."""
    from feedback_pipeline.ui import UiError, run_ui

    ports = {
        "dagster": args.dagster_port,
        "mlflow": args.mlflow_port,
        "evidently": args.evidently_port,
    }
    try:
        return run_ui(load_settings(), host=args.host, ports=ports, only=args.only)
    except UiError as exc:
        print(f"feedback-pipeline ui: {exc}", file=sys.stderr)
        return 1


def _port(value: str) -> int:
    port = int(value) if value.isdigit() else 0
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 1 to 65535, got {value}")
    return port


def _servers(value: str) -> tuple[str, ...]:
    from feedback_pipeline.ui import parse_names

    try:
        return parse_names(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _ui_args(parser: argparse.ArgumentParser) -> None:
    from feedback_pipeline.ui import DEFAULT_HOST, DEFAULT_PORTS

    parser.add_argument(
        "--host", default=DEFAULT_HOST, help=f"interface to listen on (default {DEFAULT_HOST})"
    )
    for name, port in DEFAULT_PORTS.items():
        parser.add_argument(
            f"--{name}-port",
            type=_port,
            default=port,
            metavar="PORT",
            help=f"{name} port (default {port})",
        )
    parser.add_argument(
        "--only",
        type=_servers,
        metavar="NAMES",
        help="comma-separated subset, e.g. mlflow,evidently (default all three)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    parser = argparse.ArgumentParser(prog="feedback-pipeline", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    for name, handler in (("demo", cmd_demo), ("simulate", cmd_simulate)):
        sub = commands.add_parser(name, help=handler.__doc__)
        _simulation_args(sub)
        sub.set_defaults(handler=handler)
    q = commands.add_parser("quarantine", help="list, show and replay quarantined rows")
    actions = q.add_subparsers(dest="action", required=True)
    for name, handler in (
        ("list", cmd_quarantine_list),
        ("show", cmd_quarantine_show),
        ("replay", cmd_quarantine_replay),
    ):
        sub = actions.add_parser(name, help=handler.__doc__)
        sub.set_defaults(handler=handler)
        sub.add_argument("--limit", type=int, default=50, help="rows to print")
        if name == "list":
            continue
        sub.add_argument("--asset", choices=quarantine.ASSETS, required=True)
        sub.add_argument("--day", required=True, help="YYYY-MM-DD")
        if name == "show":
            sub.add_argument("--check", help="only rows that failed this check")
            sub.add_argument("--export", help="write the records as JSON Lines for fixing")
        else:
            sub.add_argument("--fixes", help="JSON Lines of fixed records (from show --export)")
    board = commands.add_parser("dashboard", help=cmd_dashboard.__doc__)
    board.add_argument("--open", action="store_true", help="open the page in a browser")
    board.set_defaults(handler=cmd_dashboard)
    back = commands.add_parser("rollback", help=cmd_rollback.__doc__)
    back.add_argument("--reason", default="", help="why, recorded in MLflow and Dagster")
    back.add_argument(
        "--no-reference", action="store_true", help="leave the drift reference as it is"
    )
    back.set_defaults(handler=cmd_rollback)
    ui = commands.add_parser("ui", help=cmd_ui.__doc__)
    _ui_args(ui)
    ui.set_defaults(handler=cmd_ui)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script."""
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except SettingsError as exc:
        print(f"feedback-pipeline: bad settings: {exc}", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError) as exc:
        print(f"feedback-pipeline: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
