"""The user's mistakes, each one line that names what is wrong and how to fix it.

They are raised before any training starts and before any MLflow run exists;
`python -m ablate` prints them without a traceback and exits with 2."""


class AblateError(Exception):
    """Bad input: the message is the whole story, shown as one line."""


class ConfigError(AblateError, ValueError):
    """A bad config value or option: names the key and what is allowed."""


class DataError(AblateError, RuntimeError):
    """The data set is missing, corrupt or not what ablate can train on."""
