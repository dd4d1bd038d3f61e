"""Fixtures of the integration tests beyond the suite's own (``tests/conftest.py``)."""

from tests.redis_acl import acl, acl_server, tls, tls_server  # noqa: F401 - the ACL servers
