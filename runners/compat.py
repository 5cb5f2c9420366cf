"""by-framework's call shapes on jetledger: port a worker by changing its imports.

::

    # from by_framework import GatewayWorker, AgentContext, ArtifactEvent, run_worker
    from runners.compat import GatewayWorker, AgentContext, ArtifactEvent, run_worker


    class MyAgent(GatewayWorker):
        def get_agent_types(self):
            return ["my_agent"]

        async def process_command(self, command, context: AgentContext):
            await context.emit_chunk("Hello from your agent!")
            await context.emit_artifact(ArtifactEvent(url="https://example.com/out.json"))
            return {"status": "completed", "content": "Hello from your agent!"}


    run_worker(MyAgent, worker_id="worker-01")  # NATS from $JETLEDGER_NATS_URL

The worker side is :mod:`runners.compat_worker` (commands, context, results); plugins,
configurators, ``run_worker`` and client interceptors are :mod:`runners.compat_plugins`.
"""

from runners.compat_plugins import (
    AgentConfig,
    Plugin,
    PluginBuildContext,
    PluginManifest,
    PluginRegistry,
    WorkerRef,
    configurator,
    interceptor,
    run_worker,
)
from runners.compat_worker import (
    AgentContext,
    AgentTaskResult,
    ArtifactEvent,
    AskAgentCommand,
    CompatError,
    GatewayWorker,
    MessageHeader,
    StateChangeEvent,
    StreamChunkEvent,
    TaskFailedError,
    to_reply,
)

__all__ = [
    "AgentConfig",
    "AgentContext",
    "AgentTaskResult",
    "ArtifactEvent",
    "AskAgentCommand",
    "CompatError",
    "GatewayWorker",
    "MessageHeader",
    "Plugin",
    "PluginBuildContext",
    "PluginManifest",
    "PluginRegistry",
    "StateChangeEvent",
    "StreamChunkEvent",
    "TaskFailedError",
    "WorkerRef",
    "configurator",
    "interceptor",
    "run_worker",
    "to_reply",
]
