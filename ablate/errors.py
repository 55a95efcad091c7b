"""The user's mistakes, each one line that names what is wrong and how to fix it.

They are raised before any training starts and before any MLflow run exists;
`python -m ablate` prints them without a traceback and exits with 2."""
import errno
import os
import re

# Where a key people reach for lives in ablate, for the messages that refuse it.
HINTS = {"label_smoothing": "task.loss.label_smoothing", "loss": "task.loss (a `_target_` node)",
         "metric": "task.metrics, and objective.metric for the one that decides",
         "metrics": "task.metrics", "criterion": "task.loss", "direction": "objective.goal",
         "goal": "objective.goal", "weight_decay": "optimizer.weight_decay", "momentum": "optimizer.momentum",
         "dropout": "model.dropout", "num_classes": "data.num_classes"}


def one_line(exc: BaseException) -> str:
    """An exception's message squeezed into one line (Hydra's span several)."""
    return " ".join(str(exc).split()) or type(exc).__name__


def disk_full(exc: BaseException) -> str | None:
    """The full disk (or quota) behind an exception, as one line's worth, or None.
    It surfaces as an OSError (ENOSPC, EDQUOT) from a write, or as sqlite's "database or
    disk is full" inside MLflow's own exception, often chained under a second one
    raised while the first was handled: the whole chain is searched."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return f"{exc.strerror}" + (f" ({exc.filename})" if exc.filename else "")
        if "database or disk is full" in str(exc):
            return "database or disk is full (the tracking store's sqlite file)"
        exc = exc.__cause__ or exc.__context__
    return None


def instantiate_error(exc: BaseException) -> str:
    """What went wrong inside hydra.utils.instantiate: the import error or the
    callable's own exception, not Hydra's wrapper around it."""
    return one_line(exc.__cause__ or exc)


class AblateError(Exception):
    """Bad input: the message is the whole story, shown as one line."""


class ConfigError(AblateError, ValueError):
    """A bad config value or option: names the key and what is allowed."""


class DataError(AblateError, RuntimeError):
    """The data set is missing, corrupt or not what ablate can train on."""


def from_hydra(exc: Exception) -> str:
    """Hydra's and OmegaConf's own errors (a misspelt option or key, an override that
    does not parse), which Hydra prints over several lines, as one line with the fix."""
    from hydra.errors import MissingConfigException, OverrideParseException, SearchPathException
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException, ValidationError
    if isinstance(exc, MissingConfigException) and exc.options is not None and exc.missing_cfg_file:
        group, _, option = exc.missing_cfg_file.rpartition("/")
        return (f"{group}={option}: no such option in the '{group}' group. Choose one of "
                f"{', '.join(exc.options)}, or add conf/{group}/{option}.yaml (with --config-dir for your own conf/).")
    if isinstance(exc, OverrideParseException):
        return (f"the override {exc.override!r} does not parse: {exc.message.splitlines()[0]}. "
                f"Quote a value Hydra's grammar reads as syntax, e.g. 'key=\"a b\"'.")
    if isinstance(exc, SearchPathException):
        return f"{exc}. Give --config-dir a folder that exists (a relative path starts where you run)."
    if str(exc).startswith("Sweeping over Hydra's configuration is not supported"):
        return (f"{one_line(exc)}: Hydra chooses its launcher, sweeper and settings once per command. Give one "
                f"value (hydra/launcher=parallel), and run one sweep for each.")
    if isinstance(exc.__cause__, ValidationError):  # a typed key given a value of the wrong type or choice
        exc = exc.__cause__
    if isinstance(exc, OmegaConfBaseException) and getattr(exc, "full_key", None):
        value = "true` or `false" if "is not a valid bool" in str(exc) else "<value>"
        return f"{exc.full_key}: {str(exc).splitlines()[0]}. Fix it with `{exc.full_key}={value}`."
    text = " ".join(f"{exc} {exc.__cause__ or ''}".split())
    no_such_key = isinstance(exc.__cause__, (ConfigKeyError, ConfigAttributeError))
    if (key := re.search(r"Could not override '([^']+)'", text)) and no_such_key:
        if key[1].startswith("hydra.sweeper."):
            return f"{key[1]}: no such key in this sweeper. A design's keys need the ablation sweeper: " \
                   f"add hydra/sweeper=ablation, or use a preset (ablation=step7_loo)."
        add = re.search(r"use (\+\S+)", text)
        if add and not key[1].startswith(("model.", "data.", "task.loss.", "task.metrics.")):
            add = None  # ablate's own keys are closed: a `+` would add a key that nothing reads
        leaf = key[1].rsplit(".", 1)[-1]
        hint = f" {leaf} is set at {HINTS[leaf]}." if leaf in HINTS and not key[1].startswith(HINTS[leaf]) else ""
        return (f"{key[1]}: no such key in the config.{hint} Check its spelling (`--cfg job` after your command "
                f"prints every key){f', or add it with {add[1]}' if add else ''}.")
    return text


# Hydra prints its own errors over several lines and exits 1, unless HYDRA_FULL_ERROR=1,
# when it raises them. `python -m ablate` sets it while Hydra composes the command, to
# say a mistake there in one line; once the job or the sweep starts, the user's setting
# is back, and a crash is reported Hydra's way.
_USERS_SETTING = "_ABLATE_USERS_HYDRA_FULL_ERROR"


def raise_hydras_errors() -> None:
    os.environ[_USERS_SETTING] = os.environ.get("HYDRA_FULL_ERROR", "")
    os.environ["HYDRA_FULL_ERROR"] = "1"


def report_hydras_errors() -> bool:
    """Give the user back their HYDRA_FULL_ERROR; True if they had set it."""
    users = os.environ.pop(_USERS_SETTING, None)
    if users is not None:
        if users:
            os.environ["HYDRA_FULL_ERROR"] = users
        else:
            del os.environ["HYDRA_FULL_ERROR"]
    return users == "1" or (users is None and os.environ.get("HYDRA_FULL_ERROR") == "1")
