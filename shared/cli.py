"""`yolo-endpoints`: manage API keys and weights from the command line."""

from __future__ import annotations

import argparse
from pathlib import Path

from shared import keys, weights
from shared.settings import PROJECT_ROOT, settings


def keys_file(arg: str | None) -> Path:
    return Path(arg) if arg else settings().keys_file


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="yolo-endpoints")
    parser.add_argument(
        "--keys-file", help=f"key store (default $YOLO_ENDPOINTS_KEYS or {settings().keys_file})"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    keys_cmd = sub.add_parser("keys", help="manage API keys").add_subparsers(
        dest="action", required=True
    )
    create = keys_cmd.add_parser("create", help="create a key; prints it on the last line")
    create.add_argument("name")
    create.add_argument("--models", nargs="+", help="restrict the key to these model IDs")
    create.add_argument(
        "--rate-limit",
        type=int,
        metavar="N",
        help="requests per rate-limit window for this key (default: the application's limit)",
    )
    create.add_argument(
        "--owner",
        default=keys.DEFAULT_OWNER,
        help=f"the workspace the key acts for, a lower-case slug (default: {keys.DEFAULT_OWNER})",
    )
    create.add_argument(
        "--scope",
        choices=keys.SCOPES,
        default=keys.DEFAULT_SCOPE,
        help="predict, or deploy: predict and also create, update and delete deployments "
        f"(default: {keys.DEFAULT_SCOPE})",
    )
    keys_cmd.add_parser(
        "list", help="names, prefixes, creation times, models, limits, owners, scopes (no secrets)"
    )
    revoke = keys_cmd.add_parser("revoke", help="revoke a key by name")
    revoke.add_argument("name")
    ensure = keys_cmd.add_parser("ensure", help="create a key NAME only if the store is empty")
    ensure.add_argument("name")
    serve_cmd = sub.add_parser("serve", help="start Ray and serve serve_config.yaml (foreground)")
    serve_cmd.add_argument("--config", default=str(PROJECT_ROOT / "serve_config.yaml"))
    serve_cmd.add_argument(
        "--num-cpus",
        type=int,
        default=16,
        help="Ray's logical CPU budget (replicas time-share real cores)",
    )
    cluster_cmd = sub.add_parser(
        "cluster", help="serve serve_config.yaml on a 3-node Ray cluster on this machine"
    )
    cluster_cmd.add_argument("--config", default=str(PROJECT_ROOT / "serve_config.yaml"))
    fetch = sub.add_parser("weights", help="fetch and verify the registry's weights")
    fetch.add_argument("models", nargs="*")
    predict = sub.add_parser(
        "predict",
        help="send images and videos to a predict route, one file a request; results as JSONL",
        description="Send each image (and, to a dedicated endpoint, each video) to a predict "
        "route and write one JSON line per image or video frame. Runs again resume: paths "
        "already done in --out are skipped, failed ones are sent again.",
    )
    predict.add_argument("paths", nargs="+", metavar="PATH", help="files, and folders to walk")
    predict.add_argument("--url", help="the server, e.g. http://localhost:8000")
    predict.add_argument(
        "--key", help="API key (default $YOLO_ENDPOINTS_KEY, which keeps it out of `ps`)"
    )
    route = predict.add_mutually_exclusive_group(required=True)
    route.add_argument("--model", metavar="ID", help="the shared route /api/models/ID/predict")
    route.add_argument(
        "--endpoint",
        metavar="NAME",
        help="a dedicated endpoint: /endpoints/NAME/predict, or a full endpoint URL",
    )
    predict.add_argument("--out", default="results.jsonl", help="JSONL output, or - for stdout")
    predict.add_argument(
        "--annotated", metavar="DIR", help="also draw each image's results into DIR/<path>.jpg"
    )
    predict.add_argument(
        "--concurrency", type=int, default=4, metavar="N", help="requests at once (default 4)"
    )
    predict.add_argument("--conf", type=float, help="confidence threshold (server default 0.25)")
    predict.add_argument("--iou", type=float, help="NMS IoU threshold (server default 0.7)")
    predict.add_argument("--imgsz", type=int, help="inference size (server default 640)")
    predict.add_argument("--vid-stride", type=int, metavar="N", help="videos: every N-th frame")
    predict.add_argument(
        "--retries",
        type=int,
        default=5,
        metavar="N",
        help="retries of a file after 5xx or connection errors (default 5); 429s are waited out",
    )
    predict.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        metavar="S",
        help="seconds to wait for an answer (default 300)",
    )
    predict.add_argument(
        "--progress", action="store_true", help="show the progress bar even when not on a TTY"
    )
    args = parser.parse_args(argv)

    if args.command == "weights":
        return weights.main(args.models)
    if args.command == "predict":
        from shared import batch_client

        return batch_client.main(args, predict.error)
    path = keys_file(args.keys_file)
    if args.command == "cluster":
        from shared.cluster_main import run_cluster

        return run_cluster(Path(args.config))
    if args.command == "serve":
        from shared.serve_main import serve

        return serve(Path(args.config), args.num_cpus)
    if args.action in ("create", "ensure"):
        if args.action == "ensure" and keys.read_store(path):
            return 0
        try:
            key = keys.create_key(
                path,
                args.name,
                getattr(args, "models", None),
                getattr(args, "rate_limit", None),
                owner=getattr(args, "owner", keys.DEFAULT_OWNER),
                scope=getattr(args, "scope", keys.DEFAULT_SCOPE),
            )
        except ValueError as exc:
            parser.error(str(exc))
        print(f"created key {args.name!r} in {path}; it is shown only once:")
        print(key)
    elif args.action == "list":
        for r in keys.read_store(path):
            models = ",".join(r.models) if r.models else "all models"
            limit = f"{r.rate_limit}/window" if r.rate_limit else "default limit"
            # New columns go last, so that scripts reading the first five keep working.
            print(f"{r.name}\t{r.prefix}…\t{r.created}\t{models}\t{limit}\t{r.owner}\t{r.scope}")
    elif args.action == "revoke":
        if not keys.revoke_key(path, args.name):
            print(f"no key named {args.name!r}")
            return 1
        print(f"revoked {args.name!r}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
