"""Fixtures of the image tests: the bases, set up once per module (idempotent)."""
import pytest

from imagelib import setup


@pytest.fixture(scope="module")
def base(kiln_bin):
    """debian/bookworm: ~50 s the first time on a machine."""
    return setup(kiln_bin)


@pytest.fixture(scope="module")
def tiny(kiln_bin):
    """The busybox base: seconds to set up, a build in about one. For tests
    of the pipeline's stages that are not about Debian (steps, limits,
    contexts, --verify, cancel, healthcheck): the pipeline under test is the
    same."""
    return setup(kiln_bin, "--base", "busybox", timeout=600)
