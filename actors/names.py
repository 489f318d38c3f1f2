"""The names by which workflows, updates, queries and activities are called.

Everything that reaches a workflow or an activity from outside the module
that defines it calls it by one of these names: the activities start jobs and
tenants, the senders feed the proxies, the retirement closes them. So an
activity never imports a workflow module (which would import it back), and a
workflow module imports no activity code (nor the sinks and clients that
code needs) into the sandbox.

These names are part of every recorded history: renaming one breaks replay.
"""

from __future__ import annotations

# Workflow types.
PROXY = "Proxy"
JOB = "Job"
TENANT = "Tenant"
SINK_CATCH_UP = "SinkCatchUp"

# Updates and queries, by workflow.
PROXY_INGEST = "ingest"
PROXY_RETIRE = "retire"
PROXY_PENDING = "pending"
PROXY_STATUS = "status"
PROXY_HELD = "held"
JOB_DELIVER = "deliver"
JOB_STATE = "state"
JOB_STATUS = "status"
TENANT_REPORT = "report"
TENANT_STATE = "state"

# Activities.
PROXY_SETTINGS = "proxy_settings"
DELIVER = "deliver"
REPORT = "report"
PUBLISH_JOB = "publish_job"
PUBLISH_SUMMARY = "publish_summary"
WRITE_SINK = "write_sink"

# ApplicationError types a workflow raises that callers act on.
BACKPRESSURE = "Backpressure"
RETIRED = "ShardRetired"

# The memo of a sink catch-up workflow: its sink, and how many records.
CATCH_UP_SINK = "sink"
CATCH_UP_COUNT = "records"

# Search attributes (Keyword) every job carries, for visibility queries
# (``script.inspect stuck``): its tenant, set at start, and its status, kept
# current by the job: JOB_OPEN until its first result version, then that
# version's status. Register them on the namespace before workers run
# (``script.devserver`` does; ``script.worker`` adds them where it may).
TENANT_ATTRIBUTE = "EventflowTenant"
STATUS_ATTRIBUTE = "EventflowJobStatus"
JOB_OPEN = "open"
