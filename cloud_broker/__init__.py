"""Ridgeline cloud broker: fronts foundation models for escalated requests.

Importing this package loads no model and opens no socket.
"""

from .settings import BrokerSettings, load_broker_settings

__all__ = ["BrokerSettings", "load_broker_settings"]
