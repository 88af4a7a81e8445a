"""The reconcile engine. Start with scheduler.Engine (threads and timing), then
reconciler.Reconciler (one pass: observe, decide, write, report); store.py is all it
asks of NSX, status.py all it tells the rest of the daemon. It imports no adapter."""

from litelb.engine.reconciler import Reconciler, Result
from litelb.engine.scheduler import HEARTBEAT, MIN_STALL_LIMIT, Engine, Schedule, stall_limit
from litelb.engine.settings import EngineSettings
from litelb.engine.status import EndpointState, EngineStatus

__all__ = [
    "HEARTBEAT",
    "MIN_STALL_LIMIT",
    "EndpointState",
    "Engine",
    "EngineSettings",
    "EngineStatus",
    "Reconciler",
    "Result",
    "Schedule",
    "stall_limit",
]
