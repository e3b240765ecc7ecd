"""
p2pstore's tests, run with ``trial tests`` (see scripts/test).

Hypothesis runs under a profile fit for shared, loaded machines and for
``trial -j``: no per-example deadline, and no "too slow" health check, which
a worker's first draw of text fails while Hypothesis builds its character
tables (one second and more, once per process). Every property still runs
its full number of examples.
"""

from hypothesis import HealthCheck, settings

settings.register_profile(
    "p2pstore",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("p2pstore")
