"""Scenario and compare on bad parameters: ParameterError at construction, naming the field,
the value and what is allowed; and a run too large for the model refused up front.

Each case runs in a child process under a wall-clock and an address-space limit
(tests/_hostile.py). Before issue 10, seed=-1 and ksm_seconds=inf/nan failed late with
builtin errors, runs_per_guest=-3, a negative share, start_interval_ms=-1000 and modes=()
were accepted, ksm_seconds=1e9 ran for minutes, and a host filled by 10,000 guests
crashed with "RuntimeError: PageTable: alloc_table gave no frame for the root table".
"""

from __future__ import annotations

import pytest
from _hostile import assert_raises, bounded

from xipmodel.errors import HostFullError, ParameterError
from xipmodel.host import (
    MAX_GUESTS,
    MAX_KSM_SCAN_PAGES,
    MAX_PROGRAM_RUNS,
    Scenario,
    compare,
)

SETUP = "from xipmodel.host import Scenario, compare, sweep, Host"


@pytest.mark.parametrize(("fields", "names"), [
    ("seed=-1", ["seed -1", "0..18446744073709551615"]),
    ("seed=2**64", ["seed", "0..18446744073709551615"]),
    ("seed=1.5", ["seed 1.5 is not an integer"]),
    ("ksm_seconds=float('inf')", ["ksm_seconds inf", "finite"]),
    ("ksm_seconds=float('nan')", ["ksm_seconds nan", "finite"]),
    ("ksm_seconds=-5.0", ["ksm_seconds -5.0", ">= 0"]),
    ("ksm_seconds=1e9", ["ksm_seconds 1e+09", f"{MAX_KSM_SCAN_PAGES:.0e}", "at most"]),
    ("start_interval_ms=-1000.0", ["start_interval_ms -1000.0", ">= 0"]),
    ("start_interval_ms=float('nan')", ["start_interval_ms nan"]),
    ("guests=1000, start_interval_ms=1e6", ["ksm_seconds", "start_interval_ms 1e+06"]),
    ("runs_per_guest=-3", ["runs_per_guest -3", f"1..{MAX_PROGRAM_RUNS}"]),
    ("runs_per_guest=0", ["runs_per_guest 0"]),
    ("variants=None, guests=5000, runs_per_guest=50", ["runs_per_guest 50",
                                                       "250000 program runs"]),
    ("variants=0", ["variants 0"]),
    ("guests=0", ["guests 0", f"1..{MAX_GUESTS}"]),
    ("guests=100_000", ["guests 100000", f"1..{MAX_GUESTS}"]),
    ("guests=1_000_000_000", ["guests 1000000000", f"1..{MAX_GUESTS}"]),
    ("guests=2.5", ["guests 2.5 is not an integer"]),
    ("guests='8'", ["guests '8' is not an integer"]),
    ("guests=True", ["guests True is not an integer"]),
    ("guest_ram_mib=1_000_000_000", ["guest_ram_mib 1000000000", "1..1048576"]),
    ("guest_ram_mib=0", ["guest_ram_mib 0"]),
    ("heap_share=1.0", ["heap_share 1.0", "[0, 0.99]"]),
    ("heap_share=float('nan')", ["heap_share nan"]),
    ("workload=(('webserver', -1.0),)", ["share -1.0 of 'webserver'", ">= 0"]),
    ("workload=(('webserver', float('inf')),)", ["share inf of 'webserver'"]),
    ("workload=(('webserver', 0.0), ('shell', 0.0))", ["has no positive share"]),
    ("workload=()", ["workload ()", "non-empty"]),
    ("workload=('webserver',)", ["workload[0] 'webserver'", "(program, share) pair"]),
    ("workload='bogus'", ["workload 'bogus'", "webserver"]),
    ("ksm_sleep_ms=0", ["ksm_sleep_ms 0"]),
    ("ksm_pages_to_scan=0", ["ksm_pages_to_scan 0"]),
    ("policy='random'", ["policy 'random'", "linux"]),
    ("preset='sv39'", ["preset 'sv39'", "39-bit", "x86_64"]),
    ("preset='tiny'", ["preset 'tiny'", "32-byte pages"]),
])
def test_scenario_fields_are_checked_at_construction(fields: str, names: list[str]) -> None:
    """Every field: type and range, named with the value, when the Scenario is made."""
    outcome = bounded(f"Scenario({fields})", SETUP, seconds=20)
    assert_raises(outcome, ParameterError, "Scenario: ", *names)


@pytest.mark.parametrize(("call", "names"), [
    ("compare(Scenario(guests=1), modes=())", ["compare: modes ()", "non-empty"]),
    ("compare(Scenario(guests=1), modes=('xip', 'xip'))", ["names a mode twice"]),
    ("compare(Scenario(guests=1), modes='xip')", ["compare: modes 'xip'"]),
    ("compare(Scenario(guests=1), modes=('bogus',))", ["mode 'bogus'"]),
    ("sweep(Scenario(guests=1), 'guests', [1, 2], modes=())", ["sweep: modes ()"]),
    ("sweep(Scenario(guests=1), 'seed', [0, -1], modes=('xip',))", ["seed -1"]),
])
def test_compare_and_sweep_check_modes_and_values(call: str, names: list[str]) -> None:
    """modes=() used to be accepted (an empty comparison); a swept value is a Scenario too."""
    assert_raises(bounded(call, SETUP, seconds=20), ParameterError, *names)


def test_a_full_host_is_a_clear_error_not_a_crash() -> None:
    """When the simulated host has no frame left for a new guest (10,000 page-cache guests
    fill its 64 GiB; here a host of 64 MiB), the run stops with a ParameterError naming
    guests and how many fitted (a HostFullError, a ParameterError), not a RuntimeError
    from deep in the page tables."""
    outcome = bounded("host.run()", SETUP + "\nhost = Host(Scenario(guests=200, "
                      "workload='shell', guest_ram_mib=64), 'pagecache')\n"
                      "host.memory.capacity = 16384", seconds=60)
    assert_raises(outcome, HostFullError, "Scenario: guests 200", "are full after",
                  "pagecache mode", "run at most")


def test_limits_admit_the_documented_runs() -> None:
    """The control: the defaults, the 1,000-guest benchmark and the largest allowed run are
    valid; a JSON-like mix of lists becomes tuples."""
    assert Scenario().ksm_scan_pages == 600_000 and Scenario().max_ksm_seconds == 20_000
    Scenario(guests=1000)
    Scenario(guests=MAX_GUESTS, ksm_seconds=Scenario().max_ksm_seconds)
    mix = Scenario(workload=[["webserver", 0.8], ["shell", 0.2]]).workload  # type: ignore[arg-type]
    assert mix == (("webserver", 0.8), ("shell", 0.2))
    assert compare(Scenario(guests=1, workload="shell", guest_ram_mib=64),
                   modes=("xip",)).results["xip"].host_bytes > 0
