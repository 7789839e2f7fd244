"""Fault injection on real sockets: the simulator, a real collector (rotel), the daemon as a subprocess.

Every scenario ends with the same two checks (``_harness.Rig.finish``): every record the
simulator exposed was delivered exactly once, by ``log.record.uid`` (a duplicate is tolerated
only where the scenario crashed the exporter between the backend's acknowledgement and its own
commit, and is counted), and the daemon is still healthy (alive, ``/healthz`` 200, then a clean
SIGTERM exit 0). The README section "Reliability" maps each guarantee to the test that proves it.
"""
