"""``prokd serve``: the DICOM node, from options or a YAML file."""

from __future__ import annotations

import argparse
import logging
import signal
import sys

from prokd.cli.registry import command

SERVE_KEYS = (
    "port",
    "ae_title",
    "bind",
    "work_dir",
    "model",
    "outputs",
    "allow",
    "quiet_seconds",
    "workers",
    "retry_seconds",
    "retry_max_seconds",
)


@command("serve")
def _serve(args: argparse.Namespace) -> int:
    from prokd.inference.model_files import load_model_file
    from prokd.inference.segment import with_crop_centre
    from prokd.serve.config import load_node_config
    from prokd.serve.node import Node

    overrides = {key: getattr(args, key) for key in SERVE_KEYS}
    overrides["destinations"] = args.destination
    config = load_node_config(args.config, overrides)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(asctime)s prokd serve: %(message)s", "%Y-%m-%dT%H:%M:%S")
    )
    log = logging.getLogger("prokd.serve")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    model = with_crop_centre(load_model_file(config.model), "gland")
    node = Node(config, model)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: node.stopping.set())
    node.start()
    try:
        node.run()
    finally:
        node.stop()
    return 0


def add_serve_parser(sub: argparse._SubParsersAction) -> None:
    """The parser of ``prokd serve``."""
    from prokd.serve.config import OUTPUTS

    p = sub.add_parser(
        "serve",
        help="run as a DICOM node: receive studies (C-STORE), send SEG/RTSTRUCT back",
        description="A DICOM node: MR studies sent to it are segmented when quiet, and the "
        "results are sent by C-STORE to every destination. Options override --config.",
    )
    p.add_argument("--config", metavar="FILE", help="YAML file with these settings as keys")
    p.add_argument("--port", type=int, help="TCP port to listen on (required)")
    p.add_argument("--ae-title", help="this node's AE title (default PROKD)")
    p.add_argument("--bind", help="address to listen on (default 0.0.0.0)")
    p.add_argument(
        "--destination",
        action="append",
        metavar="AET@HOST:PORT",
        help="where results are sent (repeat for several; at least one)",
    )
    p.add_argument("--work-dir", help="folder of received studies and results (required)")
    p.add_argument("--model", help="model to segment with (default prostate-t2)")
    p.add_argument(
        "--outputs",
        metavar="LIST",
        help=f"comma-separated results to send, of {','.join(OUTPUTS)} (default seg)",
    )
    p.add_argument(
        "--allow",
        action="append",
        metavar="AET",
        help="a calling AE title allowed to send (repeat; default: any)",
    )
    p.add_argument(
        "--quiet-seconds",
        type=float,
        help="a study is processed once nothing has arrived for it this long (default 10)",
    )
    p.add_argument("--workers", type=int, help="studies processed at once (default 1)")
    p.add_argument(
        "--retry-seconds",
        type=float,
        help="first wait before sending again to a destination that failed (default 5; "
        "doubles each time)",
    )
    p.add_argument(
        "--retry-max-seconds", type=float, help="longest wait between retries (default 300)"
    )
