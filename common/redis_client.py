"""Redis clients for a URL that may name a single server or a node of a Redis Cluster.

``redis+cluster://`` (``rediss+cluster://`` with TLS) always means a cluster. For a plain
``redis://``/``rediss://`` URL the server is asked once (``HELLO 2``, which any account may run
whatever its ACL) whether it runs in cluster mode, so every process can be pointed at any node's
URL and nothing else changes. A server that cannot be reached at that moment is taken for a
single server: start processes that may come up before the cluster with a ``+cluster`` URL (a
blocking client then needs one node reachable when it is made). A ``unix://`` URL is always a
single server (the embedded one).

URLs are taken apart by :mod:`lancequeue.common.redis_url`: redis-py gets the URL without its
user name and password, and those as ``username=``/``password=``, so no character of a password
can cut it short. A certificate that does not verify, or a TLS file that cannot be loaded,
raises :class:`~lancequeue.common.redis_tls.RedisTlsError` (a ``ConfigError``): not waited out.
"""

from __future__ import annotations

import asyncio
from typing import Any, TypeAlias

import redis
import redis.asyncio as aioredis
from redis.exceptions import ClusterDownError, RedisClusterException, RedisError, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from lancequeue.common.errors import LancequeueError
from lancequeue.common.redis_tls import check_tls_files, tls_error
from lancequeue.common.redis_url import RedisUrl, parse_redis_url

SyncRedis: TypeAlias = redis.Redis | redis.RedisCluster
"""A blocking client of a single server or of a cluster."""

AsyncRedis: TypeAlias = aioredis.Redis | aioredis.RedisCluster
"""An asyncio client of a single server or of a cluster."""

REDIS_FAILURES: tuple[type[Exception], ...] = (RedisError, RedisClusterException, OSError)
"""What a Redis call may fail with. redis-py's cluster client raises ``RedisClusterException``,
which is not a ``RedisError``, when no node answers or a slot has no node."""

COMMAND_FAILURES: tuple[type[Exception], ...] = (LancequeueError, *REDIS_FAILURES)
"""What a CLI command reports as one line and an exit status rather than a traceback."""

UNREACHABLE: tuple[type[Exception], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    RedisClusterException,
    ClusterDownError,
    TryAgainError,
    OSError,
)
"""Failures that say Redis could not be reached, or a cluster cannot serve the table yet (no
node answers, ``CLUSTERDOWN`` while it forms, ``TRYAGAIN`` while a slot moves): waited out.
Redis ran none of the command."""

_PROBE_TIMEOUT_S = 2.0


def parse(url: str) -> RedisUrl:
    """``url`` taken apart (:func:`parse_redis_url`), its TLS files checked
    (:func:`check_tls_files`); raises :class:`ConfigError` before any connection is made."""
    parsed = parse_redis_url(url)
    check_tls_files(parsed)
    return parsed


def _says_cluster(hello: Any) -> bool:
    """Whether a ``HELLO 2`` reply (``[b"server", b"redis", ..., b"mode", b"cluster", ...]``)
    says the server runs in cluster mode."""
    if not isinstance(hello, list):
        return False
    fields = dict(zip(hello[::2], hello[1::2], strict=False))
    return fields.get(b"mode") == b"cluster"


def is_cluster_url(url: str) -> bool:
    """Whether ``url`` names a Redis Cluster: by its scheme, else by asking the server.
    Raises :class:`RedisTlsError` if the server's certificate does not verify."""
    parsed = parse(url)
    if parsed.cluster is not None:
        return parsed.cluster
    try:
        with redis.Redis.from_url(parsed.address, **_probe_options(parsed)) as probe:
            hello = probe.execute_command("HELLO", 2)
    except REDIS_FAILURES as exc:
        if (error := tls_error(exc, parsed.shown)) is not None:
            raise error from exc
        return False
    return _says_cluster(hello)


async def is_cluster_url_async(url: str) -> bool:
    """:func:`is_cluster_url` without blocking the event loop."""
    parsed = await asyncio.to_thread(parse, url)  # reads the TLS files
    if parsed.cluster is not None:
        return parsed.cluster
    probe = aioredis.Redis.from_url(parsed.address, **_probe_options(parsed))
    try:
        hello = await probe.execute_command("HELLO", 2)  # type: ignore[no-untyped-call]
    except REDIS_FAILURES as exc:
        if (error := tls_error(exc, parsed.shown)) is not None:
            raise error from exc
        return False
    finally:
        await probe.aclose()
    return _says_cluster(hello)


def sync_client(url: str, cluster: bool | None = None, **options: Any) -> SyncRedis:
    """A blocking client for ``url`` (``cluster``: whether it is a cluster, None to find out);
    ``options`` go to redis-py's client, the URL's user name and password with them."""
    parsed = parse(url)
    if cluster is None:
        cluster = is_cluster_url(url)
    options = {**options, **parsed.credentials()}
    if not cluster:
        return redis.Redis.from_url(parsed.address, **options)
    try:  # a cluster client connects as it is made
        return redis.RedisCluster.from_url(parsed.address, **options)
    except REDIS_FAILURES as exc:
        if (error := tls_error(exc, parsed.shown)) is not None:
            raise error from exc
        raise


def async_client(url: str, cluster: bool, **options: Any) -> AsyncRedis:
    """An asyncio client for ``url``; find ``cluster`` first with :func:`is_cluster_url_async`.
    ``options`` go to redis-py's client, the URL's user name and password with them."""
    parsed = parse_redis_url(url)  # its TLS files are read as it connects
    options = {**options, **parsed.credentials()}
    if cluster:
        return aioredis.RedisCluster.from_url(parsed.address, **options)
    return aioredis.Redis.from_url(parsed.address, **options)


def _probe_options(parsed: RedisUrl) -> dict[str, Any]:
    return {
        "socket_timeout": _PROBE_TIMEOUT_S,
        "socket_connect_timeout": _PROBE_TIMEOUT_S,
        **parsed.credentials(),
    }
