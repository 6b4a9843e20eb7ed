"""The SDK: the ``Answerer`` methods the in-process agent and the daemon client share, and
``EdgeClient``, the client of a running ``edge-agent serve``."""
