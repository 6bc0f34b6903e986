import socket

import pytest


def _reachable(host: str, port: int = 443, timeout: float = 3.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def yahoo_online():
    if not _reachable("query2.finance.yahoo.com"):
        pytest.skip("Yahoo Finance is not reachable from this machine (offline)")
