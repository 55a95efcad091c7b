#!/usr/bin/env python
"""Start a shared MLflow tracking server for ablate sweeps.

    python scripts/tracking_server.py                       # sqlite, 127.0.0.1:5000
    python scripts/tracking_server.py --backend-store-uri postgresql://user@db-host/mlflow
    python -m ablate -m tracking.uri=http://127.0.0.1:5000 seed=0,1,2

Runs go to the backend store (sqlite file or PostgreSQL); artifacts are uploaded
through the server (`--serve-artifacts`) into a local folder, so jobs on other
machines need no shared file system for them. The server binds to loopback
unless you pass another --host; it has no authentication of its own unless you
add `--app-name basic-auth` (see docs/scaling-out.md).
"""
from __future__ import annotations

import argparse
import ipaddress
import os
import secrets
import sys
from pathlib import Path


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def exposure_warning(host: str, port: int) -> str | None:
    if _is_loopback(host):
        return None
    return (f"tracking_server: WARNING: binding to {host}: anyone who can reach port {port} can read "
            "and change runs. Put authentication in front (--app-name basic-auth or a reverse proxy; "
            "see docs/scaling-out.md).")


def auth_env(root: Path) -> dict[str, str]:
    """Environment for MLflow's basic-auth app, its state kept in `root`: the user
    store, and a CSRF secret kept across restarts. The admin's first password comes
    from MLFLOW_AUTH_ADMIN_PASSWORD; MLflow ships none."""
    if not os.environ.get("MLFLOW_AUTH_ADMIN_PASSWORD") and not (root / "basic_auth.db").exists():
        sys.exit("tracking_server: basic-auth creates user 'admin' on first start: set "
                 "MLFLOW_AUTH_ADMIN_PASSWORD to its password, then start again.")
    ini = root / "basic_auth.ini"
    if not ini.exists():
        ini.write_text("[mlflow]\ndefault_permission = READ\n"
                       f"database_uri = sqlite:///{root / 'basic_auth.db'}\nadmin_username = admin\n"
                       "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
    key = root / "secret_key"
    if not key.exists():
        key.touch(mode=0o600)
        key.write_text(secrets.token_hex(32))
    return {"MLFLOW_AUTH_CONFIG_PATH": str(ini),
            "MLFLOW_FLASK_SERVER_SECRET_KEY": os.environ.get("MLFLOW_FLASK_SERVER_SECRET_KEY") or key.read_text()}


def command(args: argparse.Namespace, extra: list[str]) -> list[str]:
    root = Path(args.dir).resolve()
    backend = args.backend_store_uri or f"sqlite:///{root / 'mlflow.db'}"
    artifacts = Path(args.artifacts_destination or root / "artifacts").resolve()
    cmd = [sys.executable, "-m", "mlflow", "server",
           "--backend-store-uri", backend,
           "--serve-artifacts", "--artifacts-destination", artifacts.as_uri(),
           "--host", args.host, "--port", str(args.port), "--workers", str(args.workers)]
    if args.app_name:
        cmd += ["--app-name", args.app_name]
    return cmd + extra


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dir", default="mlflow-server",
                   help="folder for the sqlite store and the artifacts (default: ./mlflow-server)")
    p.add_argument("--backend-store-uri", default=None,
                   help="SQLAlchemy URI of the run store, e.g. postgresql://user:pass@host:5432/mlflow "
                        "(default: sqlite:///<dir>/mlflow.db)")
    p.add_argument("--artifacts-destination", default=None,
                   help="local folder the server stores artifacts in (default: <dir>/artifacts)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default: loopback only; 0.0.0.0 exposes it to the network)")
    p.add_argument("--port", type=int, default=5000)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--app-name", default=None, choices=["basic-auth"],
                   help="basic-auth: MLflow's username/password login (pip install 'ablate[server]'; "
                        "set MLFLOW_AUTH_ADMIN_PASSWORD for the first start)")
    args, extra = p.parse_known_args(argv)  # anything else goes to `mlflow server` as is

    if args.backend_store_uri and args.backend_store_uri.startswith("postgresql"):
        try:
            import psycopg  # noqa: F401  SQLAlchemy 2.1 maps postgresql:// to psycopg 3
        except ImportError:
            sys.exit("tracking_server: PostgreSQL needs a driver: pip install 'ablate[server]' "
                     "(psycopg[binary]).")
    if warning := exposure_warning(args.host, args.port):
        print(warning, file=sys.stderr)
    root = Path(args.dir).resolve()
    root.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **(auth_env(root) if args.app_name == "basic-auth" else {})}
    cmd = command(args, extra)
    print("tracking_server:", " ".join(cmd), file=sys.stderr, flush=True)
    os.execve(cmd[0], cmd, env)  # become the server: signals and exit status are its own


if __name__ == "__main__":
    main()
