"""Workers (DESIGN §2): the SDK (``GatewayWorker``, ``AgentContext``, ``run_worker``) and
the runtime that runs them as durable-consumer groups on JetStream."""

from runners.app import run_worker
from runners.context import AgentContext, ToolCallReplayError
from runners.orchestration import AskTimeout, CalledAgent, GroupTask, OrchestrationError
from runners.outcomes import AgentReply, MemberResult
from runners.registry import ActiveWorker, DuplicateWorkerError, LeaseLostError
from runners.settings import WorkerSettings
from runners.worker import Command, GatewayWorker, Reply, RetryableError

__all__ = [
    "ActiveWorker",
    "AgentContext",
    "AgentReply",
    "AskTimeout",
    "CalledAgent",
    "Command",
    "DuplicateWorkerError",
    "GatewayWorker",
    "GroupTask",
    "LeaseLostError",
    "MemberResult",
    "OrchestrationError",
    "Reply",
    "RetryableError",
    "ToolCallReplayError",
    "WorkerSettings",
    "run_worker",
]
