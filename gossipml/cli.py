"""The ``gossipml`` command: ``run`` an experiment on this machine, be one ``peer`` of it,
``launch`` peers over ssh, make CURVE ``keys``, start a ``new`` project of your own."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any, Sequence

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every verb."""
    parser = argparse.ArgumentParser(prog="gossipml", description=__doc__)
    verbs = parser.add_subparsers(dest="verb", required=True)

    run = verbs.add_parser("run", help="start every peer of an experiment on this machine")
    run.add_argument("experiment", nargs="?", help="experiment TOML (default: 8 peers, ring, digits)")
    run.add_argument("--out", help="results folder (default: runs/<name>-<time>)")
    run.add_argument("--peers", type=int, help="override [run] n_peers")
    run.add_argument("--rounds", type=int, help="override [peer] rounds")
    run.add_argument("--quiet", action="store_true", help="no live progress")
    run.add_argument("--start-method", choices=("fork", "spawn"),
                     help="override [run] start_method: fork peers from this pre-imported "
                     "process (default) or spawn a fresh interpreter per peer")
    run.add_argument("--kill", action="append", default=[], metavar="ID@SECONDS",
                     help="failure drill: SIGKILL peer ID that many seconds after the start")

    peer = verbs.add_parser("peer", help="run one peer (what each host of a multi-host run starts)")
    peer.add_argument("experiment", nargs="?", help="experiment TOML or a run folder's config.json")
    peer.add_argument("--peers", help="peer file: ids, addresses, devices (default: read the "
                      "launcher's environment: Slurm, a StatefulSet, GOSSIPML_PEERS)")
    peer.add_argument("--id", type=int, help="this peer's id in the peer file")
    peer.add_argument("--events", help="JSONL event file; {id} becomes the peer id, which every "
                      "rank of a launcher needs (default: events/peer-{id}.jsonl)")
    peer.add_argument("--log-level", default="WARNING")

    launch = verbs.add_parser("launch", help="start one peer per host slot over ssh")
    launch.add_argument("experiment", nargs="?", help="experiment TOML (same path on every host)")
    launch.add_argument("--hosts", required=True, help="hosts file: '[user@]host [slots=N]' lines")
    launch.add_argument("--peers-file", default="peers.toml",
                        help="peer file to write (must be readable at this path on every host)")
    launch.add_argument("--base-port", type=int, default=5555)
    launch.add_argument("--workdir", default=None, help="remote folder (default: this one)")
    launch.add_argument("--gossipml", default="gossipml", help="remote command (e.g. a venv path)")
    launch.add_argument("--timeout-s", type=float, default=3600.0)
    launch.add_argument("--log-dir", default="launch-logs", help="ssh output, one file per peer")
    launch.add_argument("--dry-run", action="store_true", help="print the ssh commands only")

    new = verbs.add_parser("new", help="write NAME/experiment.toml, NAME/task.py (your own model "
                           "and data) and NAME/README.md")
    new.add_argument("name", help="folder to create (its name names the experiment)")

    schema = verbs.add_parser("schema", help="print the experiment file's JSON Schema")
    schema.add_argument("--markdown", action="store_true",
                        help="print the key reference (the README's block) instead")
    schema.add_argument("--check", metavar="TOML", nargs="+",
                        help="validate experiment files against the schema instead")

    keys = verbs.add_parser("keys", help="make CURVE key pairs (NAME.key, NAME.key_secret)")
    keys.add_argument("dir", help="keys folder (a peer's [transport] curve_keys_dir)")
    keys.add_argument("names", nargs="+", help="key names, e.g. peer-0 peer-1")
    keys.add_argument("--allow", action="store_true",
                      help="also copy the public keys into DIR/allowed/ (the allow-list)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script and of ``python -m gossipml``."""
    args = build_parser().parse_args(argv)
    from gossipml.config import ConfigError

    try:
        if args.verb == "run":
            code = _cmd_run(args)
            if argv is None:  # this process is the command: skip the seconds of teardown
                _exit_now(code)
            return code
        if args.verb == "peer":
            return _cmd_peer(args)
        if args.verb == "launch":
            return _cmd_launch(args)
        if args.verb == "keys":
            return _cmd_keys(args)
        if args.verb == "schema":
            return _cmd_schema(args)
        if args.verb == "new":
            return _cmd_new(args)
    except ConfigError as exc:
        print(f"gossipml: bad configuration: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:  # launcher environment, hosts file, keys: the message says what to do
        print(f"gossipml {args.verb}: {exc}", file=sys.stderr)
        return 2
    return 2


def _exit_now(code: int) -> None:
    """Flush and leave without the interpreter's teardown: once a run is written and reported,
    finalizing torch, torch._dynamo and scikit-learn only costs seconds (issue #17)."""
    import os

    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _cmd_run(args: argparse.Namespace) -> int:
    from gossipml.config import load_experiment
    from gossipml.launch.local import run_in_process, run_local

    cfg = load_experiment(args.experiment)
    if args.peers is not None:
        cfg = cfg.replace(run={"n_peers": args.peers})
    if args.rounds is not None:
        cfg = cfg.replace(peer={"rounds": args.rounds})
    if args.start_method is not None:
        cfg = cfg.replace(run={"start_method": args.start_method})
    out = Path(args.out or f"runs/{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}")
    console = _console()
    console.print(f"[bold]gossipml run[/bold] {cfg.name}: {cfg.run.n_peers} peers, "
                  f"{cfg.topology.kind} topology, {cfg.data.dataset}, codec {cfg.codec.spec}, "
                  f"pacing {cfg.pacing.mode}, {cfg.peer.rounds} rounds -> {out}")
    progress = None if args.quiet else _progress_printer(console, cfg.peer.rounds)
    if cfg.run.mode == "threads":
        result = run_in_process(cfg, out, on_progress=progress)
    elif cfg.run.mode == "feature_split":
        from gossipml.launch.local import feature_split_run

        result = feature_split_run(cfg, out)
    else:
        result = run_local(cfg, out, on_progress=progress, kill_after_s=_parse_kills(args.kill))
    _print_summary(console, result.summary)
    if not result.ok:
        console.print(f"[red]failed peers: {result.summary['failed_peers']}[/red] "
                      f"(logs in {out / 'logs'})")
        return 1
    return 0


def _parse_kills(specs: list[str]) -> dict[int, float]:
    from gossipml.config import ConfigError

    kills = {}
    for spec in specs:
        pid, _, secs = spec.partition("@")
        try:
            kills[int(pid)] = float(secs)
        except ValueError:
            raise ConfigError(f"--kill takes ID@SECONDS such as 3@10, got {spec!r}") from None
    return kills


def _console() -> Any:
    from rich.console import Console

    return Console(highlight=False)


def _progress_printer(console: Any, rounds: int):
    def show(rows: list[dict[str, Any]], elapsed_s: float) -> None:
        done = [r.get("round", -1) + 1 for r in rows]
        accs = [r["accuracy"] for r in rows if r.get("accuracy") is not None]
        acc = f"mean acc {sum(accs) / len(accs):.3f}" if accs else "acc -"
        console.print(f"  {elapsed_s:6.1f}s  rounds {min(done)}-{max(done)}/{rounds}  {acc}")
    return show


def _print_summary(console: Any, summary: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(title="gossipml summary")
    for col in ("peer", "accuracy", "rounds", "sent MiB", "recv MiB", "rejected", "status"):
        table.add_column(col, justify="right")
    failed = set(summary["failed_peers"])
    for p in summary["peers"]:
        acc = p["final_accuracy"]
        table.add_row(str(p["id"]), "-" if acc is None else f"{acc:.3f}", str(p["rounds"]),
                      f"{p['bytes_sent'] / 2**20:.2f}", f"{p['bytes_received'] / 2**20:.2f}",
                      str(p["rejected"]), "[red]failed[/red]" if p["id"] in failed else "ok")
    console.print(table)
    mean = summary["mean_accuracy"]
    console.print(f"mean accuracy {'-' if mean is None else f'{mean:.4f}'}  "
                  f"wall {summary['wall_s']:.1f}s  spectral gap {summary.get('spectral_gap')}  "
                  f"results {summary.get('out_dir')}")


def _peer_layout(args: argparse.Namespace) -> tuple[int, dict[int, str], str | None, str | None]:
    """(id, addresses, bind, device) from the peer file, or from the launcher's environment."""
    import os

    from gossipml.launch.static import static_layout
    from gossipml.launch.peersfile import load_peers

    if args.peers is None:
        layout = static_layout(os.environ)
        if args.id is not None and args.id != layout.id:
            raise ValueError(f"--id {args.id} contradicts {layout.source} (rank {layout.id}); "
                             "drop --id or pass --peers")
        return layout.id, layout.peers, layout.bind, None
    if args.id is None:
        raise ValueError("--peers needs --id (this peer's id in the peer file)")
    entries = load_peers(args.peers)
    if not 0 <= args.id < len(entries):
        raise ValueError(f"--id {args.id} is not in {args.peers} (ids 0..{len(entries) - 1})")
    me = entries[args.id]
    return args.id, {e.id: e.address for e in entries}, me.bind, me.device


_SAME_ARGV_LAUNCHERS = ("torchrun", "openmpi", "pmi", "slurm")  # one command line, every rank


def _events_path(args: argparse.Namespace, peer_id: int, n_peers: int) -> str:
    """``--events`` with ``{id}`` filled in; one path given to every rank of a launcher is refused."""
    template = args.events or "events/peer-{id}.jsonl"
    if args.peers is None and n_peers > 1 and "{id}" not in template:
        import os

        from gossipml.launch.env import detect_launch_env

        info = detect_launch_env(os.environ)
        if info is not None and info.source in _SAME_ARGV_LAUNCHERS:
            raise ValueError(f"--events {template!r} would be the same file for all {n_peers} "
                             f"ranks {info.source} starts: put {{id}} in it, e.g. "
                             "--events out/peer-{id}.jsonl")
    return template.replace("{id}", str(peer_id))


def _cmd_peer(args: argparse.Namespace) -> int:
    from gossipml.config import ConfigError, load_experiment

    cfg = load_experiment(args.experiment)
    if cfg.run.mode == "threads":
        raise ConfigError('[run] mode = "threads" runs every peer inside one process: start it '
                          'with gossipml run, or set [run] mode = "processes" to run one peer '
                          'per gossipml peer')
    peer_id, peers, bind, device = _peer_layout(args)
    logging.basicConfig(level=args.log_level.upper(),
                        format=f"%(asctime)s peer {peer_id} %(levelname)s %(name)s: %(message)s")
    events = _events_path(args, peer_id, len(peers))
    if cfg.run.mode == "feature_split":
        from gossipml.featuresplit.process import run_peer_process

        run_peer_process(cfg, peer_id, peers, events_path=events, bind=bind, device=device)
        return 0
    from gossipml.launch.local import run_peer

    return run_peer(cfg, peer_id, peers, events=events, bind=bind, device=device)


def _cmd_launch(args: argparse.Namespace) -> int:
    import os
    import shlex

    from gossipml.launch.ssh import (build_ssh_commands, load_hosts, peer_entries_for_hosts,
                                     run_commands)
    from gossipml.launch.peersfile import write_peers

    slots = load_hosts(args.hosts)
    write_peers(args.peers_file, peer_entries_for_hosts(slots, args.base_port))
    commands = build_ssh_commands(slots, args.peers_file, args.experiment, gossipml=args.gossipml,
                                  workdir=args.workdir or os.getcwd())
    if args.dry_run:
        print(f"# peer file {args.peers_file}: {len(slots)} peers")
        for c in commands:
            print(shlex.join(c.argv))
        return 0
    codes = run_commands(commands, args.timeout_s, log_dir=args.log_dir)
    failed = sorted(i for i, c in codes.items() if c != 0)
    print(f"gossipml launch: {len(codes) - len(failed)}/{len(codes)} peers finished; "
          f"failed {failed} (logs in {args.log_dir})" if failed else
          f"gossipml launch: all {len(codes)} peers finished (logs in {args.log_dir})")
    return 1 if failed else 0


def _cmd_keys(args: argparse.Namespace) -> int:
    import shutil

    from gossipml.comm.security import ALLOWED_DIR, generate_keypair, is_allow_list_name

    folder = Path(args.dir)
    if args.allow:
        bad = [n for n in args.names if not is_allow_list_name(f"{n}.key")]
        if bad:
            raise ValueError(f"--allow names must be peer-<id> (the id that key speaks as) or "
                             f"seed-<k>; got {bad}")
    for name in args.names:
        public, secret = generate_keypair(folder, name)  # secret: mode 0600 from its creation
        print(f"{secret} (secret, keep on that peer)  {public} (public)")
        if args.allow:
            (folder / ALLOWED_DIR).mkdir(exist_ok=True)
            shutil.copyfile(public, folder / ALLOWED_DIR / public.name)
    if args.allow:
        print(f"allow-list: {folder / ALLOWED_DIR}")
    return 0


def _cmd_schema(args: argparse.Namespace) -> int:
    import json

    from gossipml.config import tomllib
    from gossipml.launch.config_schema import experiment_schema, markdown_reference, validate

    schema = experiment_schema()
    if args.check:
        errors = [f"{path}: {e}" for path in args.check
                  for e in validate(tomllib.loads(Path(path).read_text()), schema)]
        print("\n".join(errors) or f"{len(args.check)} file(s) match the schema")
        return 1 if errors else 0
    print(markdown_reference(schema) if args.markdown else json.dumps(schema, indent=2))
    return 0


def _cmd_new(args: argparse.Namespace) -> int:
    from gossipml.launch.scaffold import write_project

    for path in write_project(args.name):
        print(f"wrote {path}")
    print(f"next: gossipml run {Path(args.name) / 'experiment.toml'}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
