"""Workers (DESIGN §2): the SDK (``GatewayWorker``, ``AgentContext``, ``run_worker``) and
the runtime that runs them as durable-consumer groups on JetStream."""

from runners.app import run_worker
from runners.context import AgentContext
from runners.registry import ActiveWorker, DuplicateWorkerError, LeaseLostError
from runners.settings import WorkerSettings
from runners.worker import Command, GatewayWorker, Reply, RetryableError

__all__ = [
    "ActiveWorker",
    "AgentContext",
    "Command",
    "DuplicateWorkerError",
    "GatewayWorker",
    "LeaseLostError",
    "Reply",
    "RetryableError",
    "WorkerSettings",
    "run_worker",
]
