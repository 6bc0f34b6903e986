"""Test helpers that are more than a fixture: see :mod:`tests.support.tiny_llm`."""
