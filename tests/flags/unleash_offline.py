"""An UnleashClient that never talks to a server: bootstrapped from a features document held
in memory, so tests can ask the real client what it decides for a given toggle."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from UnleashClient import UnleashClient
from UnleashClient.cache import BaseCache
from UnleashClient.constants import FEATURES_URL
from UnleashClient.utils import InstanceAllowType


class MemoryCache(BaseCache):
    """An UnleashClient cache bootstrapped with one document; nothing touches the disk."""

    def __init__(self, document: Mapping[str, Any]) -> None:
        self._data: dict[str, Any] = {FEATURES_URL: json.dumps(document)}
        self.bootstrapped = True

    def set(self, key: str, value: Any) -> None:
        self._data[key] = value

    def mset(self, data: dict[str, Any]) -> None:
        self._data.update(data)

    def get(self, key: str, default: Any | None = None) -> Any:
        return self._data.get(key, default)

    def exists(self, key: str) -> bool:
        return key in self._data

    def destroy(self) -> None:
        self._data.clear()


def offline_client(document: Mapping[str, Any], app_name: str) -> UnleashClient:
    """A client answering from ``document``; never initialized, so it opens no connection."""
    return UnleashClient(
        url="http://127.0.0.1:9/never-contacted",
        app_name=app_name,
        disable_metrics=True,
        disable_registration=True,
        cache=MemoryCache(document),
        multiple_instance_mode=InstanceAllowType.SILENTLY_ALLOW,
    )
