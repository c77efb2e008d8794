"""More than one machine: sweep and compare on a dask.distributed cluster.

`sweep(..., executor=client.get_executor())` sends each (scenario, mode) run to a
worker; a LocalCluster of two worker processes stands in for machines here (a real one:
`Client("tcp://scheduler:8786")`). dask is the optional `dask` extra; the test extra
installs it, so CI runs this test.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from xipmodel.host import Comparison, Scenario, compare, sweep

SMALL = Scenario(workload=(("shell", 0.5), ("trace:httpd", 0.5)), guest_ram_mib=64,
                 ksm_seconds=0.5)


@pytest.fixture(scope="module")
def executor() -> Iterator[Any]:
    """The executor of a client on a LocalCluster of two single-threaded worker processes."""
    from conftest import need_module

    distributed = need_module("distributed")  # the test extra installs it
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        yield client.get_executor()


def _same(a: Comparison, b: Comparison) -> None:
    """Number for number: every mode's result, its per-guest rows and its timelines."""
    assert a.as_dict() == b.as_dict()
    for mode in a.results:
        ra, rb = a.results[mode], b.results[mode]
        assert ra.per_guest == rb.per_guest
        assert np.array_equal(ra.timeline_ns, rb.timeline_ns)
        assert np.array_equal(ra.timeline_bytes, rb.timeline_bytes)
        assert ra.extra.keys() == rb.extra.keys()
        for key in ra.extra:
            assert np.array_equal(ra.extra[key], rb.extra[key])


def test_a_cluster_sweep_equals_the_serial_one(executor: Any) -> None:
    """Does a sweep spread over worker processes give exactly the serial sweep's numbers,
    with a program and a shipped trace in the mix and ksmd running?"""
    on_cluster = sweep(SMALL, "guests", [1, 3, 5], executor=executor)
    serial = sweep(SMALL, "guests", [1, 3, 5])
    assert [c.scenario for c in on_cluster] == [c.scenario for c in serial]
    for a, b in zip(on_cluster, serial, strict=True):
        _same(a, b)


def test_a_cluster_compare_equals_the_serial_one(executor: Any) -> None:
    """compare through the cluster's executor, with progress, equals compare in process."""
    done: list[int] = []
    scenario = SMALL.replace(guests=4, workload="shell")
    on_cluster = compare(scenario, executor=executor,
                         progress=lambda n, total: done.append(n))
    assert done == [1, 2, 3, 4]
    _same(on_cluster, compare(scenario))
