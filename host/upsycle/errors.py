"""The host's error family: every error the host code raises on purpose is
a ``HostError`` with a snake_case ``code`` (the constants below; tests and
logs compare codes, never messages) and a message a person can act on.
Each area subclasses it beside its code (boards.BoardError,
flashing.FlashError, identity.IdentityError, proxy.config.ConfigError,
proxy.store.StorageError, topic_store.StoreError, topics.TopicError,
sim.cyclon_sim.ScenarioError, commands.pub.UsageError,
processes.ProcessError), so ``upsycle``
reports any of them the same way (cli.py). Errors of the wire protocol stay
in their own family (shared_protocol/errors.py), shared with the boards.
"""

# Codes of the host's areas (an error may carry a narrower one).
BOARD = "board"
FLASH = "flash"
IDENTITY = "identity"
NODE_KEY = "node_key"
PROXY_CONFIG = "proxy_config"
STORAGE = "storage"
TOPIC_STORE = "topic_store"
TOPIC = "topic"
PROCESS = "process"
SCENARIO = "scenario"
USAGE = "usage"


class HostError(Exception):
    """Base of every error raised on purpose by host code."""

    code = "host"

    def __init__(self, message="", code=None):
        if code is not None:
            self.code = code
        self.message = message
        super().__init__(message)
