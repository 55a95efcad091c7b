"""Tracking: where runs go in MLflow, how they are named, and finding old ones."""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import re
import sqlite3
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import quote, unquote, urlparse

import mlflow
from mlflow.tracking import MlflowClient

from ablate.config import is_non_result, unquoted
from ablate.errors import AblateError, ConfigError, disk_full

log = logging.getLogger(__name__)


def _raised_again(record: logging.LogRecord) -> bool:
    """MLflow logs a sqlite error's whole traceback, then raises it again as an
    MlflowException, which the caller reports in one line (a locked or full store once
    printed 3 to 5 chained tracebacks this way): the log record is dropped."""
    return not str(record.msg).startswith("SQLAlchemy database error. The following exception is caught")


logging.getLogger("mlflow.store.db.utils").addFilter(_raised_again)

# MLflow draws a progress bar for every artifact it moves (a design.json included) and,
# with a tracking server, prints "View run ... at" for every run it closes: noise in a
# sweep's output, which prints its own links. A user's own setting wins.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")

FINGERPRINT = "ablate.fingerprint"
SWEEP_ID = "ablate.sweep_id"
SWEPT = "ablate.swept"  # on a sweep's parent run: the keys its command line varied
OVERRIDES = "ablate.overrides"
ERROR = "ablate.error"
SUPERSEDED = "ablate.superseded"  # on a run closed because another run of its config took over: why
CHECKPOINT = "ablate.checkpoint"  # the run's checkpoint file, as its first job placed it
RUN_LOCAL = "ablate.run_local"  # a user's job's values that say where or when it ran (JSON), not what
OWNER, HEARTBEAT = "ablate.owner", "ablate.heartbeat"  # host:pid of the job training a run, and when it last said so
DESIGN, DESIGN_KIND, ARM = "ablate.design", "ablate.design.kind", "ablate.arm"
LEVEL = "ablate.level."  # + factor: on/off, for each factor of a factorial design
DESIGN_FILE = "design.json"  # in the sweep's parent run: the design and each job's arm
# Set by the Hydra callback in the parent, read by every job, in any process.
ENV_SWEEP_ID, ENV_PARENT, ENV_SWEEP_KEYS, ENV_JOBS, ENV_SWEEP_PID = (
    "ABLATE_SWEEP_ID", "ABLATE_PARENT_RUN_ID", "ABLATE_SWEEP_KEYS", "ABLATE_PARALLEL_JOBS", "ABLATE_SWEEP_PID")


def launch_dir() -> Path:
    """The directory the user ran from, even inside a Hydra job that changed it."""
    try:
        from hydra.core.hydra_config import HydraConfig
        return Path(HydraConfig.get().runtime.cwd)
    except ValueError:  # no Hydra app running: the Python API
        return Path.cwd()


def resolve_uri(uri: str | None) -> str:
    """Absolute tracking URI. None means MLflow's own MLFLOW_TRACKING_URI when the shell
    sets it, else MLflow's embedded sqlite store in the launch dir. A store that lives
    only in memory is refused: every job and the report must see the same runs."""
    if not uri:
        env = os.environ.get("MLFLOW_TRACKING_URI")
        return resolve_uri(env) if env else sqlite_uri(launch_dir() / "mlflow.db")
    scheme, _, rest = uri.partition(":")
    if scheme == "sqlite" or scheme.startswith("sqlite+"):  # sqlite+pysqlite://... is the same store
        path = rest[3:] if rest.startswith("///") else ""  # sqlite:// and sqlite:/x: no file
        if not path.split("?")[0] or ":memory:" in uri or "mode=memory" in uri:
            raise StoreError(f"tracking.uri={uri} is a store in memory: each job would see its own, empty one, "
                             f"and nothing would be left to report. Use a file, sqlite:///path/mlflow.db, or a "
                             f"server.")
        file, _, query = path.partition("?")
        return sqlite_uri((launch_dir() / unquote(file)).resolve()) + (f"?{query}" if query else "")
    if "://" not in uri:  # a plain path: a file store
        return (launch_dir() / uri).resolve().as_uri()
    return uri


def search_runs(uri: str, experiment_ids: list[str], filter_string: str = ""):
    """`mlflow.search_runs` (one row per run, columns `params.*`, `metrics.*`, `tags.*`)
    on `uri`, with MLflow's process-wide URI and MLFLOW_TRACKING_URI left as they were:
    set_tracking_uri also exports the variable, and the jobs a sweep starts next would
    take it as their store."""
    env, before = os.environ.get("MLFLOW_TRACKING_URI"), mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        return mlflow.search_runs(experiment_ids, filter_string, max_results=50_000)
    finally:
        mlflow.set_tracking_uri(before)
        if env is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = env


def sqlite_uri(path: Path) -> str:
    """A sqlite store's URI for a file path, percent-encoded: a folder named `q?a` or
    `50%` is part of the path, not a URL's query or escape (SQLAlchemy decodes it)."""
    return "sqlite:///" + quote(str(path), safe="/")


def sqlite_file(uri: str) -> Path | None:
    """The database file of a sqlite store's URI (absolute, as resolve_uri gives it)."""
    return Path(unquote(uri[len("sqlite:///"):].split("?")[0])) if uri.startswith("sqlite:///") else None


class StoreError(AblateError):
    """The tracking store cannot be used: one line naming the URI, what failed and the fix."""


FIX = "Start it (python scripts/tracking_server.py) or correct tracking.uri"


@contextlib.contextmanager
def quick_requests(timeout_s: int = 5):
    """MLflow's HTTP client retries a dead server for minutes (7 retries, backoff 2:
    254 s measured). For a check, or a retry loop of our own, one short try each."""
    keys = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": str(timeout_s)}
    old = {k: os.environ.get(k) for k in keys}
    os.environ.update(keys)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def require_store(uri: str) -> None:
    """For the tools that read runs (the report, the UI): a sqlite store must be there
    already, where MlflowClient would create an empty one and report on nothing."""
    if (db := sqlite_file(uri)) is not None and not db.exists():
        raise StoreError(f"no MLflow store at {uri}. Run from the folder you swept in, or point "
                         f"--tracking-uri at its store (sqlite:////path/to/mlflow.db, or http://host:port).")


def check_store(uri: str, experiment: str) -> None:
    """Can runs go there? Checked before any data is read or any run exists, in
    seconds, and without creating anything: a sqlite file must be a database (or its
    folder writable), a server must answer, a scheme must be one MLflow knows."""
    if not isinstance(experiment, str) or not experiment.strip():
        raise ConfigError(f"tracking.experiment={experiment!r} is invalid: must be a non-empty name. "
                          f"Fix it with `tracking.experiment=<name>`.")
    from mlflow.tracking._tracking_service.utils import _tracking_store_registry
    try:
        _tracking_store_registry.get_store_builder(uri)
    except Exception:
        raise StoreError(f"tracking.uri={uri}: MLflow has no tracking store for the scheme "
                         f"'{urlparse(uri).scheme}'. Use sqlite:///path/mlflow.db, a folder, "
                         f"or http://host:port.") from None
    scheme = urlparse(uri).scheme
    if (db := sqlite_file(uri)) is not None:
        check_sqlite(uri, db)
        check_artifacts(uri, db, experiment)
    elif scheme in ("http", "https"):
        start = time.monotonic()
        try:
            with quick_requests():
                MlflowClient(uri).search_experiments(max_results=1)
        except Exception as exc:
            reason = " ".join(str(exc).split())
            reason = "connection failed" if "Max retries exceeded" in reason else reason[:120]
            raise StoreError(f"tracking.uri={uri}: no MLflow server answered in {time.monotonic() - start:.0f} s "
                             f"({reason}). {FIX}.") from None
    if db is None or db.exists():
        deleted_check(uri, experiment)


# Tables every MLflow sqlite store has, whatever its schema version.
MLFLOW_TABLES = frozenset({"alembic_version", "experiments", "runs", "metrics", "params", "tags"})


def check_sqlite(uri: str, db: Path) -> None:
    """Does what the job will do to a sqlite store, and undoes it: reads a row of every
    table and writes in a transaction that is rolled back (a read-only file or folder,
    `chattr +i`, fails here, not at run creation). A database of another program is
    refused rather than given MLflow's tables. Where no file is yet, its folder must
    take a new file (tried with a temporary one, as root's os.access says yes to all)."""
    if not db.exists():
        folder = next(p for p in db.parents if p.exists())
        try:
            tempfile.TemporaryFile(dir=folder).close()
        except OSError as exc:
            raise StoreError(f"tracking.uri={uri}: cannot create {db}: {folder} does not take new files "
                             f"({exc.strerror}). Fix tracking.uri, or make the folder writable.") from None
        return
    try:
        with contextlib.closing(sqlite3.connect(f"{db.as_uri()}?mode=rw", uri=True, timeout=10)) as con:
            tables = {name for (name,) in con.execute("select name from sqlite_master where type = 'table'")}
            # anything in its schema (tables, views, triggers) or a version set: another program's
            others = {f"{name} ({kind})" for kind, name in con.execute("select type, name from sqlite_master")
                      if kind != "table" and not name.startswith("sqlite_")}
            version = con.execute("pragma user_version").fetchone()[0]
            if (tables or others or version) and not MLFLOW_TABLES.issubset(tables):
                what = sorted(tables) + sorted(others) or [f"user_version {version}"]
                raise StoreError(f"tracking.uri={uri}: {db} is a database of another program (its tables: "
                                 f"{', '.join(what[:6])}), not an MLflow store; ablate will not add "
                                 f"MLflow's tables to it. Point tracking.uri at a new file, e.g. "
                                 f"sqlite:///{db.parent / 'mlflow.db'}.")
            for table in sorted(tables):
                con.execute(f'select * from "{table}" limit 1').fetchall()
            con.execute("begin immediate")
            con.execute("create table ablate_write_check (x)")
            con.execute("rollback")
    except sqlite3.Error as exc:
        if "readonly" in str(exc) or "read-only" in str(exc):
            raise StoreError(f"tracking.uri={uri}: {db} cannot be written ({exc}). Make it writable (chmod, "
                             f"or chattr -i), or point tracking.uri at another file.") from None
        try:  # sqlite writes a journal beside the file: a folder that takes no new file fails like this
            tempfile.TemporaryFile(dir=db.parent).close()
        except OSError as folder_exc:
            raise StoreError(f"tracking.uri={uri}: {db.parent} does not take new files ({folder_exc.strerror}), "
                             f"and sqlite needs one beside {db.name} to write. Make the folder writable (chmod, "
                             f"or chattr -i), or point tracking.uri elsewhere.") from None
        raise StoreError(f"tracking.uri={uri}: {db} is not a usable sqlite database ({exc}). Point "
                         f"tracking.uri at another file, or move this one away.") from None


def check_artifacts(uri: str, db: Path, experiment: str) -> None:
    """The experiment's local artifact folder (its artifact_location, else the one a new
    experiment gets, artifacts_beside(db)) must take a run's folder, tried with a temporary
    one: one that took no new file failed at `log_text`, after the run existed."""
    row = None
    if db.exists():
        with contextlib.closing(sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True, timeout=10)) as con, \
                contextlib.suppress(sqlite3.OperationalError):  # an empty file: MLflow makes its tables
            row = con.execute("select artifact_location from experiments where name = ?", (experiment,)).fetchone()
    if (where := row[0] if row else None) is None:
        folder = artifacts_beside(db, experiment)
    elif where.startswith("file:") or ("://" not in where and ":" not in where[:2]):
        folder = Path(unquote(urlparse(where).path)) if where.startswith("file:") else Path(where)
    else:
        return  # s3://, mlflow-artifacts:, ...: the server or the bucket decides
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    try:
        tempfile.TemporaryDirectory(dir=existing).cleanup()
    except OSError as exc:
        raise StoreError(f"tracking.uri={uri}: the artifact folder {existing} does not take new files "
                         f"({exc.strerror}), and each run writes its config and reports there. Make it writable "
                         f"(chmod, or chattr -i), or use another tracking.experiment.") from None


def gc_hint(uri: str, experiment_id: str) -> str:
    """The `mlflow gc` command that purges an experiment from this kind of store: a
    database directly; a tracking server's database where the server runs (gc refuses
    an http:// backend), with MLFLOW_TRACKING_URI set so it finds proxied artifacts."""
    if uri.startswith(("http://", "https://")):
        return (f"`MLFLOW_TRACKING_URI={uri} mlflow gc --backend-store-uri <the server's --backend-store-uri> "
                f"--experiment-ids {experiment_id}`, run where the server runs")
    return f"`mlflow gc --backend-store-uri {uri} --experiment-ids {experiment_id}`"


def deleted_check(uri: str, experiment: str) -> None:
    """An experiment deleted in MLflow (the UI's delete moves it to the trash, where its
    name stays taken): one line with the three ways on, before any run is attempted."""
    with quick_requests():
        found = MlflowClient(uri).get_experiment_by_name(experiment)
    if found is not None and found.lifecycle_stage == "deleted":
        raise StoreError(f"tracking.experiment={experiment} was deleted in {uri} (it is in MLflow's trash, id "
                         f"{found.experiment_id}, and its name is still taken). Restore it with `mlflow experiments "
                         f"restore --experiment-id {found.experiment_id}` (MLFLOW_TRACKING_URI={uri}), choose another "
                         f"name with tracking.experiment=<name>, or purge it with {gc_hint(uri, found.experiment_id)}.")


@contextlib.contextmanager
def _lock(uri: str):
    """An exclusive lock on a sqlite store's folder while its schema is created: two
    sweeps started together on a fresh store would race the migration."""
    if (db := sqlite_file(uri)) is None:
        yield
        return
    db.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(db.parent, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def safe_name(name: str) -> str:
    """A name as one folder name: itself when it is plain (letters, digits, `._-`, not
    starting with a dot); else its plain characters and a digest, so `../../x` or `a/b`
    never becomes a path out of its folder, and two names never share one."""
    if re.fullmatch(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}", name):
        return name
    plain = re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_")[:60]
    return f"{plain or 'experiment'}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"


def ensure_experiment(uri: str, name: str) -> str:
    """Create the store (its schema migration) and the experiment once; return its id.
    Artifacts go to <launch dir>/mlruns for a local sqlite store, as MLflow's default."""
    with _lock(uri):
        return _ensure_experiment(uri, name)


def artifacts_beside(db: Path, name: str) -> Path:
    """A new experiment's artifacts in a sqlite store: beside the database, whatever the cwd."""
    return db.parent / "mlruns" / safe_name(name)


def _ensure_experiment(uri: str, name: str) -> str:
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    location = artifacts_beside(db, name).as_uri() if (db := sqlite_file(uri)) is not None else None
    try:  # the kind tag opens MLflow 3's UI on its training-runs view, not GenAI's
        return client.create_experiment(name, artifact_location=location,
                                        tags={"mlflow.experimentKind": "custom_model_development"})
    except mlflow.exceptions.MlflowException:  # another process created it first
        return client.get_experiment_by_name(name).experiment_id


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent,
                             capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def job_overrides() -> list[str]:
    try:
        from hydra.core.hydra_config import HydraConfig
        from omegaconf import OmegaConf
        return OmegaConf.to_container(HydraConfig.get().overrides.task, resolve=False)  # `${...}` as given
    except ValueError:
        return []


def run_name(overrides: list[str]) -> str:
    """Readable name from what varies: the swept keys in a multirun, else every
    override, e.g. "norm=bn_after_relu,seed=1"."""
    swept = [k for k in os.environ.get(ENV_SWEEP_KEYS, "").split(",") if k]
    kept = []
    for o in overrides:
        key, _, value = o.partition("=")
        key = key.lstrip("+~")
        if key == "design.arm" and (not swept or key in swept):
            kept.insert(0, f"arm={unquoted(value)}")  # a design's jobs are named by their arm first
        if key.startswith("hydra") or is_non_result(key):
            continue
        if not swept or key in swept:
            kept.append(unquoted(o))
    return ",".join(kept) or "defaults"


def design_tags(cfg) -> dict[str, str]:
    """A design job's place in its design, as tags the report and MLflow's filters use."""
    d = cfg.get("design")
    if d is None or not d.get("name"):
        return {}
    tags = {DESIGN: d.name, DESIGN_KIND: d.kind, ARM: d.arm}
    for factor, level in (d.get("levels") or {}).items():
        tags[LEVEL + str(factor)] = str(level)
    return tags


def runs_of(client: MlflowClient, experiment_id: str, fingerprints: list[str]) -> list[str]:
    """The ids of the newest run of each of these configs (a sweep's jobs, the skipped included)."""
    wanted, newest = set(fingerprints), {}
    for r in client.search_runs([experiment_id], order_by=["attributes.start_time DESC"], max_results=50_000):
        fp = r.data.tags.get(FINGERPRINT)
        if fp in wanted and fp not in newest:
            newest[fp] = r.info.run_id
    return [newest[fp] for fp in dict.fromkeys(fingerprints) if fp in newest]


def swept_keys(parent) -> list[str]:
    """The keys a sweep's command line varied, from its parent run's tag."""
    return [k for k in parent.data.tags.get(SWEPT, "").split(",") if k]


def find_runs(client: MlflowClient, experiment_id: str, fingerprint: str):
    """Runs of this exact config, newest first."""
    return client.search_runs([experiment_id], f"tags.`{FINGERPRINT}` = '{fingerprint}'",
                              order_by=["attributes.start_time DESC"])


# ----------------------------------------------------------------------------- outages and owners

def ride_out(what: str, attempt, grace_s: float, uri: str):
    """`attempt()`, retried through a store outage for up to `grace_s` seconds: an
    outage shorter than that costs a wait, not the run. Longer, the job ends in one
    line; its local checkpoint lets the same command resume it into the same run."""
    start, wait, said = time.monotonic(), 1.0, False
    while True:
        try:
            with quick_requests():
                out = attempt()
            if said:
                log.info(f"Tracking store back after {time.monotonic() - start:.0f} s; {what} done")
            return out
        except Exception as exc:
            if disk_full(exc):  # not an outage: waiting frees no space
                raise
            gone = time.monotonic() - start
            if gone >= grace_s:
                raise StoreError(f"tracking.uri={uri}: the store has not answered for {gone:.0f} s "
                                 f"(tracking.grace_s={grace_s:g}) while {what}: {' '.join(str(exc).split())[:160]}. "
                                 f"The job stopped; its checkpoint is kept. {FIX}, then run the same command "
                                 f"again: it resumes into the same run.") from None
            if not said:
                log.warning(f"Tracking store unreachable while {what}; retrying for up to {grace_s:g} s")
                said = True
            time.sleep(min(wait, grace_s - gone))
            wait = min(wait * 2, 30.0)


PARAM_LIMIT = 6000  # MLflow's longest param value


def param_key(key: str) -> str:
    """A config key as an MLflow param name: MLflow takes letters, digits, `_-. :/`, at
    most 250 characters; any other character becomes `_`."""
    import re
    return re.sub(r"[^\w\-. :/]", "_", key)[:250]


def param_value(value) -> str:
    """A param as MLflow keeps it. One longer than MLflow's limit is cut, and ends with a
    digest of the whole value: two long values that differ never read the same."""
    text = str(value)
    if len(text) <= PARAM_LIMIT:
        return text
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    return f"{text[:PARAM_LIMIT - 40]}...[{len(text)} chars, sha256 {digest}]"


def metrics(values: dict, step: int | None) -> list:
    """Metric entities for one log_batch call: an epoch's values land together or not at all."""
    from mlflow.entities import Metric
    now = int(time.time() * 1000)
    return [Metric(k, float(v), now, step or 0) for k, v in values.items()]
