"""What the handlers share: settings, clients and caches (none of it is state that matters)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import aiohttp

from kubenas import search
from kubenas.controller import kube
from kubenas.controller.settings import Settings


@dataclass
class Context:
    """The operator's shared clients and caches; losing any of it costs time, never correctness."""

    settings: Settings
    kube: kube.Kube
    http: aiohttp.ClientSession
    suggesters: search.SuggesterCache
    executor: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(2, thread_name_prefix="plan"))
    last_poll: dict[str, float] = field(default_factory=dict)
    spec_problems: dict[tuple[str, int | None], str] = field(default_factory=dict)
    suggesters_lock: threading.Lock = field(default_factory=threading.Lock)
